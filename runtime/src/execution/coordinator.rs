//! The checkpoint coordinator's thread: triggers checkpoints on the
//! interval and savepoints on request, collects every task's
//! acknowledgement, commits `_metadata` (the commit point), applies
//! retention, and fails the job after too many failed checkpoints in a row.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use streamstate_api::{
    CheckpointStorage, Error, ErrorKind, OperatorSnapshot, Result, SnapshotKind, SnapshotManifest, SnapshotStats,
};

use super::messages::{Ack, Barrier, Control, TaskSnapshot};
use super::restore::snapshot_uri;
use crate::metrics::{CompletedStats, JobMetrics, COMPLETED_HISTORY};
use crate::plan::{JobSettings, KEYED_OPERATOR, SOURCE_OPERATOR};

struct Pending {
    barrier: Barrier,
    started: Instant,
    acks: Vec<Ack>,
    reply: Option<Sender<Result<String>>>,
}

pub(crate) struct Coordinator {
    pub(crate) job_id: String,
    pub(crate) settings: JobSettings,
    pub(crate) storage: CheckpointStorage,
    pub(crate) control: Receiver<Control>,
    /// Where barriers go: one per source task (local), or one per
    /// executor that delivers them itself (cluster).
    pub(crate) sources: Vec<Sender<Barrier>>,
    /// Source subtasks that acknowledge each snapshot.
    pub(crate) source_parallelism: u32,
    pub(crate) expected_acks: usize,
    pub(crate) next_id: u64,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) metrics: Arc<JobMetrics>,
}

