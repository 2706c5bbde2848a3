//! The `_metadata` manifest: the commit point of a checkpoint or savepoint.
//!
//! A checkpoint exists only once its `_metadata` is written. The manifest
//! lists every file the snapshot needs with its size and CRC-32C, so restore
//! verifies what it reads and retention knows which shared files are still
//! referenced. File paths in the manifest are relative to its base directory
//! (the job directory for checkpoints, the savepoint directory for
//! savepoints) and are checked on load: no `..`, no absolute paths, nothing
//! outside the directories a snapshot may reference.
//!
//! The file is pretty-printed JSON followed by one line `crc32c <8 hex>`,
//! the CRC-32C of every byte before that line, so a flipped byte or a
//! truncation anywhere in `_metadata` is detected, not parsed into a
//! different checkpoint.

use serde::{Deserialize, Serialize};

use crate::handle::{FileRef, KeyedStateHandle, SnapshotKind};
use crate::{Error, ErrorKind, Result};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;

/// Starts the last line of `_metadata`.
const CHECKSUM_LINE_PREFIX: &str = "crc32c ";

/// Name of the manifest file in a snapshot directory.
pub const METADATA_FILE: &str = "_metadata";

/// Largest manifest this build reads, so a corrupt or hostile file cannot
/// exhaust memory.
pub const MAX_MANIFEST_LEN: u64 = 256 << 20;

/// The snapshot of one parallel operator instance's non-keyed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateHandle {
    /// Which subtask wrote it.
    pub subtask: u32,
    /// The file (see [`crate::operator_state`]).
    pub file: FileRef,
}

/// Everything one operator contributed to a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// Stable operator id (`wordcount-sum`).
    pub operator_id: String,
    /// Parallelism at the time of the snapshot.
    pub parallelism: u32,
    /// One handle per subtask that has keyed state.
    #[serde(default)]
    pub keyed_state: Vec<KeyedStateHandle>,
    /// One handle per subtask that has operator state.
    #[serde(default)]
    pub operator_state: Vec<OperatorStateHandle>,
}

/// Timing and size of a completed snapshot, as the coordinator measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// From trigger to commit, in milliseconds.
    pub duration_ms: u64,
    /// Longest synchronous phase of any operator, in microseconds.
    pub sync_us: u64,
    /// Longest asynchronous phase of any operator, in milliseconds.
    pub async_ms: u64,
    /// Bytes of all files the snapshot references.
    pub full_bytes: u64,
    /// Bytes uploaded for this snapshot.
    pub uploaded_bytes: u64,
}

/// The content of `_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Format version, checked before anything else is read.
    pub format_version: u32,
    /// The job that wrote the snapshot.
    pub job_id: String,
    /// Checkpoint id, increasing within a job.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Commit time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Number of key groups of the job.
    pub max_parallelism: u32,
    /// Per-operator state.
    pub operators: Vec<OperatorSnapshot>,
    /// Measurements, when known.
    #[serde(default)]
    pub stats: Option<SnapshotStats>,
}

#[derive(Deserialize)]
struct VersionProbe {
    format_version: u32,
}

