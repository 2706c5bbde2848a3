//! The keyed state backend contract.
//!
//! A [`StateBackend`] is a factory chosen from configuration (memory, fs,
//! rocksdb); it creates one [`KeyedStateBackend`] per parallel operator
//! instance. The keyed backend stores bytes: typed access lives in
//! [`crate::state`], which serializes with postcard and calls the raw methods
//! here.
//!
//! # Contract
//!
//! * **Scoped to the current key.** [`KeyedStateBackend::set_current_key`]
//!   selects the key (serialized bytes); every cell and map call acts on that
//!   key's state. A key whose key group is outside the backend's
//!   [`KeyGroupRange`] is rejected with [`ErrorKind::InvalidArgument`].
//! * **Per-record calls are synchronous** and never touch remote storage.
//! * **Snapshots have two phases.** [`KeyedStateBackend::snapshot`] is the
//!   synchronous phase: it runs on the processing thread and captures a
//!   consistent view cheaply (copy-on-write tables, a RocksDB checkpoint). It
//!   returns an [`AsyncSnapshot`] that writes the view to storage on another
//!   thread while processing continues. Writes made after `snapshot` returns
//!   are never part of that snapshot.
//! * **Capabilities, not silent no-ops.** A backend declares what it can do in
//!   [`Capabilities`]; asking for something else fails with
//!   [`ErrorKind::Unsupported`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::descriptor::StateMeta;
pub use crate::handle::{FileRef, KeyedStateHandle, SnapshotFormat, SnapshotKind, SnapshotTarget};
use crate::key_group::KeyGroupRange;
use crate::storage::CheckpointStorage;
use crate::ttl::Clock;
use crate::{Error, ErrorKind, Result};

/// Index of a registered state inside one keyed backend.
pub type StateId = usize;

/// What a backend supports. Tests and the runtime choose by capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Can write and restore the backend-neutral canonical format.
    pub canonical_snapshots: bool,
    /// Can write its own native files (e.g. RocksDB SSTs).
    pub native_snapshots: bool,
    /// Can upload only what changed since an earlier snapshot.
    pub incremental_snapshots: bool,
    /// Honors state TTL.
    pub ttl: bool,
    /// Can restore from handles whose key-group ranges differ from its own.
    pub rescaling: bool,
    /// Keeps recently written values in memory and writes them out in
    /// batches (RocksDB's write-back cache), so hot keys already skip the
    /// costly write path: an operator that buffers its own updates (the
    /// runtime's `sum` mini-batch) gains little on top and keeps a smaller
    /// buffer.
    #[serde(default)]
    pub write_back_cache: bool,
}

/// What [`KeyedStateBackend::for_each_cell_in_key_group`] calls for each
/// cell: `visit(key, cell)`, serialized key and stored cell bytes.
pub type CellVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// What [`KeyedStateBackend::scan_timers`] calls for each timer:
/// `visit(key, user key)`; returning `false` ends the scan.
pub type TimerVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// The asynchronous phase of a snapshot: owns a consistent view of the state
/// and writes it to storage. Runs on any thread; processing goes on meanwhile.
pub trait AsyncSnapshot: Send {
    /// Writes the captured view to `storage` at `target`.
    ///
    /// # Errors
    /// Storage failures ([`ErrorKind::Storage`]), or
    /// [`ErrorKind::StateTooLarge`] when the backend has a size cap.
    fn write(self: Box<Self>, storage: &CheckpointStorage, target: &SnapshotTarget) -> Result<KeyedStateHandle>;
}

/// What [`KeyedStateBackend::update_cell`] calls with the current key's cell
/// (`None` when absent) and an empty buffer for the new cell.
pub type CellUpdate<'a> = dyn FnMut(Option<&[u8]>, &mut Vec<u8>) -> Result<()> + 'a;

/// The state of one parallel operator instance, stored as bytes.
///
/// See the [module docs](self) for the contract. Typed access goes through
/// the handles in [`crate::state`].
pub trait KeyedStateBackend: Send + fmt::Debug {
    /// Backend name written into snapshots (`memory`, `fs`, `rocksdb`).
    fn backend_name(&self) -> &'static str;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// The options this instance was made with: its job, operator,
    /// key-group range, max parallelism and clock.
    fn options(&self) -> &KeyedBackendOptions;

    /// How many entries the instance holds across its states (a key's
    /// value, list or map counts once per key), for metrics; RocksDB's is
    /// its estimate. `None` when the backend cannot tell cheaply.
    fn approximate_entries(&self) -> Option<u64> {
        None
    }

