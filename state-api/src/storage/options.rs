//! [`StorageOptions`]: the tuning of the OpenDAL layers under a checkpoint
//! storage, and the part sizes of its uploads.

use std::collections::BTreeMap;
use std::time::Duration;

/// Part size of chunked (multipart) uploads.
pub(super) const WRITE_CHUNK_BYTES: usize = 8 << 20;
/// Parts of one file uploaded at once.
pub(super) const WRITE_CONCURRENCY: usize = 4;
/// Bytes a local-file upload reads at a time.
pub(super) const FILE_READ_BYTES: usize = 1 << 20;
/// Parts of one local file in flight at once: enough to overlap reading
/// with uploading, few enough that large files do not cost their size in
/// memory.
pub(super) const FILE_WRITE_CONCURRENCY: usize = 2;

/// Tuning of the storage layers.
///
/// ```
/// use std::time::Duration;
/// use streamstate_api::StorageOptions;
/// let options = StorageOptions { max_retries: 1, io_timeout: Duration::from_secs(5), ..StorageOptions::default() };
/// assert_eq!(options.max_concurrency, 16);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// Attempts per operation on temporary errors (retry with backoff).
    pub max_retries: usize,
    /// Timeout of a whole non-I/O operation (stat, delete, list).
    pub operation_timeout: Duration,
    /// Timeout of one I/O step (reading or writing one chunk or part).
    pub io_timeout: Duration,
    /// Operations in flight at once.
    pub max_concurrency: usize,
    /// Service options (`s3.endpoint`, `s3.access-key`, ...). Secrets here
    /// never appear in messages.
    pub service_options: BTreeMap<String, String>,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            max_retries: 4,
            operation_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(30),
            max_concurrency: 16,
            service_options: BTreeMap::new(),
        }
    }
}
