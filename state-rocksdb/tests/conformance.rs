//! The state-api conformance suite and property tests on the RocksDB
//! backend: canonical, native incremental and changelog snapshots, over `file://`,
//! `s3://` (a real S3 server) and `hdfs://` (a real HDFS).
#![allow(clippy::unwrap_used)]
use streamstate_api::testkit::{StorageFixture, TestTarget};
use streamstate_rocksdb::RocksDbStateBackend;

#[cfg(feature = "remote-tests")]
fn s3() -> StorageFixture {
    StorageFixture::from_env("STREAMSTATE_TEST_S3_URI")
}

#[cfg(feature = "remote-tests")]
fn hdfs() -> StorageFixture {
    StorageFixture::from_env("STREAMSTATE_TEST_HDFS_URI")
}

mod rocksdb_native_on_file_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        super::RocksDbStateBackend::default(),
        super::StorageFixture::local_dir
    )
    .with_native_incremental_snapshots());
    streamstate_api::property_tests!(super::TestTarget::new(
        super::RocksDbStateBackend::default(),
        super::StorageFixture::local_dir
    )
    .with_native_incremental_snapshots());
}

/// A write-back cache of 16 keys: the property tests'
/// few keys then go through every path of the cache (dirty writes, clean
/// reads, emptying a full cache, removals) instead of staying cached.
fn tiny_write_back_cache() -> RocksDbStateBackend {
    RocksDbStateBackend::new(streamstate_rocksdb::RocksDbConfig {
        write_back_entries: 16,
        ..streamstate_rocksdb::RocksDbConfig::default()
    })
}

mod rocksdb_tiny_write_back_cache_on_file_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        super::tiny_write_back_cache(),
        super::StorageFixture::local_dir
    )
    .with_native_incremental_snapshots());
    streamstate_api::property_tests!(super::TestTarget::new(
        super::tiny_write_back_cache(),
        super::StorageFixture::local_dir
    )
    .with_native_incremental_snapshots());
}

/// Changelog checkpoints: a base, then segments of the writes since the
/// checkpoint before. With the tiny cache, the property tests' writes take
/// every path into the changelog: cache writes, emptying, removals, and the
/// writes around the cache (maps, appends to uncached lists).
fn changelog(write_back_entries: usize) -> RocksDbStateBackend {
    RocksDbStateBackend::new(streamstate_rocksdb::RocksDbConfig {
        write_back_entries,
        changelog: true,
        ..streamstate_rocksdb::RocksDbConfig::default()
    })
}

mod rocksdb_changelog_on_file_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        super::changelog(streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES),
        super::StorageFixture::local_dir
    )
    .with_native_incremental_snapshots());
    // Half the cases of the modules above: the writes through a changelog
    // are the same as without one, only snapshots and restores differ.
    streamstate_api::property_tests!(
        super::TestTarget::new(super::changelog(16), super::StorageFixture::local_dir)
            .with_native_incremental_snapshots()
            .with_property_cases(128)
    );
}

/// Flink's `HEAP` timer service factory: timers in memory too, RocksDB's
/// timer column families keyed by key first (the modules above keep them
/// in timestamp order, the default).
fn heap_timers() -> RocksDbStateBackend {
    RocksDbStateBackend::new(streamstate_rocksdb::RocksDbConfig {
        timer_store: streamstate_rocksdb::TimerStore::Heap,
        ..streamstate_rocksdb::RocksDbConfig::default()
    })
}

mod rocksdb_heap_timers_on_file_storage {
    streamstate_api::conformance_tests!(
        super::TestTarget::new(super::heap_timers(), super::StorageFixture::local_dir)
            .with_native_incremental_snapshots()
    );
    streamstate_api::property_tests!(
        super::TestTarget::new(super::heap_timers(), super::StorageFixture::local_dir)
            .with_native_incremental_snapshots()
            .with_property_cases(64)
    );
}

mod rocksdb_canonical_on_file_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        super::RocksDbStateBackend::default(),
        super::StorageFixture::local_dir
    ));
}

#[cfg(feature = "remote-tests")]
// Native snapshots are several files each (SSTs, MANIFEST, OPTIONS), so the
// property tests on remote storage wait on many more round trips than on
// file://; they run fewer cases there (file:// runs the full 256).
mod rocksdb_native_on_s3_storage {
    streamstate_api::conformance_tests!(
        super::TestTarget::new(super::RocksDbStateBackend::default(), super::s3).with_native_incremental_snapshots()
    );
    streamstate_api::property_tests!(super::TestTarget::new(super::RocksDbStateBackend::default(), super::s3)
        .with_native_incremental_snapshots()
        .with_property_cases(128));
}

#[cfg(feature = "remote-tests")]
mod rocksdb_native_on_hdfs_storage {
    streamstate_api::conformance_tests!(
        super::TestTarget::new(super::RocksDbStateBackend::default(), super::hdfs).with_native_incremental_snapshots()
    );
    // hdfs-native waits ~220 ms for each file close.
    streamstate_api::property_tests!(
        super::TestTarget::new(super::RocksDbStateBackend::default(), super::hdfs)
            .with_native_incremental_snapshots()
            .with_property_cases(64)
    );
}
