//! RocksDB's two timer stores (Flink's `ROCKSDB` and `HEAP` timer service
//! factories): timers fire in timestamp order from either, against a
//! BTreeSet model; only the RocksDB store reads them from RocksDB; and a
//! checkpoint of one store restores under the other's configuration.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use streamstate_api::testkit::{checkpoint_target, StorageFixture};
use streamstate_api::timers::{TimeDomain, TimerService};
use streamstate_api::{
    KeyGroupRange, KeyedBackendOptions, KeyedStateBackend, KeyedStateBackendExt, SnapshotFormat, StateBackend,
};
use streamstate_rocksdb::{RocksDbConfig, RocksDbStateBackend, TimerStore};

fn backend(store: TimerStore) -> RocksDbStateBackend {
    RocksDbStateBackend::new(RocksDbConfig {
        timer_store: store,
        ..RocksDbConfig::default()
    })
}

fn options(range: KeyGroupRange) -> KeyedBackendOptions {
    KeyedBackendOptions::new("timers", "op", range, 128)
}

/// Registers 3,000 timers over 500 keys (some twice, some deleted);
/// returns the model of what is registered: (timestamp, key, namespace).
fn register(b: &mut dyn KeyedStateBackend, timers: &mut TimerService) -> BTreeSet<(i64, u64, Vec<u8>)> {
    let mut model = BTreeSet::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..3_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = x % 500;
        let at = (x >> 20) as i64 % 10_000 - 2_000;
        let namespace = vec![(i % 3) as u8];
        b.set_current_key_typed(&key).unwrap();
        let new = timers.register(b, TimeDomain::EventTime, &namespace, at).unwrap();
        assert_eq!(
            new,
            model.insert((at, key, namespace.clone())),
            "registering twice changes nothing"
        );
        if i % 7 == 0 {
            assert!(timers.delete(b, TimeDomain::EventTime, &namespace, at).unwrap());
            model.remove(&(at, key, namespace));
        }
    }
    model
}

/// Fires every timer due by `up_to`, checking they come in timestamp
/// order; returns them as (timestamp, key, namespace), sorted (ties of a
/// timestamp fire in the order of the serialized keys, not of the numbers).
fn fire(b: &mut dyn KeyedStateBackend, timers: &mut TimerService, up_to: i64) -> Vec<(i64, u64, Vec<u8>)> {
    let mut fired = Vec::new();
    while let Some(timer) = timers.poll(b, TimeDomain::EventTime, up_to).unwrap() {
        let key: u64 = streamstate_api::codec::decode_value(&timer.key).unwrap();
        assert_eq!(b.current_key(), timer.key.as_slice(), "the timer's key is current");
        fired.push((timer.timestamp, key, timer.namespace));
    }
    assert!(
        fired.windows(2).all(|w| w[0].0 <= w[1].0),
        "timers fire in timestamp order"
    );
    fired.sort();
    fired
}

#[test]
fn both_timer_stores_fire_in_timestamp_order_and_only_rocksdb_s_reads_rocksdb() {
    for store in [TimerStore::RocksDb, TimerStore::Heap] {
        let mut b = backend(store)
            .create_keyed_backend(options(KeyGroupRange::all(128)))
            .unwrap();
        let mut timers = TimerService::open(b.as_mut()).unwrap();
        assert_eq!(timers.kept_in_backend(), store == TimerStore::RocksDb, "{store:?}");
        let model = register(b.as_mut(), &mut timers);
        assert_eq!(timers.len(TimeDomain::EventTime), model.len(), "{store:?}");
        // `timers` lists them in the order `poll` hands them out (polled
        // from a twin, registered the same way).
        let listed = timers.timers(b.as_ref(), TimeDomain::EventTime).unwrap();
        let mut twin = backend(store)
            .create_keyed_backend(options(KeyGroupRange::all(128)))
            .unwrap();
        let mut twin_timers = TimerService::open(twin.as_mut()).unwrap();
        register(twin.as_mut(), &mut twin_timers);
        let mut polled = Vec::new();
        while let Some(timer) = twin_timers
            .poll(twin.as_mut(), TimeDomain::EventTime, i64::MAX)
            .unwrap()
        {
            polled.push(timer);
        }
        assert_eq!(listed, polled, "{store:?}: listed in firing order");
        let first: Vec<_> = model.iter().filter(|(at, _, _)| *at <= 0).cloned().collect();
        assert_eq!(
            fire(b.as_mut(), &mut timers, 0),
            first,
            "{store:?}: the first half, in order"
        );
        // A service opened again finds the rest in the backend.
        let mut reopened = TimerService::open(b.as_mut()).unwrap();
        assert_eq!(reopened.len(TimeDomain::EventTime), model.len() - first.len());
        let rest: Vec<_> = model.iter().filter(|(at, _, _)| *at > 0).cloned().collect();
        assert_eq!(
            fire(b.as_mut(), &mut reopened, i64::MAX),
            rest,
            "{store:?}: the rest, in order"
        );
        assert!(reopened.is_empty());
    }
}

