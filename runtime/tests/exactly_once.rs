//! Exactly-once restore: a file-source word count is cancelled at random
//! moments (checkpoints every few milliseconds, so also during uploads),
//! restored from `latest` each time, and its final counts must equal a
//! plain count of the file. Also: rescaling 1→2→4→1, at-least-once mode,
//! and checkpoints that fail without stopping the job.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use streamstate_api::{CheckpointStorage, StateBackend};
use streamstate_runtime::word_count::{word_count, Word};
use streamstate_runtime::{CheckpointingMode, RestoreFrom, StreamExecutionEnvironment};

/// A word count's final records as a map comparable with [`corpus`]'s.
fn counts(records: Vec<(Word, i64)>) -> BTreeMap<String, i64> {
    records.into_iter().map(|(word, n)| (word.to_string(), n)).collect()
}

fn corpus(path: &Path, words: usize) -> BTreeMap<String, i64> {
    let mut text = String::new();
    let mut expected = BTreeMap::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = format!("w{}", (x % 1000) * (x % 7));
        *expected.entry(word.to_uppercase()).or_insert(0) += 1;
        text.push_str(&word);
        text.push(if i % 12 == 11 { '\n' } else { ' ' });
    }
    std::fs::write(path, text).unwrap();
    expected
}

fn word_count_job(
    input: &Path,
    backend: Arc<dyn StateBackend>,
    storage: &CheckpointStorage,
    parallelism: u32,
    mode: CheckpointingMode,
    incremental: bool,
    restore: bool,
) -> streamstate_runtime::JobHandle<(Word, i64)> {
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism)
        .enable_checkpointing(Duration::from_millis(10))
        .set_state_backend(backend)
        .set_checkpoint_storage(storage.clone());
    env.checkpoint_config().mode = mode;
    env.checkpoint_config().incremental = incremental;
    env.checkpoint_config().num_retained = 2;
    if restore {
        env.restore_from(RestoreFrom::Latest);
    }
    word_count(env.read_text_file(input)).discard().execute().unwrap()
}

/// Runs the job to completion through random cancels; returns final counts
/// and the number of cancels.
fn run_with_random_aborts(
    input: &Path,
    backend: Arc<dyn StateBackend>,
    storage: &CheckpointStorage,
    parallelisms: &[u32],
    mode: CheckpointingMode,
    incremental: bool,
) -> (BTreeMap<String, i64>, usize) {
    let mut seed: u64 = 12345;
    for round in 0.. {
        let parallelism = parallelisms[round % parallelisms.len()];
        let job = word_count_job(
            input,
            Arc::clone(&backend),
            storage,
            parallelism,
            mode,
            incremental,
            round > 0,
        );
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let wait = Duration::from_millis(20 + (seed >> 33) % 150);
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline && !job.is_finished() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if job.is_finished() || round > 200 {
            let result = job.wait().unwrap();
            // Every earlier round ended in a cancel.
            return (counts(result.final_records), round);
        }
        job.cancel().unwrap();
    }
    unreachable!()
}

/// Random aborts and restores from `latest`, with full checkpoints.
fn check_exactly_once(backend: Arc<dyn StateBackend>, storage: CheckpointStorage, parallelisms: &[u32]) {
    check_exactly_once_with(backend, storage, parallelisms, false);
}

fn check_exactly_once_with(
    backend: Arc<dyn StateBackend>,
    storage: CheckpointStorage,
    parallelisms: &[u32],
    incremental: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("words.txt");
    let expected = corpus(&input, 400_000);
    let (counts, aborts) = run_with_random_aborts(
        &input,
        backend,
        &storage,
        parallelisms,
        CheckpointingMode::ExactlyOnce,
        incremental,
    );
    assert!(
        aborts >= 2,
        "the job must have been aborted and restored (aborted {aborts} times)"
    );
    assert_eq!(counts.len(), expected.len());
    assert_eq!(counts, expected, "after {aborts} aborts and restores");
}

fn file_storage() -> (tempfile::TempDir, CheckpointStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(&format!("file://{}", dir.path().display())).unwrap();
    (dir, storage)
}

