//! One worker of the cluster executor: its dataflow and its loop.
//!
//! ```text
//!  worker loop: source task ──(tick t)──► data input ─exchange by subtask─┐
//!  worker 0:    command input ─broadcast─► command probe (sources gate) ──┤
//!                                                                         ▼
//!                                                 keyed operator (tick order) ─► probe
//! ```
//!
//! Worker 0 holds the command input at most [`TICKS_IN_FLIGHT`] ticks ahead
//! of the keyed operators' probe; a source sends at tick `t` only once the
//! command stream has passed `t`. That is the pacing: no worker's
//! exchange queue grows beyond a few ticks of every source's batches.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::unbounded;
use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::{CheckpointStorage, Error, Result, StateBackend};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};

use super::wire::{Buffered, Packet, Payload};
use crate::config::CheckpointingMode;
use crate::execution::keyed_task::KeyedTask;
use crate::execution::restore::keyed_options;
use crate::execution::source_task::SourceTask;
use crate::execution::upload::{TargetFactory, Uploads};
use crate::metrics::JobMetrics;
use crate::mini_batch::Accumulator;
use crate::plan::Job;
use crate::source::SourcePoll;

/// Ticks a source may run ahead of the slowest keyed operator.
pub(crate) const TICKS_IN_FLIGHT: u64 = 4;

/// Lines a source reads at one tick before it moves to the next.
const LINES_PER_TICK: usize = 4096;

/// A command on worker 0's broadcast stream. None yet: its frontier alone
/// paces the sources; checkpoint barriers will travel here.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Command {}

type Builder<D> = CapacityContainerBuilder<Vec<D>>;

/// A keyed operator's batches by tick, each tick with its capability.
type Stash<T, A> = BTreeMap<u64, (timely::dataflow::operators::Capability<u64>, Vec<Payload<T, A>>)>;

/// What every worker of this process reads.
pub(crate) struct Shared<K, T, O, A: Accumulator> {
    pub(crate) job: Job<K, T, O, A>,
    pub(crate) backend: Arc<dyn StateBackend>,
    pub(crate) job_id: String,
    /// Set when a worker of this process fails: the others stop.
    pub(crate) failed: AtomicBool,
    pub(crate) metrics: Arc<JobMetrics>,
}

/// The keyed operator's outcome, read by its worker's loop.
struct KeyedOutcome<O> {
    error: Option<Error>,
    finals: Option<Vec<O>>,
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
    let storage = CheckpointStorage::open("memory://")?;
    let (control, _acks) = unbounded();
    let uploads = Uploads::default();
    let targets = TargetFactory {
        job_id: shared.job_id.clone(),
        native: shared.backend.capabilities().native_snapshots,
        incremental: false,
    };
    let discarding_sinks = Arc::new(AtomicUsize::new(0));
    let cancel = Arc::new(AtomicBool::new(false));
    let keyed_backend = shared
        .backend
        .create_keyed_backend(keyed_options(settings, &shared.job_id, index))?;
    let mut keyed = KeyedTask {
        subtask: index,
        parallelism: peers,
        inputs: Vec::new(),
        backend: keyed_backend,
        factory: Arc::clone(&job.factory),
        sink: Arc::clone(&job.sink),
        final_sink: job.final_sink.clone(),
        discarding_sinks: Arc::clone(&discarding_sinks),
        mode: CheckpointingMode::ExactlyOnce,
        control: control.clone(),
        uploads: uploads.clone(),
        storage: storage.clone(),
        targets: targets.clone(),
        cancel: Arc::clone(&cancel),
        metrics: Arc::clone(&shared.metrics),
    };
    // Opened before the source starts: the source folds a `sum` locally
    // only once it knows every sink discards per-record output.
    let mut opened = Some(keyed.open()?);
    let (_commands, never) = unbounded();
    let mut source = SourceTask {
        subtask: index,
        last_barrier: None,
        source: (job.source.factory)(index, peers, None)?,
        outputs: Buffered {
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
        discarding_sinks,
        control,
        uploads,
        storage,
        targets,
        cancel,
        metrics: Arc::clone(&shared.metrics),
    };

    let outcome = Rc::new(RefCell::new(KeyedOutcome {
        error: None,
        finals: None,
    }));
    let mut data_in: InputHandle<u64, Builder<Packet<T, A>>> = InputHandle::new();
    let mut command_in: InputHandle<u64, Builder<Command>> = InputHandle::new();
    let probe = ProbeHandle::new();
    let command_probe = ProbeHandle::new();
    let data_probe = ProbeHandle::new();
    let keyed_outcome = Rc::clone(&outcome);
    worker.dataflow::<u64, _, _>(|scope| {
        let commands = command_in.to_stream(scope).broadcast().probe_with(&command_probe);
        data_in
            .to_stream(scope)
            .probe_with(&data_probe)
            .binary_frontier::<_, Builder<()>, _, _, _, _>(
                commands,
                Exchange::new(|packet: &Packet<T, A>| u64::from(packet.0)),
                Pipeline,
                "keyed",
                move |_capability, _info| {
                    // Batches by tick, each holding its capability so the
                    // probe (and the pacing) counts them until applied.
                    let mut stash: Stash<T, A> = BTreeMap::new();
                    move |(data, data_frontier), (commands, command_frontier), _output| {
                        data.for_each(|capability, packets| {
                            let Some(capability) = capability.retain_least(0) else {
                                return;
                            };
                            let entry = stash
                                .entry(*capability.time())
                                .or_insert_with(|| (capability, Vec::new()));
                            entry.1.extend(packets.drain(..).map(|(_, payload)| payload));
                        });
                        commands.for_each(|_, commands| commands.clear());
                        let mut outcome = keyed_outcome.borrow_mut();
                        if outcome.error.is_some() {
                            stash.clear();
                            return;
                        }
                        // A tick is applied once no command can still come
                        // for it or before it.
                        while let Some(entry) = stash.first_entry() {
                            if command_frontier.less_equal(entry.key()) {
                                break;
                            }
                            let (_capability, payloads) = entry.remove();
                            let Some(open) = opened.as_mut() else { break };
                            for payload in payloads {
                                let applied = match payload {
                                    Payload::Records(records) => keyed.apply_records(open, records),
                                    Payload::Partials(partials) => keyed.apply_partials(open, partials),
                                };
                                if let Err(e) = applied {
                                    outcome.error = Some(e);
                                    return;
                                }
                            }
                        }
                        if data_frontier.is_empty() && command_frontier.is_empty() && stash.is_empty() {
                            if let Some(open) = opened.take() {
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
        if let Some(e) = outcome.borrow_mut().error.take() {
            return Err(e);
        }
        if let Some(commands) = command_in.as_mut() {
            // Every source has closed its input: nothing left to pace.
            if data_probe.done() {
                command_in = None;
            } else {
                let slowest = probe.with_frontier(|f| f.first().copied());
                if let Some(slowest) = slowest {
                    let ahead = slowest.saturating_add(TICKS_IN_FLIGHT);
                    if ahead > *commands.time() {
                        commands.advance_to(ahead);
                    }
                }
            }
        }
        let mut busy = false;
        if let Some(input) = data_in.as_mut() {
            if !command_probe.less_equal(&tick) {
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
        }
        let finished = outcome.borrow().finals.is_some();
        if finished && probe.done() && command_in.is_none() && data_in.is_none() {
            break;
        }
        worker.step_or_park(if busy {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_millis(1))
        });
    }
    let finals = outcome.borrow_mut().finals.take().unwrap_or_default();
    Ok(finals)
}
