//! RocksDB's options as this backend sets them: column families (merge
//! operator, bloom filters, the shared block cache), the database (WAL,
//! write-buffer manager), and the names of the column families.

use std::path::Path;

use rocksdb::Options;
use streamstate_api::Result;

use crate::errors::rocks_error;
use crate::resources::Resources;

/// Column family holding each state's [`StateMeta`] as JSON, so a native
/// restore knows the states before the job registers them.
pub(crate) const META_CF: &str = "_streamstate_meta";

pub(crate) fn state_cf(name: &str) -> String {
    format!("state:{name}")
}

/// The column family of a timer state kept in timestamp order
/// ([`crate::keys::timer_key`]): a name of its own, so that the layout of a
/// restored instance shows in its column families.
pub(crate) fn timer_cf(name: &str) -> String {
    format!("timers:{name}")
}

/// Whether a state's column family is in timestamp order.
pub(crate) fn is_timer_cf(cf: &str) -> bool {
    cf.starts_with("timers:")
}

/// Column family options: the list-append merge operator and the shared
/// block cache.
pub(crate) fn cf_options(resources: &Resources) -> Options {
    let mut opts = Options::default();
    opts.set_merge_operator_associative("streamstate-append", append_merge);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(&resources.cache);
    // Whole-file bloom filters (10 bits per key: ~1% false positives), held
    // by the open table readers rather than the block cache: a get of a new
    // key (every word seen for the first time) then skips every SST instead
    // of reading an index and a data block from each. Charged to the block
    // cache instead, the filters of large SSTs (megabytes each) were evicted
    // by data blocks and read back for nearly every get: 5 TB read in 9
    // minutes at 7.8M keys. Held outside it they cost ~1.25 bytes per key
    // (10 MB at 7.8M keys), bounded by `max_open_files`.
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(false);
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Compaction outputs of 16 MiB, not 64: a table's bloom filter is
    // built from the hashes of all its keys, held until the file is done
    // (8 bytes a key: ~24 MiB for a 64 MiB file of small keys, per running
    // compaction), which set the process's peak RSS at 10M keys.
    opts.set_target_file_size_base(TARGET_FILE_BYTES);
    opts.set_write_buffer_size(resources.write_buffer_size);
    // A bloom filter over the memtable's keys (2% of its size): most gets
    // that miss the write-back cache ask for keys the memtable lacks, and
    // its skiplist search (cache misses at every level) was a fifth of the
    // keyed thread's samples.
    opts.set_memtable_whole_key_filtering(true);
    opts.set_memtable_prefix_bloom_ratio(0.02);
    opts
}

pub(crate) fn db_options(resources: &Resources) -> Options {
    let mut opts = cf_options(resources);
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_write_buffer_manager(&resources.write_buffers);
    opts.set_max_background_jobs(2);
    opts.set_max_open_files(256);
    opts.set_manual_wal_flush(true);
    // The WAL since the last memtable switch is what a checkpoint copies
    // (and syncs) during its pause, and what a restore downloads and
    // replays: compressed, all three shrink.
    opts.set_wal_compression_type(rocksdb::DBCompressionType::Zstd);
    opts.set_wal_bytes_per_sync(WAL_BYTES_PER_SYNC);
    // Checkpoints flush every memtable in the background, so the WAL stays
    // small; this bounds it when checkpointing is off, too.
    opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    opts
}

/// [`db_options`] for opening a working directory, where a restored
/// checkpoint's WAL copy replays: what it replays stays in memtables (a
/// background flush started after the restore writes it) instead of being
/// flushed to L0 while the job waits. The crate has no setter for
/// `avoid_flush_during_recovery`; RocksDB's option-string parser sets it.
///
/// Except when the copy holds more than [`MAX_WAL_FILES_KEPT_AT_OPEN`]
/// files: replayed WAL files stay live, and so in every checkpoint, until
/// their memtables are flushed. A job that fails after each restore
/// before that flush ends would otherwise restore a longer chain of them
/// every time (each restore adds the WAL files it writes to the copy).
/// Flushing during recovery cuts the chain to one or two files (the
/// tests check at most two).
pub(crate) fn db_options_for_open(resources: &Resources, wal_files: usize) -> Result<Options> {
    let mut options = db_options(resources);
    if wal_files > MAX_WAL_FILES_KEPT_AT_OPEN {
        return Ok(options);
    }
    options
        .get_options_from_string("avoid_flush_during_recovery=true")
        .map_err(|e| rocks_error("set avoid_flush_during_recovery", e))
}

/// The most WAL files a restore replays into memtables without flushing
/// them first ([`db_options_for_open`]). A checkpoint made when no flush
/// was running holds one or two: the finished WAL of the memtables it
/// switched and the new, nearly empty one. Each restore whose job fails
/// before the flush after it ends adds two (measured: the file it opens
/// and the one its checkpoint switches to).
pub(crate) const MAX_WAL_FILES_KEPT_AT_OPEN: usize = 8;

/// The WAL files in the database directory `db_path` (none if it does not
/// exist yet).
pub(crate) fn count_wal_files(db_path: &Path) -> usize {
    std::fs::read_dir(db_path)
        .map(|entries| {
            entries
                .filter_map(std::result::Result::ok)
                .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
                .count()
        })
        .unwrap_or(0)
}

/// RocksDB's `target_file_size_base`: the size of compaction outputs.
const TARGET_FILE_BYTES: u64 = 16 << 20;

/// Upper bound of the WAL's size before RocksDB flushes the memtables that
/// hold it back.
const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;

/// How much WAL RocksDB writes before it asks the kernel to start writing
/// it out (`sync_file_range`, no wait).
const WAL_BYTES_PER_SYNC: u64 = 256 << 10;

/// List appends concatenate frames; no read-modify-write.
fn append_merge(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands {
        out.extend_from_slice(op);
    }
    Some(out)
}
