//! The RocksDB keyed backend: one RocksDB instance per operator instance,
//! one column family per state.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};
use streamstate_api::backend::{require_key_group_in_range, wrong_state_kind};
use streamstate_api::key_group::assign_to_key_group;
use streamstate_api::registry::{select_key, RegisteredState, StateRegistry};
use streamstate_api::{
    AsyncSnapshot, Capabilities, Error, ErrorKind, FileRef, KeyedBackendOptions, KeyedStateBackend, Result,
    SnapshotFormat, SnapshotKind, SnapshotTarget, StateId, StateMeta,
};

use crate::backend::range_compaction::{ClippedRange, RangeCompaction};
use crate::config::TimerStore;
use crate::errors::{backend_closed, rocks_error};
use crate::files::DirGuard;
use crate::keys;
use crate::options::{cf_options, count_wal_files, db_options_for_open, is_timer_cf, state_cf, timer_cf, META_CF};
use crate::snapshots::canonical::CanonicalFromRocksDb;
use crate::snapshots::changelog::{ChainSlot, Changelog, SegmentSnapshot};
use crate::snapshots::local_checkpoint::{self, CheckpointThread, Memtables};
use crate::snapshots::native::NativeSnapshot;
use crate::write_path::pending_cells::{self, PendingCellsWriter, WriteLog, WriteOp};
use streamstate_api::timers::TimeDomain;

mod keyed_state;
pub(crate) mod range_compaction;
mod rescaling;
use crate::resources::Resources;
use crate::write_path::write_back::{Buffered, WriteBack};

/// What the RocksDB backend supports. A keyed backend whose write-back
/// cache is turned off (0 entries) reports `write_back_cache: false`.
pub const ROCKSDB_CAPABILITIES: Capabilities = Capabilities {
    canonical_snapshots: true,
    native_snapshots: true,
    incremental_snapshots: true,
    ttl: true,
    rescaling: true,
    write_back_cache: true,
};

/// A state's metadata and its column family's name.
type RocksState = RegisteredState<String>;

/// Keyed state in a local RocksDB instance.
pub struct RocksDbKeyedStateBackend {
    /// Shared with the [`CheckpointThread`] while it runs; only this
    /// backend writes it.
    pub(crate) db: Option<Arc<DB>>,
    pub(crate) dir: PathBuf,
    options: KeyedBackendOptions,
    resources: Arc<Resources>,
    states: StateRegistry<String>,
    current_key: Vec<u8>,
    current_key_group: u32,
    cell_key: Vec<u8>,
    map_prefix: Vec<u8>,
    scratch: Vec<u8>,
    /// The RocksDB keys of a [`KeyedStateBackend::prefetch`], end to end,
    /// and where each ends: kept between calls, so a prefetch allocates
    /// nothing of its own.
    prefetch_keys: Vec<u8>,
    prefetch_ends: Vec<usize>,
    write_options: WriteOptions,
    /// Recent cell writes not yet in RocksDB; flushed when full and before
    /// snapshots.
    write_back: WriteBack,
    /// SST files already in `shared/` (local name -> file), for incremental
    /// snapshots. Filled by the asynchronous phase.
    pub(crate) uploaded: Arc<Mutex<HashMap<String, FileRef>>>,
    pub(crate) instance: String,
    snapshot_seq: u64,
    /// The thread making the last native snapshot's RocksDB checkpoint:
    /// until it finishes, nothing may write RocksDB
    /// ([`Self::wait_for_checkpoint_thread`]).
    checkpoint_thread: Option<CheckpointThread>,
    /// Key ranges [`Self::clip_to_own_range`] deleted, for
    /// [`Self::start_compacting_clipped_ranges`].
    clipped: Vec<ClippedRange>,
    /// The thread compacting them, while it runs.
    range_compaction: Option<RangeCompaction>,
    /// The writes since the newest changelog base, while changelog
    /// checkpoints are on and one was made ([`crate::snapshots::changelog`]).
    changelog: Option<Changelog>,
    /// The newest changelog chain uploaded; written by asynchronous phases.
    chain: ChainSlot,
}

