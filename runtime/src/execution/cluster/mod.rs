//! The cluster executor: one job across `N` processes of `W` workers each
//! on [timely-dataflow](https://docs.rs/timely), an existing engine: its
//! process mesh over TCP (a hostfile of `host:port` lines, one per
//! process; `mesh` only opens the connections), its exchange channels and
//! its progress tracking. No protocol of our own.
//!
//! Worker `w` of the `N x W` is source subtask `w` (a file is split by
//! byte ranges aligned to lines) and keyed subtask `w`, owning key-group
//! range `w` by Flink's formula. Sources run in each worker's loop and
//! send batches at a *tick* (timely's timestamp); the exchange routes each
//! batch to the worker owning its keys; the keyed operator applies a tick
//! once the command stream (worker 0's, broadcast) has passed it.
//!
//! Bounded memory: timely's exchange queues have no flow control, so a
//! source may only send at ticks below the command stream's frontier, which
//! worker 0 holds at most `commands::TICKS_IN_FLIGHT` ticks ahead of the
//! slowest keyed operator (a probe). A stopped or slow process therefore
//! stops the others' sources instead of growing their queues.
//!
//! Checkpoints are one cut across all processes: worker 0's coordinator
//! sends a barrier as a command at a tick; every source snapshots before
//! it sends at that tick, every keyed operator once all ticks before it
//! are applied (see `worker`). Acknowledgements cross to worker 0, which
//! alone writes `_metadata` and applies retention. On start, all workers
//! agree on the job id and on the snapshot to restore (see `agree`).
//!
//! | module | job |
//! |---|---|
//! | `mod` (this) | start, results, a lost peer as an error |
//! | `config` | where this process stands: `ClusterConfig` |
//! | `agree` | job id and restore agreed by every worker |
//! | `commands` | worker 0's command input: barriers, stop, pacing |
//! | `mesh` | the connections between processes, handed to timely |
//! | `wire` | what crosses timely's channels; the source's buffered outputs |
//! | `tick_order` | the order a keyed operator applies ticks and barriers in |
//! | `worker` | one worker's dataflows and loop |

mod agree;
mod commands;
mod config;
mod mesh;
mod tick_order;
mod wire;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::{Error, ErrorKind, Result};

pub use config::{ClusterConfig, DEFAULT_STARTUP_TIMEOUT};

use crate::handle::JobResult;
use crate::metrics::JobMetrics;
use crate::mini_batch::Accumulator;
use crate::plan::Job;

/// How long a process that lost a peer waits before it exits itself.
const LOST_PEER_GRACE: Duration = Duration::from_secs(1);

/// Requests to a running cluster job from outside its workers, e.g. the
/// CLI's signal handlers.
///
/// ```
/// let signals = streamstate_runtime::execution::ClusterSignals::default();
/// signals.stop_with_savepoint.store(true, std::sync::atomic::Ordering::SeqCst);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClusterSignals {
    /// Set to stop the job with a savepoint (Flink's `stop`): taken by a
    /// worker of this process and passed to worker 0, which takes the
    /// savepoint and then stops every process. Cleared once taken, so a
    /// second request after a failed savepoint tries again.
    pub stop_with_savepoint: Arc<AtomicBool>,
    /// The job's live counters in this process, for a metrics endpoint
    /// (checkpoint counters move in process 0 only: it commits).
    pub metrics: Arc<JobMetrics>,
}

/// The first peer process the running job lost, as timely's network
/// threads reported it (their panic): `(peer index, what failed)`. Reset
/// when a job starts, so a loss fails only the job it happened in.
static LOST_PEER: Mutex<Option<(String, String)>> = Mutex::new(None);

fn lost_peer() -> Option<(String, String)> {
    LOST_PEER.lock().ok().and_then(|lost| lost.clone())
}

/// timely panics in its network threads when a peer's connection breaks
/// ("timely communication error"), and then in every worker ("MergeQueue
/// poisoned"). This hook records the first such panic, says once which
/// peer was lost, and keeps the rest quiet; other panics go to the hook
/// that was installed before.
fn install_peer_loss_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if message.contains("timely communication error") {
                let thread = std::thread::current();
                let peer = thread
                    .name()
                    .and_then(|n| n.rsplit_once('-'))
                    .map(|(_, p)| p.to_owned())
                    .unwrap_or_else(|| "?".into());
                let first = LOST_PEER.lock().is_ok_and(|mut lost| {
                    let first = lost.is_none();
                    lost.get_or_insert_with(|| (peer.clone(), message.to_owned()));
                    first
                });
                if first {
                    tracing::error!(peer = %peer, cause = %message, "lost a peer process; this process stops");
                }
            } else if message.contains("MergeQueue poisoned") || lost_peer().is_some() {
                // A consequence of the loss reported above.
            } else {
                previous(info);
            }
        }));
    });
}

fn lost_peer_error(config: &ClusterConfig, panic: &str) -> Error {
    match lost_peer() {
        Some((peer, cause)) => {
            let address = peer
                .parse::<usize>()
                .ok()
                .and_then(|i| config.hosts.get(i))
                .map(String::as_str)
                .unwrap_or("unknown address");
            Error::new(
                ErrorKind::Storage,
                format!(
                    "lost peer process {peer} ({address}): {cause}; every process of the job stops, restart them all"
                ),
            )
        }
        None => Error::new(ErrorKind::InvalidArgument, format!("a worker thread panicked: {panic}")),
    }
}

