//! Incremental native checkpoints, retention of shared files, savepoints
//! across backends, and the working-directory lifecycle.
#![allow(clippy::unwrap_used)]

use streamstate_api::testkit::{checkpoint_target, commit_keyed_checkpoint, dump, StorageFixture};
use streamstate_api::{
    CheckpointStorage, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend, KeyedStateBackendExt, KeyedStateHandle,
    ListStateDescriptor, MapStateDescriptor, SnapshotFormat, SnapshotTarget, StateBackend, ValueStateDescriptor,
};
use streamstate_rocksdb::{RocksDbConfig, RocksDbStateBackend};

const JOB: &str = "rocks";

fn target(id: u64, format: SnapshotFormat, incremental: bool) -> SnapshotTarget {
    checkpoint_target(JOB, id, format, incremental, "op-0")
}

fn commit(storage: &CheckpointStorage, id: u64, handle: KeyedStateHandle) {
    commit_keyed_checkpoint(storage, JOB, id, 128, "op", vec![handle]).unwrap();
}

fn options() -> KeyedBackendOptions {
    KeyedBackendOptions::new(JOB, "op", KeyGroupRange::all(128), 128)
}

fn fill(b: &mut dyn KeyedStateBackend, from: u64, to: u64) {
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l")).unwrap();
    let m = b.map_state(&MapStateDescriptor::<u64, String>::new("m")).unwrap();
    for i in from..to {
        b.set_current_key_typed(&i).unwrap();
        v.update(b, &i).unwrap();
        l.add(b, &i).unwrap();
        m.put(b, &(i % 5), &format!("value-{i}")).unwrap();
    }
}

#[test]
fn incremental_checkpoints_upload_only_new_files_and_survive_retention() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let backend = RocksDbStateBackend::default();
    let mut keyed = backend.create(options()).unwrap();
    // Checkpoints are an interval apart, in which the flush each one starts
    // finishes; back to back, they wait for it.
    let interval = std::time::Duration::from_secs(60);
    fill(&mut keyed, 0, 50_000);
    let t1 = target(1, SnapshotFormat::Native, true);
    let first = keyed.snapshot(&t1).unwrap().write(storage, &t1).unwrap();
    commit(storage, 1, first.clone());
    assert_eq!(
        first.uploaded_bytes, first.full_bytes,
        "the first checkpoint uploads everything"
    );
    // The first checkpoint holds the 50k keys in its WAL copy (checkpoints
    // do not flush on the task thread); the flush that follows it turns
    // them into SSTs, which the second checkpoint uploads once.
    keyed.wait_for_background_flushes(interval).unwrap();
    fill(&mut keyed, 50_000, 50_100);
    let t2 = target(2, SnapshotFormat::Native, true);
    let second = keyed.snapshot(&t2).unwrap().write(storage, &t2).unwrap();
    commit(storage, 2, second.clone());
    let second_ssts: Vec<&str> = second
        .files
        .iter()
        .filter(|f| f.path.ends_with(".sst"))
        .map(|f| f.path.as_str())
        .collect();
    assert!(!second_ssts.is_empty(), "the flush after a checkpoint made SSTs");

    keyed.wait_for_background_flushes(interval).unwrap();
    fill(&mut keyed, 50_100, 50_200); // a small change
    let expected = dump(&mut keyed).unwrap();
    let t3 = target(3, SnapshotFormat::Native, true);
    let third = keyed.snapshot(&t3).unwrap().write(storage, &t3).unwrap();
    commit(storage, 3, third.clone());

    let reused = third
        .files
        .iter()
        .filter(|f| second_ssts.contains(&f.path.as_str()))
        .count();
    assert_eq!(
        reused,
        second_ssts.len(),
        "the third checkpoint references the SSTs of the second"
    );
    // RocksDB's OPTIONS file is shared too: written once per file number,
    // never changed, so the third checkpoint references the second's.
    let options_file = |handle: &KeyedStateHandle| {
        handle
            .files
            .iter()
            .find(|f| f.path.contains("~OPTIONS-"))
            .cloned()
            .expect("a native checkpoint holds RocksDB's OPTIONS file")
    };
    assert!(options_file(&second).path.contains("/shared/"));
    assert_eq!(
        options_file(&third),
        options_file(&second),
        "the OPTIONS file is uploaded once"
    );
    let new_bytes: u64 = third
        .files
        .iter()
        .filter(|f| !second.files.contains(f))
        .map(|f| f.size)
        .sum();
    assert_eq!(
        third.uploaded_bytes, new_bytes,
        "only files not uploaded before were uploaded"
    );
    assert!(
        third.uploaded_bytes * 4 < second.full_bytes,
        "a small change uploads little: {} of {}",
        third.uploaded_bytes,
        second.full_bytes
    );

    // Retention removes checkpoints 1 and 2 but not the shared SSTs 3
    // references.
    let report = storage.apply_retention(JOB, 1).unwrap();
    assert_eq!(report.deleted_checkpoints, vec![1, 2]);
    for file in &third.files {
        assert!(
            storage.exists(&file.path).unwrap(),
            "{} must survive retention",
            file.path
        );
    }
    let loaded = storage.load("rocks/chk-3").unwrap();
    let mut restored = backend
        .restore_keyed_backend(options(), &loaded.manifest.operators[0].keyed_state, storage)
        .unwrap();
    assert_eq!(dump(restored.as_mut()).unwrap(), expected);
}

