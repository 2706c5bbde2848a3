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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Select, Sender};
use serde::{de::DeserializeOwned, Serialize};
use state_api::key_group::{check_parallelism, key_group_for_hash, key_hash, subtask_for_key_group};
use state_api::operator_state::OperatorStateStore;
use state_api::snapshot::manifest::OperatorStateHandle;
use state_api::{
    CheckpointStorage, CompletedSnapshot, Error, ErrorKind, KeyGroupRange, KeyedBackendOptions, KeyedStateBackend,
    KeyedStateHandle, OperatorSnapshot, Result, SnapshotFormat, SnapshotKind, SnapshotManifest, SnapshotStats,
    SnapshotTarget, StateBackend,
};

use crate::config::{CheckpointingMode, RetentionOnCancellation};
use crate::function::{KeyBytes, KeyedProcessFunction};
use crate::mini_batch::{MiniBatch, TOUCH_GROUP};
use crate::source::{LineSource, SourcePoll};
use crate::stream::{Job, JobSettings, ProcessFactory, RestoreFrom, SinkFactory, ValueOf};

/// Operator id of the sources in manifests.
pub const SOURCE_OPERATOR: &str = "source";
/// Operator id of the keyed operator in manifests.
pub const KEYED_OPERATOR: &str = "keyed";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Barrier {
    id: u64,
    kind: SnapshotKind,
}

/// A record on its way to a keyed task. The key travels serialized only:
/// the keyed task needs its bytes (key group, state lookups, mini-batch),
/// and decodes the key itself only when a function's `process` runs, so a
/// record carries no owned key to allocate on the source thread and free on
/// the keyed one.
struct Record<T> {
    key_bytes: KeyBytes,
    /// [`key_hash`] of `key_bytes`: the source routes by it, and the keyed
    /// task's mini-batch finds the key's slot by it without hashing again.
    key_hash: u64,
    value: T,
}

/// The sum of several records of one key, folded on a source thread
/// (local-global aggregation, see [`JobSettings::local_aggregation`]).
struct PartialSum {
    key_bytes: KeyBytes,
    /// As [`Record::key_hash`].
    key_hash: u64,
    sum: i64,
}

/// What a keyed task groups its records and partial sums by.
trait WithKeyHash {
    fn key_hash(&self) -> u64;
}

impl<T> WithKeyHash for Record<T> {
    fn key_hash(&self) -> u64 {
        self.key_hash
    }
}

impl WithKeyHash for PartialSum {
    fn key_hash(&self) -> u64 {
        self.key_hash
    }
}

enum Message<T> {
    Batch(Vec<Record<T>>),
    Partials(Vec<PartialSum>),
    Barrier(Barrier),
    End,
}

enum TaskSnapshot {
    Source(OperatorStateHandle),
    Keyed(KeyedStateHandle),
}

struct Ack {
    id: u64,
    snapshot: TaskSnapshot,
    sync: Duration,
    async_time: Duration,
}

