//! The state-api conformance suite and property tests on the fs backend over
#![allow(clippy::unwrap_used)]
//! `file://`, `s3://` (a real S3 server) and `hdfs://` (a real HDFS).
use streamstate_api::testkit::{StorageFixture, TestTarget};

mod fs_backend_on_file_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        streamstate_fs::FsStateBackend::new(),
        super::StorageFixture::local_dir
    ));
    streamstate_api::property_tests!(super::TestTarget::new(
        streamstate_fs::FsStateBackend::new(),
        super::StorageFixture::local_dir
    ));
}

/// Incremental checkpoints: chains of a full file and deltas in `shared/`.
mod fs_backend_incremental_on_file_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        streamstate_fs::FsStateBackend::new(),
        super::StorageFixture::local_dir
    )
    .with_incremental_snapshots());
    streamstate_api::property_tests!(super::TestTarget::new(
        streamstate_fs::FsStateBackend::new(),
        super::StorageFixture::local_dir
    )
    .with_incremental_snapshots());
}

#[cfg(feature = "remote-tests")]
mod fs_backend_incremental_on_s3_storage {
    streamstate_api::property_tests!(super::TestTarget::new(
        streamstate_fs::FsStateBackend::new(),
        super::StorageFixture::s3
    )
    .with_incremental_snapshots()
    .with_property_cases(64));
}

#[cfg(feature = "remote-tests")]
mod fs_backend_on_s3_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        streamstate_fs::FsStateBackend::new(),
        super::StorageFixture::s3
    ));
    streamstate_api::property_tests!(super::TestTarget::new(
        streamstate_fs::FsStateBackend::new(),
        super::StorageFixture::s3
    ));
}

#[cfg(feature = "remote-tests")]
mod fs_backend_on_hdfs_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        streamstate_fs::FsStateBackend::new(),
        super::StorageFixture::hdfs
    ));
    streamstate_api::property_tests!(super::TestTarget::new(
        streamstate_fs::FsStateBackend::new(),
        super::StorageFixture::hdfs
    ));
}
