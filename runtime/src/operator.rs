//! What a keyed task runs: the runtime's keyed operator contract
//! ([`KeyedOperator`]). A user's [`KeyedProcessFunction`] runs behind the
//! [`FunctionOperator`] adapter, record by record; the runtime's
//! pre-aggregation ([`crate::aggregate::PreAggregate`]) also folds records
//! and partial accumulators per key before they reach state. Users never
//! implement this trait: key hashes, buffers and partials stay here.

use serde::de::DeserializeOwned;
use streamstate_api::timers::{TimeDomain, TimerService};
use streamstate_api::{Error, KeyedStateBackend, Result};

use crate::event_time::{TimestampOf, MIN_WATERMARK};
use crate::function::{Context, KeyedProcessFunction};
use crate::mini_batch::Accumulator;

/// The keyed operator of a job, as its keyed task drives it. `A` is the
/// accumulator of partials a source may fold ahead of the shuffle (`()`
/// for operators that take none).
pub(crate) trait KeyedOperator<K, T, O, A: Accumulator>: Send {
    /// Registers states; `records_wanted` says whether anyone reads the
    /// records `process` emits (`false` behind a discarding sink: an
    /// operator may then fold records before writing state).
    fn open(&mut self, backend: &mut dyn KeyedStateBackend, records_wanted: bool) -> Result<()>;

