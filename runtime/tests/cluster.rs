//! The cluster executor inside one process: `W` timely workers, each a
//! source split and a keyed subtask, counting like a plain count for every
//! backend, and restoring their checkpoints at another number of workers. (Several processes over sockets: `cli/tests/cluster.rs`.)
#![cfg(feature = "cluster")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use streamstate_api::CheckpointStorage;
use streamstate_runtime::execution::ClusterConfig;
use streamstate_runtime::plan::RestoreFrom;
use streamstate_runtime::word_count::{word_count, Word};
use streamstate_runtime::{JobResult, StreamExecutionEnvironment};

fn plain_count(text: &str) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for word in text.to_uppercase().split_whitespace() {
        *counts.entry(word.to_owned()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn workers_of_one_process_count_like_a_plain_count_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..2_000)
        .map(|i| format!("w{} w{} Ä{} w{}\n", i % 37, i % 101, i % 5, (i * i) % 997))
        .collect();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).unwrap();
    for backend in backends() {
        for (workers, local_aggregation) in [(1, true), (3, true), (2, false)] {
            let mut env = StreamExecutionEnvironment::new();
            env.set_state_backend(Arc::clone(&backend));
            env.settings_mut().local_aggregation = local_aggregation;
            let counts = word_count(env.read_text_file(&input))
                .discard()
                .execute_cluster(&ClusterConfig::single_process(workers))
                .unwrap()
                .final_records;
            let got: BTreeMap<String, i64> = counts.into_iter().map(|(w, c)| (w.to_string(), c)).collect();
            assert_eq!(got, plain_count(&text), "{} on {workers} workers", backend.name());
        }
    }
}

fn backends() -> Vec<Arc<dyn streamstate_api::StateBackend>> {
    vec![
        Arc::new(streamstate_memory::MemoryStateBackend::default()),
        Arc::new(streamstate_fs::FsStateBackend::default()),
        Arc::new(streamstate_rocksdb::RocksDbStateBackend::default()),
    ]
}

/// Counts `input` on `workers` workers with checkpoints every few
/// milliseconds to `storage`, restoring from `restore` first.
fn run_checkpointed(
    backend: &Arc<dyn streamstate_api::StateBackend>,
    storage: &CheckpointStorage,
    input: &std::path::Path,
    workers: usize,
    restore: Option<RestoreFrom>,
) -> JobResult<(Word, i64)> {
    let mut env = StreamExecutionEnvironment::new();
    env.set_state_backend(Arc::clone(backend))
        .set_checkpoint_storage(storage.clone())
        .enable_checkpointing(Duration::from_millis(5));
    // Keep the first checkpoint: the test restores it.
    env.checkpoint_config().num_retained = 1000;
    if let Some(from) = restore {
        env.restore_from(from);
    }
    word_count(env.read_text_file(input))
        .discard()
        .execute_cluster(&ClusterConfig::single_process(workers))
        .unwrap()
}

fn counts_of(result: &JobResult<(Word, i64)>) -> BTreeMap<String, i64> {
    result.final_records.iter().map(|(w, c)| (w.to_string(), *c)).collect()
}

/// The first checkpoint of a run on 2 workers, restored on 3 and on 1:
/// state at the cut plus the input after it is the plain count, and the
/// restored run read only the rest of the input.
#[test]
fn a_checkpoint_across_workers_restores_exactly_at_another_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0u64..60_000)
        .map(|i| format!("w{} w{} Ä{} w{}\n", i % 37, i % 1001, i % 5, (i * i) % 9973))
        .collect();
    let total_words = text.split_whitespace().count() as u64;
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text).unwrap();
    for backend in backends() {
        let uri = format!("file://{}/checkpoints-{}", dir.path().display(), backend.name());
        let storage = CheckpointStorage::open(&uri).unwrap();
        let first = run_checkpointed(&backend, &storage, &input, 2, None);
        assert_eq!(
            counts_of(&first),
            plain_count(&text),
            "{}: the checkpointed run",
            backend.name()
        );
        let checkpoint = first
            .completed
            .first()
            .unwrap_or_else(|| panic!("{}: no checkpoint completed during the run", backend.name()));
        let (root, dir_in_root) = checkpoint
            .path
            .rsplit_once("/chk-")
            .map(|(job, n)| {
                let (root, job) = job.rsplit_once('/').unwrap();
                (root.to_owned(), format!("{job}/chk-{n}"))
            })
            .unwrap();
        for workers in [3, 1] {
            let from = RestoreFrom::Snapshot {
                storage: CheckpointStorage::open(&root).unwrap(),
                dir: dir_in_root.clone(),
            };
            let restored = run_checkpointed(&backend, &storage, &input, workers, Some(from));
            assert_eq!(
                restored.restored_from.as_deref(),
                Some(checkpoint.path.trim_end_matches('/'))
            );
            assert_eq!(
                counts_of(&restored),
                plain_count(&text),
                "{}: restored on {workers} workers",
                backend.name()
            );
            assert!(
                restored.records > 0,
                "{}: the first checkpoint came after the whole input: make it larger",
                backend.name()
            );
            assert!(
                restored.records < total_words,
                "{}: the restored run read {} records of {total_words}: it started over",
                backend.name(),
                restored.records
            );
        }
    }
}
