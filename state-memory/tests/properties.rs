//! Model-based property tests of the memory backend.
#![allow(clippy::unwrap_used)]
use streamstate_api::testkit::{StorageFixture, TestTarget};

mod memory_backend_on_memory_storage {
    streamstate_api::property_tests!(super::TestTarget::new(
        streamstate_memory::MemoryStateBackend::new(),
        super::StorageFixture::memory
    ));
}

mod memory_backend_on_file_storage {
    streamstate_api::property_tests!(super::TestTarget::new(
        streamstate_memory::MemoryStateBackend::new(),
        super::StorageFixture::local_dir
    ));
}

#[cfg(feature = "remote-tests")]
mod memory_backend_on_s3_storage {
    streamstate_api::property_tests!(super::TestTarget::new(
        streamstate_memory::MemoryStateBackend::new(),
        super::StorageFixture::s3
    ));
}

#[cfg(feature = "remote-tests")]
mod memory_backend_on_hdfs_storage {
    streamstate_api::property_tests!(super::TestTarget::new(
        streamstate_memory::MemoryStateBackend::new(),
        super::StorageFixture::hdfs
    ));
}
