//! Live counters of a running job ([`JobMetrics`]) and the statistics of
//! its completed snapshots. A leaf module: tasks and the coordinator update
//! the counters, the handle reads them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use streamstate_api::{SnapshotKind, SnapshotStats};

/// Live counters of a running job.
#[derive(Debug, Default)]
pub struct JobMetrics {
    /// Records processed by the keyed operator (records a source folded
    /// into partial sums count when the partial sums are sent on).
    pub records: AtomicU64,
    /// Partial sums source tasks sent on in place of records (local-global
    /// aggregation, [`crate::plan::JobSettings::local_aggregation`]).
    pub partial_sums: AtomicU64,
    /// Records the keyed operator emitted (to its sink, and its final
    /// results).
    pub records_out: AtomicU64,
    /// Records that came after the watermark had passed the end of every
    /// window they belong to (plus the allowed lateness), and were dropped
    /// (Flink's `numLateRecordsDropped`).
    pub late_records: AtomicU64,
    /// Checkpoints and savepoints completed since the job started.
    pub checkpoints_completed: AtomicU64,
    /// Checkpoints that failed (expired or declined) since the job started.
    pub checkpoints_failed: AtomicU64,
    /// Id of the last completed checkpoint (0: none).
    pub last_checkpoint_id: AtomicU64,
    /// Duration of the last completed checkpoint, milliseconds.
    pub last_checkpoint_ms: AtomicU64,
    /// Bytes of the last completed checkpoint.
    pub last_checkpoint_bytes: AtomicU64,
    /// Input bytes read and total (file sources).
    pub input_progress: Mutex<Option<(u64, u64)>>,
    /// URI of the last completed checkpoint or savepoint.
    pub last_snapshot_path: Mutex<Option<String>>,
    /// URI of the checkpoint or savepoint the job restored at start.
    pub restored_from: Mutex<Option<String>>,
    /// How long the restore took (the slowest subtask's), milliseconds.
    pub restore_ms: AtomicU64,
    /// Bytes this process sent to its peers (the cluster executor's
    /// exchange and progress messages; 0 in one process).
    pub network_bytes_sent: AtomicU64,
    /// Each subtask's counters, by operator id and subtask index (see
    /// [`JobMetrics::task`]).
    pub tasks: Mutex<BTreeMap<(String, u32), Arc<TaskMetrics>>>,
    /// Statistics of the most recent completed snapshots, oldest first: at
    /// most [`COMPLETED_HISTORY`], so a job running for months does not
    /// grow (Flink keeps a bounded history too, `web.checkpoints.history`).
    pub completed: Mutex<VecDeque<CompletedStats>>,
}

impl JobMetrics {
    /// The counters of subtask `subtask` of operator `operator` (`source`,
    /// `keyed`), made on first use; a task holds on to them.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let metrics = streamstate_runtime::JobMetrics::default();
    /// metrics.task("keyed", 1).records_in.fetch_add(5, Ordering::Relaxed);
    /// assert_eq!(metrics.task_counts(), vec![("keyed".to_owned(), 1, 5, 0)]);
    /// ```
    pub fn task(&self, operator: &str, subtask: u32) -> Arc<TaskMetrics> {
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(tasks.entry((operator.to_owned(), subtask)).or_default())
    }

    /// Every subtask's `(operator, subtask, records in, records out)` now,
    /// in operator and subtask order.
    pub fn task_counts(&self) -> Vec<(String, u32, u64, u64)> {
        self.each_task(|t| {
            (
                t.records_in.load(Ordering::Relaxed),
                t.records_out.load(Ordering::Relaxed),
            )
        })
        .into_iter()
        .map(|(operator, subtask, (records_in, records_out))| (operator, subtask, records_in, records_out))
        .collect()
    }

    /// The state entries of every subtask of `operator` (the keyed one,
    /// [`crate::plan::KEYED_OPERATOR`]) as of its last checkpoint, in
    /// subtask order.
    pub fn state_entries(&self, operator: &str) -> Vec<(u32, u64)> {
        self.of_operator(operator, |t| Some(t.state_entries.load(Ordering::Relaxed)))
    }

    /// The current watermark of each subtask of `operator` that has one
    /// (event-time jobs' keyed subtasks), by subtask index.
    pub fn watermarks(&self, operator: &str) -> Vec<(u32, i64)> {
        self.of_operator(operator, |t| {
            Some(t.watermark.load(Ordering::Relaxed)).filter(|w| *w != i64::MIN)
        })
    }

    /// `read` of each subtask of `operator` it gives a value for, by
    /// subtask index.
    fn of_operator<R>(&self, operator: &str, read: impl Fn(&TaskMetrics) -> Option<R>) -> Vec<(u32, R)> {
        self.each_task(read)
            .into_iter()
            .filter(|(name, _, _)| name == operator)
            .filter_map(|(_, subtask, value)| value.map(|v| (subtask, v)))
            .collect()
    }

    fn each_task<R>(&self, read: impl Fn(&TaskMetrics) -> R) -> Vec<(String, u32, R)> {
        let tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks
            .iter()
            .map(|((operator, subtask), t)| (operator.clone(), *subtask, read(t)))
            .collect()
    }
}

/// One subtask's counters, Flink's per-task `numRecordsIn` and
/// `numRecordsOut`: a partial sum a source folded words into counts as
/// one record out of the source and one into the keyed subtask.
#[derive(Debug)]
pub struct TaskMetrics {
    /// Records (and partial sums) the subtask received; sources: none.
    pub records_in: AtomicU64,
    /// Records (and partial sums) the subtask sent on or emitted.
    pub records_out: AtomicU64,
    /// Entries in a keyed subtask's state as of its last checkpoint (its
    /// backend's [`streamstate_api::KeyedStateBackend::approximate_entries`]).
    pub state_entries: AtomicU64,
    /// A keyed subtask's current watermark in epoch milliseconds (Flink's
    /// `currentInputWatermark`); `i64::MIN` before any.
    pub watermark: AtomicI64,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            state_entries: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
        }
    }
}

/// How many completed snapshots [`JobMetrics::completed`] remembers.
pub const COMPLETED_HISTORY: usize = 1000;

/// Statistics of one completed checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedStats {
    /// Checkpoint id.
    pub id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Its directory URI.
    pub path: String,
    /// Durations and sizes.
    pub stats: SnapshotStats,
}
