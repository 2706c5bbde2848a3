//! Conformance cases: Value state: get, update, read-modify-write, scope, clear.

use super::support::*;
use crate::descriptor::ValueStateDescriptor;
use crate::state::KeyedStateBackendExt;
use crate::testkit::TestTarget;
use crate::{Error, ErrorKind, KeyGroupRange};

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

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_value {
    ($target:expr) => {
        $crate::__conformance_cases!($target; value;
            value_get_returns_none_before_update,
            value_update_then_get_returns_value,
            value_update_overwrites_previous_value,
            value_update_with_reads_and_writes_in_one_step,
            value_is_scoped_to_current_key,
            value_clear_removes_only_current_key,
        );
    };
}
