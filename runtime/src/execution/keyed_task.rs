//! A keyed subtask's thread: receives batches from every source, aligns
//! barriers (exactly-once) or not (at-least-once), runs the keyed function
//! with each record's key current, snapshots on the barrier (only the
//! synchronous phase here), advances its watermark (the minimum over its
//! inputs) and fires the timers it passes, fires processing-time timers as
//! the clock reaches them and, at the end of a bounded input, emits the
//! function's final results.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};
use serde::de::DeserializeOwned;
use streamstate_api::{CheckpointStorage, KeyedStateBackend, Result};

use super::messages::{Barrier, Control, Message, Partial, Record, TaskSnapshot, WithKeyHash};
use super::upload::{spawn_upload, TargetFactory, Uploads};
use crate::config::CheckpointingMode;
use crate::event_time::{InputWatermarks, MAX_WATERMARK};
use crate::metrics::{JobMetrics, TaskMetrics};
use crate::mini_batch::Accumulator;
use crate::mini_batch::TOUCH_GROUP;
use crate::operator::KeyedOperator;
use crate::plan::{OperatorFactory, SinkFactory, KEYED_OPERATOR};

/// Hands `items` to `handle` a group of [`TOUCH_GROUP`] at a time, each
/// group's mini-batch slots loaded together first (see
/// [`KeyedOperator::touch_buffer`]).
fn in_touched_groups<K, T, O, A: Accumulator, I: WithKeyHash>(
    function: &mut dyn KeyedOperator<K, T, O, A>,
    items: Vec<I>,
    mut handle: impl FnMut(&mut dyn KeyedOperator<K, T, O, A>, I) -> Result<()>,
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

pub(crate) struct KeyedTask<K, T, O, A> {
    pub(crate) subtask: u32,
    pub(crate) parallelism: u32,
    pub(crate) inputs: Vec<Receiver<Message<T, A>>>,
    pub(crate) backend: Box<dyn KeyedStateBackend>,
    pub(crate) factory: OperatorFactory<K, T, O, A>,
    pub(crate) sink: SinkFactory<O>,
    pub(crate) final_sink: Option<SinkFactory<O>>,
    /// Counts keyed subtasks whose sink discards records (see
    /// `SourceTask::discarding_sinks`).
    pub(crate) discarding_sinks: Arc<AtomicUsize>,
    pub(crate) mode: CheckpointingMode,
    pub(crate) control: Sender<Control>,
    pub(crate) uploads: Uploads,
    pub(crate) storage: CheckpointStorage,
    pub(crate) targets: TargetFactory,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) metrics: Arc<JobMetrics>,
    /// This subtask's own counters in `metrics`.
    pub(crate) task_metrics: Arc<TaskMetrics>,
    /// The checkpoint the job restored, for the sink ([`crate::sink::Sink::open`]).
    pub(crate) restored_checkpoint: Option<u64>,
}

