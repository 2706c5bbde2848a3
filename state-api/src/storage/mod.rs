//! `CheckpointStorage`: where snapshots go, built from a URI on an Apache
//! OpenDAL [`Operator`].
//!
//! One storage value serves one checkpoint directory (the URI's root). All
//! paths passed to it are relative to that root and use `/`. Its methods are
//! blocking: they drive OpenDAL's async operations on a small I/O runtime
//! owned by this crate, so callers are plain threads (the processing thread
//! for restore, a background thread for the asynchronous snapshot phase) and
//! must not call them from inside an async task.
//!
//! On top of raw file access it implements Flink's layout ([`layout`]), the
//! commit protocol (`_metadata` last, atomically), listing, `latest`, and
//! retention ([`retention`]).

pub mod layout;
pub mod retention;
#[cfg(feature = "s3")]
mod s3;
pub mod uri;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::{EntryMode, Operator};

use crate::backend::{FileRef, SnapshotKind};
use crate::snapshot::manifest::{SnapshotManifest, MAX_MANIFEST_LEN, METADATA_FILE};
use crate::{Error, ErrorKind, Result};

pub use retention::{CheckpointEntry, RetentionPlan};
pub use uri::{redact_uri, StorageScheme, StorageUri, SUPPORTED_SCHEMES};

/// Part size of chunked (multipart) uploads.
const WRITE_CHUNK_BYTES: usize = 8 << 20;
/// Parts of one file uploaded at once.
const WRITE_CONCURRENCY: usize = 4;
/// Bytes [`CheckpointStorage::write_from_file`] reads from a local file at
/// a time.
const FILE_READ_BYTES: usize = 1 << 20;
/// Parts of one local file ([`CheckpointStorage::write_from_file`]) in
/// flight at once: enough to overlap reading with uploading, few enough
/// that large files do not cost their size in memory.
const FILE_WRITE_CONCURRENCY: usize = 2;

/// Tuning of the storage layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// Attempts per operation on temporary errors (retry with backoff).
    pub max_retries: usize,
    /// Timeout of a whole non-I/O operation (stat, delete, list).
    pub operation_timeout: Duration,
    /// Timeout of one I/O step (reading or writing one chunk or part).
    pub io_timeout: Duration,
    /// Operations in flight at once.
    pub max_concurrency: usize,
    /// Service options (`s3.endpoint`, `s3.access-key`, ...). Secrets here
    /// never appear in messages.
    pub service_options: BTreeMap<String, String>,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            max_retries: 4,
            operation_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(30),
            max_concurrency: 16,
            service_options: BTreeMap::new(),
        }
    }
}

/// The I/O runtime all storages share. Built on first use.
fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("streamstate-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the storage I/O runtime: {e}"))
    })
}

/// A completed snapshot: its directory and parsed manifest (file paths
/// resolved to storage-root-relative paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedSnapshot {
    /// Storage-root-relative directory holding `_metadata` (ends with `/`).
    pub dir: String,
    /// The manifest.
    pub manifest: SnapshotManifest,
}

/// One snapshot directory as seen by listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotListing {
    /// Storage-root-relative directory (ends with `/`).
    pub dir: String,
    /// Job id (for savepoints: the job id prefix from the name is unknown,
    /// so this is read from the manifest when complete).
    pub job_id: String,
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Whether `_metadata` exists.
    pub complete: bool,
}

/// What retention did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Checkpoint ids whose directories were deleted.
    pub deleted_checkpoints: Vec<u64>,
    /// Shared files deleted.
    pub deleted_shared_files: Vec<String>,
}

/// Checkpoint storage on one OpenDAL operator. Cheap to clone; clones share
/// the operator (and so, for `memory://`, the stored data).
#[derive(Clone)]
pub struct CheckpointStorage {
    inner: Arc<Inner>,
}

struct Inner {
    uri: StorageUri,
    display: String,
    op: Operator,
}

impl std::fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStorage")
            .field("uri", &self.inner.display)
            .finish()
    }
}

impl CheckpointStorage {
    /// Opens the checkpoint directory `uri` with default options.
    ///
    /// ```
    /// use state_api::CheckpointStorage;
    /// let dir = tempfile::tempdir().unwrap();
    /// let storage = CheckpointStorage::open(dir.path().to_str().unwrap()).unwrap();
    /// let file = storage.write("job/chk-1/a", b"hello".to_vec()).unwrap();
    /// assert_eq!(storage.read_verified(&file).unwrap(), b"hello");
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URI or a scheme this build was
    /// compiled without.
    pub fn open(uri: &str) -> Result<Self> {
        Self::open_with(uri, &StorageOptions::default())
    }

