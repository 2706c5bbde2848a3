//! Fills one keyed backend with N word counts (value state, keys like the
//! word-count corpus's), takes a native incremental checkpoint to file://,
//! and reports times. Run it under `/usr/bin/time -v` to read the peak RSS;
//! `scripts/bench-rss.sh` does that for RocksDB with default settings and for
//! the heap backend as a baseline in the same run.
//!
//! Usage: `cargo run --release -p streamstate-rocksdb --example peak_rss -- rocksdb|heap KEYS`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use streamstate_api::{
    CheckpointStorage, KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt, SnapshotFormat, SnapshotKind,
    SnapshotTarget, StateBackend, ValueStateDescriptor,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "rocksdb".into());
    let keys: u64 = args
        .next()
        .map(|n| n.parse().expect("KEYS must be a number"))
        .unwrap_or(10_000_000);
    let work = tempfile::tempdir().unwrap();
    let (backend, format): (Box<dyn StateBackend>, SnapshotFormat) = match which.as_str() {
        "rocksdb" => (
            Box::new(streamstate_rocksdb::RocksDbStateBackend::new(
                streamstate_rocksdb::RocksDbConfig {
                    local_dir: Some(work.path().join("local")),
                    ..streamstate_rocksdb::RocksDbConfig::default()
                },
            )),
            SnapshotFormat::Native,
        ),
        "heap" => (
            Box::new(streamstate_memory::HeapStateBackend::new("heap", None)),
            SnapshotFormat::Canonical,
        ),
        other => panic!("unknown backend {other:?}: use rocksdb or heap"),
    };
    let mut keyed = backend
        .create_keyed_backend(KeyedBackendOptions::new("rss", "count", KeyGroupRange::all(128), 128))
        .unwrap();
    let count = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();

    let started = Instant::now();
    for i in 0..keys {
        // The corpus's word shape: a letter and a base-36 rank.
        let word = format!("k{i:x}");
        keyed
            .set_current_key(&streamstate_api::codec::encode_value(&word).unwrap())
            .unwrap();
        count.update(keyed.as_mut(), &i).unwrap();
    }
    let filled = started.elapsed();

    let storage = CheckpointStorage::open(&format!("file://{}/checkpoints", work.path().display())).unwrap();
    let target = SnapshotTarget {
        checkpoint_id: 1,
        kind: SnapshotKind::Checkpoint,
        format,
        incremental: format == SnapshotFormat::Native,
        base: String::new(),
        exclusive_dir: "chk-1".into(),
        shared_dir: "shared".into(),
        file_stem: "count-0".into(),
    };
    let started = Instant::now();
    let pending = keyed.snapshot(&target).unwrap();
    let sync = started.elapsed();
    let handle = pending.write(&storage, &target).unwrap();
    let total = started.elapsed();

    // Read every key back, so the measure covers reads through the cache too.
    let started = Instant::now();
    let mut sum = 0u64;
    for i in (0..keys).step_by(7) {
        keyed
            .set_current_key(&streamstate_api::codec::encode_value(&format!("k{i:x}")).unwrap())
            .unwrap();
        sum += count
            .value(keyed.as_mut())
            .unwrap()
            .expect("every written key has a value");
    }
    let read = started.elapsed();
    assert!(sum > 0 || keys <= 1);
    println!(
        "backend={which} keys={keys} fill={filled:.2?} snapshot_sync={sync:.2?} snapshot_total={total:.2?} \
         snapshot_bytes={} read_every_7th={read:.2?}",
        handle.full_bytes
    );
}
