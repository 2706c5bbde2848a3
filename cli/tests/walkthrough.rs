//! Flink's socket word-count walkthrough, end to end on the real binary:
//! a `TcpListener` plays `nc -lk`, the job counts, a checkpoint commits,
//! the process is stopped (SIGINT: cancel; SIGTERM: stop with savepoint),
//! restarted with `--from-checkpoint latest`, fed more lines, and the last
//! printed count of every word must equal the total sent. The same with
//! `--window 5s` in processing time: stopped and restarted inside a
//! window, the window's counts include the words typed before the stop.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn start(args: &[String]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .arg("wordcount")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    Running { child, stdout, stderr }
}

/// Last printed count per word, from `(WORD,COUNT)` lines.
fn last_counts(lines: &[String]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        if let Some(inner) = line.strip_prefix('(').and_then(|l| l.strip_suffix(')')) {
            let (word, count) = inner.rsplit_once(',').unwrap();
            counts.insert(word.to_owned(), count.parse().unwrap());
        }
    }
    counts
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send(stream: &mut TcpStream, lines: &[&str], expected: &mut BTreeMap<String, i64>) {
    for line in lines {
        writeln!(stream, "{line}").unwrap();
        for word in line.to_uppercase().split_whitespace() {
            *expected.entry(word.to_owned()).or_insert(0) += 1;
        }
    }
    stream.flush().unwrap();
}

fn completed_checkpoints(dir: &str) -> Vec<u64> {
    let storage = streamstate_api::CheckpointStorage::open(dir).unwrap();
    storage
        .completed_checkpoints(None)
        .unwrap()
        .iter()
        .map(|c| c.manifest.checkpoint_id)
        .collect()
}

fn walkthrough(backend: &str, checkpoint_dir: &str, signal: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let args: Vec<String> = [
        "--socket",
        &format!("127.0.0.1:{port}"),
        "--state-backend",
        backend,
        "--checkpoint-dir",
        checkpoint_dir,
        "--checkpoint-interval",
        "200ms",
        "--parallelism",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // Phase 1: count, let a checkpoint commit after everything was counted.
    let job = start(&args);
    let (mut conn, _) = listener.accept().unwrap();
    let mut expected = BTreeMap::new();
    send(
        &mut conn,
        &["to be or not to be", "that is the question", "To BE"],
        &mut expected,
    );
    let strip = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.split_once("> ").map_or(l.clone(), |(_, r)| r.to_owned()))
            .collect()
    };
    wait_for("phase 1 counts", Duration::from_secs(30), || {
        last_counts(&strip(&job.stdout.lock().unwrap())) == expected
    });
    let before = completed_checkpoints(checkpoint_dir).into_iter().max().unwrap_or(0);
    wait_for("a checkpoint after the counts", Duration::from_secs(30), || {
        completed_checkpoints(checkpoint_dir).into_iter().max().unwrap_or(0) > before + 1
    });

    // Stop.
    let mut job = job;
    Command::new("kill")
        .args([signal, &job.child.id().to_string()])
        .status()
        .unwrap();
    let status = job.child.wait().unwrap();
    assert!(status.success(), "stopped cleanly: {:?}", job.stderr.lock().unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let stderr = job.stderr.lock().unwrap().join("\n");
    if signal == "-TERM" {
        assert!(stderr.contains("stopped with savepoint"), "{stderr}");
    } else {
        assert!(stderr.contains("--from-checkpoint latest"), "{stderr}");
    }
    drop(conn);

    // What the retained checkpoint holds, through `checkpoints inspect`
    // (after the stop: a running job's retention may delete a checkpoint
    // while it is read).
    let latest = streamstate_api::CheckpointStorage::open(checkpoint_dir)
        .unwrap()
        .latest_completed(None)
        .unwrap()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args([
            "checkpoints",
            "inspect",
            &format!("{}/{}", checkpoint_dir, latest.dir),
            "--key",
            "BE",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspect of {}: {}",
        latest.dir,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"BE\" = 3"), "inspect shows BE's count: {text}");

    // Phase 2: restart from the latest checkpoint, counts go on.
    let mut restart_args = args.clone();
    restart_args.extend(["--from-checkpoint".to_owned(), "latest".to_owned()]);
    let job = start(&restart_args);
    let (mut conn, _) = listener.accept().unwrap();
    send(&mut conn, &["be quick", "or be dead", "question"], &mut expected);
    drop(conn); // End of input: the job finishes.
    let mut child = job.child;
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(status.success(), "{:?}", job.stderr.lock().unwrap());
    let printed = last_counts(&strip(&job.stdout.lock().unwrap()));
    for word in ["BE", "OR", "QUESTION", "QUICK", "DEAD"] {
        assert_eq!(
            printed.get(word),
            expected.get(word),
            "count of {word} goes on where it was"
        );
    }
}

