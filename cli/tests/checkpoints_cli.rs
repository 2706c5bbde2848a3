//! Drives the real `streamstate` binary against checkpoints written by the
//! memory backend (canonical format) and the RocksDB backend (native files).
#![allow(clippy::unwrap_used)]
use std::process::Command;

use streamstate_api::namespaced::NamespacedStateExt;
use streamstate_api::timers::{TimeDomain, TimerService};
use streamstate_api::{
    CheckpointStorage, KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt, OperatorSnapshot, SnapshotFormat,
    SnapshotKind, SnapshotManifest, SnapshotTarget, StateBackend, ValueStateDescriptor,
};

fn write_checkpoint(dir: &std::path::Path) -> String {
    write_checkpoint_with(
        dir,
        &streamstate_memory::MemoryStateBackend::new(),
        SnapshotFormat::Canonical,
    )
}

fn write_checkpoint_with(dir: &std::path::Path, backend: &dyn StateBackend, format: SnapshotFormat) -> String {
    let uri = format!("file://{}", dir.display());
    let storage = CheckpointStorage::open(&uri).unwrap();
    let mut keyed = backend
        .create_keyed_backend(KeyedBackendOptions::new("wc", "sum", KeyGroupRange::all(128), 128))
        .unwrap();
    let count = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
    for (word, n) in [("HELLO", 3u64), ("WORLD", 1)] {
        keyed.set_current_key_typed(word).unwrap();
        count.update(keyed.as_mut(), &n).unwrap();
    }
    // HELLO also counts 2 in window "w5", with a timer at its end.
    let windows = keyed
        .namespaced_value_state::<String, u64>(&ValueStateDescriptor::new("window"))
        .unwrap();
    let mut timers = TimerService::open(keyed.as_mut()).unwrap();
    keyed.set_current_key_typed("HELLO").unwrap();
    windows.update(keyed.as_mut(), &"w5".to_owned(), &2).unwrap();
    let ns = streamstate_api::codec::encode_value("w5").unwrap();
    timers
        .register(keyed.as_mut(), TimeDomain::EventTime, &ns, 4999)
        .unwrap();
    let target = SnapshotTarget {
        checkpoint_id: 4,
        kind: SnapshotKind::Checkpoint,
        format,
        incremental: format == SnapshotFormat::Native,
        base: "wc/".into(),
        exclusive_dir: "chk-4".into(),
        shared_dir: "shared".into(),
        file_stem: "sum-0".into(),
    };
    let handle = keyed.snapshot(&target).unwrap().write(&storage, &target).unwrap();
    let mut manifest = SnapshotManifest::new("wc", 4, SnapshotKind::Checkpoint, 128);
    manifest.operators.push(OperatorSnapshot {
        operator_id: "sum".into(),
        parallelism: 1,
        keyed_state: vec![handle],
        operator_state: vec![],
    });
    storage.commit(&manifest).unwrap();
    uri
}

