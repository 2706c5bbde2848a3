//! The conformance suite and model-based property tests every backend runs.
//!
//! A backend crate adds a test file like:
//!
//! ```ignore
//! mod on_memory { streamstate_api::conformance_tests!(streamstate_api::testkit::TestTarget::new(MyBackend::new(), streamstate_api::testkit::StorageFixture::memory)); }
//! mod on_file { streamstate_api::conformance_tests!(streamstate_api::testkit::TestTarget::new(MyBackend::new(), streamstate_api::testkit::StorageFixture::local_dir)); }
//! ```
//!
//! [`conformance_tests!`](crate::conformance_tests) expands to one `#[test]`
//! per spec-named case in [`conformance`]; [`property_tests!`](crate::property_tests)
//! adds the model-based property tests of [`model`].

pub mod conformance;
mod fixture;
mod macros;
pub mod model;

pub use fixture::*;
