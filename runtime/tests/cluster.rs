//! The cluster executor inside one process: `W` timely workers, each a
//! source split and a keyed subtask, counting like a plain count for every
//! backend. (Several processes over sockets: `cli/tests/cluster.rs`.)
#![cfg(feature = "cluster")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use streamstate_runtime::execution::ClusterConfig;
use streamstate_runtime::word_count::word_count;
use streamstate_runtime::StreamExecutionEnvironment;

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
    let backends: Vec<Arc<dyn streamstate_api::StateBackend>> = vec![
        Arc::new(streamstate_memory::MemoryStateBackend::default()),
        Arc::new(streamstate_fs::FsStateBackend::default()),
        Arc::new(streamstate_rocksdb::RocksDbStateBackend::default()),
    ];
    for backend in backends {
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

#[test]
fn checkpointing_is_refused_on_the_cluster_for_now() {
    let mut env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(std::time::Duration::from_secs(1));
    let lines = env.from_lines(vec!["a".into()], 1);
    let err = word_count(lines)
        .discard()
        .execute_cluster(&ClusterConfig::single_process(2))
        .unwrap_err();
    assert_eq!(err.kind(), streamstate_api::ErrorKind::Unsupported);
}
