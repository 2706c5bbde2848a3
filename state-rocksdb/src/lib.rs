//! # streamstate-rocksdb: Flink's RocksDBStateBackend
//!
//! Keyed state lives in a local RocksDB instance per operator instance (one
//! column family per state, keys prefixed by their key group, list appends
//! through a merge operator). Memory is bounded per process: all instances
//! share one block cache and one write-buffer manager charged to it
//! ([`RocksDbConfig`]).
//!
//! Snapshots: the synchronous phase copies the write-back cache's dirty
//! cells into a buffer and starts a thread that switches the memtables and
//! takes a RocksDB checkpoint (hard links to the SSTs and the finished WAL,
//! no flush), while the task thread goes on without writing RocksDB until
//! it has; the asynchronous phase uploads the files through the same
//! [`CheckpointStorage`] as every backend. Incremental mode uploads
//! each SST file once to `shared/` and references it afterwards; retention
//! never deletes a shared file a retained checkpoint references. Savepoints
//! use the canonical format, so they restore into any backend. With
//! [`RocksDbConfig::changelog`] on, most incremental checkpoints upload only
//! the writes made since the one before ([`changelog`]'s docs).
//!
//! Restore downloads files in parallel and opens them. At another
//! parallelism, as in Flink, the old instance sharing the most key groups
//! is opened as the new one and clipped to its range (its SSTs wholly
//! outside the range dropped, range deletions over the rest, which a
//! thread then compacts away while the job runs:
//! [`RocksDbConfig::compact_clipped_ranges`]); the owned key groups of any
//! other old instance are copied in. Working
//! directories live under [`RocksDbConfig::local_dir`] (Flink's
//! `state.backend.rocksdb.localdir`), are removed on clean shutdown, and
//! directories left by dead processes are removed, not reused.

#![warn(missing_docs)]

mod backend;
pub mod changelog;
mod fold;
mod keys;
mod local_checkpoint;
mod pending_cells;
mod range_compaction;
mod snapshot;
mod write_back;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use backend::{RocksDbKeyedStateBackend, ROCKSDB_CAPABILITIES};
use streamstate_api::{
    Capabilities, CheckpointStorage, Error, KeyedBackendOptions, KeyedStateBackend, KeyedStateHandle, Result,
    SnapshotFormat, StateBackend,
};

/// Sizing and placement of the RocksDB backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksDbConfig {
    /// Working directory root (default: `<temp dir>/streamstate-rocksdb`).
    pub local_dir: Option<PathBuf>,
    /// Shared block cache, bytes.
    pub block_cache_bytes: usize,
    /// Memtable budget shared by all column families of the process, bytes
    /// (charged to the block cache).
    pub write_buffer_bytes: usize,
    /// One column family's memtable size, bytes (Flink's
    /// `state.backend.rocksdb.writebuffer.size`). 4 MiB, not RocksDB's and
    /// Flink's 64 MiB: a checkpoint's WAL holds what the unflushed
    /// memtables hold, and a restore replays it. With a memtable switched
    /// every few hundred thousand writes, a restore of ~700k keys took
    /// 23 ms instead of 190 ms (16 MiB), at the same throughput and RSS,
    /// for ~30% more bytes uploaded per incremental checkpoint (more,
    /// smaller L0 files compacted more often).
    pub write_buffer_size: usize,
    /// Keys of cell states each instance keeps in its write-back cache (0:
    /// every write goes to RocksDB at once). Changed keys are written to
    /// RocksDB in one batch before each snapshot and whenever half the
    /// capacity, at most 16,384, are changed; a full cache is emptied.
    pub write_back_entries: usize,
    /// Changelog checkpoints (Flink's `state.backend.changelog.enabled`):
    /// an incremental checkpoint uploads the writes made since the one
    /// before instead of the SSTs new since then, and a RocksDB checkpoint
    /// is made after every [`changelog::MAX_SEGMENTS`] of them, or sooner
    /// once the writes add up to its size. Each segment is uploaded as SSTs
    /// a restore ingests, so a restore takes about as long as from a full
    /// checkpoint (docs/BENCHMARKS.md: 53 ms against 101 ms for ~700,000
    /// keys). Off by default, as in Flink: every checkpoint's asynchronous
    /// phase then folds and sorts the writes, and a base waits for the
    /// memtables' flush.
    pub changelog: bool,
    /// After a rescaling restore, compact the key-group ranges it clipped
    /// away, on a thread of its own while the job runs, so that its
    /// checkpoints stop carrying the other instances' keys (see
    /// `range_compaction`). On by default; Flink leaves them to RocksDB's
    /// own compactions, which is what `false` does.
    pub compact_clipped_ranges: bool,
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        Self {
            local_dir: None,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            write_buffer_size: 4 << 20,
            write_back_entries: DEFAULT_WRITE_BACK_ENTRIES,
            changelog: false,
            compact_clipped_ranges: true,
        }
    }
}