impl Coordinator {
    fn trigger(&mut self, kind: SnapshotKind, reply: Option<Sender<Result<String>>>) -> Option<Pending> {
        let barrier = Barrier { id: self.next_id, kind };
        self.next_id += 1;
        for source in &self.sources {
            if source.send(barrier).is_err() {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::invalid_argument("the job is finishing; no snapshot taken")));
                }
                return None;
            }
        }
        tracing::debug!(id = barrier.id, ?kind, "triggered");
        Some(Pending {
            barrier,
            started: Instant::now(),
            acks: Vec::new(),
            reply,
        })
    }

    fn complete(&mut self, pending: Pending) -> Result<String> {
        let kind = pending.barrier.kind;
        let mut manifest = SnapshotManifest::new(&self.job_id, pending.barrier.id, kind, self.settings.max_parallelism);
        let mut source_op = OperatorSnapshot {
            operator_id: SOURCE_OPERATOR.into(),
            parallelism: self.source_parallelism,
            keyed_state: vec![],
            operator_state: vec![],
        };
        let mut keyed_op = OperatorSnapshot {
            operator_id: KEYED_OPERATOR.into(),
            parallelism: self.settings.parallelism,
            keyed_state: vec![],
            operator_state: vec![],
        };
        let mut stats = SnapshotStats::default();
        for ack in pending.acks {
            stats.sync_us = stats.sync_us.max(ack.sync.as_micros() as u64);
            stats.async_ms = stats.async_ms.max(ack.async_time.as_millis() as u64);
            match ack.snapshot {
                TaskSnapshot::Source(h) => {
                    stats.full_bytes += h.file.size;
                    stats.uploaded_bytes += h.file.size;
                    source_op.operator_state.push(h);
                }
                TaskSnapshot::Keyed(h) => {
                    stats.full_bytes += h.full_bytes;
                    stats.uploaded_bytes += h.uploaded_bytes;
                    keyed_op.keyed_state.push(h);
                }
            }
        }
        source_op.operator_state.sort_by_key(|h| h.subtask);
        keyed_op.keyed_state.sort_by_key(|h| h.key_group_range.start());
        manifest.operators = vec![source_op, keyed_op];
        stats.duration_ms = pending.started.elapsed().as_millis() as u64;
        manifest.stats = Some(stats);
        let committed = self.storage.commit(&manifest)?;
        let path = snapshot_uri(&self.storage, &committed.dir);
        tracing::info!(
            id = manifest.checkpoint_id,
            ?kind,
            duration_ms = stats.duration_ms,
            sync_us = stats.sync_us,
            async_ms = stats.async_ms,
            full_bytes = stats.full_bytes,
            uploaded_bytes = stats.uploaded_bytes,
            %path,
            "snapshot completed"
        );
        self.metrics.checkpoints_completed.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .last_checkpoint_id
            .store(manifest.checkpoint_id, Ordering::Relaxed);
        self.metrics
            .last_checkpoint_ms
            .store(stats.duration_ms, Ordering::Relaxed);
        self.metrics
            .last_checkpoint_bytes
            .store(stats.full_bytes, Ordering::Relaxed);
        if let Ok(mut slot) = self.metrics.last_snapshot_path.lock() {
            *slot = Some(path.clone());
        }
        if let Ok(mut completed) = self.metrics.completed.lock() {
            if completed.len() == COMPLETED_HISTORY {
                completed.pop_front();
            }
            completed.push_back(CompletedStats {
                id: manifest.checkpoint_id,
                kind,
                path: path.clone(),
                stats,
            });
        }
        if kind == SnapshotKind::Checkpoint {
            // Retention runs only after the newer checkpoint is committed.
            if let Err(e) = self
                .storage
                .apply_retention(&self.job_id, self.settings.checkpoint.num_retained)
            {
                tracing::warn!(error = %e, "retention failed; old checkpoints are kept");
            }
        }
        Ok(path)
    }

    /// Runs until shut down; returns the number of failed checkpoints.
    pub(crate) fn run(mut self) -> Result<u64> {
        let config = self.settings.checkpoint.clone();
        let mut pending: Option<Pending> = None;
        let mut savepoint_requests: VecDeque<Sender<Result<String>>> = VecDeque::new();
        let mut last_trigger = Instant::now();
        let mut last_end: Option<Instant> = None;
        let (mut failed, mut consecutive_failures, mut finishing) = (0u64, 0u32, false);
        loop {
            if self.cancel.load(Ordering::Relaxed) && savepoint_requests.is_empty() && pending.is_none() {
                return Ok(failed);
            }
            let mut failure: Option<Error> = None;
            match self.control.recv_timeout(Duration::from_millis(5)) {
                Ok(Control::Ack(ack)) => {
                    if let Some(p) = pending.as_mut().filter(|p| p.barrier.id == ack.id) {
                        p.acks.push(*ack);
                        if p.acks.len() == self.expected_acks {
                            let done = pending.take().expect("pending checked above");
                            let reply = done.reply.clone();
                            let result = self.complete(done);
                            last_end = Some(Instant::now());
                            match (&result, reply) {
                                (_, Some(reply)) => {
                                    let _ = reply.send(result.as_ref().map(String::clone).map_err(Error::to_detached));
                                }
                                (Err(e), None) => failure = Some(e.to_detached()),
                                (Ok(_), None) => consecutive_failures = 0,
                            }
                        }
                    }
                }
                Ok(Control::Decline { id, error }) => {
                    if pending.as_ref().is_some_and(|p| p.barrier.id == id) {
                        let p = pending.take().expect("pending checked above");
                        last_end = Some(Instant::now());
                        match p.reply {
                            Some(reply) => {
                                let _ = reply.send(Err(error));
                            }
                            None => failure = Some(error),
                        }
                    }
                }
                Ok(Control::SourceFinished { last_barrier }) => {
                    finishing = true;
                    // A snapshot the source injected before its end still
                    // completes: its acknowledgements are on their way.
                    if let Some(p) = pending.take_if(|p| last_barrier.is_none_or(|last| last < p.barrier.id)) {
                        tracing::debug!(id = p.barrier.id, "snapshot abandoned: the input ended");
                        if let Some(reply) = p.reply {
                            let _ = reply.send(Err(Error::invalid_argument("the input ended before the savepoint")));
                        }
                    }
                    for reply in savepoint_requests.drain(..) {
                        let _ = reply.send(Err(Error::invalid_argument("the input ended; no savepoint taken")));
                    }
                }
                Ok(Control::TriggerSavepoint(reply)) => {
                    if finishing {
                        let _ = reply.send(Err(Error::invalid_argument("the input ended; no savepoint taken")));
                    } else {
                        savepoint_requests.push_back(reply);
                    }
                }
                Ok(Control::Shutdown) | Err(RecvTimeoutError::Disconnected) => return Ok(failed),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(p) = pending.as_ref() {
                if p.started.elapsed() > config.timeout {
                    let p = pending.take().expect("pending checked above");
                    last_end = Some(Instant::now());
                    let error = Error::new(
                        ErrorKind::Storage,
                        format!(
                            "snapshot {} expired after {:?} before completing",
                            p.barrier.id, config.timeout
                        ),
                    );
                    match p.reply {
                        Some(reply) => {
                            let _ = reply.send(Err(error));
                        }
                        None => failure = Some(error),
                    }
                }
            }
            if let Some(error) = failure {
                failed += 1;
                self.metrics.checkpoints_failed.fetch_add(1, Ordering::Relaxed);
                consecutive_failures += 1;
                tracing::warn!(error = %error, consecutive_failures, "checkpoint failed");
                if consecutive_failures > config.tolerable_failures {
                    self.cancel.store(true, Ordering::SeqCst);
                    return Err(Error::new(
                        ErrorKind::Storage,
                        format!(
                            "{consecutive_failures} checkpoints failed in a row, more than the {} tolerated; last: {error}",
                            config.tolerable_failures
                        ),
                    ));
                }
            }
            if pending.is_none() && !finishing && !self.cancel.load(Ordering::Relaxed) {
                let paused = last_end.is_none_or(|t| t.elapsed() >= config.min_pause);
                if let Some(reply) = savepoint_requests.pop_front() {
                    pending = self.trigger(SnapshotKind::Savepoint, Some(reply));
                    last_trigger = Instant::now();
                } else if let Some(interval) = config.interval {
                    if paused && last_trigger.elapsed() >= interval {
                        pending = self.trigger(SnapshotKind::Checkpoint, None);
                        last_trigger = Instant::now();
                    }
                }
            }
        }
    }
}
