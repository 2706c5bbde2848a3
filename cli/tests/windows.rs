//! `streamstate wordcount --window` and `--session-gap`: Flink's
//! SocketWindowWordCount on the real binary, every backend, parallelism 1
//! and 2, its `--output` file against a plain count by event time (or a
//! plain split at the session gaps) computed here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

/// Lines "<epoch ms> <words>", one every 3 ms, each up to 400 ms earlier
/// than its place (xorshift, so the test needs no generator crate).
fn timestamped_lines(n: u64) -> String {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut text = String::new();
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = 1_733_000_000_000 + i as i64 * 3 - (x % 401) as i64;
        text.push_str(&format!("{at} w{} w{} the\n", x % 31, (x >> 9) % 7));
    }
    text
}

/// Every window of `size` starting every `slide` holding each line's
/// timestamp, one count per word (upper-cased, as the word count does).
fn count_by_window(text: &str, size: i64, slide: i64) -> BTreeMap<(i64, i64, String), u64> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let at: i64 = parts.next().unwrap().parse().unwrap();
        let words: Vec<&str> = parts.collect();
        let mut start = at.div_euclid(slide) * slide;
        while start + size > at {
            for word in &words {
                *counts.entry((start, start + size, word.to_uppercase())).or_insert(0) += 1;
            }
            start -= slide;
        }
    }
    counts
}

/// The `--output` file's lines, each window and word once.
fn read_windows(path: &std::path::Path) -> BTreeMap<(i64, i64, String), u64> {
    let mut windows = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 4, "WINDOW_START WINDOW_END WORD COUNT: {line:?}");
        let key = (
            fields[0].parse().unwrap(),
            fields[1].parse().unwrap(),
            fields[2].to_owned(),
        );
        assert!(
            windows.insert(key, fields[3].parse().unwrap()).is_none(),
            "a window written twice: {line:?}"
        );
    }
    windows
}

#[test]
fn event_time_windows_write_each_window_once_with_the_plain_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text = timestamped_lines(20_000);
    std::fs::write(&input, &text).unwrap();
    for (window, slide, size_ms, slide_ms) in [("1s", None, 1_000, 1_000), ("2s", Some("500ms"), 2_000, 500)] {
        let expected = count_by_window(&text, size_ms, slide_ms);
        for backend in ["memory", "fs", "rocksdb"] {
            for parallelism in ["1", "2"] {
                let output = dir.path().join(format!("{backend}-{parallelism}-{window}.out"));
                let mut args = vec![
                    "wordcount".to_owned(),
                    "--input".into(),
                    input.display().to_string(),
                    "--state-backend".into(),
                    backend.into(),
                    "--parallelism".into(),
                    parallelism.into(),
                    "--checkpoint-dir".into(),
                    format!("file://{}/ck-{backend}-{parallelism}", dir.path().display()),
                    "--checkpoint-interval".into(),
                    "100ms".into(),
                    "--window".into(),
                    window.into(),
                    "--event-time".into(),
                    "--out-of-orderness".into(),
                    "400ms".into(),
                    "--output".into(),
                    output.display().to_string(),
                ];
                if let Some(slide) = slide {
                    args.extend(["--slide".to_owned(), slide.to_owned()]);
                }
                let out = Command::new(env!("CARGO_BIN_EXE_streamstate"))
                    .args(&args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{backend} p{parallelism} {window}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let got = read_windows(&output);
                assert_eq!(got.len(), expected.len(), "{backend} p{parallelism} {window}: windows");
                assert!(got == expected, "{backend} p{parallelism} {window}: counts differ");
            }
        }
    }
}

/// Sessions per word computed plainly: a word's sorted timestamps split
/// where the next comes more than `gap` after the one before; a session is
/// `[first, last + gap)` and counts its words.
fn count_by_session(text: &str, gap: i64) -> BTreeMap<(i64, i64, String), u64> {
    let mut times: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let at: i64 = parts.next().unwrap().parse().unwrap();
        for word in parts {
            times.entry(word.to_uppercase()).or_default().push(at);
        }
    }
    let mut sessions = BTreeMap::new();
    for (word, mut at) in times {
        at.sort_unstable();
        let (mut first, mut last, mut count) = (at[0], at[0], 0);
        for t in at {
            if t > last + gap {
                sessions.insert((first, last + gap, word.clone()), count);
                (first, count) = (t, 0);
            }
            last = t;
            count += 1;
        }
        sessions.insert((first, last + gap, word), count);
    }
    sessions
}

