//! [`WindowedStream`]: a keyed stream cut into windows, turned into a
//! stream of window results by `reduce` or `aggregate`.

use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::descriptor::ReduceFn;
use streamstate_api::AggregateFunction;

use super::assigner::{WindowAssigner, WindowResult, WindowTime, Windowing};
use super::operator::{WindowOperator, WindowOutput};
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
        A::Out: Send + 'static,
    {
        self.windowed(function, Arc::new(Some))
    }

    fn windowed<A, O>(self, function: A, output: WindowOutput<A::Out, O>) -> ProcessedStream<K, T, WindowResult<K, O>>
    where
        A: AggregateFunction<In = T> + Clone + 'static,
        O: Send + 'static,
    {
        let windowing = self.windowing;
        self.keyed.process(Arc::new(move || {
            Box::new(WindowOperator::new(windowing, function.clone(), Arc::clone(&output)))
        }))
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
        let function = Reduce {
            reduce: Arc::new(reduce),
        };
        self.windowed(function, Arc::new(|result: Option<T>| result))
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