enum Control {
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

/// Live counters of a running job.
#[derive(Debug, Default)]
pub struct JobMetrics {
    /// Records processed by the keyed operator (records a source folded
    /// into partial sums count when the partial sums are sent on).
    pub records: AtomicU64,
    /// Partial sums source tasks sent on in place of records (local-global
    /// aggregation, [`JobSettings::local_aggregation`]).
    pub partial_sums: AtomicU64,
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
    /// Statistics of the most recent completed snapshots, oldest first: at
    /// most [`COMPLETED_HISTORY`], so a job running for months does not
    /// grow (Flink keeps a bounded history too, `web.checkpoints.history`).
    pub completed: Mutex<VecDeque<CompletedStats>>,
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
    /// [`COMPLETED_HISTORY`] of them).
    pub completed: Vec<CompletedStats>,
    /// URI of the last completed checkpoint or savepoint, to restart from.
    pub last_snapshot_path: Option<String>,
    /// Failed checkpoints.
    pub failed_checkpoints: u64,
}

/// A running job.
pub struct JobHandle<O> {
    job_id: String,
    cancel: Arc<AtomicBool>,
    control: Sender<Control>,
    sources: Vec<JoinHandle<Result<()>>>,
    keyed: Vec<JoinHandle<Result<Vec<O>>>>,
    coordinator: Option<JoinHandle<Result<u64>>>,
    uploads: Uploads,
    metrics: Arc<JobMetrics>,
    storage: CheckpointStorage,
    retention: RetentionOnCancellation,
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
                .delete_dir(&state_api::storage::layout::job_dir(&self.job_id))?;
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
        Ok(JobResult {
            job_id: self.job_id.clone(),
            final_records,
            completed: self
                .metrics
                .completed
                .lock()
                .map(|c| c.iter().cloned().collect())
                .unwrap_or_default(),
            last_snapshot_path: self.metrics.last_snapshot_path.lock().ok().and_then(|p| p.clone()),
            failed_checkpoints,
        })
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

fn new_job_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed =
        xxhash_rust::xxh3::xxh3_64(&[nanos.to_le_bytes().as_slice(), &std::process::id().to_le_bytes()].concat());
    format!("{mixed:016x}")
}

fn default_backend() -> Result<Arc<dyn StateBackend>> {
    // Flink's default: heap state (`hashmap`), here the fs backend.
    let compiled = crate::backends::compiled_backends();
    compiled
        .iter()
        .find(|k| **k == crate::backends::StateBackendKind::Fs)
        .or(compiled.first())
        .map(|k| crate::backends::state_backend(*k))
        .unwrap_or_else(|| Err(Error::config("no state backend is compiled into this build")))
}

struct Restored {
    checkpoint_id: u64,
    keyed: Vec<Box<dyn KeyedStateBackend>>,
    source_stores: Vec<Option<OperatorStateStore>>,
}

fn keyed_options(settings: &JobSettings, job_id: &str, subtask: u32) -> KeyedBackendOptions {
    let range = KeyGroupRange::for_subtask(settings.max_parallelism, settings.parallelism, subtask);
    KeyedBackendOptions::new(job_id, KEYED_OPERATOR, range, settings.max_parallelism)
}

fn restore_snapshot(
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    job_id: &str,
    source_parallelism: u32,
    storage: &CheckpointStorage,
    snapshot: &CompletedSnapshot,
) -> Result<Restored> {
    let manifest = &snapshot.manifest;
    if manifest.max_parallelism != settings.max_parallelism {
        return Err(Error::config(format!(
            "the snapshot was taken with max parallelism {}, the job has {}; they must be equal",
            manifest.max_parallelism, settings.max_parallelism
        ))
        .with_context("file", snapshot.dir.clone()));
    }
    let handles = manifest
        .operator(KEYED_OPERATOR)
        .map(|o| o.keyed_state.clone())
        .unwrap_or_default();
    let mut keyed = Vec::new();
    for subtask in 0..settings.parallelism {
        keyed.push(backend.restore_keyed_backend(keyed_options(settings, job_id, subtask), &handles, storage)?);
    }
    let op_handles = manifest
        .operator(SOURCE_OPERATOR)
        .map(|o| o.operator_state.clone())
        .unwrap_or_default();
    let mut source_stores = Vec::new();
    for subtask in 0..source_parallelism {
        source_stores.push(if op_handles.is_empty() {
            None
        } else {
            Some(OperatorStateStore::restore(
                storage,
                &op_handles,
                source_parallelism,
                subtask,
            )?)
        });
    }
    Ok(Restored {
        checkpoint_id: manifest.checkpoint_id,
        keyed,
        source_stores,
    })
}

fn is_damage(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ChecksumMismatch | ErrorKind::NotFound | ErrorKind::Corrupt | ErrorKind::IncompatibleVersion
    )
}

