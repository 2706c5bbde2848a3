//! The heap keyed backend: state in copy-on-write hash tables.

use std::borrow::Cow;
use std::collections::HashMap;

use state_api::backend::{key_outside_range, unknown_state, wrong_state_kind};
use state_api::key_group::{key_group_for_hash, key_hash};
use state_api::ttl::Clock;
use state_api::{
    AsyncSnapshot, Capabilities, Error, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend, Result, SnapshotFormat,
    SnapshotTarget, StateId, StateMeta,
};

use crate::snapshot::{FrozenState, HeapSnapshot};
use crate::table::{StateTable, Table, UserMap};

/// What the heap backends support.
pub const HEAP_CAPABILITIES: Capabilities = Capabilities {
    canonical_snapshots: true,
    native_snapshots: false,
    incremental_snapshots: false,
    ttl: true,
    rescaling: true,
};

#[derive(Debug)]
struct HeapState {
    meta: StateMeta,
    table: StateTable,
}

/// Keyed state on the heap, shared by the memory and fs backends.
///
/// ```
/// use state_api::{KeyedBackendOptions, KeyGroupRange, KeyedStateBackendExt, ValueStateDescriptor};
/// use state_memory::HeapKeyedStateBackend;
/// let options = KeyedBackendOptions::new("job", "op", KeyGroupRange::new(0, 127), 128);
/// let mut backend = HeapKeyedStateBackend::new("memory", options, None);
/// let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
/// backend.set_current_key_typed("hello").unwrap();
/// count.update(&mut backend, &3).unwrap();
/// assert_eq!(count.value(&mut backend).unwrap(), Some(3));
/// ```
#[derive(Debug)]
pub struct HeapKeyedStateBackend {
    name: &'static str,
    options: KeyedBackendOptions,
    max_state_size: Option<u64>,
    states: Vec<HeapState>,
    ids_by_name: HashMap<String, StateId>,
    current_key: Vec<u8>,
    current_key_group: u32,
    current_hash: u64,
}

impl HeapKeyedStateBackend {
    /// An empty backend named `name` (written into snapshots); snapshots
    /// larger than `max_state_size` bytes fail.
    pub fn new(name: &'static str, options: KeyedBackendOptions, max_state_size: Option<u64>) -> Self {
        Self {
            name,
            options,
            max_state_size,
            states: Vec::new(),
            ids_by_name: HashMap::new(),
            current_key: Vec::new(),
            current_key_group: 0,
            current_hash: 0,
        }
    }

    fn state(&self, id: StateId) -> Result<&HeapState> {
        self.states.get(id).ok_or_else(|| unknown_state(id))
    }

    fn cells(&self, id: StateId) -> Result<&Table<Vec<u8>>> {
        let state = self.state(id)?;
        match &state.table {
            StateTable::Cells(t) => Ok(t),
            StateTable::Maps(_) => Err(wrong_state_kind(&state.meta, "a cell state")),
        }
    }

    fn cells_mut(&mut self, id: StateId) -> Result<&mut Table<Vec<u8>>> {
        let state = self.states.get_mut(id).ok_or_else(|| unknown_state(id))?;
        match &mut state.table {
            StateTable::Cells(t) => Ok(t),
            StateTable::Maps(_) => Err(wrong_state_kind(&state.meta, "a cell state")),
        }
    }

    fn maps(&self, id: StateId) -> Result<&Table<UserMap>> {
        let state = self.state(id)?;
        match &state.table {
            StateTable::Maps(t) => Ok(t),
            StateTable::Cells(_) => Err(wrong_state_kind(&state.meta, "a map state")),
        }
    }

    fn maps_mut(&mut self, id: StateId) -> Result<&mut Table<UserMap>> {
        let state = self.states.get_mut(id).ok_or_else(|| unknown_state(id))?;
        match &mut state.table {
            StateTable::Maps(t) => Ok(t),
            StateTable::Cells(_) => Err(wrong_state_kind(&state.meta, "a map state")),
        }
    }

    fn current_shard<V: Clone>(&self, table: &Table<V>) -> Result<usize> {
        if self.current_key.is_empty() {
            return Err(Error::invalid_argument("no current key: call set_current_key first"));
        }
        Ok(table.shard_index(self.current_key_group, self.current_hash))
    }

    /// Number of keys with a value in `state`.
    ///
    /// # Errors
    /// For an unknown state id.
    pub fn key_count(&self, state: StateId) -> Result<usize> {
        Ok(match &self.state(state)?.table {
            StateTable::Cells(t) => t.len(),
            StateTable::Maps(t) => t.len(),
        })
    }
}

