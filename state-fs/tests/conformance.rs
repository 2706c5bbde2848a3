//! The state-api conformance suite and property tests on the fs backend over
#![allow(clippy::unwrap_used)]
//! `file://`, `s3://` (a real S3 server) and `hdfs://` (a real HDFS).
use state_api::testkit::{StorageFixture, TestTarget};

mod fs_backend_on_file_storage {
    state_api::conformance_tests!(super::TestTarget::new(
        state_fs::FsStateBackend::new(),
        super::StorageFixture::local_dir
    ));
    state_api::property_tests!(super::TestTarget::new(
        state_fs::FsStateBackend::new(),
        super::StorageFixture::local_dir
    ));
}

/// Incremental checkpoints: chains of a full file and deltas in `shared/`.
mod fs_backend_incremental_on_file_storage {
    state_api::conformance_tests!(super::TestTarget::new(
        state_fs::FsStateBackend::new(),
        super::StorageFixture::local_dir
    )
    .with_incremental_snapshots());
    state_api::property_tests!(super::TestTarget::new(
        state_fs::FsStateBackend::new(),
        super::StorageFixture::local_dir
    )
    .with_incremental_snapshots());
}

mod fs_backend_incremental_on_s3_storage {
    state_api::property_tests!(
        super::TestTarget::new(state_fs::FsStateBackend::new(), super::StorageFixture::s3)
            .with_incremental_snapshots()
            .with_property_cases(64)
    );
}

mod fs_backend_on_s3_storage {
    state_api::conformance_tests!(super::TestTarget::new(
        state_fs::FsStateBackend::new(),
        super::StorageFixture::s3
    ));
    state_api::property_tests!(super::TestTarget::new(
        state_fs::FsStateBackend::new(),
        super::StorageFixture::s3
    ));
}

mod fs_backend_on_hdfs_storage {
    state_api::conformance_tests!(super::TestTarget::new(
        state_fs::FsStateBackend::new(),
        super::StorageFixture::hdfs
    ));
    state_api::property_tests!(super::TestTarget::new(
        state_fs::FsStateBackend::new(),
        super::StorageFixture::hdfs
    ));
}
