//! Keyed process functions: user logic with keyed state and timers, run per
//! record with the record's key as the backend's current key. A user
//! implements `open`, `process`, optionally `on_timer` and `finish`; how
//! records reach them (batches, key hashes, pre-aggregation) is the
//! runtime's business ([`crate::aggregate`] is the runtime's own keyed
//! operator for `sum`).

use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::timers::{TimeDomain, TimerService};
use streamstate_api::{KeyedStateBackend, Result};

/// Flink's `KeyedProcessFunction`: `open` registers state, `process` is
/// called for each record with its key current, `on_timer` when a timer
/// the function set fires (with the timer's key current), `finish` once at
/// the end of a bounded input.
///
/// ```
/// use streamstate_api::{KeyedStateBackendExt, Result, ValueState, ValueStateDescriptor};
/// use streamstate_runtime::function::{Context, KeyedProcessFunction};
///
/// /// Emits a key the first time it is seen, and again one minute of
/// /// event time later.
/// #[derive(Default)]
/// struct FirstSeen(Option<ValueState<bool>>);
///
/// impl KeyedProcessFunction<String, (String, i64), String> for FirstSeen {
///     fn open(&mut self, backend: &mut dyn streamstate_api::KeyedStateBackend) -> Result<()> {
///         self.0 = Some(backend.value_state(&ValueStateDescriptor::<bool>::new("seen"))?);
///         Ok(())
///     }
///
///     fn process(&mut self, key: &String, (_, at): (String, i64), ctx: &mut Context<'_>,
///                out: &mut dyn FnMut(String)) -> Result<()> {
///         let seen = self.0.expect("opened");
///         if seen.value(ctx.backend())?.is_none() {
///             seen.update(ctx.backend(), &true)?;
///             ctx.register_event_time_timer(at + 60_000)?;
///             out(key.clone());
///         }
///         Ok(())
///     }
///
///     fn on_timer(&mut self, _at: i64, key: &String, _ctx: &mut Context<'_>,
///                 out: &mut dyn FnMut(String)) -> Result<()> {
///         out(format!("{key} a minute later"));
///         Ok(())
///     }
/// }
/// ```
pub trait KeyedProcessFunction<K, T, O>: Send {
    /// Registers states (called once per subtask, after any restore).
    ///
    /// # Errors
    /// State registration errors.
    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()>;

    /// Handles one record; `ctx` gives the backend (the record's key
    /// current), the record's timestamp and the timers; `out` emits results
    /// downstream.
    ///
    /// # Errors
    /// State errors; they fail the job.
    fn process(&mut self, key: &K, value: T, ctx: &mut Context<'_>, out: &mut dyn FnMut(O)) -> Result<()>;

    /// A timer set for `key` fired at `timestamp`: an event-time timer once
    /// the watermark reached it, a processing-time timer once the clock did
    /// ([`Context::time_domain`] says which, [`Context::timer_namespace`] in
    /// which namespace). The timer is gone when this is called; state reads
    /// see `key`'s state. Timers are in every checkpoint, so after a
    /// failure a timer fires again only if it had not fired before the
    /// checkpoint restored.
    ///
    /// # Errors
    /// State errors; they fail the job.
    fn on_timer(&mut self, timestamp: i64, key: &K, ctx: &mut Context<'_>, out: &mut dyn FnMut(O)) -> Result<()> {
        let _ = (timestamp, key, ctx, out);
        Ok(())
    }

    /// Writes into state and timers whatever the function keeps in memory
    /// between records (a pre-aggregation): called before timers fire,
    /// before each snapshot and at the end of the input, so that timers,
    /// checkpoints and final results see every record. The current key
    /// may be any key during the call. The default keeps nothing.
    ///
    /// # Errors
    /// State errors; they fail the job.
    fn flush(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Called when a bounded input is exhausted, after every timer due by
    /// then fired; `out` collects the job's final results (returned by
    /// [`crate::JobHandle::wait`]).
    ///
    /// # Errors
    /// State errors.
    fn finish(&mut self, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut(O)) -> Result<()> {
        let _ = (backend, out);
        Ok(())
    }
}

/// What a [`KeyedProcessFunction`] call may use besides its record: the
/// keyed state backend, the record's timestamp, event and processing time,
/// and the timers of the current key (Flink's `Context` and
/// `TimerService` in one).
pub struct Context<'a> {
    backend: &'a mut dyn KeyedStateBackend,
    timers: &'a mut TimerService,
    timestamp: Option<i64>,
    watermark: i64,
    firing: Option<(TimeDomain, &'a [u8])>,
    late_records: &'a mut u64,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("timestamp", &self.timestamp)
            .field("watermark", &self.watermark)
            .finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        backend: &'a mut dyn KeyedStateBackend,
        timers: &'a mut TimerService,
        timestamp: Option<i64>,
        watermark: i64,
        late_records: &'a mut u64,
    ) -> Self {
        Self {
            backend,
            timers,
            timestamp,
            watermark,
            firing: None,
            late_records,
        }
    }

    /// Counts a record dropped because it came too late, into the job's
    /// `late_records` metric (Flink's `numLateRecordsDropped`).
    pub fn count_late_record(&mut self) {
        *self.late_records += 1;
    }

    pub(crate) fn firing(mut self, domain: TimeDomain, namespace: &'a [u8]) -> Self {
        self.firing = Some((domain, namespace));
        self
    }

    /// The keyed state backend, its current key the record's (or the
    /// firing timer's).
    pub fn backend(&mut self) -> &mut dyn KeyedStateBackend {
        self.backend
    }

    /// The record's event time; `None` without a watermark strategy. In
    /// `on_timer`, the timer's timestamp.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The subtask's current watermark (`i64::MIN` before any).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// Processing time in epoch milliseconds, from the backend's clock (a
    /// test's `ManualClock` when it injected one).
    pub fn current_processing_time(&self) -> i64 {
        i64::try_from(self.backend.clock().now_ms()).unwrap_or(i64::MAX)
    }

    /// In `on_timer`: which clock the firing timer followed.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.firing.map(|(domain, _)| domain)
    }