#[test]
fn full_mode_uploads_everything_every_time() {
    let fixture = StorageFixture::local_dir();
    let backend = RocksDbStateBackend::default();
    let mut keyed = backend.create_keyed_backend(options()).unwrap();
    fill(keyed.as_mut(), 0, 10_000);
    let t1 = target(1, SnapshotFormat::Native, false);
    let first = keyed.snapshot(&t1).unwrap().write(&fixture.storage, &t1).unwrap();
    let t2 = target(2, SnapshotFormat::Native, false);
    let second = keyed.snapshot(&t2).unwrap().write(&fixture.storage, &t2).unwrap();
    assert_eq!(second.uploaded_bytes, second.full_bytes);
    assert!(
        second.files.iter().all(|f| f.path.contains("/chk-2/")),
        "no shared files in full mode"
    );
    assert!(first.files.iter().all(|f| !f.path.contains("/shared/")));
}

fn savepoint(b: &mut dyn KeyedStateBackend, storage: &CheckpointStorage) -> KeyedStateHandle {
    let t = target(9, SnapshotFormat::Canonical, false);
    b.snapshot(&t).unwrap().write(storage, &t).unwrap()
}

#[test]
fn savepoint_from_memory_restores_into_rocksdb_and_back() {
    let fixture = StorageFixture::local_dir();
    let memory = streamstate_memory::MemoryStateBackend::with_max_state_size(64 << 20);
    let rocks = RocksDbStateBackend::default();
    let mut source = memory.create_keyed_backend(options()).unwrap();
    fill(source.as_mut(), 0, 2_000);
    let expected = dump(source.as_mut()).unwrap();

    let handle = savepoint(source.as_mut(), &fixture.storage);
    let mut in_rocks = rocks
        .restore_keyed_backend(options(), &[handle], &fixture.storage)
        .unwrap();
    assert_eq!(dump(in_rocks.as_mut()).unwrap(), expected, "memory -> rocksdb");

    let back = savepoint(in_rocks.as_mut(), &fixture.storage);
    assert_eq!(back.format, SnapshotFormat::Canonical);
    let mut in_memory = memory
        .restore_keyed_backend(options(), &[back], &fixture.storage)
        .unwrap();
    assert_eq!(dump(in_memory.as_mut()).unwrap(), expected, "rocksdb -> memory");
}

#[test]
fn native_snapshot_rescales_from_two_instances_into_one_and_into_four() {
    let fixture = StorageFixture::local_dir();
    let rocks = RocksDbStateBackend::default();
    let mut handles = Vec::new();
    let mut expected = streamstate_api::testkit::StateDump::new();
    for i in 0..2 {
        let range = KeyGroupRange::for_subtask(128, 2, i);
        let mut b = rocks
            .create_keyed_backend(KeyedBackendOptions::new(JOB, "op", range, 128))
            .unwrap();
        let v = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
        for k in 0..3_000u64 {
            let key = streamstate_api::codec::encode_value(&k).unwrap();
            if range.contains(streamstate_api::key_group::assign_to_key_group(&key, 128)) {
                b.set_current_key(&key).unwrap();
                v.update(b.as_mut(), &(k * 3)).unwrap();
            }
        }
        expected.extend(dump(b.as_mut()).unwrap());
        let mut t = target(1, SnapshotFormat::Native, true);
        t.file_stem = format!("op-{i}");
        handles.push(b.snapshot(&t).unwrap().write(&fixture.storage, &t).unwrap());
    }
    let mut one = rocks
        .restore_keyed_backend(options(), &handles, &fixture.storage)
        .unwrap();
    assert_eq!(dump(one.as_mut()).unwrap(), expected);
    let mut union = streamstate_api::testkit::StateDump::new();
    for i in 0..4 {
        let range = KeyGroupRange::for_subtask(128, 4, i);
        let mut part = rocks
            .restore_keyed_backend(
                KeyedBackendOptions::new(JOB, "op", range, 128),
                &handles,
                &fixture.storage,
            )
            .unwrap();
        union.extend(dump(part.as_mut()).unwrap());
    }
    assert_eq!(union, expected);
}

