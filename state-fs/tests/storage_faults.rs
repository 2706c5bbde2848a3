//! Storage that goes away mid-checkpoint: a real S3 server (s3s-fs) is
//! killed, and the real HDFS's only DataNode is stopped, between the files
//! of a checkpoint upload. That checkpoint fails with an error naming the
//! URI, the committed one before it stays intact, and once storage is back
//! the next checkpoint succeeds and restores exactly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamstate_api::testkit::{checkpoint_target, commit_keyed_checkpoint, dump};
use streamstate_api::{
    CheckpointStorage, ErrorKind, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend, KeyedStateBackendExt,
    KeyedStateHandle, SnapshotFormat, SnapshotTarget, StateBackend, StorageOptions, ValueStateDescriptor,
};

const JOB: &str = "faults";
const MAX_PARALLELISM: u32 = 128;
const PARALLELISM: u32 = 4;

struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start(root: &Path, port: u16) -> Self {
        let bin = std::env::var("STREAMSTATE_S3S_FS_BIN")
            .unwrap_or_else(|_| panic!("STREAMSTATE_S3S_FS_BIN is not set: run the tests with scripts/test.sh"));
        std::fs::create_dir_all(root.join("faults")).unwrap();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "fault-key", "--secret-key", "fault-secret"])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the S3 server {bin}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the S3 server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn storage(port: u16) -> CheckpointStorage {
    let options = StorageOptions {
        max_retries: 2,
        operation_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(5),
        service_options: BTreeMap::from([
            ("s3.endpoint".to_owned(), format!("http://127.0.0.1:{port}")),
            ("s3.access-key".to_owned(), "fault-key".to_owned()),
            ("s3.secret-key".to_owned(), "fault-secret".to_owned()),
            ("s3.region".to_owned(), "us-east-1".to_owned()),
        ]),
        ..StorageOptions::default()
    };
    CheckpointStorage::open_with("s3://faults/checkpoints", &options).unwrap()
}

fn target(id: u64, subtask: u32) -> SnapshotTarget {
    checkpoint_target(JOB, id, SnapshotFormat::Canonical, false, &format!("count-{subtask}"))
}

fn commit(storage: &CheckpointStorage, id: u64, handles: Vec<KeyedStateHandle>) {
    commit_keyed_checkpoint(storage, JOB, id, MAX_PARALLELISM, "count", handles).unwrap();
}

/// Word-count-like updates routed to the subtask owning each key.
fn count(subtasks: &mut [Box<dyn KeyedStateBackend>], words: std::ops::Range<u32>) {
    for w in words {
        let key = streamstate_api::codec::encode_value(&format!("word-{}", w % 20_000)).unwrap();
        let group = streamstate_api::key_group::assign_to_key_group(&key, MAX_PARALLELISM);
        let b = &mut subtasks
            [streamstate_api::key_group::subtask_for_key_group(MAX_PARALLELISM, PARALLELISM, group) as usize];
        let state = b.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
        b.set_current_key(&key).unwrap();
        let n = state.value(b.as_mut()).unwrap().unwrap_or(0);
        state.update(b.as_mut(), &(n + 1)).unwrap();
    }
}

fn full_dump(subtasks: &mut [Box<dyn KeyedStateBackend>]) -> streamstate_api::testkit::StateDump {
    subtasks.iter_mut().flat_map(|b| dump(b.as_mut()).unwrap()).collect()
}

