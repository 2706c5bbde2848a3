//! What a window keeps and what it emits when it fires
//! ([`WindowFunction`], Flink's `InternalWindowFunction` with the window
//! state it reads): a running aggregate ([`Aggregated`], for `reduce` and
//! `aggregate`), or every record for a [`ProcessWindowFunction`]
//! ([`Processed`]); [`WithLateData`] adds the records that came too late
//! to the output (Flink's `sideOutputLateData`).

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::namespaced::{NamespacedAggregatingState, NamespacedListState, NamespacedStateExt};
use streamstate_api::{
    AggregateFunction, AggregatingStateDescriptor, Error, KeyedStateBackend, ListStateDescriptor, Result,
};

use super::assigner::{TimeWindow, WindowResult};

/// The name of the window contents' state in checkpoints.
pub const WINDOW_STATE: &str = "window-contents";

/// What a window emits from its aggregate's result (`None`: nothing).
pub type WindowOutput<R, O> = Arc<dyn Fn(R) -> Option<O> + Send + Sync>;

/// A firing window, as its function sees it (Flink's
/// `ProcessWindowFunction.Context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowContext {
    /// The window that fires.
    pub window: TimeWindow,
    /// The subtask's watermark (`i64::MIN` before any).
    pub current_watermark: i64,
    /// Processing time in epoch milliseconds.
    pub current_processing_time: i64,
}

/// The window operator's function: keeps each window's contents in state
/// namespaced by the window, and turns them into output when the window
/// fires. `reduce`, `aggregate` and `process` on a
/// [`WindowedStream`](super::WindowedStream) build one.
pub trait WindowFunction<K, T>: Send {
    /// What the window emits.
    type Out;

    /// Records of one key and window folded in memory before they reach
    /// state (pre-aggregation); `()` for a function that folds none.
    type Partial: Send;

    /// Whether this function folds records in memory ([`Self::fold`]);
    /// if not, each record goes to state at once. The default: `false`.
    fn folds(&self) -> bool {
        false
    }

    /// Folds `value` into `partial` (a new one when `None`), for a function
    /// that [`folds`](Self::folds). The default does nothing.
    fn fold(&self, partial: &mut Option<Self::Partial>, value: &T) {
        let _ = (partial, value);
    }

    /// Adds `partial` to `window`'s contents (the current key's).
    ///
    /// # Errors
    /// Backend and serialization errors.
    fn add_partial(
        &self,
        backend: &mut dyn KeyedStateBackend,
        window: &TimeWindow,
        partial: Self::Partial,
    ) -> Result<()> {
        let _ = (backend, window, partial);
        Ok(())
    }

    /// Registers the contents' state on the subtask's backend.
    ///
    /// # Errors
    /// As the backend's state registration.
    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()>;

    /// Adds `value` to `window`'s contents (the current key's).
    ///
    /// # Errors
    /// Backend and serialization errors.
    fn add(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow, value: &T) -> Result<()>;

    /// Folds the contents of `sources` into `target` (merging sessions).
    ///
    /// # Errors
    /// Backend and serialization errors.
    fn merge(&self, backend: &mut dyn KeyedStateBackend, target: &TimeWindow, sources: &[TimeWindow]) -> Result<()>;

    /// Drops `window`'s contents.
    ///
    /// # Errors
    /// Backend errors.
    fn clear(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow) -> Result<()>;

    /// Emits what `context.window` holds, its contents kept in namespace
    /// `state_window` (the window itself, but for a merged session).
    ///
    /// # Errors
    /// Backend and serialization errors, and the function's own.
    fn emit(
        &self,
        key: &K,
        context: &WindowContext,
        state_window: &TimeWindow,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(Self::Out),
    ) -> Result<()>;

    /// What a record too late for every window it belongs to becomes:
    /// nothing (it is dropped and counted), unless the output takes late
    /// data ([`WithLateData`]).
    fn late(&self, _value: T) -> Option<Self::Out> {
        None
    }
}

fn opened<S>(state: Option<&S>) -> Result<&S> {
    state.ok_or_else(|| Error::invalid_argument("the window operator was not opened"))
}

/// Windows folded incrementally with an [`AggregateFunction`]: one
/// accumulator per window in state, emitted as a [`WindowResult`].
pub struct Aggregated<A: AggregateFunction, O> {
    function: A,
    output: WindowOutput<A::Out, O>,
    state: Option<NamespacedAggregatingState<TimeWindow, A>>,
}

