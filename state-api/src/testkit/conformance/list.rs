//! Conformance cases: List state: add, add_all, update, clear, order.

use super::support::*;
use crate::descriptor::ListStateDescriptor;
use crate::state::KeyedStateBackendExt;
use crate::testkit::TestTarget;

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

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_list {
    ($target:expr) => {
        $crate::__conformance_cases!($target; list;
            list_get_is_empty_before_add,
            list_add_preserves_insertion_order,
            list_add_all_appends_after_existing_elements,
            list_update_replaces_elements,
            list_update_with_nothing_clears,
            list_clear_removes_list,
        );
    };
}