fn streamstate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_shows_the_count_of_a_word() {
    let dir = tempfile::tempdir().unwrap();
    let uri = write_checkpoint(dir.path());
    let (ok, stdout, stderr) = streamstate(&["checkpoints", "inspect", &format!("{uri}/wc/chk-4"), "--key", "HELLO"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("sum count"), "{stdout}");
    assert!(stdout.contains("\"HELLO\" = 3"), "{stdout}");
    assert!(!stdout.contains("WORLD"), "--key filters: {stdout}");
}

/// What `inspect` prints for the namespaced state and the timer that
/// [`write_checkpoint_with`] writes.
fn assert_shows_window_and_timer(uri: &str) {
    let (ok, stdout, stderr) = streamstate(&["checkpoints", "inspect", &format!("{uri}/wc/chk-4")]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("window (Value per alloc::string::String)"), "{stdout}");
    assert!(stdout.contains("_timer_state/event (timers, EventTime)"), "{stdout}");
    assert!(stdout.contains("sum window kg="), "{stdout}");
    assert!(stdout.contains("\"HELLO\" ns=\"w5\" = 2"), "{stdout}");
    assert!(stdout.contains("\"HELLO\" ns=\"w5\" timer at 4999"), "{stdout}");
    let (ok, stdout, stderr) = streamstate(&["checkpoints", "inspect", &format!("{uri}/wc/chk-4"), "--json"]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let timer = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["state"] == "_timer_state/event")
        .expect("a timer entry");
    assert_eq!(timer["timer_timestamp"], 4999, "{timer}");
    assert_eq!(timer["namespace"], "\"w5\"", "{timer}");
}

#[test]
fn inspect_shows_namespaces_and_timers_of_canonical_and_native_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    assert_shows_window_and_timer(&write_checkpoint(&dir.path().join("memory")));
    let backend = streamstate_rocksdb::RocksDbStateBackend::new(streamstate_rocksdb::RocksDbConfig {
        local_dir: Some(dir.path().join("local")),
        ..streamstate_rocksdb::RocksDbConfig::default()
    });
    let uri = write_checkpoint_with(&dir.path().join("rocksdb"), &backend, SnapshotFormat::Native);
    assert_shows_window_and_timer(&uri);
}

#[test]
fn inspect_reads_a_native_rocksdb_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let backend = streamstate_rocksdb::RocksDbStateBackend::new(streamstate_rocksdb::RocksDbConfig {
        local_dir: Some(dir.path().join("local")),
        ..streamstate_rocksdb::RocksDbConfig::default()
    });
    let uri = write_checkpoint_with(&dir.path().join("checkpoints"), &backend, SnapshotFormat::Native);
    let storage = CheckpointStorage::open(&uri).unwrap();
    let manifest = storage.load("wc/chk-4").unwrap().manifest;
    let handle = &manifest.operators[0].keyed_state[0];
    assert_eq!(
        (handle.backend.as_str(), handle.format),
        ("rocksdb", SnapshotFormat::Native)
    );

    let (ok, stdout, stderr) = streamstate(&["checkpoints", "inspect", &format!("{uri}/wc/chk-4")]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"HELLO\" = 3"), "{stdout}");
    assert!(stdout.contains("\"WORLD\" = 1"), "{stdout}");
    let (ok, stdout, stderr) = streamstate(&["checkpoints", "inspect", &format!("{uri}/wc/chk-4"), "--key", "WORLD"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("\"WORLD\" = 1") && !stdout.contains("HELLO"),
        "{stdout}"
    );
}

#[test]
fn inspect_reads_an_incremental_heap_chain() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", dir.path().display());
    let storage = CheckpointStorage::open(&uri).unwrap();
    let mut keyed = streamstate_fs::FsStateBackend::new()
        .create_keyed_backend(KeyedBackendOptions::new("wc", "sum", KeyGroupRange::all(128), 128))
        .unwrap();
    let count = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
    let checkpoint = |keyed: &mut Box<dyn streamstate_api::KeyedStateBackend>, id: u64| {
        let target = SnapshotTarget {
            checkpoint_id: id,
            kind: SnapshotKind::Checkpoint,
            format: SnapshotFormat::Canonical,
            incremental: true,
            base: "wc/".into(),
            exclusive_dir: format!("chk-{id}"),
            shared_dir: "shared".into(),
            file_stem: "sum-0".into(),
        };
        let handle = keyed.snapshot(&target).unwrap().write(&storage, &target).unwrap();
        let mut manifest = SnapshotManifest::new("wc", id, SnapshotKind::Checkpoint, 128);
        manifest.operators.push(OperatorSnapshot {
            operator_id: "sum".into(),
            parallelism: 1,
            keyed_state: vec![handle],
            operator_state: vec![],
        });
        storage.commit(&manifest).unwrap();
    };
    for (word, n) in [("HELLO", 3u64), ("WORLD", 1), ("GONE", 7)] {
        keyed.set_current_key_typed(word).unwrap();
        count.update(keyed.as_mut(), &n).unwrap();
    }
    checkpoint(&mut keyed, 1);
    // The delta: one count changed, one key removed.
    keyed.set_current_key_typed("WORLD").unwrap();
    count.update(keyed.as_mut(), &2).unwrap();
    keyed.set_current_key_typed("GONE").unwrap();
    count.clear(keyed.as_mut()).unwrap();
    checkpoint(&mut keyed, 2);
    let files = &storage.load("wc/chk-2").unwrap().manifest.operators[0].keyed_state[0].files;
    assert_eq!(files.len(), 2, "a full file and a delta");

    let (ok, stdout, stderr) = streamstate(&["checkpoints", "inspect", &format!("{uri}/wc/chk-2")]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"HELLO\" = 3"), "{stdout}");
    assert!(stdout.contains("\"WORLD\" = 2"), "{stdout}");
    assert!(!stdout.contains("GONE"), "removed in the delta: {stdout}");
}

