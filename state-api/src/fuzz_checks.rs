//! The checks behind the fuzz targets in `fuzz/` (cargo-fuzz, nightly), kept
//! here so `tests/fuzz_corpora.rs` replays every corpus input, and every
//! crash found, through the same code on stable Rust in the normal tests.
//!
//! Each function takes arbitrary bytes, feeds them to a parser of untrusted
//! input and panics only when an invariant breaks (a parser panicking is
//! itself a failure): what parses must be consistent and round-trip.

use crate::key_group::{assign_to_key_group, check_parallelism, subtask_for_key_group};
use crate::operator_state::OperatorStateStore;
use crate::snapshot::canonical::{parse_block, parse_file, CanonicalIndex, KeyGroupBlock};
use crate::snapshot::manifest::validate_relative_path;
use crate::storage::layout::{normalize_dir, parse_checkpoint_dir_name, validate_job_id};
use crate::storage::{redact_uri, StorageUri};
use crate::{KeyGroupRange, SnapshotManifest};

const MANIFEST_ROOTS: &[&str] = &["chk-1", "shared", "taskowned"];

fn manifest_bytes(bytes: &[u8]) {
    let Ok(manifest) = SnapshotManifest::from_json(bytes, "job/", MANIFEST_ROOTS) else {
        return;
    };
    for file in manifest.files() {
        let relative = file
            .path
            .strip_prefix("job/")
            .unwrap_or_else(|| panic!("{} escapes", file.path));
        assert!(!relative.split('/').any(|c| c == ".." || c.is_empty()), "{}", file.path);
        assert!(
            MANIFEST_ROOTS.contains(&relative.split('/').next().unwrap_or_default()),
            "{}",
            file.path
        );
    }
    let again = manifest
        .to_json("job/")
        .unwrap_or_else(|e| panic!("a parsed manifest must encode: {e}"));
    let reparsed = SnapshotManifest::from_json(&again, "job/", MANIFEST_ROOTS)
        .unwrap_or_else(|e| panic!("an encoded manifest must parse: {e}"));
    assert_eq!(reparsed, manifest);
}

/// `_metadata` parsing: the bytes as given, and with a valid checksum line
/// appended so inputs reach JSON decoding and path validation.
pub fn manifest(data: &[u8]) {
    manifest_bytes(data);
    let mut with_checksum = data.to_vec();
    if !with_checksum.ends_with(b"\n") {
        with_checksum.push(b'\n');
    }
    let crc = crc32c::crc32c(&with_checksum);
    with_checksum.extend_from_slice(format!("crc32c {crc:08x}\n").as_bytes());
    manifest_bytes(&with_checksum);
}

/// Canonical snapshot files whole (header, footer, index offsets, block
/// checksums), then the record decoder alone: the input split as
/// `[index_len u16 LE][index JSON][block]`, the block's checksum fixed up.
pub fn canonical(data: &[u8]) {
    if let Ok((index, records)) = parse_file(data) {
        assert_eq!(records.len() as u64, index.record_count());
        for r in &records {
            assert!(r.state_index < index.states.len());
            assert!(index.key_group_range.contains(r.key_group));
            assert!(index.delta || !r.removed, "removals only in delta files");
        }
    }
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let index_len = usize::from(u16::from_le_bytes(*len));
    let Some((index_bytes, block_bytes)) = rest.split_at_checked(index_len) else {
        return;
    };
    let Ok(index) = serde_json::from_slice::<CanonicalIndex>(index_bytes) else {
        return;
    };
    for block in index.blocks.iter().take(4) {
        let fixed = KeyGroupBlock {
            len: block_bytes.len() as u64,
            crc32c: crc32c::crc32c(block_bytes),
            ..*block
        };
        if let Ok(records) = parse_block(&index, &fixed, block_bytes) {
            assert_eq!(records.len() as u64, fixed.records);
            assert!(records.iter().all(|r| r.state_index < index.states.len()));
        }
    }
}

/// Operator-state files: what decodes re-encodes to an equal store.
pub fn operator_state(data: &[u8]) {
    if let Ok(store) = OperatorStateStore::from_bytes(data) {
        let bytes = store
            .to_bytes()
            .unwrap_or_else(|e| panic!("a decoded store must encode: {e}"));
        let again = OperatorStateStore::from_bytes(&bytes).unwrap_or_else(|e| panic!("and decode: {e}"));
        assert_eq!(again.as_map(), store.as_map());
    }
}

/// Checkpoint URIs, directory paths, job ids, manifest paths: parse or
/// refuse; an accepted path never climbs out of its directory.
pub fn uri_and_paths(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = StorageUri::parse(text) {
        assert!(uri.root.starts_with('/') && uri.root.ends_with('/'), "{:?}", uri.root);
    }
    let _ = redact_uri(text);
    if let Ok(dir) = normalize_dir(text) {
        assert!(dir.ends_with('/') && !dir.starts_with('/'), "{dir}");
        assert!(!dir.split('/').any(|c| c == ".."), "{dir}");
    }
    if validate_job_id(text).is_ok() {
        assert!(!text.contains('/') && !text.contains(".."), "{text}");
    }
    if validate_relative_path(text, &["chk-1", "shared"]).is_ok() {
        assert!(!text.starts_with('/') && !text.split('/').any(|c| c == ".."), "{text}");
    }
    let _ = parse_checkpoint_dir_name(text);
}

/// Key-group arithmetic: `[max_parallelism u16][parallelism u16][key]`;
/// every key lands in a valid group owned by exactly one subtask.
pub fn key_groups(data: &[u8]) {
    let Some((head, key)) = data.split_first_chunk::<4>() else {
        return;
    };
    let max_parallelism = u32::from(u16::from_le_bytes([head[0], head[1]])) % 4097;
    let parallelism = u32::from(u16::from_le_bytes([head[2], head[3]])) % 4097;
    if check_parallelism(parallelism, max_parallelism).is_err() {
        return;
    }
    let group = assign_to_key_group(key, max_parallelism);
    assert!(group < max_parallelism);
    let owner = subtask_for_key_group(max_parallelism, parallelism, group);
    assert!(owner < parallelism);
    assert!(KeyGroupRange::for_subtask(max_parallelism, parallelism, owner).contains(group));
    if parallelism <= 64 {
        let mut covered = 0;
        for subtask in 0..parallelism {
            let range = KeyGroupRange::for_subtask(max_parallelism, parallelism, subtask);
            assert_eq!(range.contains(group), subtask == owner);
            covered += range.len();
        }
        assert_eq!(covered, max_parallelism, "ranges cover every group once");
    }
}
