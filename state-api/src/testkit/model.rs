//! Model-based property tests: random operations on every state kind over
//! many keys, snapshots at random points (written only after later
//! operations ran, to test isolation), and restores at random parallelism,
//! with every read compared against a plain `BTreeMap` model. Namespaced
//! states (a sum and a list per namespace, merged as session windows merge)
//! and timers of both domains (registered, deleted and fired) are part of
//! the model too.
//!
//! The number of cases is `PROPTEST_CASES` (default 256, or the target's
//! [`TestTarget::property_cases`]), split over
//! [`PARTS`] tests that run in parallel. On failure the
//! minimal (shrunk) operation sequence and the seed are printed; rerun with
//! `STREAMSTATE_PROPTEST_SEED=<seed>` to reproduce it exactly.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use super::{dump, TestTarget};
use crate::backend::{AsyncSnapshot, KeyedStateBackend, KeyedStateHandle, SnapshotKind, SnapshotTarget};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::key_group::assign_to_key_group;
use crate::namespaced::{NamespacedListState, NamespacedReducingState, NamespacedStateExt};
use crate::state::{AggregatingState, KeyedStateBackendExt, ListState, MapState, ReducingState, ValueState};
use crate::storage::CheckpointStorage;
use crate::timers::{TimeDomain, TimerService};
use crate::KeyGroupRange;

const MAX_PARALLELISM: u32 = 32;
const KEYS: u16 = 24;

/// One step of a test case.
#[derive(Debug, Clone)]
pub enum Op {
    /// Select a key.
    Key(u16),
    /// `ValueState::update`.
    ValueSet(u32),
    /// `ValueState::update_with` adding to the value (absent: 0).
    ValueAdd(u32),
    /// `ValueState::clear`.
    ValueClear,
    /// `ListState::add`.
    ListAdd(u8),
    /// `ListState::update`.
    ListSet(Vec<u8>),
    /// `ListState::clear`.
    ListClear,
    /// `MapState::put`.
    MapPut(u8, u16),
    /// `MapState::remove`.
    MapRemove(u8),
    /// `MapState::clear`.
    MapClear,
    /// `ReducingState::add` (sum).
    Reduce(u32),
    /// `AggregatingState::add` (count and sum).
    Aggregate(u32),
    /// Synchronous snapshot phase now; the write happens later.
    Snapshot,
    /// Restore the last written snapshot at `parallelism`, check every
    /// subtask, then merge back into one backend and go on.
    Restore(u32),
    /// `KeyedStateBackend::prefetch` of these keys' cells of one state (by
    /// its index among the five; the map's is ignored): changes nothing a
    /// read sees, nor the current key.
    Prefetch(u8, Vec<u16>),
    /// `NamespacedReducingState::add` (sum) in a namespace.
    NsReduce(u8, u32),
    /// `NamespacedListState::add` in a namespace.
    NsListAdd(u8, u8),
    /// Clear both namespaced states in a namespace (a purged window).
    NsClear(u8),
    /// `merge_namespaces(target, sources)` on both namespaced states.
    NsMerge(u8, Vec<u8>),
    /// `TimerService::register` for the current key: event time (`true`)
    /// or processing time, namespace, timestamp.
    TimerSet(bool, u8, i64),
    /// `TimerService::delete` for the current key.
    TimerDelete(bool, u8, i64),
    /// `TimerService::poll` until nothing is due at the timestamp; the
    /// timers fired must be the model's due timers, in order.
    TimerFire(bool, i64),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS).prop_map(Op::Key),
        3 => any::<u32>().prop_map(Op::ValueSet),
        2 => (0u32..1000).prop_map(Op::ValueAdd),
        1 => Just(Op::ValueClear),
        3 => any::<u8>().prop_map(Op::ListAdd),
        1 => proptest::collection::vec(any::<u8>(), 0..4).prop_map(Op::ListSet),
        1 => Just(Op::ListClear),
        3 => (0u8..6, any::<u16>()).prop_map(|(k, v)| Op::MapPut(k, v)),
        1 => (0u8..6).prop_map(Op::MapRemove),
        1 => Just(Op::MapClear),
        2 => (0u32..1000).prop_map(Op::Reduce),
        2 => (0u32..1000).prop_map(Op::Aggregate),
        1 => Just(Op::Snapshot),
        1 => (1u32..=4).prop_map(Op::Restore),
        1 => (0u8..5, proptest::collection::vec(0..KEYS, 0..20)).prop_map(|(s, keys)| Op::Prefetch(s, keys)),
        2 => (0u8..4, 0u32..1000).prop_map(|(ns, x)| Op::NsReduce(ns, x)),
        2 => (0u8..4, any::<u8>()).prop_map(|(ns, x)| Op::NsListAdd(ns, x)),
        1 => (0u8..4).prop_map(Op::NsClear),
        1 => (0u8..4, proptest::collection::vec(0u8..4, 0..3)).prop_map(|(t, s)| Op::NsMerge(t, s)),
        3 => (any::<bool>(), 0u8..3, -5i64..20).prop_map(|(d, ns, ts)| Op::TimerSet(d, ns, ts)),
        1 => (any::<bool>(), 0u8..3, -5i64..20).prop_map(|(d, ns, ts)| Op::TimerDelete(d, ns, ts)),
        1 => (any::<bool>(), -5i64..25).prop_map(|(d, ts)| Op::TimerFire(d, ts)),
    ]
}

