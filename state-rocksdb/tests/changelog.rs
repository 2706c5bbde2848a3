//! Changelog checkpoints (`RocksDbConfig::changelog`): a base, then
//! segments of the writes since the checkpoint before; restores of every
//! checkpoint of the chain, at the same and at another parallelism; uploads
//! that fail, never run or finish out of order; a new base after
//! `MAX_SEGMENTS`.
#![allow(clippy::unwrap_used)]

use streamstate_api::testkit::{checkpoint_target, dump, StateDump, StorageFixture};
use streamstate_api::{
    CheckpointStorage, ErrorKind, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend, KeyedStateBackendExt,
    KeyedStateHandle, ListStateDescriptor, MapStateDescriptor, SnapshotFormat, SnapshotKind, SnapshotTarget,
    StateBackend, ValueStateDescriptor,
};
use streamstate_rocksdb::changelog::MAX_SEGMENTS;
use streamstate_rocksdb::{RocksDbConfig, RocksDbStateBackend};

const JOB: &str = "changelog";
const MAX_PARALLELISM: u32 = 128;

fn target(id: u64) -> SnapshotTarget {
    checkpoint_target(JOB, id, SnapshotFormat::Native, true, "op-0")
}

fn options(range: KeyGroupRange) -> KeyedBackendOptions {
    KeyedBackendOptions::new(JOB, "op", range, MAX_PARALLELISM)
}

/// Changelog checkpoints with the default write-back cache, or with the
/// cache off (every write goes around it, into the log).
fn backend(write_back_entries: usize) -> RocksDbStateBackend {
    RocksDbStateBackend::new(RocksDbConfig {
        changelog: true,
        write_back_entries,
        ..RocksDbConfig::default()
    })
}

/// A keyed backend of `rocks` owning every key group.
fn whole_range(rocks: &RocksDbStateBackend) -> Box<dyn KeyedStateBackend> {
    rocks
        .create_keyed_backend(options(KeyGroupRange::all(MAX_PARALLELISM)))
        .unwrap()
}

/// Writes every kind of state for keys `from..to`: a value, a list append,
/// a map put; every tenth key's map is cleared and every fifth key's value
/// removed, so removals and range removals are in the log too. (Not more
/// clears: RocksDB reads slow down with every range tombstone in a
/// memtable.)
fn write_round(b: &mut dyn KeyedStateBackend, from: u64, to: u64, round: u64) {
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l")).unwrap();
    let m = b.map_state(&MapStateDescriptor::<u64, String>::new("m")).unwrap();
    for i in from..to {
        b.set_current_key_typed(&i).unwrap();
        v.update(b, &(i * 1000 + round)).unwrap();
        l.add(b, &round).unwrap();
        m.put(b, &(round % 4), &format!("r{round}-{i}")).unwrap();
        if i % 10 == round % 10 {
            m.clear(b).unwrap();
            m.put(b, &9, &format!("after-clear-{round}")).unwrap();
        }
        if i % 5 == round % 5 {
            v.clear(b).unwrap();
        }
    }
}

fn checkpoint(keyed: &mut dyn KeyedStateBackend, storage: &CheckpointStorage, id: u64) -> KeyedStateHandle {
    let t = target(id);
    keyed.snapshot(&t).unwrap().write(storage, &t).unwrap()
}

/// The changelog segments `handle` references, in order: each one's
/// stored name up to its piece number (its files, one per state written,
/// share it). Piece 0 is not one: it is a base's pending cells.
fn segments(handle: &KeyedStateHandle) -> Vec<&str> {
    const PREFIX: &str = "streamstate-changelog-";
    let mut pieces: Vec<&str> = handle
        .files
        .iter()
        .filter_map(|f| {
            let at = f.path.find(PREFIX)? + PREFIX.len();
            let piece = f.path.get(at..at + 12)?;
            (piece != "000000000000").then(|| &f.path[..at + 12])
        })
        .collect();
    pieces.dedup();
    pieces
}

/// Restores `handle` at `parallelism` and returns what all subtasks hold.
fn restore(
    backend: &RocksDbStateBackend,
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
    parallelism: u32,
) -> StateDump {
    let mut union = StateDump::new();
    for subtask in 0..parallelism {
        let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, parallelism, subtask);
        let mut part = backend
            .restore_keyed_backend(options(range), std::slice::from_ref(handle), storage)
            .unwrap();
        union.extend(dump(part.as_mut()).unwrap());
    }
    union
}

