//! What every keyed backend does the same way, written once: the registry
//! of its states ([`StateRegistry`]: validate, reuse by name, check
//! compatibility, take the job's TTL) and the checks of
//! `set_current_key` ([`select_key`]).

use std::collections::HashMap;

use crate::backend::{key_outside_range, unknown_state, KeyedBackendOptions, StateId};
use crate::descriptor::StateMeta;
use crate::key_group::{key_group_for_hash, key_hash};
use crate::{Error, Result};

/// One registered state: its metadata and the backend's storage for it
/// (a heap table, a RocksDB column family name).
#[derive(Debug, Clone)]
pub struct RegisteredState<S> {
    /// Name, kind, TTL and types.
    pub meta: StateMeta,
    /// The backend's storage of the state.
    pub storage: S,
}

/// The states of one keyed backend, by id (their registration order) and
/// by name.
///
/// ```
/// use streamstate_api::registry::StateRegistry;
/// use streamstate_api::{StateKind, StateMeta};
/// let mut states: StateRegistry<Vec<u8>> = StateRegistry::default();
/// let count = StateMeta::new::<u64>("count", StateKind::Value);
/// let id = states.register(&count, |_| Ok(Vec::new())).unwrap();
/// // The same name again is the same state, its storage made once.
/// assert_eq!(states.register(&count, |_| unreachable!()).unwrap(), id);
/// // Another kind under that name is refused.
/// let list = StateMeta::new::<u64>("count", StateKind::List);
/// assert!(states.register(&list, |_| Ok(Vec::new())).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct StateRegistry<S> {
    states: Vec<RegisteredState<S>>,
    ids: HashMap<String, StateId>,
}

impl<S> Default for StateRegistry<S> {
    fn default() -> Self {
        Self {
            states: Vec::new(),
            ids: HashMap::new(),
        }
    }
}

impl<S> StateRegistry<S> {
    /// Registers `meta` and returns its id. A state of the same name is
    /// reused when `meta` is compatible with it, and takes `meta`'s TTL
    /// (the job's current setting wins over a restored one); otherwise
    /// `create` makes the backend's storage for the new state.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArgument`] for an invalid descriptor,
    /// [`crate::ErrorKind::IncompatibleState`] for a name registered with
    /// another kind or type, and whatever `create` returns.
    pub fn register(&mut self, meta: &StateMeta, create: impl FnOnce(&StateMeta) -> Result<S>) -> Result<StateId> {
        meta.validate()?;
        if let Some(&id) = self.ids.get(&meta.name) {
            let existing = &mut self.states[id].meta;
            meta.check_compatible_with(existing)?;
            existing.ttl = meta.ttl;
            return Ok(id);
        }
        let storage = create(meta)?;
        let id = self.states.len();
        self.states.push(RegisteredState {
            meta: meta.clone(),
            storage,
        });
        self.ids.insert(meta.name.clone(), id);
        Ok(id)
    }

    /// The state `id`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArgument`] naming an id never registered.
    #[inline]
    pub fn get(&self, id: StateId) -> Result<&RegisteredState<S>> {
        self.states.get(id).ok_or_else(|| unknown_state(id))
    }

    /// The state `id`, mutable.
    ///
    /// # Errors
    /// As [`StateRegistry::get`].
    #[inline]
    pub fn get_mut(&mut self, id: StateId) -> Result<&mut RegisteredState<S>> {
        self.states.get_mut(id).ok_or_else(|| unknown_state(id))
    }

    /// The id of the state named `name`.
    pub fn id_of(&self, name: &str) -> Option<StateId> {
        self.ids.get(name).copied()
    }

    /// Every state, by id.
    pub fn iter(&self) -> std::slice::Iter<'_, RegisteredState<S>> {
        self.states.iter()
    }

    /// Every state's metadata, by id (what `registered_states` returns).
    pub fn metas(&self) -> Vec<StateMeta> {
        self.states.iter().map(|s| s.meta.clone()).collect()
    }

    /// How many states are registered.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

impl<'a, S> IntoIterator for &'a StateRegistry<S> {
    type Item = &'a RegisteredState<S>;
    type IntoIter = std::slice::Iter<'a, RegisteredState<S>>;

    fn into_iter(self) -> Self::IntoIter {
        self.states.iter()
    }
}

impl<S> std::ops::Index<StateId> for StateRegistry<S> {
    type Output = RegisteredState<S>;

    /// The state `id`; panics on an id never registered (use
    /// [`StateRegistry::get`] for ids from outside the backend).
    fn index(&self, id: StateId) -> &RegisteredState<S> {
        &self.states[id]
    }
}

/// The checks every backend's `set_current_key` makes, and what it needs
/// after them: a key's [`key_hash`] and key group, if the key is not empty
/// and its key group belongs to `options`' range.
///
/// ```
/// use streamstate_api::registry::select_key;
/// use streamstate_api::{KeyGroupRange, KeyedBackendOptions};
/// let options = KeyedBackendOptions::new("job", "op", KeyGroupRange::all(128), 128);
/// let (hash, key_group) = select_key(b"\x02hi", &options).unwrap();
/// assert_eq!(key_group, streamstate_api::key_group::key_group_for_hash(hash, 128));
/// assert!(select_key(b"", &options).is_err());
/// ```
///
/// # Errors
/// [`crate::ErrorKind::InvalidArgument`] for an empty key, or one whose
/// key group is outside the range (naming both).
#[inline]
pub fn select_key(serialized_key: &[u8], options: &KeyedBackendOptions) -> Result<(u64, u32)> {
    if serialized_key.is_empty() {
        return Err(Error::invalid_argument("keys must serialize to at least one byte"));
    }
    let hash = key_hash(serialized_key);
    let key_group = key_group_for_hash(hash, options.max_parallelism);
    if !options.key_group_range.contains(key_group) {
        return Err(key_outside_range(key_group, options.key_group_range));
    }
    Ok((hash, key_group))
}
