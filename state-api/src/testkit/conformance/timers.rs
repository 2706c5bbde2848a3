//! Conformance cases: timers: idempotent registration and deletion, firing
//! order, the timer's key and namespace in callbacks, and timers through
//! snapshots, incremental snapshots and rescaling restores.

use std::collections::BTreeSet;

use super::support::*;
use crate::codec::encode_value;
use crate::key_group::assign_to_key_group;
use crate::testkit::TestTarget;
use crate::timers::{TimeDomain, TimerService};
use crate::{ErrorKind, KeyGroupRange, KeyedStateBackend};

/// Polls every timer due at `up_to`: (timestamp, key, serialized namespace).
fn fire_all(
    b: &mut dyn KeyedStateBackend,
    timers: &mut TimerService,
    domain: TimeDomain,
    up_to: i64,
) -> Vec<(i64, String, Vec<u8>)> {
    let mut fired = Vec::new();
    while let Some(t) = timers.poll(b, domain, up_to).unwrap() {
        assert_eq!(b.current_key(), t.key.as_slice(), "poll sets the timer's key");
        let key: String = crate::codec::decode_value(&t.key).unwrap();
        fired.push((t.timestamp, key, t.namespace));
    }
    fired
}

pub fn timers_fire_in_timestamp_order_once_due(t: &TestTarget) {
    let mut b = backend(t);
    let mut timers = TimerService::open(b.as_mut()).unwrap();
    for (k, ns, ts) in [
        ("b", 1u32, 30i64),
        ("a", 1, 10),
        ("c", 2, 20),
        ("a", 2, 10),
        ("b", 1, -5),
    ] {
        key(b.as_mut(), k);
        assert!(timers
            .register(b.as_mut(), TimeDomain::EventTime, &encode_value(&ns).unwrap(), ts)
            .unwrap());
    }
    assert_eq!(timers.next_timestamp(TimeDomain::EventTime), Some(-5));
    assert!(fire_all(b.as_mut(), &mut timers, TimeDomain::EventTime, -6).is_empty());
    let ns = |n: u32| encode_value(&n).unwrap();
    assert_eq!(
        fire_all(b.as_mut(), &mut timers, TimeDomain::EventTime, 20),
        vec![
            (-5, "b".into(), ns(1)),
            (10, "a".into(), ns(1)),
            (10, "a".into(), ns(2)),
            (20, "c".into(), ns(2))
        ]
    );
    assert_eq!(timers.len(TimeDomain::EventTime), 1);
    assert!(
        fire_all(b.as_mut(), &mut timers, TimeDomain::ProcessingTime, i64::MAX).is_empty(),
        "domains are apart"
    );
    assert_eq!(
        fire_all(b.as_mut(), &mut timers, TimeDomain::EventTime, i64::MAX),
        vec![(30, "b".into(), ns(1))]
    );
    assert!(timers.is_empty());
}

pub fn registering_twice_keeps_one_timer_and_deleting_is_idempotent(t: &TestTarget) {
    let mut b = backend(t);
    let mut timers = TimerService::open(b.as_mut()).unwrap();
    let err = timers.register(b.as_mut(), TimeDomain::EventTime, &[], 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "no key yet: {err}");
    key(b.as_mut(), "a");
    let ns = encode_value(&7u32).unwrap();
    assert!(timers.register(b.as_mut(), TimeDomain::ProcessingTime, &ns, 5).unwrap());
    assert!(!timers.register(b.as_mut(), TimeDomain::ProcessingTime, &ns, 5).unwrap());
    assert_eq!(timers.len(TimeDomain::ProcessingTime), 1);
    assert!(!timers.delete(b.as_mut(), TimeDomain::ProcessingTime, &ns, 6).unwrap());
    assert!(!timers.delete(b.as_mut(), TimeDomain::EventTime, &ns, 5).unwrap());
    assert!(timers.delete(b.as_mut(), TimeDomain::ProcessingTime, &ns, 5).unwrap());
    assert!(!timers.delete(b.as_mut(), TimeDomain::ProcessingTime, &ns, 5).unwrap());
    assert!(timers.is_empty());
    let reopened = TimerService::open(b.as_mut()).unwrap();
    assert!(reopened.is_empty(), "a deleted timer is gone from the backend too");
}