impl KeyedStateBackend for HeapKeyedStateBackend {
    fn backend_name(&self) -> &'static str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        HEAP_CAPABILITIES
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.options.key_group_range
    }

    fn max_parallelism(&self) -> u32 {
        self.options.max_parallelism
    }

    fn clock(&self) -> &dyn Clock {
        self.options.clock.as_ref()
    }

    fn register_state(&mut self, meta: &StateMeta) -> Result<StateId> {
        meta.validate()?;
        if let Some(&id) = self.ids_by_name.get(&meta.name) {
            let existing = &mut self.states[id].meta;
            meta.check_compatible_with(existing)?;
            // The job's current TTL setting wins over the restored one.
            existing.ttl = meta.ttl;
            return Ok(id);
        }
        let range = self.options.key_group_range;
        let table = if meta.kind.is_map() {
            StateTable::Maps(Table::new(range))
        } else {
            StateTable::Cells(Table::new(range))
        };
        let id = self.states.len();
        self.states.push(HeapState {
            meta: meta.clone(),
            table,
        });
        self.ids_by_name.insert(meta.name.clone(), id);
        Ok(id)
    }

    fn registered_states(&self) -> Vec<StateMeta> {
        self.states.iter().map(|s| s.meta.clone()).collect()
    }

    fn set_current_key(&mut self, serialized_key: &[u8]) -> Result<()> {
        if serialized_key.is_empty() {
            return Err(Error::invalid_argument("keys must serialize to at least one byte"));
        }
        let hash = key_hash(serialized_key);
        let key_group = key_group_for_hash(hash, self.options.max_parallelism);
        if !self.options.key_group_range.contains(key_group) {
            return Err(key_outside_range(key_group, self.options.key_group_range));
        }
        self.current_key.clear();
        self.current_key.extend_from_slice(serialized_key);
        self.current_key_group = key_group;
        self.current_hash = hash;
        Ok(())
    }

    fn current_key(&self) -> &[u8] {
        &self.current_key
    }

    fn current_key_group(&self) -> u32 {
        self.current_key_group
    }

    fn get(&self, state: StateId) -> Result<Option<Cow<'_, [u8]>>> {
        let table = self.cells(state)?;
        let shard = self.current_shard(table)?;
        Ok(table.get(shard, &self.current_key).map(|v| Cow::Borrowed(v.as_slice())))
    }

    fn put(&mut self, state: StateId, value: &[u8]) -> Result<()> {
        let shard = self.current_shard(self.cells(state)?)?;
        let key = std::mem::take(&mut self.current_key);
        let map = self.cells_mut(state)?.shard_mut(shard);
        match map.get_mut(key.as_slice()) {
            Some(cell) => {
                cell.clear();
                cell.extend_from_slice(value);
            }
            None => {
                map.insert(key.as_slice().into(), value.to_vec());
            }
        }
        self.current_key = key;
        Ok(())
    }

    fn append(&mut self, state: StateId, bytes: &[u8]) -> Result<()> {
        let shard = self.current_shard(self.cells(state)?)?;
        let key = std::mem::take(&mut self.current_key);
        let map = self.cells_mut(state)?.shard_mut(shard);
        match map.get_mut(key.as_slice()) {
            Some(cell) => cell.extend_from_slice(bytes),
            None => {
                map.insert(key.as_slice().into(), bytes.to_vec());
            }
        }
        self.current_key = key;
        Ok(())
    }

    fn clear(&mut self, state: StateId) -> Result<()> {
        let key = std::mem::take(&mut self.current_key);
        let result = (|| {
            if key.is_empty() {
                return Err(Error::invalid_argument("no current key: call set_current_key first"));
            }
            let (kg, hash) = (self.current_key_group, self.current_hash);
            let state_ref = self.states.get_mut(state).ok_or_else(|| unknown_state(state))?;
            match &mut state_ref.table {
                StateTable::Cells(t) => {
                    let shard = t.shard_index(kg, hash);
                    // Only copy a shared shard when there is something to remove.
                    if t.get(shard, &key).is_some() {
                        t.shard_mut(shard).remove(key.as_slice());
                    }
                }
                StateTable::Maps(t) => {
                    let shard = t.shard_index(kg, hash);
                    if t.get(shard, &key).is_some() {
                        t.shard_mut(shard).remove(key.as_slice());
                    }
                }
            }
            Ok(())
        })();
        self.current_key = key;
        result
    }

    fn map_get(&self, state: StateId, user_key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        let table = self.maps(state)?;
        let shard = self.current_shard(table)?;
        Ok(table
            .get(shard, &self.current_key)
            .and_then(|m| m.get(user_key))
            .map(|v| Cow::Borrowed(v.as_slice())))
    }

    fn map_put(&mut self, state: StateId, user_key: &[u8], value: &[u8]) -> Result<()> {
        let shard = self.current_shard(self.maps(state)?)?;
        let key = std::mem::take(&mut self.current_key);
        let shard_map = self.maps_mut(state)?.shard_mut(shard);
        let user_map = match shard_map.get_mut(key.as_slice()) {
            Some(m) => m,
            None => shard_map.entry(key.as_slice().into()).or_default(),
        };
        user_map.insert(user_key.to_vec(), value.to_vec());
        self.current_key = key;
        Ok(())
    }

    fn map_remove(&mut self, state: StateId, user_key: &[u8]) -> Result<()> {
        let table = self.maps(state)?;
        let shard = self.current_shard(table)?;
        let present = table
            .get(shard, &self.current_key)
            .is_some_and(|m| m.contains_key(user_key));
        if !present {
            return Ok(());
        }
        let key = std::mem::take(&mut self.current_key);
        let shard_map = self.maps_mut(state)?.shard_mut(shard);
        if let Some(user_map) = shard_map.get_mut(key.as_slice()) {
            user_map.remove(user_key);
            if user_map.is_empty() {
                shard_map.remove(key.as_slice());
            }
        }
        self.current_key = key;
        Ok(())
    }

    fn map_entries(&self, state: StateId) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let table = self.maps(state)?;
        let shard = self.current_shard(table)?;
        Ok(table
            .get(shard, &self.current_key)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn keys(&self, state: StateId) -> Result<Vec<Vec<u8>>> {
        let mut keys: Vec<Vec<u8>> = match &self.state(state)?.table {
            StateTable::Cells(t) => t.iter().map(|(k, _)| k.to_vec()).collect(),
            StateTable::Maps(t) => t.iter().map(|(k, _)| k.to_vec()).collect(),
        };
        keys.sort_unstable();
        Ok(keys)
    }

    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn AsyncSnapshot>> {
        if target.format != SnapshotFormat::Canonical {
            return Err(Error::unsupported(format!(
                "the {} backend writes canonical snapshots only, not {:?}",
                self.name, target.format
            )));
        }
        if target.incremental {
            return Err(Error::unsupported(format!(
                "the {} backend does not take incremental snapshots",
                self.name
            )));
        }
        // The synchronous phase: share every shard (Arc clones), copy nothing.
        let states = self
            .states
            .iter()
            .map(|s| FrozenState {
                meta: s.meta.clone(),
                table: s.table.clone(),
            })
            .collect();
        Ok(Box::new(HeapSnapshot {
            backend: self.name,
            range: self.options.key_group_range,
            now_ms: self.options.clock.now_ms(),
            max_state_size: self.max_state_size,
            states,
        }))
    }
}

