//! The asynchronous phase of a native RocksDB snapshot: upload the files
//! of a RocksDB checkpoint. In incremental mode SST files and the OPTIONS
//! file go to `shared/` once and later snapshots reference them (RocksDB
//! never changes either once written, nor reuses a file number); MANIFEST,
//! CURRENT and the WAL copy, which change with every checkpoint, go to the
//! checkpoint's own directory. File names in storage are
//! `<owner>~<local name>`. The write-back cache's dirty cells go along as
//! the checkpoint's own pending-cells file
//! ([`crate::write_path::pending_cells`]). The base of a changelog
//! ([`crate::snapshots::changelog`]) puts every file in `shared/`, since later
//! checkpoints reference all of them, and publishes the chain it starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use streamstate_api::{
    AsyncSnapshot, CheckpointStorage, Error, FileRef, KeyGroupRange, KeyedStateHandle, Result, SnapshotFormat,
    SnapshotTarget, StateMeta,
};

use crate::files::{create_dir, DirGuard, NAME_SEPARATOR};
use crate::resources::Resources;
use crate::snapshots::changelog::{
    fold_logged, publish, upload_segment_tables, write_segment_tables, ChainSlot, PublishedChain, TYPICAL_WRITE_BYTES,
};
use crate::write_path::pending_cells::{split_header, PENDING_CELLS_FILE};

pub(crate) struct NativeSnapshot {
    /// The RocksDB checkpoint's directory, once its thread has made it
    /// ([`crate::snapshots::local_checkpoint::CheckpointThread`]).
    pub(crate) checkpoint: Receiver<Result<DirGuard>>,
    pub(crate) range: KeyGroupRange,
    pub(crate) states: Vec<StateMeta>,
    pub(crate) incremental: bool,
    pub(crate) uploaded: Arc<Mutex<HashMap<String, FileRef>>>,
    pub(crate) instance: String,
    /// The write-back cache's dirty cells, a file of this snapshot alone.
    pub(crate) pending_cells: Option<Vec<u8>>,
    /// Set when this snapshot is a changelog's base: its generation, and
    /// where to publish the chain it starts.
    pub(crate) changelog_base: Option<(u64, ChainSlot)>,
    pub(crate) resources: Arc<Resources>,
}

impl NativeSnapshot {
    /// Where a file of this snapshot that is not shared by name goes: the
    /// checkpoint's own directory, or for a changelog's base `shared/`,
    /// under a name of this base alone.
    fn own_file(&self, target: &SnapshotTarget, name: &str) -> String {
        match &self.changelog_base {
            Some((generation, _)) => {
                target.shared_file(&format!("{}-g{generation}{NAME_SEPARATOR}{name}", self.instance))
            }
            None => target.exclusive_file(&format!("{}{NAME_SEPARATOR}{name}", target.file_stem)),
        }
    }

    /// A changelog base's pending cells as the SSTs of its piece 0, written
    /// into `dir`: a restore ingests them with the segments after them, and
    /// so writes nothing into a memtable (which the first ingestion would
    /// have to flush).
    fn pending_cells_tables(&self, bytes: &[u8], dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
        create_dir(dir)?;
        let (names, writes) = split_header(bytes)?;
        write_segment_tables(
            dir,
            0,
            names.len(),
            &self.resources,
            writes.len() / TYPICAL_WRITE_BYTES,
            |net| fold_logged(net, writes, names.len()),
        )
    }
}

impl AsyncSnapshot for NativeSnapshot {
    fn write(mut self: Box<Self>, storage: &CheckpointStorage, target: &SnapshotTarget) -> Result<KeyedStateHandle> {
        let dir = self.checkpoint.recv().map_err(|_| {
            Error::new(
                streamstate_api::ErrorKind::Storage,
                "the thread making a RocksDB checkpoint ended without one",
            )
        })??;
        let mut names: Vec<String> = std::fs::read_dir(&dir.0)
            .map_err(|e| {
                Error::new(streamstate_api::ErrorKind::Storage, "cannot list a RocksDB checkpoint").with_source(e)
            })?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        names.sort();
        let (mut files, mut full_bytes, mut uploaded_bytes) = (Vec::new(), 0u64, 0u64);
        for name in &names {
            // The OPTIONS file (~20 KB) was a sixth of what a checkpoint
            // of a 1% change uploaded when nothing had been flushed
            // (docs/BENCHMARKS.md, "Incremental checkpoint bytes").
            let shared = self.incremental && (name.ends_with(".sst") || name.starts_with("OPTIONS-"));
            if shared {
                let known = self.uploaded.lock().ok().and_then(|m| m.get(name.as_str()).cloned());
                if let Some(file) = known {
                    full_bytes += file.size;
                    files.push(file);
                    continue;
                }
            }
            // Uploaded a part at a time: a WAL copy reaches 64 MiB
            // (`MAX_TOTAL_WAL_BYTES`), compaction outputs 16 MiB.
            let local = dir.0.join(name);
            let file = if shared {
                storage.write_from_file(
                    &target.shared_file(&format!("{}{NAME_SEPARATOR}{name}", self.instance)),
                    &local,
                )?
            } else {
                storage.write_from_file(&self.own_file(target, name), &local)?
            };
            if shared {
                if let Ok(mut m) = self.uploaded.lock() {
                    m.insert(name.clone(), file.clone());
                }
            }
            full_bytes += file.size;
            uploaded_bytes += file.size;
            files.push(file);
        }
        if let Some(bytes) = self.pending_cells.take() {
            let cell_files = match &self.changelog_base {
                Some((generation, _)) => {
                    let tables = self.pending_cells_tables(&bytes, &dir.0.join("changelog"))?;
                    upload_segment_tables(storage, target, &self.instance, *generation, 0, &tables)?
                }
                None => vec![storage.write(&self.own_file(target, PENDING_CELLS_FILE), bytes)?],
            };
            for file in cell_files {
                full_bytes += file.size;
                uploaded_bytes += file.size;
                files.push(file);
            }
        }
        if self.incremental {
            // SSTs compacted away and OPTIONS files replaced never come
            // back (RocksDB never reuses a file number): forget them, so
            // the map stays as small as the database instead of growing
            // with every flush of a long job.
            if let Ok(mut uploaded) = self.uploaded.lock() {
                uploaded.retain(|name, _| names.binary_search(name).is_ok());
            }
        }
        if let Some((generation, slot)) = &self.changelog_base {
            publish(
                slot,
                PublishedChain {
                    generation: *generation,
                    base_files: files.clone(),
                    segments: Vec::new(),
                    through_piece: 0,
                },
            );
        }
        Ok(KeyedStateHandle {
            backend: "rocksdb".into(),
            format: SnapshotFormat::Native,
            key_group_range: self.range,
            states: self.states,
            files,
            full_bytes,
            uploaded_bytes,
        })
    }
}