fn restore_all(storage: &CheckpointStorage, handles: &[KeyedStateHandle]) -> streamstate_api::testkit::StateDump {
    let backend = streamstate_fs::FsStateBackend::new();
    let options = KeyedBackendOptions::new(JOB, "count", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
    let mut restored = backend.restore_keyed_backend(options, handles, storage).unwrap();
    dump(restored.as_mut()).unwrap()
}

/// Checkpoint 1 commits; storage goes down (`down`) after the first
/// subtask's file of checkpoint 2 is written, so checkpoint 2 fails naming
/// `uri` and its file while processing goes on; storage comes back (`up`);
/// checkpoint 1 was never damaged, checkpoint 3 commits and restores
/// exactly, and retention then removes 1 and the abandoned 2.
fn checkpoint_through_outage(storage: &CheckpointStorage, uri: &str, down: impl FnOnce(), up: impl FnOnce()) {
    let backend = streamstate_fs::FsStateBackend::new();
    let mut subtasks: Vec<Box<dyn KeyedStateBackend>> = (0..PARALLELISM)
        .map(|i| {
            let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, PARALLELISM, i);
            backend
                .create_keyed_backend(KeyedBackendOptions::new(JOB, "count", range, MAX_PARALLELISM))
                .unwrap()
        })
        .collect();
    let checkpoint = |subtasks: &mut [Box<dyn KeyedStateBackend>], id: u64| {
        let handles: Vec<_> = subtasks
            .iter_mut()
            .enumerate()
            .map(|(i, b)| {
                b.snapshot(&target(id, i as u32))
                    .unwrap()
                    .write(storage, &target(id, i as u32))
                    .unwrap()
            })
            .collect();
        commit(storage, id, handles);
    };

    count(&mut subtasks, 0..50_000);
    let at_chk1 = full_dump(&mut subtasks);
    checkpoint(&mut subtasks, 1);

    // Checkpoint 2: storage goes down after the first subtask's file is up.
    count(&mut subtasks, 50_000..80_000);
    let pending: Vec<_> = subtasks
        .iter_mut()
        .enumerate()
        .map(|(i, b)| b.snapshot(&target(2, i as u32)).unwrap())
        .collect();
    let mut results = Vec::new();
    let mut down = Some(down);
    for (i, p) in pending.into_iter().enumerate() {
        results.push(p.write(storage, &target(2, i as u32)));
        if let Some(down) = down.take() {
            down();
        }
    }
    assert!(results[0].is_ok(), "the first file went up before the outage");
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    assert!(err.to_string().contains(uri), "the error names the URI {uri}: {err}");
    assert!(err.to_string().contains("chk-2"), "the error names the file: {err}");
    // Processing goes on while storage is down.
    count(&mut subtasks, 80_000..90_000);

    up();
    let latest = storage.latest_completed(Some(JOB)).unwrap().unwrap();
    assert_eq!(
        latest.manifest.checkpoint_id, 1,
        "the failed checkpoint 2 never committed"
    );
    assert_eq!(restore_all(storage, &latest.manifest.operators[0].keyed_state), at_chk1);

    // The next checkpoint succeeds and restores exactly.
    let at_chk3 = full_dump(&mut subtasks);
    checkpoint(&mut subtasks, 3);
    let latest = storage.latest_completed(Some(JOB)).unwrap().unwrap();
    assert_eq!(latest.manifest.checkpoint_id, 3);
    assert_eq!(restore_all(storage, &latest.manifest.operators[0].keyed_state), at_chk3);

    // Retention after the commit removes 1 and the abandoned 2, keeps 3.
    let report = storage.apply_retention(JOB, 1).unwrap();
    assert_eq!(report.deleted_checkpoints, vec![1, 2]);
    let chk3 = storage.load(&format!("{JOB}/chk-3")).unwrap();
    assert_eq!(restore_all(storage, &chk3.manifest.operators[0].keyed_state), at_chk3);
}

#[test]
fn s3_server_killed_mid_checkpoint_then_back_next_checkpoint_succeeds() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = S3Server::start(root.path(), port);
    let storage = storage(server.port);
    let mut restarted = None;
    checkpoint_through_outage(
        &storage,
        "s3://faults/checkpoints",
        || server.kill(),
        || {
            // The server comes back on the same port with the same data.
            restarted = Some(S3Server::start(root.path(), port));
        },
    );
    assert!(restarted.is_some());
}

/// Sends one command to the MiniDFSCluster's control port.
fn hdfs_control(command: &str) {
    use std::io::{BufRead, Write};
    let address = std::env::var("STREAMSTATE_TEST_HDFS_CONTROL")
        .unwrap_or_else(|_| panic!("STREAMSTATE_TEST_HDFS_CONTROL is not set: run the tests with scripts/test.sh"));
    let mut stream = std::net::TcpStream::connect(&address)
        .unwrap_or_else(|e| panic!("cannot reach the MiniDFSCluster control port {address}: {e}"));
    writeln!(stream, "{command}").unwrap();
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply).unwrap();
    assert_eq!(reply.trim(), "ok", "{command}: {reply}");
}

#[test]
fn hdfs_datanode_stopped_mid_checkpoint_then_restarted_next_checkpoint_succeeds() {
    let base = std::env::var("STREAMSTATE_TEST_HDFS_URI")
        .unwrap_or_else(|_| panic!("STREAMSTATE_TEST_HDFS_URI is not set: run the tests with scripts/test.sh"));
    let uri = format!("{base}/datanode-faults-{}", std::process::id());
    let options = StorageOptions {
        max_retries: 1,
        operation_timeout: Duration::from_secs(20),
        io_timeout: Duration::from_secs(20),
        ..StorageOptions::default()
    };
    let storage = CheckpointStorage::open_with(&uri, &options).unwrap();
    let mut stopped = false;
    checkpoint_through_outage(
        &storage,
        &uri,
        || {
            hdfs_control("stop-datanode");
            stopped = true;
        },
        || hdfs_control("restart-datanode"),
    );
    assert!(stopped);
}

#[test]
fn byte_flipped_in_committed_checkpoint_is_checksum_mismatch_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = S3Server::start(root.path(), port);
    let storage = storage(port);
    let backend = streamstate_fs::FsStateBackend::new();
    let options = KeyedBackendOptions::new(JOB, "count", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
    let mut keyed = backend.create_keyed_backend(options.clone()).unwrap();
    let state = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
    for i in 0..1000u64 {
        keyed.set_current_key_typed(&i).unwrap();
        state.update(keyed.as_mut(), &i).unwrap();
    }
    let handle = keyed
        .snapshot(&target(1, 0))
        .unwrap()
        .write(&storage, &target(1, 0))
        .unwrap();
    commit(&storage, 1, vec![handle]);
    let loaded = storage.load("faults/chk-1").unwrap();
    let file = loaded.manifest.operators[0].keyed_state[0].files[0].clone();
    let mut bytes = storage.read(&file.path).unwrap();
    bytes[100] ^= 0x20;
    storage.write(&file.path, bytes).unwrap();
    let err = backend
        .restore_keyed_backend(options, &loaded.manifest.operators[0].keyed_state, &storage)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{err}");
    assert!(err.to_string().contains(&file.path), "names the file: {err}");
}