/// Creates heap backends and restores them from canonical snapshots.
#[derive(Debug, Clone)]
pub struct HeapStateBackend {
    name: &'static str,
    max_state_size: Option<u64>,
}

impl HeapStateBackend {
    /// A heap backend named `name` with an optional snapshot size cap.
    pub fn new(name: &'static str, max_state_size: Option<u64>) -> Self {
        Self { name, max_state_size }
    }

    /// The snapshot size cap.
    pub fn max_state_size(&self) -> Option<u64> {
        self.max_state_size
    }

    /// Creates a concrete (not boxed) keyed backend.
    pub fn create(&self, options: KeyedBackendOptions) -> HeapKeyedStateBackend {
        HeapKeyedStateBackend::new(self.name, options, self.max_state_size)
    }
}

impl state_api::StateBackend for HeapStateBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        HEAP_CAPABILITIES
    }

    fn create_keyed_backend(&self, options: KeyedBackendOptions) -> Result<Box<dyn KeyedStateBackend>> {
        state_api::key_group::check_parallelism(1, options.max_parallelism)?;
        Ok(Box::new(self.create(options)))
    }

    fn restore_keyed_backend(
        &self,
        options: KeyedBackendOptions,
        handles: &[state_api::KeyedStateHandle],
        storage: &state_api::CheckpointStorage,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        let mut backend = self.create(options);
        state_api::snapshot::canonical::restore_into(&mut backend, handles, storage)?;
        Ok(Box::new(backend))
    }
}