/// Operation sequences of up to 120 steps.
pub fn operations() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op_strategy(), 1..120)
}

#[derive(Debug, Clone, Default, PartialEq)]
struct KeyModel {
    value: Option<u32>,
    list: Vec<u8>,
    map: BTreeMap<u8, u16>,
    sum: Option<u64>,
    agg: Option<(u64, u64)>,
    /// The namespaced sum per namespace.
    ns_sum: BTreeMap<u8, u64>,
    /// The namespaced list per namespace.
    ns_list: BTreeMap<u8, Vec<u8>>,
    /// The key's timers: (event time?, timestamp, namespace).
    timers: BTreeSet<(bool, i64, u8)>,
}

type Model = BTreeMap<u16, KeyModel>;

struct CountSum;
impl AggregateFunction for CountSum {
    type In = u32;
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: &u32, acc: (u64, u64)) -> (u64, u64) {
        (acc.0 + 1, acc.1 + u64::from(*value))
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

struct States {
    value: ValueState<u32>,
    list: ListState<u8>,
    map: MapState<u8, u16>,
    sum: ReducingState<u64>,
    agg: AggregatingState<CountSum>,
    ns_sum: NamespacedReducingState<u8, u64>,
    ns_list: NamespacedListState<u8, u8>,
}

fn domain(event_time: bool) -> TimeDomain {
    if event_time {
        TimeDomain::EventTime
    } else {
        TimeDomain::ProcessingTime
    }
}

impl States {
    fn register(b: &mut dyn KeyedStateBackend) -> crate::Result<Self> {
        Ok(Self {
            value: b.value_state(&ValueStateDescriptor::new("value"))?,
            list: b.list_state(&ListStateDescriptor::new("list"))?,
            map: b.map_state(&MapStateDescriptor::new("map"))?,
            sum: b.reducing_state(&ReducingStateDescriptor::new("sum", |a: &u64, c: &u64| a + c))?,
            agg: b.aggregating_state(&AggregatingStateDescriptor::new("agg", CountSum))?,
            ns_sum: b.namespaced_reducing_state(&ReducingStateDescriptor::new("ns_sum", |a: &u64, c: &u64| a + c))?,
            ns_list: b.namespaced_list_state(&ListStateDescriptor::new("ns_list"))?,
        })
    }

    fn read(&self, b: &mut dyn KeyedStateBackend, timer_service: &TimerService) -> crate::Result<KeyModel> {
        let mut ns_sum = BTreeMap::new();
        for ns in self.ns_sum.namespaces(b)? {
            ns_sum.insert(ns, self.ns_sum.get(b, &ns)?.unwrap_or(0));
        }
        let mut ns_list = BTreeMap::new();
        for ns in self.ns_list.namespaces(b)? {
            ns_list.insert(ns, self.ns_list.get(b, &ns)?);
        }
        let mut timers = BTreeSet::new();
        for event_time in [true, false] {
            for timer in timer_service.timers(&*b, domain(event_time))? {
                if timer.key == b.current_key() {
                    timers.insert((
                        event_time,
                        timer.timestamp,
                        crate::codec::decode_value(&timer.namespace)?,
                    ));
                }
            }
        }
        Ok(KeyModel {
            value: self.value.value(b)?,
            list: self.list.get(b)?,
            map: self.map.entries(b)?.into_iter().collect(),
            sum: self.sum.get(b)?,
            agg: self.agg.get(b)?,
            ns_sum,
            ns_list,
            timers,
        })
    }
}

fn key_bytes(key: u16) -> Vec<u8> {
    crate::codec::encode_value(&key).unwrap()
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

struct Run<'a> {
    target: &'a TestTarget,
    storage: CheckpointStorage,
    backend: Box<dyn KeyedStateBackend>,
    states: States,
    timers: TimerService,
    model: Model,
    key: u16,
    next_id: u64,
    pending: Option<(Box<dyn AsyncSnapshot>, SnapshotTarget, Model)>,
    last: Option<(Vec<KeyedStateHandle>, Model)>,
}

impl Run<'_> {
    fn snapshot_target(&mut self, stem: &str) -> SnapshotTarget {
        self.next_id += 1;
        SnapshotTarget {
            checkpoint_id: self.next_id,
            kind: SnapshotKind::Checkpoint,
            format: self.target.format,
            incremental: self.target.incremental,
            base: "model-job/".into(),
            exclusive_dir: format!("chk-{}", self.next_id),
            shared_dir: "shared".into(),
            file_stem: stem.into(),
        }
    }

    fn flush_pending(&mut self) -> Result<(), TestCaseError> {
        if let Some((pending, target, model)) = self.pending.take() {
            let handle = pending
                .write(&self.storage, &target)
                .map_err(|e| fail(format!("snapshot write: {e}")))?;
            self.last = Some((vec![handle], model));
        }
        Ok(())
    }

    fn restore(&mut self, parallelism: u32) -> Result<(), TestCaseError> {
        self.flush_pending()?;
        let (handles, model) = self.last.clone().unwrap_or_default();
        // Restore every subtask of the new parallelism and check its share.
        let mut subtask_handles = Vec::new();
        for i in 0..parallelism {
            let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, parallelism, i);
            let options = self.target.options(range, MAX_PARALLELISM);
            let mut part = self
                .target
                .backend
                .restore_keyed_backend(options, &handles, &self.storage)
                .map_err(|e| fail(format!("restore subtask {i}/{parallelism}: {e}")))?;
            let states = States::register(part.as_mut()).map_err(|e| fail(e.to_string()))?;
            let timers = TimerService::open(part.as_mut()).map_err(|e| fail(e.to_string()))?;
            for (key, expected) in &model {
                if range.contains(assign_to_key_group(&key_bytes(*key), MAX_PARALLELISM)) {
                    part.set_current_key(&key_bytes(*key))
                        .map_err(|e| fail(e.to_string()))?;
                    let got = states.read(part.as_mut(), &timers).map_err(|e| fail(e.to_string()))?;
                    prop_assert_eq!(&got, expected, "key {} in subtask {}/{}", key, i, parallelism);
                }
            }
            let owned: usize = model
                .keys()
                .filter(|k| range.contains(assign_to_key_group(&key_bytes(**k), MAX_PARALLELISM)))
                .filter(|k| model[*k] != KeyModel::default())
                .count();
            let stored: std::collections::BTreeSet<Vec<u8>> = dump(part.as_mut())
                .map_err(|e| fail(e.to_string()))?
                .into_keys()
                .map(|(_, k)| k)
                .collect();
            prop_assert_eq!(
                stored.len(),
                owned,
                "subtask {}/{} holds exactly its keys",
                i,
                parallelism
            );
            let target = self.snapshot_target(&format!("part-{i}"));
            let snap = part.snapshot(&target).map_err(|e| fail(e.to_string()))?;
            subtask_handles.push(snap.write(&self.storage, &target).map_err(|e| fail(e.to_string()))?);
        }
        // Merge the subtasks' snapshots back into one backend and go on.
        let options = self
            .target
            .options(KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        self.backend = self
            .target
            .backend
            .restore_keyed_backend(options, &subtask_handles, &self.storage)
            .map_err(|e| fail(format!("merge restore: {e}")))?;
        self.states = States::register(self.backend.as_mut()).map_err(|e| fail(e.to_string()))?;
        self.timers = TimerService::open(self.backend.as_mut()).map_err(|e| fail(e.to_string()))?;
        self.model = model;
        self.backend
            .set_current_key(&key_bytes(self.key))
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let b = self.backend.as_mut();
        let s = &self.states;
        let m = self.model.entry(self.key).or_default();
        let err = |e: crate::Error| fail(format!("{op:?}: {e}"));
        match op {
            Op::Key(k) => {
                self.key = *k;
                b.set_current_key(&key_bytes(*k)).map_err(err)?;
            }
            Op::ValueSet(v) => {
                s.value.update(b, v).map_err(err)?;
                m.value = Some(*v);
            }
            Op::ValueAdd(x) => {
                s.value
                    .update_with(b, |old| old.unwrap_or(0).wrapping_add(*x))
                    .map_err(err)?;
                m.value = Some(m.value.unwrap_or(0).wrapping_add(*x));
            }
            Op::ValueClear => {
                s.value.clear(b).map_err(err)?;
                m.value = None;
            }
            Op::ListAdd(x) => {
                s.list.add(b, x).map_err(err)?;
                m.list.push(*x);
            }
            Op::ListSet(xs) => {
                s.list.update(b, xs).map_err(err)?;
                m.list = xs.clone();
            }
            Op::ListClear => {
                s.list.clear(b).map_err(err)?;
                m.list.clear();
            }
            Op::MapPut(k, v) => {
                s.map.put(b, k, v).map_err(err)?;
                m.map.insert(*k, *v);
            }
            Op::MapRemove(k) => {
                s.map.remove(b, k).map_err(err)?;
                m.map.remove(k);
            }
            Op::MapClear => {
                s.map.clear(b).map_err(err)?;
                m.map.clear();
            }
            Op::Reduce(x) => {
                s.sum.add(b, u64::from(*x)).map_err(err)?;
                m.sum = Some(m.sum.unwrap_or(0) + u64::from(*x));
            }
            Op::Aggregate(x) => {
                s.agg.add(b, x).map_err(err)?;
                let (c, sum) = m.agg.unwrap_or((0, 0));
                m.agg = Some((c + 1, sum + u64::from(*x)));
            }
            Op::Snapshot => {
                self.flush_pending()?;
                let target = self.snapshot_target("op-0");
                let pending = self.backend.snapshot(&target).map_err(err)?;
                self.pending = Some((pending, target, self.model.clone()));
            }
            Op::Restore(p) => self.restore(*p)?,
            Op::Prefetch(state, keys) => {
                let id = [s.value.id(), s.list.id(), s.map.id(), s.sum.id(), s.agg.id()][usize::from(*state)];
                let keys: Vec<Vec<u8>> = keys.iter().map(|k| key_bytes(*k)).collect();
                let slices: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                std::hint::black_box(b.prefetch(id, &slices));
                let current = key_bytes(self.key);
                prop_assert_eq!(b.current_key(), current.as_slice(), "a prefetch keeps the current key");
            }
            Op::NsReduce(ns, x) => {
                s.ns_sum.add(b, ns, u64::from(*x)).map_err(err)?;
                *m.ns_sum.entry(*ns).or_default() += u64::from(*x);
            }
            Op::NsListAdd(ns, x) => {
                s.ns_list.add(b, ns, x).map_err(err)?;
                m.ns_list.entry(*ns).or_default().push(*x);
            }
            Op::NsClear(ns) => {
                s.ns_sum.clear(b, ns).map_err(err)?;
                s.ns_list.clear(b, ns).map_err(err)?;
                m.ns_sum.remove(ns);
                m.ns_list.remove(ns);
            }
            Op::NsMerge(target, sources) => {
                s.ns_sum.merge_namespaces(b, target, sources).map_err(err)?;
                s.ns_list.merge_namespaces(b, target, sources).map_err(err)?;
                for source in sources.iter().filter(|s| *s != target) {
                    if let Some(x) = m.ns_sum.remove(source) {
                        *m.ns_sum.entry(*target).or_default() += x;
                    }
                    if let Some(xs) = m.ns_list.remove(source) {
                        m.ns_list.entry(*target).or_default().extend(xs);
                    }
                }
            }
            Op::TimerSet(event_time, ns, ts) => {
                let ns_bytes = crate::codec::encode_value(ns).unwrap();
                let new = self
                    .timers
                    .register(b, domain(*event_time), &ns_bytes, *ts)
                    .map_err(err)?;
                prop_assert_eq!(new, m.timers.insert((*event_time, *ts, *ns)), "{:?} is new", op);
            }
            Op::TimerDelete(event_time, ns, ts) => {
                let ns_bytes = crate::codec::encode_value(ns).unwrap();
                let had = self
                    .timers
                    .delete(b, domain(*event_time), &ns_bytes, *ts)
                    .map_err(err)?;
                prop_assert_eq!(had, m.timers.remove(&(*event_time, *ts, *ns)), "{:?} found one", op);
            }
            Op::TimerFire(event_time, up_to) => {
                // The model's due timers, in firing order: timestamp, then
                // serialized key, then serialized namespace.
                let mut due = Vec::new();
                for (key, km) in &mut self.model {
                    km.timers.retain(|&(e, ts, ns)| {
                        let fires = e == *event_time && ts <= *up_to;
                        if fires {
                            due.push((ts, key_bytes(*key), crate::codec::encode_value(&ns).unwrap()));
                        }
                        !fires
                    });
                }
                due.sort();
                let mut fired = Vec::new();
                while let Some(t) = self.timers.poll(b, domain(*event_time), *up_to).map_err(err)? {
                    prop_assert_eq!(b.current_key(), t.key.as_slice(), "poll sets the timer's key");
                    fired.push((t.timestamp, t.key, t.namespace));
                }
                prop_assert_eq!(fired, due, "{:?} fires the due timers in order", op);
                b.set_current_key(&key_bytes(self.key)).map_err(err)?;
            }
        }
        // Every step: the current key reads exactly what the model holds.
        let got = self
            .states
            .read(self.backend.as_mut(), &self.timers)
            .map_err(|e| fail(e.to_string()))?;
        let expected = self.model.get(&self.key).cloned().unwrap_or_default();
        prop_assert_eq!(got, expected, "after {:?} on key {}", op, self.key);
        Ok(())
    }
}

