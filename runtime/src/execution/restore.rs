//! Restore at start: from a named checkpoint or savepoint, or from
//! `latest`, falling back to older checkpoints when one is damaged; every
//! keyed subtask restores only its key-group range.

use std::sync::Arc;

use streamstate_api::operator_state::OperatorStateStore;
use streamstate_api::{
    CheckpointStorage, CompletedSnapshot, Error, ErrorKind, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend,
    Result, StateBackend,
};

use crate::plan::{JobSettings, RestoreFrom, KEYED_OPERATOR, SOURCE_OPERATOR};

pub(crate) struct Restored {
    pub(crate) checkpoint_id: u64,
    /// URI of the snapshot restored, and how long the restore took.
    pub(crate) path: String,
    pub(crate) restore_ms: u64,
    pub(crate) keyed: Vec<Box<dyn KeyedStateBackend>>,
    pub(crate) source_stores: Vec<Option<OperatorStateStore>>,
}

pub(crate) fn keyed_options(settings: &JobSettings, job_id: &str, subtask: u32) -> KeyedBackendOptions {
    let range = KeyGroupRange::for_subtask(settings.max_parallelism, settings.parallelism, subtask);
    KeyedBackendOptions::new(job_id, KEYED_OPERATOR, range, settings.max_parallelism)
}

/// One subtask's part of a snapshot: its key-group range's keyed state and
/// its share of the sources' operator state.
pub(crate) struct SubtaskRestore {
    pub(crate) keyed: Box<dyn KeyedStateBackend>,
    pub(crate) source_store: Option<OperatorStateStore>,
}

/// Restores subtask `subtask` of both operators (the cluster's workers
/// are both) from `snapshot`.
pub(crate) fn restore_subtask(
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    job_id: &str,
    storage: &CheckpointStorage,
    snapshot: &CompletedSnapshot,
    subtask: u32,
) -> Result<SubtaskRestore> {
    check_max_parallelism(settings, snapshot)?;
    Ok(SubtaskRestore {
        keyed: restore_keyed(settings, backend, job_id, storage, snapshot, subtask)?,
        source_store: restore_source_store(storage, snapshot, settings.parallelism, subtask)?,
    })
}

fn check_max_parallelism(settings: &JobSettings, snapshot: &CompletedSnapshot) -> Result<()> {
    let manifest = &snapshot.manifest;
    if manifest.max_parallelism != settings.max_parallelism {
        return Err(Error::config(format!(
            "the snapshot was taken with max parallelism {}, the job has {}; they must be equal",
            manifest.max_parallelism, settings.max_parallelism
        ))
        .with_context("file", snapshot.dir.clone()));
    }
    Ok(())
}

/// Keyed subtask `subtask`'s key-group range, from every handle that
/// overlaps it.
fn restore_keyed(
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    job_id: &str,
    storage: &CheckpointStorage,
    snapshot: &CompletedSnapshot,
    subtask: u32,
) -> Result<Box<dyn KeyedStateBackend>> {
    let handles = snapshot
        .manifest
        .operator(KEYED_OPERATOR)
        .map(|o| o.keyed_state.as_slice())
        .unwrap_or_default();
    backend.restore_keyed_backend(keyed_options(settings, job_id, subtask), handles, storage)
}

/// Source subtask `subtask` of `parallelism`'s share of the operator state
/// (`None` when the snapshot has none).
fn restore_source_store(
    storage: &CheckpointStorage,
    snapshot: &CompletedSnapshot,
    parallelism: u32,
    subtask: u32,
) -> Result<Option<OperatorStateStore>> {
    let handles = snapshot
        .manifest
        .operator(SOURCE_OPERATOR)
        .map(|o| o.operator_state.as_slice())
        .unwrap_or_default();
    if handles.is_empty() {
        return Ok(None);
    }
    OperatorStateStore::restore(storage, handles, parallelism, subtask).map(Some)
}