impl<A: AggregateFunction, O> std::fmt::Debug for Aggregated<A, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregated").finish_non_exhaustive()
    }
}

impl<T, F, O> std::fmt::Debug for Processed<T, F, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processed").finish_non_exhaustive()
    }
}

impl<A: AggregateFunction + Clone, O> Clone for Aggregated<A, O> {
    fn clone(&self) -> Self {
        Self {
            function: self.function.clone(),
            output: Arc::clone(&self.output),
            state: self.state.clone(),
        }
    }
}

impl<A: AggregateFunction, O> Aggregated<A, O> {
    /// Folds with `function`, emitting `output` of its result.
    pub fn new(function: A, output: WindowOutput<A::Out, O>) -> Self {
        Self {
            function,
            output,
            state: None,
        }
    }
}

impl<K, A, O> WindowFunction<K, A::In> for Aggregated<A, O>
where
    K: Clone,
    A: AggregateFunction + Clone + 'static,
    A::Acc: Send,
{
    type Out = WindowResult<K, O>;
    type Partial = A::Acc;

    fn folds(&self) -> bool {
        true
    }

    fn fold(&self, partial: &mut Option<A::Acc>, value: &A::In) {
        let acc = partial.take().unwrap_or_else(|| self.function.create_accumulator());
        *partial = Some(self.function.add(value, acc));
    }

    fn add_partial(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow, partial: A::Acc) -> Result<()> {
        opened(self.state.as_ref())?.add_accumulator(backend, window, partial)
    }

    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        let descriptor = AggregatingStateDescriptor::new(WINDOW_STATE, self.function.clone());
        self.state = Some(backend.namespaced_aggregating_state::<TimeWindow, A>(&descriptor)?);
        Ok(())
    }

    fn add(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow, value: &A::In) -> Result<()> {
        opened(self.state.as_ref())?.add(backend, window, value)
    }

    fn merge(&self, backend: &mut dyn KeyedStateBackend, target: &TimeWindow, sources: &[TimeWindow]) -> Result<()> {
        opened(self.state.as_ref())?.merge_namespaces(backend, target, sources)
    }

    fn clear(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow) -> Result<()> {
        opened(self.state.as_ref())?.clear(backend, window)
    }

    fn emit(
        &self,
        key: &K,
        context: &WindowContext,
        state_window: &TimeWindow,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(Self::Out),
    ) -> Result<()> {
        if let Some(value) = opened(self.state.as_ref())?
            .get(backend, state_window)?
            .and_then(|r| (self.output)(r))
        {
            out(WindowResult {
                key: key.clone(),
                window: context.window,
                value,
            });
        }
        Ok(())
    }
}

/// Flink's `ProcessWindowFunction`: sees every record of a window at
/// once, with the window, and emits any number of results. Closures
/// `Fn(&K, &WindowContext, Vec<T>, &mut dyn FnMut(O)) -> Result<()>` are
/// one.
///
/// ```
/// use streamstate_runtime::window::{ProcessWindowFunction, WindowContext, TimeWindow};
/// // The median of each window's values, with the window's start.
/// let median = |key: &String, ctx: &WindowContext, mut values: Vec<i64>, out: &mut dyn FnMut((String, i64, i64))| {
///     values.sort_unstable();
///     out((key.clone(), ctx.window.start, values[values.len() / 2]));
///     Ok(())
/// };
/// let ctx = WindowContext { window: TimeWindow { start: 0, end: 10 }, current_watermark: 9, current_processing_time: 0 };
/// let mut got = Vec::new();
/// median.process(&"k".to_owned(), &ctx, vec![5, 1, 9], &mut |o| got.push(o)).unwrap();
/// assert_eq!(got, vec![("k".to_owned(), 0, 5)]);
/// ```
pub trait ProcessWindowFunction<K, T, O>: Send + Sync {
    /// Emits what `elements`, the window's records in arrival order,
    /// come to.
    ///
    /// # Errors
    /// Whatever the function reports: it fails the job.
    fn process(&self, key: &K, context: &WindowContext, elements: Vec<T>, out: &mut dyn FnMut(O)) -> Result<()>;
}

