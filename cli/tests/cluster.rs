//! The word count across real processes of the real binary on loopback
//! (timely-dataflow over TCP, free ports): the union of the processes'
//! `--output` files equals a plain count made here, every word lies in the
//! key groups of the process that wrote it, a killed peer stops the others
//! promptly with its name, and bad cluster flags are clear errors.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamstate_api::key_group::{key_group_for_hash, key_hash};
use streamstate_api::KeyGroupRange;

const MAX_PARALLELISM: u32 = 128;

/// Lines of words from a small vocabulary with a skew, some non-ASCII, some
/// lines empty: deterministic (a fixed LCG).
fn corpus(lines: usize, vocab: usize) -> String {
    let vocab: Vec<String> = (0..vocab)
        .map(|i| match i % 7 {
            0 => format!("straße{i}"),
            _ => format!("w{i}"),
        })
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut text = String::new();
    for _ in 0..lines {
        let words = next() % 12;
        let line: Vec<&str> = (0..words)
            .map(|_| {
                let r = next() % vocab.len();
                vocab[(r % 1000) * (r / 1000 + 1) % vocab.len()].as_str()
            })
            .collect();
        text.push_str(&line.join(" "));
        text.push('\n');
    }
    text
}

/// The independent count: upper-case, split on whitespace, count.
fn plain_count(text: &str) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for word in text.to_uppercase().split_whitespace() {
        *counts.entry(word.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Writes `text` as the input file in `dir`.
fn write_input(dir: &Path, text: &str) -> PathBuf {
    let input = dir.join("input.txt");
    std::fs::write(&input, text).unwrap();
    input
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn hostfile(dir: &Path, processes: usize) -> PathBuf {
    let path = dir.join("hosts");
    let lines: Vec<String> = free_ports(processes)
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn spawn(args: &[String], stdout: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .arg("wordcount")
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `timeout`; kills it and fails after that.
fn wait_output(mut child: Child, timeout: Duration, what: &str) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{what} did not exit in {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cluster_args(hosts: &Path, processes: usize, process: usize, workers: usize) -> Vec<String> {
    vec![
        "--processes".into(),
        processes.to_string(),
        "--process".into(),
        process.to_string(),
        "--hosts".into(),
        hosts.display().to_string(),
        "--workers".into(),
        workers.to_string(),
    ]
}

/// Runs the word count over `input` on `processes` x `workers` and checks
/// the union of the outputs against the plain count, and each process's
/// words against its key-group ranges.
fn count_across(backend: &str, processes: usize, workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let text = corpus(3_000, 500);
    let input = write_input(dir.path(), &text);
    let hosts = hostfile(dir.path(), processes);
    let children: Vec<(PathBuf, Child)> = (0..processes)
        .map(|process| {
            let output = dir.path().join(format!("counts-{process}.tsv"));
            let mut args = cluster_args(&hosts, processes, process, workers);
            args.extend([
                "--input".into(),
                input.display().to_string(),
                "--state-backend".into(),
                backend.into(),
                "--output".into(),
                output.display().to_string(),
                "--checkpoint-dir".into(),
                format!("file://{}/checkpoints", dir.path().display()),
            ]);
            (output, spawn(&args, Stdio::null()))
        })
        .collect();
    let parallelism = (processes * workers) as u32;
    let mut union: BTreeMap<String, i64> = BTreeMap::new();
    for (process, (output, child)) in children.into_iter().enumerate() {
        let result = wait_output(child, Duration::from_secs(240), &format!("process {process}"));
        assert!(
            result.status.success(),
            "{backend} process {process}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let owned: Vec<KeyGroupRange> = (process * workers..(process + 1) * workers)
            .map(|subtask| KeyGroupRange::for_subtask(MAX_PARALLELISM, parallelism, subtask as u32))
            .collect();
        for line in std::fs::read_to_string(&output).unwrap().lines() {
            let (word, count) = line.split_once('\t').unwrap();
            let key = streamstate_api::codec::encode_value(&word.to_owned()).unwrap();
            let group = key_group_for_hash(key_hash(&key), MAX_PARALLELISM);
            assert!(
                owned.iter().any(|range| range.contains(group)),
                "{backend}: process {process} wrote {word:?} of key group {group}, outside its ranges {owned:?}"
            );
            let previous = union.insert(word.to_owned(), count.parse().unwrap());
            assert!(previous.is_none(), "{backend}: {word:?} written by two processes");
        }
    }
    assert_eq!(union, plain_count(&text), "{backend} on {processes} x {workers}");
}

#[test]
fn two_processes_count_like_a_plain_count_on_every_backend() {
    for backend in ["memory", "fs", "rocksdb"] {
        count_across(backend, 2, 1);
    }
}

#[test]
fn three_processes_and_two_workers_each_count_like_a_plain_count() {
    count_across("fs", 3, 1);
    count_across("rocksdb", 2, 2);
}

#[test]
fn a_killed_peer_stops_the_others_promptly_naming_it() {
    // A socket input never ends: the job runs until the kill.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = server.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let hosts = hostfile(dir.path(), 3);
    let mut children: Vec<Child> = (0..3)
        .map(|process| {
            let mut args = cluster_args(&hosts, 3, process, 1);
            args.extend([
                "--socket".into(),
                address.clone(),
                "--state-backend".into(),
                "fs".into(),
                "--checkpoint-dir".into(),
                format!("file://{}/checkpoints", dir.path().display()),
            ]);
            spawn(&args, Stdio::null())
        })
        .collect();
    // Process 0's source connects once the mesh is up.
    let (_connection, _) = server.accept().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut victim = children.remove(1);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed = Instant::now();
    for (i, child) in children.into_iter().enumerate() {
        let output = wait_output(child, Duration::from_secs(20), "a surviving process");
        let mut stderr = String::new();
        output.stderr.as_slice().read_to_string(&mut stderr).unwrap();
        assert!(!output.status.success(), "survivor {i} exited successfully: {stderr}");
        assert!(
            stderr.contains("lost peer process 1"),
            "survivor {i} does not name the lost peer: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "survivor {i} shows a panic: {stderr}");
    }
    assert!(killed.elapsed() < Duration::from_secs(20));
}

/// Sends `signal` (e.g. `-STOP`) to `pid`.
fn signal(signal: &str, pid: u32) {
    assert!(Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Stays under this much growth of a running process's RSS while its
/// peer is stopped: a few ticks of batches (sources are paced), far below
/// the input a free-running source would queue.
const PAUSED_PEER_RSS_GROWTH_KIB: u64 = 32 * 1024;

#[test]
fn a_stopped_peer_stops_the_others_sources_and_the_job_then_completes_exactly() {
    // Lines come over a socket as fast as process 0 takes them, from a
    // large vocabulary (sources fold few words locally, so nearly every
    // record crosses the exchange): without pacing, process 0 would keep
    // reading and queue for its stopped peer.
    let text = Arc::new(corpus(600_000, 2_000_000));
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = server.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let hosts = hostfile(dir.path(), 2);
    let outputs: Vec<PathBuf> = (0..2).map(|p| dir.path().join(format!("counts-{p}.tsv"))).collect();
    let mut children: Vec<Child> = (0..2)
        .map(|process| {
            let mut args = cluster_args(&hosts, 2, process, 1);
            args.extend([
                "--socket".into(),
                address.clone(),
                "--state-backend".into(),
                "fs".into(),
                "--output".into(),
                outputs[process].display().to_string(),
                "--checkpoint-dir".into(),
                format!("file://{}/checkpoints", dir.path().display()),
            ]);
            spawn(&args, Stdio::null())
        })
        .collect();
    let (mut connection, _) = server.accept().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (text, written) = (Arc::clone(&text), Arc::clone(&written));
        std::thread::spawn(move || {
            for chunk in text.as_bytes().chunks(64 * 1024) {
                connection.write_all(chunk).unwrap();
                written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            // Dropping the connection ends the input.
        })
    };
    wait_until("2 MiB written", || written.load(Ordering::SeqCst) > 2 << 20);
    let (runner, stopped) = (children[0].id(), children[1].id());
    signal("-STOP", stopped);
    std::thread::sleep(Duration::from_millis(500));
    let (rss_before, written_before) = (rss_kib(runner), written.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_secs(3));
    let (rss_after, written_after) = (rss_kib(runner), written.load(Ordering::SeqCst));
    signal("-CONT", stopped);
    eprintln!(
        "while the peer was stopped: process 0 {rss_before} -> {rss_after} KiB, {} KiB more input written",
        (written_after - written_before) >> 10
    );
    assert!(
        written_before < text.len() as u64,
        "the input was all written before the pause: make it larger"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < PAUSED_PEER_RSS_GROWTH_KIB,
        "process 0 grew from {rss_before} KiB to {rss_after} KiB while its peer was stopped"
    );
    writer.join().unwrap();
    let mut union: BTreeMap<String, i64> = BTreeMap::new();
    for (process, child) in children.drain(..).enumerate() {
        let result = wait_output(child, Duration::from_secs(300), &format!("process {process}"));
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        for line in std::fs::read_to_string(&outputs[process]).unwrap().lines() {
            let (word, count) = line.split_once('\t').unwrap();
            union.insert(word.to_owned(), count.parse().unwrap());
        }
    }
    assert_eq!(union, plain_count(&text));
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`wait_until`] while `children` run: a process that exits first fails
/// the wait with its stderr (a job that finished, or failed, before what
/// the test waits for), instead of a timeout two minutes later.
fn wait_while_running(children: &mut [Child], what: &str, mut done: impl FnMut() -> bool) {
    wait_until(what, || {
        for (process, child) in children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
                panic!("process {process} exited ({status}) before {what}: {stderr}");
            }
        }
        done()
    });
}

/// Lines written to a socket the job reads, paced and repeated, until
/// [`SocketFeed::close`]: the input of a job that must not end before
/// the test is done with it (a file input can be read to its end before
/// the first checkpoint on a loaded machine).
struct SocketFeed {
    address: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    words: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl SocketFeed {
    /// Listens on a free port; the first connection gets `text`'s lines
    /// over and over, a chunk every few milliseconds.
    fn start(text: String) -> Self {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap().to_string();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let words = Arc::new(AtomicU64::new(0));
        let writer = {
            let (stop, words) = (Arc::clone(&stop), Arc::clone(&words));
            std::thread::spawn(move || {
                let (mut connection, _) = server.accept().unwrap();
                let lines: Vec<&str> = text.lines().collect();
                for chunk in lines.chunks(200).cycle() {
                    if stop.load(Ordering::SeqCst) {
                        return; // dropping the connection ends the input
                    }
                    let block = chunk.join("\n") + "\n";
                    if connection.write_all(block.as_bytes()).is_err() {
                        return; // the job is gone
                    }
                    let n = block.split_whitespace().count() as u64;
                    words.fetch_add(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Self {
            address,
            stop,
            words,
            writer: Some(writer),
        }
    }

    /// Ends the input; returns how many words were written in all.
    fn close(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(writer) = self.writer.take() {
            writer.join().unwrap();
        }
        self.words.load(Ordering::SeqCst)
    }
}

/// A process started with another number of processes than its peer:
/// both stop at once and say so, instead of waiting out the startup
/// timeout or running a job with the wrong key-group ranges.
#[test]
fn processes_started_with_different_process_counts_refuse_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "a b\n");
    let three = hostfile(dir.path(), 3);
    let two = dir.path().join("hosts-2");
    let lines: Vec<String> = std::fs::read_to_string(&three)
        .unwrap()
        .lines()
        .take(2)
        .map(String::from)
        .collect();
    std::fs::write(&two, lines.join("\n") + "\n").unwrap();
    let started = Instant::now();
    let children: Vec<Child> = [(&two, 2), (&three, 3)]
        .into_iter()
        .enumerate()
        .map(|(process, (hosts, processes))| {
            let mut args = cluster_args(hosts, processes, process, 1);
            args.extend([
                "--input".into(),
                input.display().to_string(),
                "--startup-timeout".into(),
                "60s".into(),
                "--checkpoint-dir".into(),
                format!("file://{}/checkpoints", dir.path().display()),
            ]);
            spawn(&args, Stdio::null())
        })
        .collect();
    for (process, child) in children.into_iter().enumerate() {
        let output = wait_output(child, Duration::from_secs(60), &format!("process {process}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains("runs with 3 processes") || stderr.contains("runs with 2 processes"),
            "process {process} does not name the mismatch: {stderr}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited for the startup timeout"
    );
}

#[test]
fn a_process_whose_peers_never_come_gives_up_after_the_startup_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "a b\n");
    let hosts = hostfile(dir.path(), 2);
    let mut args = cluster_args(&hosts, 2, 0, 1);
    args.extend([
        "--input".into(),
        input.display().to_string(),
        "--startup-timeout".into(),
        "2s".into(),
        "--checkpoint-dir".into(),
        format!("file://{}/checkpoints", dir.path().display()),
    ]);
    let started = Instant::now();
    let output = wait_output(spawn(&args, Stdio::null()), Duration::from_secs(60), "a lonely process");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("not every process of the cluster connected within 2s"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Everything but the process index from the `--config` file (as a
/// ConfigMap would hold it): `cluster.processes`, `cluster.hosts` and
/// Flink's `taskmanager.numberOfTaskSlots` for the workers. The counts are
/// those of a plain count.
#[test]
fn the_cluster_can_be_configured_in_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = corpus(3_000, 500);
    let input = write_input(dir.path(), &text);
    let hosts = hostfile(dir.path(), 2);
    let config = dir.path().join("flink-conf.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster.processes: 2\ncluster.hosts: {}\ntaskmanager.numberOfTaskSlots: 2\nstate.backend.type: fs\n",
            hosts.display()
        ),
    )
    .unwrap();
    let outputs: Vec<PathBuf> = (0..2).map(|p| dir.path().join(format!("counts-{p}.tsv"))).collect();
    let children: Vec<Child> = (0..2)
        .map(|process| {
            let args: Vec<String> = vec![
                "--config".into(),
                config.display().to_string(),
                "--process".into(),
                process.to_string(),
                "--input".into(),
                input.display().to_string(),
                "--output".into(),
                outputs[process].display().to_string(),
                "--checkpoint-dir".into(),
                format!("file://{}/checkpoints", dir.path().display()),
            ];
            spawn(&args, Stdio::null())
        })
        .collect();
    let mut union = BTreeMap::new();
    for (process, child) in children.into_iter().enumerate() {
        let result = wait_output(child, Duration::from_secs(120), &format!("process {process}"));
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(result.status.success(), "process {process}: {stderr}");
        assert!(
            stderr.contains(&format!("process {process} of 2 (2 workers each)")),
            "process {process} did not take the file's cluster: {stderr}"
        );
        for line in std::fs::read_to_string(&outputs[process]).unwrap().lines() {
            let (word, count) = line.split_once('\t').unwrap();
            union.insert(word.to_owned(), count.parse::<i64>().unwrap());
        }
    }
    assert_eq!(union, plain_count(&text));
}

#[test]
fn bad_cluster_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "a b\n");
    let bad_hosts = dir.path().join("bad-hosts");
    std::fs::write(&bad_hosts, "127.0.0.1:1\nnot-an-address\n").unwrap();
    let good_hosts = hostfile(dir.path(), 2);
    let input = input.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--processes".into(), "2".into(), "--process".into(), "0".into()],
            "needs --hosts",
        ),
        (
            vec![
                "--processes".into(),
                "2".into(),
                "--process".into(),
                "0".into(),
                "--hosts".into(),
                bad_hosts.display().to_string(),
            ],
            "bad-hosts",
        ),
        (
            vec![
                "--processes".into(),
                "2".into(),
                "--process".into(),
                "0".into(),
                "--hosts".into(),
                good_hosts.display().to_string(),
                "--checkpoint-dir".into(),
                "memory://".into(),
            ],
            "every process reaches",
        ),
        (
            vec!["--workers".into(), "2".into(), "--parallelism".into(), "3".into()],
            "differs from",
        ),
        (vec!["--process".into(), "1".into()], "need --processes N"),
    ];
    for (mut args, expected) in cases {
        args.extend(["--input".into(), input.clone()]);
        let output = wait_output(spawn(&args, Stdio::null()), Duration::from_secs(30), "a bad invocation");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Every `<job>/chk-<n>` under `root` with a `_metadata` (a completed
/// checkpoint).
fn completed_checkpoints(root: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    for job in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for chk in std::fs::read_dir(job.path()).into_iter().flatten().flatten() {
            if chk.path().join("_metadata").exists() {
                found.insert(chk.path());
            }
        }
    }
    found
}

/// `checkpoints inspect` reads the checkpoint at `chk` whole.
fn assert_inspects(chk: &Path) {
    let inspect = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args(["checkpoints", "inspect", &format!("file://{}", chk.display())])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}: {}",
        chk.display(),
        String::from_utf8_lossy(&inspect.stderr)
    );
}

/// Routing as `checkpoints inspect --json` shows it: every keyed entry of
/// the checkpoint at `chk` (written by `subtasks` subtasks) lies in the key
/// group its word hashes to, inside the range of the subtask whose file
/// held it, and each subtask's range is its share by Flink's formula.
fn assert_routed(chk: &Path, subtasks: u32) {
    let uri = format!("file://{}", chk.display());
    let inspect = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args(["checkpoints", "inspect", &uri, "--json"])
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let shares: Vec<KeyGroupRange> = (0..subtasks)
        .map(|subtask| KeyGroupRange::for_subtask(MAX_PARALLELISM, subtasks, subtask))
        .collect();
    let mut holders = BTreeSet::new();
    let entries = report["entries"].as_array().unwrap();
    for entry in entries.iter().filter(|e| e["operator"] == "keyed") {
        let word: String = serde_json::from_str(entry["key"].as_str().unwrap()).unwrap();
        let key = streamstate_api::codec::encode_value(&word).unwrap();
        let group = key_group_for_hash(key_hash(&key), MAX_PARALLELISM);
        let held = &entry["subtask_key_groups"];
        let (first, last) = (held[0].as_u64().unwrap() as u32, held[1].as_u64().unwrap() as u32);
        assert_eq!(entry["key_group"].as_u64(), Some(u64::from(group)), "{uri}: {entry}");
        assert!(
            (first..=last).contains(&group),
            "{uri}: {word:?} of key group {group} held by [{first}, {last}]"
        );
        let share = KeyGroupRange::new(first, last);
        assert!(
            shares.contains(&share),
            "{uri}: [{first}, {last}] is no subtask's share of {subtasks}"
        );
        holders.insert((first, last));
    }
    assert_eq!(holders.len(), subtasks as usize, "{uri}: not every subtask held keys");
}

/// A small, seeded generator for the test's random choices (the seed is
/// printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// One run of the failover tests: `processes` of the word count over
/// `input`, checkpointing every 100 ms under `dir/checkpoints` (three kept).
struct Run {
    children: Vec<Child>,
    outputs: Vec<PathBuf>,
}

/// How a run of the tests below starts its processes: the word count over
/// `input` with `--output`, checkpointing every 100 ms (three kept).
struct RunSpec<'a> {
    dir: &'a Path,
    /// Where the lines come from: `--input FILE` or `--socket ADDR`.
    source: Vec<String>,
    backend: &'a str,
    /// Checkpoint storage URI (`file://DIR/checkpoints` by default).
    checkpoints: String,
    /// More arguments every process gets.
    extra: Vec<String>,
    /// Process `i` serves metrics at `metrics_ports[i]`, when there is one.
    metrics_ports: Vec<u16>,
}

impl<'a> RunSpec<'a> {
    fn new(dir: &'a Path, input: &'a Path, backend: &'a str) -> Self {
        Self {
            dir,
            source: vec!["--input".into(), input.display().to_string()],
            backend,
            checkpoints: format!("file://{}/checkpoints", dir.display()),
            extra: Vec::new(),
            metrics_ports: Vec::new(),
        }
    }

    /// The word count over lines from a socket at `address` (read by one
    /// worker and spread), otherwise as [`RunSpec::new`].
    fn on_socket(dir: &'a Path, address: &str, backend: &'a str) -> Self {
        let mut spec = Self::new(dir, dir, backend);
        spec.source = vec!["--socket".into(), address.into()];
        spec
    }

    /// Starts `processes` processes, restoring from `restore` if given;
    /// `round` tells their output files from earlier runs'.
    fn start(&self, processes: usize, restore: Option<&str>, round: usize) -> Run {
        let hosts = hostfile(self.dir, processes);
        let config = self.dir.join("flink-conf.yaml");
        std::fs::write(&config, "execution.checkpointing.num-retained: 3\n").unwrap();
        let mut outputs = Vec::new();
        let children = (0..processes)
            .map(|process| {
                let output = self.dir.join(format!("counts-{round}-{process}.tsv"));
                let mut args = cluster_args(&hosts, processes, process, 1);
                args.extend(self.source.iter().cloned());
                args.extend([
                    "--state-backend".into(),
                    self.backend.into(),
                    "--output".into(),
                    output.display().to_string(),
                    "--checkpoint-dir".into(),
                    self.checkpoints.clone(),
                    "--checkpoint-interval".into(),
                    "100ms".into(),
                    "--config".into(),
                    config.display().to_string(),
                ]);
                args.extend(self.extra.iter().cloned());
                if let Some(from) = restore {
                    args.extend(["--from-checkpoint".into(), from.into()]);
                }
                if let Some(port) = self.metrics_ports.get(process) {
                    args.extend(["--metrics-addr".into(), format!("127.0.0.1:{port}")]);
                }
                outputs.push(output);
                spawn(&args, Stdio::null())
            })
            .collect();
        Run { children, outputs }
    }
}

/// [`RunSpec::start`] with the defaults.
fn start_run(dir: &Path, input: &Path, backend: &str, processes: usize, restore: Option<&str>, round: usize) -> Run {
    RunSpec::new(dir, input, backend).start(processes, restore, round)
}

/// Kills a random process of `run` once a checkpoint newer than `before`
/// completed, and waits for the others to exit with an error naming it.
fn kill_one_after_a_checkpoint(mut run: Run, checkpoints: &Path, before: &BTreeSet<PathBuf>, rng: &mut Lcg) {
    wait_while_running(&mut run.children, "a new checkpoint", || {
        completed_checkpoints(checkpoints).difference(before).next().is_some()
    });
    kill_one(run, rng);
}

/// Kills a random process of `run` and waits for the others to exit with
/// an error naming it.
fn kill_one(run: Run, rng: &mut Lcg) {
    let Run { mut children, .. } = run;
    let victim = rng.below(children.len());
    let mut killed = children.remove(victim);
    killed.kill().unwrap();
    killed.wait().unwrap();
    for child in children {
        let output = wait_output(child, Duration::from_secs(30), "a surviving process");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "a survivor of the kill exited successfully: {stderr}"
        );
        assert!(
            stderr.contains(&format!("lost peer process {victim}")),
            "a survivor does not name the killed process {victim}: {stderr}"
        );
    }
}

/// Waits for every process of `run`; returns the union of their outputs
/// and the checkpoint each says it restored from.
fn finish_run(run: Run) -> (BTreeMap<String, i64>, Vec<String>) {
    let mut union = BTreeMap::new();
    let mut restored = Vec::new();
    for (process, (child, output)) in run.children.into_iter().zip(run.outputs).enumerate() {
        let result = wait_output(child, Duration::from_secs(300), &format!("process {process}"));
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(result.status.success(), "process {process}: {stderr}");
        if let Some(line) = stderr.lines().find(|l| l.contains("restored from")) {
            restored.push(line.rsplit(' ').next().unwrap().to_owned());
        }
        for line in std::fs::read_to_string(&output).unwrap().lines() {
            let (word, count) = line.split_once('\t').unwrap();
            let previous = union.insert(word.to_owned(), count.parse().unwrap());
            assert!(previous.is_none(), "{word:?} written by two processes");
        }
    }
    (union, restored)
}

/// Kill a random process of 2 after a checkpoint, restart all on 3
/// processes from `latest`, kill a random one again, restart on 1: the
/// counts are exact, and every restart restored one checkpoint in all its
/// processes. On every backend, with incremental checkpoints where the
/// backend has them (chains of files in `shared/` across kills).
#[test]
fn killed_processes_restart_from_latest_at_another_scale_and_count_exactly() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = Lcg(seed);
    let text = corpus(300_000, 5_000);
    for backend in ["memory", "fs", "rocksdb"] {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(dir.path(), &text);
        let checkpoints = dir.path().join("checkpoints");
        let mut spec = RunSpec::new(dir.path(), &input, backend);
        spec.extra = vec!["--incremental".into()];
        let first = spec.start(2, None, 0);
        kill_one_after_a_checkpoint(first, &checkpoints, &BTreeSet::new(), &mut rng);
        let before = completed_checkpoints(&checkpoints);
        let second = spec.start(3, Some("latest"), 1);
        kill_one_after_a_checkpoint(second, &checkpoints, &before, &mut rng);
        let written_by_three = completed_checkpoints(&checkpoints);
        assert_routed(written_by_three.difference(&before).last().unwrap(), 3);
        // The kills damaged no committed checkpoint: each reads whole
        // (every file's checksum verified).
        for chk in &written_by_three {
            assert_inspects(chk);
        }
        let (counts, restored) = finish_run(spec.start(1, Some("latest"), 2));
        assert_eq!(restored.len(), 1, "{backend}: the last run did not restore");
        if backend != "memory" {
            let shared_files = std::fs::read_dir(&checkpoints)
                .unwrap()
                .flatten()
                .filter_map(|job| std::fs::read_dir(job.path().join("shared")).ok())
                .flat_map(|files| files.flatten())
                .count();
            assert!(
                shared_files > 0,
                "{backend}: no incremental checkpoint wrote to shared/"
            );
        }
        assert!(
            !before
                .iter()
                .any(|chk| restored[0].ends_with(&*chk.strip_prefix(&checkpoints).unwrap().to_string_lossy())),
            "{backend}: the last run restored {} of the first run, not one of the second",
            restored[0]
        );
        assert_eq!(
            counts,
            plain_count(&text),
            "{backend}: 2 -> 3 -> 1 processes with kills"
        );
    }
}

/// The newest checkpoint has a damaged file of one subtask: every process
/// restores the same older checkpoint, and the counts are exact.
#[test]
fn a_damaged_newest_checkpoint_sends_every_process_to_the_same_older_one() {
    let text = corpus(300_000, 5_000);
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &text);
    let checkpoints = dir.path().join("checkpoints");
    let mut run = start_run(dir.path(), &input, "fs", 2, None, 0);
    wait_while_running(&mut run.children, "two checkpoints", || {
        completed_checkpoints(&checkpoints).len() >= 2
    });
    kill_one_after_a_checkpoint(run, &checkpoints, &BTreeSet::new(), &mut Lcg(1));
    let newest = completed_checkpoints(&checkpoints)
        .into_iter()
        .max_by_key(|chk| chk.file_name().unwrap().to_string_lossy()[4..].parse::<u64>().unwrap())
        .unwrap();
    let damaged = newest.join("keyed-1.kgs");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let (counts, restored) = finish_run(start_run(dir.path(), &input, "fs", 2, Some("latest"), 1));
    assert_eq!(restored.len(), 2, "not every process restored: {restored:?}");
    assert_eq!(restored[0], restored[1], "the processes restored different checkpoints");
    let newest_name = newest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        !restored[0].ends_with(&newest_name),
        "restored the damaged {}",
        restored[0]
    );
    assert_eq!(counts, plain_count(&text));
}

/// SIGTERM to a random process once a checkpoint completed: every process
/// stops with the same savepoint and writes no output.
fn stop_with_savepoint(run: Run, checkpoints: &Path, rng: &mut Lcg) -> String {
    let Run { mut children, outputs } = run;
    let before = completed_checkpoints(checkpoints);
    wait_while_running(&mut children, "a new checkpoint", || {
        completed_checkpoints(checkpoints).difference(&before).next().is_some()
    });
    let asked = rng.below(children.len());
    signal("-TERM", children[asked].id());
    let mut savepoints = BTreeSet::new();
    for (process, child) in children.into_iter().enumerate() {
        let output = wait_output(child, Duration::from_secs(120), &format!("process {process}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "process {process} after SIGTERM to {asked}: {stderr}"
        );
        let line = stderr
            .lines()
            .find(|l| l.contains("stopped with savepoint"))
            .unwrap_or_else(|| panic!("process {process} did not stop with a savepoint: {stderr}"));
        savepoints.insert(line.split(' ').nth(5).unwrap().trim_end_matches(';').to_owned());
        assert!(
            !outputs[process].exists(),
            "process {process} wrote its output when stopped"
        );
    }
    assert_eq!(
        savepoints.len(),
        1,
        "the processes name different savepoints: {savepoints:?}"
    );
    savepoints.into_iter().next().unwrap()
}

/// Rescaling through savepoints: 2 processes stopped by SIGTERM, restarted
/// on 3 from the savepoint, stopped again, finished on 1: exact counts.
#[test]
fn sigterm_stops_every_process_with_one_savepoint_and_rescaling_through_them_is_exact() {
    // Large enough that each run is still reading when its savepoint
    // completes, also on a loaded machine (a job that ends first finishes
    // instead of stopping).
    let text = corpus(1_000_000, 5_000);
    let mut rng = Lcg(7);
    for backend in ["fs", "rocksdb"] {
        let dir = tempfile::tempdir().unwrap();
        let input = write_input(dir.path(), &text);
        let checkpoints = dir.path().join("checkpoints");
        let first = stop_with_savepoint(
            start_run(dir.path(), &input, backend, 2, None, 0),
            &checkpoints,
            &mut rng,
        );
        assert!(first.contains("/savepoints/"), "{first}");
        let run = start_run(dir.path(), &input, backend, 3, Some(&first), 1);
        let second = stop_with_savepoint(run, &checkpoints, &mut rng);
        assert_ne!(first, second);
        let (counts, restored) = finish_run(start_run(dir.path(), &input, backend, 1, Some(&second), 2));
        assert_eq!(restored, std::slice::from_ref(&second), "{backend}");
        assert_eq!(
            counts,
            plain_count(&text),
            "{backend}: 2 -> 3 -> 1 processes through savepoints"
        );
    }
}

/// A process stopped (SIGSTOP) longer than the checkpoint timeout: the
/// checkpoint expires, process 0 fails the job with that reason instead of
/// hanging, and the stopped one, resumed, stops naming it.
#[test]
fn a_stopped_process_fails_the_job_by_checkpoint_timeout() {
    let feed = SocketFeed::start(corpus(20_000, 5_000));
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    // 10 s: on a loaded CI machine a first checkpoint once took longer
    // than 3 s and failed the job before the test stopped anything.
    let mut spec = RunSpec::on_socket(dir.path(), &feed.address, "fs");
    spec.extra = vec!["--checkpoint-timeout".into(), "10s".into()];
    let Run { mut children, .. } = spec.start(2, None, 0);
    wait_while_running(&mut children, "a checkpoint", || {
        !completed_checkpoints(&checkpoints).is_empty()
    });
    let stopped = children[1].id();
    signal("-STOP", stopped);
    let mut children = children.into_iter();
    let first = wait_output(children.next().unwrap(), Duration::from_secs(60), "process 0");
    signal("-CONT", stopped);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(!first.status.success(), "process 0 succeeded: {stderr}");
    assert!(
        stderr.contains("expired"),
        "process 0 does not say the checkpoint expired: {stderr}"
    );
    let second = wait_output(children.next().unwrap(), Duration::from_secs(60), "process 1");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "process 1 succeeded: {stderr}");
    assert!(stderr.contains("lost peer process 0"), "process 1: {stderr}");
    feed.close();
}

/// `GET /metrics` at `port`; `None` while nothing listens yet.
fn scrape(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    Some(response)
}

/// The value of `series` for `process` in a scrape.
fn sample(text: &str, series: &str, process: usize) -> Option<f64> {
    let prefix = format!("{series}{{process=\"{process}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.parse().unwrap())
}

/// Every process serves its metrics while the job runs: records counted
/// (no more than the input has), and on process 0, the committer,
/// completed checkpoints with an id, a duration and a size.
#[test]
fn every_process_serves_prometheus_metrics_while_it_runs() {
    let feed = SocketFeed::start(corpus(20_000, 5_000));
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let mut spec = RunSpec::on_socket(dir.path(), &feed.address, "rocksdb");
    spec.metrics_ports = ports.clone();
    let Run { mut children, .. } = spec.start(2, None, 0);
    let mut seen = None;
    // The second checkpoint: words had time to reach every subtask's state.
    wait_while_running(&mut children, "two checkpoints in process 0's metrics", || {
        seen = scrape(ports[0])
            .filter(|m| sample(m, "streamstate_checkpoints_completed_total", 0).is_some_and(|n| n >= 2.0));
        seen.is_some()
    });
    let zero = seen.unwrap();
    assert!(
        sample(&zero, "streamstate_last_checkpoint_id", 0).unwrap() >= 1.0,
        "{zero}"
    );
    assert!(
        sample(&zero, "streamstate_last_checkpoint_size_bytes", 0).unwrap() > 0.0,
        "{zero}"
    );
    assert!(
        sample(&zero, "streamstate_last_checkpoint_duration_seconds", 0).is_some(),
        "{zero}"
    );
    assert_eq!(
        sample(&zero, "streamstate_checkpoints_failed_total", 0),
        Some(0.0),
        "{zero}"
    );
    let one = scrape(ports[1]).expect("process 1 serves metrics");
    let words = feed.close() as f64;
    for (process, metrics) in [(0, &zero), (1, &one)] {
        let records = sample(metrics, "streamstate_records_in_total", process).unwrap();
        assert!(records <= words, "process {process} counted {records} of {words} words");
        // One worker per process: keyed subtask `process` is its own; it
        // checkpointed, so its state's entries are known (RocksDB's
        // estimate: only more than none is certain).
        let entries = format!("streamstate_state_entries{{process=\"{process}\",subtask=\"{process}\"}} ");
        let entries: f64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&entries))
            .unwrap_or_else(|| panic!("process {process} has no state entries: {metrics}"))
            .parse()
            .unwrap();
        assert!(
            entries > 0.0,
            "process {process}: no state entries after two checkpoints"
        );
        let task = format!(
            "streamstate_task_records_in_total{{process=\"{process}\",operator=\"keyed\",subtask=\"{process}\"}} "
        );
        let received: f64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&task))
            .unwrap_or_else(|| panic!("process {process} has no series for its keyed subtask: {metrics}"))
            .parse()
            .unwrap();
        assert!(
            received <= words,
            "keyed subtask {process} received {received} of {words} words"
        );
    }
    for child in children {
        let output = wait_output(child, Duration::from_secs(300), "a process");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
}

/// Checkpoints on real remote storage: 2 processes, a random one killed
/// once process 0 (the committer) reports a completed checkpoint, all
/// restarted on 3 from `latest`: every process restores the same
/// checkpoint under `base`, and the counts are exact.
#[cfg(feature = "remote-tests")]
fn failover_on(base: &str, backend: &str, lines: usize, rng: &mut Lcg) {
    let text = corpus(lines, 5_000);
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &text);
    let uri = format!("{base}/cluster-{}-{backend}", std::process::id());
    let port = free_ports(1)[0];
    let mut spec = RunSpec::new(dir.path(), &input, backend);
    spec.checkpoints = uri.clone();
    spec.metrics_ports = vec![port];
    let mut run = spec.start(2, None, 0);
    wait_while_running(&mut run.children, "a checkpoint in process 0's metrics", || {
        scrape(port)
            .and_then(|m| sample(&m, "streamstate_checkpoints_completed_total", 0))
            .is_some_and(|n| n >= 1.0)
    });
    kill_one(run, rng);
    spec.metrics_ports.clear();
    let restart = spec.start(3, Some("latest"), 1);
    let (counts, restored) = finish_run(restart);
    assert_eq!(restored.len(), 3, "{uri}: not every process restored: {restored:?}");
    assert!(
        restored.iter().all(|r| r == &restored[0] && r.starts_with(&uri)),
        "{restored:?}"
    );
    assert_eq!(counts, plain_count(&text), "{backend} on {uri}");
}

#[cfg(feature = "remote-tests")]
#[test]
fn failover_across_processes_on_s3() {
    let base = std::env::var("STREAMSTATE_TEST_S3_URI")
        .unwrap_or_else(|_| panic!("STREAMSTATE_TEST_S3_URI is not set: run the tests with scripts/test.sh"));
    let mut rng = Lcg(11);
    for backend in ["memory", "fs", "rocksdb"] {
        failover_on(&base, backend, 200_000, &mut rng);
    }
}

#[cfg(feature = "remote-tests")]
#[test]
fn failover_across_processes_on_hdfs() {
    let base = std::env::var("STREAMSTATE_TEST_HDFS_URI")
        .unwrap_or_else(|_| panic!("STREAMSTATE_TEST_HDFS_URI is not set: run the tests with scripts/test.sh"));
    // HDFS closes a file in ~220 ms, and a RocksDB checkpoint is several
    // files: the input must outlast the first checkpoint by far.
    let mut rng = Lcg(13);
    for backend in ["fs", "rocksdb"] {
        failover_on(&base, backend, 800_000, &mut rng);
    }
}
