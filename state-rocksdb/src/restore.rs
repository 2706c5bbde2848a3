//! Restore: downloads a native handle's files (checksums verified, four at
//! a time), opens them as the new instance's database, lays changelog and
//! pending-cell overlays over it, and at another parallelism clips the
//! instance sharing the most key groups and copies the owned key groups of
//! every other one in.

use std::path::{Path, PathBuf};

use streamstate_api::{
    CheckpointStorage, Error, KeyedBackendOptions, KeyedStateBackend, KeyedStateHandle, Result, SnapshotFormat,
};

use crate::backend::RocksDbKeyedStateBackend;
use crate::factory::RocksDbStateBackend;
use crate::files::{create_dir, remove_dir, NAME_SEPARATOR};
use crate::snapshots::changelog;
use crate::write_path::pending_cells;

/// The local file name of a stored native file (`<owner>~<name>`).
fn local_name(path: &str) -> Result<&str> {
    let last = path.rsplit('/').next().unwrap_or(path);
    let name = last.rsplit(NAME_SEPARATOR).next().unwrap_or(last);
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::corrupt(format!(
            "native snapshot file {path:?} has no usable local name"
        )));
    }
    Ok(name)
}

/// The files of a native handle that are not RocksDB's own, downloaded
/// ([`download`]): what is laid over its database, in this order.
struct Overlays {
    /// Files of cell writes (stored path and bytes), kept in memory: the
    /// pending cells, then changelog segments of an earlier version.
    cell_files: Vec<(String, Vec<u8>)>,
    /// Where the changelog segments' SSTs were downloaded to, removed once
    /// they are ingested.
    tables_dir: PathBuf,
    /// The segments' SSTs in the order they apply: the index of their state
    /// in the handle's states, and the local path.
    segment_tables: Vec<(usize, PathBuf)>,
}

impl Overlays {
    fn is_empty(&self) -> bool {
        self.cell_files.is_empty() && self.segment_tables.is_empty()
    }
}

