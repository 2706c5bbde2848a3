//! Conformance cases: namespaced state: per-namespace cells of every kind,
//! merging, registration rules, and namespaces through snapshot and restore.

use std::time::Duration;

use super::support::*;
use crate::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor,
};
use crate::namespaced::NamespacedStateExt;
use crate::state::KeyedStateBackendExt;
use crate::testkit::{dump, TestTarget};
use crate::ttl::TtlConfig;
use crate::{ErrorKind, KeyGroupRange};

pub fn namespaced_value_is_separate_per_namespace_and_key(t: &TestTarget) {
    let mut b = backend(t);
    let s = b
        .namespaced_value_state::<u32, String>(&ValueStateDescriptor::new("v"))
        .unwrap();
    key(b.as_mut(), "a");
    s.update(b.as_mut(), &1, &"a1".to_owned()).unwrap();
    s.update(b.as_mut(), &2, &"a2".to_owned()).unwrap();
    key(b.as_mut(), "b");
    assert_eq!(s.value(b.as_ref(), &1).unwrap(), None, "another key sees nothing");
    s.update(b.as_mut(), &1, &"b1".to_owned()).unwrap();
    key(b.as_mut(), "a");
    assert_eq!(s.value(b.as_ref(), &1).unwrap().as_deref(), Some("a1"));
    assert_eq!(s.namespaces(b.as_ref()).unwrap(), vec![1, 2]);
    s.clear(b.as_mut(), &1).unwrap();
    assert_eq!(s.value(b.as_ref(), &1).unwrap(), None);
    assert_eq!(
        s.value(b.as_ref(), &2).unwrap().as_deref(),
        Some("a2"),
        "clearing one namespace keeps the others"
    );
    key(b.as_mut(), "b");
    assert_eq!(s.value(b.as_ref(), &1).unwrap().as_deref(), Some("b1"));
}

