//! The state-api conformance suite on the memory backend, over `memory://`
#![allow(clippy::unwrap_used)]
//! and `file://` checkpoint storage.
use streamstate_api::testkit::{StorageFixture, TestTarget};

mod memory_backend_on_memory_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        streamstate_memory::MemoryStateBackend::new(),
        super::StorageFixture::memory
    ));
}

mod memory_backend_on_file_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        streamstate_memory::MemoryStateBackend::new(),
        super::StorageFixture::local_dir
    ));
}

#[cfg(feature = "remote-tests")]
mod memory_backend_on_s3_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        streamstate_memory::MemoryStateBackend::new(),
        super::StorageFixture::s3
    ));
}

#[cfg(feature = "remote-tests")]
mod memory_backend_on_hdfs_storage {
    streamstate_api::conformance_tests!(super::TestTarget::new(
        streamstate_memory::MemoryStateBackend::new(),
        super::StorageFixture::hdfs
    ));
}
