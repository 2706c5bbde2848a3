//! Changelog checkpoints, after Flink's FLIP-158 (the changelog state
//! backend): most incremental checkpoints upload only the writes made since
//! the checkpoint before, and a RocksDB checkpoint (*materialization*) is
//! made only now and then.
//!
//! An incremental native checkpoint uploads every SST that is new since the
//! last one. A RocksDB compaction rewrites whole files, so a checkpoint
//! after one uploads far more than what changed: 62× the changed bytes for
//! a 1% change of 700,000 keys (docs/BENCHMARKS.md, "Incremental checkpoint
//! bytes"). With [`crate::RocksDbConfig::changelog`] on, a checkpoint is
//! instead one of:
//!
//! * a **base**: the native checkpoint as without a changelog (SSTs, the
//!   WAL copy, the pending cells), but with every file in `shared/`, since
//!   later checkpoints reference all of it. It starts a new *generation*;
//! * a **segment**: one file of the writes made since the newest checkpoint
//!   whose upload has finished (the *published chain*), in the order made,
//!   in the cell-writes format ([`crate::pending_cells`]). Its handle lists
//!   the base's files, the chain's segments and its own.
//!
//! The backend gathers the writes in a [`WriteLog`]: what the write-back
//! cache writes to RocksDB, and every write that goes around the cache (map
//! states, appends to uncached lists, writes with the cache off). A segment
//! adds the cache's entries changed since the last piece, so a key changed
//! a thousand times between two checkpoints is in the segment once. Each
//! checkpoint turns what was gathered into a *piece*; a segment's file holds
//! every piece not yet in the published chain, so a checkpoint whose upload
//! failed, or was never run, leaves nothing out. Uploads may finish in any
//! order: a chain is published only over an older one.
//!
//! Restore downloads the base's RocksDB files, lays its pending cells over
//! them, then applies each segment in order. A new base is made, as the
//! heap backend starts a new chain, once the chain has [`MAX_SEGMENTS`]
//! segments or its segments add up to the base's size, which bounds what a
//! restore replays; also when the base's upload has not finished by the
//! next checkpoint, or the gathered writes pass [`MAX_LOG_BYTES`]
//! (checkpoints stopped coming).

use std::sync::{Arc, Mutex};

use state_api::{
    AsyncSnapshot, CheckpointStorage, FileRef, KeyGroupRange, KeyedStateHandle, Result, SnapshotFormat, SnapshotTarget,
    StateMeta,
};

use crate::pending_cells::{PendingCellsWriter, WriteLog};
use crate::snapshot::NAME_SEPARATOR;

/// Segments after which the next checkpoint is a new base (the heap
/// backend's `MAX_DELTAS`).
pub const MAX_SEGMENTS: usize = 10;

/// Gathered writes past which the changelog is dropped and the next
/// checkpoint is a base: bounds the memory a job whose checkpoints stopped
/// coming would otherwise fill.
pub(crate) const MAX_LOG_BYTES: usize = 64 << 20;

/// The local-name prefix of a segment's file; the piece number follows,
/// zero-padded, so names sort in the order the segments apply.
pub(crate) const SEGMENT_FILE_PREFIX: &str = "streamstate-changelog-";

/// The newest changelog checkpoint whose upload finished: what the next
/// segment builds on.
#[derive(Debug, Clone)]
pub(crate) struct PublishedChain {
    /// The base's generation.
    pub(crate) generation: u64,
    /// The base's files.
    pub(crate) base_files: Vec<FileRef>,
    /// The segments since the base, in order.
    pub(crate) segments: Vec<FileRef>,
    /// The newest piece the segments hold (0: none).
    pub(crate) through_piece: u64,
}

impl PublishedChain {
    fn base_bytes(&self) -> u64 {
        self.base_files.iter().map(|f| f.size).sum()
    }

    fn segment_bytes(&self) -> u64 {
        self.segments.iter().map(|f| f.size).sum()
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

/// The asynchronous phase of a segment checkpoint: uploads the pieces as one
/// file to `shared/` and publishes the longer chain.
pub(crate) struct SegmentSnapshot {
    pub(crate) chain: PublishedChain,
    pub(crate) pieces: Vec<Arc<Vec<u8>>>,
    pub(crate) piece: u64,
    pub(crate) slot: ChainSlot,
    pub(crate) instance: String,
    pub(crate) range: KeyGroupRange,
    pub(crate) states: Vec<StateMeta>,
}

impl SegmentSnapshot {
    fn encode(&self) -> Vec<u8> {
        let names: Vec<&str> = self.states.iter().map(|s| s.name.as_str()).collect();
        let mut writer = PendingCellsWriter::new(&names, 0);
        for piece in &self.pieces {
            writer.extend_encoded(piece);
        }
        writer.finish()
    }
}

impl AsyncSnapshot for SegmentSnapshot {
    fn write(self: Box<Self>, storage: &CheckpointStorage, target: &SnapshotTarget) -> Result<KeyedStateHandle> {
        let name = format!(
            "{}-g{}{NAME_SEPARATOR}{SEGMENT_FILE_PREFIX}{:012}",
            self.instance, self.chain.generation, self.piece
        );
        let file = storage.write(&target.shared_file(&name), self.encode())?;
        let uploaded_bytes = file.size;
        let mut segments = self.chain.segments.clone();
        segments.push(file);
        let files: Vec<FileRef> = self.chain.base_files.iter().chain(&segments).cloned().collect();
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