/// Adds a write that went around the write-back cache to `changelog`, if
/// one is kept; a changelog grown past its limit is dropped (the next
/// checkpoint is a base).
fn log_write(changelog: &mut Option<Changelog>, state: StateId, key: &[u8], op: WriteOp<'_>) {
    if let Some(log) = changelog {
        log.log.add(state, key, op);
        if log.overflowed() {
            *changelog = None;
        }
    }
}

impl std::fmt::Debug for RocksDbKeyedStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbKeyedStateBackend")
            .field("dir", &self.dir)
            .field("range", &self.options.key_group_range)
            .finish_non_exhaustive()
    }
}

impl Drop for RocksDbKeyedStateBackend {
    fn drop(&mut self) {
        // Close the DB, then remove the working directory (clean shutdown).
        // A checkpoint still being made reads both: it finishes first, and
        // its snapshot, if anyone still writes it, can upload it.
        if let Err(e) = self.wait_for_checkpoint_thread("closing the backend") {
            tracing::warn!(dir = %self.dir.display(), error = %e, "a RocksDB checkpoint failed while the backend closed");
        }
        if let (Some(compaction), Some(db)) = (self.range_compaction.take(), self.db.as_deref()) {
            compaction.stop(db);
        }
        self.db.take();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the RocksDB working directory");
            }
        }
    }
}

