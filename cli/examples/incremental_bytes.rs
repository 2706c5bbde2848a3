//! Bytes an incremental checkpoint uploads against the bytes of state that
//! changed since the checkpoint before it (issue 7's target: at most 2×),
//! for the fs backend (heap deltas), RocksDB (native checkpoints) and
//! RocksDB with changelog checkpoints (`rocksdb changelog`).
//!
//! Each backend is filled with a word count's state (a `u64` count per
//! word), checkpointed to `file://`, then `--rounds` times has
//! `--changed-percent` of its words counted once more, chosen at random,
//! and checkpointed again. The changed bytes are the distinct changed
//! records' serialized key plus value, as a canonical snapshot holds them;
//! the harness counts them itself, apart from the backends. Between
//! checkpoints RocksDB's background flushes are waited for, as the 1 s
//! checkpoint interval of a job gives them time to finish.
//!
//! Usage: `incremental_bytes [--keys N] [--rounds R] [--changed-percent P]
//! [--list-files]`.
//! Prints one JSON object per checkpoint on standard output: `{"name":
//! "fs", "keys": …, "changed_percent": …, "checkpoint": 2, "kind":
//! "incremental", "changed_bytes": …, "uploaded_bytes": …, "full_bytes": …}`
//! (the changed bytes are those of the changes the checkpoint is the first
//! to hold; the first checkpoint's are the whole fill). `kind` is `full`
//! for a checkpoint that starts a chain (the heap backend's periodic full
//! file, a changelog's base), `incremental` otherwise. `scripts/bench.sh`
//! records them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::time::Duration;

use streamstate_api::{
    CheckpointStorage, FileRef, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend, KeyedStateBackendExt,
    KeyedStateHandle, OperatorSnapshot, SnapshotFormat, SnapshotKind, SnapshotManifest, SnapshotTarget, StateBackend,
    ValueStateDescriptor,
};
use streamstate_fs::FsStateBackend;
use streamstate_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend, RocksDbStateBackend};

const MAX_PARALLELISM: u32 = 128;

struct Settings {
    keys: u64,
    rounds: u64,
    changed_percent: u64,
    /// Also print every checkpoint's files (id, path, size) on standard
    /// error: what made a checkpoint large.
    list_files: bool,
}

fn settings() -> Settings {
    let mut settings = Settings {
        keys: 700_000,
        rounds: 10,
        changed_percent: 1,
        list_files: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--list-files" {
            settings.list_files = true;
            continue;
        }
        let value: u64 = args
            .next()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| usage(&format!("{flag} needs a whole number")));
        match flag.as_str() {
            "--keys" => settings.keys = value.max(1),
            "--rounds" => settings.rounds = value,
            "--changed-percent" => settings.changed_percent = value.clamp(1, 100),
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    settings
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: incremental_bytes [--keys N] [--rounds R] [--changed-percent P] [--list-files]");
    std::process::exit(2);
}

/// A small deterministic generator (xorshift64*): the same words change
/// in every run, with no dependency for it.
struct Words(u64);

impl Words {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// Counts each of `words` once more; returns the serialized bytes (key +
/// value) of the distinct records changed.
fn count_words(backend: &mut dyn KeyedStateBackend, words: impl Iterator<Item = u64>) -> u64 {
    let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
    let mut changed = HashSet::new();
    let mut changed_bytes = 0;
    for word in words {
        backend.set_current_key_typed(&format!("word-{word}")).unwrap();
        let n = count.value(backend).unwrap().unwrap_or(0) + 1;
        count.update(backend, &n).unwrap();
        if changed.insert(word) {
            changed_bytes +=
                (backend.current_key().len() + streamstate_api::codec::encode_value(&n).unwrap().len()) as u64;
        }
    }
    changed_bytes
}

fn checkpoint(
    backend: &mut dyn KeyedStateBackend,
    storage: &CheckpointStorage,
    job: &str,
    id: u64,
    format: SnapshotFormat,
) -> KeyedStateHandle {
    let target = SnapshotTarget {
        checkpoint_id: id,
        kind: SnapshotKind::Checkpoint,
        format,
        incremental: true,
        base: format!("{job}/"),
        exclusive_dir: format!("chk-{id}"),
        shared_dir: "shared".into(),
        file_stem: "op-0".into(),
    };
    let handle = backend.snapshot(&target).unwrap().write(storage, &target).unwrap();
    let mut manifest = SnapshotManifest::new(job, id, SnapshotKind::Checkpoint, MAX_PARALLELISM);
    manifest.operators.push(OperatorSnapshot {
        operator_id: "count".into(),
        parallelism: 1,
        keyed_state: vec![handle.clone()],
        operator_state: vec![],
    });
    storage.commit(&manifest).unwrap();
    handle
}

/// Whether `handle` extends the chain of the checkpoint before it (files
/// `previous`): references one of its files other than RocksDB's SSTs and
/// OPTIONS, which every native checkpoint shares, chain or not.
fn extends_chain(handle: &KeyedStateHandle, previous: &[FileRef]) -> bool {
    handle
        .files
        .iter()
        .any(|f| !(f.path.ends_with(".sst") || f.path.contains("~OPTIONS-")) && previous.contains(f))
}

/// A backend under measurement, and what runs before each change.
trait Measured {
    fn backend(&mut self) -> &mut dyn KeyedStateBackend;