    /// The key groups this instance owns.
    fn key_group_range(&self) -> KeyGroupRange {
        self.options().key_group_range
    }

    /// The job's max parallelism (number of key groups).
    fn max_parallelism(&self) -> u32 {
        self.options().max_parallelism
    }

    /// The clock TTL reads.
    fn clock(&self) -> &dyn Clock {
        self.options().clock.as_ref()
    }

    /// Registers a state, or returns the id of an already registered state of
    /// the same name (as after a restore).
    ///
    /// # Errors
    /// [`ErrorKind::IncompatibleState`] when the name is registered with
    /// another kind; [`ErrorKind::InvalidArgument`] for an empty name.
    fn register_state(&mut self, meta: &StateMeta) -> Result<StateId>;

    /// The registered states, indexed by [`StateId`].
    fn registered_states(&self) -> Vec<StateMeta>;

    /// Selects the key (serialized with postcard) that later calls act on.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when the key's group is outside
    /// [`KeyedStateBackend::key_group_range`].
    fn set_current_key(&mut self, serialized_key: &[u8]) -> Result<()>;

    /// The current key's serialized bytes (empty before the first key).
    fn current_key(&self) -> &[u8];

    /// The current key's group.
    fn current_key_group(&self) -> u32;

    /// Reads the current key's cell of a value, list, reducing or aggregating
    /// state.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an unknown state id or a map state.
    fn get(&self, state: StateId) -> Result<Option<Cow<'_, [u8]>>>;

    /// A hint from a restore about to write the cells of `keys` keys of
    /// `state` in `key_group`, none of them there yet: a backend that keeps
    /// cells in hash tables makes room for them at once instead of growing
    /// its tables step by step (each step a copy and fresh pages). Never
    /// fails (an unknown state, a map state or a key group outside the range
    /// reserves nothing); the default does nothing.
    fn reserve_keys(&mut self, state: StateId, key_group: u32, keys: usize) {
        let _ = (state, key_group, keys);
    }

    /// A hint for a caller about to read many keys' cells of `state`: loads
    /// what reading `serialized_key`'s cell will need, without changing the
    /// current key. Touching a group of keys before handling them lets the
    /// CPU overlap their cache misses instead of waiting for each in turn.
    /// Returns a word of what was read, for the caller to pass to
    /// [`std::hint::black_box`]; never fails (an unknown state or a key
    /// outside the range reads nothing). The default reads nothing:
    /// backends whose cells are not in memory tables gain nothing from it.
    fn touch(&self, state: StateId, serialized_key: &[u8]) -> u64 {
        let _ = (state, serialized_key);
        0
    }

    /// A hint for a caller about to read and write `state`'s cells of a
    /// group of keys, one after another: loads what those reads will need,
    /// without changing the current key. The default
    /// [`touch`](KeyedStateBackend::touch)es each key, for backends whose
    /// cells are in memory tables; RocksDB reads the cells it has not
    /// cached in one batched lookup (`MultiGet`), which shares the work of
    /// finding the keys in its memtables and files instead of doing it once
    /// per key. Returns a word of what was read, for the caller to pass to
    /// [`std::hint::black_box`]; never fails (what cannot be loaded is left
    /// for the read itself, which reports the error).
    ///
    /// # Examples
    ///
    /// ```
    /// use streamstate_api::{KeyedStateBackend, StateId};
    ///
    /// /// How many of `keys` have a cell in `state`.
    /// fn present(backend: &mut dyn KeyedStateBackend, state: StateId, keys: &[&[u8]]) -> streamstate_api::Result<usize> {
    ///     std::hint::black_box(backend.prefetch(state, keys));
    ///     let mut present = 0;
    ///     for key in keys {
    ///         backend.set_current_key(key)?;
    ///         present += usize::from(backend.get(state)?.is_some()); // loaded by the prefetch
    ///     }
    ///     Ok(present)
    /// }
    /// ```
    fn prefetch(&mut self, state: StateId, serialized_keys: &[&[u8]]) -> u64 {
        serialized_keys
            .iter()
            .fold(0, |word, key| word ^ self.touch(state, key))
    }

    /// Replaces the current key's cell.
    ///
    /// # Errors
    /// As [`KeyedStateBackend::get`].
    fn put(&mut self, state: StateId, value: &[u8]) -> Result<()>;

