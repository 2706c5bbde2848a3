//! Snapshot cost of the fs backend at 1M keys: the synchronous pause on the
//! processing thread (p50/p99/max over rounds with writes in between, so
//! copy-on-write is exercised) against a baseline in the same run (cloning a
//! std `HashMap` of the same entries: what a copying sync phase would cost),
//! and the asynchronous upload's throughput to each checkpoint scheme.
//!
//! Run: `scripts/bench-snapshot.sh` (starts S3 and HDFS), or
//! `cargo bench -p streamstate-fs --bench snapshot_pause` for file:// only.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use streamstate_api::{
    CheckpointStorage, KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt, SnapshotFormat, SnapshotKind,
    SnapshotTarget, StateBackend, ValueStateDescriptor,
};

const KEYS: u64 = 1_000_000;
const ROUNDS: u64 = 20;
const UPDATES_PER_ROUND: u64 = 10_000;

fn target(id: u64) -> SnapshotTarget {
    SnapshotTarget {
        checkpoint_id: id,
        kind: SnapshotKind::Checkpoint,
        format: SnapshotFormat::Canonical,
        incremental: false,
        base: "bench/".into(),
        exclusive_dir: format!("chk-{id}"),
        shared_dir: "shared".into(),
        file_stem: "count-0".into(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let backend = streamstate_fs::FsStateBackend::new();
    let mut keyed = backend
        .create_keyed_backend(KeyedBackendOptions::new("bench", "count", KeyGroupRange::all(128), 128))
        .unwrap();
    let count = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| streamstate_api::codec::encode_value(&format!("word-{i}")).unwrap())
        .collect();
    for (i, key) in keys.iter().enumerate() {
        keyed.set_current_key(key).unwrap();
        count.update(keyed.as_mut(), &(i as u64)).unwrap();
    }

    // Baseline: a sync phase that copies the state.
    let baseline_map: HashMap<Vec<u8>, u64> = keys.iter().cloned().zip(0..).collect();
    let started = Instant::now();
    let copy = baseline_map.clone();
    let baseline = started.elapsed();
    drop(copy);

    let file_dir = tempfile::tempdir().unwrap();
    let file_uri = format!("file://{}", file_dir.path().display());
    let file_storage = CheckpointStorage::open(&file_uri).unwrap();
    let mut pauses = Vec::new();
    let mut uploads = Vec::new();
    let mut bytes = 0;
    let mut next = 0u64;
    for round in 0..ROUNDS {
        for _ in 0..UPDATES_PER_ROUND {
            next = (next + 7_919) % KEYS;
            keyed.set_current_key(&keys[next as usize]).unwrap();
            count.update(keyed.as_mut(), &next).unwrap();
        }
        let t = target(round + 1);
        let started = Instant::now();
        let pending = keyed.snapshot(&t).unwrap();
        pauses.push(started.elapsed());
        let started = Instant::now();
        let handle = pending.write(&file_storage, &t).unwrap();
        uploads.push(started.elapsed());
        bytes = handle.full_bytes;
    }
    pauses.sort();
    uploads.sort();
    println!("| measure at {KEYS} keys ({ROUNDS} rounds, {UPDATES_PER_ROUND} updates between) | value |");
    println!("|---|---|");
    println!("| baseline: clone of a std HashMap of the same entries | {baseline:.2?} |");
    println!(
        "| sync pause p50 / p99 / max | {:.2?} / {:.2?} / {:.2?} |",
        percentile(&pauses, 0.5),
        percentile(&pauses, 0.99),
        pauses[pauses.len() - 1]
    );
    println!(
        "| sync pause max / baseline | {:.4} |",
        pauses[pauses.len() - 1].as_secs_f64() / baseline.as_secs_f64()
    );
    println!("| snapshot file size | {:.1} MiB |", bytes as f64 / (1 << 20) as f64);
    let mbps = |d: Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "| async phase (encode + write) p50, file:// | {:.2?} ({:.0} MiB/s) |",
        percentile(&uploads, 0.5),
        mbps(percentile(&uploads, 0.5))
    );

    for (scheme, var) in [
        ("s3://", "STREAMSTATE_TEST_S3_URI"),
        ("hdfs://", "STREAMSTATE_TEST_HDFS_URI"),
    ] {
        let Ok(base) = std::env::var(var) else {
            println!("| upload to {scheme} | not measured ({var} unset; run scripts/bench-snapshot.sh) |");
            continue;
        };
        let storage = CheckpointStorage::open(&format!("{base}/bench-{}", std::process::id())).unwrap();
        let mut times = Vec::new();
        for round in 0..3 {
            let t = target(100 + round);
            let pending = keyed.snapshot(&t).unwrap();
            let started = Instant::now();
            pending.write(&storage, &t).unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "| async phase (encode + write) median of 3, {scheme} | {:.2?} ({:.0} MiB/s) |",
            times[1],
            mbps(times[1])
        );
    }
}