fn restore(
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    storage: &CheckpointStorage,
    job_id: &str,
    source_parallelism: u32,
) -> Result<Option<Restored>> {
    match &settings.restore {
        None => Ok(None),
        Some(RestoreFrom::Snapshot { storage: from, dir }) => {
            let snapshot = from.load(dir)?;
            let path = format!("{}/{}", from.uri(), snapshot.dir);
            tracing::info!(%path, "restoring");
            let started = std::time::Instant::now();
            let restored = restore_snapshot(settings, backend, job_id, source_parallelism, from, &snapshot)?;
            tracing::info!(%path, restore_ms = started.elapsed().as_millis() as u64, "restored");
            Ok(Some(restored))
        }
        Some(RestoreFrom::Latest) => {
            let candidates = storage.completed_checkpoints(None)?;
            if candidates.is_empty() {
                tracing::warn!(
                    uri = storage.uri(),
                    "no completed checkpoint found; starting without state"
                );
                return Ok(None);
            }
            let mut last_error = None;
            for snapshot in candidates {
                let started = std::time::Instant::now();
                match restore_snapshot(settings, backend, job_id, source_parallelism, storage, &snapshot) {
                    Ok(restored) => {
                        tracing::info!(
                            path = %format!("{}/{}", storage.uri(), snapshot.dir),
                            restore_ms = started.elapsed().as_millis() as u64,
                            "restored from latest"
                        );
                        return Ok(Some(restored));
                    }
                    Err(e) if is_damage(&e) => {
                        tracing::warn!(error = %e, checkpoint = %snapshot.dir, "checkpoint is damaged; trying the one before");
                        last_error = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last_error.unwrap_or_else(|| Error::new(ErrorKind::NotFound, "no restorable checkpoint")))
        }
    }
}

pub(crate) fn execute<K, T, O>(job: Job<K, T, O>) -> Result<JobHandle<O>>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Send + 'static,
    O: Send + 'static,
{
    let Job {
        processed,
        sink,
        final_sink,
    } = job;
    let factory = processed.factory;
    let local_sum = processed.local_sum;
    let key_of = processed.keyed.key_of;
    let stream = processed.keyed.stream;
    let settings = stream.settings;
    let source_spec = stream.source;
    let chain = stream.chain;

    check_parallelism(settings.parallelism, settings.max_parallelism)?;
    if settings.checkpoint.max_concurrent != 1 {
        return Err(Error::unsupported("only one concurrent checkpoint is supported"));
    }
    let backend = match &settings.backend {
        Some(b) => Arc::clone(b),
        None => default_backend()?,
    };
    let storage = match &settings.storage {
        Some(s) => s.clone(),
        None => CheckpointStorage::open("memory://")?,
    };
    let job_id = settings.job_id.clone().unwrap_or_else(new_job_id);
    state_api::storage::layout::validate_job_id(&job_id)?;

    let restored = restore(&settings, &backend, &storage, &job_id, source_spec.parallelism)?;
    let (first_id, keyed_backends, mut source_stores) = match restored {
        Some(r) => (r.checkpoint_id + 1, r.keyed, r.source_stores),
        None => {
            let mut keyed = Vec::new();
            for subtask in 0..settings.parallelism {
                keyed.push(backend.create_keyed_backend(keyed_options(&settings, &job_id, subtask))?);
            }
            (1, keyed, (0..source_spec.parallelism).map(|_| None).collect())
        }
    };

    // Sources are created here so that a bad input fails `execute`.
    let mut sources = Vec::new();
    for subtask in 0..source_spec.parallelism {
        sources.push((source_spec.factory)(
            subtask,
            source_spec.parallelism,
            source_stores[subtask as usize].as_mut(),
        )?);
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(JobMetrics::default());
    let (control_tx, control_rx) = unbounded();
    let p = settings.parallelism as usize;
    let mut data_tx: Vec<Vec<Sender<Message<T>>>> = Vec::new();
    let mut data_rx: Vec<Vec<Receiver<Message<T>>>> = (0..p).map(|_| Vec::new()).collect();
    for _ in 0..sources.len() {
        let mut row = Vec::new();
        for rx in data_rx.iter_mut() {
            let (tx, r) = bounded(settings.channel_capacity);
            row.push(tx);
            rx.push(r);
        }
        data_tx.push(row);
    }
    let incremental = settings.checkpoint.incremental && backend.capabilities().incremental_snapshots;
    let targets = TargetFactory {
        job_id: job_id.clone(),
        // Checkpoints in the backend's own format when it has one;
        // savepoints are always canonical (see `TargetFactory::target`).
        native: backend.capabilities().native_snapshots,
        incremental,
    };

    let uploads = Uploads::default();
    let discarding_sinks = Arc::new(AtomicUsize::new(0));
    let mut keyed_handles = Vec::new();
    for (subtask, (rx, keyed_backend)) in data_rx.into_iter().zip(keyed_backends).enumerate() {
        let task = KeyedTask {
            subtask: subtask as u32,
            parallelism: settings.parallelism,
            inputs: rx,
            backend: keyed_backend,
            factory: Arc::clone(&factory),
            sink: Arc::clone(&sink),
            final_sink: final_sink.clone(),
            discarding_sinks: Arc::clone(&discarding_sinks),
            mode: settings.checkpoint.mode,
            control: control_tx.clone(),
            uploads: uploads.clone(),
            storage: storage.clone(),
            targets: targets.clone(),
            cancel: Arc::clone(&cancel),
            metrics: Arc::clone(&metrics),
        };
        let cancel = Arc::clone(&cancel);
        keyed_handles.push(spawn(format!("keyed-{subtask}"), cancel, move || task.run())?);
    }
    let mut command_txs = Vec::new();
    let mut source_handles = Vec::new();
    for (subtask, (source, outputs)) in sources.into_iter().zip(data_tx).enumerate() {
        let (cmd_tx, cmd_rx) = unbounded();
        command_txs.push(cmd_tx);
        let task = SourceTask {
            subtask: subtask as u32,
            last_barrier: None,
            source,
            outputs,
            commands: cmd_rx,
            chain: Arc::clone(&chain),
            key_of: Arc::clone(&key_of),
            max_parallelism: settings.max_parallelism,
            parallelism: settings.parallelism,
            batch_size: settings.batch_size.max(1),
            local_sum: local_sum.clone(),
            discarding_sinks: Arc::clone(&discarding_sinks),
            control: control_tx.clone(),
            uploads: uploads.clone(),
            storage: storage.clone(),
            targets: targets.clone(),
            cancel: Arc::clone(&cancel),
            metrics: Arc::clone(&metrics),
        };
        let cancel = Arc::clone(&cancel);
        source_handles.push(spawn(format!("source-{subtask}"), cancel, move || task.run())?);
    }
    let coordinator = Coordinator {
        job_id: job_id.clone(),
        settings: settings.clone(),
        storage: storage.clone(),
        control: control_rx,
        sources: command_txs,
        expected_acks: source_handles.len() + keyed_handles.len(),
        next_id: first_id,
        cancel: Arc::clone(&cancel),
        metrics: Arc::clone(&metrics),
    };
    let coordinator_handle = spawn("coordinator".into(), Arc::clone(&cancel), move || coordinator.run())?;
    Ok(JobHandle {
        job_id,
        cancel,
        control: control_tx,
        sources: source_handles,
        keyed: keyed_handles,
        coordinator: Some(coordinator_handle),
        uploads,
        metrics,
        storage,
        retention: settings.checkpoint.retention_on_cancellation,
    })
}

/// Spawns a task thread; an error in it cancels the whole job.
fn spawn<R: Send + 'static>(
    name: String,
    cancel: Arc<AtomicBool>,
    body: impl FnOnce() -> Result<R> + Send + 'static,
) -> Result<JoinHandle<Result<R>>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let result = body();
            if let Err(e) = &result {
                tracing::error!(task = %name, error = %e, "task failed; cancelling the job");
                cancel.store(true, Ordering::SeqCst);
            }
            result
        })
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, "cannot spawn a task thread").with_source(e))
}

