//! The heap keyed backend: state in copy-on-write hash tables.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use streamstate_api::backend::{require_key_group_in_range, wrong_state_kind};
use streamstate_api::codec::with_scratch;
use streamstate_api::key_group::{key_group_for_hash, key_hash};
use streamstate_api::registry::{select_key, RegisteredState, StateRegistry};
use streamstate_api::{
    AsyncSnapshot, Capabilities, Error, KeyedBackendOptions, KeyedStateBackend, Result, SnapshotFormat, SnapshotKind,
    SnapshotTarget, StateId, StateMeta,
};

use crate::snapshot::{Chain, FrozenState, HeapSnapshot, IncrementalPlan};
use crate::table::{Bytes, Epoch, StateTable, Table, UserMap, WriteEpoch};

/// What the heap backends support.
pub const HEAP_CAPABILITIES: Capabilities = Capabilities {
    canonical_snapshots: true,
    native_snapshots: false,
    incremental_snapshots: true,
    ttl: true,
    rescaling: true,
    write_back_cache: false,
};

/// Keyed state on the heap, shared by the memory and fs backends.
///
/// ```
/// use streamstate_api::{KeyedBackendOptions, KeyGroupRange, KeyedStateBackendExt, ValueStateDescriptor};
/// use streamstate_memory::HeapKeyedStateBackend;
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
    states: StateRegistry<StateTable>,
    current_key: Vec<u8>,
    current_key_group: u32,
    current_hash: u64,
    /// Snapshot epoch: writes are stamped with it, each snapshot bumps it.
    epoch: Epoch,
    /// Set by the first incremental snapshot: removals leave markers.
    keep_removals: bool,
    /// The files of the newest uploaded incremental snapshot, which the next
    /// delta builds on; written by asynchronous phases.
    chain: Arc<Mutex<Option<Chain>>>,
    /// The chain's epoch, read on the write path without the lock.
    covered_epoch: Arc<AtomicU64>,
    /// Makes this instance's shared file names unique across instances and
    /// runs of the same job.
    instance_token: String,
}

impl HeapKeyedStateBackend {
    /// An empty backend named `name` (written into snapshots); snapshots
    /// larger than `max_state_size` bytes fail.
    pub fn new(name: &'static str, options: KeyedBackendOptions, max_state_size: Option<u64>) -> Self {
        Self {
            name,
            options,
            max_state_size,
            states: StateRegistry::default(),
            current_key: Vec::new(),
            current_key_group: 0,
            current_hash: 0,
            epoch: 1,
            keep_removals: false,
            chain: Arc::new(Mutex::new(None)),
            covered_epoch: Arc::new(AtomicU64::new(0)),
            instance_token: unique_token(),
        }
    }

    #[inline]
    fn write_epoch(&self) -> WriteEpoch {
        WriteEpoch {
            current: self.epoch,
            keep_removals: self.keep_removals,
            covered: self.covered_epoch.load(Ordering::Acquire),
        }
    }

    fn state(&self, id: StateId) -> Result<&RegisteredState<StateTable>> {
        self.states.get(id)
    }

    fn cells(&self, id: StateId) -> Result<&Table<Bytes>> {
        let state = self.state(id)?;
        match &state.storage {
            StateTable::Cells(t) => Ok(t),
            StateTable::Maps(_) => Err(wrong_state_kind(&state.meta, "a cell state")),
        }
    }

    fn cells_mut(&mut self, id: StateId) -> Result<&mut Table<Bytes>> {
        let state = self.states.get_mut(id)?;
        match &mut state.storage {
            StateTable::Cells(t) => Ok(t),
            StateTable::Maps(_) => Err(wrong_state_kind(&state.meta, "a cell state")),
        }
    }

    fn maps(&self, id: StateId) -> Result<&Table<UserMap>> {
        let state = self.state(id)?;
        match &state.storage {
            StateTable::Maps(t) => Ok(t),
            StateTable::Cells(_) => Err(wrong_state_kind(&state.meta, "a map state")),
        }
    }

