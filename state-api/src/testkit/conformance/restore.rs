//! Conformance cases: Restore: any parallelism, key-group ranges, through `_metadata`, `latest`, retention, operator state.

use super::support::*;
use crate::descriptor::ValueStateDescriptor;
use crate::operator_state::OperatorStateStore;
use crate::state::KeyedStateBackendExt;
use crate::testkit::{dump, StateDump, StorageFixture, TestTarget};
use crate::{ErrorKind, KeyGroupRange};

pub fn restore_at_parallelism_1_2_4_keeps_state_identical(t: &TestTarget) {
    let fixture = (t.storage)();
    // Write the state from parallelism 2.
    let mut handles = Vec::new();
    let mut expected = StateDump::new();
    let mut writers = Vec::new();
    for i in 0..2 {
        let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, 2, i);
        writers.push(
            t.backend
                .create_keyed_backend(t.options(range, MAX_PARALLELISM))
                .unwrap(),
        );
    }
    {
        // Route keys to their owning subtask, like key_by does.
        let metas: Vec<_> = {
            let mut all = Vec::new();
            for w in &mut writers {
                all.push(populate_subset(w.as_mut(), 400));
            }
            all
        };
        for d in metas {
            expected.extend(d);
        }
    }
    for (i, w) in writers.iter_mut().enumerate() {
        handles.push(snapshot(t, w.as_mut(), &fixture.storage, 1, &format!("op-{i}")));
    }
    assert!(expected.len() > 400, "both subtasks hold state");
    for parallelism in [1, 2, 4] {
        let mut union = StateDump::new();
        for i in 0..parallelism {
            let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, parallelism, i);
            let mut r = restore(t, &fixture.storage, &handles, range);
            let part = dump(r.as_mut()).unwrap();
            assert_eq!(part, in_range(&expected, range), "subtask {i} of {parallelism}");
            union.extend(part);
        }
        assert_eq!(union, expected, "parallelism {parallelism}");
    }
}

/// Like [`populate`] but only for the keys this backend owns.
pub fn restore_skips_key_groups_outside_range(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let expected = populate(b.as_mut(), 300);
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    let range = KeyGroupRange::new(10, 20);
    let mut r = restore(t, &fixture.storage, &[handle], range);
    let got = dump(r.as_mut()).unwrap();
    assert_eq!(got, in_range(&expected, range));
    assert!(got.len() < expected.len());
}

pub fn committed_checkpoint_restores_through_manifest(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let expected = populate(b.as_mut(), 100);
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 7, "op-0");
    commit(&fixture.storage, 7, vec![handle]);
    let latest = fixture
        .storage
        .latest_completed(Some(JOB))
        .unwrap()
        .expect("a committed checkpoint");
    assert_eq!(latest.manifest.checkpoint_id, 7);
    assert_eq!(latest.dir, format!("{JOB}/chk-7/"));
    let loaded = fixture.storage.load(&latest.dir).unwrap();
    let handles = &loaded.manifest.operator("op").unwrap().keyed_state;
    let mut r = restore(t, &fixture.storage, handles, KeyGroupRange::all(MAX_PARALLELISM));
    assert_eq!(dump(r.as_mut()).unwrap(), expected);
}

pub fn latest_ignores_checkpoint_without_metadata(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    populate(b.as_mut(), 10);
    let h1 = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    commit(&fixture.storage, 1, vec![h1]);
    // Checkpoint 2 uploads its files but never writes _metadata.
    snapshot(t, b.as_mut(), &fixture.storage, 2, "op-0");
    // Checkpoint 2 is listed as incomplete, or not at all when all its files
    // went to `shared/` (incremental heap snapshots).
    let listing: Vec<_> = fixture
        .storage
        .list_checkpoints(JOB)
        .unwrap()
        .iter()
        .map(|l| (l.checkpoint_id, l.complete))
        .collect();
    assert!(
        listing == vec![(1, true), (2, false)] || listing == vec![(1, true)],
        "{listing:?}"
    );
    assert_eq!(
        fixture
            .storage
            .latest_completed(None)
            .unwrap()
            .unwrap()
            .manifest
            .checkpoint_id,
        1
    );
    let err = fixture.storage.load(&format!("{JOB}/chk-2")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("_metadata"), "{err}");
}

pub fn retention_keeps_newest_checkpoints_restorable(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let mut dumps = Vec::new();
    for id in 1..=4u64 {
        key(b.as_mut(), "a");
        v.update(b.as_mut(), &id).unwrap();
        dumps.push(dump(b.as_mut()).unwrap());
        let h = snapshot(t, b.as_mut(), &fixture.storage, id, "op-0");
        commit(&fixture.storage, id, vec![h]);
    }
    let report = fixture.storage.apply_retention(JOB, 2).unwrap();
    assert_eq!(report.deleted_checkpoints, vec![1, 2]);
    let left: Vec<u64> = fixture
        .storage
        .list_checkpoints(JOB)
        .unwrap()
        .iter()
        .map(|l| l.checkpoint_id)
        .collect();
    assert_eq!(left, vec![3, 4]);
    for id in [3u64, 4] {
        let snap = fixture.storage.load(&format!("{JOB}/chk-{id}")).unwrap();
        let mut r = restore(
            t,
            &fixture.storage,
            &snap.manifest.operators[0].keyed_state,
            KeyGroupRange::all(MAX_PARALLELISM),
        );
        assert_eq!(dump(r.as_mut()).unwrap(), dumps[id as usize - 1]);
    }
}

pub fn operator_state_is_split_evenly_on_restore(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut handles = Vec::new();
    for subtask in 0..3u32 {
        let mut store = OperatorStateStore::default();
        let offsets = store.list_state::<u64>("offsets");
        for i in 0..(subtask + 1) {
            offsets.add(&mut store, &u64::from(subtask * 10 + i)).unwrap();
        }
        handles.push(
            store
                .write(&fixture.storage, &target_for(t, 1, &format!("src-{subtask}")), subtask)
                .unwrap(),
        );
    }
    let mut all = Vec::new();
    for subtask in 0..2 {
        let mut store = OperatorStateStore::restore(&fixture.storage, &handles, 2, subtask).unwrap();
        let offsets = store.list_state::<u64>("offsets");
        let mine = offsets.get(&store).unwrap();
        assert_eq!(mine.len(), 3, "6 elements over 2 subtasks");
        all.extend(mine);
    }
    assert_eq!(all, vec![0, 10, 11, 20, 21, 22]);
    // A storage fixture of its own kind keeps the test independent.
    let _ = StorageFixture::memory();
}

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_restore {
    ($target:expr) => {
        $crate::__conformance_cases!($target; restore;
            restore_at_parallelism_1_2_4_keeps_state_identical,
            restore_skips_key_groups_outside_range,
            committed_checkpoint_restores_through_manifest,
            latest_ignores_checkpoint_without_metadata,
            retention_keeps_newest_checkpoints_restorable,
            operator_state_is_split_evenly_on_restore,
        );
    };
}
