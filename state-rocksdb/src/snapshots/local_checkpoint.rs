//! Making a snapshot's local RocksDB checkpoint: the directory of hard links
//! (SSTs, the finished WAL) and copies (MANIFEST, the current WAL) that the
//! asynchronous phase uploads.
//!
//! RocksDB's `Checkpoint` syncs every file it copies and the directory, and
//! those `fsync`s were the tail of the synchronous pause, and its worst
//! case when the disk stalled (docs/BENCHMARKS.md). A native
//! checkpoint therefore makes it on a [`CheckpointThread`] of its own:
//! the task thread only copies the write-back cache's dirty cells (its
//! pause) and goes on processing. What makes that exact is that RocksDB
//! does not change until the checkpoint is made: the task thread holds
//! back every write to RocksDB meanwhile (the write-back cache absorbs
//! them, a little beyond its limits; anything else waits for the thread,
//! [`crate::RocksDbKeyedStateBackend`]). Reads go on, RocksDB is safe to
//! read from one thread while another makes a checkpoint.
//!
//! Canonical snapshots (savepoints) make the checkpoint on the task thread
//! with the same [`make_checkpoint`].

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamily, FlushOptions, DB};
use streamstate_api::{Error, ErrorKind, Result};

use crate::errors::rocks_error;
use crate::files::DirGuard;

/// `log_size_for_flush` for checkpoints: never flush, copy the WAL instead.
const CHECKPOINT_WITHOUT_FLUSH: u64 = u64::MAX;

/// What a checkpoint does with the memtables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Memtables {
    /// Switched and flushed in the background; the checkpoint holds them
    /// as its WAL copy: the checkpoint waits for nothing.
    InWal,
    /// Flushed first, waiting, so the checkpoint's WAL holds almost
    /// nothing: a changelog's base, whose restore ingests the segments'
    /// SSTs, which would otherwise flush the memtables replayed from the
    /// WAL first, after replaying them: a third of such a restore
    /// (docs/BENCHMARKS.md).
    Flushed,
}

/// Makes a RocksDB checkpoint of `db` in `dir`: starts a background flush
/// of `families` (unless the previous one still runs), which switches the
/// memtables to a new WAL; syncs the WAL; then RocksDB's checkpoint: hard
/// links to the SSTs and to the finished WAL, which holds what the switched
/// memtables hold, and a copy of the new, nearly empty one. Flink's
/// checkpoint flushes the memtables instead, which makes it grow with them
/// (tens to hundreds of ms). With [`Memtables::Flushed`] the flush is
/// waited for instead. `work_dir` names the database in errors.
///
/// # Errors
/// RocksDB's, naming `dir` or `work_dir`; `dir` is then removed.
pub(crate) fn make_checkpoint(
    db: &DB,
    families: &[&ColumnFamily],
    work_dir: &Path,
    dir: DirGuard,
    memtables: Memtables,
) -> Result<DirGuard> {
    let started = Instant::now();
    let flush_running = previous_flush_running(db, families, work_dir)?;
    let flush_check_done = started.elapsed();
    match memtables {
        Memtables::InWal if !flush_running => start_background_flush(db, families, work_dir)?,
        Memtables::InWal => {}
        Memtables::Flushed => flush_and_wait(db, families, work_dir)?,
    }
    let flush_started = started.elapsed();
    // Synced, not only written: measured against `flush_wal(false)`
    // (docs/BENCHMARKS.md), the checkpoint's own copy and syncs then take
    // longer than this sync saves.
    db.flush_wal(true)
        .map_err(|e| rocks_error("sync the WAL", e).with_context("dir", work_dir.display().to_string()))?;
    let wal_done = started.elapsed();
    Checkpoint::new(db)
        .and_then(|c| c.create_checkpoint_with_log_size(&dir.0, CHECKPOINT_WITHOUT_FLUSH))
        .map_err(|e| rocks_error("checkpoint", e).with_context("file", dir.0.display().to_string()))?;
    tracing::debug!(
        flush_check_us = flush_check_done.as_micros() as u64,
        previous_flush_running = flush_running,
        flush_start_us = (flush_started - flush_check_done).as_micros() as u64,
        wal_us = (wal_done - flush_started).as_micros() as u64,
        checkpoint_us = (started.elapsed() - wal_done).as_micros() as u64,
        "rocksdb checkpoint made"
    );
    Ok(dir)
}

