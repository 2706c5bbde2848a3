//! [`CheckpointStorage`]: the blocking facade over [`AsyncCheckpointStorage`]
//! that state backends and the runtime's threads call. Each method runs the
//! async core's method of the same name on an [`IoExecutor`], so it works
//! from any thread, a Tokio runtime's threads too.

use std::ops::Range;
use std::path::Path;

use super::{
    AsyncCheckpointStorage, CompletedSnapshot, IoExecutor, RetentionReport, SnapshotListing, StorageOptions, StorageUri,
};
use crate::handle::{FileRef, SnapshotKind};
use crate::snapshot::manifest::SnapshotManifest;
use crate::Result;

/// Checkpoint storage on one OpenDAL operator, blocking. Cheap to clone;
/// clones share the operator (and so, for `memory://`, the stored data).
///
/// ```
/// use streamstate_api::CheckpointStorage;
/// let dir = tempfile::tempdir().unwrap();
/// let storage = CheckpointStorage::open(dir.path().to_str().unwrap()).unwrap();
/// let file = storage.write("job/chk-1/a", b"hello".to_vec()).unwrap();
/// assert_eq!(storage.read_verified(&file).unwrap(), b"hello");
/// // The same storage, async, for code that runs on a Tokio runtime:
/// let core = storage.as_async().clone();
/// # let _ = core;
/// ```
#[derive(Clone)]
pub struct CheckpointStorage {
    core: AsyncCheckpointStorage,
    executor: IoExecutor,
}

impl std::fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStorage").field("uri", &self.uri()).finish()
    }
}

