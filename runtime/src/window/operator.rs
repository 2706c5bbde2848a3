//! The window operator: a keyed process function that adds each record to
//! the state of every window it belongs to (the window is the state's
//! namespace), sets a timer at each window's end, emits the window's result
//! when the timer fires, and clears the window's state once it can take no
//! more records (its end plus the allowed lateness).
//!
//! Event-time windows that do not merge, with a function that folds
//! (`reduce`, `aggregate`), are pre-aggregated: a record is folded into an
//! in-memory partial per key and window, and the partials go to state, with
//! their timers, when the watermark advances (before any timer fires),
//! before each snapshot and when [`MAX_BUFFERED`] are held: one state
//! write and one timer registration per key and window between watermarks,
//! instead of one per record.

use std::collections::HashMap;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use streamstate_api::timers::TimeDomain;
use streamstate_api::{Error, KeyedStateBackend, KeyedStateBackendExt, Result, ValueState, ValueStateDescriptor};

use super::assigner::{TimeWindow, WindowTime, Windowing};
use super::function::{WindowContext, WindowFunction};
use crate::function::{Context, KeyedProcessFunction};

/// (key, window) partials the operator holds before it writes them.
pub const MAX_BUFFERED: usize = 16_384;

/// Partials per serialized key: each window's, in the order first seen.
type Buffer<P> = HashMap<Vec<u8>, Vec<(TimeWindow, Option<P>)>, foldhash::fast::RandomState>;

/// Flink's `WindowOperator`, as a [`KeyedProcessFunction`]: see the
/// [module docs](self). What each window keeps and emits is its
/// [`WindowFunction`]'s.
pub struct WindowOperator<K, T, F: WindowFunction<K, T>> {
    windowing: Windowing,
    function: F,
    /// For session windows: each key's sessions.
    sessions: Option<ValueState<Sessions>>,
    /// Records folded but not yet in state (see the module docs).
    buffer: Buffer<F::Partial>,
    /// How many (key, window) partials `buffer` holds.
    buffered: usize,
    _types: PhantomData<fn() -> (K, T)>,
}

impl<K, T, F: WindowFunction<K, T>> std::fmt::Debug for WindowOperator<K, T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowOperator")
            .field("windowing", &self.windowing)
            .finish_non_exhaustive()
    }
}

impl<K: Clone, T, F: WindowFunction<K, T>> WindowOperator<K, T, F> {
    /// An operator keeping and emitting windows with `function`.
    pub fn new(windowing: Windowing, function: F) -> Self {
        Self {
            windowing,
            function,
            sessions: None,
            buffer: Buffer::default(),
            buffered: 0,
            _types: PhantomData,
        }
    }

    /// Whether records are folded in memory first: event time (processing
    /// time fires by the clock, with no watermark to flush on), windows
    /// that do not merge, a function that folds.
    fn pre_aggregates(&self) -> bool {
        self.windowing.time == WindowTime::EventTime && !self.windowing.assigner.is_merging() && self.function.folds()
    }

    /// Folds `value` into the partial of the current key in `window`.
    fn buffer_record(&mut self, key: &[u8], window: TimeWindow, value: &T) {
        let windows = match self.buffer.get_mut(key) {
            Some(windows) => windows,
            None => self.buffer.entry(key.to_vec()).or_default(),
        };
        let at = match windows.iter().position(|(w, _)| *w == window) {
            Some(at) => at,
            None => {
                self.buffered += 1;
                windows.push((window, None));
                windows.len() - 1
            }
        };
        self.function.fold(&mut windows[at].1, value);
    }

    /// Writes every partial to state with its window's timers, then makes
    /// the key that was current before current again.
    fn write_buffer(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let domain = self.domain();
        let current = ctx.backend().current_key().to_vec();
        let Self {
            buffer,
            function,
            windowing,
            buffered,
            ..
        } = self;
        for (key, windows) in buffer.drain() {
            ctx.backend().set_current_key(&key)?;
            for (window, partial) in windows {
                if let Some(partial) = partial {
                    function.add_partial(ctx.backend(), &window, partial)?;
                }
                ctx.register_timer_in(domain, &window, window.max_timestamp())?;
                let cleanup = windowing.cleanup_time(&window);
                if cleanup != window.max_timestamp() {
                    ctx.register_timer_in(domain, &window, cleanup)?;
                }
            }
        }
        *buffered = 0;
        if !current.is_empty() {
            ctx.backend().set_current_key(&current)?;
        }
        Ok(())
    }

