//! Where snapshots go: checkpoint storage built from a URI on an Apache
//! OpenDAL [`opendal::Operator`].
//!
//! One storage value serves one checkpoint directory (the URI's root). All
//! paths passed to it are relative to that root and use `/`.
//!
//! The core is async, as OpenDAL is: [`AsyncCheckpointStorage`], for code
//! that runs on a Tokio runtime. [`CheckpointStorage`] is its blocking
//! facade, what state backends and processing threads call: it runs each
//! call on an [`IoExecutor`] (the crate's shared I/O runtime, or the
//! embedder's) and works from any thread, a thread of a Tokio runtime
//! (current-thread or multi-thread) included: outside a runtime the
//! caller's thread drives the future; on a runtime's thread a scoped
//! thread outside it does, while the caller waits (in `block_in_place` on
//! a multi-thread runtime), so no call panics with "Cannot start a runtime
//! from within a runtime" and none deadlocks.
//!
//! On top of raw file access it implements Flink's layout ([`layout`]), the
//! commit protocol (`_metadata` last, atomically), listing, `latest`, and
//! retention ([`retention`] plans it, [`AsyncCheckpointStorage::apply_retention`]
//! carries it out).
//!
//! | module | job |
//! |---|---|
//! | `options` | [`StorageOptions`], part sizes |
//! | `operator` | the OpenDAL operator for a URI, with its layers |
//! | `executor` | [`IoExecutor`]: where blocking calls run |
//! | `files` | [`AsyncCheckpointStorage`]: file I/O |
//! | `checkpoints` | commit, load, list, latest, retention on it |
//! | `blocking` | [`CheckpointStorage`], the blocking facade |

mod blocking;
mod checkpoints;
mod executor;
mod files;
pub mod layout;
mod operator;
mod options;
pub mod retention;
#[cfg(feature = "s3")]
mod s3;
pub mod uri;

pub use blocking::CheckpointStorage;
pub use checkpoints::{CompletedSnapshot, RetentionReport, SnapshotListing};
pub use executor::IoExecutor;
pub use files::AsyncCheckpointStorage;
pub use options::StorageOptions;
pub use retention::{CheckpointEntry, RetentionPlan};
pub use uri::{redact_uri, StorageScheme, StorageUri, SUPPORTED_SCHEMES};
