//! The conformance cases, one file per topic. Each case takes a
//! [`TestTarget`](crate::testkit::TestTarget) and panics on failure;
//! [`crate::conformance_tests!`] turns them into `#[test]`s. A topic file
//! ends with the list of its cases (`__conformance_<topic>!`): a new case
//! is added to its file's list, nowhere else.
#![allow(clippy::unwrap_used, missing_docs)]

pub mod damage;
pub mod folding;
pub mod iteration;
pub mod list;
pub mod map;
pub mod namespaces;
pub mod registration;
pub mod restore;
pub mod snapshot;
mod support;
pub mod timers;
pub mod ttl;
pub mod value;