fn local_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", dir.path().display());
    (dir, uri)
}

#[test]
fn walkthrough_memory_backend_file_storage_sigint() {
    let (_d, uri) = local_dir();
    walkthrough("memory", &uri, "-INT");
}

#[test]
fn walkthrough_fs_backend_file_storage_sigint() {
    let (_d, uri) = local_dir();
    walkthrough("fs", &uri, "-INT");
}

#[test]
fn walkthrough_fs_backend_file_storage_sigterm_savepoint() {
    let (_d, uri) = local_dir();
    walkthrough("fs", &uri, "-TERM");
}

#[test]
fn walkthrough_rocksdb_backend_file_storage_sigint() {
    let (_d, uri) = local_dir();
    walkthrough("rocksdb", &uri, "-INT");
}

#[test]
fn walkthrough_rocksdb_backend_file_storage_sigterm_savepoint() {
    let (_d, uri) = local_dir();
    walkthrough("rocksdb", &uri, "-TERM");
}

#[cfg(feature = "remote-tests")]
#[test]
fn walkthrough_rocksdb_backend_s3_storage_sigint() {
    let base = std::env::var("STREAMSTATE_TEST_S3_URI")
        .unwrap_or_else(|_| panic!("STREAMSTATE_TEST_S3_URI is not set: run the tests with scripts/test.sh"));
    walkthrough("rocksdb", &format!("{base}/walkthrough-{}", std::process::id()), "-INT");
}

#[cfg(feature = "remote-tests")]
#[test]
fn walkthrough_rocksdb_backend_hdfs_storage_sigterm_savepoint() {
    let base = std::env::var("STREAMSTATE_TEST_HDFS_URI")
        .unwrap_or_else(|_| panic!("STREAMSTATE_TEST_HDFS_URI is not set: run the tests with scripts/test.sh"));
    walkthrough(
        "rocksdb",
        &format!("{base}/walkthrough-{}", std::process::id()),
        "-TERM",
    );
}

/// Printed window counts, `(WORD,COUNT) [START, END)` lines (a subtask
/// prefix `N> ` stripped): (start, word) to the count.
fn window_counts(lines: &[String]) -> BTreeMap<(i64, String), i64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let line = line.split_once("> ").map_or(line.as_str(), |(_, rest)| rest);
        let Some((pair, window)) = line.split_once(") [") else {
            continue;
        };
        let (word, count) = pair.trim_start_matches('(').rsplit_once(',').unwrap();
        let start: i64 = window.split_once(',').unwrap().0.parse().unwrap();
        let previous = counts.insert((start, word.to_owned()), count.parse().unwrap());
        assert_eq!(previous, None, "{word} printed twice for the window at {start}");
    }
    counts
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

const WINDOW_MS: i64 = 5_000;