    /// Reads and replaces the current key's cell in one step (a running
    /// count's read-modify-write): `update` gets the cell (`None` when
    /// absent) and writes the new cell into the empty buffer it is given.
    /// Backends whose cells are in hash tables find the cell once, where a
    /// [`get`](KeyedStateBackend::get) then a
    /// [`put`](KeyedStateBackend::put) look it up twice; the default does
    /// exactly that. [`crate::ValueState::update_with`] is the typed form.
    ///
    /// # Errors
    /// As [`KeyedStateBackend::get`] and [`KeyedStateBackend::put`], and the
    /// error `update` returns, with the cell left as it was.
    fn update_cell(&mut self, state: StateId, update: &mut CellUpdate<'_>) -> Result<()> {
        crate::codec::with_scratch(|new| {
            update(self.get(state)?.as_deref(), new)?;
            self.put(state, new)
        })
    }

    /// Appends bytes to the current key's cell, creating it when absent (list
    /// appends; RocksDB does this with a merge operator, without a read).
    ///
    /// # Errors
    /// As [`KeyedStateBackend::get`].
    fn append(&mut self, state: StateId, bytes: &[u8]) -> Result<()>;

    /// Removes the current key's cell, or all its map entries.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an unknown state id.
    fn clear(&mut self, state: StateId) -> Result<()>;

    /// Reads one entry of the current key's map.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an unknown id or a non-map state.
    fn map_get(&self, state: StateId, user_key: &[u8]) -> Result<Option<Cow<'_, [u8]>>>;

    /// Inserts or replaces one entry of the current key's map.
    ///
    /// # Errors
    /// As [`KeyedStateBackend::map_get`].
    fn map_put(&mut self, state: StateId, user_key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes one entry of the current key's map (absent entries are fine).
    ///
    /// # Errors
    /// As [`KeyedStateBackend::map_get`].
    fn map_remove(&mut self, state: StateId, user_key: &[u8]) -> Result<()>;

    /// All entries of the current key's map, ordered by user-key bytes.
    ///
    /// # Errors
    /// As [`KeyedStateBackend::map_get`].
    fn map_entries(&self, state: StateId) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Whether `state`, a timer state (`_timer_state/…`, a map state), is
    /// stored in timestamp order within each key group, across keys (the
    /// RocksDB backend's default, Flink's `ROCKSDB` timer service
    /// factory). The [`crate::timers::TimerService`] then keeps only each
    /// key group's first timer in memory and reads the next from the
    /// backend ([`KeyedStateBackend::scan_timers`]); otherwise it keeps
    /// every timer in an in-memory set (Flink's `HEAP` timers). The
    /// default: `false`.
    fn timers_in_time_order(&self, state: StateId) -> bool {
        let _ = state;
        false
    }

    /// Visits the timers of `state` in `key_group` in user-key order (a
    /// timer's user key starts with its timestamp) across keys, as
    /// `visit(key, user key)`, until `visit` returns `false`: for a state
    /// [`KeyedStateBackend::timers_in_time_order`] says is stored so.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] for any other state (the default);
    /// backend errors; the first error of `visit`.
    fn scan_timers(&self, state: StateId, key_group: u32, visit: &mut TimerVisitor<'_>) -> Result<()> {
        let _ = (state, key_group, visit);
        Err(Error::unsupported("this backend keeps no state in timer order"))
    }

    /// Every key that has a cell or at least one map entry in `state`,
    /// ordered by serialized key bytes (Flink's `getKeys`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an unknown state id.
    fn keys(&self, state: StateId) -> Result<Vec<Vec<u8>>>;

    /// The keys of `state` in one key group of this backend's range, ordered
    /// by serialized key bytes: [`KeyedStateBackend::keys`] one group at a
    /// time, so a caller visiting every key (a bounded job's final results)
    /// holds one group's keys in memory instead of all of them.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an unknown state id or a key group
    /// outside this backend's range.
    fn keys_in_key_group(&self, state: StateId, key_group: u32) -> Result<Vec<Vec<u8>>>;

    /// Calls `visit(key, cell)` for every key of `state` in `key_group`
    /// that has a cell, in the order of
    /// [`KeyedStateBackend::keys_in_key_group`], with the cell's stored
    /// bytes as [`KeyedStateBackend::get`] returns them: a bounded job's
    /// final results read a key group's cells without a lookup per key.
    /// Stops at the first error `visit` returns.
    ///
    /// The default reads each key of `keys_in_key_group` with `get`, which
    /// changes the current key; the heap backends walk their cells in place
    /// and RocksDB scans the group's key range once.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an unknown state id, a map state
    /// or a key group outside this backend's range; the first error of
    /// `visit`.
    fn for_each_cell_in_key_group(
        &mut self,
        state: StateId,
        key_group: u32,
        visit: &mut CellVisitor<'_>,
    ) -> Result<()> {
        for key in self.keys_in_key_group(state, key_group)? {
            self.set_current_key(&key)?;
            if let Some(cell) = self.get(state)? {
                visit(&key, &cell)?;
            }
        }
        Ok(())
    }

    /// [`KeyedStateBackend::for_each_cell_in_key_group`] in whatever order
    /// the backend keeps the cells: for a reader that needs every cell but
    /// no order, such as a bounded job's final results (Flink emits them
    /// unordered too). The heap backends then walk their tables without
    /// sorting the group's keys, a third of a word count's final output
    /// (docs/BENCHMARKS.md); the default visits in key order.
    ///
    /// # Errors
    /// As [`KeyedStateBackend::for_each_cell_in_key_group`].
    fn for_each_cell_in_key_group_unordered(
        &mut self,
        state: StateId,
        key_group: u32,
        visit: &mut CellVisitor<'_>,
    ) -> Result<()> {
        self.for_each_cell_in_key_group(state, key_group, visit)
    }

    /// The synchronous phase of a snapshot: captures a consistent view and
    /// returns the asynchronous phase that writes it.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] for a format or mode the backend lacks.
    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn AsyncSnapshot>>;
}

/// Everything a keyed backend instance is created with.
#[derive(Debug, Clone)]
pub struct KeyedBackendOptions {
    /// The job the state belongs to.
    pub job_id: String,
    /// The operator the state belongs to.
    pub operator_id: String,
    /// The key groups this instance owns.
    pub key_group_range: KeyGroupRange,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// The clock TTL reads.
    pub clock: Arc<dyn Clock>,
}

impl KeyedBackendOptions {
    /// Options for one instance owning `key_group_range`, with the system
    /// clock.
    pub fn new(
        job_id: impl Into<String>,
        operator_id: impl Into<String>,
        key_group_range: KeyGroupRange,
        max_parallelism: u32,
    ) -> Self {
        Self {
            job_id: job_id.into(),
            operator_id: operator_id.into(),
            key_group_range,
            max_parallelism,
            clock: crate::ttl::system_clock(),
        }
    }

