//! The asynchronous phase of a heap snapshot: writes the shared shards as a
//! canonical file, full or, for incremental checkpoints, a delta.
//!
//! Incremental checkpoints form a *chain*: one full file, then deltas each
//! holding the keys changed since the snapshot before (see
//! [`streamstate_api::snapshot::canonical`]). Their files live in the job's
//! `shared/` directory; every checkpoint's handle lists its whole chain, so
//! retention keeps a file while any retained checkpoint needs it. A new full
//! file starts a new chain once the chain has [`MAX_DELTAS`] deltas or its
//! deltas add up to the size of its full file, which bounds what a restore
//! reads to about twice the state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use streamstate_api::snapshot::canonical::CanonicalWriter;
use streamstate_api::{
    AsyncSnapshot, CheckpointStorage, Error, ErrorKind, FileRef, KeyGroupRange, KeyedStateHandle, Result,
    SnapshotFormat, SnapshotTarget, StateMeta,
};

use crate::table::{Epoch, Shard, StateTable};

/// Deltas after which the next incremental checkpoint is full again.
pub const MAX_DELTAS: usize = 10;

/// A state's shards as they were at the synchronous phase.
#[derive(Debug)]
pub(crate) struct FrozenState {
    pub(crate) meta: StateMeta,
    pub(crate) table: StateTable,
}

/// The files of an uploaded incremental snapshot: a full file, then deltas.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    /// Epoch of the newest file: it holds every change up to this epoch.
    pub(crate) epoch: Epoch,
    pub(crate) files: Vec<FileRef>,
}

impl Chain {
    /// Whether the next incremental snapshot should start a new chain.
    pub(crate) fn wants_full_snapshot(&self) -> bool {
        let full = self.files.first().map_or(0, |f| f.size);
        let deltas = &self.files[1.min(self.files.len())..];
        deltas.len() >= MAX_DELTAS || deltas.iter().map(|f| f.size).sum::<u64>() >= full
    }
}

/// What an incremental snapshot builds on and where it reports its upload.
#[derive(Debug)]
pub(crate) struct IncrementalPlan {
    /// The chain to extend with a delta; `None` writes a full file.
    pub(crate) base: Option<Chain>,
    /// The backend's newest chain, replaced after a successful upload.
    pub(crate) chain: Arc<Mutex<Option<Chain>>>,
    /// The backend's copy of the newest chain's epoch.
    pub(crate) covered_epoch: Arc<AtomicU64>,
    pub(crate) instance_token: String,
}

/// The captured view, written by [`AsyncSnapshot::write`].
#[derive(Debug)]
pub(crate) struct HeapSnapshot {
    pub(crate) backend: &'static str,
    pub(crate) range: KeyGroupRange,
    pub(crate) now_ms: u64,
    pub(crate) max_state_size: Option<u64>,
    pub(crate) states: Vec<FrozenState>,
    /// The epoch the view ends at: it holds every change stamped up to it.
    pub(crate) epoch: Epoch,
    /// Set for incremental checkpoints.
    pub(crate) incremental: Option<IncrementalPlan>,
}

impl HeapSnapshot {
    fn too_large(&self, size: u64, max: u64) -> Error {
        Error::new(
            ErrorKind::StateTooLarge,
            format!(
                "snapshot of the {} backend is {size} bytes, over its maximum state size of {max} bytes; \
                 raise the maximum or use the fs or rocksdb backend",
                self.backend
            ),
        )
    }

    fn check_size(&self, size: u64) -> Result<()> {
        match self.max_state_size {
            Some(max) if size > max => Err(self.too_large(size, max)),
            _ => Ok(()),
        }
    }