#[test]
fn event_time_session_windows_write_each_session_once_with_a_plain_split_at_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text = timestamped_lines(8_000);
    std::fs::write(&input, &text).unwrap();
    let expected = count_by_session(&text, 60);
    assert!(
        expected.len() > 500 && expected.values().any(|c| *c > 1),
        "the input makes many sessions, some merged"
    );
    for backend in ["memory", "fs", "rocksdb"] {
        for parallelism in ["1", "2"] {
            let output = dir.path().join(format!("{backend}-{parallelism}-sessions.out"));
            let out = Command::new(env!("CARGO_BIN_EXE_streamstate"))
                .arg("wordcount")
                .args(["--input", input.to_str().unwrap(), "--state-backend", backend])
                .args(["--parallelism", parallelism, "--checkpoint-interval", "100ms"])
                .arg("--checkpoint-dir")
                .arg(format!(
                    "file://{}/ck-{backend}-{parallelism}-sessions",
                    dir.path().display()
                ))
                .args(["--session-gap", "60ms", "--event-time", "--out-of-orderness", "400ms"])
                .arg("--output")
                .arg(&output)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{backend} p{parallelism}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got = read_windows(&output);
            assert_eq!(got.len(), expected.len(), "{backend} p{parallelism}: sessions");
            assert!(got == expected, "{backend} p{parallelism}: session counts differ");
        }
    }
}

