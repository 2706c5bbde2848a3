//! The window operator: a keyed process function that adds each record to
//! the state of every window it belongs to (the window is the state's
//! namespace), sets a timer at each window's end, emits the window's result
//! when the timer fires, and clears the window's state once it can take no
//! more records (its end plus the allowed lateness).

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use streamstate_api::namespaced::{NamespacedAggregatingState, NamespacedStateExt};
use streamstate_api::timers::TimeDomain;
use streamstate_api::{
    AggregateFunction, AggregatingStateDescriptor, Error, KeyedStateBackend, KeyedStateBackendExt, Result, ValueState,
    ValueStateDescriptor,
};

use super::assigner::{TimeWindow, WindowResult, WindowTime, Windowing};
use crate::function::{Context, KeyedProcessFunction};

/// The name of the window contents' state in checkpoints.
pub const WINDOW_STATE: &str = "window-contents";

/// What a window emits from its function's result (`None`: nothing).
pub type WindowOutput<R, O> = Arc<dyn Fn(R) -> Option<O> + Send + Sync>;

/// Flink's `WindowOperator` with an aggregate function, as a
/// [`KeyedProcessFunction`]: see the [module docs](super).
pub struct WindowOperator<K, A: AggregateFunction, O> {
    windowing: Windowing,
    function: A,
    output: WindowOutput<A::Out, O>,
    contents: Option<NamespacedAggregatingState<TimeWindow, A>>,
    /// For session windows: each key's sessions.
    sessions: Option<ValueState<Sessions>>,
    _key: PhantomData<fn() -> K>,
}

impl<K, A: AggregateFunction, O> std::fmt::Debug for WindowOperator<K, A, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowOperator")
            .field("windowing", &self.windowing)
            .finish_non_exhaustive()
    }
}

impl<K, A: AggregateFunction + Clone, O> WindowOperator<K, A, O> {
    /// An operator folding each window's records with `function` and
    /// emitting `output` of the result when the window fires.
    pub fn new(windowing: Windowing, function: A, output: WindowOutput<A::Out, O>) -> Self {
        Self {
            windowing,
            function,
            output,
            contents: None,
            sessions: None,
            _key: PhantomData,
        }
    }

    /// Emits `window`'s result, its contents kept in namespace
    /// `state_window` (the window itself, but for a merged session).
    fn emit(
        &self,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        ctx: &mut Context<'_>,
        out: &mut dyn FnMut(WindowResult<K, O>),
    ) -> Result<()>
    where
        K: Clone,
    {
        if let Some(value) = self
            .contents()?
            .get(ctx.backend(), &state_window)?
            .and_then(|r| (self.output)(r))
        {
            out(WindowResult {
                key: key.clone(),
                window,
                value,
            });
        }
        Ok(())
    }

    fn domain(&self) -> TimeDomain {
        match self.windowing.time {
            WindowTime::EventTime => TimeDomain::EventTime,
            WindowTime::ProcessingTime => TimeDomain::ProcessingTime,
        }
    }

    fn contents(&self) -> Result<&NamespacedAggregatingState<TimeWindow, A>> {
        self.contents
            .as_ref()
            .ok_or_else(|| Error::invalid_argument("the window operator was not opened"))
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
        value: &A::In,
        timestamp: i64,
        ctx: &mut Context<'_>,
        out: &mut dyn FnMut(WindowResult<K, O>),
    ) -> Result<()>
    where
        K: Clone,
    {
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
            ctx.count_late_record();
            return Ok(());
        }
        let state_window = merging.first().map_or(merged, |(_, state)| *state);
        let others: Vec<TimeWindow> = merging.iter().skip(1).map(|(_, state)| *state).collect();
        let contents = self.contents()?;
        contents.merge_namespaces(ctx.backend(), &state_window, &others)?;
        for (window, _) in &merging {
            self.delete_timers(ctx, window)?;
        }
        contents.add(ctx.backend(), &state_window, value)?;
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

impl<K, A, O> KeyedProcessFunction<K, A::In, WindowResult<K, O>> for WindowOperator<K, A, O>
where
    K: Clone + DeserializeOwned + Send,
    A: AggregateFunction + Clone + 'static,
    A::In: Send,
{
    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        self.windowing.assigner.check()?;
        let descriptor = AggregatingStateDescriptor::new(WINDOW_STATE, self.function.clone());
        self.contents = Some(backend.namespaced_aggregating_state::<TimeWindow, A>(&descriptor)?);
        if self.windowing.assigner.is_merging() {
            self.sessions = Some(backend.value_state(&ValueStateDescriptor::new(SESSIONS_STATE))?);
        }
        Ok(())
    }

    fn process(
        &mut self,
        key: &K,
        value: A::In,
        ctx: &mut Context<'_>,
        out: &mut dyn FnMut(WindowResult<K, O>),
    ) -> Result<()> {
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
            return self.process_session(key, &value, timestamp, ctx, out);
        }
        let watermark = ctx.current_watermark();
        let domain = self.domain();
        let mut late = true;
        for window in self.windowing.assigner.assign(timestamp) {
            let cleanup = self.windowing.cleanup_time(&window);
            // Flink's `isWindowLate`: its state is purged (or due to be).
            if event_time && cleanup <= watermark {
                continue;
            }
            late = false;
            self.contents()?.add(ctx.backend(), &window, &value)?;
            if event_time && window.max_timestamp() <= watermark {
                // Late but within the allowed lateness: fire again now
                // (Flink's `EventTimeTrigger`).
                self.emit(key, window, window, ctx, out)?;
            } else {
                ctx.register_timer_in(domain, &window, window.max_timestamp())?;
            }
            if cleanup != window.max_timestamp() {
                ctx.register_timer_in(domain, &window, cleanup)?;
            }
        }
        if late {
            ctx.count_late_record();
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        key: &K,
        ctx: &mut Context<'_>,
        out: &mut dyn FnMut(WindowResult<K, O>),
    ) -> Result<()> {
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
            self.contents()?.clear(ctx.backend(), &state_window)?;
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