/// File storage whose job directory `fixed-job` is a regular file, so
/// every checkpoint write fails (without retries, to fail fast).
fn broken_file_storage() -> (tempfile::TempDir, CheckpointStorage) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fixed-job"), b"in the way").unwrap();
    let options = streamstate_api::StorageOptions {
        max_retries: 0,
        ..streamstate_api::StorageOptions::default()
    };
    let storage = CheckpointStorage::open_with(&format!("file://{}", dir.path().display()), &options).unwrap();
    (dir, storage)
}

#[test]
fn memory_backend_on_memory_storage_counts_exactly_once_through_aborts() {
    let storage = CheckpointStorage::open("memory://").unwrap();
    check_exactly_once(
        Arc::new(streamstate_memory::MemoryStateBackend::with_max_state_size(64 << 20)),
        storage,
        &[1],
    );
}

#[test]
fn fs_backend_on_file_storage_counts_exactly_once_through_aborts() {
    let (_dir, storage) = file_storage();
    check_exactly_once(Arc::new(streamstate_fs::FsStateBackend::new()), storage, &[2]);
}

#[test]
fn fs_backend_with_incremental_checkpoints_counts_exactly_once_through_aborts_and_rescaling() {
    let (_dir, storage) = file_storage();
    check_exactly_once_with(
        Arc::new(streamstate_fs::FsStateBackend::new()),
        storage,
        &[2, 2, 1, 3],
        true,
    );
}

#[test]
fn rocksdb_backend_with_incremental_checkpoints_counts_exactly_once_through_aborts() {
    let (_dir, storage) = file_storage();
    check_exactly_once_with(
        Arc::new(streamstate_rocksdb::RocksDbStateBackend::default()),
        storage,
        &[2],
        true,
    );
}

/// Changelog checkpoints: bases and segments, restored through random
/// aborts, at other parallelisms too (segments applied per key group).
#[test]
fn rocksdb_backend_with_changelog_checkpoints_counts_exactly_once_through_aborts_and_rescaling() {
    let (_dir, storage) = file_storage();
    check_exactly_once_with(
        Arc::new(streamstate_rocksdb::RocksDbStateBackend::new(
            streamstate_rocksdb::RocksDbConfig {
                changelog: true,
                ..streamstate_rocksdb::RocksDbConfig::default()
            },
        )),
        storage,
        &[2, 2, 1, 3],
        true,
    );
}

#[cfg(feature = "remote-tests")]
#[test]
fn fs_backend_on_s3_storage_counts_exactly_once_through_aborts() {
    let uri = std::env::var("STREAMSTATE_TEST_S3_URI")
        .unwrap_or_else(|_| panic!("STREAMSTATE_TEST_S3_URI is not set: run the tests with scripts/test.sh"));
    let storage = CheckpointStorage::open(&format!("{uri}/runtime-{}", std::process::id())).unwrap();
    check_exactly_once(Arc::new(streamstate_fs::FsStateBackend::new()), storage, &[2]);
}

#[test]
fn rocksdb_backend_on_file_storage_counts_exactly_once_through_aborts() {
    let (_dir, storage) = file_storage();
    check_exactly_once(
        Arc::new(streamstate_rocksdb::RocksDbStateBackend::default()),
        storage,
        &[2],
    );
}

#[cfg(feature = "remote-tests")]
#[test]
fn rocksdb_backend_on_s3_storage_counts_exactly_once_through_aborts() {
    let uri = std::env::var("STREAMSTATE_TEST_S3_URI")
        .unwrap_or_else(|_| panic!("STREAMSTATE_TEST_S3_URI is not set: run the tests with scripts/test.sh"));
    let storage = CheckpointStorage::open(&format!("{uri}/runtime-rocks-{}", std::process::id())).unwrap();
    check_exactly_once(
        Arc::new(streamstate_rocksdb::RocksDbStateBackend::default()),
        storage,
        &[2],
    );
}

#[test]
fn rocksdb_rescaling_1_2_4_1_keeps_counts_exact() {
    let (_dir, storage) = file_storage();
    check_exactly_once(
        Arc::new(streamstate_rocksdb::RocksDbStateBackend::default()),
        storage,
        &[1, 2, 4, 1],
    );
}

