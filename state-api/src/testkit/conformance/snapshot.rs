//! Conformance cases: Snapshots: isolation from later writes, the write on another thread, prefetch, round trips, and snapshots from inside Tokio runtimes.

use super::support::*;
use crate::descriptor::{ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor};
use crate::key_group::assign_to_key_group;
use crate::state::KeyedStateBackendExt;
use crate::storage::CheckpointStorage;
use crate::testkit::{dump, StateDump, TestTarget};
use crate::KeyGroupRange;

pub fn snapshot_excludes_writes_after_sync_phase(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l")).unwrap();
    let m = b.map_state(&MapStateDescriptor::<u8, u8>::new("m")).unwrap();
    key(b.as_mut(), "a");
    v.update(b.as_mut(), &1).unwrap();
    l.add(b.as_mut(), &1).unwrap();
    m.put(b.as_mut(), &1, &1).unwrap();
    let target = target_for(t, 1, "op-0");
    let pending = b.snapshot(&target).unwrap();
    // Mutate everything after the synchronous phase, before the write.
    v.update(b.as_mut(), &2).unwrap();
    l.add(b.as_mut(), &2).unwrap();
    m.put(b.as_mut(), &1, &2).unwrap();
    m.put(b.as_mut(), &3, &3).unwrap();
    key(b.as_mut(), "b");
    v.update(b.as_mut(), &9).unwrap();
    let handle = pending.write(&fixture.storage, &target).unwrap();
    let mut r = restore(t, &fixture.storage, &[handle], KeyGroupRange::all(MAX_PARALLELISM));
    let (v, l, m) = (
        r.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap(),
        r.list_state(&ListStateDescriptor::<u64>::new("l")).unwrap(),
        r.map_state(&MapStateDescriptor::<u8, u8>::new("m")).unwrap(),
    );
    key(r.as_mut(), "a");
    assert_eq!(v.value(r.as_mut()).unwrap(), Some(1));
    assert_eq!(l.get(r.as_mut()).unwrap(), vec![1]);
    assert_eq!(m.entries(r.as_mut()).unwrap(), vec![(1, 1)]);
    key(r.as_mut(), "b");
    assert_eq!(v.value(r.as_mut()).unwrap(), None);
    // And the live backend kept the later writes.
    key(b.as_mut(), "a");
    let live_v = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    assert_eq!(live_v.value(b.as_mut()).unwrap(), Some(2));
}

pub fn snapshot_write_runs_on_another_thread(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let expected = populate(b.as_mut(), 200);
    let target = target_for(t, 1, "op-0");
    let pending = b.snapshot(&target).unwrap();
    let storage = fixture.storage.clone();
    let writer = std::thread::spawn(move || pending.write(&storage, &target));
    // Processing goes on meanwhile.
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("value")).unwrap();
    for i in 0..200 {
        b.set_current_key_typed(&format!("key-{i}")).unwrap();
        v.update(b.as_mut(), &0).unwrap();
    }
    let handle = writer.join().unwrap().unwrap();
    let mut r = restore(t, &fixture.storage, &[handle], KeyGroupRange::all(MAX_PARALLELISM));
    assert_eq!(dump(r.as_mut()).unwrap(), expected);
}

/// A prefetch of a group of keys (most of them restored, so in storage
/// rather than in any cache; some never written) changes nothing: the
/// current key stays, every key reads and updates as without it, for every
/// cell kind; a map state, an unknown state, an empty key and a key outside
/// the range are ignored, not errors or panics.
pub fn prefetch_changes_no_reads_or_writes(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let expected = populate(b.as_mut(), 300);
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    let range = KeyGroupRange::new(0, 63);
    let mut r = restore(t, &fixture.storage, &[handle], range);
    let v = r.value_state(&ValueStateDescriptor::<u64>::new("value")).unwrap();
    let l = r.list_state(&ListStateDescriptor::<String>::new("list")).unwrap();
    let m = r.map_state(&MapStateDescriptor::<u32, String>::new("map")).unwrap();
    let red = r
        .reducing_state(&ReducingStateDescriptor::new("reduce", |a: &u64, c: &u64| a + c))
        .unwrap();
    // Keys 0..300 were written; 300..400 never were.
    let keys: Vec<(u32, Vec<u8>)> = (0..400)
        .map(|i| (i, crate::codec::encode_value(&format!("key-{i}")).unwrap()))
        .filter(|(_, k)| range.contains(assign_to_key_group(k, MAX_PARALLELISM)))
        .collect();
    assert!(keys.len() > 100, "about half of 400 keys fall in half the groups");
    let outside = (0..50)
        .map(|i| crate::codec::encode_value(&format!("key-{i}")).unwrap())
        .find(|k| !range.contains(assign_to_key_group(k, MAX_PARALLELISM)))
        .unwrap();
    for group in keys.chunks(16) {
        let (_, current) = &group[0];
        r.set_current_key(current).unwrap();
        let mut slices: Vec<&[u8]> = group.iter().map(|(_, k)| k.as_slice()).collect();
        slices.extend([&[][..], outside.as_slice()]);
        for state in [v.id(), l.id(), red.id(), m.id(), 999] {
            std::hint::black_box(r.prefetch(state, &slices));
        }
        assert_eq!(r.current_key(), current.as_slice(), "a prefetch keeps the current key");
        for (i, k) in group {
            r.set_current_key(k).unwrap();
            let written = *i < 300;
            assert_eq!(
                v.value(r.as_mut()).unwrap(),
                written.then_some(u64::from(*i)),
                "value of key-{i}"
            );
            assert_eq!(
                l.get(r.as_mut()).unwrap().len(),
                if written { 2 } else { 0 },
                "list of key-{i}"
            );
            assert_eq!(
                red.get(r.as_mut()).unwrap(),
                written.then_some(u64::from(*i) + 1),
                "sum of key-{i}"
            );
            assert_eq!(
                m.get(r.as_mut(), i).unwrap(),
                written.then(|| format!("m{i}")),
                "map of key-{i}"
            );
            v.update(r.as_mut(), &(u64::from(*i) * 10)).unwrap();
            red.add(r.as_mut(), 5).unwrap();
            l.add(r.as_mut(), &"g".to_owned()).unwrap();
        }
    }
    // Every write landed once, and nothing else changed: the dump is the
    // restored state plus exactly those writes.
    for (i, k) in &keys {
        r.set_current_key(k).unwrap();
        assert_eq!(v.value(r.as_mut()).unwrap(), Some(u64::from(*i) * 10));
        let base = if *i < 300 { u64::from(*i) + 1 } else { 0 };
        assert_eq!(red.get(r.as_mut()).unwrap(), Some(base + 5));
        assert_eq!(l.get(r.as_mut()).unwrap().len(), if *i < 300 { 3 } else { 1 });
    }
    let maps_before = in_range(&expected, range)
        .into_iter()
        .filter(|((state, _), _)| state == "map")
        .collect::<StateDump>();
    let maps_after = dump(r.as_mut())
        .unwrap()
        .into_iter()
        .filter(|((state, _), _)| state == "map")
        .collect::<StateDump>();
    assert_eq!(maps_after, maps_before, "map states untouched");
}

