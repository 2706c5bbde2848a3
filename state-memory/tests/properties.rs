//! Model-based property tests of the memory backend.
#![allow(clippy::unwrap_used)]
use state_api::testkit::{StorageFixture, TestTarget};

mod memory_backend_on_memory_storage {
    state_api::property_tests!(super::TestTarget::new(
        state_memory::MemoryStateBackend::new(),
        super::StorageFixture::memory
    ));
}

mod memory_backend_on_file_storage {
    state_api::property_tests!(super::TestTarget::new(
        state_memory::MemoryStateBackend::new(),
        super::StorageFixture::local_dir
    ));
}

mod memory_backend_on_s3_storage {
    state_api::property_tests!(super::TestTarget::new(
        state_memory::MemoryStateBackend::new(),
        super::StorageFixture::s3
    ));
}

mod memory_backend_on_hdfs_storage {
    state_api::property_tests!(super::TestTarget::new(
        state_memory::MemoryStateBackend::new(),
        super::StorageFixture::hdfs
    ));
}