fn check(target: &TestTarget, ops: &[Op]) -> Result<(), TestCaseError> {
    let fixture = (target.storage)();
    let mut backend = target.create_full(MAX_PARALLELISM).map_err(|e| fail(e.to_string()))?;
    let states = States::register(backend.as_mut()).map_err(|e| fail(e.to_string()))?;
    let timers = TimerService::open(backend.as_mut()).map_err(|e| fail(e.to_string()))?;
    backend
        .set_current_key(&key_bytes(0))
        .map_err(|e| fail(e.to_string()))?;
    let mut run = Run {
        target,
        storage: fixture.storage.clone(),
        backend,
        states,
        timers,
        model: Model::new(),
        key: 0,
        next_id: 0,
        pending: None,
        last: None,
    };
    for op in ops {
        run.apply(op)?;
    }
    // Finally, the whole state against the whole model.
    for (key, expected) in run.model.clone() {
        run.backend
            .set_current_key(&key_bytes(key))
            .map_err(|e| fail(e.to_string()))?;
        let got = run
            .states
            .read(run.backend.as_mut(), &run.timers)
            .map_err(|e| fail(e.to_string()))?;
        prop_assert_eq!(got, expected, "final state of key {}", key);
    }
    run.flush_pending()?;
    Ok(())
}