#[test]
fn a_checkpoint_of_one_timer_store_restores_under_the_other_at_another_parallelism() {
    for (from, to) in [
        (TimerStore::RocksDb, TimerStore::Heap),
        (TimerStore::Heap, TimerStore::RocksDb),
    ] {
        for format in [SnapshotFormat::Native, SnapshotFormat::Canonical] {
            let fixture = StorageFixture::local_dir();
            let mut b = backend(from)
                .create_keyed_backend(options(KeyGroupRange::all(128)))
                .unwrap();
            let mut timers = TimerService::open(b.as_mut()).unwrap();
            let model = register(b.as_mut(), &mut timers);
            let target = checkpoint_target("timers", 1, format, false, "op-0");
            let handle = b.snapshot(&target).unwrap().write(&fixture.storage, &target).unwrap();
            drop(b);
            // Restored in two halves: each fires exactly its key groups'
            // timers, in order.
            let mut fired = BTreeSet::new();
            for subtask in 0..2 {
                let range = KeyGroupRange::for_subtask(128, 2, subtask);
                let mut r = backend(to)
                    .restore_keyed_backend(options(range), std::slice::from_ref(&handle), &fixture.storage)
                    .unwrap();
                let mut timers = TimerService::open(r.as_mut()).unwrap();
                // A native restore keeps the checkpoint's layout; a
                // canonical one takes the configured store.
                let expected_store = if format == SnapshotFormat::Native { from } else { to };
                assert_eq!(
                    timers.kept_in_backend(),
                    expected_store == TimerStore::RocksDb,
                    "{from:?} -> {to:?} {format:?}"
                );
                for timer in fire(r.as_mut(), &mut timers, i64::MAX) {
                    let key = streamstate_api::codec::encode_value(&timer.1).unwrap();
                    assert!(range.contains(streamstate_api::key_group::assign_to_key_group(&key, 128)));
                    assert!(fired.insert(timer), "fired once");
                }
            }
            assert_eq!(fired, model, "{from:?} -> {to:?} {format:?}: every timer, once");
        }
    }
}

#[test]
fn timers_are_listed_in_firing_order_when_keys_differ_in_length() {
    // At one timestamp the shorter serialized key fires first: (128, "a")
    // is 4 bytes, (1, "aaaa") 6, though its bytes sort first.
    for store in [TimerStore::RocksDb, TimerStore::Heap] {
        let mut b = backend(store)
            .create_keyed_backend(options(KeyGroupRange::all(128)))
            .unwrap();
        let mut timers = TimerService::open(b.as_mut()).unwrap();
        let keys = [(1u64, "aaaa".to_owned()), (128u64, "a".to_owned())];
        for key in &keys {
            b.set_current_key_typed(key).unwrap();
            timers.register(b.as_mut(), TimeDomain::EventTime, &[], 7).unwrap();
        }
        let decode = |t: &streamstate_api::timers::Timer| -> (u64, String) {
            streamstate_api::codec::decode_value(&t.key).unwrap()
        };
        let listed: Vec<_> = timers
            .timers(b.as_ref(), TimeDomain::EventTime)
            .unwrap()
            .iter()
            .map(decode)
            .collect();
        let mut polled = Vec::new();
        while let Some(t) = timers.poll(b.as_mut(), TimeDomain::EventTime, i64::MAX).unwrap() {
            polled.push(decode(&t));
        }
        assert_eq!(
            polled,
            [keys[1].clone(), keys[0].clone()],
            "{store:?}: the shorter key first"
        );
        assert_eq!(listed, polled, "{store:?}: listed in firing order");
    }
}