    /// In `on_timer`: the firing timer's namespace (`None` for a timer set
    /// without one, and outside `on_timer`).
    ///
    /// # Errors
    /// [`streamstate_api::ErrorKind::Serialization`] when the namespace is
    /// not an `N`.
    pub fn timer_namespace<N: DeserializeOwned>(&self) -> Result<Option<N>> {
        match self.firing {
            Some((_, namespace)) if !namespace.is_empty() => Ok(Some(streamstate_api::codec::decode_value(namespace)?)),
            _ => Ok(None),
        }
    }

    fn set(&mut self, domain: TimeDomain, namespace: &[u8], timestamp: i64, register: bool) -> Result<()> {
        if register {
            self.timers.register(&mut *self.backend, domain, namespace, timestamp)?;
        } else {
            self.timers.delete(&mut *self.backend, domain, namespace, timestamp)?;
        }
        Ok(())
    }

    fn set_in<N: Serialize>(
        &mut self,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
        register: bool,
    ) -> Result<()> {
        let namespace = streamstate_api::codec::encode_value(namespace)?;
        self.set(domain, &namespace, timestamp, register)
    }

    /// Sets an event-time timer for the current key at `timestamp` (again
    /// at the same time: still one timer).
    ///
    /// # Errors
    /// State errors.
    pub fn register_event_time_timer(&mut self, timestamp: i64) -> Result<()> {
        self.set(TimeDomain::EventTime, &[], timestamp, true)
    }

    /// Deletes the current key's event-time timer at `timestamp`, if any.
    ///
    /// # Errors
    /// State errors.
    pub fn delete_event_time_timer(&mut self, timestamp: i64) -> Result<()> {
        self.set(TimeDomain::EventTime, &[], timestamp, false)
    }

    /// Sets a processing-time timer for the current key at `timestamp`.
    ///
    /// # Errors
    /// State errors.
    pub fn register_processing_time_timer(&mut self, timestamp: i64) -> Result<()> {
        self.set(TimeDomain::ProcessingTime, &[], timestamp, true)
    }

    /// Deletes the current key's processing-time timer at `timestamp`.
    ///
    /// # Errors
    /// State errors.
    pub fn delete_processing_time_timer(&mut self, timestamp: i64) -> Result<()> {
        self.set(TimeDomain::ProcessingTime, &[], timestamp, false)
    }

    /// Sets a timer of `domain` for the current key in `namespace` (a
    /// window) at `timestamp`.
    ///
    /// # Errors
    /// State or serialization errors.
    pub fn register_timer_in<N: Serialize>(&mut self, domain: TimeDomain, namespace: &N, timestamp: i64) -> Result<()> {
        self.set_in(domain, namespace, timestamp, true)
    }

    /// Deletes the current key's timer of `domain` in `namespace` at
    /// `timestamp`.
    ///
    /// # Errors
    /// State or serialization errors.
    pub fn delete_timer_in<N: Serialize>(&mut self, domain: TimeDomain, namespace: &N, timestamp: i64) -> Result<()> {
        self.set_in(domain, namespace, timestamp, false)
    }
}
