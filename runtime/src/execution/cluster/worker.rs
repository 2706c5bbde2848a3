//! One worker of the cluster executor: its dataflows and its loop.
//!
//! ```text
//!  worker loop: source task ──(tick t)──► data input ─exchange by subtask─┐
//!  worker 0:    command input ─broadcast─► commands seen (sources' barriers)
//!                                  └──────────────────────────────────────┤
//!                                                                         ▼
//!                                   keyed operator (tick order, barriers) ─► probe
//!  upload threads ─► ack input ─exchange to worker 0─► coordinator ─► _metadata
//! ```
//!
//! Pacing: worker 0 holds the command input at most
//! [`super::commands::TICKS_IN_FLIGHT`]
//! ticks ahead of the keyed operators' probe; a source sends at tick `t`
//! only once the command stream has passed `t`, so no exchange queue grows
//! beyond a few ticks of every source's batches.
//!
//! Checkpoints: worker 0's coordinator triggers a barrier, which worker 0
//! sends as a command at the command input's current tick `c`. No source
//! has sent at `c` yet (the stream had not passed it): each snapshots its
//! position before it sends at `c`; each keyed operator snapshots once
//! every tick before `c` is applied and none after. That is one cut of the
//! input across all processes. Acknowledgements cross to worker 0, whose
//! coordinator writes `_metadata` once all `2 x N x W` tasks acknowledged.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver};
use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::{CheckpointStorage, Error, Result, StateBackend};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Exchange as _, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use super::agree::{agree_and_restore, fresh_keyed};
use super::commands::{pace, CoordinatorLink};
use super::tick_order::{Step, TickOrder};
use super::wire::{send_buffered, Buffered, Builder, Command, Packet, Payload, WireAck};
use crate::execution::coordinator::Coordinator;
use crate::execution::keyed_task::KeyedTask;
use crate::execution::messages::{Barrier, Control};
use crate::execution::source_task::SourceTask;
use crate::execution::upload::{TargetFactory, Uploads};
use crate::metrics::JobMetrics;
use crate::mini_batch::Accumulator;
use crate::plan::{Job, KEYED_OPERATOR, SOURCE_OPERATOR};
use crate::source::SourcePoll;

/// Lines a source reads at one tick before it moves to the next.
const LINES_PER_TICK: usize = 4096;

/// What every worker of this process reads.
pub(crate) struct Shared<K, T, O, A: Accumulator> {
    pub(crate) job: Job<K, T, O, A>,
    pub(crate) backend: Arc<dyn StateBackend>,
    pub(crate) storage: CheckpointStorage,
    /// This process's proposal; worker 0's is the job's.
    pub(crate) proposed_job_id: String,
    /// The job id all workers agreed on (set by this process's workers).
    pub(crate) job_id: Mutex<Option<String>>,
    /// Set when a worker of this process fails: the others stop.
    pub(crate) failed: AtomicBool,
    /// Set by the coordinator when the job must stop (too many failed
    /// checkpoints).
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) metrics: Arc<JobMetrics>,
    /// Worker 0's coordinator thread, joined when the workers are.
    pub(crate) coordinator: Mutex<Option<JoinHandle<Result<u64>>>>,
    /// Set from outside (a signal): stop with a savepoint.
    pub(crate) stop_requested: Arc<AtomicBool>,
    /// The savepoint the job stopped with.
    pub(crate) stopped_with: Mutex<Option<String>>,
}

/// The keyed operator's outcome, read by its worker's loop.
struct KeyedOutcome<O> {
    error: Option<Error>,
    finals: Option<Vec<O>>,
}

/// Hands the acknowledgements of this worker's uploads to the ack input.
fn forward_acks(acks: &Receiver<Control>, input: &mut InputHandle<u64, Builder<WireAck>>) -> Result<()> {
    let mut sent = false;
    while let Ok(control) = acks.try_recv() {
        if let Some(ack) = WireAck::from_control(control)? {
            input.send(ack);
            sent = true;
        }
    }
    if sent {
        send_buffered(input);
    }
    Ok(())
}

