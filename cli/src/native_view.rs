//! A single canonical file for a native (backend-specific) keyed-state
//! snapshot or an incremental chain, so `checkpoints inspect` reads RocksDB
//! checkpoints and heap delta chains the way it reads full canonical ones:
//! the backend that wrote the handle restores it (into a scratch working
//! directory for RocksDB) and writes a full canonical snapshot of it to an
//! in-memory store, which is then read like any other.

use anyhow::{Context, Result};
use streamstate_api::{
    CheckpointStorage, KeyedBackendOptions, KeyedStateHandle, SnapshotFormat, SnapshotKind, SnapshotTarget,
};
use streamstate_runtime::backends::{state_backend_with, BackendConfig, StateBackendKind};

/// The canonical copy of one native handle and the in-memory storage that
/// holds its files.
pub struct CanonicalCopy {
    pub storage: CheckpointStorage,
    pub handle: KeyedStateHandle,
}

/// Converts `handle` (stored in `storage`) to one full canonical file.
///
/// # Errors
/// The backend named by the handle is not compiled in, its files are
/// missing or corrupt, or the conversion fails.
pub fn canonical_copy(
    handle: &KeyedStateHandle,
    storage: &CheckpointStorage,
    max_parallelism: u32,
) -> Result<CanonicalCopy> {
    let kind: StateBackendKind = handle.backend.parse()?;
    let backend = state_backend_with(kind, &BackendConfig::default()).with_context(|| {
        format!(
            "a {} native snapshot needs the {} backend to be read; build streamstate with it",
            handle.backend, handle.backend
        )
    })?;
    let options = KeyedBackendOptions::new("inspect", "inspect", handle.key_group_range, max_parallelism);
    let mut restored = backend
        .restore_keyed_backend(options, std::slice::from_ref(handle), storage)
        .with_context(|| {
            format!(
                "cannot read the {} snapshot of key groups {}",
                handle.backend, handle.key_group_range
            )
        })?;
    let scratch = CheckpointStorage::open("memory://")?;
    let target = SnapshotTarget {
        checkpoint_id: 0,
        kind: SnapshotKind::Savepoint,
        format: SnapshotFormat::Canonical,
        incremental: false,
        base: String::new(),
        exclusive_dir: "inspect".into(),
        shared_dir: "shared".into(),
        file_stem: "keyed".into(),
    };
    let handle = restored.snapshot(&target)?.write(&scratch, &target)?;
    Ok(CanonicalCopy {
        storage: scratch,
        handle,
    })
}
