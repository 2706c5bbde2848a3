//! The RocksDB keyed backend: one RocksDB instance per operator instance,
//! one column family per state.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::{
    ColumnFamilyDescriptor, IngestExternalFileOptions, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use streamstate_api::backend::{key_outside_range, require_key_group_in_range, unknown_state, wrong_state_kind};
use streamstate_api::key_group::assign_to_key_group;
use streamstate_api::ttl::Clock;
use streamstate_api::{
    AsyncSnapshot, Capabilities, Error, ErrorKind, FileRef, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend,
    Result, SnapshotFormat, SnapshotKind, SnapshotTarget, StateId, StateMeta,
};

use crate::changelog::{ChainSlot, Changelog, SegmentSnapshot};
use crate::keys;
use crate::local_checkpoint::{self, CheckpointThread, Memtables};
use crate::pending_cells::{self, PendingCellsWriter, WriteLog, WriteOp};
use crate::range_compaction::{ClippedRange, RangeCompaction};
use crate::snapshot::{CanonicalFromRocksDb, DirGuard, NativeSnapshot};
use crate::write_back::{Buffered, WriteBack};
use crate::Resources;

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

/// Column family holding each state's [`StateMeta`] as JSON, so a native
/// restore knows the states before the job registers them.
pub(crate) const META_CF: &str = "_streamstate_meta";

pub(crate) fn state_cf(name: &str) -> String {
    format!("state:{name}")
}

pub(crate) fn rocks_error(what: &str, err: rocksdb::Error) -> Error {
    Error::new(
        ErrorKind::Storage,
        format!("RocksDB {what} failed: {}", err.into_string()),
    )
}

