//! Restoring canonical files into the heap backend through
//! `streamstate_api::snapshot::canonical::restore_into`: records whose key does
//! not hash to the key group they were stored under are corruption (found
//! without hashing each key twice), and a restore of many keys per key
//! group (where the backend is told how many keys come and makes room for
//! them at once) gives back every key.
#![allow(clippy::unwrap_used)]

use streamstate_api::key_group::assign_to_key_group;
use streamstate_api::snapshot::canonical::{restore_into, CanonicalWriter};
use streamstate_api::{
    CheckpointStorage, ErrorKind, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend, KeyedStateHandle,
    SnapshotFormat, StateBackend, StateKind, StateMeta,
};
use streamstate_memory::MemoryStateBackend;

const MAX_PARALLELISM: u32 = 128;

/// Writes one canonical file of `state` holding `cells` (key group, key,
/// value), in that order, and returns its handle.
fn write_file(storage: &CheckpointStorage, path: &str, cells: &[(u32, Vec<u8>, Vec<u8>)]) -> KeyedStateHandle {
    let states = vec![StateMeta::new::<u64>("count", StateKind::Value)];
    let range = KeyGroupRange::all(MAX_PARALLELISM);
    let mut writer = CanonicalWriter::new(states.clone(), range, 0);
    let mut groups: Vec<u32> = cells.iter().map(|(group, _, _)| *group).collect();
    groups.dedup();
    for group in groups {
        writer.start_key_group(group).unwrap();
        for (_, key, value) in cells.iter().filter(|(g, _, _)| *g == group) {
            writer.add_cell(0, key, value).unwrap();
        }
    }
    let file = storage.write(path, writer.finish().unwrap()).unwrap();
    KeyedStateHandle {
        backend: "memory".into(),
        format: SnapshotFormat::Canonical,
        key_group_range: range,
        states,
        full_bytes: file.size,
        uploaded_bytes: file.size,
        files: vec![file],
    }
}

fn restore(
    range: KeyGroupRange,
    handle: &KeyedStateHandle,
    storage: &CheckpointStorage,
) -> streamstate_api::Result<Box<dyn KeyedStateBackend>> {
    let mut backend = MemoryStateBackend::new()
        .create_keyed_backend(KeyedBackendOptions::new("job", "op", range, MAX_PARALLELISM))
        .unwrap();
    restore_into(backend.as_mut(), std::slice::from_ref(handle), storage)?;
    Ok(backend)
}

/// A serialized key and the key group it hashes to.
fn key(n: u32) -> (u32, Vec<u8>) {
    let key = format!("key-{n}").into_bytes();
    (assign_to_key_group(&key, MAX_PARALLELISM), key)
}

#[test]
fn a_key_stored_under_another_key_group_is_corrupt() {
    let storage = CheckpointStorage::open("memory://").unwrap();
    let (group, misplaced) = key(7);
    let wrong_group = (group + 1) % MAX_PARALLELISM;
    let handle = write_file(
        &storage,
        "job/op-0",
        &[(wrong_group, misplaced, 1u64.to_le_bytes().to_vec())],
    );

    // The whole range: the key's own group is the backend's too.
    let err = restore(KeyGroupRange::all(MAX_PARALLELISM), &handle, &storage).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "stored under key group {wrong_group} hashes to key group {group}"
        )),
        "{message}"
    );
    assert!(message.contains("job/op-0"), "names the file: {message}");

    // Only the group it was stored under: the key's own group is outside
    // the backend's range, which the backend refuses; still corruption.
    let err = restore(KeyGroupRange::new(wrong_group, wrong_group), &handle, &storage).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        err.to_string().contains(&format!("hashes to key group {group}")),
        "{err}"
    );
}

#[test]
fn a_restore_of_many_keys_per_key_group_gives_back_every_key() {
    let storage = CheckpointStorage::open("memory://").unwrap();
    // ~160 keys per key group: the tables are made room for at once.
    let mut cells: Vec<(u32, Vec<u8>, Vec<u8>)> = (0..20_000)
        .map(|n| {
            let (group, key) = key(n);
            (group, key, u64::from(n).to_le_bytes().to_vec())
        })
        .collect();
    cells.sort_by_key(|(group, _, _)| *group);
    let handle = write_file(&storage, "job/op-0", &cells);

    // The whole range, and half of it (a rescaled restore reads only the
    // blocks of its groups).
    for range in [KeyGroupRange::all(MAX_PARALLELISM), KeyGroupRange::new(0, 63)] {
        let mut backend = restore(range, &handle, &storage).unwrap();
        let state = backend.register_state(&handle.states[0]).unwrap();
        let mut restored = 0;
        for (group, key, value) in &cells {
            if !range.contains(*group) {
                continue;
            }
            backend.set_current_key(key).unwrap();
            assert_eq!(backend.get(state).unwrap().as_deref(), Some(&value[..]), "key {key:?}");
            restored += 1;
        }
        let keys: usize = range
            .iter()
            .map(|g| backend.keys_in_key_group(state, g).unwrap().len())
            .sum();
        assert_eq!(keys, restored, "no key more than written, range {range:?}");
    }
}
