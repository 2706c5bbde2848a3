//! Embedding the RocksDB backend: native incremental checkpoints (the
//! second uploads only the SST files the first did not), then a restore at
//! parallelism 2 from the second, each instance keeping only its key
//! groups, and a canonical snapshot of the same state restored into the
//! fs backend.
//!
//! Run: `cargo run -p streamstate-rocksdb --example embed`
use std::collections::BTreeMap;

use streamstate_api::codec::encode_value;
use streamstate_api::key_group::assign_to_key_group;
use streamstate_api::{
    CheckpointStorage, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend, KeyedStateBackendExt, MapStateDescriptor,
    SnapshotFormat, SnapshotTarget, StateBackend, ValueStateDescriptor,
};
use streamstate_rocksdb::{RocksDbConfig, RocksDbStateBackend};

const MAX_PARALLELISM: u32 = 128;
const JOB: &str = "orders";

type Expected = BTreeMap<String, (u64, BTreeMap<u32, u64>)>;

fn record(
    keyed: &mut dyn KeyedStateBackend,
    expected: &mut Expected,
    customer: &str,
    order: u32,
    cents: u64,
) -> streamstate_api::Result<()> {
    let (orders, amounts) = (
        keyed.value_state(&ValueStateDescriptor::<u64>::new("orders"))?,
        keyed.map_state(&MapStateDescriptor::<u32, u64>::new("amounts"))?,
    );
    keyed.set_current_key_typed(customer)?;
    let n = orders.value(keyed)?.unwrap_or(0) + 1;
    orders.update(keyed, &n)?;
    amounts.put(keyed, &order, &cents)?;
    let entry = expected.entry(customer.to_owned()).or_default();
    entry.0 = n;
    entry.1.insert(order, cents);
    Ok(())
}

fn check(
    backend: &dyn StateBackend,
    storage: &CheckpointStorage,
    handles: &[streamstate_api::KeyedStateHandle],
    parallelism: u32,
    expected: &Expected,
) -> streamstate_api::Result<usize> {
    let mut seen = 0;
    for subtask in 0..parallelism {
        let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, parallelism, subtask);
        let options = KeyedBackendOptions::new(JOB, "orders", range, MAX_PARALLELISM);
        let mut restored = backend.restore_keyed_backend(options, handles, storage)?;
        let orders = restored.value_state(&ValueStateDescriptor::<u64>::new("orders"))?;
        let amounts = restored.map_state(&MapStateDescriptor::<u32, u64>::new("amounts"))?;
        for (customer, (n, by_order)) in expected {
            if range.contains(assign_to_key_group(&encode_value(customer)?, MAX_PARALLELISM)) {
                restored.set_current_key_typed(customer)?;
                assert_eq!(orders.value(restored.as_mut())?, Some(*n), "orders of {customer}");
                let stored: BTreeMap<u32, u64> = amounts.entries(restored.as_mut())?.into_iter().collect();
                assert_eq!(&stored, by_order, "amounts of {customer}");
                seen += 1;
            }
        }
    }
    Ok(seen)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = CheckpointStorage::open(&format!("file://{}/checkpoints", dir.path().display()))?;
    let rocksdb = RocksDbStateBackend::new(RocksDbConfig {
        local_dir: Some(dir.path().join("rocksdb")),
        ..RocksDbConfig::default()
    });
    let options = KeyedBackendOptions::new(JOB, "orders", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
    let mut keyed = rocksdb.create_keyed_backend(options)?;
    let mut expected = Expected::new();

    let mut handles = Vec::new();
    for checkpoint in 1..=2u64 {
        for order in 0..500u32 {
            let order = order + 1000 * checkpoint as u32;
            record(
                keyed.as_mut(),
                &mut expected,
                &format!("customer-{}", order % 37),
                order,
                u64::from(order) * 7,
            )?;
        }
        let target = SnapshotTarget {
            format: SnapshotFormat::Native,
            incremental: true,
            ..SnapshotTarget::checkpoint(JOB, checkpoint, "orders-0")
        };
        let handle = keyed.snapshot(&target)?.write(&storage, &target)?;
        println!(
            "checkpoint {checkpoint}: {} of {} bytes uploaded",
            handle.uploaded_bytes, handle.full_bytes
        );
        handles.push(handle);
    }
    assert!(
        handles[1].uploaded_bytes < handles[1].full_bytes,
        "the second checkpoint reuses the first's files"
    );

    let seen = check(&rocksdb, &storage, &handles[1..], 2, &expected)?;
    assert_eq!(seen, expected.len());
    println!("restored {seen} customers into RocksDB at parallelism 2");

    // A canonical snapshot any backend restores.
    let target = SnapshotTarget::checkpoint(JOB, 3, "orders-0");
    let canonical = keyed.snapshot(&target)?.write(&storage, &target)?;
    let seen = check(
        &streamstate_fs::FsStateBackend::new(),
        &storage,
        &[canonical],
        3,
        &expected,
    )?;
    assert_eq!(seen, expected.len());
    println!("restored {seen} customers into the fs backend at parallelism 3");
    Ok(())
}
