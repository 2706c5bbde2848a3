//! # state-rocksdb: Flink's RocksDBStateBackend
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
//! Restore downloads files in parallel and opens them; at another
//! parallelism it copies the owned key-group ranges out of each old
//! instance. Working directories live under [`RocksDbConfig::local_dir`]
//! (Flink's `state.backend.rocksdb.localdir`), are removed on clean
//! shutdown, and directories left by dead processes are removed, not reused.

mod backend;
pub mod changelog;
mod keys;
mod local_checkpoint;
mod pending_cells;
mod snapshot;
mod write_back;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use backend::{RocksDbKeyedStateBackend, ROCKSDB_CAPABILITIES};
use state_api::{
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
    /// once the writes add up to its size. Off by default, as in Flink: a
    /// restore replays those writes (docs/BENCHMARKS.md: 1,077 ms against
    /// 71 ms for ~700,000 keys).
    pub changelog: bool,
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

/// Downloads (checksums verified) the RocksDB files of `handle` into `dir`,
/// four at a time, and returns its files of cell writes (stored path and
/// bytes), which are not RocksDB's and stay in memory: the pending cells,
/// then the changelog segments in the order they apply.
fn download(storage: &CheckpointStorage, handle: &KeyedStateHandle, dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    backend::create_dir(dir)?;
    let mut pending = None;
    let mut segments = Vec::new();
    let mut chunks: Vec<Vec<&state_api::FileRef>> = vec![Vec::new(); 4];
    for (i, f) in handle.files.iter().enumerate() {
        let name = local_name(&f.path)?;
        if name == pending_cells::PENDING_CELLS_FILE {
            pending = Some(f);
        } else if name.starts_with(changelog::SEGMENT_FILE_PREFIX) {
            segments.push((name, f));
        } else {
            chunks[i % 4].push(f);
        }
    }
    // Segment names end in their zero-padded piece numbers.
    segments.sort_by_key(|(name, _)| *name);
    let pending = pending
        .into_iter()
        .chain(segments.into_iter().map(|(_, f)| f))
        .map(|file| storage.read_verified(file).map(|bytes| (file.path.clone(), bytes)))
        .collect::<Result<Vec<_>>>()?;
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|files| {
                scope.spawn(move || -> Result<()> {
                    for file in files {
                        // A part at a time: a WAL copy reaches 64 MiB,
                        // compaction outputs 16 MiB.
                        storage.read_verified_into(file, &dir.join(local_name(&file.path)?))?;
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
    Ok(pending)
}

/// Lays a native handle's files of cell writes ([`download`]) over
/// `backend`, those of key groups in `range`. The states a changelog
/// segment writes may have been registered after its base was made, so
/// every state of the handle is registered first.
fn apply_cell_writes(
    backend: &mut RocksDbKeyedStateBackend,
    handle: &KeyedStateHandle,
    files: Vec<(String, Vec<u8>)>,
    range: state_api::KeyGroupRange,
) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    for meta in &handle.states {
        backend.register_state(meta)?;
    }
    for (file, bytes) in files {
        backend.apply_cell_writes(&bytes, &file, range)?;
    }
    Ok(())
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
        if let (1, true, true) = (
            native.len(),
            canonical.is_empty(),
            native.first().is_some_and(|h| h.key_group_range == range),
        ) {
            // Same range: download the files and open them as they are.
            let dir = self.instance_dir(&options)?;
            let started = std::time::Instant::now();
            let pending = match download(storage, native[0], &dir.join("db")) {
                Ok(pending) => pending,
                Err(e) => {
                    backend::remove_dir(&dir);
                    return Err(e);
                }
            };
            let downloaded = started.elapsed();
            let mut backend = self.open_or_remove(dir, options)?;
            apply_cell_writes(&mut backend, native[0], pending, range)?;
            tracing::debug!(
                download_ms = downloaded.as_millis() as u64,
                open_ms = (started.elapsed() - downloaded).as_millis() as u64,
                "rocksdb restore"
            );
            return Ok(Box::new(backend));
        }
        let mut backend = self.create(options)?;
        for (i, handle) in native.iter().enumerate() {
            let temp = backend.dir.join(format!("restore-{i}"));
            let pending = download(storage, handle, &temp)?;
            let owned = handle.key_group_range.intersection(&range);
            let copied = backend.copy_key_groups_from(&temp, owned);
            backend::remove_dir(&temp);
            copied?;
            apply_cell_writes(&mut backend, handle, pending, owned)?;
        }
        state_api::snapshot::canonical::restore_into(&mut backend, &canonical, storage)?;
        Ok(Box::new(backend))
    }
}