#[test]
fn segments_hold_the_writes_since_the_checkpoint_before_and_restore_exactly() {
    for write_back_entries in [streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES, 0] {
        let fixture = StorageFixture::local_dir();
        let storage = &fixture.storage;
        let rocks = backend(write_back_entries);
        let mut keyed = whole_range(&rocks);
        write_round(keyed.as_mut(), 0, 3_000, 0);
        let base = checkpoint(keyed.as_mut(), storage, 1);
        assert!(segments(&base).is_empty(), "the first checkpoint is a base");
        assert_eq!(
            base.files
                .iter()
                .any(|f| f.path.contains("streamstate-changelog-000000000000-")),
            write_back_entries > 0,
            "a base's pending cells (none with the cache off) are the SSTs of its piece 0: {:?}",
            base.files
        );
        assert!(
            base.files.iter().all(|f| f.path.contains("/shared/")),
            "later checkpoints reference every file of a base: {:?}",
            base.files
        );
        let mut previous = base.clone();
        for round in 1..=MAX_SEGMENTS as u64 {
            // 60 keys of 3,000 change: 2% of the state; keys 0..10 change
            // in every round, so only segments applied in order restore
            // their last values (and their lists' order).
            write_round(keyed.as_mut(), round * 60, round * 60 + 60, round);
            write_round(keyed.as_mut(), 0, 10, round);
            let expected = dump(keyed.as_mut()).unwrap();
            let handle = checkpoint(keyed.as_mut(), storage, round + 1);
            assert_eq!(
                segments(&handle).len(),
                round as usize,
                "one more segment: {:?}",
                handle.files
            );
            assert_eq!(
                handle.files[..previous.files.len()],
                previous.files[..],
                "a segment checkpoint references the chain before it"
            );
            let new_files = &handle.files[previous.files.len()..];
            assert_eq!(new_files.len(), 3, "one SST per state written: {new_files:?}");
            assert_eq!(
                handle.uploaded_bytes,
                new_files.iter().map(|f| f.size).sum::<u64>(),
                "only the segment is uploaded"
            );
            assert!(
                handle.uploaded_bytes * 20 < base.full_bytes,
                "a 2% change uploads far less than the state: {} of {} bytes",
                handle.uploaded_bytes,
                base.full_bytes
            );
            assert_eq!(
                restore(&rocks, storage, &handle, 1),
                expected,
                "round {round}, cache {write_back_entries}"
            );
            if round % 4 == 0 {
                assert_eq!(
                    restore(&rocks, storage, &handle, 3),
                    expected,
                    "round {round} at parallelism 3"
                );
            }
            previous = handle;
        }
        // The chain is full: the next checkpoint is a new base.
        write_round(keyed.as_mut(), 0, 50, 99);
        let expected = dump(keyed.as_mut()).unwrap();
        let rebased = checkpoint(keyed.as_mut(), storage, 100);
        assert!(
            segments(&rebased).is_empty(),
            "after {MAX_SEGMENTS} segments comes a base"
        );
        assert_eq!(restore(&rocks, storage, &rebased, 1), expected);
        // The backend goes on unchanged by all of it.
        assert_eq!(dump(keyed.as_mut()).unwrap(), expected);
    }
}

#[test]
fn a_segment_holds_the_writes_of_checkpoints_whose_uploads_never_finished() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let rocks = backend(streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES);
    let mut keyed = whole_range(&rocks);
    write_round(keyed.as_mut(), 0, 2_000, 0);
    checkpoint(keyed.as_mut(), storage, 1);

    // Checkpoint 2's upload never runs (its job failed, say).
    write_round(keyed.as_mut(), 0, 100, 1);
    drop(keyed.snapshot(&target(2)).unwrap());
    write_round(keyed.as_mut(), 100, 200, 2);
    let expected = dump(keyed.as_mut()).unwrap();
    let third = checkpoint(keyed.as_mut(), storage, 3);
    assert_eq!(segments(&third).len(), 1);
    assert_eq!(
        restore(&rocks, storage, &third, 1),
        expected,
        "checkpoint 3 holds checkpoint 2's writes too"
    );

    // Checkpoints 4 and 5 upload out of order: 5 holds 4's writes, and 4,
    // finishing last, does not replace the chain 5 published.
    write_round(keyed.as_mut(), 200, 300, 4);
    let t4 = target(4);
    let fourth = keyed.snapshot(&t4).unwrap();
    write_round(keyed.as_mut(), 300, 400, 5);
    let expected5 = dump(keyed.as_mut()).unwrap();
    let fifth = checkpoint(keyed.as_mut(), storage, 5);
    let fourth = fourth.write(storage, &t4).unwrap();
    assert_eq!(restore(&rocks, storage, &fifth, 1), expected5);
    assert!(restore(&rocks, storage, &fourth, 1) != expected5, "4 lacks 5's writes");
    write_round(keyed.as_mut(), 400, 500, 6);
    let expected6 = dump(keyed.as_mut()).unwrap();
    let sixth = checkpoint(keyed.as_mut(), storage, 6);
    assert_eq!(
        segments(&sixth),
        [segments(&fifth), vec![segments(&sixth).last().unwrap()]].concat(),
        "6 extends the chain of 5"
    );
    assert_eq!(restore(&rocks, storage, &sixth, 1), expected6);
}

