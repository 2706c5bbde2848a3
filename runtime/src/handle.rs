//! [`JobHandle`]: a running job as its caller holds it: wait for it,
//! cancel it, take a savepoint, stop it with one; and what it returns
//! ([`JobResult`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};
use streamstate_api::{CheckpointStorage, Error, ErrorKind, Result};

use crate::config::RetentionOnCancellation;
use crate::execution::messages::Control;
use crate::execution::upload::Uploads;
use crate::metrics::{CompletedStats, JobMetrics};

/// What a finished job returns.
#[derive(Debug)]
pub struct JobResult<O> {
    /// The job id.
    pub job_id: String,
    /// Records the keyed operator's `finish` emitted (final results of a
    /// bounded input; empty after a cancel, and when they went to a
    /// [`crate::stream::Job::with_final_sink`]).
    pub final_records: Vec<O>,
    /// Completed checkpoints and savepoints (the last
    /// [`crate::metrics::COMPLETED_HISTORY`] of them).
    pub completed: Vec<CompletedStats>,
    /// URI of the last completed checkpoint or savepoint, to restart from.
    pub last_snapshot_path: Option<String>,
    /// Failed checkpoints.
    pub failed_checkpoints: u64,
    /// URI of the checkpoint or savepoint the job restored at start.
    pub restored_from: Option<String>,
    /// Records this run processed (after its restore; this process's
    /// only, on a cluster).
    pub records: u64,
    /// The savepoint a cluster job stopped with
    /// (`Job::execute_cluster_with`, feature `cluster`); `None` when it ran
    /// to its end.
    pub stopped_with_savepoint: Option<String>,
}

/// A running job.
pub struct JobHandle<O> {
    pub(crate) job_id: String,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) control: Sender<Control>,
    pub(crate) sources: Vec<JoinHandle<Result<()>>>,
    pub(crate) keyed: Vec<JoinHandle<Result<Vec<O>>>>,
    pub(crate) coordinator: Option<JoinHandle<Result<u64>>>,
    pub(crate) uploads: Uploads,
    pub(crate) metrics: Arc<JobMetrics>,
    pub(crate) storage: CheckpointStorage,
    pub(crate) retention: RetentionOnCancellation,
}

impl<O> std::fmt::Debug for JobHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
}

fn join<R>(handle: JoinHandle<Result<R>>, what: &str) -> Result<R> {
    handle.join().unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{what} thread panicked"),
        ))
    })
}

impl<O> JobHandle<O> {
    /// The job id (the directory under the checkpoint storage).
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Live counters.
    pub fn metrics(&self) -> &Arc<JobMetrics> {
        &self.metrics
    }

    /// Whether every source and keyed task has exited.
    pub fn is_finished(&self) -> bool {
        self.sources.iter().all(|h| h.is_finished()) && self.keyed.iter().all(|h| h.is_finished())
    }

    /// Takes a savepoint and waits for it; returns its URI.
    ///
    /// # Errors
    /// When the savepoint fails or the job is finishing.
    pub fn trigger_savepoint(&self) -> Result<String> {
        let (reply, response) = bounded(1);
        self.control
            .send(Control::TriggerSavepoint(reply))
            .map_err(|_| Error::invalid_argument("the job is no longer running"))?;
        response
            .recv()
            .unwrap_or_else(|_| Err(Error::invalid_argument("the job ended before the savepoint completed")))
    }

    /// Waits for a bounded job to finish.
    ///
    /// # Errors
    /// The first error of any task or of the coordinator.
    pub fn wait(mut self) -> Result<JobResult<O>> {
        self.finish(false)
    }

    /// Cancels the job (Flink's cancel): checkpoints are kept or deleted as
    /// configured.
    ///
    /// # Errors
    /// The first error of any task.
    pub fn cancel(mut self) -> Result<JobResult<O>> {
        self.cancel.store(true, Ordering::SeqCst);
        let result = self.finish(true);
        if self.retention == RetentionOnCancellation::Delete {
            self.storage
                .delete_dir(&streamstate_api::storage::layout::job_dir(&self.job_id))?;
        }
        result
    }

    /// Takes a savepoint, then cancels (Flink's stop-with-savepoint).
    /// Returns the savepoint's URI and the result.
    ///
    /// # Errors
    /// When the savepoint fails (the job keeps running then is cancelled).
    pub fn stop_with_savepoint(self) -> Result<(String, JobResult<O>)> {
        let savepoint = self.trigger_savepoint();
        self.cancel.store(true, Ordering::SeqCst);
        let mut this = self;
        let result = this.finish(true)?;
        Ok((savepoint?, result))
    }

    fn finish(&mut self, cancelled: bool) -> Result<JobResult<O>> {
        let mut first_error = None;
        // A source fails mostly because a keyed task stopped first; report
        // the keyed task's error, the cause, when there is one.
        let mut source_error = None;
        let mut final_records = Vec::new();
        for h in self.sources.drain(..) {
            if let Err(e) = join(h, "source") {
                source_error.get_or_insert(e);
            }
        }
        for h in self.keyed.drain(..) {
            match join(h, "keyed task") {
                Ok(records) if !cancelled => final_records.extend(records),
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Uploads report to the coordinator: wait for them before it stops.
        self.uploads.join_all();
        let _ = self.control.send(Control::Shutdown);
        let mut failed_checkpoints = 0;
        if let Some(h) = self.coordinator.take() {
            match join(h, "coordinator") {
                Ok(failed) => failed_checkpoints = failed,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error.or(source_error) {
            return Err(e);
        }
        Ok(JobResult::from_metrics(
            self.job_id.clone(),
            final_records,
            failed_checkpoints,
            &self.metrics,
        ))
    }
}

impl<O> JobResult<O> {
    /// The result of a job that ended: what its `metrics` recorded, with
    /// its final records (every executor builds it this way).
    pub(crate) fn from_metrics(
        job_id: String,
        final_records: Vec<O>,
        failed_checkpoints: u64,
        metrics: &JobMetrics,
    ) -> Self {
        Self {
            job_id,
            final_records,
            completed: metrics
                .completed
                .lock()
                .map(|c| c.iter().cloned().collect())
                .unwrap_or_default(),
            last_snapshot_path: metrics.last_snapshot_path.lock().ok().and_then(|p| p.clone()),
            failed_checkpoints,
            restored_from: metrics.restored_from.lock().ok().and_then(|p| p.clone()),
            records: metrics.records.load(Ordering::Relaxed),
            stopped_with_savepoint: None,
        }
    }
}

impl<O> Drop for JobHandle<O> {
    fn drop(&mut self) {
        // A handle dropped without wait/cancel stops its threads.
        if !self.sources.is_empty() || !self.keyed.is_empty() {
            self.cancel.store(true, Ordering::SeqCst);
            let _ = self.control.send(Control::Shutdown);
        }
    }
}
