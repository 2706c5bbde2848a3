//! # state-rocksdb: Flink's RocksDBStateBackend (not built yet)
//!
//! This crate will hold keyed state in a local RocksDB instance with native,
//! incremental snapshots uploaded through `state_api::CheckpointStorage`.
//! It is intentionally empty until that work lands: it exports nothing, so
//! nothing can mistake it for a working backend, and it compiles no C++.