    /// Opens `uri` with explicit options.
    ///
    /// # Errors
    /// As [`CheckpointStorage::open`].
    pub fn open_with(uri: &str, options: &StorageOptions) -> Result<Self> {
        let parsed = StorageUri::parse(uri)?;
        let display = parsed.to_string();
        let op = build_operator(&parsed, options).map_err(|e| e.with_context("uri", display.clone()))?;
        let op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(options.operation_timeout)
                    .with_io_timeout(options.io_timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(options.max_retries)
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(5))
                    .with_jitter(),
            )
            .layer(ConcurrentLimitLayer::new(options.max_concurrency.max(1)));
        Ok(Self {
            inner: Arc::new(Inner {
                uri: parsed,
                display,
                op,
            }),
        })
    }

    /// The checkpoint directory's URI (never holds credentials).
    pub fn uri(&self) -> &str {
        &self.inner.display
    }

    /// The parsed URI.
    pub fn storage_uri(&self) -> &StorageUri {
        &self.inner.uri
    }

    fn block_on<F: IntoFuture>(&self, fut: F) -> F::Output {
        io_runtime().block_on(fut.into_future())
    }

    fn storage_error(&self, what: &str, path: &str, err: opendal::Error) -> Error {
        let kind = match err.kind() {
            opendal::ErrorKind::NotFound => ErrorKind::NotFound,
            opendal::ErrorKind::Unsupported => ErrorKind::Unsupported,
            opendal::ErrorKind::ConfigInvalid => ErrorKind::Config,
            _ => ErrorKind::Storage,
        };
        let temporary = err.is_temporary();
        Error::new(kind, format!("{what} failed"))
            .with_context("uri", self.inner.display.clone())
            .with_context("file", path.to_owned())
            .set_temporary(temporary)
            .with_source(err)
    }

    /// Writes a whole file and returns its [`FileRef`] (size and CRC-32C).
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI and file.
    pub fn write(&self, path: &str, bytes: Vec<u8>) -> Result<FileRef> {
        let file = FileRef {
            path: path.to_owned(),
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
        };
        // Large files go up in parts, a few at a time (multipart on S3).
        self.block_on(
            self.inner
                .op
                .write_with(path, bytes)
                .chunk(WRITE_CHUNK_BYTES)
                .concurrent(WRITE_CONCURRENCY),
        )
        .map_err(|e| self.storage_error("write", path, e))?;
        Ok(file)
    }

    /// Writes the local file at `local` to `path`, reading it a MiB at a
    /// time and uploading it in parts, and returns its [`FileRef`]: a file
    /// of any size costs a few parts of memory (RocksDB's SSTs reach
    /// 64 MiB), not its size.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the local file when it cannot be read,
    /// or the URI and file when the upload fails (the partial upload is
    /// aborted).
    pub fn write_from_file(&self, path: &str, local: &std::path::Path) -> Result<FileRef> {
        use std::io::Read;
        let local_error = |e: std::io::Error| {
            Error::new(ErrorKind::Storage, "reading a local file failed")
                .with_context("file", local.display().to_string())
                .with_source(e)
        };
        let mut source = std::fs::File::open(local).map_err(local_error)?;
        let mut writer = self
            .block_on(
                self.inner
                    .op
                    .writer_with(path)
                    .chunk(self.file_part_bytes())
                    .concurrent(FILE_WRITE_CONCURRENCY),
            )
            .map_err(|e| self.storage_error("write", path, e))?;
        let (mut size, mut crc32c) = (0u64, 0u32);
        // Read in small pieces: the writer gathers them into upload parts.
        let mut part = vec![0u8; FILE_READ_BYTES];
        let uploaded = loop {
            let mut filled = 0;
            while filled < part.len() {
                match source.read(&mut part[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = self.block_on(writer.abort());
                        return Err(local_error(e));
                    }
                }
            }
            if filled == 0 {
                break self.block_on(writer.close()).map(|_| ());
            }
            size += filled as u64;
            crc32c = crc32c::crc32c_append(crc32c, &part[..filled]);
            if let Err(e) = self.block_on(writer.write(part[..filled].to_vec())) {
                break Err(e);
            }
        };
        if let Err(e) = uploaded {
            let _ = self.block_on(writer.abort());
            return Err(self.storage_error("write", path, e));
        }
        Ok(FileRef {
            path: path.to_owned(),
            size,
            crc32c,
        })
    }

    /// The part size of [`CheckpointStorage::write_from_file`]: S3's
    /// multipart uploads need parts of at least 5 MiB; other services
    /// stream, so a part only costs memory there.
    fn file_part_bytes(&self) -> usize {
        match self.storage_uri().scheme {
            StorageScheme::S3 => WRITE_CHUNK_BYTES,
            StorageScheme::File | StorageScheme::Hdfs | StorageScheme::Memory => FILE_READ_BYTES,
        }
    }

    /// Writes a file so that readers see either nothing or all of it: a
    /// temporary name then a rename where the service can rename (and the
    /// parent directory synced on local disks), a single PUT elsewhere.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI and file.
    pub fn write_atomic(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let op = &self.inner.op;
        if !op.info().capability().rename {
            self.write(path, bytes)?;
            return Ok(());
        }
        let temp = format!("{path}.inprogress");
        self.write(&temp, bytes)?;
        self.block_on(op.rename(&temp, path))
            .map_err(|e| self.storage_error("rename", path, e))?;
        if let Some(local_root) = self.inner.uri.local_path() {
            let full = local_root.join(path);
            if let Some(parent) = full.parent() {
                std::fs::File::open(parent)
                    .and_then(|dir| dir.sync_all())
                    .map_err(|e| {
                        Error::new(ErrorKind::Storage, "syncing the directory failed")
                            .with_context("uri", self.inner.display.clone())
                            .with_context("file", path.to_owned())
                            .with_source(e)
                    })?;
            }
        }
        Ok(())
    }

    /// Reads a whole file.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] or [`ErrorKind::Storage`] naming the file.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.block_on(self.inner.op.read(path))
            .map(|b| b.to_vec())
            .map_err(|e| self.storage_error("read", path, e))
    }

    /// Reads a byte range of a file.
    ///
    /// # Errors
    /// As [`CheckpointStorage::read`]; [`ErrorKind::Corrupt`] when the file is
    /// shorter than the range.
    pub fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let wanted = range.end.saturating_sub(range.start);
        let bytes = self
            .block_on(self.inner.op.read_with(path).range(range.clone()))
            .map(|b| b.to_vec())
            .map_err(|e| self.storage_error("read", path, e))?;
        if bytes.len() as u64 != wanted {
            return Err(Error::corrupt(format!(
                "read {} bytes at {}..{}, expected {wanted} (file truncated?)",
                bytes.len(),
                range.start,
                range.end
            ))
            .with_context("file", path.to_owned()));
        }
        Ok(bytes)
    }

    /// Reads a file and checks its size and CRC-32C against `file`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a missing file, [`ErrorKind::ChecksumMismatch`]
    /// for a changed or truncated one, naming the file.
    pub fn read_verified(&self, file: &FileRef) -> Result<Vec<u8>> {
        let bytes = self.read(&file.path)?;
        let actual = crc32c::crc32c(&bytes);
        if bytes.len() as u64 != file.size || actual != file.crc32c {
            return Err(self.checksum_mismatch(file, bytes.len() as u64, Some(actual)));
        }
        Ok(bytes)
    }

    /// Reads a file into the local file `local` a part at a time (a file of
    /// any size costs one part of memory) and checks its size and CRC-32C
    /// against `file`.
    ///
    /// # Errors
    /// As [`CheckpointStorage::read_verified`]; [`ErrorKind::Storage`]
    /// naming `local` when it cannot be written. `local` may hold part of
    /// the file after an error.
    pub fn read_verified_into(&self, file: &FileRef, local: &std::path::Path) -> Result<()> {
        use std::io::Write;
        let actual_size = self.stat_len(&file.path)?;
        if actual_size != file.size {
            return Err(self.checksum_mismatch(file, actual_size, None));
        }
        let local_error = |e: std::io::Error| {
            Error::new(ErrorKind::Storage, "writing a local file failed")
                .with_context("file", local.display().to_string())
                .with_source(e)
        };
        let mut out = std::fs::File::create(local).map_err(local_error)?;
        let mut crc32c = 0u32;
        let mut offset = 0u64;
        while offset < file.size {
            let end = file.size.min(offset + WRITE_CHUNK_BYTES as u64);
            let part = self.read_range(&file.path, offset..end)?;
            crc32c = crc32c::crc32c_append(crc32c, &part);
            out.write_all(&part).map_err(local_error)?;
            offset = end;
        }
        if crc32c != file.crc32c {
            return Err(self.checksum_mismatch(file, file.size, Some(crc32c)));
        }
        Ok(())
    }

    fn checksum_mismatch(&self, file: &FileRef, actual_size: u64, actual_crc32c: Option<u32>) -> Error {
        let actual = match actual_crc32c {
            Some(crc) => format!("{actual_size} bytes with CRC-32C {crc:08x}"),
            None => format!("{actual_size} bytes"),
        };
        Error::new(
            ErrorKind::ChecksumMismatch,
            format!(
                "file has {actual}; the manifest recorded {} bytes with {:08x}",
                file.size, file.crc32c
            ),
        )
        .with_context("uri", self.inner.display.clone())
        .with_context("file", file.path.clone())
    }

    /// The size of a file.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] or [`ErrorKind::Storage`] naming the file.
    pub fn stat_len(&self, path: &str) -> Result<u64> {
        self.block_on(self.inner.op.stat(path))
            .map(|m| m.content_length())
            .map_err(|e| self.storage_error("stat", path, e))
    }

    /// Whether a file exists.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] when the service cannot tell.
    pub fn exists(&self, path: &str) -> Result<bool> {
        self.block_on(self.inner.op.exists(path))
            .map_err(|e| self.storage_error("exists", path, e))
    }

    /// Names of the direct subdirectories of `dir` (which ends with `/`, or
    /// is empty for the root), without trailing `/`, sorted.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the directory.
    pub fn list_dirs(&self, dir: &str) -> Result<Vec<String>> {
        self.list_children(dir, EntryMode::DIR)
    }

    /// Names of the files directly in `dir`, sorted.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the directory.
    pub fn list_files(&self, dir: &str) -> Result<Vec<String>> {
        self.list_children(dir, EntryMode::FILE)
    }

    fn list_children(&self, dir: &str, mode: EntryMode) -> Result<Vec<String>> {
        let path = if dir.is_empty() { "/" } else { dir };
        let entries = match self.block_on(self.inner.op.list(path)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.storage_error("list", dir, e)),
        };
        let mut names: Vec<String> = entries
            .iter()
            .filter(|e| e.metadata().mode() == mode)
            .map(|e| e.path().trim_start_matches('/'))
            .filter(|p| *p != dir.trim_start_matches('/'))
            .filter_map(|p| p.strip_prefix(dir.trim_start_matches('/')))
            .map(|p| p.trim_end_matches('/').to_owned())
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Deletes one file (absent files are fine).
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the file.
    pub fn delete(&self, path: &str) -> Result<()> {
        self.block_on(self.inner.op.delete(path))
            .map_err(|e| self.storage_error("delete", path, e))
    }

    /// Deletes a directory and everything under it.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the directory.
    pub fn delete_dir(&self, dir: &str) -> Result<()> {
        let dir = if dir.ends_with('/') {
            dir.to_owned()
        } else {
            format!("{dir}/")
        };
        self.block_on(self.inner.op.delete_with(&dir).recursive(true))
            .map_err(|e| self.storage_error("delete", &dir, e))
    }

    // ---- Flink's layout and the commit protocol ----

    /// The directory a manifest's paths are relative to, and the first path
    /// components they may start with.
    fn manifest_base(dir: &str, kind: SnapshotKind) -> Result<(String, Vec<String>)> {
        match kind {
            SnapshotKind::Savepoint => Ok((dir.to_owned(), Vec::new())),
            SnapshotKind::Checkpoint => {
                let trimmed = dir.trim_end_matches('/');
                let (job, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
                if layout::parse_checkpoint_dir_name(name).is_none() {
                    return Err(Error::config(format!("{dir} is not a chk-<n> directory")));
                }
                let base = if job.is_empty() {
                    String::new()
                } else {
                    format!("{job}/")
                };
                Ok((
                    base,
                    vec![
                        name.to_owned(),
                        layout::SHARED_DIR.to_owned(),
                        layout::TASKOWNED_DIR.to_owned(),
                    ],
                ))
            }
        }
    }

    /// The directory a snapshot of `manifest` is committed to.
    pub fn snapshot_dir(manifest: &SnapshotManifest) -> String {
        match manifest.kind {
            SnapshotKind::Checkpoint => layout::checkpoint_dir(&manifest.job_id, manifest.checkpoint_id),
            SnapshotKind::Savepoint => layout::savepoint_dir(&manifest.job_id, manifest.checkpoint_id),
        }
    }

    /// The base directory (see [`crate::SnapshotTarget::base`]) of a snapshot
    /// of `kind` for `job_id` and `checkpoint_id`.
    pub fn snapshot_base(job_id: &str, checkpoint_id: u64, kind: SnapshotKind) -> String {
        match kind {
            SnapshotKind::Checkpoint => layout::job_dir(job_id),
            SnapshotKind::Savepoint => layout::savepoint_dir(job_id, checkpoint_id),
        }
    }

    /// Commits a snapshot by writing its `_metadata`, atomically and last.
    /// Every file it names must already be written.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI; [`ErrorKind::InvalidArgument`]
    /// when a file lies outside the snapshot's base.
    pub fn commit(&self, manifest: &SnapshotManifest) -> Result<CompletedSnapshot> {
        layout::validate_job_id(&manifest.job_id)?;
        let dir = Self::snapshot_dir(manifest);
        let (base, _) = Self::manifest_base(&dir, manifest.kind)?;
        let json = manifest.to_json(&base)?;
        self.write_atomic(&format!("{dir}{METADATA_FILE}"), json)?;
        tracing::debug!(uri = %self.uri(), dir = %dir, "committed snapshot");
        Ok(CompletedSnapshot {
            dir,
            manifest: manifest.clone(),
        })
    }

    /// Loads the completed snapshot in `dir` (`job/chk-3` or
    /// `savepoints/savepoint-abc-3`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when `_metadata` is missing (the checkpoint
    /// never completed); [`ErrorKind::Corrupt`] or
    /// [`ErrorKind::IncompatibleVersion`] naming the file.
    pub fn load(&self, dir: &str) -> Result<CompletedSnapshot> {
        let dir = layout::normalize_dir(dir)?;
        let path = format!("{dir}{METADATA_FILE}");
        let kind = if dir.starts_with(&format!("{}/", layout::SAVEPOINTS_DIR)) {
            SnapshotKind::Savepoint
        } else {
            SnapshotKind::Checkpoint
        };
        let len = self.stat_len(&path).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::new(
                    ErrorKind::NotFound,
                    "snapshot has no _metadata: it was never completed or was deleted",
                )
                .with_context("uri", self.uri().to_owned())
                .with_context("file", path.clone())
            } else {
                e
            }
        })?;
        if len > MAX_MANIFEST_LEN {
            return Err(Error::corrupt(format!(
                "_metadata is {len} bytes, over the {MAX_MANIFEST_LEN}-byte limit"
            ))
            .with_context("file", path));
        }
        let bytes = self.read(&path)?;
        let (base, roots) = Self::manifest_base(&dir, kind)?;
        let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
        let manifest = SnapshotManifest::from_json(&bytes, &base, &roots).map_err(|e| {
            e.with_context("uri", self.uri().to_owned())
                .with_context("file", path.clone())
        })?;
        if manifest.kind != kind {
            return Err(Error::corrupt(format!(
                "_metadata says {:?} but lies in a {kind:?} directory",
                manifest.kind
            ))
            .with_context("file", path));
        }
        if kind == SnapshotKind::Checkpoint && (dir != layout::checkpoint_dir(&manifest.job_id, manifest.checkpoint_id))
        {
            return Err(Error::corrupt(format!(
                "_metadata names job {} checkpoint {}, which does not match its directory",
                manifest.job_id, manifest.checkpoint_id
            ))
            .with_context("file", path));
        }
        Ok(CompletedSnapshot { dir, manifest })
    }

    /// Job ids that have a directory here.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI.
    pub fn list_jobs(&self) -> Result<Vec<String>> {
        Ok(self
            .list_dirs("")?
            .into_iter()
            .filter(|d| layout::validate_job_id(d).is_ok())
            .collect())
    }

    /// Every checkpoint directory of `job_id`, complete or not, by id.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI.
    pub fn list_checkpoints(&self, job_id: &str) -> Result<Vec<SnapshotListing>> {
        let job = layout::job_dir(job_id);
        let mut listings = Vec::new();
        for name in self.list_dirs(&job)? {
            if let Some(id) = layout::parse_checkpoint_dir_name(&name) {
                let dir = format!("{job}{name}/");
                let complete = self.exists(&format!("{dir}{METADATA_FILE}"))?;
                listings.push(SnapshotListing {
                    dir,
                    job_id: job_id.to_owned(),
                    checkpoint_id: id,
                    kind: SnapshotKind::Checkpoint,
                    complete,
                });
            }
        }
        listings.sort_by_key(|l| l.checkpoint_id);
        Ok(listings)
    }

    /// Every completed checkpoint of `job_id` (or of every job when `None`)
    /// that loads, newest first (by commit time, then id). Checkpoints whose
    /// `_metadata` cannot be read are skipped with a warning naming them.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI.
    pub fn completed_checkpoints(&self, job_id: Option<&str>) -> Result<Vec<CompletedSnapshot>> {
        let jobs = match job_id {
            Some(job) => vec![job.to_owned()],
            None => self.list_jobs()?,
        };
        let mut completed = Vec::new();
        for job in jobs {
            for listing in self.list_checkpoints(&job)?.into_iter().filter(|l| l.complete) {
                match self.load(&listing.dir) {
                    Ok(snapshot) => completed.push(snapshot),
                    Err(e) if e.kind() == ErrorKind::Storage => return Err(e),
                    Err(e) => tracing::warn!(error = %e, "skipping checkpoint whose _metadata cannot be read"),
                }
            }
        }
        completed.sort_by(|a, b| {
            (b.manifest.created_at_ms, b.manifest.checkpoint_id)
                .cmp(&(a.manifest.created_at_ms, a.manifest.checkpoint_id))
        });
        Ok(completed)
    }

    /// The newest completed checkpoint (Flink's "latest").
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI.
    pub fn latest_completed(&self, job_id: Option<&str>) -> Result<Option<CompletedSnapshot>> {
        Ok(self.completed_checkpoints(job_id)?.into_iter().next())
    }

    /// Keeps the newest `retain` completed checkpoints of `job_id` and
    /// deletes older ones, plus shared files only they referenced. Decides
    /// everything first ([`retention::plan_retention`]), then deletes; never
    /// deletes anything before a checkpoint has been committed.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI; files deleted before the error
    /// were not referenced by any retained checkpoint.
    pub fn apply_retention(&self, job_id: &str, retain: usize) -> Result<RetentionReport> {
        let job = layout::job_dir(job_id);
        let mut entries = Vec::new();
        for listing in self.list_checkpoints(job_id)? {
            let referenced_files = if listing.complete {
                match self.load(&listing.dir) {
                    Ok(s) => Some(s.manifest.files().map(|f| f.path.clone()).collect()),
                    Err(e) if e.kind() == ErrorKind::Storage => return Err(e),
                    Err(_) => None,
                }
            } else {
                None
            };
            entries.push(CheckpointEntry {
                id: listing.checkpoint_id,
                complete: listing.complete,
                referenced_files,
            });
        }
        let shared_prefix = format!("{job}{}/", layout::SHARED_DIR);
        let plan = retention::plan_retention(&entries, retain, |p| p.starts_with(&shared_prefix));
        for id in &plan.delete_checkpoints {
            self.delete_dir(&layout::checkpoint_dir(job_id, *id))?;
        }
        for file in &plan.delete_shared_files {
            self.delete(file)?;
        }
        Ok(RetentionReport {
            deleted_checkpoints: plan.delete_checkpoints,
            deleted_shared_files: plan.delete_shared_files,
        })
    }
}

