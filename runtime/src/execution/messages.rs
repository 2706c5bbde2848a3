//! What the tasks of a running job send each other: records and partial
//! accumulators with barriers on the data channels, acknowledgements and commands
//! on the control channel. A leaf module: every task uses it, it uses none.

use std::time::Duration;

use crossbeam_channel::Sender;
use streamstate_api::snapshot::manifest::OperatorStateHandle;
use streamstate_api::{Error, KeyedStateHandle, Result, SnapshotKind};

use crate::mini_batch::{Accumulator, KeyBytes};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Barrier {
    pub(crate) id: u64,
    pub(crate) kind: SnapshotKind,
}

/// A record on its way to a keyed task. The key travels serialized only:
/// the keyed task needs its bytes (key group, state lookups, mini-batch),
/// and decodes the key itself only when a function's `process` runs, so a
/// record carries no owned key to allocate on the source thread and free on
/// the keyed one.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Record<T> {
    pub(crate) key_bytes: KeyBytes,
    /// [`key_hash`] of `key_bytes`: the source routes by it, and the keyed
    /// task's mini-batch finds the key's slot by it without hashing again.
    pub(crate) key_hash: u64,
    pub(crate) value: T,
}

/// The accumulator of several records of one key, folded on a source
/// thread (local-global aggregation, see
/// [`crate::plan::JobSettings::local_aggregation`]).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Partial<A> {
    pub(crate) key_bytes: KeyBytes,
    /// As [`Record::key_hash`].
    pub(crate) key_hash: u64,
    pub(crate) acc: A,
}

/// What a keyed task groups its records and partial sums by.
pub(crate) trait WithKeyHash {
    fn key_hash(&self) -> u64;
}

impl<T> WithKeyHash for Record<T> {
    fn key_hash(&self) -> u64 {
        self.key_hash
    }
}

impl<A: Accumulator> WithKeyHash for Partial<A> {
    fn key_hash(&self) -> u64 {
        self.key_hash
    }
}

pub(crate) enum Message<T, A> {
    Batch(Vec<Record<T>>),
    Partials(Vec<Partial<A>>),
    Barrier(Barrier),
    /// The source's watermark: no record it sends later has an event time
    /// at or below it (later ones may, and are late).
    Watermark(i64),
    /// The source read nothing for its idle timeout
    /// ([`crate::event_time::WatermarkStrategy::with_idleness`]): leave
    /// it out of the watermark until its next one.
    Idle,
    End,
}

pub(crate) enum TaskSnapshot {
    Source(OperatorStateHandle),
    Keyed(KeyedStateHandle),
}

pub(crate) struct Ack {
    pub(crate) id: u64,
    pub(crate) snapshot: TaskSnapshot,
    pub(crate) sync: Duration,
    pub(crate) async_time: Duration,
}

pub(crate) enum Control {
    Ack(Box<Ack>),
    Decline {
        id: u64,
        error: Error,
    },
    /// A source reached the end of its input, having injected every
    /// barrier up to `last_barrier` (none: `None`).
    SourceFinished {
        last_barrier: Option<u64>,
    },
    TriggerSavepoint(Sender<Result<String>>),
    Shutdown,
}