#[test]
fn list_shows_committed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let uri = write_checkpoint(dir.path());
    let (ok, stdout, stderr) = streamstate(&["checkpoints", "list", &uri, "--json"]);
    assert!(ok, "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows[0]["id"], 4);
    assert_eq!(rows[0]["job"], "wc");
    assert_eq!(rows[0]["complete"], true);
}

#[test]
fn missing_metadata_is_one_clear_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let uri = write_checkpoint(dir.path());
    std::fs::remove_file(dir.path().join("wc/chk-4/_metadata")).unwrap();
    let (ok, _, stderr) = streamstate(&["checkpoints", "inspect", &format!("{uri}/wc/chk-4")]);
    assert!(!ok);
    assert!(stderr.starts_with("error: NotFound"), "{stderr}");
    assert!(stderr.contains("wc/chk-4/_metadata"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn malformed_uri_is_a_config_error() {
    let (ok, _, stderr) = streamstate(&["checkpoints", "list", "ftp://nowhere/x"]);
    assert!(!ok);
    assert!(stderr.contains("Config") && stderr.contains("supported:"), "{stderr}");
}

/// The input the version 1 fixture's job read (see its README).
fn fixture_input() -> String {
    (0..300_000u32)
        .map(|i| format!("w{} w{} w{}\n", i % 40, (i * 7) % 41, (i * 13) % 43))
        .collect()
}

#[test]
fn a_version_1_checkpoint_restores_on_every_backend() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/canonical-v1-wordcount/b43ea23efc174908/chk-10");
    let file = std::fs::read(fixture.join("keyed-0.kgs")).unwrap();
    assert_eq!(file[8..12], 1u32.to_le_bytes(), "the fixture is a version 1 file");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text = fixture_input();
    std::fs::write(&input, &text).unwrap();
    // A plain count of the whole input: the restored job counts the part
    // after the checkpoint's offset on top of the counts restored.
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    for word in text.split_whitespace() {
        *expected.entry(word.to_uppercase()).or_default() += 1;
    }
    for backend in ["memory", "fs", "rocksdb"] {
        let output = dir.path().join(format!("{backend}.out"));
        let (ok, _, stderr) = streamstate(&[
            "wordcount",
            "--input",
            input.to_str().unwrap(),
            "--state-backend",
            backend,
            "--checkpoint-dir",
            &format!("file://{}/{backend}-ck", dir.path().display()),
            "--from-checkpoint",
            &format!("file://{}", fixture.display()),
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(ok, "{backend}: {stderr}");
        let got: std::collections::BTreeMap<String, u64> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|line| {
                let (word, count) = line.split_once('\t').unwrap();
                (word.to_owned(), count.parse().unwrap())
            })
            .collect();
        assert_eq!(got, expected, "{backend}");
    }
}
