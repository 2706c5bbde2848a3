//! Conformance cases: Map state: get, put, remove, entries in serialized-key order, clear.

use super::support::*;
use crate::descriptor::MapStateDescriptor;
use crate::state::KeyedStateBackendExt;
use crate::testkit::TestTarget;

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

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_map {
    ($target:expr) => {
        $crate::__conformance_cases!($target; map;
            map_get_of_absent_user_key_returns_none,
            map_put_get_remove_round_trip,
            map_entries_are_ordered_by_serialized_user_key,
            map_contains_and_is_empty_follow_puts_and_removes,
            map_clear_removes_only_current_key_entries,
        );
    };
}
