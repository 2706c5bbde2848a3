//! The local executor: runs a [`Job`] on threads of this process, linked
//! by bounded crossbeam channels. It restores (if asked), creates the
//! sources, wires one channel per source and keyed subtask, and starts the
//! source, keyed and coordinator threads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::key_group::check_parallelism;
use streamstate_api::{CheckpointStorage, Error, ErrorKind, Result, StateBackend};

use super::coordinator::Coordinator;
use super::keyed_task::KeyedTask;
use super::messages::Message;
use super::restore::{keyed_options, restore};
use super::source_task::SourceTask;
use super::upload::{TargetFactory, Uploads};
use crate::handle::JobHandle;
use crate::metrics::JobMetrics;
use crate::mini_batch::Accumulator;
use crate::plan::{Job, JobSettings, KEYED_OPERATOR, SOURCE_OPERATOR};

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

/// What every executor checks and fills in first: the parallelism and the
/// checkpoint settings fit, the backend (Flink's default when none is set),
/// the checkpoint storage (`memory://` when none is set) and the job id
/// (the one set, checked, else a new one).
pub(crate) fn resolve(settings: &JobSettings) -> Result<(Arc<dyn StateBackend>, CheckpointStorage, String)> {
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
    streamstate_api::storage::layout::validate_job_id(&job_id)?;
    Ok((backend, storage, job_id))
}

/// Runs `job` on this process's threads and returns its handle.
pub(crate) fn execute<K, T, O, A>(job: Job<K, T, O, A>) -> Result<JobHandle<O>>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Send + 'static,
    O: Send + 'static,
    A: Accumulator,
{
    let Job {
        settings,
        source: source_spec,
        chain,
        key_of,
        watermarks,
        factory,
        local_sum,
        sink,
        final_sink,
    } = job;

    let (backend, storage, job_id) = resolve(&settings)?;
    let metrics = Arc::new(JobMetrics::default());
    let restored = restore(&settings, &backend, &storage, &job_id, source_spec.parallelism)?;
    let restored_checkpoint = restored.as_ref().map(|r| r.checkpoint_id);
    let (first_id, keyed_backends, mut source_stores) = match restored {
        Some(r) => {
            metrics.restore_ms.store(r.restore_ms, Ordering::Relaxed);
            if let Ok(mut slot) = metrics.restored_from.lock() {
                *slot = Some(r.path);
            }
            (r.checkpoint_id + 1, r.keyed, r.source_stores)
        }
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
    let (control_tx, control_rx) = unbounded();
    let p = settings.parallelism as usize;
    let mut data_tx: Vec<Vec<Sender<Message<T, A>>>> = Vec::new();
    let mut data_rx: Vec<Vec<Receiver<Message<T, A>>>> = (0..p).map(|_| Vec::new()).collect();
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
            task_metrics: metrics.task(KEYED_OPERATOR, subtask as u32),
            restored_checkpoint,
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
            watermarks: watermarks.clone(),
            discarding_sinks: Arc::clone(&discarding_sinks),
            control: control_tx.clone(),
            uploads: uploads.clone(),
            storage: storage.clone(),
            targets: targets.clone(),
            cancel: Arc::clone(&cancel),
            metrics: Arc::clone(&metrics),
            task_metrics: metrics.task(SOURCE_OPERATOR, subtask as u32),
        };
        let cancel = Arc::clone(&cancel);
        source_handles.push(spawn(format!("source-{subtask}"), cancel, move || task.run())?);
    }
    let coordinator = Coordinator {
        job_id: job_id.clone(),
        settings: settings.clone(),
        storage: storage.clone(),
        control: control_rx,
        source_parallelism: command_txs.len() as u32,
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