#[test]
fn working_directories_are_removed_on_drop_and_stale_ones_cleaned() {
    let root = tempfile::tempdir().unwrap();
    // A directory left by a process that no longer exists.
    let stale = root.path().join("999999999_0_job_op_0");
    std::fs::create_dir_all(stale.join("db")).unwrap();
    let backend = RocksDbStateBackend::new(RocksDbConfig {
        local_dir: Some(root.path().to_path_buf()),
        ..RocksDbConfig::default()
    });
    let keyed = backend.create_keyed_backend(options()).unwrap();
    assert!(!stale.exists(), "the dead process's directory is removed, not reused");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    drop(keyed);
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "clean shutdown removes the directory"
    );
}

/// Removes the value of every seventh key in `0..to`: removals the
/// write-back cache holds as dirty entries.
fn remove_some(b: &mut dyn KeyedStateBackend, to: u64) {
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    for i in (0..to).step_by(7) {
        b.set_current_key_typed(&i).unwrap();
        v.clear(b).unwrap();
    }
}

fn pending_cells_file(handle: &KeyedStateHandle) -> Option<&streamstate_api::FileRef> {
    handle
        .files
        .iter()
        .find(|f| f.path.ends_with("~streamstate-pending-cells"))
}

#[test]
fn dirty_cells_travel_in_a_pending_cells_file_and_restore_with_or_without_a_cache() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let rocks = RocksDbStateBackend::default();
    let mut keyed = rocks.create_keyed_backend(options()).unwrap();
    fill(keyed.as_mut(), 0, 2_000);
    remove_some(keyed.as_mut(), 2_000);
    let expected = dump(keyed.as_mut()).unwrap();
    let t = target(1, SnapshotFormat::Native, true);
    let handle = keyed.snapshot(&t).unwrap().write(storage, &t).unwrap();
    assert!(
        pending_cells_file(&handle).is_some(),
        "cached writes must travel with the checkpoint: {:?}",
        handle.files
    );
    // The snapshot left the cells dirty: the backend goes on unchanged.
    assert_eq!(dump(keyed.as_mut()).unwrap(), expected);

    let mut same = rocks
        .restore_keyed_backend(options(), std::slice::from_ref(&handle), storage)
        .unwrap();
    assert_eq!(dump(same.as_mut()).unwrap(), expected, "into a cache");
    let uncached = RocksDbStateBackend::new(RocksDbConfig {
        write_back_entries: 0,
        ..RocksDbConfig::default()
    });
    let mut direct = uncached
        .restore_keyed_backend(options(), std::slice::from_ref(&handle), storage)
        .unwrap();
    assert_eq!(dump(direct.as_mut()).unwrap(), expected, "straight into RocksDB");
    let mut union = streamstate_api::testkit::StateDump::new();
    for i in 0..3 {
        let range = KeyGroupRange::for_subtask(128, 3, i);
        let mut part = rocks
            .restore_keyed_backend(
                KeyedBackendOptions::new(JOB, "op", range, 128),
                std::slice::from_ref(&handle),
                storage,
            )
            .unwrap();
        union.extend(dump(part.as_mut()).unwrap());
    }
    assert_eq!(union, expected, "rescaled to three");

    // Without a cache nothing is pending, and no such file is written.
    let mut plain = uncached.create_keyed_backend(options()).unwrap();
    fill(plain.as_mut(), 0, 100);
    let t2 = target(2, SnapshotFormat::Native, true);
    let plain_handle = plain.snapshot(&t2).unwrap().write(storage, &t2).unwrap();
    assert!(pending_cells_file(&plain_handle).is_none());
}

