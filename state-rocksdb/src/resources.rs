//! The RocksDB resources every instance of one backend shares: the block
//! cache and the write-buffer manager charged to it, bounding memory per
//! process.

/// Process-wide RocksDB resources shared by every instance of a backend.
pub struct Resources {
    pub(crate) cache: rocksdb::Cache,
    pub(crate) write_buffers: rocksdb::WriteBufferManager,
    pub(crate) write_buffer_size: usize,
    pub(crate) write_back_entries: usize,
    pub(crate) changelog: bool,
    pub(crate) compact_clipped_ranges: bool,
    pub(crate) timer_store: crate::config::TimerStore,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("write_buffer_size", &self.write_buffer_size)
            .finish_non_exhaustive()
    }
}
