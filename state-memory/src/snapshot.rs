//! The asynchronous phase of a heap snapshot: writes the shared shards as a
//! canonical file.

use state_api::snapshot::canonical::CanonicalWriter;
use state_api::{
    AsyncSnapshot, CheckpointStorage, Error, ErrorKind, KeyGroupRange, KeyedStateHandle, Result, SnapshotFormat,
    SnapshotTarget, StateMeta,
};

use crate::table::StateTable;

/// A state's shards as they were at the synchronous phase.
#[derive(Debug)]
pub(crate) struct FrozenState {
    pub(crate) meta: StateMeta,
    pub(crate) table: StateTable,
}

/// The captured view, written by [`AsyncSnapshot::write`].
#[derive(Debug)]
pub(crate) struct HeapSnapshot {
    pub(crate) backend: &'static str,
    pub(crate) range: KeyGroupRange,
    pub(crate) now_ms: u64,
    pub(crate) max_state_size: Option<u64>,
    pub(crate) states: Vec<FrozenState>,
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

    fn encode(&self) -> Result<Vec<u8>> {
        let metas = self.states.iter().map(|s| s.meta.clone()).collect();
        let mut writer = CanonicalWriter::new(metas, self.range, self.now_ms);
        for key_group in self.range.iter() {
            writer.start_key_group(key_group)?;
            for (index, state) in self.states.iter().enumerate() {
                match &state.table {
                    StateTable::Cells(table) => {
                        for shard in table.key_group_shards(key_group) {
                            for (key, value) in shard.iter() {
                                writer.add_cell(index, key, value)?;
                            }
                        }
                    }
                    StateTable::Maps(table) => {
                        for shard in table.key_group_shards(key_group) {
                            for (key, user_map) in shard.iter() {
                                for (user_key, value) in user_map {
                                    writer.add_map_entry(index, key, user_key, value)?;
                                }
                            }
                        }
                    }
                }
            }
            // Fail early instead of building a huge buffer first.
            if let Some(max) = self.max_state_size {
                if writer.len() as u64 > max {
                    return Err(self.too_large(writer.len() as u64, max));
                }
            }
        }
        let bytes = writer.finish()?;
        if let Some(max) = self.max_state_size {
            if bytes.len() as u64 > max {
                return Err(self.too_large(bytes.len() as u64, max));
            }
        }
        Ok(bytes)
    }
}

impl AsyncSnapshot for HeapSnapshot {
    fn write(self: Box<Self>, storage: &CheckpointStorage, target: &SnapshotTarget) -> Result<KeyedStateHandle> {
        let bytes = self.encode()?;
        let path = target.exclusive_file(&format!("{}.kgs", target.file_stem));
        let file = storage.write(&path, bytes)?;
        Ok(KeyedStateHandle {
            backend: self.backend.to_owned(),
            format: SnapshotFormat::Canonical,
            key_group_range: self.range,
            states: self.states.iter().map(|s| s.meta.clone()).collect(),
            full_bytes: file.size,
            uploaded_bytes: file.size,
            files: vec![file],
        })
    }
}