/// The error of a call on a backend whose database was closed.
fn backend_closed() -> Error {
    Error::invalid_argument("the RocksDB backend is closed")
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> Error {
    Error::new(ErrorKind::Storage, format!("{what} failed"))
        .with_context("file", path.display().to_string())
        .with_source(err)
}

/// Column family options: the list-append merge operator and the shared
/// block cache.
pub(crate) fn cf_options(resources: &Resources) -> Options {
    let mut opts = Options::default();
    opts.set_merge_operator_associative("streamstate-append", append_merge);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(&resources.cache);
    // Whole-file bloom filters (10 bits per key: ~1% false positives), held
    // by the open table readers rather than the block cache: a get of a new
    // key (every word seen for the first time) then skips every SST instead
    // of reading an index and a data block from each. Charged to the block
    // cache instead, the filters of large SSTs (megabytes each) were evicted
    // by data blocks and read back for nearly every get: 5 TB read in 9
    // minutes at 7.8M keys. Held outside it they cost ~1.25 bytes per key
    // (10 MB at 7.8M keys), bounded by `max_open_files`.
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(false);
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Compaction outputs of 16 MiB, not 64: a table's bloom filter is
    // built from the hashes of all its keys, held until the file is done
    // (8 bytes a key: ~24 MiB for a 64 MiB file of small keys, per running
    // compaction), which set the process's peak RSS at 10M keys.
    opts.set_target_file_size_base(TARGET_FILE_BYTES);
    opts.set_write_buffer_size(resources.write_buffer_size);
    // A bloom filter over the memtable's keys (2% of its size): most gets
    // that miss the write-back cache ask for keys the memtable lacks, and
    // its skiplist search (cache misses at every level) was a fifth of the
    // keyed thread's samples.
    opts.set_memtable_whole_key_filtering(true);
    opts.set_memtable_prefix_bloom_ratio(0.02);
    opts
}

pub(crate) fn db_options(resources: &Resources) -> Options {
    let mut opts = cf_options(resources);
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_write_buffer_manager(&resources.write_buffers);
    opts.set_max_background_jobs(2);
    opts.set_max_open_files(256);
    opts.set_manual_wal_flush(true);
    // The WAL since the last memtable switch is what a checkpoint copies
    // (and syncs) during its pause, and what a restore downloads and
    // replays: compressed, all three shrink.
    opts.set_wal_compression_type(rocksdb::DBCompressionType::Zstd);
    opts.set_wal_bytes_per_sync(WAL_BYTES_PER_SYNC);
    // Checkpoints flush every memtable in the background, so the WAL stays
    // small; this bounds it when checkpointing is off, too.
    opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    opts
}

/// [`db_options`] for opening a working directory, where a restored
/// checkpoint's WAL copy replays: what it replays stays in memtables (a
/// background flush started after the restore writes it) instead of being
/// flushed to L0 while the job waits. The crate has no setter for
/// `avoid_flush_during_recovery`; RocksDB's option-string parser sets it.
///
/// Except when the copy holds more than [`MAX_WAL_FILES_KEPT_AT_OPEN`]
/// files: replayed WAL files stay live, and so in every checkpoint, until
/// their memtables are flushed. A job that fails after each restore
/// before that flush ends would otherwise restore a longer chain of them
/// every time (each restore adds the WAL files it writes to the copy).
/// Flushing during recovery cuts the chain to one or two files (the
/// tests check at most two).
fn db_options_for_open(resources: &Resources, wal_files: usize) -> Result<Options> {
    let mut options = db_options(resources);
    if wal_files > MAX_WAL_FILES_KEPT_AT_OPEN {
        return Ok(options);
    }
    options
        .get_options_from_string("avoid_flush_during_recovery=true")
        .map_err(|e| rocks_error("set avoid_flush_during_recovery", e))
}

/// The most WAL files a restore replays into memtables without flushing
/// them first ([`db_options_for_open`]). A checkpoint made when no flush
/// was running holds one or two: the finished WAL of the memtables it
/// switched and the new, nearly empty one. Each restore whose job fails
/// before the flush after it ends adds two (measured: the file it opens
/// and the one its checkpoint switches to).
pub(crate) const MAX_WAL_FILES_KEPT_AT_OPEN: usize = 8;

/// The WAL files in the database directory `db_path` (none if it does not
/// exist yet).
pub(crate) fn count_wal_files(db_path: &Path) -> usize {
    std::fs::read_dir(db_path)
        .map(|entries| {
            entries
                .filter_map(std::result::Result::ok)
                .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
                .count()
        })
        .unwrap_or(0)
}

/// RocksDB's `target_file_size_base`: the size of compaction outputs.
const TARGET_FILE_BYTES: u64 = 16 << 20;

/// Upper bound of the WAL's size before RocksDB flushes the memtables that
/// hold it back.
const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;

/// How much WAL RocksDB writes before it asks the kernel to start writing
/// it out (`sync_file_range`, no wait).
const WAL_BYTES_PER_SYNC: u64 = 256 << 10;

/// List appends concatenate frames; no read-modify-write.
fn append_merge(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands {
        out.extend_from_slice(op);
    }
    Some(out)
}

#[derive(Debug)]
struct RocksState {
    meta: StateMeta,
    cf: String,
}

/// Keyed state in a local RocksDB instance.
pub struct RocksDbKeyedStateBackend {
    /// Shared with the [`CheckpointThread`] while it runs; only this
    /// backend writes it.
    pub(crate) db: Option<Arc<DB>>,
    pub(crate) dir: PathBuf,
    options: KeyedBackendOptions,
    resources: Arc<Resources>,
    states: Vec<RocksState>,
    ids: HashMap<String, StateId>,
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
    /// checkpoints are on and one was made ([`crate::changelog`]).
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
            states: Vec::new(),
            ids: HashMap::new(),
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
        let cf = state_cf(&meta.name);
        if self.db()?.cf_handle(&cf).is_none() {
            return Err(Error::corrupt(format!(
                "state {} is recorded but its column family {cf} is missing",
                meta.name
            ))
            .with_context("dir", self.dir.display().to_string()));
        }
        self.ids.insert(meta.name.clone(), self.states.len());
        self.states.push(RocksState { meta, cf });
        Ok(())
    }

    pub(crate) fn db(&self) -> Result<&DB> {
        self.db.as_deref().ok_or_else(backend_closed)
    }

    fn state(&self, id: StateId) -> Result<&RocksState> {
        self.states.get(id).ok_or_else(|| unknown_state(id))
    }

    fn cell_cf(&self, id: StateId) -> Result<&rocksdb::ColumnFamily> {
        let state = self.state(id)?;
        if state.meta.kind.is_map() {
            return Err(wrong_state_kind(&state.meta, "a cell state"));
        }
        self.cf(&state.cf)
    }

    fn map_cf(&self, id: StateId) -> Result<&rocksdb::ColumnFamily> {
        let state = self.state(id)?;
        if !state.meta.kind.is_map() {
            return Err(wrong_state_kind(&state.meta, "a map state"));
        }
        self.cf(&state.cf)
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
            let name = &states.get(id).ok_or_else(|| unknown_state(id))?.cf;
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

    /// Names of the column families that may hold data: default, meta and
    /// every state's.
    fn family_names(&self) -> Vec<String> {
        ["default", META_CF]
            .into_iter()
            .map(str::to_owned)
            .chain(self.states.iter().map(|s| s.cf.clone()))
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
        let cf = self.cf(&s.cf)?;
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
            let key = if s.meta.kind.is_map() {
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
            let id = *self
                .ids
                .get(cell.state)
                .ok_or_else(|| corrupt(format!("a pending cell of state {} the checkpoint lacks", cell.state)))?;
            let is_map = self.states[id].meta.kind.is_map();
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
                    let cf = self.cf(&self.states[id].cf)?;
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

    /// Ingests a changelog's segment SSTs ([`crate::changelog`]) over this
    /// backend: `(state, path)` of each, every file of a segment before any
    /// of the next. Each file takes a sequence number above every write
    /// before it, so the files apply in the order given. The cache is
    /// written out first: what it holds is older than every segment. The
    /// files are moved into the database.
    ///
    /// # Errors
    /// RocksDB errors (a corrupt or foreign file among them), naming the
    /// file.
    pub(crate) fn ingest_segment_tables(&mut self, tables: &[(StateId, PathBuf)]) -> Result<()> {
        if tables.is_empty() {
            return Ok(());
        }
        self.wait_for_checkpoint_thread("ingesting changelog segment tables")?;
        // The segments are in the snapshot already: no changelog may build
        // on this backend until its first base.
        self.changelog = None;
        self.write_and_empty_cache()?;
        let mut options = IngestExternalFileOptions::default();
        options.set_move_files(true);
        // One ingestion per column family, its files oldest first: RocksDB
        // gives overlapping files of one ingestion increasing sequence
        // numbers in the order given.
        let mut by_state: Vec<(StateId, Vec<&Path>)> = Vec::new();
        for (id, path) in tables {
            match by_state.iter_mut().find(|(state, _)| state == id) {
                Some((_, paths)) => paths.push(path),
                None => by_state.push((*id, vec![path])),
            }
        }
        for (id, paths) in by_state {
            let cf = self.cf(&self.state(id)?.cf)?;
            self.db()?
                .ingest_external_file_cf_opts(cf, &options, paths.clone())
                .map_err(|e| {
                    let files = paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    rocks_error("ingest changelog segments", e).with_context("file", files)
                })?;
        }
        Ok(())
    }

    /// Removes every state's entries of key groups outside this backend's
    /// range: an old instance restored into a new, smaller range
    /// (rescaling, as Flink's RocksDB backend clips the instance it
    /// restores first) keeps its files and sheds the rest, instead of
    /// having the owned keys copied out one by one. Per column family, the
    /// SSTs lying wholly outside the range are dropped (no checkpoint
    /// uploads them again), then two range deletions cover what is left;
    /// they go into the WAL and memtable like any write, and compactions
    /// drop what they cover.
    ///
    /// # Errors
    /// RocksDB's.
    pub(crate) fn clip_to_own_range(&mut self) -> Result<()> {
        self.wait_for_checkpoint_thread("clipping to the key-group range")?;
        // The deletions are in no changelog: none may build on the state
        // before its next base. Cached cells need not be written first:
        // restores leave out the cells outside the range, so no deletion
        // covers a cached cell.
        self.changelog = None;
        // Key groups before the first owned one and after the last (all of
        // them for an empty range).
        let range = self.options.key_group_range;
        let after = range.start() + range.len();
        let outside = [(0, range.start()), (after, self.options.max_parallelism)];
        let outside = outside.iter().filter(|(from, to)| from < to);
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        let mut clipped = Vec::new();
        for state in &self.states {
            let cf = self.cf(&state.cf)?;
            for &(from, to) in outside.clone() {
                let (first_key, end_key) = (keys::key_group_start(from), keys::key_group_start(to));
                // Both bounds are inclusive. Every key of a dropped file lies
                // in the range deletion below, so no older version of a key
                // that a dropped file deleted or overwrote comes back.
                db.delete_file_in_range_cf(cf, &first_key, &keys::inclusive_bound_below(&end_key))
                    .map_err(|e| rocks_error("drop the files outside the key-group range", e))?;
                batch.delete_range_cf(cf, &first_key, &end_key);
                clipped.push(ClippedRange {
                    column_family: state.cf.clone(),
                    start: first_key,
                    end: end_key,
                });
            }
        }
        db.write_opt(batch, &self.write_options)
            .map_err(|e| rocks_error("clip to the key-group range", e))?;
        self.clipped.extend(clipped);
        Ok(())
    }

    /// Copies the key groups of `range` out of `source`, an old instance
    /// restored as it was: the rescaling path for every old instance but
    /// the one clipped ([`Self::clip_to_own_range`]).
    pub(crate) fn copy_key_groups_from(&mut self, source: &mut Self, range: KeyGroupRange) -> Result<()> {
        // The copy writes RocksDB directly: nothing cached may outlive it,
        // and no changelog may build on the state before it.
        self.wait_for_checkpoint_thread("copying key groups")?;
        self.changelog = None;
        self.write_and_empty_cache()?;
        source.write_and_empty_cache()?;
        let (Some(end), false) = (range.end(), range.is_empty()) else {
            return Ok(());
        };
        let source_db = source.db()?;
        for state in &source.states {
            let id = self.register_state(&state.meta)?;
            let from_cf = source.cf(&state.cf)?;
            let mut read = ReadOptions::default();
            read.set_iterate_upper_bound(keys::key_group_start(end + 1));
            let lower = keys::key_group_start(range.start());
            let mut batch = WriteBatch::default();
            let to_cf = self.cf(&self.states[id].cf)?;
            for item in
                source_db.iterator_cf_opt(from_cf, read, IteratorMode::From(&lower, rocksdb::Direction::Forward))
            {
                let (k, v) = item.map_err(|e| rocks_error("read", e))?;
                batch.put_cf(to_cf, k, v);
                if batch.len() >= 10_000 {
                    self.db()?
                        .write_opt(std::mem::take(&mut batch), &self.write_options)
                        .map_err(|e| rocks_error("write", e))?;
                }
            }
            self.db()?
                .write_opt(batch, &self.write_options)
                .map_err(|e| rocks_error("write", e))?;
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

impl KeyedStateBackend for RocksDbKeyedStateBackend {
    fn backend_name(&self) -> &'static str {
        "rocksdb"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            write_back_cache: self.write_back.enabled(),
            ..ROCKSDB_CAPABILITIES
        }
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
        if let Some(&id) = self.ids.get(&meta.name) {
            meta.check_compatible_with(&self.states[id].meta)?;
            self.states[id].meta.ttl = meta.ttl;
            return Ok(id);
        }
        let cf = state_cf(&meta.name);
        let cf_opts = cf_options(&self.resources);
        // Creating a column family needs the database to itself.
        self.wait_for_checkpoint_thread("registering a state")?;
        if let Some(compaction) = self.range_compaction.take() {
            if compaction.is_running() {
                tracing::info!(dir = %self.dir.display(), "registering a state waits for the compaction of clipped ranges");
            }
            compaction.wait()?;
        }
        let db = self.db.as_mut().ok_or_else(backend_closed)?;
        let db = Arc::get_mut(db).ok_or_else(|| {
            Error::new(
                ErrorKind::Storage,
                "the RocksDB database is still in use by a checkpoint",
            )
            .with_context("dir", self.dir.display().to_string())
        })?;
        if db.cf_handle(&cf).is_none() {
            db.create_cf(&cf, &cf_opts)
                .map_err(|e| rocks_error("create column family", e))?;
        }
        let json = serde_json::to_vec(meta)
            .map_err(|e| Error::new(ErrorKind::Serialization, "cannot encode state meta").with_source(e))?;
        let meta_cf = db
            .cf_handle(META_CF)
            .ok_or_else(|| Error::corrupt("meta column family missing"))?;
        db.put_cf(meta_cf, meta.name.as_bytes(), json)
            .map_err(|e| rocks_error("write", e))?;
        let id = self.states.len();
        self.states.push(RocksState { meta: meta.clone(), cf });
        self.ids.insert(meta.name.clone(), id);
        Ok(id)
    }

    fn registered_states(&self) -> Vec<StateMeta> {
        self.states.iter().map(|s| s.meta.clone()).collect()
    }

    fn set_current_key(&mut self, serialized_key: &[u8]) -> Result<()> {
        if serialized_key.is_empty() {
            return Err(Error::invalid_argument("keys must serialize to at least one byte"));
        }
        let key_group = assign_to_key_group(serialized_key, self.options.max_parallelism);
        if !self.options.key_group_range.contains(key_group) {
            return Err(key_outside_range(key_group, self.options.key_group_range));
        }
        self.current_key.clear();
        self.current_key.extend_from_slice(serialized_key);
        self.current_key_group = key_group;
        self.cell_key.clear();
        keys::put_key_group(&mut self.cell_key, key_group);
        self.cell_key.extend_from_slice(serialized_key);
        keys::map_prefix(&mut self.map_prefix, key_group, serialized_key);
        Ok(())
    }

    fn current_key(&self) -> &[u8] {
        &self.current_key
    }

    fn current_key_group(&self) -> u32 {
        self.current_key_group
    }

    /// Reads the cells of the keys the write-back cache does not hold in
    /// one `MultiGet` and caches them, clean (absent ones as absent), so
    /// the reads and writes that follow find them there. RocksDB's batched
    /// lookup searches each memtable and file once for the group, its
    /// filters and index blocks loaded once, where single gets repeat that
    /// work per key. Only as many keys as the cache has room for: a
    /// prefetch never makes the cache write and empty itself.
    fn prefetch(&mut self, state: StateId, serialized_keys: &[&[u8]]) -> u64 {
        let Self {
            db,
            states,
            options,
            write_back,
            prefetch_keys,
            prefetch_ends,
            ..
        } = self;
        let (Some(db), Some(meta)) = (db.as_deref(), states.get(state)) else {
            return 0;
        };
        if !write_back.enabled() || meta.meta.kind.is_map() {
            return 0;
        }
        let Some(cf) = db.cf_handle(&meta.cf) else {
            return 0;
        };
        prefetch_keys.clear();
        prefetch_ends.clear();
        for key in serialized_keys.iter().take(write_back.room()) {
            let key_group = assign_to_key_group(key, options.max_parallelism);
            if key.is_empty() || !options.key_group_range.contains(key_group) {
                continue;
            }
            let start = prefetch_keys.len();
            keys::put_key_group(prefetch_keys, key_group);
            prefetch_keys.extend_from_slice(key);
            if let Buffered::Known(_) = write_back.get(state, &prefetch_keys[start..]) {
                prefetch_keys.truncate(start);
            } else {
                prefetch_ends.push(prefetch_keys.len());
            }
        }
        if prefetch_ends.len() < 2 {
            // One key gains nothing from a batch: its get reads it.
            return 0;
        }
        let cell_keys = || {
            prefetch_ends.iter().scan(0, |start, &end| {
                Some(&prefetch_keys[std::mem::replace(start, end)..end])
            })
        };
        let values = db.batched_multi_get_cf(cf, cell_keys(), false);
        let mut word = 0;
        for (cell_key, value) in cell_keys().zip(values) {
            // A failed read is left to the get that follows, which
            // reports it.
            if let Ok(value) = value {
                word ^= value.as_ref().map_or(0, |v| v.len() as u64);
                write_back.insert_clean(state, cell_key, value.as_deref());
            }
        }
        word
    }

    fn get(&self, state: StateId) -> Result<Option<Cow<'_, [u8]>>> {
        self.require_key()?;
        let cf = self.cell_cf(state)?;
        if let Buffered::Known(value) = self.write_back.get(state, &self.cell_key) {
            return Ok(value.map(Cow::Borrowed));
        }
        Ok(self
            .db()?
            .get_pinned_cf(cf, &self.cell_key)
            .map_err(|e| rocks_error("get", e))?
            .map(|v| Cow::Owned(v.to_vec())))
    }

    fn put(&mut self, state: StateId, value: &[u8]) -> Result<()> {
        self.require_key()?;
        self.cell_cf(state)?;
        if self.write_back.enabled() {
            return self.buffer_cell(state, Some(value));
        }
        self.wait_for_checkpoint_thread("a put with the write-back cache off")?;
        let cf = self.cell_cf(state)?;
        self.db()?
            .put_cf_opt(cf, &self.cell_key, value, &self.write_options)
            .map_err(|e| rocks_error("put", e))?;
        log_write(&mut self.changelog, state, &self.cell_key, WriteOp::Put(value));
        Ok(())
    }

    fn append(&mut self, state: StateId, bytes: &[u8]) -> Result<()> {
        self.require_key()?;
        self.cell_cf(state)?;
        if self.write_back.append(state, &self.cell_key, bytes) {
            return Ok(());
        }
        self.wait_for_checkpoint_thread("a merge into an uncached cell")?;
        let cf = self.cell_cf(state)?;
        self.db()?
            .merge_cf_opt(cf, &self.cell_key, bytes, &self.write_options)
            .map_err(|e| rocks_error("merge", e))?;
        log_write(&mut self.changelog, state, &self.cell_key, WriteOp::Append(bytes));
        Ok(())
    }

    fn clear(&mut self, state: StateId) -> Result<()> {
        self.require_key()?;
        let is_map = self.state(state)?.meta.kind.is_map();
        if is_map || !self.write_back.enabled() {
            self.wait_for_checkpoint_thread("clearing a state")?;
        }
        if is_map {
            let cf = self.map_cf(state)?;
            let end = keys::prefix_successor(&self.map_prefix).unwrap_or_else(|| vec![0xff; self.map_prefix.len() + 1]);
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, self.map_prefix.as_slice(), end.as_slice());
            self.db()?
                .write_opt(batch, &self.write_options)
                .map_err(|e| rocks_error("delete range", e))?;
            log_write(&mut self.changelog, state, &self.map_prefix, WriteOp::RemoveRange(&end));
            Ok(())
        } else if self.write_back.enabled() {
            self.cell_cf(state)?;
            self.buffer_cell(state, None)
        } else {
            let cf = self.cell_cf(state)?;
            self.db()?
                .delete_cf_opt(cf, &self.cell_key, &self.write_options)
                .map_err(|e| rocks_error("delete", e))?;
            log_write(&mut self.changelog, state, &self.cell_key, WriteOp::Remove);
            Ok(())
        }
    }

    fn map_get(&self, state: StateId, user_key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        self.require_key()?;
        let cf = self.map_cf(state)?;
        let mut key = self.map_prefix.clone();
        key.extend_from_slice(user_key);
        Ok(self
            .db()?
            .get_pinned_cf(cf, &key)
            .map_err(|e| rocks_error("get", e))?
            .map(|v| Cow::Owned(v.to_vec())))
    }

    fn map_put(&mut self, state: StateId, user_key: &[u8], value: &[u8]) -> Result<()> {
        self.require_key()?;
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.map_prefix);
        self.scratch.extend_from_slice(user_key);
        self.wait_for_checkpoint_thread("a map put")?;
        let cf = self.map_cf(state)?;
        self.db()?
            .put_cf_opt(cf, &self.scratch, value, &self.write_options)
            .map_err(|e| rocks_error("put", e))?;
        log_write(&mut self.changelog, state, &self.scratch, WriteOp::Put(value));
        Ok(())
    }

    fn map_remove(&mut self, state: StateId, user_key: &[u8]) -> Result<()> {
        self.require_key()?;
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.map_prefix);
        self.scratch.extend_from_slice(user_key);
        self.wait_for_checkpoint_thread("a map removal")?;
        let cf = self.map_cf(state)?;
        self.db()?
            .delete_cf_opt(cf, &self.scratch, &self.write_options)
            .map_err(|e| rocks_error("delete", e))?;
        log_write(&mut self.changelog, state, &self.scratch, WriteOp::Remove);
        Ok(())
    }

    fn map_entries(&self, state: StateId) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.require_key()?;
        let cf = self.map_cf(state)?;
        let mut read = ReadOptions::default();
        if let Some(end) = keys::prefix_successor(&self.map_prefix) {
            read.set_iterate_upper_bound(end);
        }
        let mut entries = Vec::new();
        let iter = self.db()?.iterator_cf_opt(
            cf,
            read,
            IteratorMode::From(&self.map_prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(|e| rocks_error("iterate", e))?;
            if !k.starts_with(&self.map_prefix) {
                break;
            }
            entries.push((k[self.map_prefix.len()..].to_vec(), v.to_vec()));
        }
        Ok(entries)
    }

    fn keys(&self, state: StateId) -> Result<Vec<Vec<u8>>> {
        self.keys_of(state, None)
    }

    fn keys_in_key_group(&self, state: StateId, key_group: u32) -> Result<Vec<Vec<u8>>> {
        require_key_group_in_range(key_group, self.options.key_group_range)?;
        self.keys_of(state, Some(key_group))
    }

    fn for_each_cell_in_key_group(
        &mut self,
        state: StateId,
        key_group: u32,
        visit: &mut streamstate_api::backend::CellVisitor<'_>,
    ) -> Result<()> {
        require_key_group_in_range(key_group, self.options.key_group_range)?;
        let cf = self.cell_cf(state)?;
        // One scan of the group's key range, merged with the write-back
        // cache's cells of the group (which supersede RocksDB's), instead
        // of a point lookup per key. Keys share the group's 2-byte prefix,
        // so RocksDB's order is the keys' byte order.
        let group_start = keys::key_group_start(key_group);
        let mut cached: Vec<(&[u8], Option<&[u8]>)> = self
            .write_back
            .cells(state)
            .filter(|(cell_key, _)| cell_key.starts_with(&group_start))
            .map(|(cell_key, value)| (&cell_key[group_start.len()..], value))
            .collect();
        cached.sort_unstable_by_key(|(key, _)| *key);
        let mut cached = cached.into_iter().peekable();
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(keys::key_group_start(key_group + 1));
        let mut stored = self.db()?.raw_iterator_cf_opt(cf, read_options);
        stored.seek(&group_start);
        while let (Some(cell_key), Some(value)) = (stored.key(), stored.value()) {
            let key = &cell_key[group_start.len()..];
            // Cached keys before this one are new keys; a cached key equal
            // to it supersedes it (a removal visits nothing).
            let mut superseded = false;
            while let Some((cached_key, cached_value)) = cached.next_if(|(cached_key, _)| *cached_key <= key) {
                if let Some(cached_value) = cached_value {
                    visit(cached_key, cached_value)?;
                }
                superseded = cached_key == key;
            }
            if !superseded {
                visit(key, value)?;
            }
            stored.next();
        }
        stored.status().map_err(|e| rocks_error("iterate", e))?;
        for (cached_key, cached_value) in cached {
            if let Some(cached_value) = cached_value {
                visit(cached_key, cached_value)?;
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn AsyncSnapshot>> {
        // The synchronous phase. Native (checkpoints): the write-back
        // cache's dirty cells copied into a pending-cells file, and a
        // thread started that makes the RocksDB checkpoint
        // (`local_checkpoint`), while this thread goes on with RocksDB
        // unwritten until it has. Canonical (savepoints): the dirty cells
        // written into RocksDB and the checkpoint made here.
        let started = std::time::Instant::now();
        // Rare: the previous checkpoint is still being made.
        self.wait_for_checkpoint_thread("the next snapshot")?;
        let snapshot: Box<dyn AsyncSnapshot> = match target.format {
            SnapshotFormat::Native => {
                // Savepoints are self-contained: never part of a changelog.
                let changelog_on =
                    self.resources.changelog && target.incremental && target.kind == SnapshotKind::Checkpoint;
                if changelog_on {
                    if let Some(segment) = self.changelog_segment() {
                        tracing::debug!(
                            sync_us = started.elapsed().as_micros() as u64,
                            "rocksdb changelog segment"
                        );
                        return Ok(segment);
                    }
                }
                let pending_cells = self.pending_cells(changelog_on);
                let write_back_done = started.elapsed();
                let dir = DirGuard(self.snapshot_dir("native"));
                // A new base: the writes gathered so far are in its files.
                let changelog_base = changelog_on.then(|| {
                    self.changelog = Some(Changelog::new(self.snapshot_seq));
                    (self.snapshot_seq, Arc::clone(&self.chain))
                });
                let db = Arc::clone(self.db.as_ref().ok_or_else(backend_closed)?);
                let memtables = if changelog_on {
                    Memtables::Flushed
                } else {
                    Memtables::InWal
                };
                let (thread, checkpoint) =
                    CheckpointThread::start(db, self.family_names(), self.dir.clone(), dir, memtables)?;
                self.checkpoint_thread = Some(thread);
                tracing::debug!(
                    write_back_us = write_back_done.as_micros() as u64,
                    thread_start_us = (started.elapsed() - write_back_done).as_micros() as u64,
                    "rocksdb synchronous phase"
                );
                Box::new(NativeSnapshot {
                    checkpoint,
                    range: self.options.key_group_range,
                    states: self.registered_states(),
                    incremental: target.incremental,
                    uploaded: Arc::clone(&self.uploaded),
                    instance: self.instance.clone(),
                    pending_cells,
                    changelog_base,
                    resources: Arc::clone(&self.resources),
                })
            }
            SnapshotFormat::Canonical => {
                self.write_dirty_cells()?;
                let dir = DirGuard(self.snapshot_dir("canonical"));
                let families = self.families()?;
                let dir = local_checkpoint::make_checkpoint(self.db()?, &families, &self.dir, dir, Memtables::InWal)?;
                Box::new(CanonicalFromRocksDb {
                    dir,
                    range: self.options.key_group_range,
                    states: self.registered_states(),
                    now_ms: self.options.clock.now_ms(),
                    resources: Arc::clone(&self.resources),
                })
            }
        };
        Ok(snapshot)
    }
}

pub(crate) fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a snapshot directory");
        }
    }
}

pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating a directory", dir, e))
}