/// Default [`RocksDbConfig::write_back_entries`]: holds the hot keys of a
/// skewed stream (the 131,072 most frequent words of a Zipf corpus are 85%
/// of its words) in ~15 MiB; what a snapshot writes is bounded by the dirty
/// limit (16,384), not by this.
pub const DEFAULT_WRITE_BACK_ENTRIES: usize = 131_072;

/// Process-wide RocksDB resources shared by every instance of a backend.
pub struct Resources {
    pub(crate) cache: rocksdb::Cache,
    pub(crate) write_buffers: rocksdb::WriteBufferManager,
    pub(crate) write_buffer_size: usize,
    pub(crate) write_back_entries: usize,
    pub(crate) changelog: bool,
    pub(crate) compact_clipped_ranges: bool,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("write_buffer_size", &self.write_buffer_size)
            .finish_non_exhaustive()
    }
}

/// Flink's RocksDBStateBackend.
#[derive(Debug)]
pub struct RocksDbStateBackend {
    root: PathBuf,
    resources: Arc<Resources>,
}

impl RocksDbStateBackend {
    /// A backend with `config`.
    pub fn new(config: RocksDbConfig) -> Self {
        let cache = rocksdb::Cache::new_lru_cache(config.block_cache_bytes);
        let write_buffers = rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(
            config.write_buffer_bytes,
            false,
            cache.clone(),
        );
        Self {
            root: config
                .local_dir
                .unwrap_or_else(|| std::env::temp_dir().join("streamstate-rocksdb")),
            resources: Arc::new(Resources {
                cache,
                write_buffers,
                write_buffer_size: config.write_buffer_size,
                write_back_entries: config.write_back_entries,
                changelog: config.changelog,
                compact_clipped_ranges: config.compact_clipped_ranges,
            }),
        }
    }

    /// The working directory root.
    pub fn local_dir(&self) -> &Path {
        &self.root
    }

    fn instance_dir(&self, options: &KeyedBackendOptions) -> Result<PathBuf> {
        clean_stale_dirs(&self.root);
        // Process-wide, so instances of different backends never share a
        // directory.
        static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);
        let n = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}_{n}_{}_{}_{}",
            std::process::id(),
            options.job_id,
            options.operator_id.replace(['/', '\\'], "-"),
            options.key_group_range.start()
        );
        let dir = self.root.join(name);
        backend::remove_dir(&dir);
        backend::create_dir(&dir)?;
        Ok(dir)
    }

    /// A concrete keyed backend.
    ///
    /// # Errors
    /// RocksDB or directory errors.
    pub fn create(&self, options: KeyedBackendOptions) -> Result<RocksDbKeyedStateBackend> {
        let dir = self.instance_dir(&options)?;
        self.open_or_remove(dir, options)
    }

    /// Opens the instance in `dir`; if that fails nothing owns `dir` yet, so
    /// it is removed here.
    fn open_or_remove(&self, dir: PathBuf, options: KeyedBackendOptions) -> Result<RocksDbKeyedStateBackend> {
        RocksDbKeyedStateBackend::open(dir.clone(), options, Arc::clone(&self.resources)).inspect_err(|_| {
            backend::remove_dir(&dir);
        })
    }
}

impl Default for RocksDbStateBackend {
    fn default() -> Self {
        Self::new(RocksDbConfig::default())
    }
}

/// Removes working directories of processes that no longer run: after a
/// crash they hold state of unknown age and are never reused.
fn clean_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('_').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::warn!(dir = %entry.path().display(), "removing a RocksDB directory left by a dead process");
            backend::remove_dir(&entry.path());
        }
    }
}

