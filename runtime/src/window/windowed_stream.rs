//! [`WindowedStream`]: a keyed stream cut into windows, turned into a
//! stream of window results by `reduce`, `aggregate` or `process`, with
//! late records dropped or, after `side_output_late_data`, in the output.

use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::descriptor::ReduceFn;
use streamstate_api::AggregateFunction;

use super::assigner::{WindowAssigner, WindowResult, WindowTime, Windowing};
use super::function::{Aggregated, ProcessWindowFunction, Processed, WindowFunction, WindowOrLate, WithLateData};
use super::operator::WindowOperator;
use crate::stream::{KeyedStream, ProcessedStream};

/// A keyed stream cut into windows (Flink's `WindowedStream`).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use streamstate_runtime::event_time::WatermarkStrategy;
/// use streamstate_runtime::sink::Sink;
/// use streamstate_runtime::window::{WindowAssigner, WindowResult};
/// use streamstate_runtime::StreamExecutionEnvironment;
///
/// struct Collect(Arc<Mutex<Vec<WindowResult<String, (String, i64, i64)>>>>);
/// impl Sink<WindowResult<String, (String, i64, i64)>> for Collect {
///     fn write(&mut self, record: &WindowResult<String, (String, i64, i64)>) -> streamstate_api::Result<()> {
///         self.0.lock().unwrap().push(record.clone());
///         Ok(())
///     }
/// }
///
/// let results = Arc::new(Mutex::new(Vec::new()));
/// let into = Arc::clone(&results);
/// let env = StreamExecutionEnvironment::new();
/// let lines = vec!["1000 a".into(), "2000 a".into(), "6000 a".into(), "3000 b".into()];
/// env.from_lines(lines, 1)
///     .map(|line: String| {
///         let (at, word) = line.split_once(' ').unwrap();
///         (word.to_owned(), at.parse::<i64>().unwrap(), 1i64)
///     })
///     .assign_timestamps_and_watermarks(WatermarkStrategy::for_bounded_out_of_orderness(
///         Duration::from_secs(5),
///         |(_, at, _): &(String, i64, i64)| *at,
///     ))
///     .key_by(|(word, _, _)| word.clone())
///     .window(WindowAssigner::tumbling(Duration::from_secs(5)))
///     .reduce(|a, b| (a.0.clone(), a.1, a.2 + b.2))
///     .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
///     .execute()
///     .unwrap()
///     .wait()
///     .unwrap();
/// let mut counts: Vec<(String, i64, i64)> =
///     results.lock().unwrap().iter().map(|r| (r.key.clone(), r.window.start, r.value.2)).collect();
/// counts.sort();
/// assert_eq!(counts, vec![("a".into(), 0, 2), ("a".into(), 5000, 1), ("b".into(), 0, 1)]);
/// ```
pub struct WindowedStream<K, T> {
    keyed: KeyedStream<K, T>,
    windowing: Windowing,
}

impl<K, T> KeyedStream<K, T>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Send + 'static,
{
    /// Cuts the stream into windows of `assigner`: in event time when the
    /// stream has a watermark strategy, else in processing time.
    pub fn window(self, assigner: WindowAssigner) -> WindowedStream<K, T> {
        let time = if self.watermarks.is_some() {
            WindowTime::EventTime
        } else {
            WindowTime::ProcessingTime
        };
        WindowedStream {
            keyed: self,
            windowing: Windowing {
                assigner,
                time,
                allowed_lateness: 0,
            },
        }
    }
}

/// An [`AggregateFunction`] folding with a reduce function.
struct Reduce<T> {
    reduce: ReduceFn<T>,
}

impl<T> Clone for Reduce<T> {
    fn clone(&self) -> Self {
        Self {
            reduce: Arc::clone(&self.reduce),
        }
    }
}

impl<T: Serialize + DeserializeOwned + Clone> AggregateFunction for Reduce<T> {
    type In = T;
    type Acc = Option<T>;
    /// `None` only for a window without records, which emits nothing.
    type Out = Option<T>;
    fn create_accumulator(&self) -> Option<T> {
        None
    }
    fn add(&self, value: &T, acc: Option<T>) -> Option<T> {
        Some(match acc {
            Some(acc) => (self.reduce)(&acc, value),
            None => value.clone(),
        })
    }
    fn get_result(&self, acc: &Option<T>) -> Option<T> {
        acc.clone()
    }
    fn merge(&self, a: Option<T>, b: Option<T>) -> Option<T> {
        match (a, b) {
            (Some(a), Some(b)) => Some((self.reduce)(&a, &b)),
            (a, b) => a.or(b),
        }
    }
}

impl<K, T> WindowedStream<K, T>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Send + 'static,
{
    /// How long after its end a window still takes late records, firing
    /// again with each (Flink's `allowedLateness`; event time only). Later
    /// records are dropped and counted in the job's `late_records`.
    #[must_use]
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.windowing.allowed_lateness = i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Folds each window's records with `function` and emits its result
    /// when the window ends.
    pub fn aggregate<A>(self, function: A) -> ProcessedStream<K, T, WindowResult<K, A::Out>>
    where
        A: AggregateFunction<In = T> + Clone + 'static,
        A::Acc: Send,
        A::Out: Send + 'static,
    {
        self.windowed(Aggregated::new(function, Arc::new(Some)))
    }

    /// Folds each window's records with `reduce` and emits the result when
    /// the window ends.
    pub fn reduce(
        self,
        reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static,
    ) -> ProcessedStream<K, T, WindowResult<K, T>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync,
    {
        self.windowed(reducing(reduce))
    }

