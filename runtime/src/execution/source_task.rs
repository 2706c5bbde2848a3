//! A source subtask's thread: reads lines, runs the stateless chain, keys
//! and routes records by key group in batches (folding a `sum` locally when
//! nobody reads its per-record output), and injects barriers, snapshotting
//! its read position as operator state; with a watermark strategy it
//! sends its watermark after the records it read before it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use streamstate_api::key_group::{key_group_for_hash, key_hash, subtask_for_key_group};
use streamstate_api::operator_state::OperatorStateStore;
use streamstate_api::{CheckpointStorage, Error, Result};

use super::messages::{Barrier, Control, Message, Partial, Record, TaskSnapshot};
use super::upload::{spawn_upload, TargetFactory, Uploads};
use crate::aggregate::ValueOf;
use crate::event_time::{WatermarkGenerator, WatermarkStrategy};
use crate::metrics::{JobMetrics, TaskMetrics};
use crate::mini_batch::KeyBytes;
use crate::mini_batch::{Accumulator, MiniBatch};
use crate::plan::{Chain, SOURCE_OPERATOR};
use crate::source::{LineSource, SourcePoll};

/// Lines a source task reads between two updates of the progress metric:
/// often enough for a display, rarely enough to keep the lock off the
/// per-line path.
const PROGRESS_EVERY_LINES: u32 = 1024;

/// Records a batch has room for beyond `batch_size`: the records of the
/// line that fills it.
const BATCH_SLACK_RECORDS: usize = 256;

/// Distinct keys a source task folds a `sum` over before it sends the
/// partial sums on (local-global aggregation, see
/// [`crate::plan::JobSettings::local_aggregation`]). The table's 16,384
/// slots of 48 bytes fit a 1 MiB L2 cache, so folding costs no cache miss
/// (what it saves: docs/BENCHMARKS.md).
pub const LOCAL_SUM_KEYS: usize = 8_192;

/// A source task's local `sum` table.
struct LocalSums<T, A> {
    value_of: ValueOf<T, A>,
    table: MiniBatch<A>,
    /// Records folded since the last partial sums were sent (counted into
    /// [`JobMetrics::records`] when they are).
    folded: u64,
}

pub(crate) struct SourceTask<K, T, A, Out = Vec<Sender<Message<T, A>>>> {
    pub(crate) subtask: u32,
    /// Id of the last barrier this source injected.
    pub(crate) last_barrier: Option<u64>,
    pub(crate) source: Box<dyn LineSource>,
    /// One destination per keyed subtask.
    pub(crate) outputs: Out,
    pub(crate) commands: Receiver<Barrier>,
    pub(crate) chain: Chain<T>,
    pub(crate) key_of: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub(crate) max_parallelism: u32,
    pub(crate) parallelism: u32,
    pub(crate) batch_size: usize,
    /// The value a `sum` adds up, when the job's keyed function is one and
    /// local aggregation is on.
    pub(crate) local_sum: Option<ValueOf<T, A>>,
    /// Event time: the records' timestamps and how watermarks are made.
    pub(crate) watermarks: Option<WatermarkStrategy<T>>,
    /// Keyed subtasks whose sink discards records; the source folds
    /// locally only once all of them do (their sums then emit nothing per
    /// record, so partial sums change no output).
    pub(crate) discarding_sinks: Arc<AtomicUsize>,
    pub(crate) control: Sender<Control>,
    pub(crate) uploads: Uploads,
    pub(crate) storage: CheckpointStorage,
    pub(crate) targets: TargetFactory,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) metrics: Arc<JobMetrics>,
    /// This subtask's own counters in `metrics`.
    pub(crate) task_metrics: Arc<TaskMetrics>,
}

/// Where a source task's messages go: one destination per keyed subtask.
/// The local executor's are crossbeam channels; another executor buffers
/// them for its own transport.
pub(crate) trait Outputs<T, A> {
    /// Number of destinations (keyed subtasks).
    fn count(&self) -> usize;
    /// Sends `message` to keyed subtask `to`.
    fn send(&mut self, to: usize, message: Message<T, A>) -> Result<()>;
}

impl<T, A> Outputs<T, A> for Vec<Sender<Message<T, A>>> {
    fn count(&self) -> usize {
        self.len()
    }

    fn send(&mut self, to: usize, message: Message<T, A>) -> Result<()> {
        self[to]
            .send(message)
            .map_err(|_| Error::invalid_argument("a keyed task stopped; the source stops too"))
    }
}