/// The property's cases are split over this many tests.
pub const PARTS: u64 = 8;

/// Runs part `part` of [`PARTS`] of the property: together the parts run
/// `PROPTEST_CASES` cases (default [`TestTarget::property_cases`], 256
/// unless the target lowers it), each part from its own seed
/// (random, or derived from `STREAMSTATE_PROPTEST_SEED`).
///
/// # Panics
/// On a failing case, with the minimal case and the seed to reproduce it.
pub fn run_part(target: &TestTarget, part: u64) {
    let total: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(target.property_cases);
    let cases = total.div_ceil(PARTS as u32);
    let seed: u64 = std::env::var("STREAMSTATE_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            crate::ttl::Clock::now_ms(&crate::ttl::SystemClock) ^ (u64::from(std::process::id()) << 40) ^ (part << 56)
        });
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    match runner.run(&operations(), |ops| check(target, &ops)) {
        Ok(()) => eprintln!(
            "model property part {part}: {cases} cases passed on backend `{}` (seed {seed})",
            target.backend.name()
        ),
        Err(TestError::Fail(reason, minimal)) => panic!(
            "model property failed on backend `{}`: {reason}\nminimal case: {minimal:#?}\nreproduce with STREAMSTATE_PROPTEST_SEED={seed}",
            target.backend.name()
        ),
        Err(TestError::Abort(reason)) => panic!("model property aborted: {reason} (seed {seed})"),
    }
}
