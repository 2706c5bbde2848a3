//! Flink's MemoryStateBackend cap: a snapshot over `max_state_size` fails
#![allow(clippy::unwrap_used)]
//! with both sizes named, and nothing is written.
use streamstate_api::{
    ErrorKind, KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt, SnapshotFormat, SnapshotKind, SnapshotTarget,
    StateBackend, ValueStateDescriptor,
};
use streamstate_memory::MemoryStateBackend;

fn target() -> SnapshotTarget {
    SnapshotTarget {
        checkpoint_id: 1,
        kind: SnapshotKind::Checkpoint,
        format: SnapshotFormat::Canonical,
        incremental: false,
        base: "job/".into(),
        exclusive_dir: "chk-1".into(),
        shared_dir: "shared".into(),
        file_stem: "op-0".into(),
    }
}

#[test]
fn snapshot_over_max_state_size_fails_with_both_sizes() {
    let storage = streamstate_api::CheckpointStorage::open("memory://").unwrap();
    let backend = MemoryStateBackend::with_max_state_size(10 * 1024);
    let mut keyed = backend
        .create_keyed_backend(KeyedBackendOptions::new("job", "op", KeyGroupRange::all(128), 128))
        .unwrap();
    let state = keyed.value_state(&ValueStateDescriptor::<String>::new("v")).unwrap();
    for i in 0..1000 {
        keyed.set_current_key_typed(&i).unwrap();
        state.update(keyed.as_mut(), &"x".repeat(20)).unwrap();
    }
    let err = keyed
        .snapshot(&target())
        .unwrap()
        .write(&storage, &target())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StateTooLarge);
    let message = err.to_string();
    assert!(message.contains("10240 bytes"), "names the maximum: {message}");
    assert!(message.contains("over its maximum"), "{message}");
    assert!(
        storage.list_files("job/chk-1/").unwrap().is_empty(),
        "nothing was written"
    );
}

#[test]
fn snapshot_under_max_state_size_succeeds() {
    let storage = streamstate_api::CheckpointStorage::open("memory://").unwrap();
    let backend = MemoryStateBackend::new();
    assert_eq!(backend.max_state_size(), 5 * 1024 * 1024);
    let mut keyed = backend
        .create_keyed_backend(KeyedBackendOptions::new("job", "op", KeyGroupRange::all(128), 128))
        .unwrap();
    let state = keyed.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    keyed.set_current_key_typed("k").unwrap();
    state.update(keyed.as_mut(), &1).unwrap();
    let handle = keyed.snapshot(&target()).unwrap().write(&storage, &target()).unwrap();
    assert!(handle.full_bytes < 5 * 1024 * 1024);
    assert_eq!(handle.backend, "memory");
}
