//! Snapshots of a RocksDB instance: the synchronous phase's RocksDB
//! checkpoint made on a thread of its own (`local_checkpoint`), the
//! asynchronous phases of native (`native`) and canonical (`canonical`)
//! snapshots, and changelog checkpoints (`changelog`, with `fold`, which
//! folds a segment's writes into sorted tables).

pub(crate) mod canonical;
pub mod changelog;
pub(crate) mod fold;
pub(crate) mod local_checkpoint;
pub(crate) mod native;