/// A source task's working buffers between polls.
pub(crate) struct SourceLoop<T, A> {
    batches: Vec<Vec<Record<T>>>,
    line: String,
    key_bytes: Vec<u8>,
    lines_since_progress: u32,
    local: Option<LocalSums<T, A>>,
    watermarks: Option<WatermarkGenerator<T>>,
}

impl<K: Serialize + Send + 'static, T: Send + 'static, A: Accumulator, Out: Outputs<T, A>> SourceTask<K, T, A, Out> {
    fn send(&mut self, to: usize, message: Message<T, A>) -> Result<()> {
        self.outputs.send(to, message)
    }

    /// An empty batch with room for `batch_size` records and the words of
    /// the line that fills it: batches are sent after whole lines, so
    /// without the slack nearly every batch would be copied into a
    /// doubled allocation (docs/BENCHMARKS.md).
    fn new_batch(&self) -> Vec<Record<T>> {
        Vec::with_capacity(self.batch_size + BATCH_SLACK_RECORDS)
    }

    fn flush(&mut self, batches: &mut [Vec<Record<T>>], only_full: bool) -> Result<()> {
        for (to, batch) in batches.iter_mut().enumerate() {
            if !batch.is_empty() && (!only_full || batch.len() >= self.batch_size) {
                let full = std::mem::replace(batch, self.new_batch());
                self.task_metrics
                    .records_out
                    .fetch_add(full.len() as u64, Ordering::Relaxed);
                self.send(to, Message::Batch(full))?;
            }
        }
        Ok(())
    }

    /// Sends the local `sum` table's partial sums on, to the keyed
    /// subtask of each key's group, and empties it.
    fn flush_local(&mut self, local: Option<&mut LocalSums<T, A>>) -> Result<()> {
        let Some(local) = local.filter(|local| !local.table.is_empty()) else {
            return Ok(());
        };
        let (max_parallelism, parallelism) = (self.max_parallelism, self.parallelism);
        let outputs = self.outputs.count();
        let mut partials: Vec<Vec<Partial<A>>> = (0..outputs)
            .map(|_| Vec::with_capacity(local.table.len() / outputs + 64))
            .collect();
        local.table.drain(|hash, key_bytes, acc| {
            let key_group = key_group_for_hash(hash, max_parallelism);
            let to = subtask_for_key_group(max_parallelism, parallelism, key_group) as usize;
            partials[to].push(Partial {
                key_bytes,
                key_hash: hash,
                acc,
            });
        });
        let sent: usize = partials.iter().map(Vec::len).sum();
        self.metrics.partial_sums.fetch_add(sent as u64, Ordering::Relaxed);
        self.task_metrics.records_out.fetch_add(sent as u64, Ordering::Relaxed);
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
        local: Option<&mut LocalSums<T, A>>,
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
        for to in 0..self.outputs.count() {
            self.send(to, Message::Barrier(barrier))?;
        }
        self.last_barrier = Some(barrier.id);
        Ok(())
    }

    /// Sends the watermark when it is due: every record read before it
    /// first, so that no record overtakes a watermark it is older than.
    fn send_due_watermark(
        &mut self,
        batches: &mut [Vec<Record<T>>],
        local: Option<&mut LocalSums<T, A>>,
        watermarks: Option<&mut WatermarkGenerator<T>>,
    ) -> Result<()> {
        let Some(generator) = watermarks.filter(|g| g.due()) else {
            return Ok(());
        };
        self.flush(batches, false)?;
        self.flush_local(local)?;
        let watermark = generator.emit();
        for to in 0..self.outputs.count() {
            self.send(to, Message::Watermark(watermark))?;
        }
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

    pub(crate) fn run(mut self) -> Result<()> {
        let result = self.run_until_end();
        match result {
            // Keyed tasks stop first on cancel; the source's failed send is
            // the cancel, not an error.
            Err(_) if self.cancel.load(Ordering::SeqCst) => Ok(()),
            other => other,
        }
    }

    fn run_until_end(&mut self) -> Result<()> {
        let mut st = self.start();
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            while let Ok(barrier) = self.commands.try_recv() {
                self.checkpoint(barrier, &mut st.batches, st.local.as_mut())?;
            }
            if self.poll_once(&mut st)? == SourcePoll::End {
                return self.end(&mut st);
            }
        }
    }

