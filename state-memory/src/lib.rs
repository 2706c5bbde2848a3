//! # streamstate-memory: Flink's MemoryStateBackend
//!
//! Keyed state lives on the heap in copy-on-write hash tables
//! ([`table`]); snapshots are canonical files. Paired with `memory://`
//! checkpoint storage, snapshots stay in process memory, as with Flink's
//! `MemoryStateBackend` / `JobManagerCheckpointStorage`, and a snapshot over
//! [`MemoryStateBackend::max_state_size`] (default 5 MiB, as in Flink) fails
//! with [`streamstate_api::ErrorKind::StateTooLarge`] giving both sizes.
//!
//! The heap tables are shared with `state-fs` (Flink's FsStateBackend), which
//! is the same keyed backend without the size cap, writing to any URI.
//!
//! ```
//! use streamstate_api::{KeyedBackendOptions, KeyGroupRange, StateBackend};
//! use streamstate_memory::MemoryStateBackend;
//! let backend = MemoryStateBackend::new();
//! assert_eq!(backend.max_state_size(), 5 * 1024 * 1024);
//! let keyed = backend
//!     .create_keyed_backend(KeyedBackendOptions::new("job", "op", KeyGroupRange::new(0, 127), 128))
//!     .unwrap();
//! assert_eq!(keyed.backend_name(), "memory");
//! ```

#![warn(missing_docs)]

mod backend;
mod snapshot;
pub mod table;

pub use backend::{HeapKeyedStateBackend, HeapStateBackend, HEAP_CAPABILITIES};

use streamstate_api::{
    Capabilities, CheckpointStorage, KeyedBackendOptions, KeyedStateBackend, KeyedStateHandle, Result, StateBackend,
};

/// Flink's default maximum state size of the memory backend: 5 MiB.
pub const DEFAULT_MAX_STATE_SIZE: u64 = 5 * 1024 * 1024;

/// Flink's MemoryStateBackend: heap state, snapshots capped in size.
#[derive(Debug, Clone)]
pub struct MemoryStateBackend {
    heap: HeapStateBackend,
    max_state_size: u64,
}

impl Default for MemoryStateBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStateBackend {
    /// A memory backend with the default 5 MiB cap.
    pub fn new() -> Self {
        Self::with_max_state_size(DEFAULT_MAX_STATE_SIZE)
    }

    /// A memory backend whose snapshots may be at most `max_state_size` bytes.
    pub fn with_max_state_size(max_state_size: u64) -> Self {
        Self {
            heap: HeapStateBackend::new("memory", Some(max_state_size)),
            max_state_size,
        }
    }

    /// The snapshot size cap in bytes.
    pub fn max_state_size(&self) -> u64 {
        self.max_state_size
    }
}

impl StateBackend for MemoryStateBackend {
    fn name(&self) -> &'static str {
        "memory"
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