    /// Keeps every record of a window and hands them, with the window, to
    /// `function` when it ends (Flink's `process` with a
    /// `ProcessWindowFunction`). It costs a list of records per window in
    /// state, where `reduce` and `aggregate` keep one accumulator.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use streamstate_runtime::event_time::WatermarkStrategy;
    /// use streamstate_runtime::sink::Sink;
    /// use streamstate_runtime::window::{WindowAssigner, WindowContext};
    /// use streamstate_runtime::StreamExecutionEnvironment;
    ///
    /// struct Collect(Arc<Mutex<Vec<(i64, String)>>>);
    /// impl Sink<(i64, String)> for Collect {
    ///     fn write(&mut self, record: &(i64, String)) -> streamstate_api::Result<()> {
    ///         self.0.lock().unwrap().push(record.clone());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let results = Arc::new(Mutex::new(Vec::new()));
    /// let into = Arc::clone(&results);
    /// StreamExecutionEnvironment::new()
    ///     .from_lines(vec!["1000 b".into(), "2000 a".into(), "7000 c".into()], 1)
    ///     .map(|line: String| {
    ///         let (at, word) = line.split_once(' ').unwrap();
    ///         (at.parse::<i64>().unwrap(), word.to_owned())
    ///     })
    ///     .assign_timestamps_and_watermarks(WatermarkStrategy::for_monotonous_timestamps(|(at, _): &(i64, String)| *at))
    ///     .key_by(|_| "all".to_owned())
    ///     .window(WindowAssigner::tumbling(Duration::from_secs(5)))
    ///     // Each window's words, sorted and joined.
    ///     .process(|_key: &String, ctx: &WindowContext, records: Vec<(i64, String)>, out: &mut dyn FnMut((i64, String))| {
    ///         let mut words: Vec<String> = records.into_iter().map(|(_, w)| w).collect();
    ///         words.sort();
    ///         out((ctx.window.start, words.join(",")));
    ///         Ok(())
    ///     })
    ///     .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
    ///     .execute()
    ///     .unwrap()
    ///     .wait()
    ///     .unwrap();
    /// let mut got = results.lock().unwrap().clone();
    /// got.sort();
    /// assert_eq!(got, vec![(0, "a,b".to_owned()), (5000, "c".to_owned())]);
    /// ```
    pub fn process<O, F>(self, function: F) -> ProcessedStream<K, T, O>
    where
        T: Serialize + DeserializeOwned,
        O: Send + 'static,
        F: ProcessWindowFunction<K, T, O> + 'static,
    {
        self.windowed(Processed::new(Arc::new(function)))
    }

    /// Late records, instead of being dropped, go into the output as
    /// [`WindowOrLate::Late`] beside the windows' results
    /// ([`WindowOrLate::Window`]): Flink's `sideOutputLateData`, in one
    /// stream. They are still counted in `late_records`.
    pub fn side_output_late_data(self) -> LateDataWindowedStream<K, T> {
        LateDataWindowedStream(self)
    }

    fn windowed<F>(self, function: F) -> ProcessedStream<K, T, F::Out>
    where
        F: WindowFunction<K, T> + Clone + Send + Sync + 'static,
        F::Out: Send + 'static,
    {
        let windowing = self.windowing;
        self.keyed.process(Arc::new(move || {
            Box::new(WindowOperator::<K, T, F>::new(windowing, function.clone()))
        }))
    }
}

fn reducing<T>(reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> Aggregated<Reduce<T>, T>
where
    T: Serialize + DeserializeOwned + Clone,
{
    let function = Reduce {
        reduce: Arc::new(reduce),
    };
    Aggregated::new(function, Arc::new(|result: Option<T>| result))
}

/// The stream of a window function's output `O`, late records beside.
type WithLate<K, T, O> = ProcessedStream<K, T, WindowOrLate<O, T>>;

/// A [`WindowedStream`] whose output also carries the records that came
/// too late ([`WindowedStream::side_output_late_data`]).
pub struct LateDataWindowedStream<K, T>(WindowedStream<K, T>);

impl<K, T> LateDataWindowedStream<K, T>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Send + 'static,
{
    /// [`WindowedStream::aggregate`], late records beside.
    pub fn aggregate<A>(self, function: A) -> WithLate<K, T, WindowResult<K, A::Out>>
    where
        A: AggregateFunction<In = T> + Clone + 'static,
        A::Acc: Send,
        A::Out: Send + 'static,
    {
        self.0.windowed(WithLateData(Aggregated::new(function, Arc::new(Some))))
    }

    /// [`WindowedStream::reduce`], late records beside.
    pub fn reduce(self, reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> WithLate<K, T, WindowResult<K, T>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync,
    {
        self.0.windowed(WithLateData(reducing(reduce)))
    }

    /// [`WindowedStream::process`], late records beside.
    pub fn process<O, F>(self, function: F) -> WithLate<K, T, O>
    where
        T: Serialize + DeserializeOwned,
        O: Send + 'static,
        F: ProcessWindowFunction<K, T, O> + 'static,
    {
        self.0.windowed(WithLateData(Processed::new(Arc::new(function))))
    }
}

macro_rules! opaque_debug {
    ($name:ident <$($p:ident),*>) => {
        impl<$($p),*> std::fmt::Debug for $name<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}
opaque_debug!(WindowedStream<K, T>);
opaque_debug!(LateDataWindowedStream<K, T>);
