//! The asynchronous phase of a canonical snapshot of RocksDB (savepoints;
//! restorable into any backend): open the checkpoint read-only and write
//! the backend-neutral format, key group by key group.

use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, ReadOptions, DB};
use streamstate_api::snapshot::canonical::CanonicalWriter;
use streamstate_api::{
    AsyncSnapshot, CheckpointStorage, Error, KeyGroupRange, KeyedStateHandle, Result, SnapshotFormat, SnapshotTarget,
    StateMeta,
};

use crate::errors::rocks_error;
use crate::files::DirGuard;
use crate::keys;
use crate::options::{cf_options, db_options, state_cf, timer_cf};
use crate::resources::Resources;

pub(crate) struct CanonicalFromRocksDb {
    pub(crate) dir: DirGuard,
    pub(crate) range: KeyGroupRange,
    pub(crate) states: Vec<StateMeta>,
    pub(crate) now_ms: u64,
    pub(crate) resources: Arc<Resources>,
}

impl CanonicalFromRocksDb {
    fn encode(&self) -> Result<Vec<u8>> {
        let names =
            DB::list_cf(&Options::default(), &self.dir.0).map_err(|e| rocks_error("list column families", e))?;
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, cf_options(&self.resources)))
            .collect::<Vec<_>>();
        let db = DB::open_cf_descriptors_read_only(&db_options(&self.resources), &self.dir.0, descriptors, false)
            .map_err(|e| rocks_error("open checkpoint", e))?;
        let mut writer = CanonicalWriter::new(self.states.clone(), self.range, self.now_ms);
        for key_group in self.range.iter() {
            writer.start_key_group(key_group)?;
            let lower = keys::key_group_start(key_group);
            for (index, meta) in self.states.iter().enumerate() {
                let by_time = db.cf_handle(&timer_cf(&meta.name));
                let cf = by_time
                    .or_else(|| db.cf_handle(&state_cf(&meta.name)))
                    .ok_or_else(|| Error::corrupt(format!("column family of state {} is missing", meta.name)))?;
                let mut read = ReadOptions::default();
                read.set_iterate_upper_bound(keys::key_group_start(key_group + 1));
                for item in db.iterator_cf_opt(cf, read, IteratorMode::From(&lower, rocksdb::Direction::Forward)) {
                    let (k, v) = item.map_err(|e| rocks_error("iterate", e))?;
                    if by_time.is_some() {
                        let (key, user_key) = keys::split_timer_key(&k)?;
                        writer.add_map_entry(index, key, &user_key, &v)?;
                    } else if meta.stores_map() {
                        let (key, user_key) = keys::split_map_key(&k)?;
                        writer.add_map_entry(index, key, user_key, &v)?;
                    } else {
                        writer.add_cell(index, &k[2..], &v)?;
                    }
                }
            }
        }
        writer.finish()
    }
}

impl AsyncSnapshot for CanonicalFromRocksDb {
    fn write(self: Box<Self>, storage: &CheckpointStorage, target: &SnapshotTarget) -> Result<KeyedStateHandle> {
        let bytes = self.encode()?;
        let file = storage.write(&target.exclusive_file(&format!("{}.kgs", target.file_stem)), bytes)?;
        Ok(KeyedStateHandle {
            backend: "rocksdb".into(),
            format: SnapshotFormat::Canonical,
            key_group_range: self.range,
            states: self.states.clone(),
            full_bytes: file.size,
            uploaded_bytes: file.size,
            files: vec![file],
        })
    }
}