    /// Encodes every key (`since` = `None`) or only the keys changed after
    /// epoch `since`, as a delta.
    fn encode(&self, since: Option<Epoch>) -> Result<Vec<u8>> {
        let metas = self.states.iter().map(|s| s.meta.clone()).collect();
        let mut writer = match since {
            None => CanonicalWriter::new(metas, self.range, self.now_ms),
            Some(_) => CanonicalWriter::new_delta(metas, self.range, self.now_ms),
        };
        for key_group in self.range.iter() {
            writer.start_key_group(key_group)?;
            for (index, state) in self.states.iter().enumerate() {
                match &state.table {
                    StateTable::Cells(table) => {
                        for shard in changed_shards(table.key_group_shards(key_group), since) {
                            match since {
                                None => {
                                    for (key, value) in shard.iter() {
                                        writer.add_cell(index, key, value)?;
                                    }
                                }
                                Some(epoch) => {
                                    for (key, value) in shard.changed_after(epoch) {
                                        match value {
                                            Some(value) => writer.add_cell(index, key, value)?,
                                            None => writer.add_removal(index, key)?,
                                        }
                                    }
                                }
                            }
                        }
                    }
                    StateTable::Maps(table) => {
                        for shard in changed_shards(table.key_group_shards(key_group), since) {
                            match since {
                                None => {
                                    for (key, user_map) in shard.iter() {
                                        for (user_key, value) in user_map {
                                            writer.add_map_entry(index, key, user_key, value)?;
                                        }
                                    }
                                }
                                Some(epoch) => {
                                    // A changed map is replaced whole: removal, then its entries.
                                    for (key, user_map) in shard.changed_after(epoch) {
                                        writer.add_removal(index, key)?;
                                        for (user_key, value) in user_map.into_iter().flatten() {
                                            writer.add_map_entry(index, key, user_key, value)?;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // Fail early instead of building a huge buffer first.
            self.check_size(writer.len() as u64)?;
        }
        let bytes = writer.finish()?;
        self.check_size(bytes.len() as u64)?;
        Ok(bytes)
    }

    fn handle(&self, files: Vec<FileRef>, uploaded_bytes: u64) -> KeyedStateHandle {
        KeyedStateHandle {
            backend: self.backend.to_owned(),
            format: SnapshotFormat::Canonical,
            key_group_range: self.range,
            states: self.states.iter().map(|s| s.meta.clone()).collect(),
            full_bytes: files.iter().map(|f| f.size).sum(),
            uploaded_bytes,
            files,
        }
    }
}

/// The shards of a key group a snapshot must visit: all of them for a full
/// file, those changed after `since` for a delta.
fn changed_shards<V>(shards: &[Shard<V>], since: Option<Epoch>) -> impl Iterator<Item = &Shard<V>> {
    shards
        .iter()
        .filter(move |s| since.is_none_or(|epoch| s.changed() > epoch))
}

impl AsyncSnapshot for HeapSnapshot {
    fn write(self: Box<Self>, storage: &CheckpointStorage, target: &SnapshotTarget) -> Result<KeyedStateHandle> {
        let Some(plan) = &self.incremental else {
            let bytes = self.encode(None)?;
            let path = target.exclusive_file(&format!("{}.kgs", target.file_stem));
            let file = storage.write(&path, bytes)?;
            let size = file.size;
            return Ok(self.handle(vec![file], size));
        };
        // Files of a chain outlive their checkpoint: they go to shared/.
        let since = plan.base.as_ref().map(|base| base.epoch);
        let bytes = self.encode(since)?;
        let kind = if since.is_some() { "delta" } else { "full" };
        let name = format!("{}-{}-{}.{kind}.kgs", target.file_stem, plan.instance_token, self.epoch);
        let file = storage.write(&target.shared_file(&name), bytes)?;
        let uploaded = file.size;
        let mut files = plan.base.as_ref().map(|base| base.files.clone()).unwrap_or_default();
        files.push(file);
        self.check_size(files.iter().map(|f| f.size).sum())?;
        // Publish the chain unless a newer snapshot's already is.
        if let Ok(mut newest) = plan.chain.lock() {
            if newest.as_ref().is_none_or(|c| c.epoch < self.epoch) {
                *newest = Some(Chain {
                    epoch: self.epoch,
                    files: files.clone(),
                });
                plan.covered_epoch.store(self.epoch, Ordering::Release);
            }
        }
        Ok(self.handle(files, uploaded))
    }
}
