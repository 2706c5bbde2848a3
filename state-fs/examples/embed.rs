//! Embedding the fs backend in an async engine (Tokio): two operator
//! instances keep a running total and the last reading per sensor; a
//! checkpoint is uploaded by a blocking task and committed through the
//! async storage API, found again as `latest`, and restored into the
//! memory backend at parallelism 4, all from inside the runtime.
//!
//! Run: `cargo run -p streamstate-fs --example embed`
use std::collections::BTreeMap;

use streamstate_api::codec::encode_value;
use streamstate_api::key_group::assign_to_key_group;
use streamstate_api::{
    AsyncCheckpointStorage, CheckpointStorage, IoExecutor, KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt,
    MapStateDescriptor, OperatorSnapshot, SnapshotKind, SnapshotManifest, SnapshotTarget, StateBackend,
    ValueStateDescriptor,
};

const MAX_PARALLELISM: u32 = 128;
const JOB: &str = "sensors";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(engine())
}

async fn engine() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = AsyncCheckpointStorage::open(&format!("file://{}", dir.path().display()))?;
    // The blocking facade backends call, its I/O on this engine's runtime.
    let blocking = CheckpointStorage::from_async(
        storage.clone(),
        IoExecutor::from_handle(tokio::runtime::Handle::current())?,
    );
    let total = ValueStateDescriptor::<i64>::new("total");
    let last = MapStateDescriptor::<String, i64>::new("last");

    let readings: Vec<(String, i64)> = (0..200).map(|i| (format!("sensor-{}", i % 17), i * 3 - 100)).collect();
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (sensor, value) in &readings {
        let entry = expected.entry(sensor.clone()).or_default();
        *entry = (entry.0 + value, *value);
    }

    // Parallelism 2: a record goes to the instance owning its key group.
    let fs = streamstate_fs::FsStateBackend::new();
    let mut handles = Vec::new();
    for subtask in 0..2 {
        let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, 2, subtask);
        let mut keyed = fs.create_keyed_backend(KeyedBackendOptions::new(JOB, "agg", range, MAX_PARALLELISM))?;
        let (total_state, last_state) = (keyed.value_state(&total)?, keyed.map_state(&last)?);
        for (sensor, value) in &readings {
            if range.contains(assign_to_key_group(&encode_value(sensor)?, MAX_PARALLELISM)) {
                keyed.set_current_key_typed(sensor)?;
                let sum = total_state.value(keyed.as_mut())?.unwrap_or(0) + value;
                total_state.update(keyed.as_mut(), &sum)?;
                last_state.put(keyed.as_mut(), &"value".to_owned(), value)?;
            }
        }
        // The synchronous phase on the task; the upload on a blocking thread.
        let target = SnapshotTarget::checkpoint(JOB, 1, &format!("agg-{subtask}"));
        let pending = keyed.snapshot(&target)?;
        let upload = blocking.clone();
        handles.push(tokio::task::spawn_blocking(move || pending.write(&upload, &target)).await??);
    }

    // Commit: `_metadata` last; the checkpoint exists from then on.
    let mut manifest = SnapshotManifest::new(JOB, 1, SnapshotKind::Checkpoint, MAX_PARALLELISM);
    manifest.operators.push(OperatorSnapshot {
        operator_id: "agg".into(),
        parallelism: 2,
        keyed_state: handles,
        operator_state: vec![],
    });
    storage.commit(&manifest).await?;
    let latest = storage
        .latest_completed(Some(JOB))
        .await?
        .ok_or("no completed checkpoint")?;
    println!("latest: {}", latest.dir);

    // Restore at parallelism 4 into the memory backend, from this task.
    let memory = streamstate_memory::MemoryStateBackend::new();
    let mut seen = 0;
    for subtask in 0..4 {
        let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, 4, subtask);
        let options = KeyedBackendOptions::new(JOB, "agg", range, MAX_PARALLELISM);
        let mut restored =
            memory.restore_keyed_backend(options, &latest.manifest.operators[0].keyed_state, &blocking)?;
        let (total_state, last_state) = (restored.value_state(&total)?, restored.map_state(&last)?);
        for (sensor, (sum, value)) in &expected {
            if range.contains(assign_to_key_group(&encode_value(sensor)?, MAX_PARALLELISM)) {
                restored.set_current_key_typed(sensor)?;
                assert_eq!(total_state.value(restored.as_mut())?, Some(*sum), "total of {sensor}");
                assert_eq!(last_state.get(restored.as_mut(), &"value".to_owned())?, Some(*value));
                seen += 1;
            }
        }
    }
    assert_eq!(seen, expected.len());
    println!("restored {seen} sensors into the memory backend at parallelism 4");
    Ok(())
}