/// The local file name of a stored native file (`<owner>~<name>`).
fn local_name(path: &str) -> Result<&str> {
    let last = path.rsplit('/').next().unwrap_or(path);
    let name = last.rsplit(snapshot::NAME_SEPARATOR).next().unwrap_or(last);
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::corrupt(format!(
            "native snapshot file {path:?} has no usable local name"
        )));
    }
    Ok(name)
}

/// The files of a native handle that are not RocksDB's own, downloaded
/// ([`download`]): what is laid over its database, in this order.
struct Overlays {
    /// Files of cell writes (stored path and bytes), kept in memory: the
    /// pending cells, then changelog segments of an earlier version.
    cell_files: Vec<(String, Vec<u8>)>,
    /// Where the changelog segments' SSTs were downloaded to, removed once
    /// they are ingested.
    tables_dir: PathBuf,
    /// The segments' SSTs in the order they apply: the index of their state
    /// in the handle's states, and the local path.
    segment_tables: Vec<(usize, PathBuf)>,
}

impl Overlays {
    fn is_empty(&self) -> bool {
        self.cell_files.is_empty() && self.segment_tables.is_empty()
    }
}

/// Downloads (checksums verified) the files of `handle` for an instance in
/// `dir`, four at a time: RocksDB's files into `dir/db`, the changelog
/// segments' SSTs into `dir/changelog`, and the files of cell writes into
/// memory.
fn download(storage: &CheckpointStorage, handle: &KeyedStateHandle, dir: &Path) -> Result<Overlays> {
    let db_dir = dir.join("db");
    let tables_dir = dir.join("changelog");
    backend::create_dir(&db_dir)?;
    let mut pending = None;
    let mut legacy_segments: Vec<(&str, &streamstate_api::FileRef)> = Vec::new();
    let mut segment_tables = Vec::new();
    let mut chunks: Vec<Vec<(&streamstate_api::FileRef, PathBuf)>> = vec![Vec::new(); 4];
    for (i, f) in handle.files.iter().enumerate() {
        let name = local_name(&f.path)?;
        let local = if name == pending_cells::PENDING_CELLS_FILE {
            pending = Some(f);
            continue;
        } else if let Some(state) = changelog::segment_table_state(name) {
            let local = tables_dir.join(name);
            segment_tables.push((state, local.clone()));
            local
        } else if name.starts_with(changelog::SEGMENT_FILE_PREFIX) {
            legacy_segments.push((name, f));
            continue;
        } else {
            db_dir.join(name)
        };
        chunks[i % 4].push((f, local));
    }
    if !segment_tables.is_empty() {
        backend::create_dir(&tables_dir)?;
    }
    // Segment names begin with their zero-padded piece numbers.
    legacy_segments.sort_by_key(|(name, _)| *name);
    segment_tables.sort_by(|a, b| a.1.cmp(&b.1));
    let cell_files = pending
        .into_iter()
        .chain(legacy_segments.into_iter().map(|(_, f)| f))
        .map(|file| storage.read_verified(file).map(|bytes| (file.path.clone(), bytes)))
        .collect::<Result<Vec<_>>>()?;
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|files| {
                scope.spawn(move || -> Result<()> {
                    for (file, local) in files {
                        // A part at a time: a WAL copy reaches 64 MiB,
                        // compaction outputs 16 MiB.
                        storage.read_verified_into(file, &local)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .unwrap_or_else(|_| Err(Error::invalid_argument("a download thread panicked")))?;
        }
        Ok::<(), Error>(())
    })?;
    Ok(Overlays {
        cell_files,
        tables_dir,
        segment_tables,
    })
}

/// Lays a native handle's [`Overlays`] over `backend`, opened on its
/// RocksDB files. The states a changelog segment writes may have been
/// registered after its base was made, so every state of the handle is
/// registered first.
fn lay_overlays(backend: &mut RocksDbKeyedStateBackend, handle: &KeyedStateHandle, overlays: Overlays) -> Result<()> {
    if overlays.is_empty() {
        return Ok(());
    }
    let ids = handle
        .states
        .iter()
        .map(|meta| backend.register_state(meta))
        .collect::<Result<Vec<_>>>()?;
    for (file, bytes) in overlays.cell_files {
        backend.apply_cell_writes(&bytes, &file)?;
    }
    let tables = overlays
        .segment_tables
        .into_iter()
        .map(|(index, path)| {
            let id = ids.get(index).copied().ok_or_else(|| {
                Error::corrupt(format!(
                    "a changelog segment of state index {index}; the snapshot has {} states",
                    ids.len()
                ))
                .with_context("file", path.display().to_string())
            })?;
            Ok((id, path))
        })
        .collect::<Result<Vec<_>>>()?;
    let ingested = backend.ingest_segment_tables(&tables);
    backend::remove_dir(&overlays.tables_dir);
    ingested
}

impl RocksDbStateBackend {
    /// Restores the key groups of `options` from `handles`: the typed
    /// [`StateBackend::restore_keyed_backend`].
    ///
    /// # Errors
    /// As that.
    pub fn restore(
        &self,
        options: KeyedBackendOptions,
        handles: &[KeyedStateHandle],
        storage: &CheckpointStorage,
    ) -> Result<RocksDbKeyedStateBackend> {
        let range = options.key_group_range;
        let wanted: Vec<&KeyedStateHandle> = handles
            .iter()
            .filter(|h| !h.key_group_range.intersection(&range).is_empty())
            .collect();
        let native: Vec<&KeyedStateHandle> = wanted
            .iter()
            .copied()
            .filter(|h| h.format == SnapshotFormat::Native)
            .collect();
        let canonical: Vec<KeyedStateHandle> = wanted
            .iter()
            .copied()
            .filter(|h| h.format == SnapshotFormat::Canonical)
            .cloned()
            .collect();
        // The old instance sharing the most key groups with `range` is
        // restored into this instance's directory, its files opened as
        // they are; on another range (rescaling) it is clipped to `range`.
        // Every other old instance is restored as it was, in a directory of
        // its own, and the owned key groups are copied out of it.
        let base = (0..native.len()).max_by_key(|&i| native[i].key_group_range.intersection(&range).len());
        let mut backend = match base {
            Some(i) => {
                let handle = native[i];
                let mut backend = self.restore_native(options.clone(), handle, storage)?;
                // Only when it holds key groups outside `range`: a range
                // tombstone costs every read a check until compacted away.
                if handle.key_group_range.intersection(&range) != handle.key_group_range {
                    backend.clip_to_own_range()?;
                }
                backend
            }
            None => self.create(options.clone())?,
        };
        for (_, handle) in native.iter().enumerate().filter(|&(i, _)| Some(i) != base) {
            let old_options = KeyedBackendOptions {
                key_group_range: handle.key_group_range,
                ..options.clone()
            };
            let mut old = self.restore_native(old_options, handle, storage)?;
            backend.copy_key_groups_from(&mut old, handle.key_group_range.intersection(&range))?;
        }
        streamstate_api::snapshot::canonical::restore_into(&mut backend, &canonical, storage)?;
        backend.start_flushing_restored_memtables()?;
        backend.start_compacting_clipped_ranges()?;
        Ok(backend)
    }

    /// Restores the instance of `handle` into a new working directory:
    /// downloads its files, opens them and lays its overlays over them.
    /// With `options` owning the handle's key groups, as it was; with
    /// another range, the overlays' cells outside it are left out and
    /// the caller clips the rest
    /// ([`RocksDbKeyedStateBackend::clip_to_own_range`]).
    fn restore_native(
        &self,
        options: KeyedBackendOptions,
        handle: &KeyedStateHandle,
        storage: &CheckpointStorage,
    ) -> Result<RocksDbKeyedStateBackend> {
        let dir = self.instance_dir(&options)?;
        let started = std::time::Instant::now();
        let overlays = match download(storage, handle, &dir) {
            Ok(overlays) => overlays,
            Err(e) => {
                backend::remove_dir(&dir);
                return Err(e);
            }
        };
        let downloaded = started.elapsed();
        let segments = overlays.segment_tables.len();
        // Dropping the backend on an error removes its directory.
        let mut backend = self.open_or_remove(dir, options)?;
        let opened = started.elapsed();
        lay_overlays(&mut backend, handle, overlays)?;
        tracing::debug!(
            download_ms = downloaded.as_millis() as u64,
            open_ms = (opened - downloaded).as_millis() as u64,
            overlays_ms = (started.elapsed() - opened).as_millis() as u64,
            segment_tables = segments,
            "rocksdb restore"
        );
        Ok(backend)
    }
}

impl StateBackend for RocksDbStateBackend {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn capabilities(&self) -> Capabilities {
        ROCKSDB_CAPABILITIES
    }

    fn create_keyed_backend(&self, options: KeyedBackendOptions) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(self.create(options)?))
    }

    fn restore_keyed_backend(
        &self,
        options: KeyedBackendOptions,
        handles: &[KeyedStateHandle],
        storage: &CheckpointStorage,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(self.restore(options, handles, storage)?))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use streamstate_api::codec::{encode_value, encode_value_into};
    use streamstate_api::key_group::assign_to_key_group;
    use streamstate_api::testkit::{checkpoint_target, dump, StateDump, StorageFixture};
    use streamstate_api::{KeyGroupRange, KeyedStateBackendExt, SnapshotTarget, ValueStateDescriptor};

    use super::*;

    const MAX_PARALLELISM: u32 = 16;

    /// The `.log` files of a snapshot.
    fn wal_files(handle: &KeyedStateHandle) -> usize {
        handle.files.iter().filter(|f| f.path.ends_with(".log")).count()
    }

    /// A job restored and checkpointed again and again (a job that fails
    /// soon after every restore) does not restore a longer chain of WAL
    /// files each time: replayed WAL files are flushed after the restore,
    /// and never kept at open beyond a bound.
    #[test]
    fn restores_in_a_row_do_not_chain_wal_files() {
        let fixture = StorageFixture::local_dir();
        let storage = &fixture.storage;
        let rocks = RocksDbStateBackend::default();
        let options = KeyedBackendOptions::new("walchain", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        let mut keyed = rocks.create(options.clone()).unwrap();
        let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
        let mut expected = BTreeMap::new();
        for round in 1..=12u64 {
            for word in round..round + 200 {
                keyed.set_current_key_typed(&word).unwrap();
                let count = counts.value(&mut keyed).unwrap().unwrap_or(0) + 1;
                counts.update(&mut keyed, &count).unwrap();
                expected.insert(word, count);
            }
            let target = checkpoint_target("walchain", round, SnapshotFormat::Native, true, "op-0");
            let taken = keyed.snapshot(&target).unwrap().write(storage, &target).unwrap();
            assert!(
                wal_files(&taken) <= backend::MAX_WAL_FILES_KEPT_AT_OPEN + 2,
                "checkpoint {round} holds {} WAL files: {:?}",
                wal_files(&taken),
                taken.files
            );
            keyed = rocks
                .restore(options.clone(), std::slice::from_ref(&taken), storage)
                .unwrap();
        }
        let restored: BTreeMap<u64, u64> = expected
            .keys()
            .map(|&word| {
                keyed.set_current_key_typed(&word).unwrap();
                (word, counts.value(&mut keyed).unwrap().unwrap())
            })
            .collect();
        assert_eq!(restored, expected);
    }

    /// A working directory whose WAL holds more files than a restore keeps
    /// replayed in memtables is flushed while it opens: the WAL files go,
    /// the state stays.
    #[test]
    fn opening_a_long_chain_of_wal_files_flushes_it() {
        let rocks = RocksDbStateBackend::new(RocksDbConfig {
            write_back_entries: 0,
            ..RocksDbConfig::default()
        });
        let options = KeyedBackendOptions::new("walopen", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        let mut keyed = rocks.create(options.clone()).unwrap();
        let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
        let cf_name = backend::state_cf("count");
        // A write to the default family that is never flushed keeps every
        // later WAL file live; each flush of the state's family starts one.
        keyed.db().unwrap().put(b"pinned", b"1").unwrap();
        for word in 0..(backend::MAX_WAL_FILES_KEPT_AT_OPEN as u64 + 4) {
            keyed.set_current_key_typed(&word).unwrap();
            counts.update(&mut keyed, &word).unwrap();
            let db = keyed.db().unwrap();
            db.flush_cf(db.cf_handle(&cf_name).unwrap()).unwrap();
        }
        let expected = dump(&mut keyed).unwrap();
        let copy = tempfile::tempdir().unwrap();
        let copy_db = copy.path().join("db");
        rocksdb::checkpoint::Checkpoint::new(keyed.db().unwrap())
            .and_then(|c| c.create_checkpoint_with_log_size(&copy_db, u64::MAX))
            .unwrap();
        let copied = backend::count_wal_files(&copy_db);
        assert!(
            copied > backend::MAX_WAL_FILES_KEPT_AT_OPEN,
            "{copied} WAL files copied"
        );

        let mut reopened =
            RocksDbKeyedStateBackend::open(copy.path().to_path_buf(), options, Arc::clone(&rocks.resources)).unwrap();
        let kept = backend::count_wal_files(&copy_db);
        assert!(kept <= 2, "{kept} of {copied} WAL files kept at open");
        assert_eq!(
            reopened.db().unwrap().get(b"pinned").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(dump(&mut reopened).unwrap(), expected);
    }

    /// A restore into half of the old key groups drops the old instance's
    /// SSTs that lie wholly in the other half (no checkpoint uploads them
    /// again) and reads exactly its own keys.
    #[test]
    fn a_rescaling_restore_drops_the_files_outside_its_range() {
        let fixture = StorageFixture::local_dir();
        let storage = &fixture.storage;
        let rocks = RocksDbStateBackend::new(RocksDbConfig {
            write_back_entries: 0,
            ..RocksDbConfig::default()
        });
        let half = MAX_PARALLELISM / 2;
        let (lower, upper) = (
            KeyGroupRange::new(0, half - 1),
            KeyGroupRange::new(half, MAX_PARALLELISM - 1),
        );
        let options = KeyedBackendOptions::new("clip", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        let mut keyed = rocks.create(options.clone()).unwrap();
        let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
        let cf_name = backend::state_cf("count");
        // One SST per half at the bottom level: each half written,
        // flushed and compacted on its own.
        for part in [lower, upper] {
            for word in 0..2000u64 {
                keyed.set_current_key_typed(&word).unwrap();
                if part.contains(keyed.current_key_group()) {
                    counts.update(&mut keyed, &word).unwrap();
                }
            }
            let db = keyed.db().unwrap();
            let cf = db.cf_handle(&cf_name).unwrap();
            db.flush_cf(cf).unwrap();
            db.compact_range_cf(cf, Some(keys::key_group_start(part.start())), None::<&[u8]>);
        }
        let file_ranges = |db: &rocksdb::DB| -> Vec<(Vec<u8>, Vec<u8>)> {
            let mut ranges: Vec<_> = db
                .live_files()
                .unwrap()
                .into_iter()
                .filter(|f| f.column_family_name == cf_name)
                .map(|f| (f.start_key.unwrap(), f.end_key.unwrap()))
                .collect();
            ranges.sort();
            ranges
        };
        let upper_start = keys::key_group_start(half);
        let before = file_ranges(keyed.db().unwrap());
        assert_eq!(before.len(), 2, "one file per half: {before:?}");
        assert!(before[0].1 < upper_start && before[1].0 >= upper_start, "{before:?}");
        let expected: StateDump = dump(&mut keyed)
            .unwrap()
            .into_iter()
            .filter(|((_, key), _)| upper.contains(assign_to_key_group(key, MAX_PARALLELISM)))
            .collect();
        assert!(!expected.is_empty());
        let target: SnapshotTarget = checkpoint_target("clip", 1, SnapshotFormat::Native, true, "op-0");
        let handle = keyed.snapshot(&target).unwrap().write(storage, &target).unwrap();

        let upper_options = KeyedBackendOptions {
            key_group_range: upper,
            ..options
        };
        let mut restored = rocks.restore(upper_options, &[handle], storage).unwrap();
        assert_eq!(file_ranges(restored.db().unwrap()), before[1..].to_vec());
        assert_eq!(dump(&mut restored).unwrap(), expected);
    }

    /// A rescaling restore compacts the ranges it clipped away in the
    /// background: a file spanning every key group is rewritten to hold
    /// the new range's keys only. With `compact_clipped_ranges` off it
    /// keeps the clipped keys (under a range deletion).
    #[test]
    fn a_rescaling_restore_compacts_the_ranges_it_clipped() {
        let fixture = StorageFixture::local_dir();
        let storage = &fixture.storage;
        let half = MAX_PARALLELISM / 2;
        let upper = KeyGroupRange::new(half, MAX_PARALLELISM - 1);
        let upper_start = keys::key_group_start(half);
        let cf_name = backend::state_cf("count");
        let options = KeyedBackendOptions::new("compact", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        for compact in [true, false] {
            let rocks = RocksDbStateBackend::new(RocksDbConfig {
                write_back_entries: 0,
                compact_clipped_ranges: compact,
                ..RocksDbConfig::default()
            });
            let mut keyed = rocks.create(options.clone()).unwrap();
            let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
            for word in 0..2000u64 {
                keyed.set_current_key_typed(&word).unwrap();
                counts.update(&mut keyed, &word).unwrap();
            }
            let db = keyed.db().unwrap();
            let cf = db.cf_handle(&cf_name).unwrap();
            db.flush_cf(cf).unwrap();
            db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            let expected: StateDump = dump(&mut keyed)
                .unwrap()
                .into_iter()
                .filter(|((_, key), _)| upper.contains(assign_to_key_group(key, MAX_PARALLELISM)))
                .collect();
            let target: SnapshotTarget = checkpoint_target("compact", 1, SnapshotFormat::Native, true, "op-0");
            let handle = keyed.snapshot(&target).unwrap().write(storage, &target).unwrap();

            let upper_options = KeyedBackendOptions {
                key_group_range: upper,
                ..options.clone()
            };
            let mut restored = rocks.restore(upper_options, &[handle], storage).unwrap();
            restored.wait_for_range_compaction().unwrap();
            let starts: Vec<Vec<u8>> = restored
                .db()
                .unwrap()
                .live_files()
                .unwrap()
                .into_iter()
                .filter(|f| f.column_family_name == cf_name)
                .map(|f| f.start_key.unwrap())
                .collect();
            assert!(!starts.is_empty());
            let clipped_keys_kept = starts.iter().any(|start| *start < upper_start);
            assert_eq!(
                clipped_keys_kept, !compact,
                "compact_clipped_ranges {compact}: files start at {starts:?}"
            );
            assert_eq!(dump(&mut restored).unwrap(), expected);
        }
    }

    /// A segment of the version before segments became SSTs: one file of
    /// cell writes, replayed over the base (checkpoints retained from that
    /// version still restore).
    #[test]
    fn a_segment_of_cell_writes_from_an_earlier_version_is_replayed_over_its_base() {
        let fixture = StorageFixture::local_dir();
        let storage = &fixture.storage;
        // No write-back cache, so no pending cells: a base of this version
        // writes those as SSTs, one of that version as a file of cell
        // writes; without them the two are alike.
        let rocks = RocksDbStateBackend::new(RocksDbConfig {
            changelog: true,
            write_back_entries: 0,
            ..RocksDbConfig::default()
        });
        let options = KeyedBackendOptions::new("legacy", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        let mut keyed = rocks.create(options.clone()).unwrap();
        let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
        for word in 0..100u64 {
            keyed.set_current_key_typed(&word).unwrap();
            counts.update(&mut keyed, &word).unwrap();
        }
        let target: SnapshotTarget = checkpoint_target("legacy", 1, SnapshotFormat::Native, true, "op-0");
        let mut handle = keyed.snapshot(&target).unwrap().write(storage, &target).unwrap();

        // What that version wrote for keys 0..10 counted up to 1000 + key.
        let mut segment = pending_cells::PendingCellsWriter::new(&["count"], 10);
        for word in 0..10u64 {
            keyed.set_current_key_typed(&word).unwrap();
            counts.update(&mut keyed, &(1000 + word)).unwrap();
            let mut serialized = Vec::new();
            encode_value_into(&word, &mut serialized).unwrap();
            let mut rocks_key = Vec::new();
            keys::put_key_group(&mut rocks_key, assign_to_key_group(&serialized, MAX_PARALLELISM));
            rocks_key.extend_from_slice(&serialized);
            segment.add(0, &rocks_key, Some(&encode_value(&(1000 + word)).unwrap()));
        }
        let expected = dump(&mut keyed).unwrap();
        let name = format!(
            "old-g1{}{}000000000001",
            snapshot::NAME_SEPARATOR,
            changelog::SEGMENT_FILE_PREFIX
        );
        handle
            .files
            .push(storage.write(&target.shared_file(&name), segment.finish()).unwrap());

        let mut restored = rocks
            .restore_keyed_backend(options, std::slice::from_ref(&handle), storage)
            .unwrap();
        assert_eq!(dump(restored.as_mut()).unwrap(), expected);
    }
}