#[test]
fn window_flags_that_do_not_fit_are_clear_errors() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamstate"))
            .arg("wordcount")
            .args(["--input", "/nonexistent"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--slide", "1s"]).contains("--window"), "--slide needs --window");
    assert!(
        run(&["--window", "soon"]).contains("--window"),
        "a bad duration names its flag"
    );
    assert!(run(&["--window", "1s", "--out-of-orderness", "1s"]).contains("--event-time"));
    assert!(run(&["--window", "1s", "--session-gap", "1s"]).contains("--session-gap"));
    assert!(run(&["--session-gap", "1s", "--slide", "1s"]).contains("--slide"));
}

/// Waits for `child` at most `timeout`; kills it and fails after that.
fn wait_at_most(mut child: std::process::Child, timeout: std::time::Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Ports free on loopback now (the hostfile of a two-process cluster).
fn hostfile(dir: &std::path::Path, processes: usize) -> std::path::PathBuf {
    let listeners: Vec<std::net::TcpListener> = (0..processes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let lines: Vec<String> = listeners
        .iter()
        .map(|l| format!("127.0.0.1:{}", l.local_addr().unwrap().port()))
        .collect();
    let path = dir.join("hosts");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn event_time_windows_across_two_processes_count_like_a_plain_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text = timestamped_lines(10_000);
    std::fs::write(&input, &text).unwrap();
    let hosts = hostfile(dir.path(), 2);
    let children: Vec<_> = (0..2)
        .map(|process| {
            let output = dir.path().join(format!("windows-{process}.tsv"));
            let child = Command::new(env!("CARGO_BIN_EXE_streamstate"))
                .arg("wordcount")
                .args(["--processes", "2", "--process", &process.to_string()])
                .args(["--hosts", hosts.to_str().unwrap(), "--startup-timeout", "60s"])
                .args(["--input", input.to_str().unwrap(), "--state-backend", "fs"])
                .args(["--window", "1s", "--event-time", "--out-of-orderness", "400ms"])
                .args(["--output", output.to_str().unwrap()])
                .arg("--checkpoint-dir")
                .arg(format!("file://{}/checkpoints", dir.path().display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (output, child)
        })
        .collect();
    let mut union = BTreeMap::new();
    for (process, (output, child)) in children.into_iter().enumerate() {
        let out = wait_at_most(child, std::time::Duration::from_secs(240));
        assert!(
            out.status.success(),
            "process {process}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let windows = read_windows(&output);
        assert!(!windows.is_empty(), "process {process} counted some windows");
        for (key, count) in windows {
            assert!(union.insert(key, count).is_none(), "a window written by both processes");
        }
    }
    assert!(
        union == count_by_window(&text, 1_000, 1_000),
        "counts differ from the plain count"
    );
}

#[test]
fn every_process_commits_its_windows_at_each_checkpoint_while_the_job_runs() {
    // The input comes over a socket held open: the job runs until the
    // test closes it. Process 0's coordinator knows when a checkpoint
    // completes; process 1's sink must hear of it too and commit its
    // windows then, not only at the end.
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let text = timestamped_lines(3_000);
    let hosts = hostfile(dir.path(), 2);
    let outputs: Vec<std::path::PathBuf> = (0..2).map(|p| dir.path().join(format!("windows-{p}.tsv"))).collect();
    let children: Vec<_> = (0..2)
        .map(|process| {
            Command::new(env!("CARGO_BIN_EXE_streamstate"))
                .arg("wordcount")
                .args(["--processes", "2", "--process", &process.to_string()])
                .args(["--hosts", hosts.to_str().unwrap(), "--startup-timeout", "60s"])
                .args(["--socket", &address, "--state-backend", "fs"])
                .args(["--window", "1s", "--event-time", "--out-of-orderness", "400ms"])
                .args(["--checkpoint-interval", "200ms"])
                .arg("--output")
                .arg(&outputs[process])
                .arg("--checkpoint-dir")
                .arg(format!("file://{}/checkpoints", dir.path().display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut conn, _) = listener.accept().unwrap();
    std::io::Write::write_all(&mut conn, text.as_bytes()).unwrap();
    let committed = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !outputs.iter().all(|o| committed(o)) {
        assert!(
            std::time::Instant::now() < deadline,
            "a process committed no window while the job ran: {:?}",
            outputs.iter().map(|o| committed(o)).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(conn);
    let mut union = BTreeMap::new();
    for (process, child) in children.into_iter().enumerate() {
        let out = wait_at_most(child, std::time::Duration::from_secs(120));
        assert!(
            out.status.success(),
            "process {process}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (key, count) in read_windows(&outputs[process]) {
            assert!(union.insert(key, count).is_none(), "a window written by both processes");
        }
    }
    assert!(
        union == count_by_window(&text, 1_000, 1_000),
        "counts differ from the plain count"
    );
}

/// Whether a checkpoint of the job under `dir` has completed (its
/// `_metadata` exists).
fn has_checkpoint(dir: &std::path::Path) -> bool {
    let Ok(jobs) = std::fs::read_dir(dir) else { return false };
    jobs.filter_map(|j| j.ok()).any(|job| {
        std::fs::read_dir(job.path()).is_ok_and(|chks| {
            chks.filter_map(|c| c.ok())
                .any(|chk| chk.path().join("_metadata").exists())
        })
    })
}

#[test]
fn killed_at_random_moments_and_restored_at_another_parallelism_the_output_holds_each_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text = timestamped_lines(150_000);
    std::fs::write(&input, &text).unwrap();
    let expected = count_by_window(&text, 1_000, 1_000);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill moments from seed {seed}");
    for backend in ["memory", "fs", "rocksdb"] {
        let checkpoints = dir.path().join(format!("ck-{backend}"));
        let output = dir.path().join(format!("{backend}.out"));
        let (mut kills, mut restores, mut finished) = (0, 0, false);
        for attempt in 0..12 {
            let mut command = Command::new(env!("CARGO_BIN_EXE_streamstate"));
            command
                .arg("wordcount")
                .args(["--input", input.to_str().unwrap(), "--state-backend", backend])
                // Rescaled at every restart: 1, 2, 1, 2, ...
                .args(["--parallelism", if attempt % 2 == 0 { "1" } else { "2" }])
                .args(["--checkpoint-interval", "100ms"])
                .args(["--window", "1s", "--event-time", "--out-of-orderness", "400ms"])
                .args(["--output", output.to_str().unwrap()])
                .arg("--checkpoint-dir")
                .arg(format!("file://{}", checkpoints.display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            if has_checkpoint(&checkpoints) {
                command.args(["--from-checkpoint", "latest"]);
                restores += 1;
            }
            let mut child = command.spawn().unwrap();
            // The first three runs die after 0.3 to 1.5 s; the next ones
            // run to the end.
            if attempt < 3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                std::thread::sleep(std::time::Duration::from_millis(300 + seed % 1_200));
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap();
                    let _ = child.wait();
                    kills += 1;
                    continue;
                }
            }
            let out = wait_at_most(child, std::time::Duration::from_secs(240));
            assert!(
                out.status.success(),
                "{backend} run {attempt}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            finished = true;
            break;
        }
        assert!(finished, "{backend}: the job never finished");
        assert!(
            kills > 0,
            "{backend}: the job ended before any kill; give it more input"
        );
        assert!(restores > 0, "{backend}: no run restored from a checkpoint");
        let got = read_windows(&output);
        assert_eq!(got.len(), expected.len(), "{backend} after {kills} kills: windows");
        assert!(got == expected, "{backend} after {kills} kills: counts differ");
    }
}
