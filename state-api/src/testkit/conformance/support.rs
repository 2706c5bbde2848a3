//! What the conformance cases share: a backend for a target, snapshot,
//! restore and commit helpers, and `populate`, which fills every kind of
//! state.

use std::sync::Arc;

use crate::backend::{KeyedStateBackend, SnapshotKind, SnapshotTarget};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::key_group::assign_to_key_group;
use crate::namespaced::NamespacedStateExt;
use crate::snapshot::manifest::{OperatorSnapshot, SnapshotManifest};
use crate::state::KeyedStateBackendExt;
use crate::storage::CheckpointStorage;
use crate::testkit::{dump, StateDump, TestTarget};
use crate::timers::{TimeDomain, TimerService};
use crate::ttl::ManualClock;
use crate::{KeyGroupRange, KeyedStateHandle};

pub(super) const MAX_PARALLELISM: u32 = 128;
pub(super) const JOB: &str = "conformance-job";

pub(super) fn backend(target: &TestTarget) -> Box<dyn KeyedStateBackend> {
    target.create_full(MAX_PARALLELISM).unwrap()
}

pub(super) fn backend_with_clock(target: &TestTarget, clock: Arc<ManualClock>) -> Box<dyn KeyedStateBackend> {
    let options = target
        .options(KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM)
        .with_clock(clock);
    target.backend.create_keyed_backend(options).unwrap()
}

pub(super) fn key(b: &mut dyn KeyedStateBackend, k: &str) {
    b.set_current_key_typed(k).unwrap();
}

/// A checkpoint target in the format the target under test asks for.
pub(super) fn target_for(t: &TestTarget, id: u64, stem: &str) -> SnapshotTarget {
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
pub(super) fn snapshot(
    t: &TestTarget,
    b: &mut dyn KeyedStateBackend,
    storage: &CheckpointStorage,
    id: u64,
    stem: &str,
) -> KeyedStateHandle {
    let target = target_for(t, id, stem);
    b.snapshot(&target).unwrap().write(storage, &target).unwrap()
}

pub(super) fn restore(
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

pub(super) fn commit(storage: &CheckpointStorage, id: u64, handles: Vec<KeyedStateHandle>) {
    let mut manifest = SnapshotManifest::new(JOB, id, SnapshotKind::Checkpoint, MAX_PARALLELISM);
    manifest.operators.push(OperatorSnapshot {
        operator_id: "op".into(),
        parallelism: handles.len() as u32,
        keyed_state: handles,
        operator_state: vec![],
    });
    storage.commit(&manifest).unwrap();
}

pub(super) struct Sum;
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
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// A window as a namespace: (start, end) in milliseconds.
pub(super) type Window = (i64, i64);

/// Adds one to the current key's count in the window of `i`, and an
/// event-time timer at the window's end: what a window operator stores.
fn add_to_window(b: &mut dyn KeyedStateBackend, timers: &mut TimerService, i: u32) {
    let windows = b
        .namespaced_reducing_state::<Window, u64>(&ReducingStateDescriptor::new("window", |a, c| a + c))
        .unwrap();
    let start = i64::from(i % 3) * 10;
    let window: Window = (start, start + 10);
    windows.add(b, &window, 1).unwrap();
    let ns = crate::codec::encode_value(&window).unwrap();
    timers.register(b, TimeDomain::EventTime, &ns, window.1 - 1).unwrap();
    timers
        .register(b, TimeDomain::ProcessingTime, &[], 1_000 + i64::from(i))
        .unwrap();
}

/// Fills every kind of state, a namespaced state and timers of both
/// domains for `n` keys and returns the dump.
pub(super) fn populate(b: &mut dyn KeyedStateBackend, n: u32) -> StateDump {
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("value")).unwrap();
    let l = b.list_state(&ListStateDescriptor::<String>::new("list")).unwrap();
    let m = b.map_state(&MapStateDescriptor::<u32, String>::new("map")).unwrap();
    let r = b
        .reducing_state(&ReducingStateDescriptor::new("reduce", |a: &u64, c: &u64| a + c))
        .unwrap();
    let a = b
        .aggregating_state(&AggregatingStateDescriptor::new("agg", Sum))
        .unwrap();
    let mut timers = TimerService::open(b).unwrap();
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
        add_to_window(b, &mut timers, i);
    }
    dump(b).unwrap()
}

pub(super) fn in_range(d: &StateDump, range: KeyGroupRange) -> StateDump {
    d.iter()
        .filter(|((_, k), _)| range.contains(assign_to_key_group(k, MAX_PARALLELISM)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(super) fn populate_subset(b: &mut dyn KeyedStateBackend, n: u32) -> StateDump {
    let v = b.value_state(&ValueStateDescriptor::<u64>::new("value")).unwrap();
    let l = b.list_state(&ListStateDescriptor::<String>::new("list")).unwrap();
    let m = b.map_state(&MapStateDescriptor::<u32, String>::new("map")).unwrap();
    let mut timers = TimerService::open(b).unwrap();
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
        add_to_window(b, &mut timers, i);
    }
    dump(b).unwrap()
}

pub(super) fn restore_after_damage(t: &TestTarget, damage: impl Fn(Vec<u8>) -> Vec<u8>) -> crate::Error {
    let fixture = (t.storage)();
    let mut b = backend(t);
    populate(b.as_mut(), 50);
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    // The largest file: native snapshots may hold empty files (a WAL).
    let file = handle.files.iter().max_by_key(|f| f.size).unwrap().clone();
    let bytes = fixture.storage.read(&file.path).unwrap();
    fixture.storage.write(&file.path, damage(bytes)).unwrap();
    let err = restore_err(t, &fixture.storage, handle);
    assert!(err.to_string().contains(&file.path), "error must name the file: {err}");
    err
}

/// The error of restoring all key groups from `handle`, which must fail.
pub(super) fn restore_err(t: &TestTarget, storage: &CheckpointStorage, handle: KeyedStateHandle) -> crate::Error {
    t.backend
        .restore_keyed_backend(
            t.options(KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM),
            &[handle],
            storage,
        )
        .unwrap_err()
}
