//! Flink's checkpoint directories on an [`AsyncCheckpointStorage`]: the
//! commit protocol (`_metadata` last, atomically), loading a snapshot,
//! listing, `latest`, and carrying out retention ([`super::retention`]
//! plans it).

use super::retention::{self, CheckpointEntry};
use super::{layout, AsyncCheckpointStorage};
use crate::handle::SnapshotKind;
use crate::snapshot::manifest::{SnapshotManifest, MAX_MANIFEST_LEN, METADATA_FILE};
use crate::{Error, ErrorKind, Result};

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

impl AsyncCheckpointStorage {
    /// Commits a snapshot by writing its `_metadata`, atomically and last.
    /// Every file it names must already be written.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI; [`ErrorKind::InvalidArgument`]
    /// when a file lies outside the snapshot's base.
    pub async fn commit(&self, manifest: &SnapshotManifest) -> Result<CompletedSnapshot> {
        layout::validate_job_id(&manifest.job_id)?;
        let dir = snapshot_dir(manifest);
        let (base, _) = manifest_base(&dir, manifest.kind)?;
        let json = manifest.to_json(&base)?;
        self.write_atomic(&format!("{dir}{METADATA_FILE}"), json).await?;
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
    pub async fn load(&self, dir: &str) -> Result<CompletedSnapshot> {
        let dir = layout::normalize_dir(dir)?;
        let path = format!("{dir}{METADATA_FILE}");
        let kind = if dir.starts_with(&format!("{}/", layout::SAVEPOINTS_DIR)) {
            SnapshotKind::Savepoint
        } else {
            SnapshotKind::Checkpoint
        };
        let len = self.stat_len(&path).await.map_err(|e| {
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
        let bytes = self.read(&path).await?;
        let (base, roots) = manifest_base(&dir, kind)?;
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
    pub async fn list_jobs(&self) -> Result<Vec<String>> {
        Ok(self
            .list_dirs("")
            .await?
            .into_iter()
            .filter(|d| layout::validate_job_id(d).is_ok())
            .collect())
    }

    /// Every checkpoint directory of `job_id`, complete or not, by id.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI.
    pub async fn list_checkpoints(&self, job_id: &str) -> Result<Vec<SnapshotListing>> {
        let job = layout::job_dir(job_id);
        let mut listings = Vec::new();
        for name in self.list_dirs(&job).await? {
            if let Some(id) = layout::parse_checkpoint_dir_name(&name) {
                let dir = format!("{job}{name}/");
                let complete = self.exists(&format!("{dir}{METADATA_FILE}")).await?;
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
    pub async fn completed_checkpoints(&self, job_id: Option<&str>) -> Result<Vec<CompletedSnapshot>> {
        let jobs = match job_id {
            Some(job) => vec![job.to_owned()],
            None => self.list_jobs().await?,
        };
        let mut completed = Vec::new();
        for job in jobs {
            for listing in self.list_checkpoints(&job).await?.into_iter().filter(|l| l.complete) {
                match self.load(&listing.dir).await {
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
    pub async fn latest_completed(&self, job_id: Option<&str>) -> Result<Option<CompletedSnapshot>> {
        Ok(self.completed_checkpoints(job_id).await?.into_iter().next())
    }

    /// Keeps the newest `retain` completed checkpoints of `job_id` and
    /// deletes older ones, plus shared files only they referenced. Decides
    /// everything first ([`retention::plan_retention`]), then deletes; never
    /// deletes anything before a checkpoint has been committed.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI; files deleted before the error
    /// were not referenced by any retained checkpoint.
    pub async fn apply_retention(&self, job_id: &str, retain: usize) -> Result<RetentionReport> {
        let job = layout::job_dir(job_id);
        let mut entries = Vec::new();
        for listing in self.list_checkpoints(job_id).await? {
            let referenced_files = if listing.complete {
                match self.load(&listing.dir).await {
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
            self.delete_dir(&layout::checkpoint_dir(job_id, *id)).await?;
        }
        for file in &plan.delete_shared_files {
            self.delete(file).await?;
        }
        Ok(RetentionReport {
            deleted_checkpoints: plan.delete_checkpoints,
            deleted_shared_files: plan.delete_shared_files,
        })
    }
}