/// Where snapshots of this job go.
#[derive(Debug, Clone)]
struct TargetFactory {
    job_id: String,
    native: bool,
    incremental: bool,
}

impl TargetFactory {
    fn target(&self, barrier: Barrier, stem: String) -> SnapshotTarget {
        match barrier.kind {
            SnapshotKind::Checkpoint => SnapshotTarget {
                checkpoint_id: barrier.id,
                kind: barrier.kind,
                format: if self.native {
                    SnapshotFormat::Native
                } else {
                    SnapshotFormat::Canonical
                },
                incremental: self.incremental,
                base: state_api::storage::layout::job_dir(&self.job_id),
                exclusive_dir: state_api::storage::layout::checkpoint_dir_name(barrier.id),
                shared_dir: state_api::storage::layout::SHARED_DIR.into(),
                file_stem: stem,
            },
            SnapshotKind::Savepoint => SnapshotTarget {
                checkpoint_id: barrier.id,
                kind: barrier.kind,
                format: SnapshotFormat::Canonical,
                incremental: false,
                base: format!("{}/", state_api::storage::layout::SAVEPOINTS_DIR),
                exclusive_dir: state_api::storage::layout::savepoint_dir_name(&self.job_id, barrier.id),
                shared_dir: state_api::storage::layout::savepoint_dir_name(&self.job_id, barrier.id),
                file_stem: stem,
            },
        }
    }
}

/// The threads running snapshots' asynchronous phases. A job joins them
/// before it reports itself finished, so nothing writes to checkpoint
/// storage after `wait`/`cancel` return (a restart, or a user cleaning up,
/// would otherwise race with a late upload).
#[derive(Debug, Clone, Default)]
struct Uploads(Arc<Mutex<Vec<JoinHandle<()>>>>);