/// Whether memtables switched earlier (by the previous checkpoint, or by
/// RocksDB when one filled) are still being flushed. Normally none is: a
/// flush takes milliseconds, the checkpoint interval is seconds. When one
/// is, the checkpoint does not wait for it (that wait was the longest pause
/// measured): its WAL copy then also holds the unflushed interval,
/// and it starts no flush of its own, so at most one checkpoint's memtables
/// are ever waiting (RocksDB stalls writes beyond `max_write_buffer_number`
/// anyway).
///
/// A flush that failed (RocksDB reports a background error, e.g. a full
/// disk) is retried here with a waiting flush, which returns RocksDB's
/// error: the checkpoint fails naming the working directory.
pub(crate) fn previous_flush_running(db: &DB, families: &[&ColumnFamily], work_dir: &Path) -> Result<bool> {
    let property = |cf: Option<&ColumnFamily>, name: &str| -> Result<u64> {
        let value = match cf {
            Some(cf) => db.property_int_value_cf(cf, name),
            None => db.property_int_value(name),
        };
        Ok(value.map_err(|e| rocks_error("read a property", e))?.unwrap_or(0))
    };
    let mut pending = 0;
    for cf in families {
        pending += property(Some(cf), "rocksdb.num-immutable-mem-table")?;
    }
    if pending == 0 {
        return Ok(false);
    }
    if property(None, "rocksdb.background-errors")? == 0 {
        return Ok(true);
    }
    tracing::warn!(
        dir = %work_dir.display(),
        "RocksDB reported a background error with a flush pending; flushing and waiting"
    );
    flush_and_wait(db, families, work_dir)?;
    Ok(false)
}

/// Flushes every column family's memtables and waits until they are
/// written (a flush already running included).
fn flush_and_wait(db: &DB, families: &[&ColumnFamily], work_dir: &Path) -> Result<()> {
    let mut options = FlushOptions::default();
    options.set_wait(true);
    db.flush_cfs_opt(families, &options)
        .map_err(|e| rocks_error("flush", e).with_context("dir", work_dir.display().to_string()))
}

/// Starts flushing every column family's memtable without waiting: the
/// memtables are switched now (so later writes go to new ones and a new WAL
/// file), the flush itself runs on RocksDB's background threads.
pub(crate) fn start_background_flush(db: &DB, families: &[&ColumnFamily], work_dir: &Path) -> Result<()> {
    let mut options = FlushOptions::default();
    options.set_wait(false);
    db.flush_cfs_opt(families, &options)
        .map_err(|e| rocks_error("flush", e).with_context("dir", work_dir.display().to_string()))
}

/// A thread making one native snapshot's RocksDB checkpoint
/// ([`make_checkpoint`]). RocksDB must not be written until it has
/// finished ([`CheckpointThread::wait`]); its result goes to the snapshot's
/// asynchronous phase through the receiver [`CheckpointThread::start`]
/// returns.
#[derive(Debug)]
pub(crate) struct CheckpointThread {
    handle: JoinHandle<()>,
}

impl CheckpointThread {
    /// Starts making a checkpoint of `db` (its column families named
    /// `families`) in `dir`, treating the memtables as `memtables` says.
    ///
    /// # Errors
    /// Storage when the thread cannot be started.
    pub(crate) fn start(
        db: Arc<DB>,
        families: Vec<String>,
        work_dir: PathBuf,
        dir: DirGuard,
        memtables: Memtables,
    ) -> Result<(Self, Receiver<Result<DirGuard>>)> {
        // One slot: the thread never waits for the asynchronous phase. A
        // snapshot dropped unwritten drops the receiver, and with it (or
        // with the failed send) the directory.
        let (made, receiver) = sync_channel(1);
        let handle = std::thread::Builder::new()
            .name("rocksdb-checkpoint".into())
            .spawn(move || {
                let families: Vec<&ColumnFamily> = families.iter().filter_map(|name| db.cf_handle(name)).collect();
                let result = make_checkpoint(&db, &families, &work_dir, dir, memtables);
                drop(families);
                // The database is released before the task thread can see
                // this thread finished: it may then need it exclusively.
                drop(db);
                let _ = made.send(result);
            })
            .map_err(|e| {
                Error::new(ErrorKind::Storage, "cannot start a thread for a RocksDB checkpoint").with_source(e)
            })?;
        Ok((Self { handle }, receiver))
    }

    /// Whether the checkpoint is still being made.
    pub(crate) fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }

    /// Waits until the checkpoint is made (or failed: the snapshot reports
    /// that), and returns how long this waited.
    ///
    /// # Errors
    /// Storage when the thread panicked.
    pub(crate) fn wait(self) -> Result<Duration> {
        let started = Instant::now();
        self.handle
            .join()
            .map_err(|_| Error::new(ErrorKind::Storage, "the thread making a RocksDB checkpoint panicked"))?;
        Ok(started.elapsed())
    }
}
