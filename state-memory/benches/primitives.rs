//! Per-record cost of the memory backend's state primitives, next to a bare
//! `std::collections::HashMap<Vec<u8>, u64>` doing the same work in the same
//! run (the baseline every ratio in docs/BENCHMARKS.md is taken against).
//!
//! Run: `cargo bench -p streamstate-memory --bench primitives`
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use streamstate_api::{
    KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt, ListStateDescriptor, MapStateDescriptor,
    ValueStateDescriptor,
};
use streamstate_memory::HeapKeyedStateBackend;

const KEYS: usize = 10_000;
const OPS: u64 = 10_000;

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| streamstate_api::codec::encode_value(&format!("word-{i}")).unwrap())
        .collect()
}

fn backend() -> HeapKeyedStateBackend {
    HeapKeyedStateBackend::new(
        "memory",
        KeyedBackendOptions::new("bench", "op", KeyGroupRange::all(128), 128),
        None,
    )
}

fn primitives(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("state-memory");
    group.throughput(Throughput::Elements(OPS));

    group.bench_function("baseline_std_hashmap_increment", |b| {
        let mut map: HashMap<Vec<u8>, u64> = keys.iter().map(|k| (k.clone(), 0)).collect();
        b.iter(|| {
            for i in 0..OPS as usize {
                *map.get_mut(&keys[i % KEYS]).unwrap() += 1;
            }
        });
    });

    group.bench_function("value_get", |b| {
        let mut be = backend();
        let s = be.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
        for k in &keys {
            use streamstate_api::KeyedStateBackend;
            be.set_current_key(k).unwrap();
            s.update(&mut be, &1).unwrap();
        }
        b.iter(|| {
            use streamstate_api::KeyedStateBackend;
            for i in 0..OPS as usize {
                be.set_current_key(&keys[i % KEYS]).unwrap();
                black_box(s.value(&mut be).unwrap());
            }
        });
    });

    group.bench_function("value_update_increment", |b| {
        let mut be = backend();
        let s = be.value_state(&ValueStateDescriptor::<u64>::new("v")).unwrap();
        b.iter(|| {
            use streamstate_api::KeyedStateBackend;
            for i in 0..OPS as usize {
                be.set_current_key(&keys[i % KEYS]).unwrap();
                let n = s.value(&mut be).unwrap().unwrap_or(0);
                s.update(&mut be, &(n + 1)).unwrap();
            }
        });
    });

    group.bench_function("list_append", |b| {
        b.iter_batched(
            || {
                let mut be = backend();
                let s = be.list_state(&ListStateDescriptor::<u64>::new("l")).unwrap();
                (be, s)
            },
            |(mut be, s)| {
                use streamstate_api::KeyedStateBackend;
                for i in 0..OPS as usize {
                    be.set_current_key(&keys[i % KEYS]).unwrap();
                    s.add(&mut be, &(i as u64)).unwrap();
                }
                be
            },
            BatchSize::LargeInput,
        );
    });

    group.bench_function("map_put", |b| {
        let mut be = backend();
        let s = be.map_state(&MapStateDescriptor::<u32, u64>::new("m")).unwrap();
        b.iter(|| {
            use streamstate_api::KeyedStateBackend;
            for i in 0..OPS as usize {
                be.set_current_key(&keys[i % KEYS]).unwrap();
                s.put(&mut be, &((i % 8) as u32), &(i as u64)).unwrap();
            }
        });
    });
    group.finish();
}

criterion_group!(benches, primitives);
criterion_main!(benches);