impl SnapshotManifest {
    /// A manifest of the current format version with no operators.
    pub fn new(job_id: impl Into<String>, checkpoint_id: u64, kind: SnapshotKind, max_parallelism: u32) -> Self {
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            job_id: job_id.into(),
            checkpoint_id,
            kind,
            created_at_ms: crate::ttl::Clock::now_ms(&crate::ttl::SystemClock),
            max_parallelism,
            operators: Vec::new(),
            stats: None,
        }
    }

    /// Every file the manifest references.
    pub fn files(&self) -> impl Iterator<Item = &FileRef> {
        self.operators.iter().flat_map(|op| {
            op.keyed_state
                .iter()
                .flat_map(|h| h.files.iter())
                .chain(op.operator_state.iter().map(|h| &h.file))
        })
    }

    fn files_mut(&mut self) -> impl Iterator<Item = &mut FileRef> {
        self.operators.iter_mut().flat_map(|op| {
            op.keyed_state
                .iter_mut()
                .flat_map(|h| h.files.iter_mut())
                .chain(op.operator_state.iter_mut().map(|h| &mut h.file))
        })
    }

    /// The operator named `operator_id`.
    pub fn operator(&self, operator_id: &str) -> Option<&OperatorSnapshot> {
        self.operators.iter().find(|op| op.operator_id == operator_id)
    }

    /// Serializes to JSON with paths made relative to `base` (the storage-
    /// root-relative directory the manifest's paths are relative to).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when a file lies outside `base`.
    pub fn to_json(&self, base: &str) -> Result<Vec<u8>> {
        let mut relative = self.clone();
        for file in relative.files_mut() {
            file.path = file
                .path
                .strip_prefix(base)
                .ok_or_else(|| {
                    Error::invalid_argument(format!("file {} lies outside the snapshot base {base}", file.path))
                })?
                .to_owned();
        }
        let mut bytes = serde_json::to_vec_pretty(&relative)
            .map_err(|e| Error::new(ErrorKind::Serialization, "cannot encode manifest").with_source(e))?;
        bytes.push(b'\n');
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(format!("{CHECKSUM_LINE_PREFIX}{crc:08x}\n").as_bytes());
        Ok(bytes)
    }

    /// Parses `_metadata` bytes: checks the version, validates every path
    /// against `allowed_roots` (first path components a file may start
    /// with) and resolves them against `base`.
    ///
    /// # Errors
    /// [`ErrorKind::ChecksumMismatch`] when the bytes do not match their
    /// checksum line, [`ErrorKind::IncompatibleVersion`] for another version,
    /// [`ErrorKind::Corrupt`] for a missing checksum line, bad JSON or a path
    /// that escapes.
    pub fn from_json(bytes: &[u8], base: &str, allowed_roots: &[&str]) -> Result<Self> {
        let bytes = verify_checksum_line(bytes)?;
        let probe: VersionProbe = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt("manifest is not valid JSON with a format_version").with_source(e))?;
        if probe.format_version != MANIFEST_FORMAT_VERSION {
            return Err(Error::new(
                ErrorKind::IncompatibleVersion,
                format!(
                    "manifest format version {}; this build reads version {MANIFEST_FORMAT_VERSION}",
                    probe.format_version
                ),
            ));
        }
        let mut manifest: SnapshotManifest =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt("manifest does not decode").with_source(e))?;
        for file in manifest.files_mut() {
            validate_relative_path(&file.path, allowed_roots)?;
            file.path = format!("{base}{}", file.path);
        }
        Ok(manifest)
    }
}

/// Splits off and checks the last line (`crc32c <8 hex>`); returns the JSON.
fn verify_checksum_line(bytes: &[u8]) -> Result<&[u8]> {
    let without_newline = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let line_start = without_newline.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (json, line) = without_newline.split_at(line_start);
    let recorded = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.strip_prefix(CHECKSUM_LINE_PREFIX))
        // Exactly 8 lowercase hex digits, as written: a flipped case bit in
        // the line itself must not read as the same number.
        .filter(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            Error::corrupt("manifest has no `crc32c` line at its end: it is truncated, damaged or not a _metadata file")
        })?;
    let actual = crc32c::crc32c(json);
    if actual != recorded {
        return Err(Error::new(
            ErrorKind::ChecksumMismatch,
            format!("manifest bytes have CRC-32C {actual:08x}; its last line records {recorded:08x}"),
        ));
    }
    Ok(json)
}

