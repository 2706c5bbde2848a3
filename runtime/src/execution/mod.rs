//! Execution: restore, threads, barriers, the checkpoint coordinator.
//!
//! ```text
//!  source 0 ─┐  batches + barriers     ┌─► keyed 0 ─► sink 0
//!  source 1 ─┼──(bounded channels)─────┼─► keyed 1 ─► sink 1
//!            │   routed by key group   │
//!            └────────── acks ─────────┴──► coordinator ─► _metadata
//! ```
//!
//! The coordinator sends a barrier command to every source. A source
//! flushes its batches, snapshots its position (operator state) and sends
//! the barrier into every output channel. A keyed task that has seen the
//! barrier on every input (blocking inputs that delivered it, in
//! exactly-once mode) takes the synchronous snapshot on its own thread and
//! hands the asynchronous write to a helper thread, which acknowledges to
//! the coordinator. When every task has acknowledged, the coordinator
//! commits `_metadata` and then applies retention.
//!
//! | module | job |
//! |---|---|
//! | `messages` | what tasks send each other |
//! | `source_task`, `keyed_task`, `coordinator` | one thread kind each |
//! | `restore` | state at start, by key-group range |
//! | `upload` | snapshot targets, asynchronous phases |
//! | `local` | the local executor: threads and channels of one process |
//! | `cluster` | the cluster executor: timely-dataflow workers in N processes (feature `cluster`) |
//!
//! The tasks, the coordinator, restore and upload know nothing of threads
//! being in one process; an executor wires them.

#[cfg(feature = "cluster")]
pub mod cluster;
pub(crate) mod coordinator;
pub(crate) mod keyed_task;
pub(crate) mod local;
pub(crate) mod messages;
pub(crate) mod restore;
pub(crate) mod source_task;
pub(crate) mod upload;

#[cfg(feature = "cluster")]
pub use cluster::{ClusterConfig, ClusterSignals, DEFAULT_STARTUP_TIMEOUT};
pub use source_task::LOCAL_SUM_KEYS;