/// Downloads (checksums verified) the files of `handle` for an instance in
/// `dir`, four at a time: RocksDB's files into `dir/db`, the changelog
/// segments' SSTs into `dir/changelog`, and the files of cell writes into
/// memory.
fn download(storage: &CheckpointStorage, handle: &KeyedStateHandle, dir: &Path) -> Result<Overlays> {
    let db_dir = dir.join("db");
    let tables_dir = dir.join("changelog");
    create_dir(&db_dir)?;
    let mut pending = None;
    let mut legacy_segments: Vec<(&str, &streamstate_api::FileRef)> = Vec::new();
    let mut segment_tables = Vec::new();
    let mut chunks: Vec<Vec<(&streamstate_api::FileRef, PathBuf)>> = vec![Vec::new(); 4];
    for (i, f) in handle.files.iter().enumerate() {
        let name = local_name(&f.path)?;
        let local = if name == pending_cells::PENDING_CELLS_FILE {
            pending = Some(f);
            continue;
        } else if let Some(state) = changelog::segment_table_state(name) {
            let local = tables_dir.join(name);
            segment_tables.push((state, local.clone()));
            local
        } else if name.starts_with(changelog::SEGMENT_FILE_PREFIX) {
            legacy_segments.push((name, f));
            continue;
        } else {
            db_dir.join(name)
        };
        chunks[i % 4].push((f, local));
    }
    if !segment_tables.is_empty() {
        create_dir(&tables_dir)?;
    }
    // Segment names begin with their zero-padded piece numbers.
    legacy_segments.sort_by_key(|(name, _)| *name);
    segment_tables.sort_by(|a, b| a.1.cmp(&b.1));
    let cell_files = pending
        .into_iter()
        .chain(legacy_segments.into_iter().map(|(_, f)| f))
        .map(|file| storage.read_verified(file).map(|bytes| (file.path.clone(), bytes)))
        .collect::<Result<Vec<_>>>()?;
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|files| {
                scope.spawn(move || -> Result<()> {
                    for (file, local) in files {
                        // A part at a time: a WAL copy reaches 64 MiB,
                        // compaction outputs 16 MiB.
                        storage.read_verified_into(file, &local)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .unwrap_or_else(|_| Err(Error::invalid_argument("a download thread panicked")))?;
        }
        Ok::<(), Error>(())
    })?;
    Ok(Overlays {
        cell_files,
        tables_dir,
        segment_tables,
    })
}

/// Lays a native handle's [`Overlays`] over `backend`, opened on its
/// RocksDB files. The states a changelog segment writes may have been
/// registered after its base was made, so every state of the handle is
/// registered first.
fn lay_overlays(backend: &mut RocksDbKeyedStateBackend, handle: &KeyedStateHandle, overlays: Overlays) -> Result<()> {
    if overlays.is_empty() {
        return Ok(());
    }
    let ids = handle
        .states
        .iter()
        .map(|meta| backend.register_state(meta))
        .collect::<Result<Vec<_>>>()?;
    for (file, bytes) in overlays.cell_files {
        backend.apply_cell_writes(&bytes, &file)?;
    }
    let tables = overlays
        .segment_tables
        .into_iter()
        .map(|(index, path)| {
            let id = ids.get(index).copied().ok_or_else(|| {
                Error::corrupt(format!(
                    "a changelog segment of state index {index}; the snapshot has {} states",
                    ids.len()
                ))
                .with_context("file", path.display().to_string())
            })?;
            Ok((id, path))
        })
        .collect::<Result<Vec<_>>>()?;
    let ingested = backend.ingest_segment_tables(&tables);
    remove_dir(&overlays.tables_dir);
    ingested
}

impl RocksDbStateBackend {
    /// Restores the key groups of `options` from `handles`: the typed
    /// [`streamstate_api::StateBackend::restore_keyed_backend`].
    ///
    /// # Errors
    /// As that.
    pub fn restore(
        &self,
        options: KeyedBackendOptions,
        handles: &[KeyedStateHandle],
        storage: &CheckpointStorage,
    ) -> Result<RocksDbKeyedStateBackend> {
        let range = options.key_group_range;
        let wanted: Vec<&KeyedStateHandle> = handles
            .iter()
            .filter(|h| !h.key_group_range.intersection(&range).is_empty())
            .collect();
        let native: Vec<&KeyedStateHandle> = wanted
            .iter()
            .copied()
            .filter(|h| h.format == SnapshotFormat::Native)
            .collect();
        let canonical: Vec<KeyedStateHandle> = wanted
            .iter()
            .copied()
            .filter(|h| h.format == SnapshotFormat::Canonical)
            .cloned()
            .collect();
        // The old instance sharing the most key groups with `range` is
        // restored into this instance's directory, its files opened as
        // they are; on another range (rescaling) it is clipped to `range`.
        // Every other old instance is restored as it was, in a directory of
        // its own, and the owned key groups are copied out of it.
        let base = (0..native.len()).max_by_key(|&i| native[i].key_group_range.intersection(&range).len());
        let mut backend = match base {
            Some(i) => {
                let handle = native[i];
                let mut backend = self.restore_native(options.clone(), handle, storage)?;
                // Only when it holds key groups outside `range`: a range
                // tombstone costs every read a check until compacted away.
                if handle.key_group_range.intersection(&range) != handle.key_group_range {
                    backend.clip_to_own_range()?;
                }
                backend
            }
            None => self.create(options.clone())?,
        };
        for (_, handle) in native.iter().enumerate().filter(|&(i, _)| Some(i) != base) {
            let old_options = KeyedBackendOptions {
                key_group_range: handle.key_group_range,
                ..options.clone()
            };
            let mut old = self.restore_native(old_options, handle, storage)?;
            backend.copy_key_groups_from(&mut old, handle.key_group_range.intersection(&range))?;
        }
        streamstate_api::snapshot::canonical::restore_into(&mut backend, &canonical, storage)?;
        backend.start_flushing_restored_memtables()?;
        backend.start_compacting_clipped_ranges()?;
        Ok(backend)
    }

    /// Restores the instance of `handle` into a new working directory:
    /// downloads its files, opens them and lays its overlays over them.
    /// With `options` owning the handle's key groups, as it was; with
    /// another range, the overlays' cells outside it are left out and
    /// the caller clips the rest
    /// ([`RocksDbKeyedStateBackend::clip_to_own_range`]).
    fn restore_native(
        &self,
        options: KeyedBackendOptions,
        handle: &KeyedStateHandle,
        storage: &CheckpointStorage,
    ) -> Result<RocksDbKeyedStateBackend> {
        let dir = self.instance_dir(&options)?;
        let started = std::time::Instant::now();
        let overlays = match download(storage, handle, &dir) {
            Ok(overlays) => overlays,
            Err(e) => {
                remove_dir(&dir);
                return Err(e);
            }
        };
        let downloaded = started.elapsed();
        let segments = overlays.segment_tables.len();
        // Dropping the backend on an error removes its directory.
        let mut backend = self.open_or_remove(dir, options)?;
        let opened = started.elapsed();
        lay_overlays(&mut backend, handle, overlays)?;
        tracing::debug!(
            download_ms = downloaded.as_millis() as u64,
            open_ms = (opened - downloaded).as_millis() as u64,
            overlays_ms = (started.elapsed() - opened).as_millis() as u64,
            segment_tables = segments,
            "rocksdb restore"
        );
        Ok(backend)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use streamstate_api::codec::{encode_value, encode_value_into};
    use streamstate_api::key_group::assign_to_key_group;
    use streamstate_api::testkit::{checkpoint_target, dump, StateDump, StorageFixture};
    use streamstate_api::{KeyGroupRange, KeyedStateBackendExt, SnapshotTarget, ValueStateDescriptor};

    use std::sync::Arc;

    use super::*;
    use crate::keys;
    use crate::{RocksDbConfig, RocksDbStateBackend};
    use streamstate_api::StateBackend;

    const MAX_PARALLELISM: u32 = 16;

    /// The `.log` files of a snapshot.
    fn wal_files(handle: &KeyedStateHandle) -> usize {
        handle.files.iter().filter(|f| f.path.ends_with(".log")).count()
    }

    /// A job restored and checkpointed again and again (a job that fails
    /// soon after every restore) does not restore a longer chain of WAL
    /// files each time: replayed WAL files are flushed after the restore,
    /// and never kept at open beyond a bound.
    #[test]
    fn restores_in_a_row_do_not_chain_wal_files() {
        let fixture = StorageFixture::local_dir();
        let storage = &fixture.storage;
        let rocks = RocksDbStateBackend::default();
        let options = KeyedBackendOptions::new("walchain", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        let mut keyed = rocks.create(options.clone()).unwrap();
        let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
        let mut expected = BTreeMap::new();
        for round in 1..=12u64 {
            for word in round..round + 200 {
                keyed.set_current_key_typed(&word).unwrap();
                let count = counts.value(&mut keyed).unwrap().unwrap_or(0) + 1;
                counts.update(&mut keyed, &count).unwrap();
                expected.insert(word, count);
            }
            let target = checkpoint_target("walchain", round, SnapshotFormat::Native, true, "op-0");
            let taken = keyed.snapshot(&target).unwrap().write(storage, &target).unwrap();
            assert!(
                wal_files(&taken) <= crate::options::MAX_WAL_FILES_KEPT_AT_OPEN + 2,
                "checkpoint {round} holds {} WAL files: {:?}",
                wal_files(&taken),
                taken.files
            );
            keyed = rocks
                .restore(options.clone(), std::slice::from_ref(&taken), storage)
                .unwrap();
        }
        let restored: BTreeMap<u64, u64> = expected
            .keys()
            .map(|&word| {
                keyed.set_current_key_typed(&word).unwrap();
                (word, counts.value(&mut keyed).unwrap().unwrap())
            })
            .collect();
        assert_eq!(restored, expected);
    }

    /// A working directory whose WAL holds more files than a restore keeps
    /// replayed in memtables is flushed while it opens: the WAL files go,
    /// the state stays.
    #[test]
    fn opening_a_long_chain_of_wal_files_flushes_it() {
        let rocks = RocksDbStateBackend::new(RocksDbConfig {
            write_back_entries: 0,
            ..RocksDbConfig::default()
        });
        let options = KeyedBackendOptions::new("walopen", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        let mut keyed = rocks.create(options.clone()).unwrap();
        let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
        let cf_name = crate::options::state_cf("count");
        // A write to the default family that is never flushed keeps every
        // later WAL file live; each flush of the state's family starts one.
        keyed.db().unwrap().put(b"pinned", b"1").unwrap();
        for word in 0..(crate::options::MAX_WAL_FILES_KEPT_AT_OPEN as u64 + 4) {
            keyed.set_current_key_typed(&word).unwrap();
            counts.update(&mut keyed, &word).unwrap();
            let db = keyed.db().unwrap();
            db.flush_cf(db.cf_handle(&cf_name).unwrap()).unwrap();
        }
        let expected = dump(&mut keyed).unwrap();
        let copy = tempfile::tempdir().unwrap();
        let copy_db = copy.path().join("db");
        rocksdb::checkpoint::Checkpoint::new(keyed.db().unwrap())
            .and_then(|c| c.create_checkpoint_with_log_size(&copy_db, u64::MAX))
            .unwrap();
        let copied = crate::options::count_wal_files(&copy_db);
        assert!(
            copied > crate::options::MAX_WAL_FILES_KEPT_AT_OPEN,
            "{copied} WAL files copied"
        );

        let mut reopened =
            RocksDbKeyedStateBackend::open(copy.path().to_path_buf(), options, Arc::clone(&rocks.resources)).unwrap();
        let kept = crate::options::count_wal_files(&copy_db);
        assert!(kept <= 2, "{kept} of {copied} WAL files kept at open");
        assert_eq!(
            reopened.db().unwrap().get(b"pinned").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(dump(&mut reopened).unwrap(), expected);
    }

    /// A restore into half of the old key groups drops the old instance's
    /// SSTs that lie wholly in the other half (no checkpoint uploads them
    /// again) and reads exactly its own keys.
    #[test]
    fn a_rescaling_restore_drops_the_files_outside_its_range() {
        let fixture = StorageFixture::local_dir();
        let storage = &fixture.storage;
        let rocks = RocksDbStateBackend::new(RocksDbConfig {
            write_back_entries: 0,
            ..RocksDbConfig::default()
        });
        let half = MAX_PARALLELISM / 2;
        let (lower, upper) = (
            KeyGroupRange::new(0, half - 1),
            KeyGroupRange::new(half, MAX_PARALLELISM - 1),
        );
        let options = KeyedBackendOptions::new("clip", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        let mut keyed = rocks.create(options.clone()).unwrap();
        let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
        let cf_name = crate::options::state_cf("count");
        // One SST per half at the bottom level: each half written,
        // flushed and compacted on its own.
        for part in [lower, upper] {
            for word in 0..2000u64 {
                keyed.set_current_key_typed(&word).unwrap();
                if part.contains(keyed.current_key_group()) {
                    counts.update(&mut keyed, &word).unwrap();
                }
            }
            let db = keyed.db().unwrap();
            let cf = db.cf_handle(&cf_name).unwrap();
            db.flush_cf(cf).unwrap();
            db.compact_range_cf(cf, Some(keys::key_group_start(part.start())), None::<&[u8]>);
        }
        let file_ranges = |db: &rocksdb::DB| -> Vec<(Vec<u8>, Vec<u8>)> {
            let mut ranges: Vec<_> = db
                .live_files()
                .unwrap()
                .into_iter()
                .filter(|f| f.column_family_name == cf_name)
                .map(|f| (f.start_key.unwrap(), f.end_key.unwrap()))
                .collect();
            ranges.sort();
            ranges
        };
        let upper_start = keys::key_group_start(half);
        let before = file_ranges(keyed.db().unwrap());
        assert_eq!(before.len(), 2, "one file per half: {before:?}");
        assert!(before[0].1 < upper_start && before[1].0 >= upper_start, "{before:?}");
        let expected: StateDump = dump(&mut keyed)
            .unwrap()
            .into_iter()
            .filter(|((_, key), _)| upper.contains(assign_to_key_group(key, MAX_PARALLELISM)))
            .collect();
        assert!(!expected.is_empty());
        let target: SnapshotTarget = checkpoint_target("clip", 1, SnapshotFormat::Native, true, "op-0");
        let handle = keyed.snapshot(&target).unwrap().write(storage, &target).unwrap();

        let upper_options = KeyedBackendOptions {
            key_group_range: upper,
            ..options
        };
        let mut restored = rocks.restore(upper_options, &[handle], storage).unwrap();
        assert_eq!(file_ranges(restored.db().unwrap()), before[1..].to_vec());
        assert_eq!(dump(&mut restored).unwrap(), expected);
    }

    /// A rescaling restore compacts the ranges it clipped away in the
    /// background: a file spanning every key group is rewritten to hold
    /// the new range's keys only. With `compact_clipped_ranges` off it
    /// keeps the clipped keys (under a range deletion).
    #[test]
    fn a_rescaling_restore_compacts_the_ranges_it_clipped() {
        let fixture = StorageFixture::local_dir();
        let storage = &fixture.storage;
        let half = MAX_PARALLELISM / 2;
        let upper = KeyGroupRange::new(half, MAX_PARALLELISM - 1);
        let upper_start = keys::key_group_start(half);
        let cf_name = crate::options::state_cf("count");
        let options = KeyedBackendOptions::new("compact", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        for compact in [true, false] {
            let rocks = RocksDbStateBackend::new(RocksDbConfig {
                write_back_entries: 0,
                compact_clipped_ranges: compact,
                ..RocksDbConfig::default()
            });
            let mut keyed = rocks.create(options.clone()).unwrap();
            let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
            for word in 0..2000u64 {
                keyed.set_current_key_typed(&word).unwrap();
                counts.update(&mut keyed, &word).unwrap();
            }
            let db = keyed.db().unwrap();
            let cf = db.cf_handle(&cf_name).unwrap();
            db.flush_cf(cf).unwrap();
            db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            let expected: StateDump = dump(&mut keyed)
                .unwrap()
                .into_iter()
                .filter(|((_, key), _)| upper.contains(assign_to_key_group(key, MAX_PARALLELISM)))
                .collect();
            let target: SnapshotTarget = checkpoint_target("compact", 1, SnapshotFormat::Native, true, "op-0");
            let handle = keyed.snapshot(&target).unwrap().write(storage, &target).unwrap();

            let upper_options = KeyedBackendOptions {
                key_group_range: upper,
                ..options.clone()
            };
            let mut restored = rocks.restore(upper_options, &[handle], storage).unwrap();
            restored.wait_for_range_compaction().unwrap();
            let starts: Vec<Vec<u8>> = restored
                .db()
                .unwrap()
                .live_files()
                .unwrap()
                .into_iter()
                .filter(|f| f.column_family_name == cf_name)
                .map(|f| f.start_key.unwrap())
                .collect();
            assert!(!starts.is_empty());
            let clipped_keys_kept = starts.iter().any(|start| *start < upper_start);
            assert_eq!(
                clipped_keys_kept, !compact,
                "compact_clipped_ranges {compact}: files start at {starts:?}"
            );
            assert_eq!(dump(&mut restored).unwrap(), expected);
        }
    }

    /// A segment of the version before segments became SSTs: one file of
    /// cell writes, replayed over the base (checkpoints retained from that
    /// version still restore).
    #[test]
    fn a_segment_of_cell_writes_from_an_earlier_version_is_replayed_over_its_base() {
        let fixture = StorageFixture::local_dir();
        let storage = &fixture.storage;
        // No write-back cache, so no pending cells: a base of this version
        // writes those as SSTs, one of that version as a file of cell
        // writes; without them the two are alike.
        let rocks = RocksDbStateBackend::new(RocksDbConfig {
            changelog: true,
            write_back_entries: 0,
            ..RocksDbConfig::default()
        });
        let options = KeyedBackendOptions::new("legacy", "op", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
        let mut keyed = rocks.create(options.clone()).unwrap();
        let counts = keyed.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
        for word in 0..100u64 {
            keyed.set_current_key_typed(&word).unwrap();
            counts.update(&mut keyed, &word).unwrap();
        }
        let target: SnapshotTarget = checkpoint_target("legacy", 1, SnapshotFormat::Native, true, "op-0");
        let mut handle = keyed.snapshot(&target).unwrap().write(storage, &target).unwrap();

        // What that version wrote for keys 0..10 counted up to 1000 + key.
        let mut segment = pending_cells::PendingCellsWriter::new(&["count"], 10);
        for word in 0..10u64 {
            keyed.set_current_key_typed(&word).unwrap();
            counts.update(&mut keyed, &(1000 + word)).unwrap();
            let mut serialized = Vec::new();
            encode_value_into(&word, &mut serialized).unwrap();
            let mut rocks_key = Vec::new();
            keys::put_key_group(&mut rocks_key, assign_to_key_group(&serialized, MAX_PARALLELISM));
            rocks_key.extend_from_slice(&serialized);
            segment.add(0, &rocks_key, Some(&encode_value(&(1000 + word)).unwrap()));
        }
        let expected = dump(&mut keyed).unwrap();
        let name = format!("old-g1{}{}000000000001", NAME_SEPARATOR, changelog::SEGMENT_FILE_PREFIX);
        handle
            .files
            .push(storage.write(&target.shared_file(&name), segment.finish()).unwrap());

        let mut restored = rocks
            .restore_keyed_backend(options, std::slice::from_ref(&handle), storage)
            .unwrap();
        assert_eq!(dump(restored.as_mut()).unwrap(), expected);
    }
}
