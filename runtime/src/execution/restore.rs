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
    pub(crate) keyed: Vec<Box<dyn KeyedStateBackend>>,
    pub(crate) source_stores: Vec<Option<OperatorStateStore>>,
}

pub(crate) fn keyed_options(settings: &JobSettings, job_id: &str, subtask: u32) -> KeyedBackendOptions {
    let range = KeyGroupRange::for_subtask(settings.max_parallelism, settings.parallelism, subtask);
    KeyedBackendOptions::new(job_id, KEYED_OPERATOR, range, settings.max_parallelism)
}

pub(crate) fn restore_snapshot(
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    job_id: &str,
    source_parallelism: u32,
    storage: &CheckpointStorage,
    snapshot: &CompletedSnapshot,
) -> Result<Restored> {
    let manifest = &snapshot.manifest;
    if manifest.max_parallelism != settings.max_parallelism {
        return Err(Error::config(format!(
            "the snapshot was taken with max parallelism {}, the job has {}; they must be equal",
            manifest.max_parallelism, settings.max_parallelism
        ))
        .with_context("file", snapshot.dir.clone()));
    }
    let handles = manifest
        .operator(KEYED_OPERATOR)
        .map(|o| o.keyed_state.clone())
        .unwrap_or_default();
    let mut keyed = Vec::new();
    for subtask in 0..settings.parallelism {
        keyed.push(backend.restore_keyed_backend(keyed_options(settings, job_id, subtask), &handles, storage)?);
    }
    let op_handles = manifest
        .operator(SOURCE_OPERATOR)
        .map(|o| o.operator_state.clone())
        .unwrap_or_default();
    let mut source_stores = Vec::new();
    for subtask in 0..source_parallelism {
        source_stores.push(if op_handles.is_empty() {
            None
        } else {
            Some(OperatorStateStore::restore(
                storage,
                &op_handles,
                source_parallelism,
                subtask,
            )?)
        });
    }
    Ok(Restored {
        checkpoint_id: manifest.checkpoint_id,
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
            let path = format!("{}/{}", from.uri(), snapshot.dir);
            tracing::info!(%path, "restoring");
            let started = std::time::Instant::now();
            let restored = restore_snapshot(settings, backend, job_id, source_parallelism, from, &snapshot)?;
            tracing::info!(%path, restore_ms = started.elapsed().as_millis() as u64, "restored");
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
            let mut last_error = None;
            for snapshot in candidates {
                let started = std::time::Instant::now();
                match restore_snapshot(settings, backend, job_id, source_parallelism, storage, &snapshot) {
                    Ok(restored) => {
                        tracing::info!(
                            path = %format!("{}/{}", storage.uri(), snapshot.dir),
                            restore_ms = started.elapsed().as_millis() as u64,
                            "restored from latest"
                        );
                        return Ok(Some(restored));
                    }
                    Err(e) if is_damage(&e) => {
                        tracing::warn!(error = %e, checkpoint = %snapshot.dir, "checkpoint is damaged; trying the one before");
                        last_error = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last_error.unwrap_or_else(|| Error::new(ErrorKind::NotFound, "no restorable checkpoint")))
        }
    }
}