/// Checks that a manifest path stays inside its snapshot's directories.
///
/// ```
/// use streamstate_api::snapshot::manifest::validate_relative_path;
/// assert!(validate_relative_path("chk-3/count-0.kgs", &["chk-3", "shared"]).is_ok());
/// assert!(validate_relative_path("../other-job/chk-1/x", &["chk-3"]).is_err());
/// assert!(validate_relative_path("/etc/passwd", &["chk-3"]).is_err());
/// ```
///
/// # Errors
/// [`ErrorKind::Corrupt`] naming the path.
pub fn validate_relative_path(path: &str, allowed_roots: &[&str]) -> Result<()> {
    let bad = |why: &str| Err(Error::corrupt(format!("manifest path {path:?} is refused: {why}")));
    if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.contains(':') {
        return bad("paths must be relative, with `/` separators");
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("empty, `.` or `..` components are not allowed");
    }
    let first = path.split('/').next().unwrap_or_default();
    if !allowed_roots.is_empty() && !allowed_roots.contains(&first) {
        return bad(&format!("must lie under one of {allowed_roots:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SnapshotFormat;
    use crate::KeyGroupRange;

    fn manifest() -> SnapshotManifest {
        let mut m = SnapshotManifest::new("job", 3, SnapshotKind::Checkpoint, 128);
        m.operators.push(OperatorSnapshot {
            operator_id: "sum".into(),
            parallelism: 1,
            keyed_state: vec![KeyedStateHandle {
                backend: "memory".into(),
                format: SnapshotFormat::Canonical,
                key_group_range: KeyGroupRange::new(0, 127),
                states: vec![],
                files: vec![FileRef {
                    path: "root/job/chk-3/sum-0.kgs".into(),
                    size: 10,
                    crc32c: 7,
                }],
                full_bytes: 10,
                uploaded_bytes: 10,
            }],
            operator_state: vec![],
        });
        m
    }

    #[test]
    fn json_round_trip_relativizes_and_resolves_paths() {
        let m = manifest();
        let json = m.to_json("root/job/").unwrap();
        assert!(String::from_utf8_lossy(&json).contains("\"chk-3/sum-0.kgs\""));
        let back = SnapshotManifest::from_json(&json, "root/job/", &["chk-3", "shared"]).unwrap();
        assert_eq!(back, m);
    }

    /// Rewrites the JSON part of a manifest file and its checksum line, as
    /// a hostile writer would.
    fn resealed(file: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
        let text = std::str::from_utf8(file).unwrap();
        let json = &text[..text.trim_end().rfind('\n').unwrap() + 1];
        let mut out = edit(json).into_bytes();
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(format!("crc32c {crc:08x}\n").as_bytes());
        out
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_detected() {
        let file = manifest().to_json("root/job/").unwrap();
        for i in 0..file.len() {
            for bit in [0x01u8, 0x20, 0x80] {
                let mut bad = file.clone();
                bad[i] ^= bit;
                let err = SnapshotManifest::from_json(&bad, "root/job/", &["chk-3", "shared"]).unwrap_err();
                assert!(
                    matches!(err.kind(), ErrorKind::ChecksumMismatch | ErrorKind::Corrupt),
                    "byte {i} ^ {bit:#x}: {err}"
                );
            }
        }
        for len in 0..file.len() - 1 {
            let err = SnapshotManifest::from_json(&file[..len], "root/job/", &["chk-3", "shared"]).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::ChecksumMismatch | ErrorKind::Corrupt),
                "truncated to {len}: {err}"
            );
        }
    }

    #[test]
    fn escaping_paths_are_refused() {
        let m = manifest();
        let file = m.to_json("root/job/").unwrap();
        for evil in ["../other/chk-1/x", "/abs/x", "chk-3/../../x", "other-root/x"] {
            let bad = resealed(&file, |json| json.replace("chk-3/sum-0.kgs", evil));
            let err = SnapshotManifest::from_json(&bad, "root/job/", &["chk-3", "shared"]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{evil}");
        }
    }

    #[test]
    fn unknown_version_is_typed() {
        let file = manifest().to_json("root/job/").unwrap();
        let newer = resealed(&file, |json| {
            json.replace("\"format_version\": 2", "\"format_version\": 99")
        });
        let err = SnapshotManifest::from_json(&newer, "root/job/", &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::IncompatibleVersion);
        let garbage = SnapshotManifest::from_json(b"{not json", "", &[]).unwrap_err();
        assert_eq!(garbage.kind(), ErrorKind::Corrupt);
    }
}