impl Uploads {
    fn push(&self, handle: JoinHandle<()>) {
        if let Ok(mut handles) = self.0.lock() {
            // Forget the finished ones, so the list stays short.
            handles.retain(|h| !h.is_finished());
            handles.push(handle);
        }
    }

    /// Waits for every upload started so far.
    fn join_all(&self) {
        let handles = self.0.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default();
        for handle in handles {
            // An upload that panicked has nothing left to write.
            let _ = handle.join();
        }
    }
}

/// Runs a snapshot's asynchronous phase on its own thread and reports the
/// outcome to the coordinator, so the processing thread never waits on
/// storage.
fn spawn_upload(
    uploads: &Uploads,
    control: Sender<Control>,
    id: u64,
    sync: Duration,
    write: impl FnOnce() -> Result<TaskSnapshot> + Send + 'static,
) {
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let message = match write() {
            Ok(snapshot) => Control::Ack(Box::new(Ack {
                id,
                snapshot,
                sync,
                async_time: started.elapsed(),
            })),
            Err(error) => Control::Decline { id, error },
        };
        let _ = control.send(message);
    });
    uploads.push(handle);
}

/// Lines a source task reads between two updates of the progress metric:
/// often enough for a display, rarely enough to keep the lock off the
/// per-line path.
const PROGRESS_EVERY_LINES: u32 = 1024;

/// Records a batch has room for beyond `batch_size`: the records of the
/// line that fills it.
const BATCH_SLACK_RECORDS: usize = 256;

/// Distinct keys a source task folds a `sum` over before it sends the
/// partial sums on (local-global aggregation, see
/// [`JobSettings::local_aggregation`]). The table's 16,384 slots of 48
/// bytes fit a 1 MiB L2 cache, so folding costs no cache miss; on the Zipf
/// benchmark corpus one partial sum stands for ~2 words
/// (docs/BENCHMARKS.md).
pub const LOCAL_SUM_KEYS: usize = 8_192;

/// A source task's local `sum` table.
struct LocalSums<T> {
    value_of: ValueOf<T>,
    table: MiniBatch,
    /// Records folded since the last partial sums were sent (counted into
    /// [`JobMetrics::records`] when they are).
    folded: u64,
}

/// Hands `items` to `handle` a group of [`TOUCH_GROUP`] at a time, each
/// group's mini-batch slots loaded together first (see
/// [`KeyedProcessFunction::touch_buffer`]).
fn in_touched_groups<K, T, O, I: WithKeyHash>(
    function: &mut dyn KeyedProcessFunction<K, T, O>,
    items: Vec<I>,
    mut handle: impl FnMut(&mut dyn KeyedProcessFunction<K, T, O>, I) -> Result<()>,
) -> Result<()> {
    let mut items = items.into_iter();
    while !items.as_slice().is_empty() {
        for ahead in items.as_slice().iter().take(TOUCH_GROUP) {
            std::hint::black_box(function.touch_buffer(ahead.key_hash()));
        }
        for item in items.by_ref().take(TOUCH_GROUP) {
            handle(function, item)?;
        }
    }
    Ok(())
}

struct SourceTask<K, T> {
    subtask: u32,
    /// Id of the last barrier this source injected.
    last_barrier: Option<u64>,
    source: Box<dyn LineSource>,
    outputs: Vec<Sender<Message<T>>>,
    commands: Receiver<Barrier>,
    chain: crate::stream::Chain<T>,
    key_of: Arc<dyn Fn(&T) -> K + Send + Sync>,
    max_parallelism: u32,
    parallelism: u32,
    batch_size: usize,
    /// The value a `sum` adds up, when the job's keyed function is one and
    /// local aggregation is on.
    local_sum: Option<ValueOf<T>>,
    /// Keyed subtasks whose sink discards records; the source folds
    /// locally only once all of them do (their sums then emit nothing per
    /// record, so partial sums change no output).
    discarding_sinks: Arc<AtomicUsize>,
    control: Sender<Control>,
    uploads: Uploads,
    storage: CheckpointStorage,
    targets: TargetFactory,
    cancel: Arc<AtomicBool>,
    metrics: Arc<JobMetrics>,
}

impl<K: Serialize + Send + 'static, T: Send + 'static> SourceTask<K, T> {
    fn send(&self, to: usize, message: Message<T>) -> Result<()> {
        self.outputs[to]
            .send(message)
            .map_err(|_| Error::invalid_argument("a keyed task stopped; the source stops too"))
    }

