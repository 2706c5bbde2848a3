//! Hostile and malformed input through the real binary: non-UTF-8 bytes, a
//! 10 MB line, empty lines, a socket reset in the middle of a line, a
//! malformed config file, an unknown backend and a bad URI. Each gives
//! documented handling or one clear error line, never a panic.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn streamstate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_clear_error(out: &Output, names: &str) {
    let text = stderr(out);
    assert!(!out.status.success(), "must fail: {text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.starts_with("error: "), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    assert!(text.contains(names), "the error names {names:?}: {text}");
}

#[test]
fn non_utf8_bytes_a_10_mb_line_and_empty_lines_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hostile.txt");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"hello world\n\n\n   \n");
    bytes.extend_from_slice(b"caf\xff\xfe bytes\n");
    bytes.extend(std::iter::repeat_n(b'z', 10 << 20));
    bytes.extend_from_slice(b"\nhello again\n");
    std::fs::write(&input, &bytes).unwrap();
    let output = dir.path().join("counts.tsv");
    let out = streamstate(&[
        "wordcount",
        "--input",
        &input.display().to_string(),
        "--state-backend",
        "fs",
        "--checkpoint-dir",
        &format!("file://{}/checkpoints", dir.path().display()),
        "--output",
        &output.display().to_string(),
    ]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    // The 10 MB line is skipped with a warning naming where it starts.
    assert!(text.contains("skipping a line longer than"), "{text}");
    assert!(
        text.contains(&format!(
            "offset={}",
            b"hello world\n\n\n   \ncaf\xff\xfe bytes\n".len()
        )),
        "{text}"
    );
    let mut counts: Vec<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    counts.sort();
    // Invalid UTF-8 is replaced (U+FFFD), empty lines count nothing.
    assert_eq!(
        counts,
        ["AGAIN\t1", "BYTES\t1", "CAF\u{fffd}\u{fffd}\t1", "HELLO\t2", "WORLD\t1"],
        "{text}"
    );
}

#[test]
fn a_socket_reset_mid_line_ends_the_job_without_a_panic() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args([
            "wordcount",
            "--socket",
            &format!("127.0.0.1:{port}"),
            "--state-backend",
            "fs",
        ])
        .arg("--checkpoint-dir")
        .arg(format!("file://{}/checkpoints", dir.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"whole line\nhalf a li").unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SO_LINGER 0: closing sends a TCP reset instead of a clean FIN.
    socket2_linger_zero(&conn);
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the job did not end after the reset");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = stderr(&out);
    assert!(!text.contains("panicked"), "{text}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("(WHOLE,1)") && printed.contains("(LINE,1)"),
        "{printed}\n{text}"
    );
}

/// SO_LINGER 0 (std has no stable setter for it).
fn socket2_linger_zero(stream: &std::net::TcpStream) {
    socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)).unwrap();
}

#[test]
fn malformed_config_is_one_clear_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flink-conf.yaml");
    std::fs::write(&config, "state.backend.type: [rocksdb\n  :::\n").unwrap();
    let out = streamstate(&[
        "wordcount",
        "--input",
        "/dev/null",
        "--config",
        &config.display().to_string(),
    ]);
    assert_one_clear_error(&out, "flink-conf.yaml");
}

#[test]
fn unknown_backend_is_one_clear_error_listing_the_choices() {
    let out = streamstate(&["wordcount", "--input", "/dev/null", "--state-backend", "cassandra"]);
    assert_one_clear_error(&out, "cassandra");
    assert!(stderr(&out).contains("rocksdb"), "{}", stderr(&out));
}

#[test]
fn bad_checkpoint_uri_is_one_clear_error() {
    for uri in ["ftp://host/dir", "s3://", "hdfs://", "file://relative/path"] {
        let out = streamstate(&["wordcount", "--input", "/dev/null", "--checkpoint-dir", uri]);
        let text = stderr(&out);
        assert!(!out.status.success(), "{uri}: {text}");
        assert!(!text.contains("panicked"), "{uri}: {text}");
        assert!(text.starts_with("error: "), "{uri}: {text}");
    }
}