#[test]
fn rescaling_1_2_4_1_keeps_counts_exact() {
    let (_dir, storage) = file_storage();
    check_exactly_once(Arc::new(streamstate_fs::FsStateBackend::new()), storage, &[1, 2, 4, 1]);
}

#[test]
fn at_least_once_never_loses_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("words.txt");
    let expected = corpus(&input, 200_000);
    let (_cdir, storage) = file_storage();
    let (counts, _) = run_with_random_aborts(
        &input,
        Arc::new(streamstate_fs::FsStateBackend::new()),
        &storage,
        &[2],
        CheckpointingMode::AtLeastOnce,
        false,
    );
    for (word, n) in &expected {
        assert!(counts.get(word).copied().unwrap_or(0) >= *n, "{word} lost counts");
    }
}

fn job_with(
    input: &Path,
    storage: &CheckpointStorage,
    configure: impl FnOnce(&mut StreamExecutionEnvironment),
) -> streamstate_runtime::JobResult<(Word, i64)> {
    let mut env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(5))
        .set_checkpoint_storage(storage.clone());
    env.settings_mut().job_id = Some("fixed-job".into());
    configure(&mut env);
    word_count(env.read_text_file(input))
        .discard()
        .execute()
        .unwrap()
        .wait()
        .unwrap()
}

#[test]
fn failing_storage_fails_checkpoints_without_stopping_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("words.txt");
    let expected = corpus(&input, 200_000);
    let (_cdir, storage) = broken_file_storage();
    let result = job_with(&input, &storage, |env| {
        env.checkpoint_config().tolerable_failures = u32::MAX
    });
    assert!(result.completed.is_empty(), "{:?}", result.completed);
    assert!(result.failed_checkpoints > 0, "checkpoints must have failed");
    assert_eq!(counts(result.final_records), expected);
}

#[test]
fn checkpoint_timeout_fails_checkpoints_without_stopping_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("words.txt");
    let expected = corpus(&input, 200_000);
    let (_cdir, storage) = file_storage();
    let result = job_with(&input, &storage, |env| {
        env.checkpoint_config().timeout = Duration::from_nanos(1);
        env.checkpoint_config().tolerable_failures = u32::MAX;
    });
    assert!(result.failed_checkpoints > 0, "checkpoints must have expired");
    assert_eq!(counts(result.final_records), expected);
}

#[test]
fn too_many_failed_checkpoints_fail_the_job_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("words.txt");
    corpus(&input, 400_000);
    let (_cdir, storage) = broken_file_storage();
    let mut env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_millis(1))
        .set_checkpoint_storage(storage);
    env.settings_mut().job_id = Some("fixed-job".into());
    let err = env
        .read_text_file(&input)
        .flat_map(|line: String| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .key_by(|word| word.clone())
        .sum(|_| 1)
        .discard()
        .execute()
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(err.to_string().contains("checkpoints failed in a row"), "{err}");
}

#[test]
fn savepoint_restores_into_another_backend_at_another_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("words.txt");
    let expected = corpus(&input, 300_000);
    let (_cdir, storage) = file_storage();
    let job = word_count_job(
        &input,
        Arc::new(streamstate_memory::MemoryStateBackend::with_max_state_size(64 << 20)),
        &storage,
        1,
        CheckpointingMode::ExactlyOnce,
        false,
        false,
    );
    std::thread::sleep(Duration::from_millis(30));
    let Ok((savepoint, _)) = job.stop_with_savepoint() else {
        panic!("the job finished before the savepoint; enlarge the input");
    };
    assert!(savepoint.contains("/savepoints/savepoint-"), "{savepoint}");
    let (root, dir_in_root) = savepoint.split_once("/savepoints/").unwrap();
    let from = CheckpointStorage::open(root).unwrap();
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(3)
        .set_state_backend(Arc::new(streamstate_fs::FsStateBackend::new()))
        .set_checkpoint_storage(storage.clone())
        .restore_from(RestoreFrom::Snapshot {
            storage: from,
            dir: format!("savepoints/{dir_in_root}"),
        });
    let result = word_count(env.read_text_file(&input))
        .discard()
        .execute()
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(counts(result.final_records), expected);
}
