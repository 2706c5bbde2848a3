//! Credentials never leak: a word count checkpointing to the real S3 server
//! with keys from a YAML config (debug logging on), `checkpoints list` and
//! `inspect` of what it wrote, a run with a wrong secret, and a URI with
//! credentials in it; none of their output, nor any stored file, contains
//! the access key's secret.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const SECRET: &str = "streamstate-test-secret";
const WRONG_SECRET: &str = "wrong-secret-8c1f0e";

fn s3_root() -> String {
    std::env::var("STREAMSTATE_TEST_S3_URI")
        .unwrap_or_else(|_| panic!("STREAMSTATE_TEST_S3_URI is not set: run the tests with scripts/test.sh"))
}

/// Runs the binary with only the YAML's credentials (no `AWS_*` keys).
fn streamstate(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        // Even asked for by name, the credential providers' debug logs stay off.
        .env("RUST_LOG", "debug,reqsign_core=trace,reqsign=trace")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn config(dir: &std::path::Path, secret: &str) -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let path = dir.join(format!("{secret}.yaml"));
    std::fs::write(
        &path,
        format!(
            "s3.endpoint: {endpoint}\ns3.path.style.access: true\ns3.region: us-east-1\n\
             s3.access-key: streamstate-test\ns3.secret-key: {secret}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [SECRET, WRONG_SECRET] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn credentials_never_appear_in_output_logs_or_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("words.txt");
    // Long enough (1.2M words, seconds in a debug build) for several 20 ms
    // checkpoints to complete before the input ends: the files they store
    // are what this test reads.
    std::fs::write(&input, "to be or not to be\n".repeat(200_000)).unwrap();
    let uri = format!("{}/secrets-{}", s3_root(), std::process::id());
    let good = config(dir.path(), SECRET);
    let input_arg = input.display().to_string();

    let (ok, text) = streamstate(&[
        "wordcount",
        "--input",
        &input_arg,
        "--config",
        &good,
        "--checkpoint-dir",
        &uri,
        "--checkpoint-interval",
        "20ms",
        "--state-backend",
        "fs",
        "--output",
        &dir.path().join("counts.tsv").display().to_string(),
    ]);
    assert!(ok, "{text}");
    assert_no_secret("wordcount", &text);

    // `list` and `inspect` take the keys from AWS_* only: give them through
    // the environment, as a user would.
    let list = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args(["checkpoints", "list", &uri, "--json"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    assert_no_secret("checkpoints list", &listed);
    assert_no_secret("checkpoints list logs", &String::from_utf8_lossy(&list.stderr));
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let first = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["complete"] == true)
        .expect("the job completed no checkpoint before its input ended");
    let path = first["path"].as_str().unwrap();
    let inspect = Command::new(env!("CARGO_BIN_EXE_streamstate"))
        .args(["checkpoints", "inspect", path, "--json"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    assert_no_secret("checkpoints inspect", &String::from_utf8_lossy(&inspect.stdout));
    assert_no_secret("checkpoints inspect logs", &String::from_utf8_lossy(&inspect.stderr));

    // Every stored file (manifests included).
    let storage = streamstate_api::CheckpointStorage::open(&uri).unwrap();
    let completed = storage.completed_checkpoints(None).unwrap();
    assert!(!completed.is_empty());
    for checkpoint in &completed {
        let manifest = storage.read(&format!("{}_metadata", checkpoint.dir)).unwrap();
        assert_no_secret("a stored _metadata", &String::from_utf8_lossy(&manifest));
        for file in checkpoint.manifest.files() {
            let bytes = storage.read(&file.path).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{} holds the secret",
                file.path
            );
        }
    }

    // A wrong secret: the error says what failed, without the secret.
    let bad = config(dir.path(), WRONG_SECRET);
    let (ok, text) = streamstate(&[
        "wordcount",
        "--input",
        &input_arg,
        "--config",
        &bad,
        "--checkpoint-dir",
        &format!("{uri}-wrong"),
        "--checkpoint-interval",
        "20ms",
        "--state-backend",
        "fs",
        "--from-checkpoint",
        "latest",
    ]);
    assert!(!ok, "a wrong secret must fail: {text}");
    assert_no_secret("a run with a wrong secret", &text);

    // Credentials written into a URI are refused and not echoed.
    let (ok, text) = streamstate(&[
        "checkpoints",
        "list",
        &format!("s3://streamstate-test:{SECRET}@streamstate/tests"),
    ]);
    assert!(!ok);
    assert_no_secret("a URI with credentials", &text);
}
