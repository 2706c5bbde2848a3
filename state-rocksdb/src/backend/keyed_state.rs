//! The [`KeyedStateBackend`] contract on RocksDB: cells, lists, maps and
//! iteration through the write-back cache, prefetch by `MultiGet`, and the
//! synchronous phase of native, changelog and canonical snapshots.

use super::*;

impl KeyedStateBackend for RocksDbKeyedStateBackend {
    fn backend_name(&self) -> &'static str {
        "rocksdb"
    }

    fn approximate_entries(&self) -> Option<u64> {
        self.estimated_keys()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            write_back_cache: self.write_back.enabled(),
            ..ROCKSDB_CAPABILITIES
        }
    }

    fn options(&self) -> &KeyedBackendOptions {
        &self.options
    }

    fn register_state(&mut self, meta: &StateMeta) -> Result<StateId> {
        let cf = self.new_state_cf(meta);
        self.register_state_in(meta, cf)
    }

    fn registered_states(&self) -> Vec<StateMeta> {
        self.states.metas()
    }

    fn set_current_key(&mut self, serialized_key: &[u8]) -> Result<()> {
        let (_, key_group) = select_key(serialized_key, &self.options)?;
        self.current_key.clear();
        self.current_key.extend_from_slice(serialized_key);
        self.current_key_group = key_group;
        self.cell_key.clear();
        keys::put_key_group(&mut self.cell_key, key_group);
        self.cell_key.extend_from_slice(serialized_key);
        keys::map_prefix(&mut self.map_prefix, key_group, serialized_key);
        Ok(())
    }

    fn current_key(&self) -> &[u8] {
        &self.current_key
    }

    fn current_key_group(&self) -> u32 {
        self.current_key_group
    }

    /// Reads the cells of the keys the write-back cache does not hold in
    /// one `MultiGet` and caches them, clean (absent ones as absent), so
    /// the reads and writes that follow find them there. RocksDB's batched
    /// lookup searches each memtable and file once for the group, its
    /// filters and index blocks loaded once, where single gets repeat that
    /// work per key. Only as many keys as the cache has room for: a
    /// prefetch never makes the cache write and empty itself.
    fn prefetch(&mut self, state: StateId, serialized_keys: &[&[u8]]) -> u64 {
        let Self {
            db,
            states,
            options,
            write_back,
            prefetch_keys,
            prefetch_ends,
            ..
        } = self;
        let (Some(db), Ok(meta)) = (db.as_deref(), states.get(state)) else {
            return 0;
        };
        if !write_back.enabled() || meta.meta.stores_map() {
            return 0;
        }
        let Some(cf) = db.cf_handle(&meta.storage) else {
            return 0;
        };
        prefetch_keys.clear();
        prefetch_ends.clear();
        for key in serialized_keys.iter().take(write_back.room()) {
            let key_group = assign_to_key_group(key, options.max_parallelism);
            if key.is_empty() || !options.key_group_range.contains(key_group) {
                continue;
            }
            let start = prefetch_keys.len();
            keys::put_key_group(prefetch_keys, key_group);
            prefetch_keys.extend_from_slice(key);
            if let Buffered::Known(_) = write_back.get(state, &prefetch_keys[start..]) {
                prefetch_keys.truncate(start);
            } else {
                prefetch_ends.push(prefetch_keys.len());
            }
        }
        if prefetch_ends.len() < 2 {
            // One key gains nothing from a batch: its get reads it.
            return 0;
        }
        let cell_keys = || {
            prefetch_ends.iter().scan(0, |start, &end| {
                Some(&prefetch_keys[std::mem::replace(start, end)..end])
            })
        };
        let values = db.batched_multi_get_cf(cf, cell_keys(), false);
        let mut word = 0;
        for (cell_key, value) in cell_keys().zip(values) {
            // A failed read is left to the get that follows, which
            // reports it.
            if let Ok(value) = value {
                word ^= value.as_ref().map_or(0, |v| v.len() as u64);
                write_back.insert_clean(state, cell_key, value.as_deref());
            }
        }
        word
    }

    fn get(&self, state: StateId) -> Result<Option<Cow<'_, [u8]>>> {
        self.require_key()?;
        let cf = self.cell_cf(state)?;
        if let Buffered::Known(value) = self.write_back.get(state, &self.cell_key) {
            return Ok(value.map(Cow::Borrowed));
        }
        Ok(self
            .db()?
            .get_pinned_cf(cf, &self.cell_key)
            .map_err(|e| rocks_error("get", e))?
            .map(|v| Cow::Owned(v.to_vec())))
    }

    fn put(&mut self, state: StateId, value: &[u8]) -> Result<()> {
        self.require_key()?;
        self.cell_cf(state)?;
        if self.write_back.enabled() {
            return self.buffer_cell(state, Some(value));
        }
        self.wait_for_checkpoint_thread("a put with the write-back cache off")?;
        let cf = self.cell_cf(state)?;
        self.db()?
            .put_cf_opt(cf, &self.cell_key, value, &self.write_options)
            .map_err(|e| rocks_error("put", e))?;
        log_write(&mut self.changelog, state, &self.cell_key, WriteOp::Put(value));
        Ok(())
    }

    fn append(&mut self, state: StateId, bytes: &[u8]) -> Result<()> {
        self.require_key()?;
        self.cell_cf(state)?;
        if self.write_back.append(state, &self.cell_key, bytes) {
            return Ok(());
        }
        self.wait_for_checkpoint_thread("a merge into an uncached cell")?;
        let cf = self.cell_cf(state)?;
        self.db()?
            .merge_cf_opt(cf, &self.cell_key, bytes, &self.write_options)
            .map_err(|e| rocks_error("merge", e))?;
        log_write(&mut self.changelog, state, &self.cell_key, WriteOp::Append(bytes));
        Ok(())
    }

    fn clear(&mut self, state: StateId) -> Result<()> {
        self.require_key()?;
        let is_map = self.state(state)?.meta.stores_map();
        if is_map || !self.write_back.enabled() {
            self.wait_for_checkpoint_thread("clearing a state")?;
        }
        if is_map && self.timers_in_time_order(state) {
            self.clear_current_key_timers(state)
        } else if is_map {
            let cf = self.map_cf(state)?;
            let end = keys::prefix_successor(&self.map_prefix).unwrap_or_else(|| vec![0xff; self.map_prefix.len() + 1]);
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, self.map_prefix.as_slice(), end.as_slice());
            self.db()?
                .write_opt(batch, &self.write_options)
                .map_err(|e| rocks_error("delete range", e))?;
            log_write(&mut self.changelog, state, &self.map_prefix, WriteOp::RemoveRange(&end));
            Ok(())
        } else if self.write_back.enabled() {
            self.cell_cf(state)?;
            self.buffer_cell(state, None)
        } else {
            let cf = self.cell_cf(state)?;
            self.db()?
                .delete_cf_opt(cf, &self.cell_key, &self.write_options)
                .map_err(|e| rocks_error("delete", e))?;
            log_write(&mut self.changelog, state, &self.cell_key, WriteOp::Remove);
            Ok(())
        }
    }

    fn map_get(&self, state: StateId, user_key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        self.require_key()?;
        let cf = self.map_cf(state)?;
        let mut key = Vec::new();
        self.map_key(state, user_key, &mut key)?;
        Ok(self
            .db()?
            .get_pinned_cf(cf, &key)
            .map_err(|e| rocks_error("get", e))?
            .map(|v| Cow::Owned(v.to_vec())))
    }

    fn map_put(&mut self, state: StateId, user_key: &[u8], value: &[u8]) -> Result<()> {
        self.require_key()?;
        let mut key = std::mem::take(&mut self.scratch);
        let built = self.map_key(state, user_key, &mut key);
        self.scratch = key;
        built?;
        self.wait_for_checkpoint_thread("a map put")?;
        let cf = self.map_cf(state)?;
        self.db()?
            .put_cf_opt(cf, &self.scratch, value, &self.write_options)
            .map_err(|e| rocks_error("put", e))?;
        log_write(&mut self.changelog, state, &self.scratch, WriteOp::Put(value));
        Ok(())
    }

    fn map_remove(&mut self, state: StateId, user_key: &[u8]) -> Result<()> {
        self.require_key()?;
        let mut key = std::mem::take(&mut self.scratch);
        let built = self.map_key(state, user_key, &mut key);
        self.scratch = key;
        built?;
        self.wait_for_checkpoint_thread("a map removal")?;
        let cf = self.map_cf(state)?;
        self.db()?
            .delete_cf_opt(cf, &self.scratch, &self.write_options)
            .map_err(|e| rocks_error("delete", e))?;
        log_write(&mut self.changelog, state, &self.scratch, WriteOp::Remove);
        Ok(())
    }

    fn map_entries(&self, state: StateId) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.require_key()?;
        if self.timers_in_time_order(state) {
            return self.current_key_timers(state);
        }
        let cf = self.map_cf(state)?;
        let mut read = ReadOptions::default();
        if let Some(end) = keys::prefix_successor(&self.map_prefix) {
            read.set_iterate_upper_bound(end);
        }
        let mut entries = Vec::new();
        let iter = self.db()?.iterator_cf_opt(
            cf,
            read,
            IteratorMode::From(&self.map_prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(|e| rocks_error("iterate", e))?;
            if !k.starts_with(&self.map_prefix) {
                break;
            }
            entries.push((k[self.map_prefix.len()..].to_vec(), v.to_vec()));
        }
        Ok(entries)
    }

    fn timers_in_time_order(&self, state: StateId) -> bool {
        self.state(state).is_ok_and(|s| is_timer_cf(&s.storage))
    }

    fn scan_timers(
        &self,
        state: StateId,
        key_group: u32,
        visit: &mut streamstate_api::backend::TimerVisitor<'_>,
    ) -> Result<()> {
        if !self.timers_in_time_order(state) {
            return Err(Error::unsupported(format!(
                "state {} is not kept in timer order",
                self.state(state)?.meta.name
            )));
        }
        let cf = self.map_cf(state)?;
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(keys::key_group_start(key_group + 1));
        let mut stored = self.db()?.raw_iterator_cf_opt(cf, read);
        stored.seek(keys::key_group_start(key_group));
        while let Some(k) = stored.key() {
            let (key, user_key) = keys::split_timer_key(k)?;
            if !visit(key, &user_key)? {
                return Ok(());
            }
            stored.next();
        }
        stored.status().map_err(|e| rocks_error("iterate", e))
    }

    fn keys(&self, state: StateId) -> Result<Vec<Vec<u8>>> {
        self.keys_of(state, None)
    }

    fn keys_in_key_group(&self, state: StateId, key_group: u32) -> Result<Vec<Vec<u8>>> {
        require_key_group_in_range(key_group, self.options.key_group_range)?;
        self.keys_of(state, Some(key_group))
    }

    fn for_each_cell_in_key_group(
        &mut self,
        state: StateId,
        key_group: u32,
        visit: &mut streamstate_api::backend::CellVisitor<'_>,
    ) -> Result<()> {
        require_key_group_in_range(key_group, self.options.key_group_range)?;
        let cf = self.cell_cf(state)?;
        // One scan of the group's key range, merged with the write-back
        // cache's cells of the group (which supersede RocksDB's), instead
        // of a point lookup per key. Keys share the group's 2-byte prefix,
        // so RocksDB's order is the keys' byte order.
        let group_start = keys::key_group_start(key_group);
        let mut cached: Vec<(&[u8], Option<&[u8]>)> = self
            .write_back
            .cells(state)
            .filter(|(cell_key, _)| cell_key.starts_with(&group_start))
            .map(|(cell_key, value)| (&cell_key[group_start.len()..], value))
            .collect();
        cached.sort_unstable_by_key(|(key, _)| *key);
        let mut cached = cached.into_iter().peekable();
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(keys::key_group_start(key_group + 1));
        let mut stored = self.db()?.raw_iterator_cf_opt(cf, read_options);
        stored.seek(&group_start);
        while let (Some(cell_key), Some(value)) = (stored.key(), stored.value()) {
            let key = &cell_key[group_start.len()..];
            // Cached keys before this one are new keys; a cached key equal
            // to it supersedes it (a removal visits nothing).
            let mut superseded = false;
            while let Some((cached_key, cached_value)) = cached.next_if(|(cached_key, _)| *cached_key <= key) {
                if let Some(cached_value) = cached_value {
                    visit(cached_key, cached_value)?;
                }
                superseded = cached_key == key;
            }
            if !superseded {
                visit(key, value)?;
            }
            stored.next();
        }
        stored.status().map_err(|e| rocks_error("iterate", e))?;
        for (cached_key, cached_value) in cached {
            if let Some(cached_value) = cached_value {
                visit(cached_key, cached_value)?;
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, target: &SnapshotTarget) -> Result<Box<dyn AsyncSnapshot>> {
        // The synchronous phase. Native (checkpoints): the write-back
        // cache's dirty cells copied into a pending-cells file, and a
        // thread started that makes the RocksDB checkpoint
        // (`local_checkpoint`), while this thread goes on with RocksDB
        // unwritten until it has. Canonical (savepoints): the dirty cells
        // written into RocksDB and the checkpoint made here.
        let started = std::time::Instant::now();
        // Rare: the previous checkpoint is still being made.
        self.wait_for_checkpoint_thread("the next snapshot")?;
        let snapshot: Box<dyn AsyncSnapshot> = match target.format {
            SnapshotFormat::Native => {
                // Savepoints are self-contained: never part of a changelog.
                let changelog_on =
                    self.resources.changelog && target.incremental && target.kind == SnapshotKind::Checkpoint;
                if changelog_on {
                    if let Some(segment) = self.changelog_segment() {
                        tracing::debug!(
                            sync_us = started.elapsed().as_micros() as u64,
                            "rocksdb changelog segment"
                        );
                        return Ok(segment);
                    }
                }
                let pending_cells = self.pending_cells(changelog_on);
                let write_back_done = started.elapsed();
                let dir = DirGuard(self.snapshot_dir("native"));
                // A new base: the writes gathered so far are in its files.
                let changelog_base = changelog_on.then(|| {
                    self.changelog = Some(Changelog::new(self.snapshot_seq));
                    (self.snapshot_seq, Arc::clone(&self.chain))
                });
                let db = Arc::clone(self.db.as_ref().ok_or_else(backend_closed)?);
                let memtables = if changelog_on {
                    Memtables::Flushed
                } else {
                    Memtables::InWal
                };
                let (thread, checkpoint) =
                    CheckpointThread::start(db, self.family_names(), self.dir.clone(), dir, memtables)?;
                self.checkpoint_thread = Some(thread);
                tracing::debug!(
                    write_back_us = write_back_done.as_micros() as u64,
                    thread_start_us = (started.elapsed() - write_back_done).as_micros() as u64,
                    "rocksdb synchronous phase"
                );
                Box::new(NativeSnapshot {
                    checkpoint,
                    range: self.options.key_group_range,
                    states: self.registered_states(),
                    incremental: target.incremental,
                    uploaded: Arc::clone(&self.uploaded),
                    instance: self.instance.clone(),
                    pending_cells,
                    changelog_base,
                    resources: Arc::clone(&self.resources),
                })
            }
            SnapshotFormat::Canonical => {
                self.write_dirty_cells()?;
                let dir = DirGuard(self.snapshot_dir("canonical"));
                let families = self.families()?;
                let dir = local_checkpoint::make_checkpoint(self.db()?, &families, &self.dir, dir, Memtables::InWal)?;
                Box::new(CanonicalFromRocksDb {
                    dir,
                    range: self.options.key_group_range,
                    states: self.registered_states(),
                    now_ms: self.options.clock.now_ms(),
                    resources: Arc::clone(&self.resources),
                })
            }
        };
        Ok(snapshot)
    }
}

impl RocksDbKeyedStateBackend {
    /// The column family a state this instance does not have yet gets: a
    /// timer state's is in timestamp order unless the timer store is the
    /// heap.
    fn new_state_cf(&self, meta: &StateMeta) -> String {
        let by_time = self.resources.timer_store == TimerStore::RocksDb
            && meta.stores_map()
            && TimeDomain::of_state(&meta.name).is_some();
        if by_time {
            timer_cf(&meta.name)
        } else {
            state_cf(&meta.name)
        }
    }

    /// Registers `meta`, in column family `cf` when it is new here.
    pub(super) fn register_state_in(&mut self, meta: &StateMeta, cf: String) -> Result<StateId> {
        if self.states.id_of(&meta.name).is_none() {
            meta.validate()?;
            self.create_state_column_family(meta, &cf)?;
        }
        self.states.register(meta, |_| Ok(cf))
    }

    /// Writes the stored key of the current key's entry `user_key` of map
    /// state `state` into `out`, in the state's layout.
    fn map_key(&self, state: StateId, user_key: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.timers_in_time_order(state) {
            return keys::timer_key(out, self.current_key_group, &self.current_key, user_key);
        }
        out.clear();
        out.extend_from_slice(&self.map_prefix);
        out.extend_from_slice(user_key);
        Ok(())
    }

    /// The current key's timers of a state in timestamp order, as
    /// `map_entries` returns them: a scan of its key group, the only way
    /// to them in that layout (the timer service never needs it).
    fn current_key_timers(&self, state: StateId) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = Vec::new();
        self.scan_timers(state, self.current_key_group, &mut |key, user_key| {
            if key == self.current_key.as_slice() {
                entries.push((user_key.to_vec(), Vec::new()));
            }
            Ok(true)
        })?;
        entries.sort_unstable();
        Ok(entries)
    }

    /// Removes the current key's timers of a state in timestamp order.
    fn clear_current_key_timers(&mut self, state: StateId) -> Result<()> {
        self.wait_for_checkpoint_thread("clearing a state")?;
        let mut stored = Vec::new();
        for (user_key, _) in self.current_key_timers(state)? {
            keys::timer_key(&mut stored, self.current_key_group, &self.current_key, &user_key)?;
            self.db()?
                .delete_cf_opt(self.map_cf(state)?, &stored, &self.write_options)
                .map_err(|e| rocks_error("delete", e))?;
            log_write(&mut self.changelog, state, &stored, WriteOp::Remove);
        }
        Ok(())
    }

    /// Creates the column family `cf` of a new state and records its
    /// metadata in the meta column family (what a native restore reads
    /// back).
    fn create_state_column_family(&mut self, meta: &StateMeta, cf: &str) -> Result<()> {
        let cf = cf.to_owned();
        let cf_opts = cf_options(&self.resources);
        // Creating a column family needs the database to itself.
        self.wait_for_checkpoint_thread("registering a state")?;
        if let Some(compaction) = self.range_compaction.take() {
            if compaction.is_running() {
                tracing::info!(dir = %self.dir.display(), "registering a state waits for the compaction of clipped ranges");
            }
            compaction.wait()?;
        }
        let db = self.db.as_mut().ok_or_else(backend_closed)?;
        let db = Arc::get_mut(db).ok_or_else(|| {
            Error::new(
                ErrorKind::Storage,
                "the RocksDB database is still in use by a checkpoint",
            )
            .with_context("dir", self.dir.display().to_string())
        })?;
        if db.cf_handle(&cf).is_none() {
            db.create_cf(&cf, &cf_opts)
                .map_err(|e| rocks_error("create column family", e))?;
        }
        let json = serde_json::to_vec(meta)
            .map_err(|e| Error::new(ErrorKind::Serialization, "cannot encode state meta").with_source(e))?;
        let meta_cf = db
            .cf_handle(META_CF)
            .ok_or_else(|| Error::corrupt("meta column family missing"))?;
        db.put_cf(meta_cf, meta.name.as_bytes(), json)
            .map_err(|e| rocks_error("write", e))?;
        Ok(())
    }
}
