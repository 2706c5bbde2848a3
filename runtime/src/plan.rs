//! The logical job: what the [`crate::stream`] builder produces and an
//! executor runs. Data only: settings, the source, the stateless chain, the
//! key selector, the keyed function and the sinks. Nothing here starts a
//! thread or touches storage.

use std::sync::Arc;

use streamstate_api::{CheckpointStorage, StateBackend, DEFAULT_MAX_PARALLELISM};

use crate::aggregate::ValueOf;
use crate::config::CheckpointConfig;
use crate::function::KeyedProcessFunction;
use crate::mini_batch::Accumulator;
use crate::operator::KeyedOperator;
use crate::sink::Sink;

/// Operator id of the sources in manifests.
pub const SOURCE_OPERATOR: &str = "source";
/// Operator id of the keyed operator in manifests.
pub const KEYED_OPERATOR: &str = "keyed";

/// Where a job's state comes from at start.
#[derive(Debug, Clone)]
pub enum RestoreFrom {
    /// The newest completed checkpoint under the checkpoint storage (any
    /// job); falls back to older ones when its files are damaged.
    Latest,
    /// A checkpoint or savepoint directory (`<job>/chk-<n>` or
    /// `savepoints/savepoint-...`) in `storage`.
    Snapshot {
        /// Storage holding the snapshot.
        storage: CheckpointStorage,
        /// Its directory relative to the storage root.
        dir: String,
    },
}

/// Job-wide settings, copied into every stream built from an environment.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Parallelism of the keyed operator.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Checkpointing.
    pub checkpoint: CheckpointConfig,
    /// The state backend (default: fs).
    pub backend: Option<Arc<dyn StateBackend>>,
    /// Where checkpoints go (default: `memory://`).
    pub storage: Option<CheckpointStorage>,
    /// Restore at start.
    pub restore: Option<RestoreFrom>,
    /// Records per batch handed between threads.
    pub batch_size: usize,
    /// Batches in flight per channel (backpressure beyond).
    pub channel_capacity: usize,
    /// Distinct keys a `sum` folds in its mini-batch before writing them to
    /// state, when nobody reads its per-record output; `None` (the default)
    /// lets the backend choose: [`crate::aggregate::SUM_MINI_BATCH_KEYS`],
    /// or [`crate::aggregate::SUM_MINI_BATCH_KEYS_OVER_WRITE_BACK`] over
    /// RocksDB's write-back cache.
    pub mini_batch_keys: Option<usize>,
    /// Whether a `sum` whose per-record output nobody reads is also folded
    /// on the source thread before the shuffle, in a small table of
    /// [`crate::execution::LOCAL_SUM_KEYS`] keys (Flink SQL's local-global
    /// aggregation, `table.optimizer.agg-phase-strategy: TWO_PHASE`). On
    /// by default; the sums in state are the same either way.
    pub local_aggregation: bool,
    /// Job id (default: generated).
    pub job_id: Option<String>,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            parallelism: 1,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            checkpoint: CheckpointConfig::default(),
            backend: None,
            storage: None,
            restore: None,
            batch_size: 1024,
            channel_capacity: 16,
            mini_batch_keys: None,
            local_aggregation: true,
            job_id: None,
        }
    }
}

/// Builds source subtask `subtask` of `parallelism`, from its restored
/// operator state if the job restores (see
/// [`crate::StreamExecutionEnvironment::add_source`]).
pub type SourceFactory = Arc<
    dyn Fn(
            u32,
            u32,
            Option<&mut streamstate_api::operator_state::OperatorStateStore>,
        ) -> streamstate_api::Result<Box<dyn crate::source::LineSource>>
        + Send
        + Sync,
>;

/// How to build the source subtasks.
#[derive(Clone)]
pub(crate) struct SourceSpec {
    pub(crate) parallelism: u32,
    pub(crate) factory: SourceFactory,
}

/// The stateless part of a pipeline: turns one source line into any number
/// of records.
pub(crate) type Chain<T> = Arc<dyn Fn(String, &mut dyn FnMut(T)) + Send + Sync>;

/// The key of a record.
pub(crate) type KeyOf<K, T> = Arc<dyn Fn(&T) -> K + Send + Sync>;

/// Creates one process function per keyed subtask.
pub type ProcessFactory<K, T, O> = Arc<dyn Fn() -> Box<dyn KeyedProcessFunction<K, T, O>> + Send + Sync>;

/// Creates the keyed operator of each keyed subtask: a user's function
/// behind its adapter, or the runtime's pre-aggregation.
pub(crate) type OperatorFactory<K, T, O, A> = Arc<dyn Fn() -> Box<dyn KeyedOperator<K, T, O, A>> + Send + Sync>;

/// Creates one sink per keyed subtask: `(subtask, parallelism)`.
pub type SinkFactory<O> = Arc<dyn Fn(u32, u32) -> streamstate_api::Result<Box<dyn Sink<O>>> + Send + Sync>;

/// A complete pipeline, ready for an executor ([`Job::execute`] runs it
/// on this process's threads). `A` is the accumulator a pre-aggregating
/// keyed operator (`sum`, `aggregate`) lets sources fold ahead of the
/// shuffle; `()` for a [`KeyedProcessFunction`].
pub struct Job<K, T, O, A: Accumulator = ()> {
    pub(crate) settings: JobSettings,
    pub(crate) source: SourceSpec,
    pub(crate) chain: Chain<T>,
    pub(crate) key_of: KeyOf<K, T>,
    /// Event time: record timestamps and how sources make watermarks.
    pub(crate) watermarks: Option<crate::event_time::WatermarkStrategy<T>>,
    pub(crate) factory: OperatorFactory<K, T, O, A>,
    /// For a pre-aggregation: what a record adds to its key's accumulator,
    /// which source tasks may fold before the shuffle (see
    /// [`JobSettings::local_aggregation`]).
    pub(crate) local_sum: Option<ValueOf<T, A>>,
    pub(crate) sink: SinkFactory<O>,
    pub(crate) final_sink: Option<SinkFactory<O>>,
}

impl<K, T, O, A: Accumulator> std::fmt::Debug for Job<K, T, O, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
