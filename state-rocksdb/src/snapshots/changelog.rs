//! Changelog checkpoints, after Flink's FLIP-158 (the changelog state
//! backend): most incremental checkpoints upload only the writes made since
//! the checkpoint before, and a RocksDB checkpoint (*materialization*) is
//! made only now and then.
//!
//! An incremental native checkpoint uploads every SST that is new since the
//! last one. A RocksDB compaction rewrites whole files, so a checkpoint
//! after one uploads far more than what changed, tens of times the
//! changed bytes (docs/BENCHMARKS.md, "Incremental checkpoint bytes"). With [`crate::RocksDbConfig::changelog`] on, a checkpoint is
//! instead one of:
//!
//! * a **base**: the native checkpoint as without a changelog, but with
//!   every file in `shared/`, since later checkpoints reference all of it;
//!   its memtables are flushed first (so its WAL copy is nearly empty) and
//!   its pending cells are written as the SSTs of its *piece 0*. It starts
//!   a new *generation*;
//! * a **segment**: the writes made since the newest checkpoint whose
//!   upload has finished (the *published chain*), folded to each key's
//!   last write (`fold.rs`) and written as one SST file per state
//!   written. Its handle lists the base's files, the chain's segments and
//!   its own.
//!
//! The backend gathers the writes in a `WriteLog` (`pending_cells.rs`): what the write-back
//! cache writes to RocksDB, and every write that goes around the cache (map
//! states, appends to uncached lists, writes with the cache off). A segment
//! adds the cache's entries changed since the last piece, so a key changed
//! a thousand times between two checkpoints is in the segment once. Each
//! checkpoint turns what was gathered into a *piece*; a segment's file holds
//! every piece not yet in the published chain, so a checkpoint whose upload
//! failed, or was never run, leaves nothing out. Uploads may finish in any
//! order: a chain is published only over an older one.
//!
//! Restore downloads the base's RocksDB files, opens them, and ingests the
//! SSTs of piece 0 and of each segment, oldest first, in one
//! `IngestExternalFile` per column family: each file gets a sequence
//! number above all before it, so a later segment wins, and nothing goes
//! through a memtable. Replaying the writes one by one instead cost a
//! memtable insert per write, seconds for a large state; the files are
//! built where the time is free, in the checkpoint's asynchronous phase. Segments of
//! an earlier version, one file of cell writes (`pending_cells.rs`),
//! are still replayed. A new base is made, as the
//! heap backend starts a new chain, once the chain has [`MAX_SEGMENTS`]
//! segments or its segments add up to the base's size, which bounds the
//! files a restore ingests; also when the base's upload has not finished by the
//! next checkpoint, or the gathered writes pass `MAX_LOG_BYTES` (64 MiB)
//! (checkpoints stopped coming).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::SstFileWriter;
use streamstate_api::{
    AsyncSnapshot, CheckpointStorage, Error, FileRef, KeyGroupRange, KeyedStateHandle, Result, SnapshotFormat,
    SnapshotTarget, StateMeta,
};

use crate::errors::rocks_error;
use crate::files::create_dir;
use crate::files::{DirGuard, NAME_SEPARATOR};
use crate::options::cf_options;
use crate::resources::Resources;
use crate::snapshots::fold::{NetWrite, NetWrites};
use crate::write_path::pending_cells::{for_each_logged, WriteLog};

/// Segments after which the next checkpoint is a new base (the heap
/// backend's `MAX_DELTAS`).
pub const MAX_SEGMENTS: usize = 10;

/// Gathered writes past which the changelog is dropped and the next
/// checkpoint is a base: bounds the memory a job whose checkpoints stopped
/// coming would otherwise fill.
pub(crate) const MAX_LOG_BYTES: usize = 64 << 20;

/// The local-name prefix of a segment's files; the piece number follows,
/// zero-padded, so names sort in the order the segments apply.
pub(crate) const SEGMENT_FILE_PREFIX: &str = "streamstate-changelog-";

/// The local-name suffix of a segment's SST files; segments of an earlier
/// version, files of cell writes, lack it.
pub(crate) const SEGMENT_TABLE_SUFFIX: &str = ".sst";

/// The encoded bytes of an average write in the word count's segments
/// (a state index, a key of about 8 bytes, a tag and a count): sizes the
/// fold's table up front.
pub(crate) const TYPICAL_WRITE_BYTES: usize = 14;

/// The local name of the SST of piece `piece` holding the writes of the
/// state at `state_index` (of the handle's states).
fn segment_table_name(piece: u64, state_index: usize) -> String {
    format!("{SEGMENT_FILE_PREFIX}{piece:012}-s{state_index}{SEGMENT_TABLE_SUFFIX}")
}

/// The state index an SST of a segment is for ([`segment_table_name`]),
/// or `None` for a name that is not one.
pub(crate) fn segment_table_state(local_name: &str) -> Option<usize> {
    let rest = local_name
        .strip_prefix(SEGMENT_FILE_PREFIX)?
        .strip_suffix(SEGMENT_TABLE_SUFFIX)?;
    let (piece, state) = rest.split_once("-s")?;
    piece.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
    state.parse().ok()
}

