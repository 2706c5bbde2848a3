//! Conformance cases: Walking keys and cells: all keys, by key group, in place.

use super::support::*;
use crate::backend::KeyedStateBackend;
use crate::descriptor::{MapStateDescriptor, ValueStateDescriptor};
use crate::key_group::assign_to_key_group;
use crate::state::KeyedStateBackendExt;
use crate::testkit::TestTarget;
use crate::{Error, ErrorKind};

pub fn keys_lists_every_key_with_state(t: &TestTarget) {
    let mut b = backend(t);
    let s = b.value_state(&ValueStateDescriptor::<u8>::new("v")).unwrap();
    let mut expected = Vec::new();
    for i in 0..300u32 {
        let k = format!("k{i}");
        key(b.as_mut(), &k);
        s.update(b.as_mut(), &1).unwrap();
        expected.push(crate::codec::encode_value(&k).unwrap());
    }
    key(b.as_mut(), "k7");
    s.clear(b.as_mut()).unwrap();
    expected.retain(|k| *k != crate::codec::encode_value("k7").unwrap());
    expected.sort();
    assert_eq!(b.keys(s.id()).unwrap(), expected);
}

pub fn keys_in_key_group_partitions_keys_by_group(t: &TestTarget) {
    let mut b = backend(t);
    let cells = b.value_state(&ValueStateDescriptor::<u8>::new("v")).unwrap();
    let maps = b.map_state(&MapStateDescriptor::<u8, u8>::new("m")).unwrap();
    for i in 0..300u32 {
        let k = format!("k{i}");
        key(b.as_mut(), &k);
        cells.update(b.as_mut(), &1).unwrap();
        if i % 3 == 0 {
            maps.put(b.as_mut(), &1, &1).unwrap();
            maps.put(b.as_mut(), &2, &2).unwrap();
        }
    }
    for removed in ["k7", "k9"] {
        key(b.as_mut(), removed);
        cells.clear(b.as_mut()).unwrap();
        maps.clear(b.as_mut()).unwrap();
    }
    let max_parallelism = b.max_parallelism();
    for state in [cells.id(), maps.id()] {
        let mut by_group = Vec::new();
        for key_group in b.key_group_range().iter() {
            let keys = b.keys_in_key_group(state, key_group).unwrap();
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "group {key_group}: unsorted or repeated keys"
            );
            for k in &keys {
                assert_eq!(assign_to_key_group(k, max_parallelism), key_group);
            }
            by_group.extend(keys);
        }
        by_group.sort();
        assert_eq!(by_group, b.keys(state).unwrap());
    }
    assert_eq!(b.keys(maps.id()).unwrap().len(), 99);
    let outside = b.key_group_range().end().map_or(0, |last| last + 1);
    let err = b.keys_in_key_group(cells.id(), outside).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

pub fn for_each_cell_in_key_group_visits_what_get_reads_in_key_order(t: &TestTarget) {
    let mut b = backend(t);
    let cells = b.value_state(&ValueStateDescriptor::<u32>::new("v")).unwrap();
    let maps = b.map_state(&MapStateDescriptor::<u8, u8>::new("m")).unwrap();
    for i in 0..300u32 {
        key(b.as_mut(), &format!("k{i}"));
        cells.update(b.as_mut(), &(i * 7)).unwrap();
    }
    // Rewritten values (a backend caching writes holds some of them over
    // older stored ones) and a removal.
    for i in (0..300u32).step_by(5) {
        key(b.as_mut(), &format!("k{i}"));
        cells.update(b.as_mut(), &(i * 7 + 1)).unwrap();
    }
    key(b.as_mut(), "k7");
    cells.clear(b.as_mut()).unwrap();
    maps.put(b.as_mut(), &1, &1).unwrap();
    let map_group = b.current_key_group();
    let mut visited_keys = 0;
    for key_group in b.key_group_range().iter() {
        let mut expected = Vec::new();
        for k in b.keys_in_key_group(cells.id(), key_group).unwrap() {
            b.set_current_key(&k).unwrap();
            let cell = b.get(cells.id()).unwrap().map(|c| c.into_owned());
            expected.push((k, cell.expect("a listed key has a cell")));
        }
        let mut visited = Vec::new();
        b.for_each_cell_in_key_group(cells.id(), key_group, &mut |k, cell| {
            visited.push((k.to_vec(), cell.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            visited, expected,
            "group {key_group}: the cells get reads, in key order"
        );
        // Unordered: the same cells, each once, in any order.
        let mut unordered = Vec::new();
        b.for_each_cell_in_key_group_unordered(cells.id(), key_group, &mut |k, cell| {
            unordered.push((k.to_vec(), cell.to_vec()));
            Ok(())
        })
        .unwrap();
        unordered.sort();
        assert_eq!(unordered, expected, "group {key_group}: the same cells, unordered");
        let mut unordered_values = Vec::new();
        cells
            .for_each_in_key_group_unordered(b.as_mut(), key_group, |k, value| {
                unordered_values.push((k.to_vec(), value));
                Ok(())
            })
            .unwrap();
        unordered_values.sort();
        let mut decoded = Vec::new();
        cells
            .for_each_in_key_group(b.as_mut(), key_group, |k, value| {
                decoded.push((k.to_vec(), value));
                Ok(())
            })
            .unwrap();
        let expected_values: Vec<(Vec<u8>, u32)> = expected
            .iter()
            .map(|(k, _)| {
                let name: String = crate::codec::decode_value(k).unwrap();
                let n = name[1..].parse::<u32>().unwrap();
                (k.clone(), if n % 5 == 0 { n * 7 + 1 } else { n * 7 })
            })
            .collect();
        assert_eq!(decoded, expected_values, "group {key_group}: decoded values");
        assert_eq!(
            unordered_values, expected_values,
            "group {key_group}: decoded values, unordered"
        );
        visited_keys += visited.len();
    }
    assert_eq!(visited_keys, 299, "every key but the cleared one");

    // The first error of `visit` stops the walk.
    let busy_group = b
        .key_group_range()
        .iter()
        .find(|&g| b.keys_in_key_group(cells.id(), g).unwrap().len() > 1)
        .unwrap();
    let mut calls = 0;
    let err = b
        .for_each_cell_in_key_group(cells.id(), busy_group, &mut |_, _| {
            calls += 1;
            Err(Error::invalid_argument("stop here"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("stop here"), "{err}");
    assert_eq!(calls, 1, "no visit after the first error");

    let mut calls = 0;
    let err = b
        .for_each_cell_in_key_group_unordered(cells.id(), busy_group, &mut |_, _| {
            calls += 1;
            Err(Error::invalid_argument("stop here"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("stop here"), "{err}");
    assert_eq!(calls, 1, "no unordered visit after the first error");

    let outside = b.key_group_range().end().map_or(0, |last| last + 1);
    for unordered in [false, true] {
        let walk = |b: &mut dyn KeyedStateBackend, state, group| {
            if unordered {
                b.for_each_cell_in_key_group_unordered(state, group, &mut |_, _| Ok(()))
            } else {
                b.for_each_cell_in_key_group(state, group, &mut |_, _| Ok(()))
            }
        };
        let err = walk(b.as_mut(), maps.id(), map_group).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "a map state: {err}");
        let err = walk(b.as_mut(), cells.id(), outside).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
}

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_iteration {
    ($target:expr) => {
        $crate::__conformance_cases!($target; iteration;
            keys_lists_every_key_with_state,
            keys_in_key_group_partitions_keys_by_group,
            for_each_cell_in_key_group_visits_what_get_reads_in_key_order,
        );
    };
}
