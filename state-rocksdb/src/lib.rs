//! # streamstate-rocksdb: Flink's RocksDBStateBackend
//!
//! Keyed state lives in a local RocksDB instance per operator instance (one
//! column family per state, keys prefixed by their key group, list appends
//! through a merge operator). Memory is bounded per process: all instances
//! share one block cache and one write-buffer manager charged to it
//! ([`RocksDbConfig`]).
//!
//! Snapshots: the synchronous phase copies the write-back cache's dirty
//! cells into a buffer and starts a thread that switches the memtables and
//! takes a RocksDB checkpoint (hard links to the SSTs and the finished WAL,
//! no flush), while the task thread goes on without writing RocksDB until
//! it has; the asynchronous phase uploads the files through the same
//! [`streamstate_api::CheckpointStorage`] as every backend. Incremental mode uploads
//! each SST file once to `shared/` and references it afterwards; retention
//! never deletes a shared file a retained checkpoint references. Savepoints
//! use the canonical format, so they restore into any backend. With
//! [`RocksDbConfig::changelog`] on, most incremental checkpoints upload only
//! the writes made since the one before ([`changelog`]'s docs).
//!
//! Restore downloads files in parallel and opens them. At another
//! parallelism, as in Flink, the old instance sharing the most key groups
//! is opened as the new one and clipped to its range (its SSTs wholly
//! outside the range dropped, range deletions over the rest, which a
//! thread then compacts away while the job runs:
//! [`RocksDbConfig::compact_clipped_ranges`]); the owned key groups of any
//! other old instance are copied in. Working
//! directories live under [`RocksDbConfig::local_dir`] (Flink's
//! `state.backend.rocksdb.localdir`), are removed on clean shutdown, and
//! directories left by dead processes are removed, not reused.

#![warn(missing_docs)]

mod backend;
mod config;
mod errors;
mod factory;
mod files;
mod keys;
mod options;
mod resources;
mod restore;
mod snapshots;
mod write_path;

pub use backend::{RocksDbKeyedStateBackend, ROCKSDB_CAPABILITIES};
pub use config::{RocksDbConfig, TimerStore, DEFAULT_WRITE_BACK_ENTRIES};
pub use factory::RocksDbStateBackend;
pub use resources::Resources;
pub use snapshots::changelog;
