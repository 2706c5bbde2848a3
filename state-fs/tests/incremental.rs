//! Incremental checkpoints of the heap (fs) backend: delta chains in
//! `shared/`, bytes uploaded against bytes changed, periodic full files,
//! retention, and savepoints staying self-contained.
#![allow(clippy::unwrap_used)]

use streamstate_api::testkit::{checkpoint_target, commit_keyed_checkpoint, dump, StorageFixture};
use streamstate_api::{
    CheckpointStorage, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend, KeyedStateBackendExt, KeyedStateHandle,
    MapStateDescriptor, SnapshotFormat, SnapshotKind, SnapshotTarget, StateBackend, ValueStateDescriptor,
};
use streamstate_fs::FsStateBackend;

const JOB: &str = "heap";

fn target(id: u64, incremental: bool) -> SnapshotTarget {
    checkpoint_target(JOB, id, SnapshotFormat::Canonical, incremental, "op-0")
}

fn options() -> KeyedBackendOptions {
    KeyedBackendOptions::new(JOB, "op", KeyGroupRange::all(128), 128)
}

fn checkpoint(b: &mut dyn KeyedStateBackend, storage: &CheckpointStorage, id: u64) -> KeyedStateHandle {
    let t = target(id, true);
    let handle = b.snapshot(&t).unwrap().write(storage, &t).unwrap();
    commit_keyed_checkpoint(storage, JOB, id, 128, "op", vec![handle.clone()]).unwrap();
    handle
}

/// Word-count-like state: a count per word; returns the stored bytes of the
/// changed records (key + value, as a canonical record holds them).
fn count_words(b: &mut dyn KeyedStateBackend, words: impl Iterator<Item = u64>) -> u64 {
    let count = b.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
    let mut changed = std::collections::BTreeMap::new();
    for w in words {
        let word = format!("word-{w}");
        b.set_current_key_typed(&word).unwrap();
        let n = count.value(b).unwrap().unwrap_or(0) + 1;
        count.update(b, &n).unwrap();
        let record = b.current_key().len() + streamstate_api::codec::encode_value(&n).unwrap().len();
        changed.insert(word, record as u64);
    }
    changed.values().sum()
}

fn restored(storage: &CheckpointStorage, handle: &KeyedStateHandle) -> Box<dyn KeyedStateBackend> {
    FsStateBackend::new()
        .restore_keyed_backend(options(), std::slice::from_ref(handle), storage)
        .unwrap()
}

#[test]
fn a_delta_uploads_about_the_bytes_that_changed_and_restores_exactly() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let mut keyed = FsStateBackend::new().create_keyed_backend(options()).unwrap();
    count_words(keyed.as_mut(), 0..100_000);
    let first = checkpoint(keyed.as_mut(), storage, 1);
    assert_eq!(
        first.files.len(),
        1,
        "the first incremental checkpoint is one full file"
    );
    assert!(
        first.files[0].path.starts_with("heap/shared/"),
        "{}",
        first.files[0].path
    );
    assert_eq!(first.uploaded_bytes, first.full_bytes);

    // Change 1% of the keys, remove a few, add new ones.
    let mut changed_bytes = count_words(keyed.as_mut(), (0..100_000).step_by(100));
    changed_bytes += count_words(keyed.as_mut(), 100_000..100_100);
    let count = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
    for w in 200..210u64 {
        keyed.set_current_key_typed(&format!("word-{w}")).unwrap();
        changed_bytes += keyed.current_key().len() as u64;
        count.clear(keyed.as_mut()).unwrap();
    }
    let expected = dump(keyed.as_mut()).unwrap();
    let second = checkpoint(keyed.as_mut(), storage, 2);
    assert_eq!(second.files.len(), 2, "full file + one delta");
    assert_eq!(second.files[0], first.files[0], "the delta builds on the first file");
    assert_eq!(second.uploaded_bytes, second.files[1].size);
    assert_eq!(second.full_bytes, first.full_bytes + second.uploaded_bytes);
    assert!(
        second.uploaded_bytes <= 2 * changed_bytes,
        "uploaded {} bytes for {changed_bytes} bytes of changed state",
        second.uploaded_bytes
    );
    assert_eq!(dump(restored(storage, &second).as_mut()).unwrap(), expected);

    // Retention keeps every file of the chain the retained checkpoint uses.
    let report = storage.apply_retention(JOB, 1).unwrap();
    assert_eq!(report.deleted_checkpoints, vec![1]);
    let loaded = storage.load("heap/chk-2").unwrap();
    let handle = &loaded.manifest.operators[0].keyed_state[0];
    assert_eq!(dump(restored(storage, handle).as_mut()).unwrap(), expected);

    // An unchanged state gives an empty delta: a few hundred bytes of index.
    let third = checkpoint(keyed.as_mut(), storage, 3);
    assert!(
        third.uploaded_bytes < 512,
        "{} bytes for no change",
        third.uploaded_bytes
    );
}

