//! # streamstate-fs: Flink's FsStateBackend
//!
//! Keyed state on the heap (the copy-on-write tables of `state-memory`,
//! reused, not copied) with no size cap; snapshots are canonical files
//! written to whatever [`streamstate_api::CheckpointStorage`] the job uses, so the
//! same backend checkpoints to `file://` today and to `s3://` or `hdfs://`
//! through the same OpenDAL storage layer.
//!
//! ```
//! use streamstate_api::StateBackend;
//! let backend = streamstate_fs::FsStateBackend::new();
//! assert_eq!(backend.name(), "fs");
//! ```

#![warn(missing_docs)]

use streamstate_api::{
    Capabilities, CheckpointStorage, KeyedBackendOptions, KeyedStateBackend, KeyedStateHandle, Result, StateBackend,
};
use streamstate_memory::{HeapStateBackend, HEAP_CAPABILITIES};

/// Flink's FsStateBackend (`state.backend.type: hashmap` with a file-system
/// checkpoint directory).
#[derive(Debug, Clone)]
pub struct FsStateBackend {
    heap: HeapStateBackend,
}

impl Default for FsStateBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl FsStateBackend {
    /// A new fs backend.
    pub fn new() -> Self {
        Self {
            heap: HeapStateBackend::new("fs", None),
        }
    }
}

impl StateBackend for FsStateBackend {
    fn name(&self) -> &'static str {
        "fs"
    }

    fn capabilities(&self) -> Capabilities {
        HEAP_CAPABILITIES
    }

    fn create_keyed_backend(&self, options: KeyedBackendOptions) -> Result<Box<dyn KeyedStateBackend>> {
        self.heap.create_keyed_backend(options)
    }

    fn restore_keyed_backend(
        &self,
        options: KeyedBackendOptions,
        handles: &[KeyedStateHandle],
        storage: &CheckpointStorage,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        self.heap.restore_keyed_backend(options, handles, storage)
    }
}