    /// An empty batch with room for `batch_size` records and the words of
    /// the line that fills it: batches are sent after whole lines, so
    /// without the slack nearly every batch would be copied into a
    /// doubled allocation (docs/BENCHMARKS.md).
    fn new_batch(&self) -> Vec<Record<T>> {
        Vec::with_capacity(self.batch_size + BATCH_SLACK_RECORDS)
    }

    fn flush(&self, batches: &mut [Vec<Record<T>>], only_full: bool) -> Result<()> {
        for (to, batch) in batches.iter_mut().enumerate() {
            if !batch.is_empty() && (!only_full || batch.len() >= self.batch_size) {
                let full = std::mem::replace(batch, self.new_batch());
                self.send(to, Message::Batch(full))?;
            }
        }
        Ok(())
    }

    /// Sends the local `sum` table's partial sums on, to the keyed
    /// subtask of each key's group, and empties it.
    fn flush_local(&self, local: Option<&mut LocalSums<T>>) -> Result<()> {
        let Some(local) = local.filter(|local| !local.table.is_empty()) else {
            return Ok(());
        };
        let (max_parallelism, parallelism) = (self.max_parallelism, self.parallelism);
        let outputs = self.outputs.len();
        let mut partials: Vec<Vec<PartialSum>> = (0..outputs)
            .map(|_| Vec::with_capacity(local.table.len() / outputs + 64))
            .collect();
        local.table.drain(|hash, key_bytes, sum| {
            let key_group = key_group_for_hash(hash, max_parallelism);
            let to = subtask_for_key_group(max_parallelism, parallelism, key_group) as usize;
            partials[to].push(PartialSum {
                key_bytes,
                key_hash: hash,
                sum,
            });
        });
        let sent: usize = partials.iter().map(Vec::len).sum();
        self.metrics.partial_sums.fetch_add(sent as u64, Ordering::Relaxed);
        for (to, batch) in partials.into_iter().enumerate() {
            if !batch.is_empty() {
                self.send(to, Message::Partials(batch))?;
            }
        }
        self.metrics
            .records
            .fetch_add(std::mem::take(&mut local.folded), Ordering::Relaxed);
        Ok(())
    }

    fn checkpoint(
        &mut self,
        barrier: Barrier,
        batches: &mut [Vec<Record<T>>],
        local: Option<&mut LocalSums<T>>,
    ) -> Result<()> {
        self.flush(batches, false)?;
        // Every partial sum of records before the barrier goes before it.
        self.flush_local(local)?;
        let started = Instant::now();
        let mut store = OperatorStateStore::default();
        self.source.snapshot(&mut store)?;
        let sync = started.elapsed();
        let (storage, subtask) = (self.storage.clone(), self.subtask);
        let target = self.targets.target(barrier, format!("{SOURCE_OPERATOR}-{subtask}"));
        spawn_upload(&self.uploads, self.control.clone(), barrier.id, sync, move || {
            store.write(&storage, &target, subtask).map(TaskSnapshot::Source)
        });
        for to in 0..self.outputs.len() {
            self.send(to, Message::Barrier(barrier))?;
        }
        self.last_barrier = Some(barrier.id);
        Ok(())
    }

    /// Copies the source's position into the job's metrics (the CLI's
    /// progress line reads it).
    fn publish_progress(&self) {
        if let Some(progress) = self.source.progress() {
            if let Ok(mut slot) = self.metrics.input_progress.lock() {
                *slot = Some(progress);
            }
        }
    }

    fn run(mut self) -> Result<()> {
        let result = self.run_until_end();
        match result {
            // Keyed tasks stop first on cancel; the source's failed send is
            // the cancel, not an error.
            Err(_) if self.cancel.load(Ordering::SeqCst) => Ok(()),
            other => other,
        }
    }

