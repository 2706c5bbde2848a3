//! The conformance cases. Each takes a [`TestTarget`] and panics on failure;
//! [`crate::conformance_tests!`] turns them into `#[test]`s.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use super::{dump, StateDump, StorageFixture, TestTarget};
use crate::backend::{KeyedStateBackend, SnapshotFormat, SnapshotKind, SnapshotTarget};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::key_group::assign_to_key_group;
use crate::operator_state::OperatorStateStore;
use crate::snapshot::manifest::{OperatorSnapshot, SnapshotManifest};
use crate::state::KeyedStateBackendExt;
use crate::storage::CheckpointStorage;
use crate::ttl::{ManualClock, TtlConfig, TtlUpdateType};
use crate::{Error, ErrorKind, KeyGroupRange, KeyedStateHandle};

const MAX_PARALLELISM: u32 = 128;
const JOB: &str = "conformance-job";

fn backend(target: &TestTarget) -> Box<dyn KeyedStateBackend> {
    target.create_full(MAX_PARALLELISM).unwrap()
}

fn backend_with_clock(target: &TestTarget, clock: Arc<ManualClock>) -> Box<dyn KeyedStateBackend> {
    let options = target
        .options(KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM)
        .with_clock(clock);
    target.backend.create_keyed_backend(options).unwrap()
}

fn key(b: &mut dyn KeyedStateBackend, k: &str) {
    b.set_current_key_typed(k).unwrap();
}

/// A checkpoint target in the format the target under test asks for.
fn target_for(t: &TestTarget, id: u64, stem: &str) -> SnapshotTarget {
    SnapshotTarget {
        checkpoint_id: id,
        kind: SnapshotKind::Checkpoint,
        format: t.format,
        incremental: t.incremental,
        base: format!("{JOB}/"),
        exclusive_dir: format!("chk-{id}"),
        shared_dir: "shared".into(),
        file_stem: stem.into(),
    }
}

/// Snapshot one backend into checkpoint `id` (not committed).
fn snapshot(
    t: &TestTarget,
    b: &mut dyn KeyedStateBackend,
    storage: &CheckpointStorage,
    id: u64,
    stem: &str,
) -> KeyedStateHandle {
    let target = target_for(t, id, stem);
    b.snapshot(&target).unwrap().write(storage, &target).unwrap()
}

fn restore(
    target: &TestTarget,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    range: KeyGroupRange,
) -> Box<dyn KeyedStateBackend> {
    target
        .backend
        .restore_keyed_backend(target.options(range, MAX_PARALLELISM), handles, storage)
        .unwrap()
}

fn commit(storage: &CheckpointStorage, id: u64, handles: Vec<KeyedStateHandle>) {
    let mut manifest = SnapshotManifest::new(JOB, id, SnapshotKind::Checkpoint, MAX_PARALLELISM);
    manifest.operators.push(OperatorSnapshot {
        operator_id: "op".into(),
        parallelism: handles.len() as u32,
        keyed_state: handles,
        operator_state: vec![],
    });
    storage.commit(&manifest).unwrap();
}

struct Sum;
impl AggregateFunction for Sum {
    type In = u64;
    type Acc = (u64, u64);
    type Out = f64;
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: &u64, acc: (u64, u64)) -> (u64, u64) {
        (acc.0 + value, acc.1 + 1)
    }
    fn get_result(&self, acc: &(u64, u64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }
}

/// Fills every kind of state for `n` keys and returns the dump.
fn populate(b: &mut dyn KeyedStateBackend, n: u32) -> StateDump {
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("value")).unwrap();
    let l = b.list_state(&ListStateDescriptor::<String>::new("list")).unwrap();
    let m = b.map_state(&MapStateDescriptor::<u32, String>::new("map")).unwrap();
    let r = b
        .reducing_state(&ReducingStateDescriptor::new("reduce", |a: &u64, c: &u64| a + c))
        .unwrap();
    let a = b
        .aggregating_state(&AggregatingStateDescriptor::new("agg", Sum))
        .unwrap();
    for i in 0..n {
        b.set_current_key_typed(&format!("key-{i}")).unwrap();
        v.update(b, &u64::from(i)).unwrap();
        l.add(b, &format!("e{i}")).unwrap();
        l.add(b, &format!("f{i}")).unwrap();
        m.put(b, &i, &format!("m{i}")).unwrap();
        m.put(b, &(i + 1000), &"x".to_owned()).unwrap();
        r.add(b, u64::from(i)).unwrap();
        r.add(b, 1).unwrap();
        a.add(b, &u64::from(i)).unwrap();
    }
    dump(b).unwrap()
}