/// Flink's SocketWindowWordCount with `--window 5s` in processing time:
/// words typed, a checkpoint, the job stopped (`signal`) and restarted
/// from `latest` inside the same window, more words typed; the window's
/// printed counts include the words typed before the stop. Returns
/// `Err` when the restart did not happen inside the window (a slow
/// machine): the caller tries again.
fn window_walkthrough_once(backend: &str, signal: &str) -> Result<(), String> {
    let (_dir, checkpoint_dir) = local_dir();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let args: Vec<String> = [
        "--socket",
        &format!("127.0.0.1:{port}"),
        "--window",
        "5s",
        "--state-backend",
        backend,
        "--checkpoint-dir",
        &checkpoint_dir,
        "--checkpoint-interval",
        "200ms",
        "--parallelism",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let job = start(&args);
    let (mut conn, _) = listener.accept().unwrap();
    // Start at the beginning of a window (windows are aligned to the
    // epoch), so the stop and restart fit inside it.
    while now_ms().rem_euclid(WINDOW_MS) >= 300 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let window = now_ms() - now_ms().rem_euclid(WINDOW_MS);
    let mut expected = BTreeMap::new();
    send(&mut conn, &["to be or not to be", "TO be"], &mut expected);
    let before = completed_checkpoints(&checkpoint_dir).into_iter().max().unwrap_or(0);
    wait_for("a checkpoint after the words", Duration::from_secs(30), || {
        completed_checkpoints(&checkpoint_dir).into_iter().max().unwrap_or(0) > before + 1
    });
    let mut job = job;
    Command::new("kill")
        .args([signal, &job.child.id().to_string()])
        .status()
        .unwrap();
    let status = job.child.wait().unwrap();
    assert!(status.success(), "stopped cleanly: {:?}", job.stderr.lock().unwrap());
    drop(conn);
    assert!(
        window_counts(&job.stdout.lock().unwrap()).is_empty(),
        "a stop does not fire the open window: {:?}",
        job.stdout.lock().unwrap()
    );

    let mut restart_args = args.clone();
    restart_args.extend(["--from-checkpoint".to_owned(), "latest".to_owned()]);
    let mut job = start(&restart_args);
    let (mut conn, _) = listener.accept().unwrap();
    send(&mut conn, &["be quick", "or be dead"], &mut expected);
    let sent_at = now_ms();
    if sent_at >= window + WINDOW_MS - 300 {
        let _ = job.child.kill();
        let _ = job.child.wait();
        return Err(format!(
            "the restart ended {} ms into a {WINDOW_MS} ms window",
            sent_at - window
        ));
    }
    // The window fires by the clock, while the input is still open.
    wait_for("the window to fire", Duration::from_secs(30), || {
        window_counts(&job.stdout.lock().unwrap()).len() == expected.len()
    });
    drop(conn);
    let status = job.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(status.success(), "{:?}", job.stderr.lock().unwrap());
    let printed = window_counts(&job.stdout.lock().unwrap());
    let expected: BTreeMap<(i64, String), i64> = expected.into_iter().map(|(w, c)| ((window, w), c)).collect();
    assert_eq!(printed, expected, "one window, its counts from both runs");
    Ok(())
}

fn window_walkthrough(backend: &str, signal: &str) {
    let mut missed = Vec::new();
    for _ in 0..3 {
        match window_walkthrough_once(backend, signal) {
            Ok(()) => return,
            Err(why) => missed.push(why),
        }
    }
    panic!("never restarted inside the window: {missed:?}");
}

#[test]
fn window_walkthrough_fs_backend_sigterm_savepoint() {
    window_walkthrough("fs", "-TERM");
}

#[test]
fn window_walkthrough_rocksdb_backend_sigint() {
    window_walkthrough("rocksdb", "-INT");
}

#[test]
fn window_walkthrough_memory_backend_sigint() {
    window_walkthrough("memory", "-INT");
}

#[test]
fn config_file_only_run_counts_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a b a\nC c\n\n  b  \n").unwrap();
    let config = dir.path().join("flink-conf.yaml");
    std::fs::write(
        &config,
        format!(
            "state.backend.type: hashmap\nexecution.checkpointing.dir: file://{}/chk\nexecution:\n  checkpointing:\n    interval: 50ms\n    num-retained: 2\nsome.unknown.key: 1\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let output = dir.path().join("out.tsv");
    let out = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args(["wordcount", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("unknown config key `some.unknown.key`"), "{stderr}");
    assert!(stderr.contains("backend fs"), "{stderr}");
    // Six words. With `--output` the source may fold them (local
    // aggregation) into partial sums, one per word and barrier interval at
    // most; on an input this short it may also have read everything
    // before the keyed subtasks said their sinks discard updates.
    let finished = stderr
        .lines()
        .find(|l| l.starts_with("job finished"))
        .unwrap_or_default();
    let counts = finished
        .strip_prefix("job finished: 6 records")
        .unwrap_or_else(|| panic!("no record count in {finished:?}"));
    if let Some(rest) = counts.strip_prefix(", folded into ") {
        let partial_sums: u64 = rest.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!((3..=6).contains(&partial_sums), "{finished}");
    } else {
        assert!(counts.is_empty() || counts.starts_with(';'), "{finished}");
    }
    // `--output` is unsorted (written a key group at a time).
    let mut lines: Vec<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(lines, ["A\t2", "B\t2", "C\t2"]);
    assert!(!dir.path().join("out.tsv.partial").exists());
}

#[test]
fn bad_input_is_one_clear_error_line() {
    for (args, needle) in [
        (vec!["--input", "/no/such/file"], "/no/such/file"),
        (
            vec!["--input", "/etc/hostname", "--state-backend", "cassandra"],
            "unknown state backend",
        ),
        (
            vec!["--input", "/etc/hostname", "--checkpoint-dir", "ftp://x/y"],
            "supported:",
        ),
        (vec!["--socket", "127.0.0.1:1"], "nc -lk"),
        (
            vec!["--input", "/etc/hostname", "--checkpoint-interval", "soon"],
            "duration",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_streamstate"))
            .arg("wordcount")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
