//! Worker 0's command input: the coordinator's barriers and the
//! stop-with-savepoint go out on it, and its time, held a few ticks ahead
//! of the slowest keyed operator, paces every source.

use std::cell::Cell;
use std::rc::Rc;

use crossbeam_channel::{unbounded, Receiver, Sender};
use streamstate_api::Result;
use timely::dataflow::InputHandle;

use super::wire::{send_buffered, Builder, Command};
use crate::execution::messages::{Barrier, Control};

/// Ticks a source may run ahead of the slowest keyed operator.
pub(crate) const TICKS_IN_FLIGHT: u64 = 4;

/// Worker 0's links to its coordinator: where barriers come from, where
/// the end of the input is reported.
pub(crate) struct CoordinatorLink {
    pub(crate) control: Sender<Control>,
    pub(crate) barriers: Receiver<Barrier>,
    pub(crate) last_sent: Option<u64>,
    /// A stop-with-savepoint asked for (by this process or another).
    pub(crate) stop_wanted: Rc<Cell<bool>>,
    /// The coordinator's answer to the stop's savepoint, when one is due.
    pub(crate) savepoint: Option<Receiver<Result<String>>>,
    /// The stop command went out.
    pub(crate) stopping: bool,
    /// The job's metrics, where the coordinator records each completed
    /// checkpoint.
    pub(crate) metrics: std::sync::Arc<crate::metrics::JobMetrics>,
    /// The newest completed checkpoint announced to every process.
    pub(crate) announced: u64,
}

/// Worker 0's part of stop-with-savepoint: asks the coordinator for the
/// savepoint once a stop is wanted, and when it completes, sends the stop
/// command (a failed savepoint leaves the job running, as in Flink).
fn stop_with_savepoint(link: &mut CoordinatorLink, commands: &mut InputHandle<u64, Builder<Command>>) {
    if link.stop_wanted.replace(false) && link.savepoint.is_none() && !link.stopping {
        let (reply, answer) = unbounded();
        if link.control.send(Control::TriggerSavepoint(reply)).is_ok() {
            link.savepoint = Some(answer);
        }
    }
    let Some(answer) = link.savepoint.as_ref() else {
        return;
    };
    match answer.try_recv() {
        Ok(Ok(savepoint)) => {
            let tick = *commands.time();
            tracing::info!(%savepoint, tick, "savepoint complete; stopping every process");
            commands.send(Command::Stop { tick, savepoint });
            send_buffered(commands);
            link.stopping = true;
            link.savepoint = None;
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "stop-with-savepoint failed; the job keeps running");
            link.savepoint = None;
        }
        Err(crossbeam_channel::TryRecvError::Empty) => {}
        Err(crossbeam_channel::TryRecvError::Disconnected) => link.savepoint = None,
    }
}

impl CoordinatorLink {
    /// Sends the barriers the coordinator triggered, each newly completed
    /// checkpoint, and the stop once its savepoint completed, each at the
    /// command input's current tick.
    pub(crate) fn send_commands(&mut self, commands: &mut InputHandle<u64, Builder<Command>>) {
        stop_with_savepoint(self, commands);
        let completed = self
            .metrics
            .last_checkpoint_id
            .load(std::sync::atomic::Ordering::Acquire);
        if completed > self.announced {
            let tick = *commands.time();
            commands.send(Command::Completed { id: completed, tick });
            send_buffered(commands);
            self.announced = completed;
        }
        while let Ok(barrier) = self.barriers.try_recv() {
            let tick = *commands.time();
            tracing::debug!(id = barrier.id, tick, "barrier sent");
            commands.send(Command::Barrier {
                id: barrier.id,
                kind: barrier.kind,
                tick,
            });
            self.last_sent = Some(barrier.id);
            // Out now, not when the pacing next moves the time.
            send_buffered(commands);
        }
    }
}

/// Holds the command input at most [`TICKS_IN_FLIGHT`] ticks ahead of
/// `slowest`, the keyed operators' probe (a source sends at a tick only
/// once the command stream has passed it).
pub(crate) fn pace(commands: &mut InputHandle<u64, Builder<Command>>, slowest: Option<u64>) {
    if let Some(slowest) = slowest {
        let ahead = slowest.saturating_add(TICKS_IN_FLIGHT);
        if ahead > *commands.time() {
            commands.advance_to(ahead);
        }
    }
}
