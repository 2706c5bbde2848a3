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
use streamstate_api::{AggregateFunction, AggregatingStateDescriptor, Error, KeyedStateBackend, Result};

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
            _key: PhantomData,
        }
    }

    /// Emits the window's result, if it has contents.
    fn emit(
        &self,
        key: &K,
        window: TimeWindow,
        ctx: &mut Context<'_>,
        out: &mut dyn FnMut(WindowResult<K, O>),
    ) -> Result<()>
    where
        K: Clone,
    {
        if let Some(value) = self
            .contents()?
            .get(ctx.backend(), &window)?
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
}

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
                self.emit(key, window, ctx, out)?;
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
        if timestamp == window.max_timestamp() {
            self.emit(key, window, ctx, out)?;
        }
        if timestamp == self.windowing.cleanup_time(&window) {
            self.contents()?.clear(ctx.backend(), &window)?;
        }
        Ok(())
    }
}
