//! # streamstate-api: the contract every streamstate state backend implements
//!
//! This crate is the bottom layer of streamstate. It defines what keyed state
//! is and how it is snapshotted, and it never depends on a backend: memory,
//! fs and RocksDB backends depend on it, not the other way round. (OpenDAL is
//! here because it is the storage abstraction checkpoints are written
//! through, not a state backend.)
//!
//! ## Key groups
//!
//! Every key hashes (xxh3-64 of its postcard bytes, see [`key_group`]) to one
//! of `max_parallelism` key groups (default 128). A parallel operator instance
//! owns a contiguous [`KeyGroupRange`]; snapshots are laid out by key group,
//! so a job restored at another parallelism reads only the groups each
//! instance now owns. This is Flink's rescaling model, and the hash is a
//! pinned, tested on-disk contract.
//!
//! ## State
//!
//! [`ValueState`], [`ListState`], [`MapState`], [`ReducingState`] and
//! [`AggregatingState`] are registered from descriptors (name, serde types,
//! optional [`ttl::TtlConfig`]) with a [`KeyedStateBackend`], and act on the
//! backend's current key. Backends store bytes; the typed layer in [`state`]
//! serializes with postcard. Non-keyed operator state (source offsets) lives
//! in [`operator_state`] and is split evenly across subtasks on restore.
//!
//! ## Namespaces and timers
//!
//! As in Flink, state can be scoped to a key and a *namespace* (a window):
//! [`namespaced`] registers any kind of state that way, and merges the
//! namespaces of list, reducing and aggregating state (session windows).
//! [`timers::TimerService`] keeps event- and processing-time timers per
//! (key, namespace, timestamp) and hands out due ones in timestamp order.
//! Both are stored as backend state, so every snapshot holds them and a
//! rescaling restore splits them by key group.
//!
//! ## The sync/async snapshot split
//!
//! Per-record calls are synchronous and local. A snapshot has a short
//! synchronous phase on the processing thread ([`KeyedStateBackend::snapshot`]
//! captures a consistent view, e.g. by sharing copy-on-write tables) and an
//! asynchronous phase ([`AsyncSnapshot::write`]) that writes that view to
//! [`CheckpointStorage`] on another thread while processing continues.
//! Writes after the synchronous phase are never part of the snapshot.
//!
//! ## The snapshot contract
//!
//! A snapshot is a set of files plus a `_metadata` manifest
//! ([`snapshot::manifest`]) that lists each file with its size and CRC-32C.
//! `_metadata` is written last and atomically: a checkpoint without it does
//! not exist. Restore verifies every checksum. The backend-neutral
//! [`snapshot::canonical`] format lets a savepoint taken on one backend be
//! restored into another. Layout, `latest`, and retention (which never
//! deletes a file a retained checkpoint references) are in [`storage`].
//!
//! ## Use it in your own engine
//!
//! An engine makes one keyed backend per parallel operator instance, sets
//! the current key before each record, and snapshots at a barrier; any
//! backend restores a canonical snapshot, at any parallelism. The
//! backends are crates of their own (`streamstate-memory`,
//! `streamstate-fs`, `streamstate-rocksdb`); each has an `examples/`
//! program that does this against it, and [`storage`] explains calling
//! storage from async code.
//!
//! ```
//! use streamstate_api::key_group::assign_to_key_group;
//! use streamstate_api::codec::encode_value;
//! use streamstate_api::{
//!     CheckpointStorage, KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt, MapStateDescriptor,
//!     SnapshotTarget, StateBackend, ValueStateDescriptor,
//! };
//! # fn main() -> streamstate_api::Result<()> {
//! const MAX_PARALLELISM: u32 = 128;
//! let dir = tempfile::tempdir().unwrap();
//! let storage = CheckpointStorage::open(&format!("file://{}", dir.path().display()))?;
//!
//! // Parallelism 1 on the memory backend: one instance owns every key group.
//! let options = KeyedBackendOptions::new("job", "counts", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
//! let mut backend = streamstate_memory::MemoryStateBackend::new().create_keyed_backend(options)?;
//! let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//! let positions = backend.map_state(&MapStateDescriptor::<u32, String>::new("positions"))?;
//! for (position, word) in ["to", "be", "or", "not", "to", "be"].into_iter().enumerate() {
//!     backend.set_current_key_typed(word)?;
//!     let seen = count.value(backend.as_mut())?.unwrap_or(0);
//!     count.update(backend.as_mut(), &(seen + 1))?;
//!     positions.put(backend.as_mut(), &(position as u32), &word.to_uppercase())?;
//! }
//!
//! // Checkpoint 1: a short synchronous phase, then the upload (on any thread).
//! let target = SnapshotTarget::checkpoint("job", 1, "counts-0");
//! let handle = backend.snapshot(&target)?.write(&storage, &target)?;
//!
//! // Restore into the fs backend at parallelism 2: each instance reads
//! // only its half of the key groups.
//! let fs = streamstate_fs::FsStateBackend::new();
//! for subtask in 0..2 {
//!     let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, 2, subtask);
//!     let options = KeyedBackendOptions::new("job", "counts", range, MAX_PARALLELISM);
//!     let mut restored = fs.restore_keyed_backend(options, std::slice::from_ref(&handle), &storage)?;
//!     let count = restored.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//!     let positions = restored.map_state(&MapStateDescriptor::<u32, String>::new("positions"))?;
//!     for (word, expected, first) in [("to", 2, 0), ("be", 2, 1), ("or", 1, 2), ("not", 1, 3)] {
//!         if range.contains(assign_to_key_group(&encode_value(word)?, MAX_PARALLELISM)) {
//!             restored.set_current_key_typed(word)?;
//!             assert_eq!(count.value(restored.as_mut())?, Some(expected));
//!             assert_eq!(positions.get(restored.as_mut(), &first)?, Some(word.to_uppercase()));
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Conformance
//!
//! With the `testkit` feature, `testkit` exports the conformance suite and
//! model-based property tests every backend runs from a two-line test file.

#![warn(missing_docs)]

pub mod backend;
pub mod codec;
pub mod descriptor;
pub mod error;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod handle;
pub mod key_group;
pub mod namespaced;
pub mod operator_state;
pub mod registry;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod timers;
pub mod ttl;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use backend::{
    AsyncSnapshot, Capabilities, FileRef, KeyedBackendOptions, KeyedStateBackend, KeyedStateHandle, SnapshotFormat,
    SnapshotKind, SnapshotTarget, StateBackend, StateId,
};
pub use descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    StateKind, StateMeta, ValueStateDescriptor,
};
pub use error::{Error, ErrorKind, Result};
pub use key_group::{KeyGroupRange, DEFAULT_MAX_PARALLELISM};
pub use snapshot::manifest::{OperatorSnapshot, SnapshotManifest, SnapshotStats};
pub use state::{AggregatingState, KeyedStateBackendExt, ListState, MapState, ReducingState, ValueState};
pub use storage::{AsyncCheckpointStorage, CheckpointStorage, CompletedSnapshot, IoExecutor, StorageOptions};