impl RocksDbKeyedStateBackend {
    /// Opens (creating) the DB in `dir/db` with the column families found
    /// there, and registers the states recorded in its meta column family.
    pub(crate) fn open(dir: PathBuf, options: KeyedBackendOptions, resources: Arc<Resources>) -> Result<Self> {
        if options.max_parallelism > u32::from(u16::MAX) + 1 {
            return Err(Error::config(
                "the rocksdb backend supports max parallelism up to 65536",
            ));
        }
        let db_path = dir.join("db");
        let mut cf_names = DB::list_cf(&Options::default(), &db_path).unwrap_or_default();
        for required in ["default", META_CF] {
            if !cf_names.iter().any(|n| n == required) {
                cf_names.push(required.to_owned());
            }
        }
        let descriptors = cf_names
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(&resources)))
            .collect::<Vec<_>>();
        let db_options = db_options_for_open(&resources, count_wal_files(&db_path))?;
        let db = DB::open_cf_descriptors(&db_options, &db_path, descriptors)
            .map_err(|e| rocks_error("open", e).with_context("file", db_path.display().to_string()))?;
        // The WAL is on, but never synced and written from a memory buffer
        // (`manual_wal_flush`): it is not for crash recovery of this working
        // directory (restores come from checkpoints) but the part of a
        // checkpoint that holds the memtables, so that taking a checkpoint
        // does not flush them on the task thread (see `snapshot`).
        let write_options = WriteOptions::default();
        let instance = format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(dir.display().to_string().as_bytes())
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
        );
        let resources_write_back = resources.write_back_entries;
        let mut backend = Self {
            db: Some(Arc::new(db)),
            dir,
            options,
            resources,
            states: StateRegistry::default(),
            current_key: Vec::new(),
            current_key_group: 0,
            cell_key: Vec::new(),
            map_prefix: Vec::new(),
            scratch: Vec::new(),
            prefetch_keys: Vec::new(),
            prefetch_ends: Vec::new(),
            write_options,
            write_back: WriteBack::new(resources_write_back),
            uploaded: Arc::new(Mutex::new(HashMap::new())),
            instance,
            snapshot_seq: 0,
            checkpoint_thread: None,
            clipped: Vec::new(),
            range_compaction: None,
            changelog: None,
            chain: ChainSlot::default(),
        };
        let metas: Vec<StateMeta> = {
            let db = backend.db()?;
            let meta_cf = db
                .cf_handle(META_CF)
                .ok_or_else(|| Error::corrupt("meta column family missing"))?;
            db.iterator_cf(meta_cf, IteratorMode::Start)
                .map(|item| {
                    let (_, v) = item.map_err(|e| rocks_error("read", e))?;
                    serde_json::from_slice(&v).map_err(|e| Error::corrupt("state meta does not decode").with_source(e))
                })
                .collect::<Result<_>>()?
        };
        for meta in metas {
            backend.adopt_recorded_state(meta)?;
        }
        Ok(backend)
    }

    /// Registers a state recorded in the meta column family at open,
    /// without writing its record again: a restore that wrote it would
    /// leave data in a memtable, and so in the WAL the next checkpoint
    /// copies, before the job has written anything.
    fn adopt_recorded_state(&mut self, meta: StateMeta) -> Result<()> {
        meta.validate()?;
        // The layout the instance has: a timer state in timestamp order
        // has a column family of its own name.
        let by_time = timer_cf(&meta.name);
        let cf = if self.db()?.cf_handle(&by_time).is_some() {
            by_time
        } else {
            state_cf(&meta.name)
        };
        if self.db()?.cf_handle(&cf).is_none() {
            return Err(Error::corrupt(format!(
                "state {} is recorded but its column family {cf} is missing",
                meta.name
            ))
            .with_context("dir", self.dir.display().to_string()));
        }
        self.states.register(&meta, |_| Ok(cf))?;
        Ok(())
    }

    pub(crate) fn db(&self) -> Result<&DB> {
        self.db.as_deref().ok_or_else(backend_closed)
    }

    fn state(&self, id: StateId) -> Result<&RocksState> {
        self.states.get(id)
    }

    fn cell_cf(&self, id: StateId) -> Result<&rocksdb::ColumnFamily> {
        let state = self.state(id)?;
        if state.meta.stores_map() {
            return Err(wrong_state_kind(&state.meta, "a cell state"));
        }
        self.cf(&state.storage)
    }

    fn map_cf(&self, id: StateId) -> Result<&rocksdb::ColumnFamily> {
        let state = self.state(id)?;
        if !state.meta.stores_map() {
            return Err(wrong_state_kind(&state.meta, "a map state"));
        }
        self.cf(&state.storage)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db()?
            .cf_handle(name)
            .ok_or_else(|| Error::corrupt(format!("column family {name} is missing")))
    }

    /// Writes the write-back cache's dirty cells to RocksDB in one batch
    /// (they stay cached, clean).
    fn write_dirty_cells(&mut self) -> Result<()> {
        if !self.write_back.has_dirty() {
            return Ok(());
        }
        self.wait_for_checkpoint_thread("writing the write-back cache's dirty cells")?;
        let db = self.db.as_deref().ok_or_else(backend_closed)?;
        let states = &self.states;
        let mut batch = WriteBatch::default();
        let log = self.changelog.as_mut().map(|c| &mut c.log);
        self.write_back.write_dirty_into(&mut batch, log, |id| {
            let name = &states.get(id)?.storage;
            db.cf_handle(name)
                .ok_or_else(|| Error::corrupt(format!("column family {name} is missing")))
        })?;
        if let Err(e) = db.write_opt(batch, &self.write_options) {
            // The cache took the entries for written: it no longer matches,
            // nor does the changelog.
            self.write_back.clear();
            self.changelog = None;
            return Err(rocks_error("write", e));
        }
        if self.changelog.as_ref().is_some_and(Changelog::overflowed) {
            self.changelog = None;
        }
        Ok(())
    }

    /// RocksDB's estimate of the keys in every state's column family
    /// (`rocksdb.estimate-num-keys`, Flink's native metric of that name:
    /// overwrites and deletions count until compactions drop them), plus
    /// the write-back cache's cells not written to RocksDB yet (a key that
    /// is in both counts twice): an estimate, as Flink's.
    pub(crate) fn estimated_keys(&self) -> Option<u64> {
        let db = self.db.as_deref()?;
        let mut total = self.write_back.dirty_entries() as u64;
        for state in self.states.iter() {
            let cf = db.cf_handle(&state.storage)?;
            total += db.property_int_value_cf(cf, "rocksdb.estimate-num-keys").ok()??;
        }
        Some(total)
    }

    /// Names of the column families that may hold data: default, meta and
    /// every state's.
    fn family_names(&self) -> Vec<String> {
        ["default", META_CF]
            .into_iter()
            .map(str::to_owned)
            .chain(self.states.iter().map(|s| s.storage.clone()))
            .collect()
    }

    /// The column families of [`Self::family_names`] that exist.
    fn families(&self) -> Result<Vec<&rocksdb::ColumnFamily>> {
        let db = self.db()?;
        Ok(self
            .family_names()
            .iter()
            .filter_map(|name| db.cf_handle(name))
            .collect())
    }

    /// Starts flushing, in the background, what a restore replayed from
    /// the checkpoint's WAL copy into memtables (and what it wrote since),
    /// so that the first checkpoint after it holds SSTs instead of the
    /// replayed WAL files again. Not waited for: the job starts meanwhile.
    ///
    /// # Errors
    /// RocksDB's, naming the working directory.
    pub(crate) fn start_flushing_restored_memtables(&self) -> Result<()> {
        let families = self.families()?;
        local_checkpoint::start_background_flush(self.db()?, &families, &self.dir)
    }

    /// Starts compacting the ranges [`Self::clip_to_own_range`] deleted,
    /// on a thread of its own (`range_compaction`), unless
    /// `RocksDbConfig::compact_clipped_ranges` is off.
    ///
    /// # Errors
    /// Storage when the thread cannot be started.
    pub(crate) fn start_compacting_clipped_ranges(&mut self) -> Result<()> {
        let ranges = std::mem::take(&mut self.clipped);
        if ranges.is_empty() || !self.resources.compact_clipped_ranges {
            return Ok(());
        }
        let db = Arc::clone(self.db.as_ref().ok_or_else(backend_closed)?);
        self.range_compaction = Some(RangeCompaction::start(db, ranges, self.dir.clone())?);
        Ok(())
    }

    /// Waits until the compaction of the ranges a rescaling restore
    /// clipped away has finished (at once when none runs): tests use it to
    /// look at the files it leaves.
    ///
    /// # Errors
    /// When the compaction thread panicked.
    pub fn wait_for_range_compaction(&mut self) -> Result<()> {
        match self.range_compaction.take() {
            Some(compaction) => compaction.wait(),
            None => Ok(()),
        }
    }

    /// Waits, at most `timeout`, until memtables switched earlier (by a
    /// checkpoint, or by RocksDB when one filled) are flushed: what a
    /// checkpoint interval normally allows. The next checkpoint then holds
    /// them as SSTs instead of in its WAL copy; tests that take checkpoints
    /// back to back use it to stand for the interval between them.
    ///
    /// # Errors
    /// Storage, naming the working directory, when the flush has not
    /// finished within `timeout` or RocksDB reports a background error.
    pub fn wait_for_background_flushes(&mut self, timeout: std::time::Duration) -> Result<()> {
        self.wait_for_checkpoint_thread("waiting for background flushes")?;
        let families = self.families()?;
        let started = std::time::Instant::now();
        while local_checkpoint::previous_flush_running(self.db()?, &families, &self.dir)? {
            if started.elapsed() >= timeout {
                return Err(Error::new(
                    ErrorKind::Storage,
                    format!("RocksDB's background flush did not finish within {timeout:?}"),
                )
                .with_context("dir", self.dir.display().to_string()));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }

    /// The keys of `state`, of one key group or all, sorted: RocksDB's keys
    /// merged with the write-back cache's (which supersede them).
    fn keys_of(&self, state: StateId, key_group: Option<u32>) -> Result<Vec<Vec<u8>>> {
        let s = self.state(state)?;
        let cf = self.cf(&s.storage)?;
        let mut read_options = ReadOptions::default();
        if let Some(key_group) = key_group {
            read_options.set_iterate_upper_bound(keys::key_group_start(key_group + 1));
        }
        let group_start = key_group.map(keys::key_group_start);
        let mode = match &group_start {
            Some(start) => IteratorMode::From(start, rocksdb::Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out: Vec<Vec<u8>> = Vec::new();
        for item in self.db()?.iterator_cf_opt(cf, read_options, mode) {
            let (k, _) = item.map_err(|e| rocks_error("iterate", e))?;
            let key = if is_timer_cf(&s.storage) {
                keys::split_timer_key(&k)?.0
            } else if s.meta.stores_map() {
                keys::split_map_key(&k)?.0
            } else {
                &k[2..]
            };
            if out.last().is_none_or(|last| last.as_slice() != key) {
                out.push(key.to_vec());
            }
        }
        // Buffered writes supersede RocksDB: add new keys, drop removed ones.
        let mut removed = Vec::new();
        let cached = self
            .write_back
            .keys(state)
            .filter(|(cell_key, _)| group_start.as_ref().is_none_or(|start| cell_key.starts_with(start)));
        for (cell_key, present) in cached {
            if present {
                out.push(cell_key[2..].to_vec());
            } else {
                removed.push(&cell_key[2..]);
            }
        }
        out.sort_unstable();
        out.dedup();
        if !removed.is_empty() {
            removed.sort_unstable();
            out.retain(|k| removed.binary_search(&k.as_slice()).is_err());
        }
        Ok(out)
    }

    /// Writes the write-back cache's dirty cells and empties it: for a full
    /// cache, and before anything writes RocksDB around the cache.
    fn write_and_empty_cache(&mut self) -> Result<()> {
        self.write_dirty_cells()?;
        self.write_back.clear();
        Ok(())
    }

    /// Caches a cell write (`None`: removal); a full cache is written and
    /// emptied, dirty entries at the dirty limit are written.
    fn buffer_cell(&mut self, state: StateId, value: Option<&[u8]>) -> Result<()> {
        self.write_back.put(state, &self.cell_key, value);
        self.enforce_write_back_limits()
    }

    /// Writes the cache when a put made it full or reached the dirty limit.
    /// While a checkpoint is being made, RocksDB must not change: the cache
    /// holds the writes back, up to its hold-back limits, and only then
    /// waits for the checkpoint.
    fn enforce_write_back_limits(&mut self) -> Result<()> {
        let full = self.write_back.is_full();
        if !full && !self.write_back.must_write() {
            return Ok(());
        }
        let checkpoint_running = self
            .checkpoint_thread
            .as_ref()
            .is_some_and(CheckpointThread::is_running);
        if checkpoint_running && !self.write_back.beyond_hold_back_limits() {
            return Ok(());
        }
        if full {
            self.write_and_empty_cache()
        } else {
            self.write_dirty_cells()
        }
    }

    /// Waits until the thread making the last native snapshot's RocksDB
    /// checkpoint has finished: RocksDB must not be written before, or the
    /// checkpoint would hold writes made after its snapshot. Every write to
    /// RocksDB calls this first. A wait that was not over at once is logged
    /// (`wait_us`, with the `cause`: what was about to write): it pauses the
    /// task thread because of a snapshot, as its synchronous phase does, and
    /// the benchmark counts it as such.
    ///
    /// # Errors
    /// When the thread panicked.
    fn wait_for_checkpoint_thread(&mut self, cause: &'static str) -> Result<()> {
        let Some(thread) = self.checkpoint_thread.take() else {
            return Ok(());
        };
        let running = thread.is_running();
        let waited = thread.wait()?;
        if running {
            tracing::info!(
                wait_us = waited.as_micros() as u64,
                cause,
                dir = %self.dir.display(),
                "a write to RocksDB waited for the checkpoint being made"
            );
        }
        Ok(())
    }

    /// The write-back cache's dirty cells as a pending-cells file, or
    /// `None` when none is dirty; `mark_logged` for a changelog's base.
    fn pending_cells(&mut self, mark_logged: bool) -> Option<Vec<u8>> {
        if !self.write_back.has_dirty() {
            return None;
        }
        let names: Vec<&str> = self.states.iter().map(|s| s.meta.name.as_str()).collect();
        let mut writer = PendingCellsWriter::new(&names, self.write_back.dirty_entries());
        self.write_back.add_dirty_to(&mut writer, mark_logged);
        Some(writer.finish())
    }

    /// Lays a native snapshot's cell writes (`bytes`, read from `file`: its
    /// pending cells, or a changelog segment of the earlier version) over
    /// this backend, opened on that snapshot's RocksDB files, in order;
    /// those of key groups outside this backend's range are left out (a
    /// rescaling restore clips the rest, [`Self::clip_to_own_range`]).
    /// Cell puts and removals go through the write-back cache as dirty
    /// entries; the rest, and everything when the cache is off, straight
    /// into RocksDB, each before any later write the cache makes.
    ///
    /// # Errors
    /// Corrupt when the file does not decode, names a state this backend
    /// lacks, or writes a state in a way its kind never is; RocksDB write
    /// errors.
    pub(crate) fn apply_cell_writes(&mut self, bytes: &[u8], file: &str) -> Result<()> {
        self.wait_for_checkpoint_thread("laying cell writes over a restore")?;
        // Restore writes are in the snapshot already: no changelog may
        // build on this backend until its first base.
        self.changelog = None;
        let corrupt = |message: String| Error::corrupt(message).with_context("file", file.to_owned());
        let cells = pending_cells::decode(bytes, file)?;
        let mut batch = WriteBatch::default();
        for cell in cells {
            let key_group = u32::from(u16::from_be_bytes([cell.key[0], cell.key[1]]));
            if !self.options.key_group_range.contains(key_group) {
                continue;
            }
            let id = self
                .states
                .id_of(cell.state)
                .ok_or_else(|| corrupt(format!("a pending cell of state {} the checkpoint lacks", cell.state)))?;
            let is_map = self.states[id].meta.stores_map();
            match (cell.op, is_map) {
                (WriteOp::Append(_), true) => {
                    return Err(corrupt(format!("an append to map state {}", cell.state)));
                }
                (WriteOp::RemoveRange(_), false) => {
                    return Err(corrupt(format!("a range removal in cell state {}", cell.state)));
                }
                _ => {}
            }
            let cached = self.write_back.enabled() && !is_map;
            match cell.op {
                WriteOp::Put(_) | WriteOp::Remove if cached => {
                    // Earlier writes first: the cache may write this one now.
                    self.write_batch(&mut batch)?;
                    let value = match cell.op {
                        WriteOp::Put(value) => Some(value),
                        _ => None,
                    };
                    self.write_back.put(id, cell.key, value);
                    self.enforce_write_back_limits()?;
                }
                WriteOp::Append(bytes) if cached && self.write_back.append(id, cell.key, bytes) => {}
                op => {
                    let cf = self.cf(&self.states[id].storage)?;
                    match op {
                        WriteOp::Put(value) => batch.put_cf(cf, cell.key, value),
                        WriteOp::Remove => batch.delete_cf(cf, cell.key),
                        WriteOp::Append(bytes) => batch.merge_cf(cf, cell.key, bytes),
                        WriteOp::RemoveRange(end) => batch.delete_range_cf(cf, cell.key, end),
                    }
                }
            }
        }
        self.write_batch(&mut batch)
    }

    /// Writes `batch` to RocksDB, if it holds anything, and empties it.
    fn write_batch(&self, batch: &mut WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.db()?
            .write_opt(std::mem::take(batch), &self.write_options)
            .map_err(|e| rocks_error("write", e))
    }

    fn require_key(&self) -> Result<()> {
        if self.current_key.is_empty() {
            return Err(Error::invalid_argument("no current key: call set_current_key first"));
        }
        Ok(())
    }

    /// The synchronous phase of a changelog segment, or `None` when the
    /// checkpoint must be a base: the writes gathered since the last piece
    /// and the cache's unlogged entries become the next piece.
    fn changelog_segment(&mut self) -> Option<Box<dyn AsyncSnapshot>> {
        let changelog = self.changelog.as_mut()?;
        let chain = changelog.chain_to_extend(&self.chain)?;
        let mut last_writes = WriteLog::default();
        self.write_back.add_unlogged_to(&mut last_writes);
        let (pieces, piece) = changelog.cut_piece(&chain, last_writes);
        let dir = self.snapshot_dir("changelog");
        Some(Box::new(SegmentSnapshot {
            chain,
            pieces,
            piece,
            slot: Arc::clone(&self.chain),
            instance: self.instance.clone(),
            range: self.options.key_group_range,
            states: self.registered_states(),
            dir,
            resources: Arc::clone(&self.resources),
        }))
    }

    /// Where a snapshot's hard links go: next to the working directory, not
    /// in it, so the asynchronous phase survives this backend being dropped
    /// (a job that ends or is cancelled while an upload runs). The name keeps
    /// the `<pid>_` prefix, so a crash leaves nothing the next start keeps.
    fn snapshot_dir(&mut self, kind: &str) -> PathBuf {
        self.snapshot_seq += 1;
        let instance = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.dir
            .with_file_name(format!("{instance}.{kind}-{}", self.snapshot_seq))
    }
}