/// Runs `job` as this process's part of the cluster and waits for it: a
/// bounded input ends when every process's sources have ended and every
/// keyed subtask has finished. Returns this process's workers' final
/// records (when the job has no final sink).
pub(crate) fn execute<K, T, O, A>(
    job: Job<K, T, O, A>,
    cluster: &ClusterConfig,
    signals: &ClusterSignals,
) -> Result<JobResult<O>>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
    O: Send + 'static,
    A: Accumulator,
{
    cluster.validate()?;
    let mut job = job;
    let settings = &mut job.settings;
    settings.parallelism = cluster.parallelism();
    // Each process proposes a job id; worker 0's is the job's (the one
    // given, else a new one: each run of a cluster is a new job, as a
    // local run is).
    let (backend, storage, proposed_job_id) = crate::execution::local::resolve(settings)?;
    if cluster.processes > 1 && settings.checkpoint.interval.is_some() && storage.uri().starts_with("memory:") {
        return Err(Error::config(
            "checkpoints across processes need storage every process reaches (s3://, hdfs://, or a shared file:// path)",
        ));
    }
    let metrics = Arc::clone(&signals.metrics);
    let shared = Arc::new(worker::Shared {
        job,
        backend,
        storage,
        proposed_job_id,
        job_id: Mutex::new(None),
        failed: AtomicBool::new(false),
        cancel: Arc::new(AtomicBool::new(false)),
        metrics: Arc::clone(&metrics),
        coordinator: Mutex::new(None),
        stop_requested: Arc::clone(&signals.stop_with_savepoint),
        stopped_with: Mutex::new(None),
    });
    install_peer_loss_hook();
    if let Ok(mut lost) = LOST_PEER.lock() {
        *lost = None;
    }
    let allocators = mesh::connect(cluster, &metrics)?;
    let worker_shared = Arc::clone(&shared);
    let (done_tx, done) = crossbeam_channel::unbounded::<Result<Vec<O>>>();
    let (builders, network) = allocators;
    let guards = timely::execute::execute_from(builders, network, timely::WorkerConfig::default(), move |worker| {
        match worker::run(worker, &worker_shared) {
            Ok(records) => {
                let _ = done_tx.send(Ok(records));
            }
            Err(e) => {
                worker_shared.failed.store(true, Ordering::SeqCst);
                let _ = done_tx.send(Err(e));
                // Keep this process's connections open until it exits: a
                // worker that ends closes them cleanly, and the peers would
                // wait for it forever instead of seeing it lost.
                loop {
                    std::thread::park();
                }
            }
        }
    })
    .map_err(|e| Error::config(format!("cannot start the cluster's workers: {e}")))?;
    let mut final_records = Vec::new();
    let mut first_error = None;
    let mut finished = 0;
    while finished < cluster.workers {
        match done.recv_timeout(Duration::from_millis(20)) {
            Ok(Ok(records)) => {
                final_records.extend(records);
                finished += 1;
            }
            Ok(Err(e)) => {
                first_error = Some(e);
                break;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if lost_peer().is_none() => {}
            // A lost peer (timely's threads panicked): workers will not
            // report. This process stays a moment before it exits, so the
            // other survivors see the peer that was lost first, not this
            // one leaving.
            Err(_) => {
                first_error = Some(lost_peer_error(cluster, "a worker stopped without a result"));
                std::thread::sleep(LOST_PEER_GRACE);
                break;
            }
        }
    }
    if first_error.is_none() {
        // Every worker is done: end the connections cleanly with the peers
        // (joining panics when a network thread did: a peer lost at the end).
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || guards.join())) {
            let panic = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            first_error = Some(lost_peer_error(cluster, &panic));
        }
    } else {
        // Failed: the process is about to exit; waiting for the peers to
        // close their connections could wait forever (a stopped peer).
        shared.cancel.store(true, Ordering::SeqCst);
        std::mem::forget(guards);
    }
    // A peer lost while this process's workers were already done still
    // failed the job: the peer's part of the result is missing.
    if let (None, Some(_)) = (&first_error, lost_peer()) {
        first_error = Some(lost_peer_error(cluster, ""));
    }
    // The coordinator ends once the workers have dropped its links; its
    // error (too many failed checkpoints) is the job's cause.
    let coordinator = shared.coordinator.lock().ok().and_then(|mut c| c.take());
    let mut failed_checkpoints = 0;
    if first_error.is_some() {
        // A coordinator that failed the job has returned (or is about to);
        // one still waiting on a checkpoint is not waited for.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while coordinator.as_ref().is_some_and(|c| !c.is_finished()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let Some(handle) = coordinator.filter(|c| first_error.is_none() || c.is_finished()) {
        match handle.join() {
            Ok(Ok(failed)) => failed_checkpoints = failed,
            Ok(Err(e)) => first_error = Some(e),
            Err(_) => {
                first_error.get_or_insert_with(|| Error::invalid_argument("the checkpoint coordinator panicked"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let job_id = shared.job_id.lock().ok().and_then(|id| id.clone()).unwrap_or_default();
    let mut result = JobResult::from_metrics(job_id, final_records, failed_checkpoints, &metrics);
    result.stopped_with_savepoint = shared.stopped_with.lock().ok().and_then(|p| p.clone());
    Ok(result)
}
