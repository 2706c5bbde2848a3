//! What crosses timely's exchange between workers: a batch of records or
//! of partial accumulators, tagged with the keyed subtask it goes to
//! (timely routes by that tag: worker `w` is keyed subtask `w`).

use serde::{Deserialize, Serialize};
use streamstate_api::Result;

use crate::execution::messages::{Message, Partial, Record};
use crate::execution::source_task::Outputs;

/// A batch for one keyed subtask.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) enum Payload<T, A> {
    Records(Vec<Record<T>>),
    Partials(Vec<Partial<A>>),
}

/// `(keyed subtask, batch)`: the exchange's item.
pub(crate) type Packet<T, A> = (u32, Payload<T, A>);

/// A source task's outputs on the cluster: batches wait here until the
/// worker loop hands them to timely at the current tick. Barriers and the
/// end of input are not messages here: ticks and the input's closing are.
pub(crate) struct Buffered<T, A> {
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
            Message::Barrier(_) | Message::End => {}
        }
        Ok(())
    }
}
