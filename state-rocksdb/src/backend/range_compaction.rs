//! Compacting the key-group ranges a rescaling restore clipped away, on a
//! thread of its own, while the job runs.
//!
//! A rescaling restore drops the SSTs lying wholly outside its range and
//! covers the rest with range deletions
//! ([`crate::backend::RocksDbKeyedStateBackend::clip_to_own_range`]). The
//! files spanning the range's edges, and L0 files, keep the deleted keys
//! until a compaction rewrites them; RocksDB's own compactions may not
//! reach the bottom level for a long time, and until then every checkpoint
//! uploads the dead half of those files. A manual compaction of the
//! clipped ranges rewrites the files that overlap them; L0 files span every
//! key group, so that can be most of the database (docs/BENCHMARKS.md).
//! It runs
//! here instead of during the restore, so the job starts at once (Flink
//! leaves this to RocksDB's compactions).

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rocksdb::{BottommostLevelCompaction, CompactOptions, DB};
use streamstate_api::{Error, ErrorKind, Result};

/// A key range of one column family to compact: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClippedRange {
    pub(crate) column_family: String,
    pub(crate) start: Vec<u8>,
    pub(crate) end: Vec<u8>,
}

/// The thread compacting clipped ranges. It holds the database open:
/// [`RangeCompaction::stop`] ends it early (at close),
/// [`RangeCompaction::wait`] lets it finish (before a column family is
/// created, which needs the database to itself).
#[derive(Debug)]
pub(crate) struct RangeCompaction {
    handle: JoinHandle<()>,
}

impl RangeCompaction {
    /// Starts compacting `ranges` of `db`, one after the other, on a new
    /// thread. `work_dir` names the database in its log lines.
    ///
    /// # Errors
    /// Storage when the thread cannot be started.
    pub(crate) fn start(db: Arc<DB>, ranges: Vec<ClippedRange>, work_dir: PathBuf) -> Result<Self> {
        let handle = std::thread::Builder::new()
            .name("rocksdb-range-compaction".to_owned())
            .spawn(move || compact(&db, &ranges, &work_dir))
            .map_err(|e| Error::new(ErrorKind::Storage, "cannot start the range compaction thread").with_source(e))?;
        Ok(Self { handle })
    }

    /// Whether the compaction still runs.
    pub(crate) fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }

    /// Waits until every range is compacted.
    ///
    /// # Errors
    /// When the thread panicked.
    pub(crate) fn wait(self) -> Result<()> {
        self.handle
            .join()
            .map_err(|_| Error::new(ErrorKind::Storage, "the range compaction thread panicked"))
    }

    /// Ends the compaction early and waits for the thread: RocksDB's
    /// background work, the manual compaction included, is cancelled, so
    /// `db` must be closing.
    pub(crate) fn stop(self, db: &DB) {
        if self.is_running() {
            db.cancel_all_background_work(true);
        }
        if self.wait().is_err() {
            tracing::warn!("the range compaction thread panicked");
        }
    }
}

fn compact(db: &DB, ranges: &[ClippedRange], work_dir: &std::path::Path) {
    let started = Instant::now();
    let mut options = CompactOptions::default();
    // RocksDB's own compactions go on meanwhile; the bottom level, where
    // most of the clipped data lies, is rewritten too (files a compaction
    // of this call already wrote there are not rewritten again).
    options.set_exclusive_manual_compaction(false);
    options.set_bottommost_level_compaction(BottommostLevelCompaction::ForceOptimized);
    for range in ranges {
        // Dropped meanwhile: nothing left to compact.
        let Some(cf) = db.cf_handle(&range.column_family) else {
            continue;
        };
        db.compact_range_cf_opt(cf, Some(&range.start), Some(&range.end), &options);
    }
    tracing::debug!(
        dir = %work_dir.display(),
        ranges = ranges.len(),
        ms = started.elapsed().as_millis() as u64,
        "clipped key-group ranges compacted"
    );
}