    fn maps_mut(&mut self, id: StateId) -> Result<&mut Table<UserMap>> {
        let state = self.states.get_mut(id)?;
        match &mut state.storage {
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

    /// The cells of `state` in `key_group`, in table order.
    fn key_group_cells(&self, state: StateId, key_group: u32) -> Result<impl Iterator<Item = (&[u8], &Bytes)>> {
        require_key_group_in_range(key_group, self.options.key_group_range)?;
        Ok(self
            .cells(state)?
            .key_group_shards(key_group)
            .iter()
            .flat_map(|shard| shard.iter()))
    }

    /// Number of keys with a value in `state`.
    ///
    /// # Errors
    /// For an unknown state id.
    pub fn key_count(&self, state: StateId) -> Result<usize> {
        Ok(match &self.state(state)?.storage {
            StateTable::Cells(t) => t.len(),
            StateTable::Maps(t) => t.len(),
        })
    }
}

impl KeyedStateBackend for HeapKeyedStateBackend {
    fn backend_name(&self) -> &'static str {
        self.name
    }

    fn approximate_entries(&self) -> Option<u64> {
        let count = |state: &StateTable| match state {
            StateTable::Cells(t) => t.len(),
            StateTable::Maps(t) => t.len(),
        };
        Some(self.states.iter().map(|s| count(&s.storage) as u64).sum())
    }

    fn capabilities(&self) -> Capabilities {
        HEAP_CAPABILITIES
    }

    fn options(&self) -> &KeyedBackendOptions {
        &self.options
    }

    fn register_state(&mut self, meta: &StateMeta) -> Result<StateId> {
        let range = self.options.key_group_range;
        self.states.register(meta, |meta| {
            Ok(if meta.stores_map() {
                StateTable::Maps(Table::new(range))
            } else {
                StateTable::Cells(Table::new(range))
            })
        })
    }

    fn registered_states(&self) -> Vec<StateMeta> {
        self.states.metas()
    }

    fn set_current_key(&mut self, serialized_key: &[u8]) -> Result<()> {
        let (hash, key_group) = select_key(serialized_key, &self.options)?;
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

    fn reserve_keys(&mut self, state: StateId, key_group: u32, keys: usize) {
        if let Ok(table) = self.cells_mut(state) {
            table.reserve(key_group, keys);
        }
    }

    fn touch(&self, state: StateId, serialized_key: &[u8]) -> u64 {
        let Ok(table) = self.cells(state) else {
            return 0;
        };
        let hash = key_hash(serialized_key);
        let key_group = key_group_for_hash(hash, self.options.max_parallelism);
        if !self.options.key_group_range.contains(key_group) {
            return 0;
        }
        table
            .get(table.shard_index(key_group, hash), serialized_key)
            .map_or(0, |cell| cell.len() as u64)
    }

    fn put(&mut self, state: StateId, value: &[u8]) -> Result<()> {
        let shard = self.current_shard(self.cells(state)?)?;
        let epoch = self.write_epoch();
        let key = std::mem::take(&mut self.current_key);
        let result = self.cells_mut(state).map(|table| {
            let cell = table.upsert(shard, &key, epoch);
            cell.clear();
            cell.extend_from_slice(value);
        });
        self.current_key = key;
        result
    }

    /// One lookup of the cell ([`Table::read_modify_write`]) instead of a
    /// `get` and a `put`: cell lookups are a large part of the word count's
    /// profile (docs/BENCHMARKS.md).
    fn update_cell(&mut self, state: StateId, update: &mut streamstate_api::backend::CellUpdate<'_>) -> Result<()> {
        let shard = self.current_shard(self.cells(state)?)?;
        let epoch = self.write_epoch();
        let key = std::mem::take(&mut self.current_key);
        let result = with_scratch(|new| {
            self.cells_mut(state)?
                .read_modify_write(shard, &key, epoch, |cell, present| {
                    update(present.then_some(cell.as_slice()), new)?;
                    cell.clear();
                    cell.extend_from_slice(new);
                    Ok(())
                })
        });
        self.current_key = key;
        result
    }

    fn append(&mut self, state: StateId, bytes: &[u8]) -> Result<()> {
        let shard = self.current_shard(self.cells(state)?)?;
        let epoch = self.write_epoch();
        let key = std::mem::take(&mut self.current_key);
        let result = self
            .cells_mut(state)
            .map(|table| table.upsert(shard, &key, epoch).extend_from_slice(bytes));
        self.current_key = key;
        result
    }

    fn clear(&mut self, state: StateId) -> Result<()> {
        if self.current_key.is_empty() {
            return Err(Error::invalid_argument("no current key: call set_current_key first"));
        }
        let epoch = self.write_epoch();
        let (kg, hash) = (self.current_key_group, self.current_hash);
        let key = &self.current_key;
        let state_ref = self.states.get_mut(state)?;
        match &mut state_ref.storage {
            StateTable::Cells(t) => t.remove(t.shard_index(kg, hash), key, epoch),
            StateTable::Maps(t) => t.remove(t.shard_index(kg, hash), key, epoch),
        }
        Ok(())
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
        let epoch = self.write_epoch();
        let key = std::mem::take(&mut self.current_key);
        let result = self.maps_mut(state).map(|table| {
            let user_map = table.upsert(shard, &key, epoch);
            // An update (a window's accumulator, again and again) reuses
            // the entry's buffer: no allocation.
            match user_map.get_mut(user_key) {
                Some(stored) => {
                    stored.clear();
                    stored.extend_from_slice(value);
                }
                None => {
                    user_map.insert(user_key.to_vec(), value.to_vec());
                }
            }
        });
        self.current_key = key;
        result
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
        let epoch = self.write_epoch();
        let key = std::mem::take(&mut self.current_key);
        let result = self.maps_mut(state).map(|table| {
            table.modify(shard, &key, epoch, |user_map| {
                user_map.remove(user_key);
                user_map.is_empty()
            });
        });
        self.current_key = key;
        result
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
        let mut keys: Vec<Vec<u8>> = match &self.state(state)?.storage {
            StateTable::Cells(t) => t.iter().map(|(k, _)| k.to_vec()).collect(),
            StateTable::Maps(t) => t.iter().map(|(k, _)| k.to_vec()).collect(),
        };
        keys.sort_unstable();
        Ok(keys)
    }

    fn keys_in_key_group(&self, state: StateId, key_group: u32) -> Result<Vec<Vec<u8>>> {
        require_key_group_in_range(key_group, self.options.key_group_range)?;
        fn collect<V: Clone>(table: &Table<V>, key_group: u32) -> Vec<Vec<u8>> {
            table
                .key_group_shards(key_group)
                .iter()
                .flat_map(|shard| shard.iter().map(|(k, _)| k.to_vec()))
                .collect()
        }
        let mut keys = match &self.state(state)?.storage {
            StateTable::Cells(t) => collect(t, key_group),
            StateTable::Maps(t) => collect(t, key_group),
        };
        keys.sort_unstable();
        Ok(keys)
    }

    fn for_each_cell_in_key_group(
        &mut self,
        state: StateId,
        key_group: u32,
        visit: &mut streamstate_api::backend::CellVisitor<'_>,
    ) -> Result<()> {
        // The group's cells where they are, ordered by key: no copy of a
        // key and no lookup per key (the lookups were half of a word
        // count's final output, docs/BENCHMARKS.md).
        let mut cells: Vec<(&[u8], &Bytes)> = self.key_group_cells(state, key_group)?.collect();
        cells.sort_unstable_by_key(|(key, _)| *key);
        cells.into_iter().try_for_each(|(key, cell)| visit(key, cell))
    }

    fn for_each_cell_in_key_group_unordered(
        &mut self,
        state: StateId,
        key_group: u32,
        visit: &mut streamstate_api::backend::CellVisitor<'_>,
    ) -> Result<()> {
        self.key_group_cells(state, key_group)?
            .try_for_each(|(key, cell)| visit(key, cell))
    }

    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn AsyncSnapshot>> {
        if target.format != SnapshotFormat::Canonical {
            return Err(Error::unsupported(format!(
                "the {} backend writes canonical snapshots only, not {:?}",
                self.name, target.format
            )));
        }
        // The synchronous phase: share every shard (Arc clones), copy nothing,
        // and start a new epoch so later writes are told apart.
        let epoch = self.epoch;
        self.epoch += 1;
        // Savepoints are self-contained: never part of a chain.
        let incremental = (target.incremental && target.kind == SnapshotKind::Checkpoint).then(|| {
            self.keep_removals = true;
            IncrementalPlan {
                // A poisoned lock only means an upload thread panicked; its
                // chain is still whole, but starting over is safer.
                base: self
                    .chain
                    .lock()
                    .ok()
                    .and_then(|c| c.clone())
                    .filter(|c| !c.wants_full_snapshot()),
                chain: Arc::clone(&self.chain),
                covered_epoch: Arc::clone(&self.covered_epoch),
                instance_token: self.instance_token.clone(),
            }
        });
        let states = self
            .states
            .iter()
            .map(|s| FrozenState {
                meta: s.meta.clone(),
                table: s.storage.clone(),
            })
            .collect();
        Ok(Box::new(HeapSnapshot {
            backend: self.name,
            range: self.options.key_group_range,
            now_ms: self.options.clock.now_ms(),
            max_state_size: self.max_state_size,
            states,
            epoch,
            incremental,
        }))
    }
}

/// A token unique to this backend instance: process id, time and a
/// process-wide counter, so shared files of two instances, or of two runs of
/// the same job, never share a name.
fn unique_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
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

impl streamstate_api::StateBackend for HeapStateBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        HEAP_CAPABILITIES
    }

    fn create_keyed_backend(&self, options: KeyedBackendOptions) -> Result<Box<dyn KeyedStateBackend>> {
        streamstate_api::key_group::check_parallelism(1, options.max_parallelism)?;
        Ok(Box::new(self.create(options)))
    }

    fn restore_keyed_backend(
        &self,
        options: KeyedBackendOptions,
        handles: &[streamstate_api::KeyedStateHandle],
        storage: &streamstate_api::CheckpointStorage,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        let mut backend = self.create(options);
        streamstate_api::snapshot::canonical::restore_into(&mut backend, handles, storage)?;
        Ok(Box::new(backend))
    }
}