fn build_operator(uri: &StorageUri, options: &StorageOptions) -> Result<Operator> {
    let map = |e: opendal::Error| Error::config("cannot configure storage").with_source(e);
    match uri.scheme {
        StorageScheme::Memory => Operator::new(opendal::services::Memory::default()).map_err(map),
        StorageScheme::File => {
            std::fs::create_dir_all(&uri.root).map_err(|e| {
                Error::new(ErrorKind::Storage, "cannot create the checkpoint directory")
                    .with_context("file", uri.root.clone())
                    .with_source(e)
            })?;
            Operator::new(opendal::services::Fs::default().root(&uri.root)).map_err(map)
        }
        #[cfg(feature = "s3")]
        StorageScheme::S3 => s3::build(uri, options),
        #[cfg(feature = "hdfs")]
        StorageScheme::Hdfs => {
            let authority = uri.authority.as_deref().unwrap_or_default();
            Operator::new(
                opendal::services::HdfsNative::default()
                    .name_node(&format!("hdfs://{authority}"))
                    .root(&uri.root),
            )
            .map_err(map)
        }
        #[allow(unreachable_patterns)]
        scheme => {
            let _ = options;
            Err(Error::config(format!(
                "{}:// storage is not compiled into this build; rebuild with `--features {}`",
                scheme.as_str(),
                scheme.as_str()
            )))
        }
    }
}