    /// Offers a record before `process`: `Ok(None)` when the operator kept
    /// it (folded into its buffer), `Ok(Some(value))` hands it back.
    /// `key_hash` is the key's [`streamstate_api::key_group::key_hash`],
    /// computed once by the source that routed the record.
    fn buffer(
        &mut self,
        key_hash: u64,
        key_bytes: &[u8],
        value: T,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<Option<T>>;

    /// Loads the buffer slot of `key_hash` ahead of a group of records, so
    /// their cache misses overlap; returns a word of it (to keep the load).
    fn touch_buffer(&self, key_hash: u64) -> u64;

    /// Adds a partial accumulator folded on a source thread.
    fn buffer_partial(
        &mut self,
        key_hash: u64,
        key_bytes: &[u8],
        partial: A,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<()>;

    /// Writes the buffer to state: before every snapshot and before `finish`.
    fn flush_buffer(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()>;

    /// Handles one record with its key current.
    fn process(&mut self, key: &K, value: T, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut(O))
        -> Result<()>;

    /// The end of a bounded input.
    fn finish(&mut self, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut(O)) -> Result<()>;

    /// The subtask's watermark advanced to `watermark`: fire the event-time
    /// timers it passed. The default has no timers. An operator with both a
    /// buffer and timers writes what its timers read out first (a function
    /// that pre-aggregates windows: [`KeyedProcessFunction::flush`]).
    fn on_watermark(
        &mut self,
        watermark: i64,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(O),
    ) -> Result<()> {
        let _ = (watermark, backend, out);
        Ok(())
    }

    /// Processing time reached `now`: fire the processing-time timers due.
    fn on_processing_time(
        &mut self,
        now: i64,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(O),
    ) -> Result<()> {
        let _ = (now, backend, out);
        Ok(())
    }

    /// When the next processing-time timer is due, if any.
    fn next_processing_time(&self) -> Option<i64> {
        None
    }

    /// Records dropped as late since the last call.
    fn take_late_records(&mut self) -> u64 {
        0
    }
}

/// A user's [`KeyedProcessFunction`] as a keyed operator: every record goes
/// to `process`, every due timer to `on_timer` (after the function's
/// `flush`); no partial is accepted.
pub(crate) struct FunctionOperator<K, T, O> {
    function: Box<dyn KeyedProcessFunction<K, T, O>>,
    /// Opened with the backend in `open`.
    timers: Option<TimerService>,
    /// The record's event time, when the stream has a watermark strategy.
    timestamp_of: Option<TimestampOf<T>>,
    watermark: i64,
    /// Records the function counted as late since the keyed task last
    /// took them.
    late_records: u64,
}

impl<K, T, O> FunctionOperator<K, T, O> {
    pub(crate) fn new(function: Box<dyn KeyedProcessFunction<K, T, O>>, timestamp_of: Option<TimestampOf<T>>) -> Self {
        Self {
            function,
            timers: None,
            timestamp_of,
            watermark: MIN_WATERMARK,
            late_records: 0,
        }
    }
}

impl<K: DeserializeOwned, T, O> FunctionOperator<K, T, O> {
    /// The parts a [`Context`] borrows, apart: the function, the timers,
    /// the late-record count, and the watermark.
    #[allow(clippy::type_complexity)]
    fn parts(&mut self) -> Result<(&mut dyn KeyedProcessFunction<K, T, O>, &mut TimerService, &mut u64, i64)> {
        let timers = self
            .timers
            .as_mut()
            .ok_or_else(|| Error::invalid_argument("the keyed operator was not opened"))?;
        Ok((self.function.as_mut(), timers, &mut self.late_records, self.watermark))
    }

    /// Has the function write what it keeps in memory into state and
    /// timers ([`KeyedProcessFunction::flush`]).
    fn flush_function(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        let (function, timers, late_records, watermark) = self.parts()?;
        let mut ctx = Context::new(backend, timers, None, watermark, late_records);
        function.flush(&mut ctx)
    }

    /// Fires every timer of `domain` due at `up_to`, each with its key
    /// current.
    fn fire(
        &mut self,
        domain: TimeDomain,
        up_to: i64,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(O),
    ) -> Result<()> {
        let (function, timers, late_records, watermark) = self.parts()?;
        while let Some(timer) = timers.poll(backend, domain, up_to)? {
            let key: K = streamstate_api::codec::decode_value(&timer.key)?;
            let mut ctx = Context::new(backend, timers, Some(timer.timestamp), watermark, late_records)
                .firing(domain, &timer.namespace);
            function.on_timer(timer.timestamp, &key, &mut ctx, out)?;
        }
        Ok(())
    }
}

impl<K: DeserializeOwned + Send, T: Send, O: Send> KeyedOperator<K, T, O, ()> for FunctionOperator<K, T, O> {
    fn open(&mut self, backend: &mut dyn KeyedStateBackend, _records_wanted: bool) -> Result<()> {
        self.timers = Some(TimerService::open(backend)?);
        self.function.open(backend)
    }

    fn buffer(&mut self, _: u64, _: &[u8], value: T, _: &mut dyn KeyedStateBackend) -> Result<Option<T>> {
        Ok(Some(value))
    }

    fn touch_buffer(&self, _key_hash: u64) -> u64 {
        0
    }

    fn buffer_partial(&mut self, _: u64, _: &[u8], _: (), _: &mut dyn KeyedStateBackend) -> Result<()> {
        Err(Error::unsupported(
            "a keyed process function takes no partial accumulators (pre-aggregation is for `sum`/`aggregate`)",
        ))
    }

    fn flush_buffer(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        self.flush_function(backend)
    }

    fn process(
        &mut self,
        key: &K,
        value: T,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(O),
    ) -> Result<()> {
        let timestamp = self.timestamp_of.as_ref().map(|of| of(&value));
        let (function, timers, late_records, watermark) = self.parts()?;
        let mut ctx = Context::new(backend, timers, timestamp, watermark, late_records);
        function.process(key, value, &mut ctx, out)
    }

    fn finish(&mut self, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut(O)) -> Result<()> {
        // A bounded input's end: processing-time timers left fire too, so
        // the last processing-time window of a file is not lost.
        self.flush_function(backend)?;
        self.fire(TimeDomain::ProcessingTime, i64::MAX, backend, out)?;
        self.function.finish(backend, out)
    }

    fn on_watermark(
        &mut self,
        watermark: i64,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(O),
    ) -> Result<()> {
        self.watermark = watermark;
        self.flush_function(backend)?;
        self.fire(TimeDomain::EventTime, watermark, backend, out)
    }

    fn on_processing_time(
        &mut self,
        now: i64,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(O),
    ) -> Result<()> {
        self.flush_function(backend)?;
        self.fire(TimeDomain::ProcessingTime, now, backend, out)
    }

    fn next_processing_time(&self) -> Option<i64> {
        self.timers
            .as_ref()
            .and_then(|timers| timers.next_timestamp(TimeDomain::ProcessingTime))
    }

    fn take_late_records(&mut self) -> u64 {
        std::mem::take(&mut self.late_records)
    }
}