fn in_range(d: &StateDump, range: KeyGroupRange) -> StateDump {
    d.iter()
        .filter(|((_, k), _)| range.contains(assign_to_key_group(k, MAX_PARALLELISM)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

// ---- value state ----

pub fn value_get_returns_none_before_update(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    key(b.as_mut(), "a");
    assert_eq!(s.value(b.as_mut()).unwrap(), None);
}

pub fn value_update_then_get_returns_value(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.value_state(&ValueStateDescriptor::<String>::new("v")).unwrap();
    key(b.as_mut(), "a");
    s.update(b.as_mut(), &"hello".to_owned()).unwrap();
    assert_eq!(s.value(b.as_mut()).unwrap().as_deref(), Some("hello"));
}

pub fn value_update_overwrites_previous_value(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    key(b.as_mut(), "a");
    s.update(b.as_mut(), &1).unwrap();
    s.update(b.as_mut(), &u64::MAX).unwrap();
    assert_eq!(s.value(b.as_mut()).unwrap(), Some(u64::MAX));
}

/// `update_with` (a read-modify-write through `update_cell`) reads what
/// `value` reads and writes what `update` writes: on an absent key, a
/// present one, a cleared one, after a snapshot (shared, copy-on-write
/// tables) and on a restored backend; a failing update (bytes that are not
/// the type) leaves the cell exactly as it was, and an absent key absent.
pub fn value_update_with_reads_and_writes_in_one_step(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
    let wrong = b.value_state(&ValueStateDescriptor::<String>::new("text")).unwrap();
    for i in 0..50u64 {
        key(b.as_mut(), &format!("k{i}"));
        v.update_with(b.as_mut(), |old| {
            assert_eq!(old, None, "k{i} starts absent");
            i
        })
        .unwrap();
        v.update_with(b.as_mut(), |old| old.unwrap() + 1).unwrap();
    }
    key(b.as_mut(), "k3");
    v.clear(b.as_mut()).unwrap();
    v.update_with(b.as_mut(), |old| {
        assert_eq!(old, None, "a cleared key reads as absent");
        100
    })
    .unwrap();
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    // After the snapshot, before its write: the snapshot keeps its values.
    for i in 0..50u64 {
        key(b.as_mut(), &format!("k{i}"));
        v.update_with(b.as_mut(), |old| old.unwrap() * 2).unwrap();
    }
    let mut r = restore(t, &fixture.storage, &[handle], KeyGroupRange::all(MAX_PARALLELISM));
    let rv = r.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
    for i in 0..50u64 {
        let at_snapshot = if i == 3 { 100 } else { i + 1 };
        key(r.as_mut(), &format!("k{i}"));
        assert_eq!(rv.value(r.as_mut()).unwrap(), Some(at_snapshot), "restored k{i}");
        rv.update_with(r.as_mut(), |old| old.unwrap() + 7).unwrap();
        assert_eq!(rv.value(r.as_mut()).unwrap(), Some(at_snapshot + 7));
        key(b.as_mut(), &format!("k{i}"));
        assert_eq!(
            v.value(b.as_mut()).unwrap(),
            Some(at_snapshot * 2),
            "k{i} after the snapshot"
        );
    }
    // A u64's bytes are not a String: the update fails, nothing changes.
    key(b.as_mut(), "k9");
    let text = ValueStateDescriptor::<String>::new("count");
    let as_text = b.value_state(&text);
    if let Ok(as_text) = as_text {
        assert!(as_text.update_with(b.as_mut(), |_| "x".to_owned()).is_err());
    }
    assert_eq!(
        v.value(b.as_mut()).unwrap(),
        Some(20),
        "k9 unchanged by a failed update"
    );
    // An update_cell that fails on an absent key leaves it absent.
    key(b.as_mut(), "never-written");
    let failed = b.update_cell(wrong.id(), &mut |old, _new| {
        assert_eq!(old, None);
        Err(Error::invalid_argument("refused"))
    });
    assert_eq!(failed.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(wrong.value(b.as_mut()).unwrap(), None);
    assert!(b.keys(wrong.id()).unwrap().is_empty(), "a failed update inserts no key");
    // And one that fails on a present key leaves its bytes.
    wrong.update(b.as_mut(), &"kept".to_owned()).unwrap();
    let failed = b.update_cell(wrong.id(), &mut |old, new| {
        assert!(old.is_some());
        new.extend_from_slice(b"half-written");
        Err(Error::invalid_argument("refused"))
    });
    assert!(failed.is_err());
    assert_eq!(wrong.value(b.as_mut()).unwrap().as_deref(), Some("kept"));
}

pub fn value_is_scoped_to_current_key(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
        key(b.as_mut(), k);
        s.update(b.as_mut(), &v).unwrap();
    }
    for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
        key(b.as_mut(), k);
        assert_eq!(s.value(b.as_mut()).unwrap(), Some(v), "key {k}");
    }
}

pub fn value_clear_removes_only_current_key(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    key(b.as_mut(), "a");
    s.update(b.as_mut(), &1).unwrap();
    key(b.as_mut(), "b");
    s.update(b.as_mut(), &2).unwrap();
    s.clear(b.as_mut()).unwrap();
    assert_eq!(s.value(b.as_mut()).unwrap(), None);
    key(b.as_mut(), "a");
    assert_eq!(s.value(b.as_mut()).unwrap(), Some(1));
}

// ---- list state ----

pub fn list_get_is_empty_before_add(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.list_state(&ListStateDescriptor::<u32>::new("l")).unwrap();
    key(b.as_mut(), "a");
    assert!(s.get(b.as_mut()).unwrap().is_empty());
}

pub fn list_add_preserves_insertion_order(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.list_state(&ListStateDescriptor::<u32>::new("l")).unwrap();
    key(b.as_mut(), "a");
    for x in [3, 1, 2, 1] {
        s.add(b.as_mut(), &x).unwrap();
    }
    assert_eq!(s.get(b.as_mut()).unwrap(), vec![3, 1, 2, 1]);
}

pub fn list_add_all_appends_after_existing_elements(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.list_state(&ListStateDescriptor::<String>::new("l")).unwrap();
    key(b.as_mut(), "a");
    s.add(b.as_mut(), &"x".to_owned()).unwrap();
    s.add_all(b.as_mut(), &["y".to_owned(), "z".to_owned()]).unwrap();
    s.add_all(b.as_mut(), &[]).unwrap();
    assert_eq!(s.get(b.as_mut()).unwrap(), vec!["x", "y", "z"]);
}

pub fn list_update_replaces_elements(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.list_state(&ListStateDescriptor::<u32>::new("l")).unwrap();
    key(b.as_mut(), "a");
    s.add_all(b.as_mut(), &[1, 2, 3]).unwrap();
    s.update(b.as_mut(), &[9]).unwrap();
    assert_eq!(s.get(b.as_mut()).unwrap(), vec![9]);
}

pub fn list_update_with_nothing_clears(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.list_state(&ListStateDescriptor::<u32>::new("l")).unwrap();
    key(b.as_mut(), "a");
    s.add(b.as_mut(), &1).unwrap();
    s.update(b.as_mut(), &[]).unwrap();
    assert!(s.get(b.as_mut()).unwrap().is_empty());
    assert!(
        b.keys(s.id()).unwrap().is_empty(),
        "an emptied list leaves no key behind"
    );
}

pub fn list_clear_removes_list(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.list_state(&ListStateDescriptor::<u32>::new("l")).unwrap();
    key(b.as_mut(), "a");
    s.add(b.as_mut(), &1).unwrap();
    key(b.as_mut(), "b");
    s.add(b.as_mut(), &2).unwrap();
    s.clear(b.as_mut()).unwrap();
    assert!(s.get(b.as_mut()).unwrap().is_empty());
    key(b.as_mut(), "a");
    assert_eq!(s.get(b.as_mut()).unwrap(), vec![1]);
}

// ---- map state ----

pub fn map_get_of_absent_user_key_returns_none(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.map_state(&MapStateDescriptor::<String, u64>::new("m")).unwrap();
    key(b.as_mut(), "a");
    assert_eq!(s.get(b.as_mut(), &"nope".to_owned()).unwrap(), None);
}

pub fn map_put_get_remove_round_trip(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.map_state(&MapStateDescriptor::<String, u64>::new("m")).unwrap();
    key(b.as_mut(), "a");
    s.put(b.as_mut(), &"x".to_owned(), &1).unwrap();
    s.put(b.as_mut(), &"x".to_owned(), &2).unwrap();
    assert_eq!(s.get(b.as_mut(), &"x".to_owned()).unwrap(), Some(2));
    s.remove(b.as_mut(), &"x".to_owned()).unwrap();
    assert_eq!(s.get(b.as_mut(), &"x".to_owned()).unwrap(), None);
    s.remove(b.as_mut(), &"never-there".to_owned()).unwrap();
}

pub fn map_entries_are_ordered_by_serialized_user_key(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.map_state(&MapStateDescriptor::<u8, u8>::new("m")).unwrap();
    key(b.as_mut(), "a");
    for k in [5u8, 1, 200, 3] {
        s.put(b.as_mut(), &k, &(k / 2)).unwrap();
    }
    // postcard encodes u8 as one byte, so byte order is numeric order here.
    assert_eq!(s.entries(b.as_mut()).unwrap(), vec![(1, 0), (3, 1), (5, 2), (200, 100)]);
    assert_eq!(s.keys(b.as_mut()).unwrap(), vec![1, 3, 5, 200]);
}

pub fn map_contains_and_is_empty_follow_puts_and_removes(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.map_state(&MapStateDescriptor::<u32, u32>::new("m")).unwrap();
    key(b.as_mut(), "a");
    assert!(s.is_empty(b.as_mut()).unwrap());
    s.put(b.as_mut(), &7, &7).unwrap();
    assert!(s.contains(b.as_mut(), &7).unwrap());
    assert!(!s.contains(b.as_mut(), &8).unwrap());
    assert!(!s.is_empty(b.as_mut()).unwrap());
    s.remove(b.as_mut(), &7).unwrap();
    assert!(s.is_empty(b.as_mut()).unwrap());
    assert!(
        b.keys(s.id()).unwrap().is_empty(),
        "an emptied map leaves no key behind"
    );
}

pub fn map_clear_removes_only_current_key_entries(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.map_state(&MapStateDescriptor::<u32, u32>::new("m")).unwrap();
    key(b.as_mut(), "a");
    s.put(b.as_mut(), &1, &1).unwrap();
    key(b.as_mut(), "b");
    s.put(b.as_mut(), &1, &2).unwrap();
    s.put(b.as_mut(), &2, &2).unwrap();
    s.clear(b.as_mut()).unwrap();
    assert!(s.is_empty(b.as_mut()).unwrap());
    key(b.as_mut(), "a");
    assert_eq!(s.entries(b.as_mut()).unwrap(), vec![(1, 1)]);
}

// ---- reducing and aggregating ----

pub fn reducing_state_folds_added_values(t: &TestTarget) {
    let mut b = backend(t);
    let s = b
        .reducing_state(&ReducingStateDescriptor::new("max", |a: &i64, c: &i64| *a.max(c)))
        .unwrap();
    key(b.as_mut(), "a");
    assert_eq!(s.get(b.as_mut()).unwrap(), None);
    for x in [3, -1, 9, 4] {
        s.add(b.as_mut(), x).unwrap();
    }
    assert_eq!(s.get(b.as_mut()).unwrap(), Some(9));
}

pub fn reducing_state_clear_starts_over(t: &TestTarget) {
    let mut b = backend(t);
    let s = b
        .reducing_state(&ReducingStateDescriptor::new("sum", |a: &u64, c: &u64| a + c))
        .unwrap();
    key(b.as_mut(), "a");
    s.add(b.as_mut(), 5).unwrap();
    s.clear(b.as_mut()).unwrap();
    s.add(b.as_mut(), 2).unwrap();
    assert_eq!(s.get(b.as_mut()).unwrap(), Some(2));
}

pub fn aggregating_state_folds_and_reports_result(t: &TestTarget) {
    let mut b = backend(t);
    let s = b
        .aggregating_state(&AggregatingStateDescriptor::new("avg", Sum))
        .unwrap();
    key(b.as_mut(), "a");
    assert_eq!(s.get(b.as_mut()).unwrap(), None);
    for x in [2, 4, 9] {
        s.add(b.as_mut(), &x).unwrap();
    }
    assert_eq!(s.get(b.as_mut()).unwrap(), Some(5.0));
    s.clear(b.as_mut()).unwrap();
    assert_eq!(s.get(b.as_mut()).unwrap(), None);
}

// ---- iteration and registration ----

pub fn keys_lists_every_key_with_state(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.value_state(&ValueStateDescriptor::<u8>::new("v")).unwrap();
    let mut expected = Vec::new();
    for i in 0..300u32 {
        let k = format!("k{i}");
        key(b.as_mut(), &k);
        s.update(b.as_mut(), &1).unwrap();
        expected.push(crate::codec::encode_value(&k).unwrap());
    }
    key(b.as_mut(), "k7");
    s.clear(b.as_mut()).unwrap();
    expected.retain(|k| *k != crate::codec::encode_value("k7").unwrap());
    expected.sort();
    assert_eq!(b.keys(s.id()).unwrap(), expected);
}

pub fn keys_in_key_group_partitions_keys_by_group(t: &TestTarget) {
    let mut b = backend(t);
    let cells = b.value_state(&ValueStateDescriptor::<u8>::new("v")).unwrap();
    let maps = b.map_state(&MapStateDescriptor::<u8, u8>::new("m")).unwrap();
    for i in 0..300u32 {
        let k = format!("k{i}");
        key(b.as_mut(), &k);
        cells.update(b.as_mut(), &1).unwrap();
        if i % 3 == 0 {
            maps.put(b.as_mut(), &1, &1).unwrap();
            maps.put(b.as_mut(), &2, &2).unwrap();
        }
    }
    for removed in ["k7", "k9"] {
        key(b.as_mut(), removed);
        cells.clear(b.as_mut()).unwrap();
        maps.clear(b.as_mut()).unwrap();
    }
    let max_parallelism = b.max_parallelism();
    for state in [cells.id(), maps.id()] {
        let mut by_group = Vec::new();
        for key_group in b.key_group_range().iter() {
            let keys = b.keys_in_key_group(state, key_group).unwrap();
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "group {key_group}: unsorted or repeated keys"
            );
            for k in &keys {
                assert_eq!(assign_to_key_group(k, max_parallelism), key_group);
            }
            by_group.extend(keys);
        }
        by_group.sort();
        assert_eq!(by_group, b.keys(state).unwrap());
    }
    assert_eq!(b.keys(maps.id()).unwrap().len(), 99);
    let outside = b.key_group_range().end().map_or(0, |last| last + 1);
    let err = b.keys_in_key_group(cells.id(), outside).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

pub fn for_each_cell_in_key_group_visits_what_get_reads_in_key_order(t: &TestTarget) {
    let mut b = backend(t);
    let cells = b.value_state(&ValueStateDescriptor::<u32>::new("v")).unwrap();
    let maps = b.map_state(&MapStateDescriptor::<u8, u8>::new("m")).unwrap();
    for i in 0..300u32 {
        key(b.as_mut(), &format!("k{i}"));
        cells.update(b.as_mut(), &(i * 7)).unwrap();
    }
    // Rewritten values (a backend caching writes holds some of them over
    // older stored ones) and a removal.
    for i in (0..300u32).step_by(5) {
        key(b.as_mut(), &format!("k{i}"));
        cells.update(b.as_mut(), &(i * 7 + 1)).unwrap();
    }
    key(b.as_mut(), "k7");
    cells.clear(b.as_mut()).unwrap();
    maps.put(b.as_mut(), &1, &1).unwrap();
    let map_group = b.current_key_group();
    let mut visited_keys = 0;
    for key_group in b.key_group_range().iter() {
        let mut expected = Vec::new();
        for k in b.keys_in_key_group(cells.id(), key_group).unwrap() {
            b.set_current_key(&k).unwrap();
            let cell = b.get(cells.id()).unwrap().map(|c| c.into_owned());
            expected.push((k, cell.expect("a listed key has a cell")));
        }
        let mut visited = Vec::new();
        b.for_each_cell_in_key_group(cells.id(), key_group, &mut |k, cell| {
            visited.push((k.to_vec(), cell.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            visited, expected,
            "group {key_group}: the cells get reads, in key order"
        );
        // Unordered: the same cells, each once, in any order.
        let mut unordered = Vec::new();
        b.for_each_cell_in_key_group_unordered(cells.id(), key_group, &mut |k, cell| {
            unordered.push((k.to_vec(), cell.to_vec()));
            Ok(())
        })
        .unwrap();
        unordered.sort();
        assert_eq!(unordered, expected, "group {key_group}: the same cells, unordered");
        let mut unordered_values = Vec::new();
        cells
            .for_each_in_key_group_unordered(b.as_mut(), key_group, |k, value| {
                unordered_values.push((k.to_vec(), value));
                Ok(())
            })
            .unwrap();
        unordered_values.sort();
        let mut decoded = Vec::new();
        cells
            .for_each_in_key_group(b.as_mut(), key_group, |k, value| {
                decoded.push((k.to_vec(), value));
                Ok(())
            })
            .unwrap();
        let expected_values: Vec<(Vec<u8>, u32)> = expected
            .iter()
            .map(|(k, _)| {
                let name: String = crate::codec::decode_value(k).unwrap();
                let n = name[1..].parse::<u32>().unwrap();
                (k.clone(), if n % 5 == 0 { n * 7 + 1 } else { n * 7 })
            })
            .collect();
        assert_eq!(decoded, expected_values, "group {key_group}: decoded values");
        assert_eq!(
            unordered_values, expected_values,
            "group {key_group}: decoded values, unordered"
        );
        visited_keys += visited.len();
    }
    assert_eq!(visited_keys, 299, "every key but the cleared one");

    // The first error of `visit` stops the walk.
    let busy_group = b
        .key_group_range()
        .iter()
        .find(|&g| b.keys_in_key_group(cells.id(), g).unwrap().len() > 1)
        .unwrap();
    let mut calls = 0;
    let err = b
        .for_each_cell_in_key_group(cells.id(), busy_group, &mut |_, _| {
            calls += 1;
            Err(Error::invalid_argument("stop here"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("stop here"), "{err}");
    assert_eq!(calls, 1, "no visit after the first error");

    let mut calls = 0;
    let err = b
        .for_each_cell_in_key_group_unordered(cells.id(), busy_group, &mut |_, _| {
            calls += 1;
            Err(Error::invalid_argument("stop here"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("stop here"), "{err}");
    assert_eq!(calls, 1, "no unordered visit after the first error");

    let outside = b.key_group_range().end().map_or(0, |last| last + 1);
    for unordered in [false, true] {
        let walk = |b: &mut dyn KeyedStateBackend, state, group| {
            if unordered {
                b.for_each_cell_in_key_group_unordered(state, group, &mut |_, _| Ok(()))
            } else {
                b.for_each_cell_in_key_group(state, group, &mut |_, _| Ok(()))
            }
        };
        let err = walk(b.as_mut(), maps.id(), map_group).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "a map state: {err}");
        let err = walk(b.as_mut(), cells.id(), outside).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
}

pub fn states_with_different_names_are_independent(t: &TestTarget) {
    let mut b = backend(t);
    let s1 = b.value_state(&ValueStateDescriptor::<u64>::new("one")).unwrap();
    let s2 = b.value_state(&ValueStateDescriptor::<u64>::new("two")).unwrap();
    key(b.as_mut(), "a");
    s1.update(b.as_mut(), &1).unwrap();
    assert_eq!(s2.value(b.as_mut()).unwrap(), None);
    s2.update(b.as_mut(), &2).unwrap();
    s1.clear(b.as_mut()).unwrap();
    assert_eq!(s2.value(b.as_mut()).unwrap(), Some(2));
}

pub fn registering_same_name_twice_returns_same_state(t: &TestTarget) {
    let mut b = backend(t);
    let s1 = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let s2 = b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    assert_eq!(s1.id(), s2.id());
    key(b.as_mut(), "a");
    s1.update(b.as_mut(), &4).unwrap();
    assert_eq!(s2.value(b.as_mut()).unwrap(), Some(4));
    assert_eq!(b.registered_states().len(), 1);
}

pub fn registering_same_name_with_other_kind_is_incompatible(t: &TestTarget) {
    let mut b = backend(t);
    b.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let err = b.list_state(&ListStateDescriptor::<u64>::new("v")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IncompatibleState);
    assert_eq!(err.context_value("state"), Some("v"));
    let err = b.value_state(&ValueStateDescriptor::<u64>::new("")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

pub fn key_outside_key_group_range_is_rejected(t: &TestTarget) {
    let range = KeyGroupRange::new(0, 63);
    let mut b = t
        .backend
        .create_keyed_backend(t.options(range, MAX_PARALLELISM))
        .unwrap();
    let mut rejected = 0;
    for i in 0..50 {
        let k = crate::codec::encode_value(&format!("k{i}")).unwrap();
        let group = assign_to_key_group(&k, MAX_PARALLELISM);
        let result = b.set_current_key(&k);
        if range.contains(group) {
            assert!(result.is_ok());
        } else {
            assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidArgument);
            rejected += 1;
        }
    }
    assert!(rejected > 0, "some of 50 keys must fall outside half the groups");
}

pub fn unknown_state_id_is_invalid_argument(t: &TestTarget) {
    let mut b = backend(t);
    key(b.as_mut(), "a");
    assert_eq!(b.get(42).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(b.put(42, b"x").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(b.keys(42).unwrap_err().kind(), ErrorKind::InvalidArgument);
}

pub fn cell_call_on_map_state_is_invalid_argument(t: &TestTarget) {
    let mut b = backend(t);
    let m = b.map_state(&MapStateDescriptor::<u8, u8>::new("m")).unwrap();
    let v = b.value_state(&ValueStateDescriptor::<u8>::new("v")).unwrap();
    key(b.as_mut(), "a");
    assert_eq!(b.put(m.id(), b"x").unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        b.map_put(v.id(), b"k", b"x").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

// ---- TTL ----

pub fn ttl_value_is_not_returned_after_expiry(t: &TestTarget) {
    let clock = Arc::new(ManualClock::new(1_000));
    let mut b = backend_with_clock(t, clock.clone());
    let ttl = TtlConfig::new(Duration::from_secs(10));
    let s = b
        .value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl))
        .unwrap();
    key(b.as_mut(), "a");
    s.update(b.as_mut(), &1).unwrap();
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(s.value(b.as_mut()).unwrap(), Some(1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(s.value(b.as_mut()).unwrap(), None);
}

pub fn ttl_list_elements_expire_individually(t: &TestTarget) {
    let clock = Arc::new(ManualClock::new(0));
    let mut b = backend_with_clock(t, clock.clone());
    let ttl = TtlConfig::new(Duration::from_secs(10));
    let s = b
        .list_state(&ListStateDescriptor::<u32>::new("l").with_ttl(ttl))
        .unwrap();
    key(b.as_mut(), "a");
    s.add(b.as_mut(), &1).unwrap();
    clock.advance(Duration::from_secs(5));
    s.add(b.as_mut(), &2).unwrap();
    clock.advance(Duration::from_secs(6));
    assert_eq!(s.get(b.as_mut()).unwrap(), vec![2]);
    clock.advance(Duration::from_secs(5));
    assert!(s.get(b.as_mut()).unwrap().is_empty());
}

pub fn ttl_map_entries_expire_individually(t: &TestTarget) {
    let clock = Arc::new(ManualClock::new(0));
    let mut b = backend_with_clock(t, clock.clone());
    let ttl = TtlConfig::new(Duration::from_secs(10));
    let s = b
        .map_state(&MapStateDescriptor::<u8, u8>::new("m").with_ttl(ttl))
        .unwrap();
    key(b.as_mut(), "a");
    s.put(b.as_mut(), &1, &1).unwrap();
    clock.advance(Duration::from_secs(6));
    s.put(b.as_mut(), &2, &2).unwrap();
    clock.advance(Duration::from_secs(6));
    assert_eq!(s.get(b.as_mut(), &1).unwrap(), None);
    assert_eq!(s.entries(b.as_mut()).unwrap(), vec![(2, 2)]);
}

pub fn ttl_on_read_and_write_refreshes_on_read(t: &TestTarget) {
    let clock = Arc::new(ManualClock::new(0));
    let mut b = backend_with_clock(t, clock.clone());
    let ttl = TtlConfig::new(Duration::from_secs(10)).with_update_type(TtlUpdateType::OnReadAndWrite);
    let s = b
        .value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl))
        .unwrap();
    key(b.as_mut(), "a");
    s.update(b.as_mut(), &1).unwrap();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(8));
        assert_eq!(s.value(b.as_mut()).unwrap(), Some(1), "each read extends the life");
    }
    clock.advance(Duration::from_secs(10));
    assert_eq!(s.value(b.as_mut()).unwrap(), None);
}

pub fn ttl_expired_values_are_purged_at_snapshot(t: &TestTarget) {
    let fixture = (t.storage)();
    let clock = Arc::new(ManualClock::new(0));
    let mut b = backend_with_clock(t, clock.clone());
    let ttl = TtlConfig::new(Duration::from_secs(10));
    let s = b
        .value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl))
        .unwrap();
    key(b.as_mut(), "old");
    s.update(b.as_mut(), &1).unwrap();
    clock.advance(Duration::from_secs(8));
    key(b.as_mut(), "new");
    s.update(b.as_mut(), &2).unwrap();
    clock.advance(Duration::from_secs(3));
    // Purging is part of writing the canonical format; native files (RocksDB
    // SSTs) keep expired values, which reads never return.
    let mut target = target_for(t, 1, "op-0");
    target.format = SnapshotFormat::Canonical;
    target.incremental = false;
    let handle = b.snapshot(&target).unwrap().write(&fixture.storage, &target).unwrap();
    let restored = restore(t, &fixture.storage, &[handle], KeyGroupRange::all(MAX_PARALLELISM));
    let id = restored.registered_states().iter().position(|m| m.name == "v").unwrap();
    assert_eq!(
        restored.keys(id).unwrap(),
        vec![crate::codec::encode_value("new").unwrap()],
        "the expired key must not reach storage"
    );
}

// ---- snapshots ----

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
    assert_eq!(expected.len(), 500 * 5);
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
fn populate_subset(b: &mut dyn KeyedStateBackend, n: u32) -> StateDump {
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("value")).unwrap();
    let l = b.list_state(&ListStateDescriptor::<String>::new("list")).unwrap();
    let m = b.map_state(&MapStateDescriptor::<u32, String>::new("map")).unwrap();
    let range = b.key_group_range();
    for i in 0..n {
        let k = crate::codec::encode_value(&format!("key-{i}")).unwrap();
        if !range.contains(assign_to_key_group(&k, MAX_PARALLELISM)) {
            continue;
        }
        b.set_current_key(&k).unwrap();
        v.update(b, &u64::from(i)).unwrap();
        l.add_all(b, &[format!("a{i}"), format!("b{i}")]).unwrap();
        m.put(b, &i, &format!("m{i}")).unwrap();
    }
    dump(b).unwrap()
}

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

pub fn restore_from_missing_file_is_not_found(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    populate(b.as_mut(), 10);
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    let victim = handle.files[0].path.clone();
    fixture.storage.delete(&victim).unwrap();
    let err = t
        .backend
        .restore_keyed_backend(
            t.options(KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM),
            &[handle],
            &fixture.storage,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(&victim), "error must name the file: {err}");
}

fn restore_after_damage(t: &TestTarget, damage: impl Fn(Vec<u8>) -> Vec<u8>) -> crate::Error {
    let fixture = (t.storage)();
    let mut b = backend(t);
    populate(b.as_mut(), 50);
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    // The largest file: native snapshots may hold empty files (a WAL).
    let file = handle.files.iter().max_by_key(|f| f.size).unwrap().clone();
    let bytes = fixture.storage.read(&file.path).unwrap();
    fixture.storage.write(&file.path, damage(bytes)).unwrap();
    let err = t
        .backend
        .restore_keyed_backend(
            t.options(KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM),
            &[handle],
            &fixture.storage,
        )
        .unwrap_err();
    assert!(err.to_string().contains(&file.path), "error must name the file: {err}");
    err
}

pub fn restore_from_corrupt_file_is_checksum_mismatch(t: &TestTarget) {
    let err = restore_after_damage(t, |mut bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        bytes
    });
    assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{err}");
}

pub fn restore_from_truncated_file_is_detected(t: &TestTarget) {
    let err = restore_after_damage(t, |mut bytes| {
        bytes.truncate(bytes.len() - 7);
        bytes
    });
    assert!(
        matches!(err.kind(), ErrorKind::ChecksumMismatch | ErrorKind::Corrupt),
        "{err}"
    );
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

pub fn unsupported_snapshot_request_is_unsupported_error(t: &TestTarget) {
    let mut b = backend(t);
    let caps = b.capabilities();
    let mut asked = 0;
    if !caps.native_snapshots {
        let mut target = target_for(t, 1, "op-0");
        target.format = SnapshotFormat::Native;
        assert_eq!(
            b.snapshot(&target).err().map(|e| e.kind()),
            Some(ErrorKind::Unsupported)
        );
        asked += 1;
    }
    if !caps.incremental_snapshots {
        let mut target = target_for(t, 1, "op-0");
        target.incremental = true;
        assert_eq!(
            b.snapshot(&target).err().map(|e| e.kind()),
            Some(ErrorKind::Unsupported)
        );
        asked += 1;
    }
    if !caps.canonical_snapshots {
        let target = target_for(t, 1, "op-0");
        assert_eq!(
            b.snapshot(&target).err().map(|e| e.kind()),
            Some(ErrorKind::Unsupported)
        );
        asked += 1;
    }
    if asked == 0 {
        // A backend that supports everything must then honour every request.
        let fixture = (t.storage)();
        let mut target = target_for(t, 1, "op-0");
        target.incremental = true;
        target.format = SnapshotFormat::Native;
        b.snapshot(&target).unwrap().write(&fixture.storage, &target).unwrap();
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