    /// Emits `window`'s result, its contents kept in namespace
    /// `state_window` (the window itself, but for a merged session).
    fn emit(
        &self,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        ctx: &mut Context<'_>,
        out: &mut dyn FnMut(F::Out),
    ) -> Result<()> {
        let context = WindowContext {
            window,
            current_watermark: ctx.current_watermark(),
            current_processing_time: ctx.current_processing_time(),
        };
        self.function.emit(key, &context, &state_window, ctx.backend(), out)
    }

    /// A record too late for every window it belongs to: counted, and
    /// emitted if the function takes late data.
    fn late(&self, value: T, ctx: &mut Context<'_>, out: &mut dyn FnMut(F::Out)) {
        ctx.count_late_record();
        if let Some(late) = self.function.late(value) {
            out(late);
        }
    }

    fn domain(&self) -> TimeDomain {
        match self.windowing.time {
            WindowTime::EventTime => TimeDomain::EventTime,
            WindowTime::ProcessingTime => TimeDomain::ProcessingTime,
        }
    }

    fn sessions(&self) -> Result<ValueState<Sessions>> {
        self.sessions
            .ok_or_else(|| Error::invalid_argument("the window operator was not opened for sessions"))
    }

    /// Deletes the timers of `window`: at its end and at its cleanup time.
    fn delete_timers(&self, ctx: &mut Context<'_>, window: &TimeWindow) -> Result<()> {
        let domain = self.domain();
        ctx.delete_timer_in(domain, window, window.max_timestamp())?;
        ctx.delete_timer_in(domain, window, self.windowing.cleanup_time(window))
    }

    /// A record at `timestamp` opens the session `[timestamp, timestamp +
    /// gap)`, which merges with every session of the key it overlaps or
    /// touches (Flink's `MergingWindowSet`): their contents fold into one
    /// state namespace, their timers give way to the merged window's.
    fn process_session(
        &self,
        key: &K,
        value: T,
        timestamp: i64,
        ctx: &mut Context<'_>,
        out: &mut dyn FnMut(F::Out),
    ) -> Result<()> {
        let event_time = self.windowing.time == WindowTime::EventTime;
        let watermark = ctx.current_watermark();
        let sessions = self.sessions()?;
        let mut set = sessions.value(ctx.backend())?.unwrap_or_default();
        let mut merged = self.windowing.assigner.assign(timestamp)[0];
        let (merging, mut rest): (Sessions, Sessions) =
            set.drain(..).partition(|(window, _)| window.intersects(&merged));
        for (window, _) in &merging {
            merged = merged.cover(window);
        }
        if event_time && self.windowing.cleanup_time(&merged) <= watermark {
            // Too late for every session it would join: dropped, the
            // sessions left as they are.
            self.late(value, ctx, out);
            return Ok(());
        }
        let state_window = merging.first().map_or(merged, |(_, state)| *state);
        let others: Vec<TimeWindow> = merging.iter().skip(1).map(|(_, state)| *state).collect();
        self.function.merge(ctx.backend(), &state_window, &others)?;
        for (window, _) in &merging {
            self.delete_timers(ctx, window)?;
        }
        self.function.add(ctx.backend(), &state_window, &value)?;
        rest.push((merged, state_window));
        sessions.update(ctx.backend(), &rest)?;
        let cleanup = self.windowing.cleanup_time(&merged);
        if event_time && merged.max_timestamp() <= watermark {
            // Late but within the allowed lateness: fire now.
            self.emit(key, merged, state_window, ctx, out)?;
        } else {
            ctx.register_timer_in(self.domain(), &merged, merged.max_timestamp())?;
        }
        ctx.register_timer_in(self.domain(), &merged, cleanup)
    }
}