    /// The buffers of a source task about to read.
    pub(crate) fn start(&self) -> SourceLoop<T, A> {
        SourceLoop {
            batches: (0..self.outputs.count()).map(|_| self.new_batch()).collect(),
            line: String::new(),
            key_bytes: Vec::new(),
            lines_since_progress: 0,
            local: self.local_sum.clone().map(|value_of| LocalSums {
                value_of,
                table: MiniBatch::new(LOCAL_SUM_KEYS),
                folded: 0,
            }),
            watermarks: self.watermarks.as_ref().map(WatermarkStrategy::generator),
        }
    }

    /// Reads one line (if there is one) and routes its records; returns
    /// what the source's poll returned. At `End` nothing is flushed yet:
    /// [`Self::end`] does that.
    pub(crate) fn poll_once(&mut self, st: &mut SourceLoop<T, A>) -> Result<SourcePoll> {
        let SourceLoop {
            batches,
            line,
            key_bytes,
            lines_since_progress,
            local,
            watermarks,
        } = st;
        let poll = self.source.poll_line(line)?;
        match poll {
            SourcePoll::Line { more_buffered } => {
                let (key_of, max_p, p) = (&self.key_of, self.max_parallelism, self.parallelism);
                let all_sinks_discard = self.discarding_sinks.load(Ordering::Acquire) == p as usize;
                let mut folding = local.as_mut().filter(|_| all_sinks_discard);
                let mut failure = None;
                let mut generator = watermarks.as_mut();
                (self.chain)(std::mem::take(line), &mut |value| {
                    if let Some(generator) = generator.as_mut() {
                        generator.on_record(&value);
                    }
                    let key = key_of(&value);
                    key_bytes.clear();
                    if let Err(e) = streamstate_api::codec::encode_value_into(&key, key_bytes) {
                        failure.get_or_insert(e);
                        return;
                    }
                    // Empty keys take the record path: the keyed task
                    // reports them.
                    if let Some(local) = folding.as_mut().filter(|_| !key_bytes.is_empty()) {
                        local.table.add(key_bytes, (local.value_of)(&value));
                        local.folded += 1;
                        return;
                    }
                    let hash = key_hash(key_bytes);
                    let group = key_group_for_hash(hash, max_p);
                    let to = subtask_for_key_group(max_p, p, group) as usize;
                    batches[to].push(Record {
                        key_bytes: KeyBytes::from_slice(key_bytes),
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
                self.flush(batches, more_buffered)?;
                self.send_due_watermark(batches, local.as_mut(), watermarks.as_mut())?;
                *lines_since_progress += 1;
                if *lines_since_progress == PROGRESS_EVERY_LINES {
                    *lines_since_progress = 0;
                    self.publish_progress();
                }
            }
            SourcePoll::Idle => {
                self.flush(batches, false)?;
                self.send_due_watermark(batches, local.as_mut(), watermarks.as_mut())?;
                if watermarks.as_mut().is_some_and(WatermarkGenerator::became_idle) {
                    self.flush_local(local.as_mut())?;
                    for to in 0..self.outputs.count() {
                        self.send(to, Message::Idle)?;
                    }
                }
            }
            SourcePoll::End => {}
        }
        Ok(poll)
    }

    /// A barrier from an executor that delivers them itself: everything
    /// read so far goes out first, then the position is snapshot.
    pub(crate) fn barrier(&mut self, st: &mut SourceLoop<T, A>, barrier: Barrier) -> Result<()> {
        self.checkpoint(barrier, &mut st.batches, st.local.as_mut())
    }

    /// Sends every buffered batch and partial sum on.
    pub(crate) fn flush_all(&mut self, st: &mut SourceLoop<T, A>) -> Result<()> {
        self.flush(&mut st.batches, false)?;
        self.flush_local(st.local.as_mut())
    }

    /// The end of the input: pending barriers, the last batches, and the
    /// end message to every keyed subtask.
    pub(crate) fn end(&mut self, st: &mut SourceLoop<T, A>) -> Result<()> {
        // A barrier that came with the last lines still goes out: its
        // checkpoint can complete (Flink completes checkpoints after tasks
        // finish, too).
        while let Ok(barrier) = self.commands.try_recv() {
            self.checkpoint(barrier, &mut st.batches, st.local.as_mut())?;
        }
        self.flush_all(st)?;
        self.publish_progress();
        // Tell the coordinator before the keyed tasks see the end: it
        // stops triggering, and gives up a pending snapshot this source did
        // not inject.
        let _ = self.control.send(Control::SourceFinished {
            last_barrier: self.last_barrier,
        });
        for to in 0..self.outputs.count() {
            self.send(to, Message::End)?;
        }
        Ok(())
    }
}