/// Runs one worker until the job ends; returns its keyed subtask's final
/// records.
pub(crate) fn run<K, T, O, A>(worker: &mut timely::worker::Worker, shared: &Shared<K, T, O, A>) -> Result<Vec<O>>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
    O: Send + 'static,
    A: Accumulator,
{
    let index = worker.index() as u32;
    let peers = worker.peers() as u32;
    let job = &shared.job;
    let settings = &job.settings;
    let start = agree_and_restore(worker, settings, &shared.backend, &shared.proposed_job_id)?;
    let job_id = start.job_id.clone();
    if let Ok(mut slot) = shared.job_id.lock() {
        *slot = Some(job_id.clone());
    }
    shared.metrics.restore_ms.fetch_max(start.restore_ms, Ordering::Relaxed);
    if let (Some(path), Ok(mut slot)) = (start.path.clone(), shared.metrics.restored_from.lock()) {
        *slot = Some(path);
    }
    let (keyed_backend, mut source_store) = match start.restored {
        Some(part) => (part.keyed, part.source_store),
        None => (fresh_keyed(settings, &shared.backend, &job_id, index)?, None),
    };
    let (acks_tx, acks) = unbounded();
    let uploads = Uploads::default();
    let targets = TargetFactory {
        job_id: job_id.clone(),
        native: shared.backend.capabilities().native_snapshots,
        // Each subtask's backend chains its own files under `shared/`, as
        // in one process; only worker 0's retention deletes them, and only
        // files no retained checkpoint lists.
        incremental: settings.checkpoint.incremental && shared.backend.capabilities().incremental_snapshots,
    };
    // Every keyed subtask runs the same sink, so this worker's tells for
    // all: the others count as discarding from the start (the source folds
    // a `sum` locally only once all do).
    let discarding_sinks = Arc::new(AtomicUsize::new(peers as usize - 1));
    let cancel = Arc::clone(&shared.cancel);
    let mut keyed = KeyedTask {
        subtask: index,
        parallelism: peers,
        inputs: Vec::new(),
        backend: keyed_backend,
        factory: Arc::clone(&job.factory),
        sink: Arc::clone(&job.sink),
        final_sink: job.final_sink.clone(),
        discarding_sinks: Arc::clone(&discarding_sinks),
        mode: crate::config::CheckpointingMode::ExactlyOnce,
        control: acks_tx.clone(),
        uploads: uploads.clone(),
        storage: shared.storage.clone(),
        targets: targets.clone(),
        cancel: Arc::clone(&cancel),
        metrics: Arc::clone(&shared.metrics),
        task_metrics: shared.metrics.task(KEYED_OPERATOR, index),
        restored_checkpoint: start.checkpoint_id,
    };
    // Opened before the source starts: the source folds a `sum` locally
    // only once it knows every sink discards per-record output.
    let mut opened = Some(keyed.open(peers as usize)?);
    let (_no_commands, never) = unbounded();
    let mut source = SourceTask {
        subtask: index,
        last_barrier: None,
        source: (job.source.factory)(index, peers, source_store.as_mut())?,
        outputs: Buffered {
            source: index,
            destinations: peers as usize,
            packets: Vec::new(),
        },
        commands: never,
        chain: Arc::clone(&job.chain),
        key_of: Arc::clone(&job.key_of),
        max_parallelism: settings.max_parallelism,
        parallelism: peers,
        batch_size: settings.batch_size.max(1),
        local_sum: job.local_sum.clone(),
        watermarks: job.watermarks.clone(),
        discarding_sinks,
        control: acks_tx,
        uploads: uploads.clone(),
        storage: shared.storage.clone(),
        targets,
        cancel: Arc::clone(&cancel),
        metrics: Arc::clone(&shared.metrics),
        task_metrics: shared.metrics.task(SOURCE_OPERATOR, index),
    };

    // Worker 0 runs the job's coordinator.
    let mut link = None;
    if index == 0 {
        let (control, control_rx) = unbounded();
        let (barrier_tx, barriers) = unbounded();
        let coordinator = Coordinator {
            job_id: job_id.clone(),
            settings: settings.clone(),
            storage: shared.storage.clone(),
            control: control_rx,
            sources: vec![barrier_tx],
            source_parallelism: peers,
            expected_acks: 2 * peers as usize,
            next_id: start.checkpoint_id.map_or(1, |id| id + 1),
            cancel: Arc::clone(&cancel),
            metrics: Arc::clone(&shared.metrics),
        };
        let handle = std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || coordinator.run())
            .map_err(|e| Error::invalid_argument("cannot spawn the coordinator thread").with_source(e))?;
        if let Ok(mut slot) = shared.coordinator.lock() {
            *slot = Some(handle);
        }
        link = Some(CoordinatorLink {
            control,
            barriers,
            last_sent: None,
            stop_wanted: Rc::new(std::cell::Cell::new(false)),
            savepoint: None,
            stopping: false,
            announced: shared.metrics.last_checkpoint_id.load(Ordering::Acquire),
            metrics: Arc::clone(&shared.metrics),
        });
    }

    // Acknowledgements, to worker 0's coordinator.
    let mut ack_in: InputHandle<u64, Builder<WireAck>> = InputHandle::new();
    let to_coordinator = link.as_ref().map(|l| (l.control.clone(), Rc::clone(&l.stop_wanted)));
    worker.dataflow::<u64, _, _>(|scope| {
        ack_in.to_stream(scope).exchange(|_| 0).inspect(move |ack: &WireAck| {
            if let Some((control, stop_wanted)) = &to_coordinator {
                match ack.clone().into_control() {
                    Some(message) => {
                        let _ = control.send(message);
                    }
                    None => stop_wanted.set(true),
                }
            }
        });
    });

    let outcome = Rc::new(RefCell::new(KeyedOutcome {
        error: None,
        finals: None,
    }));
    let seen: Rc<RefCell<Vec<Command>>> = Rc::new(RefCell::new(Vec::new()));
    let mut data_in: InputHandle<u64, Builder<Packet<T, A>>> = InputHandle::new();
    let mut command_in: InputHandle<u64, Builder<Command>> = InputHandle::new();
    let probe = ProbeHandle::new();
    let command_probe = ProbeHandle::new();
    let data_probe = ProbeHandle::new();
    let keyed_outcome = Rc::clone(&outcome);
    let seen_by_source = Rc::clone(&seen);
    worker.dataflow::<u64, _, _>(|scope| {
        let commands = command_in
            .to_stream(scope)
            .broadcast()
            .inspect(move |command: &Command| seen_by_source.borrow_mut().push(command.clone()))
            .probe_with(&command_probe);
        data_in
            .to_stream(scope)
            .probe_with(&data_probe)
            .binary_frontier::<_, Builder<()>, _, _, _, _>(
                commands,
                Exchange::new(|packet: &Packet<T, A>| u64::from(packet.0)),
                Pipeline,
                "keyed",
                move |_capability, _info| {
                    let mut order: TickOrder<_, Payload<T, A>> = TickOrder::default();
                    // Stopped with a savepoint: no final results.
                    let mut stopping = false;
                    move |(data, data_frontier), (commands, command_frontier), _output| {
                        data.for_each(|capability, packets| {
                            // Each tick's capability is held until it is
                            // applied: the probe, and so the pacing, counts it.
                            if let Some(capability) = capability.retain_least(0) {
                                let tick = *capability.time();
                                order.push_batches(tick, capability, packets.drain(..).map(|(_, payload)| payload));
                            }
                        });
                        commands.for_each(|_, commands| {
                            for command in commands.drain(..) {
                                match command {
                                    Command::Barrier { id, kind, tick } => {
                                        order.push_barrier(tick, Barrier { id, kind })
                                    }
                                    Command::Stop { .. } => stopping = true,
                                    // Recorded here too, for the sink's
                                    // commit below (process 0's coordinator
                                    // recorded it already).
                                    Command::Completed { id, .. } => {
                                        keyed.metrics.last_checkpoint_id.fetch_max(id, Ordering::AcqRel);
                                    }
                                }
                            }
                        });
                        let mut outcome = keyed_outcome.borrow_mut();
                        if outcome.error.is_some() {
                            order.clear();
                            return;
                        }
                        while let Some(step) =
                            order.next(|t| data_frontier.less_than(&t), |t| command_frontier.less_equal(&t))
                        {
                            let Some(open) = opened.as_mut() else { break };
                            let done = match step {
                                Step::Apply(payloads) => payloads.into_iter().try_for_each(|payload| match payload {
                                    Payload::Records(records) => keyed.apply_records(open, records),
                                    Payload::Partials(partials) => keyed.apply_partials(open, partials),
                                    Payload::Watermark { source, watermark } => {
                                        keyed.advance_watermark(open, source as usize, watermark)
                                    }
                                    Payload::Idle { source } => keyed.mark_idle(open, source as usize),
                                }),
                                Step::Snapshot(barrier) => {
                                    tracing::debug!(id = barrier.id, "keyed barrier");
                                    keyed.checkpoint(open, barrier)
                                }
                            };
                            if let Err(e) = done {
                                outcome.error = Some(e);
                                order.clear();
                                return;
                            }
                        }
                        // Processing-time timers fire whenever timely runs the
                        // operator; the sources' ticks run it often.
                        if let Some(open) = opened.as_mut() {
                            let fired = keyed
                                .commit_completed(open)
                                .and_then(|()| keyed.fire_processing_time(open, std::time::Duration::ZERO));
                            if let Err(e) = fired {
                                outcome.error = Some(e);
                                order.clear();
                                return;
                            }
                        }
                        let ended = data_frontier.is_empty() && command_frontier.is_empty() && order.is_empty();
                        if let Some(open) = opened.take_if(|_| ended) {
                            if stopping {
                                outcome.finals = Some(Vec::new());
                            } else {
                                match keyed.finish(open) {
                                    Ok(finals) => outcome.finals = Some(finals),
                                    Err(e) => outcome.error = Some(e),
                                }
                            }
                        }
                    }
                },
            )
            .probe_with(&probe);
    });

    let mut command_in = match index {
        0 => Some(command_in),
        _ => {
            // Only worker 0 commands; the others' inputs close at once.
            drop(command_in);
            None
        }
    };
    let mut data_in = Some(data_in);
    let mut tick = 0u64;
    let mut st = source.start();
    loop {
        if shared.failed.load(Ordering::SeqCst) {
            return Err(Error::invalid_argument("another worker of this process failed"));
        }
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::invalid_argument("the job's checkpoint coordinator stopped it"));
        }
        if let Some(e) = outcome.borrow_mut().error.take() {
            return Err(e);
        }
        forward_acks(&acks, &mut ack_in)?;
        if shared.stop_requested.swap(false, Ordering::SeqCst) {
            match link.as_ref() {
                Some(link) => link.stop_wanted.set(true),
                None => {
                    ack_in.send(WireAck::StopRequest);
                    send_buffered(&mut ack_in);
                }
            }
        }
        if let Some(commands) = command_in.as_mut() {
            if data_probe.done() {
                // Every source has closed its input: nothing left to pace,
                // and no barrier can be sent any more.
                command_in = None;
                if let Some(link) = link.take() {
                    let _ = link.control.send(Control::SourceFinished {
                        last_barrier: link.last_sent,
                    });
                }
            } else {
                if let Some(link) = link.as_mut() {
                    link.send_commands(commands);
                }
                let slowest = probe.with_frontier(|f| f.first().copied());
                pace(commands, slowest);
            }
        }
        // This worker's source takes a barrier at tick `c` before it sends
        // at `c` (every command up to `tick` has arrived once the stream
        // passed `tick`); after its end, at once.
        let may_send = !command_probe.less_equal(&tick);
        let ready: Vec<Command> = {
            let mut seen = seen.borrow_mut();
            let (ready, waiting) = seen
                .drain(..)
                .partition(|c| data_in.is_none() || (may_send && c.tick() <= tick));
            *seen = waiting;
            ready
        };
        for command in ready {
            tracing::debug!(worker = index, tick, command = ?command, "source command");
            match command {
                Command::Barrier { id, kind, .. } => source.barrier(&mut st, Barrier { id, kind })?,
                Command::Completed { .. } => {}
                Command::Stop { savepoint, .. } => {
                    // The source stops where it is: its position is in
                    // the savepoint, the rest is read after the restart.
                    data_in = None;
                    if let Ok(mut slot) = shared.stopped_with.lock() {
                        *slot = Some(savepoint);
                    }
                }
            }
        }
        let mut busy = false;
        if let Some(input) = data_in.as_mut().filter(|_| may_send) {
            let mut ended = false;
            for _ in 0..LINES_PER_TICK {
                match source.poll_once(&mut st)? {
                    SourcePoll::Line { .. } => busy = true,
                    SourcePoll::Idle => break,
                    SourcePoll::End => {
                        source.end(&mut st)?;
                        ended = true;
                        break;
                    }
                }
            }
            source.flush_all(&mut st)?;
            for packet in source.outputs.packets.drain(..) {
                input.send(packet);
            }
            if ended {
                data_in = None;
            } else {
                tick += 1;
                input.advance_to(tick);
            }
        }
        let finished = outcome.borrow().finals.is_some();
        if finished && probe.done() && command_in.is_none() && data_in.is_none() && seen.borrow().is_empty() {
            break;
        }
        worker.step_or_park(if busy {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_millis(1))
        });
    }
    // The last snapshots' acknowledgements go out before the ack input
    // closes, so a checkpoint taken at the end still completes.
    uploads.join_all();
    forward_acks(&acks, &mut ack_in)?;
    drop(ack_in);
    let finals = outcome.borrow_mut().finals.take().unwrap_or_default();
    Ok(finals)
}
