//! [`RocksDbConfig`]: sizing and placement of the RocksDB backend.

use std::path::PathBuf;

/// Sizing and placement of the RocksDB backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksDbConfig {
    /// Working directory root (default: `<temp dir>/streamstate-rocksdb`).
    pub local_dir: Option<PathBuf>,
    /// Shared block cache, bytes.
    pub block_cache_bytes: usize,
    /// Memtable budget shared by all column families of the process, bytes
    /// (charged to the block cache).
    pub write_buffer_bytes: usize,
    /// One column family's memtable size, bytes (Flink's
    /// `state.backend.rocksdb.writebuffer.size`). 4 MiB, not RocksDB's and
    /// Flink's 64 MiB: a checkpoint's WAL holds what the unflushed
    /// memtables hold, and a restore replays it: smaller memtables make
    /// restores much faster at the same throughput and RSS, for more bytes
    /// uploaded per incremental checkpoint (more, smaller L0 files
    /// compacted more often; docs/BENCHMARKS.md).
    pub write_buffer_size: usize,
    /// Keys of cell states each instance keeps in its write-back cache (0:
    /// every write goes to RocksDB at once). Changed keys are written to
    /// RocksDB in one batch before each snapshot and whenever half the
    /// capacity, at most 16,384, are changed; a full cache is emptied.
    pub write_back_entries: usize,
    /// Changelog checkpoints (Flink's `state.backend.changelog.enabled`):
    /// an incremental checkpoint uploads the writes made since the one
    /// before instead of the SSTs new since then, and a RocksDB checkpoint
    /// is made after every [`crate::changelog::MAX_SEGMENTS`] of them, or sooner
    /// once the writes add up to its size. Each segment is uploaded as SSTs
    /// a restore ingests, so a restore takes about as long as from a full
    /// checkpoint (docs/BENCHMARKS.md). Off by default, as in Flink: every checkpoint's asynchronous
    /// phase then folds and sorts the writes, and a base waits for the
    /// memtables' flush.
    pub changelog: bool,
    /// After a rescaling restore, compact the key-group ranges it clipped
    /// away, on a thread of its own while the job runs, so that its
    /// checkpoints stop carrying the other instances' keys (see
    /// `range_compaction`). On by default; Flink leaves them to RocksDB's
    /// own compactions, which is what `false` does.
    pub compact_clipped_ranges: bool,
    /// Where timers live (Flink's
    /// `state.backend.rocksdb.timer-service.factory`): in RocksDB, in
    /// timestamp order, with only each key group's first in memory (the
    /// default, as in Flink), or all in memory ([`TimerStore::Heap`]).
    /// Applies to timer states a job creates; a native restore keeps the
    /// layout its checkpoint has (a canonical savepoint moves between
    /// them).
    pub timer_store: TimerStore,
}

/// Where the RocksDB backend keeps timers (Flink's
/// `state.backend.rocksdb.timer-service.factory`).
///
/// ```
/// use streamstate_rocksdb::{RocksDbConfig, TimerStore};
/// assert_eq!(RocksDbConfig::default().timer_store, TimerStore::RocksDb);
/// assert_eq!("heap".parse::<TimerStore>().unwrap(), TimerStore::Heap);
/// assert!("disk".parse::<TimerStore>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimerStore {
    /// In a column family keyed by key group, timestamp, key and
    /// namespace: the timer service reads the next timer of each key group
    /// from RocksDB and holds only those in memory (Flink's `ROCKSDB`).
    #[default]
    RocksDb,
    /// Every timer also in an in-memory ordered set, RocksDB's column
    /// family keyed by key first (Flink's `HEAP`): no RocksDB read per
    /// registration, for timers that fit in memory.
    Heap,
}

impl std::str::FromStr for TimerStore {
    type Err = streamstate_api::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rocksdb" => Ok(Self::RocksDb),
            "heap" => Ok(Self::Heap),
            other => Err(streamstate_api::Error::config(format!(
                "unknown timer service factory `{other}`: expected ROCKSDB or HEAP"
            ))),
        }
    }
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        Self {
            local_dir: None,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            write_buffer_size: 4 << 20,
            write_back_entries: DEFAULT_WRITE_BACK_ENTRIES,
            changelog: false,
            compact_clipped_ranges: true,
            timer_store: TimerStore::RocksDb,
        }
    }
}

/// Default [`RocksDbConfig::write_back_entries`]: holds the hot keys of a
/// skewed stream (docs/BENCHMARKS.md); what a snapshot writes is bounded by
/// the dirty limit (16,384), not by this.
pub const DEFAULT_WRITE_BACK_ENTRIES: usize = 131_072;