/// The newest changelog checkpoint whose upload finished: what the next
/// segment builds on.
#[derive(Debug, Clone)]
pub(crate) struct PublishedChain {
    /// The base's generation.
    pub(crate) generation: u64,
    /// The base's files.
    pub(crate) base_files: Vec<FileRef>,
    /// The segments since the base, in order: each one's files (none when
    /// it held no writes).
    pub(crate) segments: Vec<Vec<FileRef>>,
    /// The newest piece the segments hold (0: none).
    pub(crate) through_piece: u64,
}

impl PublishedChain {
    fn base_bytes(&self) -> u64 {
        self.base_files.iter().map(|f| f.size).sum()
    }

    fn segment_bytes(&self) -> u64 {
        self.segments.iter().flatten().map(|f| f.size).sum()
    }
}

/// Where a backend's snapshots publish their chains.
pub(crate) type ChainSlot = Arc<Mutex<Option<PublishedChain>>>;

/// Publishes `chain` unless the slot holds a newer one: a later generation,
/// or the same generation through a later piece.
pub(crate) fn publish(slot: &ChainSlot, chain: PublishedChain) {
    if let Ok(mut newest) = slot.lock() {
        let newer = newest.as_ref().is_none_or(|current| {
            (current.generation, current.through_piece) < (chain.generation, chain.through_piece)
        });
        if newer {
            *newest = Some(chain);
        }
    }
}

/// A backend's changelog since its newest base.
#[derive(Debug)]
pub(crate) struct Changelog {
    /// The base's generation.
    pub(crate) generation: u64,
    /// Writes gathered since the last piece.
    pub(crate) log: WriteLog,
    /// Pieces not known to be in a published chain, oldest first.
    pieces: Vec<(u64, Arc<Vec<u8>>)>,
    next_piece: u64,
}

impl Changelog {
    /// The changelog of a base of `generation`, empty.
    pub(crate) fn new(generation: u64) -> Self {
        Self {
            generation,
            log: WriteLog::default(),
            pieces: Vec::new(),
            next_piece: 1,
        }
    }

    /// Whether the gathered writes grew past [`MAX_LOG_BYTES`].
    pub(crate) fn overflowed(&self) -> bool {
        self.log.len() > MAX_LOG_BYTES
    }

    /// The published chain a segment would extend, or `None` when the next
    /// checkpoint must be a base.
    pub(crate) fn chain_to_extend(&self, slot: &ChainSlot) -> Option<PublishedChain> {
        let chain = slot.lock().ok()?.clone()?;
        if chain.generation != self.generation || chain.segments.len() >= MAX_SEGMENTS {
            return None;
        }
        let unpublished: u64 = self
            .pieces
            .iter()
            .filter(|(n, _)| *n > chain.through_piece)
            .map(|(_, piece)| piece.len() as u64)
            .sum::<u64>()
            + self.log.len() as u64;
        (chain.segment_bytes() + unpublished < chain.base_bytes()).then_some(chain)
    }

    /// Ends the current piece with `last_writes` (the cache's unlogged
    /// entries) and returns the pieces a segment on `chain` must hold, with
    /// the new piece's number.
    pub(crate) fn cut_piece(&mut self, chain: &PublishedChain, mut last_writes: WriteLog) -> (Vec<Arc<Vec<u8>>>, u64) {
        let mut piece = self.log.take();
        piece.extend_from_slice(&last_writes.take());
        let number = self.next_piece;
        self.next_piece += 1;
        self.pieces.retain(|(n, _)| *n > chain.through_piece);
        self.pieces.push((number, Arc::new(piece)));
        (self.pieces.iter().map(|(_, p)| Arc::clone(p)).collect(), number)
    }
}

/// The asynchronous phase of a segment checkpoint: folds the pieces, writes
/// one SST per state written, uploads them to `shared/` and publishes the
/// longer chain.
pub(crate) struct SegmentSnapshot {
    pub(crate) chain: PublishedChain,
    pub(crate) pieces: Vec<Arc<Vec<u8>>>,
    pub(crate) piece: u64,
    pub(crate) slot: ChainSlot,
    pub(crate) instance: String,
    pub(crate) range: KeyGroupRange,
    pub(crate) states: Vec<StateMeta>,
    /// Where the SSTs are written before their upload: next to the
    /// backend's working directory, removed once uploaded.
    pub(crate) dir: PathBuf,
    pub(crate) resources: Arc<Resources>,
}