impl<K, T, O, F> ProcessWindowFunction<K, T, O> for F
where
    F: Fn(&K, &WindowContext, Vec<T>, &mut dyn FnMut(O)) -> Result<()> + Send + Sync,
{
    fn process(&self, key: &K, context: &WindowContext, elements: Vec<T>, out: &mut dyn FnMut(O)) -> Result<()> {
        self(key, context, elements, out)
    }
}

/// Windows kept whole, every record in a list state per window, for a
/// [`ProcessWindowFunction`].
pub struct Processed<T, F, O> {
    function: Arc<F>,
    state: Option<NamespacedListState<TimeWindow, T>>,
    _output: PhantomData<fn() -> O>,
}

impl<T, F, O> Clone for Processed<T, F, O> {
    fn clone(&self) -> Self {
        Self {
            function: Arc::clone(&self.function),
            state: self.state,
            _output: PhantomData,
        }
    }
}

impl<T, F, O> Processed<T, F, O> {
    /// Keeps every record for `function`.
    pub fn new(function: Arc<F>) -> Self {
        Self {
            function,
            state: None,
            _output: PhantomData,
        }
    }
}

impl<K, T, F, O> WindowFunction<K, T> for Processed<T, F, O>
where
    T: Serialize + DeserializeOwned + Send,
    F: ProcessWindowFunction<K, T, O>,
{
    type Out = O;
    /// Every record is kept: nothing to fold.
    type Partial = ();

    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        self.state = Some(backend.namespaced_list_state::<TimeWindow, T>(&ListStateDescriptor::new(WINDOW_STATE))?);
        Ok(())
    }

    fn add(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow, value: &T) -> Result<()> {
        opened(self.state.as_ref())?.add(backend, window, value)
    }

    fn merge(&self, backend: &mut dyn KeyedStateBackend, target: &TimeWindow, sources: &[TimeWindow]) -> Result<()> {
        opened(self.state.as_ref())?.merge_namespaces(backend, target, sources)
    }

    fn clear(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow) -> Result<()> {
        opened(self.state.as_ref())?.clear(backend, window)
    }

    fn emit(
        &self,
        key: &K,
        context: &WindowContext,
        state_window: &TimeWindow,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(O),
    ) -> Result<()> {
        let elements = opened(self.state.as_ref())?.get(backend, state_window)?;
        if elements.is_empty() {
            return Ok(());
        }
        self.function.process(key, context, elements, out)
    }
}

/// A window's output or a record that came too late for its windows
/// (Flink's main output and late-data side output, in one stream).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WindowOrLate<O, T> {
    /// What a window emitted.
    Window(O),
    /// A record dropped as late (also counted in `late_records`).
    Late(T),
}

/// A window function whose output also carries late records (see
/// [`WindowedStream::side_output_late_data`](super::WindowedStream::side_output_late_data)).
#[derive(Clone, Debug)]
pub struct WithLateData<F>(pub F);

impl<K, T, F: WindowFunction<K, T>> WindowFunction<K, T> for WithLateData<F> {
    type Out = WindowOrLate<F::Out, T>;
    type Partial = F::Partial;

    fn folds(&self) -> bool {
        self.0.folds()
    }

    fn fold(&self, partial: &mut Option<F::Partial>, value: &T) {
        self.0.fold(partial, value);
    }

    fn add_partial(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow, partial: F::Partial) -> Result<()> {
        self.0.add_partial(backend, window, partial)
    }

    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        self.0.open(backend)
    }

    fn add(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow, value: &T) -> Result<()> {
        self.0.add(backend, window, value)
    }

    fn merge(&self, backend: &mut dyn KeyedStateBackend, target: &TimeWindow, sources: &[TimeWindow]) -> Result<()> {
        self.0.merge(backend, target, sources)
    }

    fn clear(&self, backend: &mut dyn KeyedStateBackend, window: &TimeWindow) -> Result<()> {
        self.0.clear(backend, window)
    }

    fn emit(
        &self,
        key: &K,
        context: &WindowContext,
        state_window: &TimeWindow,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(Self::Out),
    ) -> Result<()> {
        self.0.emit(key, context, state_window, backend, &mut |o| {
            out(WindowOrLate::Window(o))
        })
    }

    fn late(&self, value: T) -> Option<Self::Out> {
        Some(WindowOrLate::Late(value))
    }
}