impl<K: DeserializeOwned + Send + 'static, T: Send + 'static, O: Send + 'static, A: Accumulator> KeyedTask<K, T, O, A> {
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

    /// Opens the keyed operator and the sink: the first step of every
    /// executor's keyed subtask. `sources` is the number of source subtasks
    /// whose watermarks this subtask's is the minimum of.
    pub(crate) fn open(&mut self, sources: usize) -> Result<Opened<K, T, O, A>> {
        let mut function = (self.factory)();
        let mut sink = (self.sink)(self.subtask, self.parallelism)?;
        sink.open(self.restored_checkpoint)?;
        function.open(self.backend.as_mut(), !sink.discards_records())?;
        if sink.discards_records() {
            self.discarding_sinks.fetch_add(1, Ordering::Release);
        }
        Ok(Opened {
            function,
            sink,
            produced: Vec::new(),
            watermarks: InputWatermarks::new(sources),
            committed: self.restored_checkpoint.unwrap_or(0),
        })
    }

    /// Tells the sink when a newer checkpoint has completed.
    pub(crate) fn commit_completed(&self, opened: &mut Opened<K, T, O, A>) -> Result<()> {
        let completed = self.metrics.last_checkpoint_id.load(Ordering::Acquire);
        if completed > opened.committed {
            opened.sink.commit(completed)?;
            opened.committed = completed;
        }
        Ok(())
    }

    /// Writes what a timer callback emitted to the sink, counted.
    fn emit_produced(&self, opened: &mut Opened<K, T, O, A>) -> Result<()> {
        let emitted = opened.produced.len() as u64;
        if emitted == 0 {
            return Ok(());
        }
        let Opened { sink, produced, .. } = opened;
        produced.drain(..).try_for_each(|o| sink.write(&o))?;
        sink.flush()?;
        self.metrics.records_out.fetch_add(emitted, Ordering::Relaxed);
        self.task_metrics.records_out.fetch_add(emitted, Ordering::Relaxed);
        Ok(())
    }

    /// Source `input`'s watermark reached `watermark`; when that moves this
    /// subtask's watermark, the event-time timers it passed fire.
    pub(crate) fn advance_watermark(
        &mut self,
        opened: &mut Opened<K, T, O, A>,
        input: usize,
        watermark: i64,
    ) -> Result<()> {
        match opened.watermarks.advance(input, watermark) {
            Some(watermark) => self.fire_event_time(opened, watermark),
            None => Ok(()),
        }
    }

    /// Source `input` is idle: this subtask's watermark leaves it out.
    pub(crate) fn mark_idle(&mut self, opened: &mut Opened<K, T, O, A>, input: usize) -> Result<()> {
        match opened.watermarks.mark_idle(input) {
            Some(watermark) => self.fire_event_time(opened, watermark),
            None => Ok(()),
        }
    }

    fn fire_event_time(&mut self, opened: &mut Opened<K, T, O, A>, watermark: i64) -> Result<()> {
        self.task_metrics.watermark.store(watermark, Ordering::Relaxed);
        let Opened { function, produced, .. } = opened;
        function.on_watermark(watermark, self.backend.as_mut(), &mut |o| produced.push(o))?;
        self.emit_produced(opened)
    }

    /// Fires the processing-time timers the clock has reached; returns how
    /// long until the next one (at most `idle`), for a loop's wait.
    pub(crate) fn fire_processing_time(&mut self, opened: &mut Opened<K, T, O, A>, idle: Duration) -> Result<Duration> {
        let Some(next) = opened.function.next_processing_time() else {
            return Ok(idle);
        };
        let now = i64::try_from(self.backend.clock().now_ms()).unwrap_or(i64::MAX);
        if next > now {
            return Ok(idle.min(Duration::from_millis(u64::try_from(next - now).unwrap_or(0))));
        }
        let Opened { function, produced, .. } = opened;
        function.on_processing_time(now, self.backend.as_mut(), &mut |o| produced.push(o))?;
        self.emit_produced(opened)?;
        Ok(Duration::ZERO)
    }

    /// Applies a batch of records with each record's key current.
    pub(crate) fn apply_records(&mut self, opened: &mut Opened<K, T, O, A>, records: Vec<Record<T>>) -> Result<()> {
        let count = records.len() as u64;
        let Opened {
            function,
            sink,
            produced,
            ..
        } = opened;
        let backend = &mut self.backend;
        let mut emitted = 0u64;
        in_touched_groups(function.as_mut(), records, |function, record| {
            let Some(value) = function.buffer(record.key_hash, &record.key_bytes, record.value, backend.as_mut())?
            else {
                return Ok(());
            };
            backend.set_current_key(&record.key_bytes)?;
            let key: K = streamstate_api::codec::decode_value(&record.key_bytes)?;
            function.process(&key, value, backend.as_mut(), &mut |o| produced.push(o))?;
            emitted += produced.len() as u64;
            produced.drain(..).try_for_each(|o| sink.write(&o))
        })?;
        sink.flush()?;
        let late = function.take_late_records();
        if late > 0 {
            self.metrics.late_records.fetch_add(late, Ordering::Relaxed);
        }
        self.metrics.records.fetch_add(count, Ordering::Relaxed);
        self.metrics.records_out.fetch_add(emitted, Ordering::Relaxed);
        self.task_metrics.records_in.fetch_add(count, Ordering::Relaxed);
        self.task_metrics.records_out.fetch_add(emitted, Ordering::Relaxed);
        Ok(())
    }

    /// Folds partial accumulators (counted into the records metric by the
    /// source that folded them).
    pub(crate) fn apply_partials(&mut self, opened: &mut Opened<K, T, O, A>, partials: Vec<Partial<A>>) -> Result<()> {
        self.task_metrics
            .records_in
            .fetch_add(partials.len() as u64, Ordering::Relaxed);
        let backend = &mut self.backend;
        in_touched_groups(opened.function.as_mut(), partials, |function, partial| {
            function.buffer_partial(partial.key_hash, &partial.key_bytes, partial.acc, backend.as_mut())
        })
    }

    /// Everything before the barrier into state, then the snapshot's
    /// synchronous phase.
    pub(crate) fn checkpoint(&mut self, opened: &mut Opened<K, T, O, A>, barrier: Barrier) -> Result<()> {
        opened.sink.pre_commit(barrier.id)?;
        opened.function.flush_buffer(self.backend.as_mut())?;
        self.snapshot(barrier);
        if let Some(entries) = self.backend.approximate_entries() {
            self.task_metrics.state_entries.store(entries, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The end of a bounded input: the operator's final results, to the
    /// final sink when the job has one, else returned.
    pub(crate) fn finish(&mut self, mut opened: Opened<K, T, O, A>) -> Result<Vec<O>> {
        // Every input ended: event time is over (Flink's MAX_WATERMARK),
        // so every event-time timer left fires before the final results.
        if opened.watermarks.current() < MAX_WATERMARK {
            self.fire_event_time(&mut opened, MAX_WATERMARK)?;
        }
        opened.sink.flush()?;
        let function = &mut opened.function;
        function.flush_buffer(self.backend.as_mut())?;
        let mut finals = Vec::new();
        match &self.final_sink {
            Some(factory) => {
                let mut final_sink = factory(self.subtask, self.parallelism)?;
                let mut write_error = None;
                let (records_out, task_out) = (&self.metrics.records_out, &self.task_metrics.records_out);
                function.finish(self.backend.as_mut(), &mut |o| {
                    records_out.fetch_add(1, Ordering::Relaxed);
                    task_out.fetch_add(1, Ordering::Relaxed);
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
        self.metrics
            .records_out
            .fetch_add(finals.len() as u64, Ordering::Relaxed);
        Ok(finals)
    }

    /// The local executor's thread: aligns barriers over crossbeam inputs.
    pub(crate) fn run(mut self) -> Result<Vec<O>> {
        let n = self.inputs.len();
        let mut opened = self.open(n)?;
        let (mut ended, mut seen) = (vec![false; n], vec![false; n]);
        let mut aligning: Option<Barrier> = None;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                opened.sink.flush()?;
                return Ok(Vec::new());
            }
            let blocking = self.mode == CheckpointingMode::ExactlyOnce;
            // Inputs that delivered the pending barrier wait (exactly-once).
            let waiting = |i: usize| blocking && seen[i];
            let open: Vec<usize> = (0..n).filter(|&i| !ended[i] && !waiting(i)).collect();
            if open.is_empty() && ended.iter().all(|e| *e) {
                break;
            }
            self.commit_completed(&mut opened)?;
            let wait = self.fire_processing_time(&mut opened, Duration::from_millis(100))?;
            let mut select = Select::new();
            for &i in &open {
                select.recv(&self.inputs[i]);
            }
            let Ok(operation) = select.select_timeout(wait) else {
                continue;
            };
            let i = open[operation.index()];
            match operation.recv(&self.inputs[i]) {
                Err(_) | Ok(Message::End) => {
                    ended[i] = true;
                    self.advance_watermark(&mut opened, i, MAX_WATERMARK)?;
                }
                Ok(Message::Batch(records)) => self.apply_records(&mut opened, records)?,
                Ok(Message::Partials(partials)) => self.apply_partials(&mut opened, partials)?,
                Ok(Message::Watermark(watermark)) => self.advance_watermark(&mut opened, i, watermark)?,
                Ok(Message::Idle) => self.mark_idle(&mut opened, i)?,
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
            }
            if let Some(barrier) = aligning {
                if (0..n).all(|j| seen[j] || ended[j]) {
                    self.checkpoint(&mut opened, barrier)?;
                    aligning = None;
                    seen.iter_mut().for_each(|s| *s = false);
                }
            }
        }
        self.finish(opened)
    }
}

/// A keyed subtask's operator and sink, open.
pub(crate) struct Opened<K, T, O, A> {
    function: Box<dyn KeyedOperator<K, T, O, A>>,
    sink: Box<dyn crate::sink::Sink<O>>,
    /// Output of one `process` or timer call, reused.
    produced: Vec<O>,
    /// The subtask's watermark, from its sources'.
    watermarks: InputWatermarks,
    /// The newest checkpoint the sink was told of.
    committed: u64,
}
