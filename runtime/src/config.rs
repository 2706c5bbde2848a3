//! Checkpoint configuration, named and defaulted as in Flink.

use std::time::Duration;

/// Exactly-once aligns barriers; at-least-once does not wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointingMode {
    /// Barriers are aligned: records after a barrier wait until every input
    /// delivered it (Flink's `EXACTLY_ONCE`).
    #[default]
    ExactlyOnce,
    /// Records keep flowing during alignment; a restore may count some
    /// twice, never zero times (Flink's `AT_LEAST_ONCE`).
    AtLeastOnce,
}

/// What happens to checkpoints when a job is cancelled (Flink's
/// externalized checkpoint retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetentionOnCancellation {
    /// Keep retained checkpoints so the job can be restarted from them.
    #[default]
    Retain,
    /// Delete the job's checkpoints on cancel.
    Delete,
}

/// Checkpointing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Time between checkpoint triggers; `None` disables checkpoints.
    pub interval: Option<Duration>,
    /// Barrier handling.
    pub mode: CheckpointingMode,
    /// A checkpoint not complete within this time is declined.
    pub timeout: Duration,
    /// Least time between the end of one checkpoint and the next trigger.
    pub min_pause: Duration,
    /// Checkpoints in flight at once (only 1 is supported).
    pub max_concurrent: u32,
    /// Failed checkpoints in a row the job tolerates before it fails.
    pub tolerable_failures: u32,
    /// Keep or delete checkpoints on cancel.
    pub retention_on_cancellation: RetentionOnCancellation,
    /// Completed checkpoints kept (Flink's `num-retained`, default 1).
    pub num_retained: usize,
    /// Ask backends for incremental snapshots when they support them.
    pub incremental: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval: None,
            mode: CheckpointingMode::ExactlyOnce,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            max_concurrent: 1,
            tolerable_failures: 0,
            retention_on_cancellation: RetentionOnCancellation::Retain,
            num_retained: 1,
            incremental: false,
        }
    }
}
