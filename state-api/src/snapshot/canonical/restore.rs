//! Reading canonical snapshots from storage ([`read_handles`]: only the
//! key-group blocks a range needs, each checked) and restoring them into
//! any backend ([`restore_into`]).

use super::format::{CanonicalIndex, CanonicalRecord, FOOTER_LEN, HEADER_LEN};
use super::reader::{block_bytes, parse_block, parse_file_index, parse_footer, parse_index};
use crate::backend::{KeyedStateBackend, KeyedStateHandle, SnapshotFormat, StateId};
use crate::descriptor::StateMeta;
use crate::key_group::{assign_to_key_group, KeyGroupRange};
use crate::storage::CheckpointStorage;

use crate::{Error, Result};

/// The file records passed to [`read_handles`]' `apply` came from.
#[derive(Debug, Clone, Copy)]
pub struct RecordFile<'a> {
    /// The file's states; a record's `state_index` points into them.
    pub states: &'a [StateMeta],
    /// Whether the file is a delta (records change an earlier file's state)
    /// rather than a full snapshot (every record a key of its own).
    pub delta: bool,
    /// The file's place among the files read, from 0: records of one file
    /// share it, so a caller can map the file's states to its own once per
    /// file instead of comparing state lists per record.
    pub ordinal: usize,
}

impl<'a> RecordFile<'a> {
    fn of(index: &'a CanonicalIndex, ordinal: usize) -> Self {
        Self {
            states: &index.states,
            delta: index.delta,
            ordinal,
        }
    }
}

/// Reads every canonical record of `handles` whose key group is in `range`
/// and passes them to `apply` a key-group block at a time, with the file
/// they came from. A handle's files are read in order: a full file, then
/// the deltas after it, whose removal records (`removed`) `apply` must
/// carry out.
///
/// A file whose whole range is wanted is read at once and its CRC-32C checked
/// against the manifest; otherwise only its footer, index and the wanted
/// blocks are read. Each block is checked against its own CRC before its
/// records are passed on.
///
/// # Errors
/// [`crate::ErrorKind::Unsupported`] for a non-canonical handle; storage,
/// [`crate::ErrorKind::NotFound`], [`crate::ErrorKind::Corrupt`] and
/// [`crate::ErrorKind::ChecksumMismatch`] errors naming the file.
pub fn read_handles(
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    range: KeyGroupRange,
    mut apply: impl FnMut(RecordFile<'_>, &[CanonicalRecord<'_>]) -> Result<()>,
) -> Result<()> {
    let mut ordinal = 0;
    for handle in handles {
        if handle.format != SnapshotFormat::Canonical {
            return Err(Error::unsupported(format!(
                "snapshot written by backend `{}` is in {:?} format; only the same backend restores it",
                handle.backend, handle.format
            )));
        }
        let wanted = handle.key_group_range.intersection(&range);
        if wanted.is_empty() {
            continue;
        }
        for file in &handle.files {
            let with_file = |e: Error| e.with_context("file", file.path.clone());
            let this_file = ordinal;
            ordinal += 1;
            if wanted == handle.key_group_range {
                let bytes = storage.read_verified(file)?;
                let index = parse_file_index(&bytes).map_err(with_file)?;
                // A block at a time: a vector of the whole file's records
                // (~50 MiB at 700k keys) cost a heap restore a fifth of its
                // time in page faults and copies (docs/BENCHMARKS.md).
                for block in &index.blocks {
                    let records = parse_block(&index, block, block_bytes(&bytes, block)).map_err(with_file)?;
                    apply(RecordFile::of(&index, this_file), &records).map_err(with_file)?;
                }
            } else {
                let len = storage.stat_len(&file.path)?;
                if len != file.size {
                    return Err(
                        Error::corrupt(format!("file is {len} bytes, manifest says {}", file.size))
                            .with_context("file", file.path.clone()),
                    );
                }
                if len < (HEADER_LEN + FOOTER_LEN) as u64 {
                    return Err(with_file(Error::corrupt(format!(
                        "canonical snapshot of {len} bytes is too short"
                    ))));
                }
                let footer_bytes = storage.read_range(&file.path, len - FOOTER_LEN as u64..len)?;
                let footer = parse_footer(&footer_bytes, len).map_err(with_file)?;
                let index_bytes =
                    storage.read_range(&file.path, footer.index_offset..footer.index_offset + footer.index_len)?;
                let index = parse_index(&index_bytes, &footer).map_err(with_file)?;
                for block in index.blocks.iter().filter(|b| wanted.contains(b.key_group)) {
                    let bytes = storage.read_range(&file.path, block.offset..block.offset + block.len)?;
                    let records = parse_block(&index, block, &bytes).map_err(with_file)?;
                    apply(RecordFile::of(&index, this_file), &records).map_err(with_file)?;
                }
            }
        }
    }
    Ok(())
}

