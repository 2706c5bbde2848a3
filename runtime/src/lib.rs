//! # streamstate-runtime
//!
//! The dataflow runtime (sources, operators, `key_by`, barrier checkpoints)
//! is being built; this crate currently provides what the CLI and tests need
//! first: choosing a state backend by the names Flink users write, with each
//! backend compiled in only when its Cargo feature is on (`memory`, `fs`,
//! `rocksdb`; storage services `s3` and `hdfs` are features of `state-api`
//! forwarded from here). A build without `rocksdb` compiles no C++.

pub mod backends;
