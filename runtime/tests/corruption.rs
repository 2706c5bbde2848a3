//! Corruption campaign: every file of a committed checkpoint (`_metadata`,
//! keyed state files, RocksDB SSTs in `shared/`, MANIFEST/OPTIONS, operator
//! state) is damaged in turn (a flipped byte, a truncation, a deletion), on
//! a fresh copy of the checkpoint directory each time. Every damage must be
//! detected: an explicit restore of that checkpoint fails with
//! `ChecksumMismatch`, `NotFound` or `Corrupt` naming the file, and a restore
//! from `latest` falls back to an older retained checkpoint and counts
//! exactly, unless every retained checkpoint needs the damaged file (an SST
//! they all share), in which case it fails naming the file too.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use streamstate_api::{CheckpointStorage, ErrorKind, StateBackend};
use streamstate_runtime::word_count::word_count;
use streamstate_runtime::{RestoreFrom, StreamExecutionEnvironment};

fn corpus(path: &Path, words: usize) -> BTreeMap<String, i64> {
    let mut text = String::new();
    let mut expected = BTreeMap::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = format!("c{}", (x % 500) * (x % 5));
        *expected.entry(word.to_uppercase()).or_insert(0) += 1;
        text.push_str(&word);
        text.push(if i % 10 == 9 { '\n' } else { ' ' });
    }
    std::fs::write(path, text).unwrap();
    expected
}

fn run(
    input: &Path,
    incremental: bool,
    backend: &Arc<dyn StateBackend>,
    storage: &CheckpointStorage,
    restore: Option<RestoreFrom>,
) -> streamstate_api::Result<BTreeMap<String, i64>> {
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(2)
        .enable_checkpointing(Duration::from_millis(5))
        .set_state_backend(Arc::clone(backend))
        .set_checkpoint_storage(storage.clone());
    env.checkpoint_config().num_retained = 3;
    env.checkpoint_config().incremental = incremental;
    if let Some(restore) = restore {
        env.restore_from(restore);
    }
    let result = word_count(env.read_text_file(input)).discard().execute()?.wait()?;
    Ok(result
        .final_records
        .into_iter()
        .map(|(word, n)| (word.to_string(), n))
        .collect())
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipByte,
    Truncate,
    Delete,
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::FlipByte if bytes.is_empty() => std::fs::write(path, b"x").unwrap(),
        Damage::FlipByte => {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
            std::fs::write(path, bytes).unwrap();
        }
        Damage::Truncate if bytes.is_empty() => std::fs::write(path, b"x").unwrap(),
        Damage::Truncate => std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap(),
        Damage::Delete => std::fs::remove_file(path).unwrap(),
    }
}

fn is_detection(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ChecksumMismatch | ErrorKind::NotFound | ErrorKind::Corrupt
    )
}

fn campaign(backend: Arc<dyn StateBackend>, incremental: bool) -> (usize, usize) {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("words.txt");
    let expected = corpus(&input, 300_000);
    let pristine = work.path().join("pristine");
    let storage = CheckpointStorage::open(&format!("file://{}", pristine.display())).unwrap();
    assert_eq!(run(&input, incremental, &backend, &storage, None).unwrap(), expected);
    let completed = storage.completed_checkpoints(None).unwrap();
    assert!(
        completed.len() >= 2,
        "the campaign needs two retained checkpoints, got {}",
        completed.len()
    );
    let latest = &completed[0];
    let previous_files: Vec<&str> = completed[1].manifest.files().map(|f| f.path.as_str()).collect();
    let needed_by_every_checkpoint = |file: &str| completed.iter().all(|c| c.manifest.files().any(|f| f.path == file));
    let mut targets: Vec<String> = latest.manifest.files().map(|f| f.path.clone()).collect();
    targets.push(format!("{}_metadata", latest.dir));

    let (mut cases, mut detected, mut fell_back) = (0, 0, 0);
    for (i, file) in targets.iter().enumerate() {
        for how in [Damage::FlipByte, Damage::Truncate, Damage::Delete] {
            cases += 1;
            let copy = work.path().join(format!("case-{i}-{how:?}"));
            copy_tree(&pristine, &copy);
            damage(&copy.join(file), how);
            let uri = format!("file://{}", copy.display());
            let damaged = CheckpointStorage::open(&uri).unwrap();

            // An explicit restore of the damaged checkpoint fails, naming the file.
            let explicit = RestoreFrom::Snapshot {
                storage: damaged.clone(),
                dir: latest.dir.clone(),
            };
            let err = run(&input, incremental, &backend, &damaged, Some(explicit))
                .expect_err(&format!("{file} ({how:?}) restored without complaint"));
            assert!(is_detection(err.kind()), "{file} ({how:?}): {err}");
            assert!(
                err.to_string().contains(file.as_str()),
                "{file} ({how:?}) not named: {err}"
            );
            detected += 1;

            // `latest` falls back to an older checkpoint that does not need the
            // damaged file; when every retained one needs it, it fails naming it.
            let result = run(&input, incremental, &backend, &damaged, Some(RestoreFrom::Latest));
            if needed_by_every_checkpoint(file) {
                let err = result.expect_err(&format!("{file} is needed by every retained checkpoint"));
                assert!(
                    is_detection(err.kind()) && err.to_string().contains(file.as_str()),
                    "{err}"
                );
            } else {
                let counts = result.unwrap_or_else(|e| panic!("{file} ({how:?}): no fallback: {e}"));
                assert!(counts == expected, "{file} ({how:?}): counts differ after falling back");
                fell_back += 1;
            }
            std::fs::remove_dir_all(&copy).unwrap();
        }
    }
    eprintln!(
        "corruption campaign {} (incremental: {incremental}): {} files, {cases} damages, {detected} detected, \
         {fell_back} fell back to an older checkpoint and counted exactly, {} failed naming a file every retained \
         checkpoint needs",
        backend.name(),
        targets.len(),
        cases - fell_back
    );
    assert_eq!(detected, cases);
    let shared_with_previous = targets.iter().filter(|t| previous_files.contains(&t.as_str())).count();
    (cases, shared_with_previous)
}

#[test]
fn memory_backend_detects_every_damaged_checkpoint_file() {
    campaign(Arc::new(streamstate_memory::MemoryStateBackend::new()), false);
}

#[test]
fn fs_backend_detects_every_damaged_checkpoint_file() {
    campaign(Arc::new(streamstate_fs::FsStateBackend::new()), false);
}

#[test]
fn rocksdb_full_checkpoints_detect_every_damaged_file() {
    campaign(Arc::new(streamstate_rocksdb::RocksDbStateBackend::default()), false);
}

#[test]
fn rocksdb_incremental_checkpoints_detect_every_damaged_file() {
    let (_, shared_with_previous) = campaign(Arc::new(streamstate_rocksdb::RocksDbStateBackend::default()), true);
    assert!(
        shared_with_previous > 0,
        "incremental checkpoints share SSTs with the checkpoint before them"
    );
}