/// Writes each blocking method as a call of the async core's method of the
/// same name, run on the executor.
macro_rules! blocking_methods {
    ($( $(#[$attr:meta])* fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*) => {
        $(
            $(#[$attr])*
            pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                self.executor.block_on(self.core.$name($($arg),*))
            }
        )*
    };
}

impl CheckpointStorage {
    /// Opens the checkpoint directory `uri` with default options, its I/O
    /// on the crate's shared runtime.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Config`] for a malformed URI or a scheme this
    /// build was compiled without.
    pub fn open(uri: &str) -> Result<Self> {
        Self::open_with(uri, &StorageOptions::default())
    }

    /// Opens `uri` with explicit options.
    ///
    /// # Errors
    /// As [`CheckpointStorage::open`].
    pub fn open_with(uri: &str, options: &StorageOptions) -> Result<Self> {
        Ok(Self::from_async(
            AsyncCheckpointStorage::open_with(uri, options)?,
            IoExecutor::shared(),
        ))
    }

    /// The blocking facade of `core`, its calls run on `executor`
    /// ([`IoExecutor::from_handle`] puts them on the embedder's runtime).
    pub fn from_async(core: AsyncCheckpointStorage, executor: IoExecutor) -> Self {
        Self { core, executor }
    }

    /// The async core, for callers on a Tokio runtime.
    pub fn as_async(&self) -> &AsyncCheckpointStorage {
        &self.core
    }

    /// The checkpoint directory's URI (never holds credentials).
    pub fn uri(&self) -> &str {
        self.core.uri()
    }

    /// The parsed URI.
    pub fn storage_uri(&self) -> &StorageUri {
        self.core.storage_uri()
    }

    /// The directory a snapshot of `manifest` is committed to.
    pub fn snapshot_dir(manifest: &SnapshotManifest) -> String {
        super::checkpoints::snapshot_dir(manifest)
    }

    /// The base directory (see [`crate::SnapshotTarget::base`]) of a
    /// snapshot of `kind` for `job_id` and `checkpoint_id`.
    pub fn snapshot_base(job_id: &str, checkpoint_id: u64, kind: SnapshotKind) -> String {
        super::checkpoints::snapshot_base(job_id, checkpoint_id, kind)
    }

    blocking_methods! {
        /// Writes a whole file; see [`AsyncCheckpointStorage::write`].
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the URI and file.
        fn write(&self, path: &str, bytes: Vec<u8>) -> Result<FileRef>;
        /// Uploads a local file in parts; see
        /// [`AsyncCheckpointStorage::write_from_file`].
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the local or remote file.
        fn write_from_file(&self, path: &str, local: &Path) -> Result<FileRef>;
        /// Writes a file all or nothing; see
        /// [`AsyncCheckpointStorage::write_atomic`].
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the URI and file.
        fn write_atomic(&self, path: &str, bytes: Vec<u8>) -> Result<()>;
        /// Reads a whole file.
        ///
        /// # Errors
        /// [`crate::ErrorKind::NotFound`] or [`crate::ErrorKind::Storage`]
        /// naming the file.
        fn read(&self, path: &str) -> Result<Vec<u8>>;
        /// Reads a byte range of a file.
        ///
        /// # Errors
        /// As [`CheckpointStorage::read`]; [`crate::ErrorKind::Corrupt`]
        /// when the file is shorter than the range.
        fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>>;
        /// Reads a file and checks its size and CRC-32C.
        ///
        /// # Errors
        /// [`crate::ErrorKind::NotFound`], or
        /// [`crate::ErrorKind::ChecksumMismatch`] naming the file.
        fn read_verified(&self, file: &FileRef) -> Result<Vec<u8>>;
        /// Downloads a file into a local file and checks it; see
        /// [`AsyncCheckpointStorage::read_verified_into`].
        ///
        /// # Errors
        /// As [`CheckpointStorage::read_verified`], or a local write error.
        fn read_verified_into(&self, file: &FileRef, local: &Path) -> Result<()>;
        /// The size of a file.
        ///
        /// # Errors
        /// [`crate::ErrorKind::NotFound`] or [`crate::ErrorKind::Storage`].
        fn stat_len(&self, path: &str) -> Result<u64>;
        /// Whether a file exists.
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] when the service cannot tell.
        fn exists(&self, path: &str) -> Result<bool>;
        /// Direct subdirectories of `dir`, sorted.
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the directory.
        fn list_dirs(&self, dir: &str) -> Result<Vec<String>>;
        /// Files directly in `dir`, sorted.
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the directory.
        fn list_files(&self, dir: &str) -> Result<Vec<String>>;
        /// Deletes one file (absent files are fine).
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the file.
        fn delete(&self, path: &str) -> Result<()>;
        /// Deletes a directory and everything under it.
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the directory.
        fn delete_dir(&self, dir: &str) -> Result<()>;
        /// Commits a snapshot by writing its `_metadata`, atomically and
        /// last; see [`AsyncCheckpointStorage::commit`].
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the URI.
        fn commit(&self, manifest: &SnapshotManifest) -> Result<CompletedSnapshot>;
        /// Loads the completed snapshot in `dir`; see
        /// [`AsyncCheckpointStorage::load`].
        ///
        /// # Errors
        /// [`crate::ErrorKind::NotFound`] without `_metadata`;
        /// [`crate::ErrorKind::Corrupt`] naming the file.
        fn load(&self, dir: &str) -> Result<CompletedSnapshot>;
        /// Job ids that have a directory here.
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the URI.
        fn list_jobs(&self) -> Result<Vec<String>>;
        /// Every checkpoint directory of `job_id`, complete or not, by id.
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the URI.
        fn list_checkpoints(&self, job_id: &str) -> Result<Vec<SnapshotListing>>;
        /// Completed checkpoints, newest first; see
        /// [`AsyncCheckpointStorage::completed_checkpoints`].
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the URI.
        fn completed_checkpoints(&self, job_id: Option<&str>) -> Result<Vec<CompletedSnapshot>>;
        /// The newest completed checkpoint (Flink's "latest").
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the URI.
        fn latest_completed(&self, job_id: Option<&str>) -> Result<Option<CompletedSnapshot>>;
        /// Keeps the newest `retain` completed checkpoints; see
        /// [`AsyncCheckpointStorage::apply_retention`].
        ///
        /// # Errors
        /// [`crate::ErrorKind::Storage`] naming the URI.
        fn apply_retention(&self, job_id: &str, retain: usize) -> Result<RetentionReport>;
    }
}