/// Restores canonical `handles` into `backend`, keeping only the key groups
/// of the backend's range. Works for every backend through the
/// [`KeyedStateBackend`] trait; states are registered as found.
///
/// # Errors
/// See [`read_handles`]; [`crate::ErrorKind::Corrupt`] when a record's key does not
/// hash to the key group it was stored under.
pub fn restore_into(
    backend: &mut dyn KeyedStateBackend,
    handles: &[KeyedStateHandle],
    storage: &CheckpointStorage,
) -> Result<()> {
    let range = backend.key_group_range();
    let max_parallelism = backend.max_parallelism();
    // Maps a file's states to backend ids, once per file; files of one
    // snapshot share their state lists, so they share the ids too.
    let mut ids: Vec<(Vec<StateMeta>, Vec<StateId>)> = Vec::new();
    let mut file_ids: Option<(usize, usize)> = None;
    let mut new_keys: Vec<usize> = Vec::new();
    read_handles(storage, handles, range, |file, records| {
        let slot = match file_ids {
            Some((ordinal, slot)) if ordinal == file.ordinal => slot,
            _ => {
                let slot = match ids.iter().position(|(s, _)| s.as_slice() == file.states) {
                    Some(slot) => slot,
                    None => {
                        let registered = file
                            .states
                            .iter()
                            .map(|meta| backend.register_state(meta))
                            .collect::<Result<Vec<_>>>()?;
                        ids.push((file.states.to_vec(), registered));
                        ids.len() - 1
                    }
                };
                file_ids = Some((file.ordinal, slot));
                slot
            }
        };
        let state_ids = &ids[slot].1;
        if let (false, Some(first)) = (file.delta, records.first()) {
            // Every cell record of a full file is a key of its own: say how
            // many each state gets in this key group before writing them.
            new_keys.clear();
            new_keys.resize(state_ids.len(), 0);
            for record in records.iter().filter(|r| r.user_key.is_none()) {
                new_keys[record.state_index] += 1;
            }
            for (&state, &keys) in state_ids.iter().zip(&new_keys) {
                if keys > 0 {
                    backend.reserve_keys(state, first.key_group, keys);
                }
            }
        }
        for record in records {
            restore_record(backend, state_ids[record.state_index], record, max_parallelism)?;
        }
        Ok(())
    })
}

/// Writes one record of a canonical file into `backend`'s `state`.
fn restore_record(
    backend: &mut dyn KeyedStateBackend,
    state: StateId,
    record: &CanonicalRecord<'_>,
    max_parallelism: u32,
) -> Result<()> {
    // `set_current_key` hashes the key to its key group; checking that
    // group against the one the record was stored under costs no second
    // hash. It refuses a key outside the backend's range, which a corrupt
    // record's key may hash to: that is corruption too.
    let key_group_mismatch = |actual: u32| {
        Error::corrupt(format!(
            "record stored under key group {} hashes to key group {actual} (max parallelism {max_parallelism})",
            record.key_group
        ))
    };
    if let Err(refused) = backend.set_current_key(record.key) {
        let actual = assign_to_key_group(record.key, max_parallelism);
        return Err(if actual == record.key_group {
            refused
        } else {
            key_group_mismatch(actual)
        });
    }
    if backend.current_key_group() != record.key_group {
        return Err(key_group_mismatch(backend.current_key_group()));
    }
    match record.user_key {
        _ if record.removed => backend.clear(state),
        Some(user_key) => backend.map_put(state, user_key, record.value),
        None => backend.put(state, record.value),
    }
}
