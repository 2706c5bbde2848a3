//! Conformance cases: State TTL: expiry per value, element and entry; refresh; purge at snapshot.

use std::sync::Arc;
use std::time::Duration;

use super::support::*;
use crate::backend::SnapshotFormat;
use crate::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use crate::state::KeyedStateBackendExt;
use crate::testkit::TestTarget;
use crate::ttl::{ManualClock, TtlConfig, TtlUpdateType};
use crate::KeyGroupRange;

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

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_ttl {
    ($target:expr) => {
        $crate::__conformance_cases!($target; ttl;
            ttl_value_is_not_returned_after_expiry,
            ttl_list_elements_expire_individually,
            ttl_map_entries_expire_individually,
            ttl_on_read_and_write_refreshes_on_read,
            ttl_expired_values_are_purged_at_snapshot,
        );
    };
}