    /// Replaces the clock (tests inject a [`crate::ttl::ManualClock`]).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// A state backend chosen by configuration: creates and restores keyed
/// backends (Flink's `StateBackend`).
pub trait StateBackend: Send + Sync + fmt::Debug {
    /// `memory`, `fs` or `rocksdb`.
    fn name(&self) -> &'static str;

    /// What the keyed backends it creates support.
    fn capabilities(&self) -> Capabilities;

    /// A new, empty keyed backend.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for invalid options.
    fn create_keyed_backend(&self, options: KeyedBackendOptions) -> Result<Box<dyn KeyedStateBackend>>;

    /// A keyed backend holding the key groups of `options.key_group_range`
    /// taken from `handles` (one per old subtask; key groups outside the
    /// range are skipped).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::Corrupt`] or
    /// [`ErrorKind::ChecksumMismatch`] naming the file; [`ErrorKind::Unsupported`]
    /// for a format the backend cannot read.
    fn restore_keyed_backend(
        &self,
        options: KeyedBackendOptions,
        handles: &[KeyedStateHandle],
        storage: &CheckpointStorage,
    ) -> Result<Box<dyn KeyedStateBackend>>;
}

/// The error for a state id a backend does not know.
pub fn unknown_state(state: StateId) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("state id {state} is not registered with this backend"),
    )
}

/// The error for calling a cell method on a map state or the reverse.
pub fn wrong_state_kind(meta: &StateMeta, wanted: &str) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("state is a {:?} state, not {wanted}", meta.kind),
    )
    .with_context("state", meta.name.clone())
}

/// The error for a key group outside a backend's range, named by what asked.
pub fn key_group_outside_range(key_group: u32, range: KeyGroupRange) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("key group {key_group} is outside this backend's range {range}"),
    )
}

/// `Ok` when `range` holds `key_group`, else [`key_group_outside_range`]'s
/// error: the check every per-key-group call of a backend starts with.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for a key group outside `range`.
pub fn require_key_group_in_range(key_group: u32, range: KeyGroupRange) -> Result<()> {
    if range.contains(key_group) {
        Ok(())
    } else {
        Err(key_group_outside_range(key_group, range))
    }
}

/// The error for a key whose group this backend does not own.
pub fn key_outside_range(key_group: u32, range: KeyGroupRange) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("key belongs to key group {key_group}, outside this backend's range {range}"),
    )
}
