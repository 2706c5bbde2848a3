//! # streamstate-runtime
//!
//! A small dataflow runtime in the spirit of Flink's DataStream API: line
//! sources (file, socket, generator), stateless `map` / `filter` /
//! `flat_map`, `key_by`, a keyed operator with keyed state (`sum`, or any
//! [`function::KeyedProcessFunction`]), and sinks (`print`, files).
//!
//! Sources and keyed subtasks run on their own threads, linked by bounded
//! crossbeam channels that carry batches of records (backpressure, not
//! unbounded queues). Checkpoints follow Flink's barrier protocol, see
//! [`execution`]: the coordinator injects barriers at the sources, keyed tasks
//! align them (exactly-once) or not (at-least-once), snapshot on the
//! barrier (only the synchronous part on the processing thread), and the
//! coordinator commits `_metadata` when all have acknowledged.
//!
//! Backends are chosen by Cargo feature ([`backends`]); a build without the
//! `rocksdb` feature compiles no C++.

#![warn(missing_docs)]

pub mod aggregate;
pub mod backends;
pub mod config;
pub mod event_time;
pub mod execution;
pub mod function;
pub mod handle;
pub mod metrics;
mod mini_batch;
mod operator;
pub mod plan;
pub mod sink;
pub mod source;
pub mod stream;
pub mod window;
pub mod word_count;

pub use config::{CheckpointConfig, CheckpointingMode, RetentionOnCancellation};
pub use handle::{JobHandle, JobResult};
pub use metrics::{JobMetrics, TaskMetrics};
pub use plan::{Job, JobSettings, RestoreFrom};
pub use stream::{DataStream, KeyedStream, ProcessedStream, StreamExecutionEnvironment, TimestampedStream};