#[test]
fn a_checkpoint_before_its_base_is_uploaded_is_a_base_too() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let rocks = backend(streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES);
    let mut keyed = whole_range(&rocks);
    write_round(keyed.as_mut(), 0, 1_000, 0);
    let t1 = target(1);
    let first = keyed.snapshot(&t1).unwrap();
    write_round(keyed.as_mut(), 0, 100, 1);
    let second = checkpoint(keyed.as_mut(), storage, 2);
    assert!(segments(&second).is_empty(), "no published chain to extend");
    first.write(storage, &t1).unwrap();
    write_round(keyed.as_mut(), 100, 200, 2);
    let expected = dump(keyed.as_mut()).unwrap();
    let third = checkpoint(keyed.as_mut(), storage, 3);
    assert_eq!(segments(&third).len(), 1, "3 extends the newer base, 2");
    assert!(third.files.iter().any(|f| second.files.contains(f)));
    assert_eq!(restore(&rocks, storage, &third, 1), expected);
}

#[test]
fn a_state_registered_after_the_base_is_restored_from_its_segment() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let rocks = backend(streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES);
    let mut keyed = whole_range(&rocks);
    write_round(keyed.as_mut(), 0, 1_000, 0);
    checkpoint(keyed.as_mut(), storage, 1);
    let late = keyed
        .as_mut()
        .value_state(&ValueStateDescriptor::<String>::new("late"))
        .unwrap();
    for i in 0..50u64 {
        keyed.set_current_key_typed(&i).unwrap();
        late.update(keyed.as_mut(), &format!("late-{i}")).unwrap();
    }
    let expected = dump(keyed.as_mut()).unwrap();
    let second = checkpoint(keyed.as_mut(), storage, 2);
    assert_eq!(segments(&second).len(), 1);
    assert_eq!(restore(&rocks, storage, &second, 1), expected);
    assert_eq!(restore(&rocks, storage, &second, 2), expected);
}

#[test]
fn savepoints_and_full_checkpoints_leave_the_changelog_alone() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let rocks = backend(streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES);
    let mut keyed = whole_range(&rocks);
    write_round(keyed.as_mut(), 0, 1_000, 0);
    checkpoint(keyed.as_mut(), storage, 1);
    write_round(keyed.as_mut(), 0, 100, 1);
    // A native savepoint and a full checkpoint in between: both copy the
    // cache's dirty cells, neither may take them from the changelog.
    for (id, kind, incremental) in [(2, SnapshotKind::Savepoint, true), (3, SnapshotKind::Checkpoint, false)] {
        let t = SnapshotTarget {
            kind,
            incremental,
            ..target(id)
        };
        let handle = keyed.snapshot(&t).unwrap().write(storage, &t).unwrap();
        assert!(segments(&handle).is_empty());
    }
    write_round(keyed.as_mut(), 100, 200, 2);
    let expected = dump(keyed.as_mut()).unwrap();
    let fourth = checkpoint(keyed.as_mut(), storage, 4);
    assert_eq!(segments(&fourth).len(), 1);
    assert_eq!(restore(&rocks, storage, &fourth, 1), expected);
}

#[test]
fn a_damaged_segment_or_one_of_an_unknown_state_fails_the_restore_naming_it() {
    let fixture = StorageFixture::local_dir();
    let storage = &fixture.storage;
    let rocks = backend(streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES);
    let mut keyed = whole_range(&rocks);
    write_round(keyed.as_mut(), 0, 1_000, 0);
    let base = checkpoint(keyed.as_mut(), storage, 1);
    write_round(keyed.as_mut(), 0, 100, 1);
    let expected = dump(keyed.as_mut()).unwrap();
    let handle = checkpoint(keyed.as_mut(), storage, 2);
    let segment = handle.files[base.files.len()..]
        .iter()
        .max_by_key(|f| f.size)
        .unwrap()
        .clone();
    let restore_whole = |handle: &KeyedStateHandle| {
        rocks.restore_keyed_backend(
            options(KeyGroupRange::all(MAX_PARALLELISM)),
            std::slice::from_ref(handle),
            storage,
        )
    };

    let intact = storage.read(&segment.path).unwrap();
    let mut damaged = intact.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    storage.write(&segment.path, damaged).unwrap();
    let Err(err) = restore_whole(&handle) else {
        panic!("a damaged segment fails the restore")
    };
    assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{err}");
    assert!(
        err.to_string().contains(&segment.path),
        "the error names the file: {err}"
    );

    // A handle listing fewer states than its segments write.
    storage.write(&segment.path, intact).unwrap();
    let mut fewer_states = handle.clone();
    fewer_states.states.truncate(1);
    let Err(err) = restore_whole(&fewer_states) else {
        panic!("a segment of an unknown state fails the restore")
    };
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("state index"), "{err}");

    // Neither failure touched the checkpoint.
    assert_eq!(restore(&rocks, storage, &handle, 1), expected);
}
