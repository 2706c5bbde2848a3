//! Rescaling restores on an open instance: changelog segment tables
//! ingested, key groups outside the range clipped (files dropped, range
//! deletions), key groups copied in from another old instance.

use std::path::{Path, PathBuf};

use rocksdb::{IngestExternalFileOptions, IteratorMode, ReadOptions, WriteBatch};
use streamstate_api::{Error, KeyGroupRange, Result, StateId};

use super::RocksDbKeyedStateBackend;
use crate::backend::range_compaction::ClippedRange;
use crate::errors::rocks_error;
use crate::keys;

impl RocksDbKeyedStateBackend {
    /// Ingests a changelog's segment SSTs ([`crate::snapshots::changelog`]) over this
    /// backend: `(state, path)` of each, every file of a segment before any
    /// of the next. Each file takes a sequence number above every write
    /// before it, so the files apply in the order given. The cache is
    /// written out first: what it holds is older than every segment. The
    /// files are moved into the database.
    ///
    /// # Errors
    /// RocksDB errors (a corrupt or foreign file among them), naming the
    /// file.
    pub(crate) fn ingest_segment_tables(&mut self, tables: &[(StateId, PathBuf)]) -> Result<()> {
        if tables.is_empty() {
            return Ok(());
        }
        self.wait_for_checkpoint_thread("ingesting changelog segment tables")?;
        // The segments are in the snapshot already: no changelog may build
        // on this backend until its first base.
        self.changelog = None;
        self.write_and_empty_cache()?;
        let mut options = IngestExternalFileOptions::default();
        options.set_move_files(true);
        // One ingestion per column family, its files oldest first: RocksDB
        // gives overlapping files of one ingestion increasing sequence
        // numbers in the order given.
        let mut by_state: Vec<(StateId, Vec<&Path>)> = Vec::new();
        for (id, path) in tables {
            match by_state.iter_mut().find(|(state, _)| state == id) {
                Some((_, paths)) => paths.push(path),
                None => by_state.push((*id, vec![path])),
            }
        }
        for (id, paths) in by_state {
            let cf = self.cf(&self.state(id)?.storage)?;
            self.db()?
                .ingest_external_file_cf_opts(cf, &options, paths.clone())
                .map_err(|e| {
                    let files = paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    rocks_error("ingest changelog segments", e).with_context("file", files)
                })?;
        }
        Ok(())
    }

    /// Removes every state's entries of key groups outside this backend's
    /// range: an old instance restored into a new, smaller range
    /// (rescaling, as Flink's RocksDB backend clips the instance it
    /// restores first) keeps its files and sheds the rest, instead of
    /// having the owned keys copied out one by one. Per column family, the
    /// SSTs lying wholly outside the range are dropped (no checkpoint
    /// uploads them again), then two range deletions cover what is left;
    /// they go into the WAL and memtable like any write, and compactions
    /// drop what they cover.
    ///
    /// # Errors
    /// RocksDB's.
    pub(crate) fn clip_to_own_range(&mut self) -> Result<()> {
        self.wait_for_checkpoint_thread("clipping to the key-group range")?;
        // The deletions are in no changelog: none may build on the state
        // before its next base. Cached cells need not be written first:
        // restores leave out the cells outside the range, so no deletion
        // covers a cached cell.
        self.changelog = None;
        // Key groups before the first owned one and after the last (all of
        // them for an empty range).
        let range = self.options.key_group_range;
        let after = range.start() + range.len();
        let outside = [(0, range.start()), (after, self.options.max_parallelism)];
        let outside = outside.iter().filter(|(from, to)| from < to);
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        let mut clipped = Vec::new();
        for state in &self.states {
            let cf = self.cf(&state.storage)?;
            for &(from, to) in outside.clone() {
                let (first_key, end_key) = (keys::key_group_start(from), keys::key_group_start(to));
                // Both bounds are inclusive. Every key of a dropped file lies
                // in the range deletion below, so no older version of a key
                // that a dropped file deleted or overwrote comes back.
                db.delete_file_in_range_cf(cf, &first_key, &keys::inclusive_bound_below(&end_key))
                    .map_err(|e| rocks_error("drop the files outside the key-group range", e))?;
                batch.delete_range_cf(cf, &first_key, &end_key);
                clipped.push(ClippedRange {
                    column_family: state.storage.clone(),
                    start: first_key,
                    end: end_key,
                });
            }
        }
        db.write_opt(batch, &self.write_options)
            .map_err(|e| rocks_error("clip to the key-group range", e))?;
        self.clipped.extend(clipped);
        Ok(())
    }

    /// Copies the key groups of `range` out of `source`, an old instance
    /// restored as it was: the rescaling path for every old instance but
    /// the one clipped ([`Self::clip_to_own_range`]).
    pub(crate) fn copy_key_groups_from(&mut self, source: &mut Self, range: KeyGroupRange) -> Result<()> {
        // The copy writes RocksDB directly: nothing cached may outlive it,
        // and no changelog may build on the state before it.
        self.wait_for_checkpoint_thread("copying key groups")?;
        self.changelog = None;
        self.write_and_empty_cache()?;
        source.write_and_empty_cache()?;
        let (Some(end), false) = (range.end(), range.is_empty()) else {
            return Ok(());
        };
        let source_db = source.db()?;
        for state in &source.states {
            // The copy is byte for byte: the state keeps the source's
            // layout, which must be this instance's too.
            let id = self.register_state_in(&state.meta, state.storage.clone())?;
            if self.states[id].storage != state.storage {
                return Err(Error::config(format!(
                    "state {} is stored as {} in one restored instance and as {} in another: restore from a savepoint to change the timer store",
                    state.meta.name, state.storage, self.states[id].storage
                )));
            }
            let from_cf = source.cf(&state.storage)?;
            let mut read = ReadOptions::default();
            read.set_iterate_upper_bound(keys::key_group_start(end + 1));
            let lower = keys::key_group_start(range.start());
            let mut batch = WriteBatch::default();
            let to_cf = self.cf(&self.states[id].storage)?;
            for item in
                source_db.iterator_cf_opt(from_cf, read, IteratorMode::From(&lower, rocksdb::Direction::Forward))
            {
                let (k, v) = item.map_err(|e| rocks_error("read", e))?;
                batch.put_cf(to_cf, k, v);
                if batch.len() >= 10_000 {
                    self.db()?
                        .write_opt(std::mem::take(&mut batch), &self.write_options)
                        .map_err(|e| rocks_error("write", e))?;
                }
            }
            self.db()?
                .write_opt(batch, &self.write_options)
                .map_err(|e| rocks_error("write", e))?;
        }
        Ok(())
    }
}
