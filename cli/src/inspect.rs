//! `checkpoints list` and `checkpoints inspect`.

use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;
use streamstate_api::snapshot::canonical;
use streamstate_api::storage::layout;
use streamstate_api::{CheckpointStorage, SnapshotFormat, SnapshotKind};

/// Splits a snapshot URI into the checkpoint directory URI and the snapshot
/// directory under it (`<job>/chk-<n>` or `savepoints/savepoint-...`).
pub fn split_snapshot_uri(uri: &str) -> Result<(String, String)> {
    let trimmed = uri.trim_end_matches('/');
    let (parent, last) = trimmed
        .rsplit_once('/')
        .with_context(|| format!("{uri} is not a snapshot directory (…/<job>/chk-<n> or …/savepoints/savepoint-…)"))?;
    let (root, middle) = parent
        .rsplit_once('/')
        .with_context(|| format!("{uri} is not a snapshot directory"))?;
    let is_checkpoint = layout::parse_checkpoint_dir_name(last).is_some();
    let is_savepoint = middle == layout::SAVEPOINTS_DIR && last.starts_with("savepoint-");
    anyhow::ensure!(
        is_checkpoint || is_savepoint,
        "{uri} is not a snapshot directory (…/<job>/chk-<n> or …/savepoints/savepoint-…)"
    );
    let root = if root.ends_with(':') || root.ends_with(":/") {
        format!("{root}/")
    } else {
        root.to_owned()
    };
    Ok((root, format!("{middle}/{last}")))
}

#[derive(Debug, Serialize)]
struct ListRow {
    id: u64,
    job: String,
    kind: &'static str,
    complete: bool,
    created_at_ms: Option<u64>,
    full_bytes: Option<u64>,
    uploaded_bytes: Option<u64>,
    duration_ms: Option<u64>,
    path: String,
}