    /// Before each change: nothing for the heap backend.
    fn settle(&mut self) {}
}

impl Measured for Box<dyn KeyedStateBackend> {
    fn backend(&mut self) -> &mut dyn KeyedStateBackend {
        self.as_mut()
    }
}

impl Measured for RocksDbKeyedStateBackend {
    fn backend(&mut self) -> &mut dyn KeyedStateBackend {
        self
    }

    /// The flush each checkpoint starts finishes, as it does within a
    /// job's checkpoint interval.
    fn settle(&mut self) {
        self.wait_for_background_flushes(Duration::from_secs(60)).unwrap();
    }
}

/// Fills the backend, then checkpoints it `rounds + 1` times with random
/// changes in between, printing a line per checkpoint.
fn measure(name: &str, measured: &mut impl Measured, format: SnapshotFormat, chains: bool, settings: &Settings) {
    let job = name.replace(' ', "-");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = CheckpointStorage::open(&format!("file://{}", dir.path().display())).unwrap();
    let mut words = Words(0x9e37_79b9_7f4a_7c15);
    let changes = (settings.keys * settings.changed_percent / 100).max(1);
    let mut changed_bytes = count_words(measured.backend(), 0..settings.keys);
    let mut previous_files: Option<Vec<FileRef>> = None;
    for id in 1..=settings.rounds + 1 {
        let handle = checkpoint(measured.backend(), &storage, &job, id, format);
        // Native checkpoints without a changelog are all incremental after
        // the first; the others are full when they start a new chain.
        let kind = match &previous_files {
            Some(previous) if !chains || extends_chain(&handle, previous) => "incremental",
            _ => "full",
        };
        println!(
            "{{\"name\": \"{name}\", \"keys\": {}, \"changed_percent\": {}, \"checkpoint\": {id}, \
             \"kind\": \"{}\", \"changed_bytes\": {changed_bytes}, \"uploaded_bytes\": {}, \"full_bytes\": {}}}",
            settings.keys, settings.changed_percent, kind, handle.uploaded_bytes, handle.full_bytes
        );
        previous_files = Some(handle.files.clone());
        if settings.list_files {
            for f in &handle.files {
                eprintln!("  {id} {} {}", f.path, f.size);
            }
        }
        measured.settle();
        let picks: Vec<u64> = (0..changes).map(|_| words.next_below(settings.keys)).collect();
        changed_bytes = count_words(measured.backend(), picks.into_iter());
    }
}

fn main() {
    let settings = settings();
    let options = || KeyedBackendOptions::new("bytes", "count", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
    let mut heap = FsStateBackend::new().create_keyed_backend(options()).unwrap();
    measure("fs", &mut heap, SnapshotFormat::Canonical, true, &settings);
    drop(heap);
    let mut rocksdb = RocksDbStateBackend::default().create(options()).unwrap();
    measure("rocksdb", &mut rocksdb, SnapshotFormat::Native, false, &settings);
    drop(rocksdb);
    let changelog = RocksDbStateBackend::new(RocksDbConfig {
        changelog: true,
        ..RocksDbConfig::default()
    });
    let mut rocksdb = changelog.create(options()).unwrap();
    measure(
        "rocksdb changelog",
        &mut rocksdb,
        SnapshotFormat::Native,
        true,
        &settings,
    );
}
