//! The state-api conformance suite on the memory backend, over `memory://`
#![allow(clippy::unwrap_used)]
//! and `file://` checkpoint storage.
use state_api::testkit::{StorageFixture, TestTarget};

mod memory_backend_on_memory_storage {
    state_api::conformance_tests!(super::TestTarget::new(
        state_memory::MemoryStateBackend::new(),
        super::StorageFixture::memory
    ));
}

mod memory_backend_on_file_storage {
    state_api::conformance_tests!(super::TestTarget::new(
        state_memory::MemoryStateBackend::new(),
        super::StorageFixture::local_dir
    ));
}

mod memory_backend_on_s3_storage {
    state_api::conformance_tests!(super::TestTarget::new(
        state_memory::MemoryStateBackend::new(),
        super::StorageFixture::s3
    ));
}

mod memory_backend_on_hdfs_storage {
    state_api::conformance_tests!(super::TestTarget::new(
        state_memory::MemoryStateBackend::new(),
        super::StorageFixture::hdfs
    ));
}
