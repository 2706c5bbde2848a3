//! The order a keyed operator applies its input in: batches tick by tick,
//! and a snapshot barrier at tick `c` after every tick before `c` and
//! before any tick from `c` on. Pure bookkeeping (the operator asks timely
//! about frontiers and passes the answers in), so it is tested here without
//! a dataflow.

use std::collections::BTreeMap;

use crate::execution::messages::Barrier;

/// What the keyed operator does next.
pub(crate) enum Step<P> {
    /// Apply these batches of one tick.
    Apply(Vec<P>),
    /// Snapshot: every batch before the barrier's tick is applied.
    Snapshot(Barrier),
}

/// Batches by tick (each with its capability `C`, so the operator's output
/// frontier, which paces the sources, counts them until applied) and the
/// barriers not taken yet.
pub(crate) struct TickOrder<C, P> {
    stash: BTreeMap<u64, (C, Vec<P>)>,
    /// `(tick, barrier)`, in the order the commands came (ticks ascending).
    barriers: Vec<(u64, Barrier)>,
}

impl<C, P> Default for TickOrder<C, P> {
    fn default() -> Self {
        Self {
            stash: BTreeMap::new(),
            barriers: Vec::new(),
        }
    }
}

impl<C, P> TickOrder<C, P> {
    /// Batches that came at `tick`; the first batch's `capability` is kept.
    pub(crate) fn push_batches(&mut self, tick: u64, capability: C, batches: impl Iterator<Item = P>) {
        self.stash
            .entry(tick)
            .or_insert_with(|| (capability, Vec::new()))
            .1
            .extend(batches);
    }

    /// A barrier for the cut before `tick`.
    pub(crate) fn push_barrier(&mut self, tick: u64, barrier: Barrier) {
        self.barriers.push((tick, barrier));
        self.barriers.sort_by_key(|(tick, barrier)| (*tick, barrier.id));
    }

    /// The next step, if one may be taken: `data_before(t)` says whether
    /// data at a tick before `t` may still arrive, `commands_up_to(t)`
    /// whether a command at a tick up to `t` may still arrive.
    pub(crate) fn next(
        &mut self,
        data_before: impl Fn(u64) -> bool,
        commands_up_to: impl Fn(u64) -> bool,
    ) -> Option<Step<P>> {
        let first_batch = self.stash.keys().next().copied();
        if let Some(&(tick, barrier)) = self.barriers.first() {
            if first_batch.is_none_or(|batch| tick <= batch) && !data_before(tick) {
                self.barriers.remove(0);
                return Some(Step::Snapshot(barrier));
            }
        }
        let batch = first_batch?;
        let barrier_first = self.barriers.first().is_some_and(|(tick, _)| *tick <= batch);
        if barrier_first || commands_up_to(batch) {
            return None;
        }
        self.stash.remove(&batch).map(|(_, batches)| Step::Apply(batches))
    }

    /// Nothing stashed and no barrier waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.stash.is_empty() && self.barriers.is_empty()
    }

    /// Drops everything (the operator failed).
    pub(crate) fn clear(&mut self) {
        self.stash.clear();
        self.barriers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamstate_api::SnapshotKind;

    fn barrier(id: u64) -> Barrier {
        Barrier {
            id,
            kind: SnapshotKind::Checkpoint,
        }
    }

    /// Drains every step allowed when frontiers are at `data` and
    /// `commands` (nothing earlier may arrive); the log names them.
    fn drain(order: &mut TickOrder<(), &'static str>, data: u64, commands: u64, log: &mut Vec<String>) {
        while let Some(step) = order.next(|t| t > data, |t| t >= commands) {
            log.push(match step {
                Step::Apply(batches) => batches.join("+"),
                Step::Snapshot(b) => format!("snapshot {}", b.id),
            });
        }
    }

    #[test]
    fn a_barrier_cuts_between_ticks() {
        let mut order = TickOrder::default();
        let mut log = Vec::new();
        order.push_batches(0, (), ["a0", "b0"].into_iter());
        order.push_batches(2, (), ["a2"].into_iter());
        order.push_batches(1, (), ["a1"].into_iter());
        order.push_barrier(2, barrier(7));
        // Commands known up to tick 0 only: tick 0 alone.
        drain(&mut order, 0, 1, &mut log);
        assert_eq!(log, ["a0+b0"]);
        // Data at tick 1 may still come: the barrier waits, tick 2 too.
        drain(&mut order, 1, 9, &mut log);
        assert_eq!(log, ["a0+b0", "a1"]);
        order.push_batches(1, (), ["b1"].into_iter());
        drain(&mut order, 2, 9, &mut log);
        assert_eq!(log, ["a0+b0", "a1", "b1", "snapshot 7", "a2"]);
        assert!(order.is_empty());
    }

    #[test]
    fn a_barrier_with_no_data_after_it_is_taken_once_inputs_end() {
        let mut order: TickOrder<(), &'static str> = TickOrder::default();
        let mut log = Vec::new();
        order.push_barrier(5, barrier(1));
        order.push_barrier(5, barrier(2));
        drain(&mut order, 3, 9, &mut log);
        assert!(log.is_empty());
        drain(&mut order, u64::MAX, u64::MAX, &mut log);
        assert_eq!(log, ["snapshot 1", "snapshot 2"]);
    }
}