pub(crate) fn restore_snapshot(
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    job_id: &str,
    source_parallelism: u32,
    storage: &CheckpointStorage,
    snapshot: &CompletedSnapshot,
) -> Result<Restored> {
    check_max_parallelism(settings, snapshot)?;
    let mut keyed = Vec::new();
    for subtask in 0..settings.parallelism {
        keyed.push(restore_keyed(settings, backend, job_id, storage, snapshot, subtask)?);
    }
    let mut source_stores = Vec::new();
    for subtask in 0..source_parallelism {
        source_stores.push(restore_source_store(storage, snapshot, source_parallelism, subtask)?);
    }
    Ok(Restored {
        checkpoint_id: snapshot.manifest.checkpoint_id,
        path: snapshot_uri(storage, &snapshot.dir),
        restore_ms: 0,
        keyed,
        source_stores,
    })
}

fn is_damage(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ChecksumMismatch | ErrorKind::NotFound | ErrorKind::Corrupt | ErrorKind::IncompatibleVersion
    )
}

/// The first of `candidates` (newest first) that `restore_one` restores,
/// skipping damaged ones with a warning (Flink's fallback to an older
/// checkpoint): `Ok(None)` without candidates, the last damage when every
/// one is damaged, any other error at once.
pub(crate) fn newest_restorable<'a, R>(
    candidates: impl IntoIterator<Item = &'a CompletedSnapshot>,
    mut restore_one: impl FnMut(&'a CompletedSnapshot) -> Result<R>,
) -> Result<Option<(&'a CompletedSnapshot, R)>> {
    let mut last_damage = None;
    for snapshot in candidates {
        match restore_one(snapshot) {
            Ok(restored) => return Ok(Some((snapshot, restored))),
            Err(e) if is_damage(&e) => {
                tracing::warn!(error = %e, checkpoint = %snapshot.dir, "checkpoint is damaged; trying the one before");
                last_damage = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    last_damage.map_or(Ok(None), Err)
}

/// `storage`'s URI joined with a snapshot directory in it.
pub(crate) fn snapshot_uri(storage: &CheckpointStorage, dir: &str) -> String {
    format!("{}/{}", storage.uri().trim_end_matches('/'), dir.trim_end_matches('/'))
}

pub(crate) fn restore(
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    storage: &CheckpointStorage,
    job_id: &str,
    source_parallelism: u32,
) -> Result<Option<Restored>> {
    match &settings.restore {
        None => Ok(None),
        Some(RestoreFrom::Snapshot { storage: from, dir }) => {
            let snapshot = from.load(dir)?;
            let path = snapshot_uri(from, &snapshot.dir);
            tracing::info!(%path, "restoring");
            let started = std::time::Instant::now();
            let mut restored = restore_snapshot(settings, backend, job_id, source_parallelism, from, &snapshot)?;
            restored.restore_ms = started.elapsed().as_millis() as u64;
            tracing::info!(%path, restore_ms = restored.restore_ms, "restored");
            Ok(Some(restored))
        }
        Some(RestoreFrom::Latest) => {
            let candidates = storage.completed_checkpoints(None)?;
            if candidates.is_empty() {
                tracing::warn!(
                    uri = storage.uri(),
                    "no completed checkpoint found; starting without state"
                );
                return Ok(None);
            }
            let found = newest_restorable(&candidates, |snapshot| {
                let started = std::time::Instant::now();
                let mut restored = restore_snapshot(settings, backend, job_id, source_parallelism, storage, snapshot)?;
                restored.restore_ms = started.elapsed().as_millis() as u64;
                Ok(restored)
            })?;
            let (_, restored) = found.ok_or_else(|| Error::new(ErrorKind::NotFound, "no restorable checkpoint"))?;
            tracing::info!(path = %restored.path, restore_ms = restored.restore_ms, "restored from latest");
            Ok(Some(restored))
        }
    }
}
