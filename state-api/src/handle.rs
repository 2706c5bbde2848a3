//! What a snapshot is made of, as data: its kind and format, where it is
//! written ([`SnapshotTarget`]), its files ([`FileRef`]) and what one keyed
//! backend wrote ([`KeyedStateHandle`]).
//!
//! A leaf module: the backend contract ([`crate::backend`]), the manifest
//! ([`crate::snapshot::manifest`]) and the storage ([`crate::storage`]) all
//! use these types, and this module uses none of them.

use serde::{Deserialize, Serialize};

use crate::descriptor::StateMeta;
use crate::key_group::KeyGroupRange;

/// Whether a snapshot is a periodic checkpoint or a user-triggered savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Periodic, owned by the job, may reference shared files.
    Checkpoint,
    /// Triggered by the user, self-contained and relocatable.
    Savepoint,
}

/// The layout of the files a snapshot writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotFormat {
    /// Backend-neutral key/value records by key group
    /// ([`crate::snapshot::canonical`]); any backend restores it.
    Canonical,
    /// The backend's own files; only the same backend restores it.
    Native,
}

/// Where and how one keyed backend writes its snapshot.
///
/// Paths are relative to the storage root. `base` is the directory a
/// manifest's file paths are relative to: the job directory for a checkpoint,
/// the savepoint directory for a savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTarget {
    /// Checkpoint id (savepoints have ids too).
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Requested format.
    pub format: SnapshotFormat,
    /// Upload only what changed since the last snapshot, when supported.
    pub incremental: bool,
    /// Base directory (ends with `/`).
    pub base: String,
    /// Directory exclusive to this snapshot, relative to `base` (`chk-7`).
    pub exclusive_dir: String,
    /// Directory for files shared between checkpoints, relative to `base`.
    pub shared_dir: String,
    /// File name stem unique to this operator instance (`count-0`).
    pub file_stem: String,
}

impl SnapshotTarget {
    /// A full checkpoint `checkpoint_id` of job `job_id` in the canonical
    /// format, laid out as Flink lays it out: files under
    /// `<job>/chk-<id>/`, shared files under `<job>/shared/`. `file_stem`
    /// must be unique to the operator instance (`counts-0`). Set
    /// [`SnapshotTarget::format`] or [`SnapshotTarget::incremental`] for
    /// other snapshots.
    ///
    /// ```
    /// use streamstate_api::SnapshotTarget;
    /// let target = SnapshotTarget::checkpoint("job", 7, "counts-0");
    /// assert_eq!(target.exclusive_file("counts-0.kv"), "job/chk-7/counts-0.kv");
    /// ```
    pub fn checkpoint(job_id: &str, checkpoint_id: u64, file_stem: &str) -> Self {
        Self {
            checkpoint_id,
            kind: SnapshotKind::Checkpoint,
            format: SnapshotFormat::Canonical,
            incremental: false,
            base: format!("{job_id}/"),
            exclusive_dir: format!("chk-{checkpoint_id}"),
            shared_dir: "shared".into(),
            file_stem: file_stem.into(),
        }
    }

    /// The storage-root-relative path of a file in the exclusive directory.
    pub fn exclusive_file(&self, name: &str) -> String {
        format!("{}{}/{}", self.base, self.exclusive_dir, name)
    }

    /// The storage-root-relative path of a file in the shared directory.
    pub fn shared_file(&self, name: &str) -> String {
        format!("{}{}/{}", self.base, self.shared_dir, name)
    }
}

/// A file a snapshot consists of, with what restore verifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRef {
    /// In memory: relative to the storage root. In `_metadata`: relative to
    /// the manifest's base directory, so savepoints can be moved.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32C (Castagnoli) of the whole file.
    pub crc32c: u32,
}

/// What one keyed backend instance wrote for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedStateHandle {
    /// Name of the backend that wrote it (`memory`, `fs`, `rocksdb`).
    pub backend: String,
    /// Layout of `files`.
    pub format: SnapshotFormat,
    /// Key groups the snapshot covers.
    pub key_group_range: KeyGroupRange,
    /// The states, in the order the files index them.
    pub states: Vec<StateMeta>,
    /// All files the snapshot needs, including shared ones written earlier.
    pub files: Vec<FileRef>,
    /// Total bytes of `files`.
    pub full_bytes: u64,
    /// Bytes this snapshot uploaded (less than `full_bytes` when incremental).
    pub uploaded_bytes: u64,
}