/// Writes the SSTs of piece `piece` into `dir`, one per state written (of
/// `state_count`, by index): the net effect of the writes `add_writes`
/// folds in. Returns the state index and path of each, in state order.
///
/// # Errors
/// What `add_writes` returns; RocksDB's, naming the file.
pub(crate) fn write_segment_tables<'a>(
    dir: &Path,
    piece: u64,
    state_count: usize,
    resources: &Resources,
    expected_writes: usize,
    add_writes: impl FnOnce(&mut NetWrites<'a>) -> Result<()>,
) -> Result<Vec<(usize, PathBuf)>> {
    let mut net = NetWrites::with_capacity(expected_writes);
    add_writes(&mut net)?;
    let folded = net.finish();
    let options = cf_options(resources);
    let mut cells = folded.cells.into_iter().peekable();
    let mut tables = Vec::new();
    for state in 0..state_count {
        let mut ranges = folded.ranges.iter().filter(|(s, _, _)| *s == state).peekable();
        if ranges.peek().is_none() && cells.peek().is_none_or(|(s, _, _)| *s != state) {
            continue;
        }
        let path = dir.join(segment_table_name(piece, state));
        let failed = |e| rocks_error("write a changelog segment", e).with_context("file", path.display().to_string());
        let mut writer = SstFileWriter::create(&options);
        writer.open(&path).map_err(failed)?;
        for (_, start, end) in ranges {
            writer.delete_range(start, end).map_err(failed)?;
        }
        while let Some((_, key, write)) = cells.next_if(|(s, _, _)| *s == state) {
            match write {
                NetWrite::Put(value) => writer.put(key, value),
                NetWrite::Remove => writer.delete(key),
                NetWrite::Append(bytes) => writer.merge(key, bytes),
            }
            .map_err(failed)?;
        }
        writer.finish().map_err(failed)?;
        tables.push((state, path));
    }
    Ok(tables)
}

/// Uploads a piece's SSTs ([`write_segment_tables`]) to `shared/`, under
/// names of the generation's base alone.
pub(crate) fn upload_segment_tables(
    storage: &CheckpointStorage,
    target: &SnapshotTarget,
    instance: &str,
    generation: u64,
    piece: u64,
    tables: &[(usize, PathBuf)],
) -> Result<Vec<FileRef>> {
    tables
        .iter()
        .map(|(state, path)| {
            let name = format!(
                "{instance}-g{generation}{NAME_SEPARATOR}{}",
                segment_table_name(piece, *state)
            );
            storage.write_from_file(&target.shared_file(&name), path)
        })
        .collect()
}

impl SegmentSnapshot {
    /// Writes the segment's SSTs into `dir` ([`write_segment_tables`]).
    fn write_tables(&self, dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
        let logged: usize = self.pieces.iter().map(|p| p.len()).sum();
        let state_count = self.states.len();
        write_segment_tables(
            dir,
            self.piece,
            state_count,
            &self.resources,
            logged / TYPICAL_WRITE_BYTES,
            |net| {
                self.pieces
                    .iter()
                    .try_for_each(|piece| fold_logged(net, piece, state_count))
            },
        )
    }
}

/// Folds the writes a [`WriteLog`] encoded (`log`) into `net`.
///
/// # Errors
/// Corrupt when a write names a state index of `state_count` or more, or
/// `log` does not decode.
pub(crate) fn fold_logged<'a>(net: &mut NetWrites<'a>, log: &'a [u8], state_count: usize) -> Result<()> {
    for_each_logged(log, |index, key, op| {
        let state = usize::try_from(index)
            .ok()
            .filter(|&i| i < state_count)
            .ok_or_else(|| Error::corrupt(format!("a changelog write of unknown state index {index}")))?;
        net.add(state, key, op);
        Ok(())
    })
}

impl AsyncSnapshot for SegmentSnapshot {
    fn write(self: Box<Self>, storage: &CheckpointStorage, target: &SnapshotTarget) -> Result<KeyedStateHandle> {
        let dir = DirGuard(self.dir.clone());
        create_dir(&dir.0)?;
        let tables = self.write_tables(&dir.0)?;
        let new_files = upload_segment_tables(
            storage,
            target,
            &self.instance,
            self.chain.generation,
            self.piece,
            &tables,
        )?;
        let uploaded_bytes = new_files.iter().map(|f| f.size).sum();
        let mut segments = self.chain.segments.clone();
        segments.push(new_files);
        let files: Vec<FileRef> = self
            .chain
            .base_files
            .iter()
            .chain(segments.iter().flatten())
            .cloned()
            .collect();
        publish(
            &self.slot,
            PublishedChain {
                generation: self.chain.generation,
                base_files: self.chain.base_files.clone(),
                segments,
                through_piece: self.piece,
            },
        );
        Ok(KeyedStateHandle {
            backend: "rocksdb".into(),
            format: SnapshotFormat::Native,
            key_group_range: self.range,
            states: self.states,
            full_bytes: files.iter().map(|f| f.size).sum(),
            uploaded_bytes,
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_sort_by_piece_and_name_their_state() {
        let names = [
            segment_table_name(9, 2),
            segment_table_name(10, 0),
            segment_table_name(10, 11),
        ];
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted[..2], names[..2], "piece 9 before piece 10");
        assert_eq!(segment_table_state(&names[2]), Some(11));
        assert_eq!(
            segment_table_state(&format!("{SEGMENT_FILE_PREFIX}000000000007")),
            None,
            "earlier version"
        );
        assert_eq!(segment_table_state("000123.sst"), None, "RocksDB's own");
        assert_eq!(segment_table_state(&format!("{SEGMENT_FILE_PREFIX}x-s1.sst")), None);
    }
}