    fn run_until_end(&mut self) -> Result<()> {
        let mut batches: Vec<Vec<Record<T>>> = (0..self.outputs.len()).map(|_| self.new_batch()).collect();
        let mut line = String::new();
        let mut key_bytes = Vec::new();
        let mut lines_since_progress = 0;
        let mut local = self.local_sum.clone().map(|value_of| LocalSums {
            value_of,
            table: MiniBatch::new(LOCAL_SUM_KEYS),
            folded: 0,
        });
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            while let Ok(barrier) = self.commands.try_recv() {
                self.checkpoint(barrier, &mut batches, local.as_mut())?;
            }
            match self.source.poll_line(&mut line)? {
                SourcePoll::Line { more_buffered } => {
                    let (key_of, max_p, p) = (&self.key_of, self.max_parallelism, self.parallelism);
                    let all_sinks_discard = self.discarding_sinks.load(Ordering::Acquire) == p as usize;
                    let mut folding = local.as_mut().filter(|_| all_sinks_discard);
                    let mut failure = None;
                    (self.chain)(std::mem::take(&mut line), &mut |value| {
                        let key = key_of(&value);
                        key_bytes.clear();
                        if let Err(e) = state_api::codec::encode_value_into(&key, &mut key_bytes) {
                            failure.get_or_insert(e);
                            return;
                        }
                        // Empty keys take the record path: the keyed task
                        // reports them.
                        if let Some(local) = folding.as_mut().filter(|_| !key_bytes.is_empty()) {
                            local.table.add(&key_bytes, (local.value_of)(&value));
                            local.folded += 1;
                            return;
                        }
                        let hash = key_hash(&key_bytes);
                        let group = key_group_for_hash(hash, max_p);
                        let to = subtask_for_key_group(max_p, p, group) as usize;
                        batches[to].push(Record {
                            key_bytes: KeyBytes::from_slice(&key_bytes),
                            key_hash: hash,
                            value,
                        });
                    });
                    if let Some(e) = failure {
                        return Err(e);
                    }
                    if local.as_ref().is_some_and(|local| local.table.is_full()) {
                        self.flush_local(local.as_mut())?;
                    }
                    self.flush(&mut batches, more_buffered)?;
                    lines_since_progress += 1;
                    if lines_since_progress == PROGRESS_EVERY_LINES {
                        lines_since_progress = 0;
                        self.publish_progress();
                    }
                }
                SourcePoll::Idle => self.flush(&mut batches, false)?,
                SourcePoll::End => {
                    // A barrier that came with the last lines still goes
                    // out: its checkpoint can complete (Flink completes
                    // checkpoints after tasks finish, too).
                    while let Ok(barrier) = self.commands.try_recv() {
                        self.checkpoint(barrier, &mut batches, local.as_mut())?;
                    }
                    self.flush(&mut batches, false)?;
                    self.flush_local(local.as_mut())?;
                    self.publish_progress();
                    // Tell the coordinator before the keyed tasks see the
                    // end: it stops triggering, and gives up a pending
                    // snapshot this source did not inject.
                    let _ = self.control.send(Control::SourceFinished {
                        last_barrier: self.last_barrier,
                    });
                    for to in 0..self.outputs.len() {
                        self.send(to, Message::End)?;
                    }
                    return Ok(());
                }
            }
        }
    }
}

struct KeyedTask<K, T, O> {
    subtask: u32,
    parallelism: u32,
    inputs: Vec<Receiver<Message<T>>>,
    backend: Box<dyn KeyedStateBackend>,
    factory: ProcessFactory<K, T, O>,
    sink: SinkFactory<O>,
    final_sink: Option<SinkFactory<O>>,
    /// Counts keyed subtasks whose sink discards records (see
    /// `SourceTask::discarding_sinks`).
    discarding_sinks: Arc<AtomicUsize>,
    mode: CheckpointingMode,
    control: Sender<Control>,
    uploads: Uploads,
    storage: CheckpointStorage,
    targets: TargetFactory,
    cancel: Arc<AtomicBool>,
    metrics: Arc<JobMetrics>,
}

