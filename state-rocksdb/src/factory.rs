//! [`RocksDbStateBackend`]: the factory a job picks by name; one per
//! process, making a RocksDB instance per operator instance in a working
//! directory of its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use streamstate_api::{
    Capabilities, CheckpointStorage, KeyedBackendOptions, KeyedStateBackend, KeyedStateHandle, Result, StateBackend,
};

use crate::backend::{RocksDbKeyedStateBackend, ROCKSDB_CAPABILITIES};
use crate::config::RocksDbConfig;
use crate::files::{clean_stale_dirs, create_dir, remove_dir};
use crate::resources::Resources;

/// Flink's RocksDBStateBackend.
#[derive(Debug)]
pub struct RocksDbStateBackend {
    pub(crate) root: PathBuf,
    pub(crate) resources: Arc<Resources>,
}

impl RocksDbStateBackend {
    /// A backend with `config`.
    pub fn new(config: RocksDbConfig) -> Self {
        let cache = rocksdb::Cache::new_lru_cache(config.block_cache_bytes);
        let write_buffers = rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(
            config.write_buffer_bytes,
            false,
            cache.clone(),
        );
        Self {
            root: config
                .local_dir
                .unwrap_or_else(|| std::env::temp_dir().join("streamstate-rocksdb")),
            resources: Arc::new(Resources {
                cache,
                write_buffers,
                write_buffer_size: config.write_buffer_size,
                write_back_entries: config.write_back_entries,
                changelog: config.changelog,
                compact_clipped_ranges: config.compact_clipped_ranges,
                timer_store: config.timer_store,
            }),
        }
    }

    /// The working directory root.
    pub fn local_dir(&self) -> &Path {
        &self.root
    }

    pub(crate) fn instance_dir(&self, options: &KeyedBackendOptions) -> Result<PathBuf> {
        clean_stale_dirs(&self.root);
        // Process-wide, so instances of different backends never share a
        // directory.
        static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);
        let n = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}_{n}_{}_{}_{}",
            std::process::id(),
            options.job_id,
            options.operator_id.replace(['/', '\\'], "-"),
            options.key_group_range.start()
        );
        let dir = self.root.join(name);
        remove_dir(&dir);
        create_dir(&dir)?;
        Ok(dir)
    }

    /// A concrete keyed backend.
    ///
    /// # Errors
    /// RocksDB or directory errors.
    pub fn create(&self, options: KeyedBackendOptions) -> Result<RocksDbKeyedStateBackend> {
        let dir = self.instance_dir(&options)?;
        self.open_or_remove(dir, options)
    }

    /// Opens the instance in `dir`; if that fails nothing owns `dir` yet, so
    /// it is removed here.
    pub(crate) fn open_or_remove(
        &self,
        dir: PathBuf,
        options: KeyedBackendOptions,
    ) -> Result<RocksDbKeyedStateBackend> {
        RocksDbKeyedStateBackend::open(dir.clone(), options, Arc::clone(&self.resources)).inspect_err(|_| {
            remove_dir(&dir);
        })
    }
}

impl Default for RocksDbStateBackend {
    fn default() -> Self {
        Self::new(RocksDbConfig::default())
    }
}

impl StateBackend for RocksDbStateBackend {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn capabilities(&self) -> Capabilities {
        ROCKSDB_CAPABILITIES
    }

    fn create_keyed_backend(&self, options: KeyedBackendOptions) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(self.create(options)?))
    }

    fn restore_keyed_backend(
        &self,
        options: KeyedBackendOptions,
        handles: &[KeyedStateHandle],
        storage: &CheckpointStorage,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(self.restore(options, handles, storage)?))
    }
}