#[test]
fn a_malformed_pending_cells_file_fails_the_restore_naming_it() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let rocks = RocksDbStateBackend::default();
    let mut keyed = rocks.create_keyed_backend(options()).unwrap();
    fill(keyed.as_mut(), 0, 300);
    let t = target(1, SnapshotFormat::Native, false);
    let handle = keyed.snapshot(&t).unwrap().write(storage, &t).unwrap();
    let original = pending_cells_file(&handle).unwrap().clone();
    let bytes = storage.read(&original.path).unwrap();

    // Each replacement carries a valid checksum: decoding must catch it.
    let unknown_state = {
        let mut b = b"SSPCELL1\x01\x04nope".to_vec();
        b.extend_from_slice(b"\x00\x03\x00\x01k\x01\x01\x07");
        b
    };
    let cases = [
        ("truncated", bytes[..bytes.len() - 1].to_vec(), "pending-cells"),
        ("unknown state", unknown_state, "state nope the checkpoint lacks"),
        ("wrong header", b"NOTCELLS".to_vec(), "pending-cells"),
    ];
    for (what, replacement, expected_text) in cases {
        let path = format!("{JOB}/chk-1/{what}~streamstate-pending-cells").replace(' ', "-");
        let file = storage.write(&path, replacement).unwrap();
        let mut broken = handle.clone();
        broken.files.retain(|f| f.path != original.path);
        broken.files.push(file);
        let err = rocks
            .restore_keyed_backend(options(), &[broken], storage)
            .expect_err(what);
        assert_eq!(err.kind(), streamstate_api::ErrorKind::Corrupt, "{what}: {err}");
        let text = err.to_string();
        assert!(text.contains(expected_text) && text.contains(&path), "{what}: {text}");
    }
}

/// The RocksDB checkpoint of a native snapshot is made on a thread of its
/// own while the task thread goes on: writes made meanwhile (cached ones
/// beyond the cache's limits, map puts, which bypass it, and a new state)
/// must wait for it and never reach the snapshot.
#[test]
fn writes_after_a_native_snapshot_never_reach_its_rocksdb_checkpoint() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    // 64 cached keys: the writes below go far past what the cache holds
    // back while the checkpoint is made.
    let rocks = RocksDbStateBackend::new(RocksDbConfig {
        write_back_entries: 64,
        ..RocksDbConfig::default()
    });
    let mut keyed = rocks.create_keyed_backend(options()).unwrap();
    fill(keyed.as_mut(), 0, 500);
    remove_some(keyed.as_mut(), 500);
    for round in 1..=3u64 {
        let expected = dump(keyed.as_mut()).unwrap();
        let t = target(round, SnapshotFormat::Native, true);
        let pending = keyed.snapshot(&t).unwrap();
        // Overwrite every key, add new ones, and register a state (a new
        // column family) before the asynchronous phase even starts: cached
        // writes first (values only), then lists and maps.
        let v = keyed.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
        for i in 0..1_000 * round {
            keyed.set_current_key_typed(&i).unwrap();
            v.update(keyed.as_mut(), &(i + round)).unwrap();
        }
        fill(keyed.as_mut(), 0, 1_000 * round);
        let extra = keyed
            .value_state(&ValueStateDescriptor::<u64>::new(format!("extra-{round}")))
            .unwrap();
        keyed.set_current_key_typed(&7u64).unwrap();
        extra.update(keyed.as_mut(), &round).unwrap();
        let handle = pending.write(storage, &t).unwrap();
        let mut restored = rocks
            .restore_keyed_backend(options(), std::slice::from_ref(&handle), storage)
            .unwrap();
        assert_eq!(
            dump(restored.as_mut()).unwrap(),
            expected,
            "snapshot {round} holds the state at its synchronous phase"
        );
        assert_ne!(
            dump(keyed.as_mut()).unwrap(),
            expected,
            "the live backend kept the later writes"
        );
    }
}

/// A snapshot dropped before its asynchronous phase (a cancelled job)
/// leaves no directory behind, even while its checkpoint is still being
/// made.
#[test]
fn a_native_snapshot_dropped_unwritten_leaves_no_directory() {
    let root = tempfile::tempdir().unwrap();
    let backend = RocksDbStateBackend::new(RocksDbConfig {
        local_dir: Some(root.path().to_path_buf()),
        ..RocksDbConfig::default()
    });
    let mut keyed = backend.create_keyed_backend(options()).unwrap();
    fill(keyed.as_mut(), 0, 300);
    for id in 1..=3 {
        let t = target(id, SnapshotFormat::Native, false);
        drop(keyed.snapshot(&t).unwrap());
        fill(keyed.as_mut(), 0, 300);
    }
    let t = target(4, SnapshotFormat::Native, false);
    drop(keyed.snapshot(&t).unwrap());
    drop(keyed);
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
