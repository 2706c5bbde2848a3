//! Conformance cases: Reducing and aggregating state.

use super::support::*;
use crate::descriptor::{AggregatingStateDescriptor, ReducingStateDescriptor};
use crate::state::KeyedStateBackendExt;
use crate::testkit::TestTarget;

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

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_folding {
    ($target:expr) => {
        $crate::__conformance_cases!($target; folding;
            reducing_state_folds_added_values,
            reducing_state_clear_starts_over,
            aggregating_state_folds_and_reports_result,
        );
    };
}