pub fn snapshot_restore_round_trips_every_state_kind(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let expected = populate(b.as_mut(), 500);
    // Five plain states, a namespaced one and the two timer states.
    assert_eq!(expected.len(), 500 * 8);
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    assert!(handle.full_bytes > 0 && !handle.files.is_empty());
    let mut r = restore(t, &fixture.storage, &[handle], KeyGroupRange::all(MAX_PARALLELISM));
    assert_eq!(dump(r.as_mut()).unwrap(), expected);
    // Typed reads work on the restored backend too.
    let m = r.map_state(&MapStateDescriptor::<u32, String>::new("map")).unwrap();
    r.set_current_key_typed("key-7").unwrap();
    assert_eq!(m.get(r.as_mut(), &7).unwrap().as_deref(), Some("m7"));
}

/// Snapshot, commit, `latest` and a restore at parallelism 2, all called
/// from a task of `runtime` (as an async engine that embeds a backend
/// calls them) through `storage`; the restored halves hold exactly the
/// state written.
fn snapshot_and_restore_inside(t: &TestTarget, runtime: &tokio::runtime::Runtime, storage: CheckpointStorage) {
    runtime.block_on(async {
        let mut b = backend(t);
        let expected = populate(b.as_mut(), 300);
        let handle = snapshot(t, b.as_mut(), &storage, 1, "op-0");
        commit(&storage, 1, vec![handle]);
        // The async API finds it too, from the same task.
        let latest = storage.as_async().latest_completed(Some(JOB)).await.unwrap().unwrap();
        assert_eq!(latest.manifest.checkpoint_id, 1);
        let handles = &latest.manifest.operators[0].keyed_state;
        let mut restored = StateDump::new();
        for range in [KeyGroupRange::new(0, 63), KeyGroupRange::new(64, 127)] {
            let mut r = restore(t, &storage, handles, range);
            let part = dump(r.as_mut()).unwrap();
            assert_eq!(part, in_range(&expected, range));
            restored.extend(part);
        }
        assert_eq!(restored, expected);
    });
}

pub fn snapshot_and_restore_inside_a_current_thread_tokio_runtime(t: &TestTarget) {
    let fixture = (t.storage)();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    snapshot_and_restore_inside(t, &runtime, fixture.storage.clone());
}

/// The embedder's own multi-thread runtime runs the storage's I/O too
/// ([`crate::IoExecutor::from_handle`]).
pub fn snapshot_and_restore_inside_a_multi_thread_tokio_runtime_that_runs_the_io(t: &TestTarget) {
    let fixture = (t.storage)();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let executor = crate::IoExecutor::from_handle(runtime.handle().clone()).unwrap();
    let storage = CheckpointStorage::from_async(fixture.storage.as_async().clone(), executor);
    snapshot_and_restore_inside(t, &runtime, storage);
}

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_snapshot {
    ($target:expr) => {
        $crate::__conformance_cases!($target; snapshot;
            snapshot_excludes_writes_after_sync_phase,
            snapshot_write_runs_on_another_thread,
            prefetch_changes_no_reads_or_writes,
            snapshot_restore_round_trips_every_state_kind,
            snapshot_and_restore_inside_a_current_thread_tokio_runtime,
            snapshot_and_restore_inside_a_multi_thread_tokio_runtime_that_runs_the_io,
        );
    };
}
