//! What crosses timely's channels between workers: batches of records or
//! partial accumulators (tagged with the keyed subtask they go to: timely
//! routes by that tag, worker `w` is keyed subtask `w`), worker 0's
//! commands, and every task's snapshot acknowledgements on their way to
//! the committer.

use serde::{Deserialize, Serialize};
use streamstate_api::{Error, ErrorKind, Result, SnapshotKind};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;

use crate::execution::messages::{Ack, Control, Message, Partial, Record, TaskSnapshot};
use crate::execution::source_task::Outputs;

/// How every input of the cluster's dataflows batches its items.
pub(crate) type Builder<D> = CapacityContainerBuilder<Vec<D>>;

/// Moves `input`'s time on by one, which sends what it buffered through
/// an exchange now (a flush alone leaves it in the exchange's buffers):
/// for inputs whose time nothing else moves soon.
pub(crate) fn send_buffered<D: Clone + 'static>(input: &mut InputHandle<u64, Builder<D>>) {
    let next = *input.time() + 1;
    input.advance_to(next);
}

/// A batch for one keyed subtask.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) enum Payload<T, A> {
    Records(Vec<Record<T>>),
    Partials(Vec<Partial<A>>),
    /// Source subtask `source`'s watermark, after its records before it.
    Watermark {
        source: u32,
        watermark: i64,
    },
    /// Source subtask `source` is idle (see [`Message::Idle`]).
    Idle {
        source: u32,
    },
}

/// `(keyed subtask, batch)`: the exchange's item.
pub(crate) type Packet<T, A> = (u32, Payload<T, A>);

/// A command on worker 0's broadcast stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Snapshot the cut between ticks `tick - 1` and `tick`: a source
    /// before it sends at `tick`, a keyed operator once every tick before
    /// it is applied and none after.
    Barrier { id: u64, kind: SnapshotKind, tick: u64 },
    /// Stop-with-savepoint: `savepoint` completed; sources stop before
    /// they send at `tick`, keyed operators end without final results.
    Stop { tick: u64, savepoint: String },
    /// Checkpoint `id` completed (Flink's `notifyCheckpointComplete`):
    /// every keyed operator's sink may commit what it staged up to it. Only
    /// process 0's coordinator knows; this tells the others.
    Completed { id: u64, tick: u64 },
}

impl Command {
    pub(crate) fn tick(&self) -> u64 {
        match self {
            Self::Barrier { tick, .. } | Self::Stop { tick, .. } | Self::Completed { tick, .. } => *tick,
        }
    }
}

/// A task's acknowledgement (or refusal) of a snapshot, as it crosses
/// processes to the committer. Handles travel as the manifest's JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum WireAck {
    Ack {
        id: u64,
        /// Whether the handle is a source's operator state (else keyed).
        source: bool,
        handle: String,
        sync_us: u64,
        async_us: u64,
    },
    Decline {
        id: u64,
        message: String,
    },
    /// A process was asked to stop with a savepoint (worker 0 takes it).
    StopRequest,
}

impl WireAck {
    /// The wire form of a task's control message; `None` for messages that
    /// stay in their process.
    pub(crate) fn from_control(control: Control) -> Result<Option<Self>> {
        let encode = |e: serde_json::Error| Error::corrupt(format!("a snapshot handle does not encode: {e}"));
        Ok(match control {
            Control::Ack(ack) => {
                let (source, handle) = match &ack.snapshot {
                    TaskSnapshot::Source(h) => (true, serde_json::to_string(h).map_err(encode)?),
                    TaskSnapshot::Keyed(h) => (false, serde_json::to_string(h).map_err(encode)?),
                };
                Some(Self::Ack {
                    id: ack.id,
                    source,
                    handle,
                    sync_us: ack.sync.as_micros() as u64,
                    async_us: ack.async_time.as_micros() as u64,
                })
            }
            Control::Decline { id, error } => Some(Self::Decline {
                id,
                message: error.to_string(),
            }),
            _ => None,
        })
    }

    /// Back to the coordinator's message (`None`: a stop request, which
    /// worker 0 takes itself).
    pub(crate) fn into_control(self) -> Option<Control> {
        Some(match self {
            Self::Ack {
                id,
                source,
                handle,
                sync_us,
                async_us,
            } => {
                let snapshot = if source {
                    serde_json::from_str(&handle).map(TaskSnapshot::Source)
                } else {
                    serde_json::from_str(&handle).map(TaskSnapshot::Keyed)
                };
                match snapshot {
                    Ok(snapshot) => Control::Ack(Box::new(Ack {
                        id,
                        snapshot,
                        sync: std::time::Duration::from_micros(sync_us),
                        async_time: std::time::Duration::from_micros(async_us),
                    })),
                    Err(e) => Control::Decline {
                        id,
                        error: Error::corrupt(format!("an acknowledged snapshot handle does not decode: {e}")),
                    },
                }
            }
            Self::Decline { id, message } => Control::Decline {
                id,
                error: Error::new(ErrorKind::Storage, message),
            },
            Self::StopRequest => return None,
        })
    }
}

/// A source task's outputs on the cluster: batches wait here until the
/// worker loop hands them to timely at the current tick. Barriers and the
/// end of input are not messages here: commands, ticks and the input's
/// closing are.
pub(crate) struct Buffered<T, A> {
    /// The source subtask whose outputs these are (watermarks name it).
    pub(crate) source: u32,
    pub(crate) destinations: usize,
    pub(crate) packets: Vec<Packet<T, A>>,
}

impl<T, A> Outputs<T, A> for Buffered<T, A> {
    fn count(&self) -> usize {
        self.destinations
    }

    fn send(&mut self, to: usize, message: Message<T, A>) -> Result<()> {
        match message {
            Message::Batch(records) => self.packets.push((to as u32, Payload::Records(records))),
            Message::Partials(partials) => self.packets.push((to as u32, Payload::Partials(partials))),
            Message::Watermark(watermark) => self.packets.push((
                to as u32,
                Payload::Watermark {
                    source: self.source,
                    watermark,
                },
            )),
            Message::Idle => self.packets.push((to as u32, Payload::Idle { source: self.source })),
            // The end of a source: its watermark is the maximum from now
            // on, so it no longer holds event time back (the end of the
            // input itself is the exchange's frontier).
            Message::End => self.packets.push((
                to as u32,
                Payload::Watermark {
                    source: self.source,
                    watermark: crate::event_time::MAX_WATERMARK,
                },
            )),
            Message::Barrier(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamstate_api::snapshot::manifest::OperatorStateHandle;
    use streamstate_api::FileRef;

    #[test]
    fn an_ack_survives_the_wire() {
        let handle = OperatorStateHandle {
            subtask: 3,
            file: FileRef {
                path: "chk-1/source-3.opstate".into(),
                size: 12,
                crc32c: 7,
            },
        };
        let control = Control::Ack(Box::new(Ack {
            id: 9,
            snapshot: TaskSnapshot::Source(handle.clone()),
            sync: std::time::Duration::from_micros(5),
            async_time: std::time::Duration::from_millis(2),
        }));
        let wire = WireAck::from_control(control).unwrap().unwrap();
        let Some(Control::Ack(back)) = wire.into_control() else {
            panic!("not an ack")
        };
        assert_eq!(back.id, 9);
        assert!(matches!(back.snapshot, TaskSnapshot::Source(h) if h == handle));
        assert_eq!(back.async_time, std::time::Duration::from_millis(2));
    }
}