/// `streamstate checkpoints list URI`
pub fn list(uri: &str, json: bool) -> Result<()> {
    let storage = CheckpointStorage::open(uri)?;
    let mut rows = Vec::new();
    for job in storage.list_jobs()? {
        for listing in storage.list_checkpoints(&job)? {
            let manifest = listing.complete.then(|| storage.load(&listing.dir).ok()).flatten();
            let full_bytes = manifest.as_ref().map(|s| {
                s.manifest
                    .operators
                    .iter()
                    .flat_map(|o| &o.keyed_state)
                    .map(|h| h.full_bytes)
                    .sum()
            });
            let uploaded_bytes = manifest.as_ref().map(|s| {
                s.manifest
                    .operators
                    .iter()
                    .flat_map(|o| &o.keyed_state)
                    .map(|h| h.uploaded_bytes)
                    .sum()
            });
            rows.push(ListRow {
                id: listing.checkpoint_id,
                job: job.clone(),
                kind: "checkpoint",
                complete: listing.complete && manifest.is_some(),
                created_at_ms: manifest.as_ref().map(|s| s.manifest.created_at_ms),
                full_bytes,
                uploaded_bytes,
                duration_ms: manifest.as_ref().and_then(|s| s.manifest.stats).map(|s| s.duration_ms),
                path: format!(
                    "{}/{}",
                    storage.uri().trim_end_matches('/'),
                    listing.dir.trim_end_matches('/')
                ),
            });
        }
    }
    for name in storage.list_dirs(&format!("{}/", layout::SAVEPOINTS_DIR))? {
        let dir = format!("{}/{name}", layout::SAVEPOINTS_DIR);
        let loaded = storage.load(&dir).ok();
        rows.push(ListRow {
            id: loaded.as_ref().map_or(0, |s| s.manifest.checkpoint_id),
            job: loaded.as_ref().map_or_else(String::new, |s| s.manifest.job_id.clone()),
            kind: "savepoint",
            complete: loaded.is_some(),
            created_at_ms: loaded.as_ref().map(|s| s.manifest.created_at_ms),
            full_bytes: None,
            uploaded_bytes: None,
            duration_ms: None,
            path: format!("{}/{dir}", storage.uri().trim_end_matches('/')),
        });
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<24} {:<10} {:<9} {:>12} {:>12}  PATH",
        "ID", "JOB", "KIND", "COMPLETE", "FULL_BYTES", "UPLOADED"
    )?;
    for r in &rows {
        let bytes = |b: Option<u64>| b.map_or_else(|| "-".to_owned(), |b| b.to_string());
        writeln!(
            out,
            "{:>6}  {:<24} {:<10} {:<9} {:>12} {:>12}  {}",
            r.id,
            r.job,
            r.kind,
            if r.complete { "yes" } else { "no" },
            bytes(r.full_bytes),
            bytes(r.uploaded_bytes),
            r.path
        )?;
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct InspectedEntry {
    operator: String,
    state: String,
    key_group: u32,
    /// First and last key group of the subtask whose snapshot held the
    /// entry (JSON only): a key outside them was routed wrongly.
    subtask_key_groups: (u32, u32),
    key: String,
    /// The namespace of a namespaced state's entry or of a timer (a
    /// window's bounds, rendered as the other fields are).
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    user_key: Option<String>,
    /// When a timer fires (epoch milliseconds), for the entries of the
    /// timer states (`_timer_state/event`, `_timer_state/processing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    timer_timestamp: Option<i64>,
    value: String,
}

/// A stored map user key read as what it stands for: (namespace, user key,
/// timer timestamp). A namespaced state keeps a cell per namespace (the user
/// key is the namespace), a namespaced map state's user key is
/// `varint len(namespace) | namespace | user key`, and a timer's is its
/// timestamp then its namespace.
fn split_user_key(meta: &streamstate_api::StateMeta, user_key: &[u8]) -> (Option<String>, Option<String>, Option<i64>) {
    if streamstate_api::timers::TimeDomain::of_state(&meta.name).is_some() {
        if let Ok((timestamp, namespace)) = streamstate_api::timers::decode_user_key(user_key) {
            let namespace = (!namespace.is_empty()).then(|| render(namespace));
            return (namespace, None, Some(timestamp));
        }
    } else if meta.is_namespaced() && !meta.kind.is_map() {
        return (Some(render(user_key)), None, None);
    } else if meta.is_namespaced() {
        let mut rest = user_key;
        if let Ok(len) = streamstate_api::codec::get_varint(&mut rest) {
            if let (Some(namespace), Some(user_key)) = (rest.get(..len as usize), rest.get(len as usize..)) {
                return (Some(render(namespace)), Some(render(user_key)), None);
            }
        }
    }
    (None, Some(render(user_key)), None)
}

/// Renders postcard bytes of a value whose Rust type name is `type_name`:
/// signed integers are zigzag varints in postcard, unsigned ones plain
/// varints; other types fall back to [`render`].
fn render_typed(bytes: &[u8], type_name: &str) -> String {
    let mut rest = bytes;
    let signed = matches!(type_name, "i16" | "i32" | "i64" | "i128" | "isize");
    let unsigned = matches!(type_name, "u16" | "u32" | "u64" | "u128" | "usize");
    if signed || unsigned {
        if let Ok(n) = streamstate_api::codec::get_varint(&mut rest) {
            if rest.is_empty() {
                return if signed {
                    (((n >> 1) as i64) ^ -((n & 1) as i64)).to_string()
                } else {
                    n.to_string()
                };
            }
        }
    }
    render(bytes)
}

/// Renders postcard bytes for people: a string if they are one (varint
/// length + UTF-8), an unsigned integer if they are one varint, else hex.
fn render(bytes: &[u8]) -> String {
    let mut rest = bytes;
    if let Ok(len) = streamstate_api::codec::get_varint(&mut rest) {
        if rest.len() as u64 == len {
            if let Ok(s) = std::str::from_utf8(rest) {
                return format!("{s:?}");
            }
        }
    }
    let mut rest = bytes;
    if let Ok(n) = streamstate_api::codec::get_varint(&mut rest) {
        if rest.is_empty() {
            return n.to_string();
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join("")
}

/// `streamstate checkpoints inspect PATH`
pub fn inspect(path: &str, json: bool, state: Option<&str>, key: Option<&str>) -> Result<()> {
    let (root, dir) = split_snapshot_uri(path)?;
    let storage = CheckpointStorage::open(&root)?;
    let snapshot = storage.load(&dir)?;
    let manifest = &snapshot.manifest;
    let wanted_key = key.map(streamstate_api::codec::encode_value).transpose()?;
    let mut entries = Vec::new();
    for op in &manifest.operators {
        for stored in &op.keyed_state {
            // Native snapshots (RocksDB files) and incremental chains (a full
            // file and deltas) are read through one canonical file made by
            // the backend that wrote them.
            let copy;
            let (handle, storage) = if stored.format == SnapshotFormat::Canonical && stored.files.len() <= 1 {
                (stored, &storage)
            } else {
                copy = crate::native_view::canonical_copy(stored, &storage, manifest.max_parallelism)?;
                (&copy.handle, &copy.storage)
            };
            canonical::read_handles(
                storage,
                std::slice::from_ref(handle),
                handle.key_group_range,
                |file, records| {
                    for r in records {
                        let meta = &file.states[r.state_index];
                        let name = &meta.name;
                        if state.is_some_and(|s| s != name) || wanted_key.as_ref().is_some_and(|k| k != r.key) {
                            continue;
                        }
                        let (namespace, user_key, timer_timestamp) = match r.user_key {
                            Some(user_key) => split_user_key(meta, user_key),
                            None => (None, None, None),
                        };
                        entries.push(InspectedEntry {
                            operator: op.operator_id.clone(),
                            state: name.clone(),
                            key_group: r.key_group,
                            subtask_key_groups: (
                                handle.key_group_range.start(),
                                handle.key_group_range.end().unwrap_or(0),
                            ),
                            key: render(r.key),
                            namespace,
                            user_key,
                            timer_timestamp,
                            value: if meta.ttl.is_some() {
                                // Skip the 8-byte expiry in front of TTL values.
                                r.value
                                    .get(8..)
                                    .map_or_else(|| render(r.value), |v| render_typed(v, &meta.value_type))
                            } else {
                                render_typed(r.value, &meta.value_type)
                            },
                        });
                    }
                    Ok(())
                },
            )?;
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            manifest: &'a streamstate_api::SnapshotManifest,
            entries: &'a [InspectedEntry],
        }
        serde_json::to_writer_pretty(
            &mut out,
            &Report {
                manifest,
                entries: &entries,
            },
        )?;
        writeln!(out)?;
        return Ok(());
    }
    let kind = match manifest.kind {
        SnapshotKind::Checkpoint => "checkpoint",
        SnapshotKind::Savepoint => "savepoint",
    };
    writeln!(
        out,
        "{kind} {} of job {} ({})",
        manifest.checkpoint_id, manifest.job_id, path
    )?;
    writeln!(
        out,
        "max parallelism {}, created at {} ms",
        manifest.max_parallelism, manifest.created_at_ms
    )?;
    for op in &manifest.operators {
        writeln!(out, "operator {} (parallelism {})", op.operator_id, op.parallelism)?;
        for h in &op.keyed_state {
            let states: Vec<String> = h
                .states
                .iter()
                .map(|s| {
                    match (
                        &s.namespace_type,
                        streamstate_api::timers::TimeDomain::of_state(&s.name),
                    ) {
                        (_, Some(domain)) => format!("{} (timers, {domain:?})", s.name),
                        (Some(namespace), None) => format!("{} ({:?} per {namespace})", s.name, s.kind),
                        (None, None) => format!("{} ({:?})", s.name, s.kind),
                    }
                })
                .collect();
            writeln!(
                out,
                "  keyed state: backend {}, {:?}, key groups {}, {} bytes, states: {}",
                h.backend,
                h.format,
                h.key_group_range,
                h.full_bytes,
                states.join(", ")
            )?;
        }
    }
    for e in &entries {
        let mut line = format!("{} {} kg={} {}", e.operator, e.state, e.key_group, e.key);
        if let Some(namespace) = &e.namespace {
            line.push_str(&format!(" ns={namespace}"));
        }
        if let Some(user_key) = &e.user_key {
            line.push_str(&format!(" [{user_key}]"));
        }
        match e.timer_timestamp {
            Some(timestamp) => writeln!(out, "{line} timer at {timestamp}")?,
            None => writeln!(out, "{line} = {}", e.value)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_uris_split_into_root_and_dir() {
        assert_eq!(
            split_snapshot_uri("file:///tmp/chk/job-1/chk-3/").unwrap(),
            ("file:///tmp/chk".to_owned(), "job-1/chk-3".to_owned())
        );
        assert_eq!(
            split_snapshot_uri("/tmp/chk/savepoints/savepoint-abc-2").unwrap(),
            ("/tmp/chk".to_owned(), "savepoints/savepoint-abc-2".to_owned())
        );
        assert!(split_snapshot_uri("file:///tmp/chk/job-1").is_err());
    }

    #[test]
    fn user_keys_split_into_namespace_user_key_and_timer() {
        use streamstate_api::codec::{encode_value, put_varint};
        use streamstate_api::{StateKind, StateMeta};
        let ns = encode_value("w1").unwrap();
        let mut namespaced = StateMeta::new::<u64>("sum", StateKind::Reducing);
        namespaced.namespace_type = Some("String".into());
        assert_eq!(split_user_key(&namespaced, &ns), (Some("\"w1\"".into()), None, None));
        let mut map = StateMeta::new::<u64>("m", StateKind::Map);
        map.namespace_type = Some("String".into());
        let mut user_key = Vec::new();
        put_varint(&mut user_key, ns.len() as u64);
        user_key.extend_from_slice(&ns);
        user_key.extend_from_slice(&encode_value(&7u32).unwrap());
        assert_eq!(
            split_user_key(&map, &user_key),
            (Some("\"w1\"".into()), Some("7".into()), None)
        );
        let timers = StateMeta::new::<()>("_timer_state/event", StateKind::Map);
        let mut timer = ((-2i64 as u64) ^ (1 << 63)).to_be_bytes().to_vec();
        timer.extend_from_slice(&ns);
        assert_eq!(split_user_key(&timers, &timer), (Some("\"w1\"".into()), None, Some(-2)));
        let plain = StateMeta::new::<u64>("plain", StateKind::Map);
        assert_eq!(split_user_key(&plain, &ns), (None, Some("\"w1\"".into()), None));
    }

    #[test]
    fn rendering_guesses_strings_and_numbers() {
        assert_eq!(
            render(&streamstate_api::codec::encode_value("hello").unwrap()),
            "\"hello\""
        );
        assert_eq!(render(&streamstate_api::codec::encode_value(&300u64).unwrap()), "300");
        assert_eq!(render(&[0xff, 0xff]), "ffff");
        assert_eq!(
            render_typed(&streamstate_api::codec::encode_value(&-3i64).unwrap(), "i64"),
            "-3"
        );
        assert_eq!(
            render_typed(&streamstate_api::codec::encode_value(&3i64).unwrap(), "i64"),
            "3"
        );
    }
}
