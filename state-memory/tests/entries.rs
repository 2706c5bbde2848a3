//! `approximate_entries` of the heap backend is exact: the keys with a
//! value, list or map in any state, against a model (a `BTreeSet` per
//! state) through writes, overwrites and removals.
#![allow(clippy::unwrap_used)]
use std::collections::BTreeSet;

use streamstate_api::{
    KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt, MapStateDescriptor, StateBackend, ValueStateDescriptor,
};
use streamstate_memory::MemoryStateBackend;

#[test]
fn heap_entries_are_the_keys_holding_state() {
    let backend = MemoryStateBackend::new();
    let mut keyed = backend
        .create_keyed_backend(KeyedBackendOptions::new("job", "op", KeyGroupRange::all(128), 128))
        .unwrap();
    assert_eq!(keyed.approximate_entries(), Some(0));
    let values = keyed.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
    let maps = keyed.map_state(&MapStateDescriptor::<u64, u64>::new("m")).unwrap();
    let (mut with_value, mut with_map) = (BTreeSet::new(), BTreeSet::new());
    let mut state = 7u64;
    for step in 0..5_000u64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = (state >> 33) % 700;
        keyed.set_current_key_typed(&key).unwrap();
        match step % 5 {
            0 | 1 => {
                values.update(keyed.as_mut(), &step).unwrap();
                with_value.insert(key);
            }
            2 => {
                values.clear(keyed.as_mut()).unwrap();
                with_value.remove(&key);
            }
            3 => {
                maps.put(keyed.as_mut(), &step, &step).unwrap();
                with_map.insert(key);
            }
            _ => {
                maps.clear(keyed.as_mut()).unwrap();
                with_map.remove(&key);
            }
        }
    }
    assert!(!with_value.is_empty() && !with_map.is_empty());
    assert_eq!(
        keyed.approximate_entries(),
        Some((with_value.len() + with_map.len()) as u64)
    );
}
