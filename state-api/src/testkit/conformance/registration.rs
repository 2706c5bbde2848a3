//! Conformance cases: Registering states, and calls the contract rejects.

use super::support::*;
use crate::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use crate::key_group::assign_to_key_group;
use crate::state::KeyedStateBackendExt;
use crate::testkit::TestTarget;
use crate::{ErrorKind, KeyGroupRange};

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

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_registration {
    ($target:expr) => {
        $crate::__conformance_cases!($target; registration;
            states_with_different_names_are_independent,
            registering_same_name_twice_returns_same_state,
            registering_same_name_with_other_kind_is_incompatible,
            key_outside_key_group_range_is_rejected,
            unknown_state_id_is_invalid_argument,
            cell_call_on_map_state_is_invalid_argument,
        );
    };
}