impl<K: DeserializeOwned + Send + 'static, T: Send + 'static, O: Send + 'static> KeyedTask<K, T, O> {
    fn snapshot(&mut self, barrier: Barrier) {
        let started = Instant::now();
        let target = self
            .targets
            .target(barrier, format!("{KEYED_OPERATOR}-{}", self.subtask));
        let pending = self.backend.snapshot(&target);
        let sync = started.elapsed();
        match pending {
            Ok(pending) => {
                let storage = self.storage.clone();
                spawn_upload(&self.uploads, self.control.clone(), barrier.id, sync, move || {
                    pending.write(&storage, &target).map(TaskSnapshot::Keyed)
                });
            }
            Err(error) => {
                let _ = self.control.send(Control::Decline { id: barrier.id, error });
            }
        }
    }

    fn run(mut self) -> Result<Vec<O>> {
        let mut function = (self.factory)();
        function.open(self.backend.as_mut())?;
        let mut sink = (self.sink)(self.subtask, self.parallelism)?;
        function.set_records_wanted(!sink.discards_records());
        if sink.discards_records() {
            self.discarding_sinks.fetch_add(1, Ordering::Release);
        }
        let n = self.inputs.len();
        let (mut ended, mut seen) = (vec![false; n], vec![false; n]);
        let mut aligning: Option<Barrier> = None;
        let mut produced = Vec::new();
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                sink.flush()?;
                return Ok(Vec::new());
            }
            let blocking = self.mode == CheckpointingMode::ExactlyOnce;
            // Inputs that delivered the pending barrier wait (exactly-once).
            let waiting = |i: usize| blocking && seen[i];
            let open: Vec<usize> = (0..n).filter(|&i| !ended[i] && !waiting(i)).collect();
            if open.is_empty() && ended.iter().all(|e| *e) {
                break;
            }
            let mut select = Select::new();
            for &i in &open {
                select.recv(&self.inputs[i]);
            }
            let Ok(operation) = select.select_timeout(Duration::from_millis(100)) else {
                continue;
            };
            let i = open[operation.index()];
            match operation.recv(&self.inputs[i]) {
                Err(_) => ended[i] = true,
                Ok(Message::Batch(records)) => {
                    let count = records.len() as u64;
                    let backend = &mut self.backend;
                    in_touched_groups(function.as_mut(), records, |function, record| {
                        let Some(value) =
                            function.buffer(record.key_hash, &record.key_bytes, record.value, backend.as_mut())?
                        else {
                            return Ok(());
                        };
                        backend.set_current_key(&record.key_bytes)?;
                        let key: K = state_api::codec::decode_value(&record.key_bytes)?;
                        function.process(&key, value, backend.as_mut(), &mut |o| produced.push(o))?;
                        produced.drain(..).try_for_each(|o| sink.write(&o))
                    })?;
                    sink.flush()?;
                    self.metrics.records.fetch_add(count, Ordering::Relaxed);
                }
                Ok(Message::Partials(partials)) => {
                    // Counted into the records metric by the source.
                    let backend = &mut self.backend;
                    in_touched_groups(function.as_mut(), partials, |function, partial| {
                        function.buffer_partial(partial.key_hash, &partial.key_bytes, partial.sum, backend.as_mut())
                    })?;
                }
                Ok(Message::Barrier(barrier)) => {
                    match aligning {
                        Some(current) if current.id == barrier.id => {}
                        _ => {
                            // A newer barrier supersedes an unfinished one.
                            aligning = Some(barrier);
                            seen.iter_mut().for_each(|s| *s = false);
                        }
                    }
                    seen[i] = true;
                }
                Ok(Message::End) => ended[i] = true,
            }
            if let Some(barrier) = aligning {
                if (0..n).all(|j| seen[j] || ended[j]) {
                    sink.flush()?;
                    function.flush_buffer(self.backend.as_mut())?;
                    self.snapshot(barrier);
                    aligning = None;
                    seen.iter_mut().for_each(|s| *s = false);
                }
            }
        }
        sink.flush()?;
        function.flush_buffer(self.backend.as_mut())?;
        let mut finals = Vec::new();
        match &self.final_sink {
            Some(factory) => {
                let mut final_sink = factory(self.subtask, self.parallelism)?;
                let mut write_error = None;
                function.finish(self.backend.as_mut(), &mut |o| {
                    if write_error.is_none() {
                        write_error = final_sink.write(&o).err();
                    }
                })?;
                if let Some(e) = write_error {
                    return Err(e);
                }
                final_sink.flush()?;
            }
            None => function.finish(self.backend.as_mut(), &mut |o| finals.push(o))?,
        }
        Ok(finals)
    }
}

struct Pending {
    barrier: Barrier,
    started: Instant,
    acks: Vec<Ack>,
    reply: Option<Sender<Result<String>>>,
}

struct Coordinator {
    job_id: String,
    settings: JobSettings,
    storage: CheckpointStorage,
    control: Receiver<Control>,
    sources: Vec<Sender<Barrier>>,
    expected_acks: usize,
    next_id: u64,
    cancel: Arc<AtomicBool>,
    metrics: Arc<JobMetrics>,
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
            parallelism: self.sources.len() as u32,
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
        let path = format!(
            "{}/{}",
            self.storage.uri().trim_end_matches('/'),
            committed.dir.trim_end_matches('/')
        );
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
    fn run(mut self) -> Result<u64> {
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