#[test]
fn long_chains_start_over_with_a_full_file_and_old_files_go_with_retention() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let mut keyed = FsStateBackend::new().create_keyed_backend(options()).unwrap();
    let map = keyed.map_state(&MapStateDescriptor::<u64, u64>::new("m")).unwrap();
    count_words(keyed.as_mut(), 0..10_000);
    let mut lengths = Vec::new();
    let mut handles = Vec::new();
    for id in 1..=25u64 {
        // Small changes: a map key replaced, a map entry removed, counts bumped.
        keyed.set_current_key_typed(&format!("word-{id}")).unwrap();
        map.put(keyed.as_mut(), &id, &(id * 2)).unwrap();
        map.put(keyed.as_mut(), &(id + 1), &id).unwrap();
        map.remove(keyed.as_mut(), &id).unwrap();
        count_words(keyed.as_mut(), (id * 10)..(id * 10 + 5));
        let handle = checkpoint(keyed.as_mut(), storage, id);
        lengths.push(handle.files.len());
        handles.push(handle);
        let expected = dump(keyed.as_mut()).unwrap();
        assert_eq!(
            dump(restored(storage, handles.last().unwrap()).as_mut()).unwrap(),
            expected,
            "checkpoint {id}"
        );
        storage.apply_retention(JOB, 2).unwrap();
    }
    assert_eq!(lengths[..12], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1]);
    // Files of chains no retained checkpoint uses are gone; the rest remain.
    let first_full = &handles[0].files[0].path;
    assert!(!storage.exists(first_full).unwrap(), "{first_full} outlived its chain");
    for handle in &handles[23..] {
        for file in &handle.files {
            assert!(storage.exists(&file.path).unwrap(), "{} was deleted", file.path);
        }
    }
}

#[test]
fn savepoints_and_full_mode_stay_out_of_the_chain() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let mut keyed = FsStateBackend::new().create_keyed_backend(options()).unwrap();
    count_words(keyed.as_mut(), 0..1_000);
    let first = checkpoint(keyed.as_mut(), storage, 1);
    count_words(keyed.as_mut(), 0..10);
    // A full (non-incremental) checkpoint writes one exclusive file.
    let full_target = target(2, false);
    let full = keyed
        .snapshot(&full_target)
        .unwrap()
        .write(storage, &full_target)
        .unwrap();
    assert_eq!(full.files.len(), 1);
    assert!(full.files[0].path.starts_with("heap/chk-2/"), "{}", full.files[0].path);
    // A savepoint asked for incrementally is still self-contained.
    let mut savepoint_target = target(3, true);
    savepoint_target.kind = SnapshotKind::Savepoint;
    savepoint_target.base = "savepoints/".into();
    savepoint_target.exclusive_dir = "savepoint-heap-3".into();
    savepoint_target.shared_dir = "savepoint-heap-3".into();
    let savepoint = keyed
        .snapshot(&savepoint_target)
        .unwrap()
        .write(storage, &savepoint_target)
        .unwrap();
    assert_eq!(savepoint.files.len(), 1);
    assert!(savepoint.files[0].path.starts_with("savepoints/savepoint-heap-3/"));
    // The next incremental checkpoint still builds on checkpoint 1's chain.
    let expected = dump(keyed.as_mut()).unwrap();
    let next = checkpoint(keyed.as_mut(), storage, 4);
    assert_eq!(next.files.len(), 2);
    assert_eq!(next.files[0], first.files[0]);
    assert_eq!(dump(restored(storage, &next).as_mut()).unwrap(), expected);
}
