//! Replays every input in `fuzz/corpus/<target>/` (seeds, inputs the fuzzers
//! kept, and crashes turned into regression inputs) through the fuzz
//! targets' checks, on stable Rust, as part of the normal tests.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&bytes));
        assert!(result.is_ok(), "{} fails its check", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{} holds no inputs", dir.display());
}

#[test]
fn manifest_corpus() {
    replay("manifest", streamstate_api::fuzz_checks::manifest);
}

#[test]
fn canonical_corpus() {
    replay("canonical", streamstate_api::fuzz_checks::canonical);
}

#[test]
fn operator_state_corpus() {
    replay("operator_state", streamstate_api::fuzz_checks::operator_state);
}

#[test]
fn uri_and_paths_corpus() {
    replay("uri_and_paths", streamstate_api::fuzz_checks::uri_and_paths);
}

#[test]
fn key_groups_corpus() {
    replay("key_groups", streamstate_api::fuzz_checks::key_groups);
}
