//! # state-api: the contract every streamstate state backend implements
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
//! ## Conformance
//!
//! With the `testkit` feature, [`testkit`] exports the conformance suite and
//! model-based property tests every backend runs from a two-line test file.

pub mod backend;
pub mod codec;
pub mod descriptor;
pub mod error;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod key_group;
pub mod operator_state;
pub mod snapshot;
pub mod state;
pub mod storage;
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
pub use storage::{CheckpointStorage, CompletedSnapshot, StorageOptions};