pub fn namespaced_state_and_the_default_namespace_do_not_mix(t: &TestTarget) {
    let mut b = backend(t);
    let plain = b.value_state(&ValueStateDescriptor::<u64>::new("plain")).unwrap();
    let windows = b
        .namespaced_value_state::<u64, u64>(&ValueStateDescriptor::new("windows"))
        .unwrap();
    key(b.as_mut(), "a");
    plain.update(b.as_mut(), &7).unwrap();
    windows.update(b.as_mut(), &0, &8).unwrap();
    assert_eq!(plain.value(b.as_mut()).unwrap(), Some(7));
    assert_eq!(windows.value(b.as_ref(), &0).unwrap(), Some(8));
    let err = b
        .namespaced_value_state::<u64, u64>(&ValueStateDescriptor::new("plain"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IncompatibleState, "{err}");
    let err = b.value_state(&ValueStateDescriptor::<u64>::new("windows")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IncompatibleState, "{err}");
}

pub fn namespaced_state_refuses_ttl_and_reserved_names(t: &TestTarget) {
    let mut b = backend(t);
    let with_ttl = ValueStateDescriptor::<u64>::new("v").with_ttl(TtlConfig::new(Duration::from_secs(1)));
    let err = b.namespaced_value_state::<u64, u64>(&with_ttl).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let err = b
        .value_state(&ValueStateDescriptor::<u64>::new("_timer_state/mine"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("reserved"), "{err}");
}

pub fn namespaced_list_appends_per_namespace_and_merges(t: &TestTarget) {
    let mut b = backend(t);
    let s = b
        .namespaced_list_state::<u8, u32>(&ListStateDescriptor::new("l"))
        .unwrap();
    key(b.as_mut(), "a");
    s.add(b.as_mut(), &1, &10).unwrap();
    s.add_all(b.as_mut(), &1, &[11, 12]).unwrap();
    s.add(b.as_mut(), &2, &20).unwrap();
    s.add(b.as_mut(), &3, &30).unwrap();
    assert_eq!(s.get(b.as_ref(), &1).unwrap(), vec![10, 11, 12]);
    s.merge_namespaces(b.as_mut(), &1, &[2, 3, 1]).unwrap();
    assert_eq!(s.get(b.as_ref(), &1).unwrap(), vec![10, 11, 12, 20, 30]);
    assert!(s.get(b.as_ref(), &2).unwrap().is_empty(), "merged sources are cleared");
    assert_eq!(s.namespaces(b.as_ref()).unwrap(), vec![1]);
    s.update(b.as_mut(), &1, &[]).unwrap();
    assert!(
        b.keys(s.id()).unwrap().is_empty(),
        "an emptied namespaced list leaves no key"
    );
}

pub fn namespaced_reducing_and_aggregating_merge_like_session_windows(t: &TestTarget) {
    let mut b = backend(t);
    let sum = b
        .namespaced_reducing_state::<(i64, i64), u64>(&ReducingStateDescriptor::new("sum", |a, c| a + c))
        .unwrap();
    let avg = b
        .namespaced_aggregating_state::<(i64, i64), _>(&AggregatingStateDescriptor::new("avg", Sum))
        .unwrap();
    key(b.as_mut(), "user");
    let (s1, s2, merged) = ((0, 10), (5, 15), (0, 15));
    for (window, x) in [(s1, 2u64), (s1, 4), (s2, 6)] {
        sum.add(b.as_mut(), &window, x).unwrap();
        avg.add(b.as_mut(), &window, &x).unwrap();
    }
    sum.merge_namespaces(b.as_mut(), &merged, &[s1, s2]).unwrap();
    avg.merge_namespaces(b.as_mut(), &merged, &[s1, s2]).unwrap();
    assert_eq!(sum.get(b.as_ref(), &merged).unwrap(), Some(12));
    assert_eq!(avg.get(b.as_ref(), &merged).unwrap(), Some(4.0));
    assert_eq!(sum.get(b.as_ref(), &s1).unwrap(), None);
    assert_eq!(avg.namespaces(b.as_ref()).unwrap(), vec![merged]);
    sum.merge_namespaces(b.as_mut(), &merged, &[(99, 100)]).unwrap();
    assert_eq!(
        sum.get(b.as_ref(), &merged).unwrap(),
        Some(12),
        "merging nothing changes nothing"
    );
}

pub fn namespaced_map_keeps_entries_per_namespace(t: &TestTarget) {
    let mut b = backend(t);
    let s = b
        .namespaced_map_state::<u8, String, u32>(&MapStateDescriptor::new("m"))
        .unwrap();
    key(b.as_mut(), "a");
    s.put(b.as_mut(), &1, &"x".to_owned(), &1).unwrap();
    s.put(b.as_mut(), &1, &"y".to_owned(), &2).unwrap();
    s.put(b.as_mut(), &2, &"x".to_owned(), &3).unwrap();
    assert_eq!(s.get(b.as_ref(), &2, &"x".to_owned()).unwrap(), Some(3));
    assert_eq!(
        s.entries(b.as_ref(), &1).unwrap(),
        vec![("x".to_owned(), 1), ("y".to_owned(), 2)]
    );
    assert_eq!(s.namespaces(b.as_ref()).unwrap(), vec![1, 2]);
    s.remove(b.as_mut(), &1, &"x".to_owned()).unwrap();
    s.clear(b.as_mut(), &2).unwrap();
    assert_eq!(s.entries(b.as_ref(), &1).unwrap(), vec![("y".to_owned(), 2)]);
    assert!(s.entries(b.as_ref(), &2).unwrap().is_empty());
    assert_eq!(s.namespaces(b.as_ref()).unwrap(), vec![1]);
}

pub fn namespaced_state_restores_exactly_at_another_parallelism(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    let s = b
        .namespaced_reducing_state::<u32, u64>(&ReducingStateDescriptor::new("w", |a, c| a + c))
        .unwrap();
    let mut model = std::collections::BTreeMap::new();
    for i in 0..200u32 {
        key(b.as_mut(), &format!("k{}", i % 50));
        s.add(b.as_mut(), &(i % 7), u64::from(i)).unwrap();
        *model.entry((format!("k{}", i % 50), i % 7)).or_insert(0u64) += u64::from(i);
    }
    let expected = dump(b.as_mut()).unwrap();
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    let mut seen = 0;
    for i in 0..2 {
        let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, 2, i);
        let mut r = restore(t, &fixture.storage, std::slice::from_ref(&handle), range);
        assert_eq!(dump(r.as_mut()).unwrap(), in_range(&expected, range));
        let s = r
            .namespaced_reducing_state::<u32, u64>(&ReducingStateDescriptor::new("w", |a, c| a + c))
            .unwrap();
        for ((k, ns), sum) in &model {
            let bytes = crate::codec::encode_value(k).unwrap();
            if range.contains(crate::key_group::assign_to_key_group(&bytes, MAX_PARALLELISM)) {
                r.set_current_key(&bytes).unwrap();
                assert_eq!(s.get(r.as_ref(), ns).unwrap(), Some(*sum), "{k} in {ns}");
                seen += 1;
            }
        }
    }
    assert_eq!(seen, model.len(), "every (key, namespace) restored in one subtask");
}

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_namespaces {
    ($target:expr) => {
        $crate::__conformance_cases!($target; namespaces;
            namespaced_value_is_separate_per_namespace_and_key,
            namespaced_state_and_the_default_namespace_do_not_mix,
            namespaced_state_refuses_ttl_and_reserved_names,
            namespaced_list_appends_per_namespace_and_merges,
            namespaced_reducing_and_aggregating_merge_like_session_windows,
            namespaced_map_keeps_entries_per_namespace,
            namespaced_state_restores_exactly_at_another_parallelism,
        );
    };
}