/// Registers `n` keys' timers (two each, one deleted again for every third
/// key) and returns the model: (domain is event time, timestamp, key).
fn register_timers(b: &mut dyn KeyedStateBackend, timers: &mut TimerService, n: u32) -> BTreeSet<(bool, i64, String)> {
    let mut model = BTreeSet::new();
    for i in 0..n {
        let k = format!("key-{i}");
        key(b, &k);
        let ts = i64::from(i % 17);
        timers.register(b, TimeDomain::EventTime, &[], ts).unwrap();
        timers.register(b, TimeDomain::ProcessingTime, &[], 100 + ts).unwrap();
        model.insert((true, ts, k.clone()));
        model.insert((false, 100 + ts, k.clone()));
        if i % 3 == 0 {
            timers.delete(b, TimeDomain::ProcessingTime, &[], 100 + ts).unwrap();
            model.remove(&(false, 100 + ts, k));
        }
    }
    model
}

fn timers_of(b: &mut dyn KeyedStateBackend) -> BTreeSet<(bool, i64, String)> {
    let timers = TimerService::open(b).unwrap();
    let mut got = BTreeSet::new();
    for (event_time, domain) in [(true, TimeDomain::EventTime), (false, TimeDomain::ProcessingTime)] {
        for t in timers.timers(&*b, domain).unwrap() {
            got.insert((event_time, t.timestamp, crate::codec::decode_value(&t.key).unwrap()));
        }
    }
    got
}

pub fn timers_restore_exactly_split_by_key_group(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let mut timers = TimerService::open(b.as_mut()).unwrap();
    let model = register_timers(b.as_mut(), &mut timers, 300);
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    for parallelism in [1, 3] {
        let mut union = BTreeSet::new();
        for i in 0..parallelism {
            let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, parallelism, i);
            let mut r = restore(t, &fixture.storage, std::slice::from_ref(&handle), range);
            let restored = timers_of(r.as_mut());
            let expected: BTreeSet<_> = model
                .iter()
                .filter(|(_, _, k)| range.contains(assign_to_key_group(&encode_value(k).unwrap(), MAX_PARALLELISM)))
                .cloned()
                .collect();
            assert_eq!(restored, expected, "subtask {i} of {parallelism}");
            union.extend(restored);
        }
        assert_eq!(union, model, "parallelism {parallelism}");
    }
}

pub fn timers_fired_and_registered_after_a_snapshot_restore_from_the_next(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let mut timers = TimerService::open(b.as_mut()).unwrap();
    let mut model = register_timers(b.as_mut(), &mut timers, 120);
    let first = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    // Fire the event-time timers up to 8, add some: an incremental
    // snapshot must carry the removals as well as the new timers.
    let fired = fire_all(b.as_mut(), &mut timers, TimeDomain::EventTime, 8);
    assert!(!fired.is_empty());
    model.retain(|(event_time, ts, _)| !(*event_time && *ts <= 8));
    key(b.as_mut(), "late");
    timers.register(b.as_mut(), TimeDomain::EventTime, &[], 50).unwrap();
    model.insert((true, 50, "late".into()));
    let second = snapshot(t, b.as_mut(), &fixture.storage, 2, "op-0");
    let mut r = restore(t, &fixture.storage, &[second], KeyGroupRange::all(MAX_PARALLELISM));
    assert_eq!(timers_of(r.as_mut()), model);
    let mut r = restore(t, &fixture.storage, &[first], KeyGroupRange::all(MAX_PARALLELISM));
    let restored_first = TimerService::open(r.as_mut()).unwrap();
    assert_eq!(
        restored_first.len(TimeDomain::EventTime),
        120,
        "the first snapshot is unchanged"
    );
}

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_timers {
    ($target:expr) => {
        $crate::__conformance_cases!($target; timers;
            timers_fire_in_timestamp_order_once_due,
            registering_twice_keeps_one_timer_and_deleting_is_idempotent,
            timers_restore_exactly_split_by_key_group,
            timers_fired_and_registered_after_a_snapshot_restore_from_the_next,
        );
    };
}