/// A key's sessions: (window, namespace of its contents). A merged
/// session keeps the namespace of one of the sessions it merged, so only
/// the others' contents move.
type Sessions = Vec<(TimeWindow, TimeWindow)>;

/// The name of the sessions' state in checkpoints.
pub const SESSIONS_STATE: &str = "window-sessions";

impl<K, T, F> KeyedProcessFunction<K, T, F::Out> for WindowOperator<K, T, F>
where
    K: Clone + DeserializeOwned + Send,
    T: Send,
    F: WindowFunction<K, T>,
{
    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        self.windowing.assigner.check()?;
        self.function.open(backend)?;
        if self.windowing.assigner.is_merging() {
            self.sessions = Some(backend.value_state(&ValueStateDescriptor::new(SESSIONS_STATE))?);
        }
        Ok(())
    }

    fn process(&mut self, key: &K, value: T, ctx: &mut Context<'_>, out: &mut dyn FnMut(F::Out)) -> Result<()> {
        let event_time = self.windowing.time == WindowTime::EventTime;
        let timestamp = if event_time {
            ctx.timestamp().ok_or_else(|| {
                Error::config(
                    "event-time windows need record timestamps: assign_timestamps_and_watermarks before key_by",
                )
            })?
        } else {
            ctx.current_processing_time()
        };
        if self.windowing.assigner.is_merging() {
            return self.process_session(key, value, timestamp, ctx, out);
        }
        let watermark = ctx.current_watermark();
        let domain = self.domain();
        let pre_aggregates = self.pre_aggregates();
        let mut late = true;
        for window in self.windowing.assigner.assign(timestamp) {
            let cleanup = self.windowing.cleanup_time(&window);
            // Flink's `isWindowLate`: its state is purged (or due to be).
            if event_time && cleanup <= watermark {
                continue;
            }
            late = false;
            // Late but within the allowed lateness: fire again now
            // (Flink's `EventTimeTrigger`), from state holding everything.
            let fire_now = event_time && window.max_timestamp() <= watermark;
            if pre_aggregates && !fire_now {
                self.buffer_record(ctx.backend().current_key(), window, &value);
                continue;
            }
            self.write_buffer(ctx)?;
            self.function.add(ctx.backend(), &window, &value)?;
            if fire_now {
                self.emit(key, window, window, ctx, out)?;
            } else {
                ctx.register_timer_in(domain, &window, window.max_timestamp())?;
            }
            if cleanup != window.max_timestamp() {
                ctx.register_timer_in(domain, &window, cleanup)?;
            }
        }
        if late {
            self.late(value, ctx, out);
        }
        if self.buffered >= MAX_BUFFERED {
            self.write_buffer(ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        self.write_buffer(ctx)
    }

    fn on_timer(&mut self, timestamp: i64, key: &K, ctx: &mut Context<'_>, out: &mut dyn FnMut(F::Out)) -> Result<()> {
        let Some(window) = ctx.timer_namespace::<TimeWindow>()? else {
            return Ok(());
        };
        // A session's contents may live in another namespace; a timer of
        // a session that merged away was deleted, so every timer finds its
        // session.
        let mut sessions = None;
        let state_window = match self.sessions {
            Some(state) => {
                let set = state.value(ctx.backend())?.unwrap_or_default();
                let Some(state_window) = set.iter().find(|(w, _)| *w == window).map(|(_, s)| *s) else {
                    return Ok(());
                };
                sessions = Some((state, set));
                state_window
            }
            None => window,
        };
        if timestamp == window.max_timestamp() {
            self.emit(key, window, state_window, ctx, out)?;
        }
        if timestamp == self.windowing.cleanup_time(&window) {
            self.function.clear(ctx.backend(), &state_window)?;
            if let Some((state, mut set)) = sessions {
                set.retain(|(w, _)| *w != window);
                if set.is_empty() {
                    state.clear(ctx.backend())?;
                } else {
                    state.update(ctx.backend(), &set)?;
                }
            }
        }
        Ok(())
    }
}
