//! The DataStream-style API: an environment, line sources, a chain of
//! stateless transformations, `key_by`, a keyed operator with state, sinks.
//!
//! ```no_run
//! use std::time::Duration;
//! use streamstate_runtime::{StreamExecutionEnvironment, sink::PrintSink};
//! let mut env = StreamExecutionEnvironment::new();
//! env.enable_checkpointing(Duration::from_secs(6));
//! let handle = env
//!     .socket_text_stream("localhost", 9999)
//!     .flat_map(|line: String| line.to_uppercase().split_whitespace().map(str::to_owned).collect::<Vec<_>>())
//!     .map(|word| (word, 1i64))
//!     .key_by(|(word, _)| word.clone())
//!     .sum(|(_, n)| *n)
//!     .print()
//!     .execute()
//!     .unwrap();
//! handle.wait().unwrap();
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::{CheckpointStorage, StateBackend};

use crate::aggregate::{Accumulator, PreAggregate, ValueOf};
use crate::config::CheckpointConfig;
use crate::event_time::WatermarkStrategy;
use crate::handle::JobHandle;
use crate::operator::FunctionOperator;
use crate::plan::{Chain, KeyOf, OperatorFactory, SourceFactory, SourceSpec};
pub use crate::plan::{Job, JobSettings, ProcessFactory, RestoreFrom, SinkFactory};
use crate::sink::{FileSink, FlinkDisplay, PrintSink};

/// Flink's `StreamExecutionEnvironment`.
#[derive(Debug, Clone, Default)]
pub struct StreamExecutionEnvironment {
    settings: JobSettings,
}

impl StreamExecutionEnvironment {
    /// An environment with Flink's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The settings.
    pub fn settings_mut(&mut self) -> &mut JobSettings {
        &mut self.settings
    }

    /// Parallelism of the keyed operator.
    pub fn set_parallelism(&mut self, parallelism: u32) -> &mut Self {
        self.settings.parallelism = parallelism;
        self
    }

    /// Number of key groups (the most the job can ever be scaled to).
    pub fn set_max_parallelism(&mut self, max_parallelism: u32) -> &mut Self {
        self.settings.max_parallelism = max_parallelism;
        self
    }

    /// Takes a checkpoint every `interval`.
    pub fn enable_checkpointing(&mut self, interval: Duration) -> &mut Self {
        self.settings.checkpoint.interval = Some(interval);
        self
    }

    /// The checkpoint configuration.
    pub fn checkpoint_config(&mut self) -> &mut CheckpointConfig {
        &mut self.settings.checkpoint
    }

    /// The state backend.
    pub fn set_state_backend(&mut self, backend: Arc<dyn StateBackend>) -> &mut Self {
        self.settings.backend = Some(backend);
        self
    }

    /// The checkpoint storage.
    pub fn set_checkpoint_storage(&mut self, storage: CheckpointStorage) -> &mut Self {
        self.settings.storage = Some(storage);
        self
    }

    /// Restore at start.
    pub fn restore_from(&mut self, restore: RestoreFrom) -> &mut Self {
        self.settings.restore = Some(restore);
        self
    }

    fn stream(&self, parallelism: u32, factory: SourceFactory) -> DataStream<String> {
        DataStream {
            settings: self.settings.clone(),
            source: SourceSpec { parallelism, factory },
            chain: Arc::new(|line: String, emit: &mut dyn FnMut(String)| emit(line)),
        }
    }

    /// Lines from a TCP server (connects as a client, like Flink; `nc -lk`
    /// serves it). Not replayable: a restore resumes with new lines.
    pub fn socket_text_stream(&self, host: &str, port: u16) -> DataStream<String> {
        let host = host.to_owned();
        self.stream(
            1,
            // One reader: on an executor that starts a source per subtask,
            // the others have no input.
            Arc::new(move |subtask, _, _| match subtask {
                0 => Ok(Box::new(crate::source::SocketSource::connect(&host, port)?) as Box<_>),
                _ => Ok(Box::new(crate::source::GeneratorSource::new(Arc::new(Vec::new()), 0, 1, None)?) as Box<_>),
            }),
        )
    }

    /// Lines of a text file; its offset is checkpointed, so a restore
    /// continues exactly after the last checkpointed line.
    pub fn read_text_file(&self, path: impl Into<PathBuf>) -> DataStream<String> {
        let path = path.into();
        self.stream(
            1,
            // Split by byte ranges when an executor starts a source per
            // subtask (the local one starts one).
            Arc::new(move |subtask, parallelism, restored| {
                Ok(Box::new(crate::source::FileSource::open_split(
                    &path,
                    subtask,
                    parallelism,
                    restored,
                )?) as Box<_>)
            }),
        )
    }

    /// Lines from a source of your own (Flink's `addSource`): `factory`
    /// builds subtask `subtask` of `parallelism` source subtasks, from its
    /// restored operator state when the job restores (what its
    /// [`LineSource::snapshot`](crate::source::LineSource::snapshot)
    /// wrote).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use streamstate_runtime::source::{LineSource, SourcePoll};
    /// use streamstate_runtime::StreamExecutionEnvironment;
    ///
    /// /// Counts down from 3, one line each, then ends.
    /// struct Countdown(u32);
    /// impl LineSource for Countdown {
    ///     fn poll_line(&mut self, line: &mut String) -> streamstate_api::Result<SourcePoll> {
    ///         if self.0 == 0 {
    ///             return Ok(SourcePoll::End);
    ///         }
    ///         *line = self.0.to_string();
    ///         self.0 -= 1;
    ///         Ok(SourcePoll::Line { more_buffered: true })
    ///     }
    ///     fn snapshot(&self, _: &mut streamstate_api::operator_state::OperatorStateStore) -> streamstate_api::Result<()> {
    ///         Ok(())
    ///     }
    ///     fn replayable(&self) -> bool {
    ///         false
    ///     }
    /// }
    ///
    /// let env = StreamExecutionEnvironment::new();
    /// let result = env
    ///     .add_source(1, Arc::new(|_, _, _| Ok(Box::new(Countdown(3)) as Box<_>)))
    ///     .key_by(|line: &String| line.clone())
    ///     .sum(|_| 1)
    ///     .discard()
    ///     .execute()
    ///     .unwrap()
    ///     .wait()
    ///     .unwrap();
    /// assert_eq!(result.records, 3);
    /// ```
    pub fn add_source(&self, parallelism: u32, factory: SourceFactory) -> DataStream<String> {
        self.stream(parallelism.max(1), factory)
    }

    /// Lines from memory, emitted by `parallelism` source subtasks.
    pub fn from_lines(&self, lines: Vec<String>, parallelism: u32) -> DataStream<String> {
        let lines = Arc::new(lines);
        self.stream(
            parallelism.max(1),
            Arc::new(move |subtask, parallelism, restored| {
                Ok(Box::new(crate::source::GeneratorSource::new(
                    Arc::clone(&lines),
                    subtask as usize,
                    parallelism as usize,
                    restored,
                )?) as Box<_>)
            }),
        )
    }
}

/// A stream of `T` (stateless transformations of source lines).
pub struct DataStream<T> {
    pub(crate) settings: JobSettings,
    pub(crate) source: SourceSpec,
    pub(crate) chain: Chain<T>,
}

impl<T: 'static> DataStream<T> {
    /// One output per input.
    pub fn map<U: 'static>(self, f: impl Fn(T) -> U + Send + Sync + 'static) -> DataStream<U> {
        let prev = self.chain;
        DataStream {
            settings: self.settings,
            source: self.source,
            chain: Arc::new(move |line, emit: &mut dyn FnMut(U)| prev(line, &mut |t| emit(f(t)))),
        }
    }

    /// Keeps the records `f` accepts.
    pub fn filter(self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> DataStream<T> {
        let prev = self.chain;
        DataStream {
            settings: self.settings,
            source: self.source,
            chain: Arc::new(move |line, emit: &mut dyn FnMut(T)| {
                prev(line, &mut |t| {
                    if f(&t) {
                        emit(t)
                    }
                })
            }),
        }
    }

    /// Any number of outputs per input.
    pub fn flat_map<U: 'static, I: IntoIterator<Item = U>>(
        self,
        f: impl Fn(T) -> I + Send + Sync + 'static,
    ) -> DataStream<U> {
        let prev = self.chain;
        DataStream {
            settings: self.settings,
            source: self.source,
            chain: Arc::new(move |line, emit: &mut dyn FnMut(U)| {
                prev(line, &mut |t| {
                    for u in f(t) {
                        emit(u)
                    }
                })
            }),
        }
    }

    /// Partitions by key: records of one key go to the subtask owning the
    /// key's key group.
    pub fn key_by<K>(self, key_of: impl Fn(&T) -> K + Send + Sync + 'static) -> KeyedStream<K, T>
    where
        K: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        KeyedStream {
            stream: self,
            key_of: Arc::new(key_of),
            watermarks: None,
        }
    }

    /// Gives records event time (Flink's `assignTimestampsAndWatermarks`):
    /// each source subtask reads the timestamps of the records it makes and
    /// sends watermarks by `strategy`. The stream is then keyed; event-time
    /// timers and windows need it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamstate_runtime::event_time::WatermarkStrategy;
    /// use streamstate_runtime::StreamExecutionEnvironment;
    /// let env = StreamExecutionEnvironment::new();
    /// let keyed = env
    ///     .from_lines(vec!["1000 a".into()], 1)
    ///     .map(|line: String| {
    ///         let (at, word) = line.split_once(' ').unwrap();
    ///         (word.to_owned(), at.parse::<i64>().unwrap())
    ///     })
    ///     .assign_timestamps_and_watermarks(WatermarkStrategy::for_bounded_out_of_orderness(
    ///         Duration::from_secs(1),
    ///         |(_, at): &(String, i64)| *at,
    ///     ))
    ///     .key_by(|(word, _)| word.clone());
    /// # drop(keyed);
    /// ```
    pub fn assign_timestamps_and_watermarks(self, strategy: WatermarkStrategy<T>) -> TimestampedStream<T> {
        TimestampedStream { stream: self, strategy }
    }
}

/// A stream whose records have event time and whose sources send
/// watermarks; key it to use timers and windows.
pub struct TimestampedStream<T> {
    stream: DataStream<T>,
    strategy: WatermarkStrategy<T>,
}

impl<T: 'static> TimestampedStream<T> {
    /// As [`DataStream::key_by`], keeping event time.
    pub fn key_by<K>(self, key_of: impl Fn(&T) -> K + Send + Sync + 'static) -> KeyedStream<K, T>
    where
        K: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        KeyedStream {
            stream: self.stream,
            key_of: Arc::new(key_of),
            watermarks: Some(self.strategy),
        }
    }
}

/// A stream partitioned by key.
pub struct KeyedStream<K, T> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key_of: KeyOf<K, T>,
    /// Event time, when assigned before keying.
    pub(crate) watermarks: Option<WatermarkStrategy<T>>,
}

impl<K, T> KeyedStream<K, T>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Send + 'static,
{
    /// Runs a keyed process function with access to keyed state.
    pub fn process<O: Send + 'static>(self, factory: ProcessFactory<K, T, O>) -> ProcessedStream<K, T, O> {
        let timestamp_of = self.watermarks.as_ref().map(|w| Arc::clone(w.timestamp_of()));
        let factory: OperatorFactory<K, T, O, ()> =
            Arc::new(move || Box::new(FunctionOperator::new(factory(), timestamp_of.clone())));
        ProcessedStream {
            keyed: self,
            factory,
            local_sum: None,
        }
    }

    /// The running sum of `value_of(record)` per key, emitted as `(key, sum)`
    /// (Flink's `sum`): [`KeyedStream::aggregate`] over `i64`.
    pub fn sum(self, value_of: impl Fn(&T) -> i64 + Send + Sync + 'static) -> ProcessedStream<K, T, (K, i64), i64> {
        self.aggregate(value_of)
    }

    /// The running fold of `value_of(record)` per key with
    /// [`Accumulator::merge`], emitted as `(key, accumulator)`; its state
    /// is a `ValueState<A>` named `sum`. Nobody reading the per-record
    /// output, records are folded before they reach state, on the keyed
    /// thread and (with [`JobSettings::local_aggregation`]) on the source
    /// threads too ([`crate::aggregate`]).
    ///
    /// ```
    /// use streamstate_runtime::StreamExecutionEnvironment;
    /// let env = StreamExecutionEnvironment::new();
    /// let lines = env.from_lines(vec!["a 3".into(), "b 1".into(), "a 4".into()], 1);
    /// let mut longest = lines
    ///     .map(|line: String| {
    ///         let (key, n) = line.split_once(' ').unwrap();
    ///         (key.to_owned(), n.parse::<u64>().unwrap())
    ///     })
    ///     .key_by(|(key, _)| key.clone())
    ///     .aggregate(|(_, n)| *n)
    ///     .discard()
    ///     .execute()
    ///     .unwrap()
    ///     .wait()
    ///     .unwrap()
    ///     .final_records;
    /// longest.sort();
    /// assert_eq!(longest, vec![("a".to_owned(), 7), ("b".to_owned(), 1)]);
    /// ```
    pub fn aggregate<A: Accumulator>(
        self,
        value_of: impl Fn(&T) -> A + Send + Sync + 'static,
    ) -> ProcessedStream<K, T, (K, A), A> {
        let value_of: ValueOf<T, A> = Arc::new(value_of);
        let mini_batch_keys = self.stream.settings.mini_batch_keys;
        let local_sum = self.stream.settings.local_aggregation.then(|| Arc::clone(&value_of));
        let factory: OperatorFactory<K, T, (K, A), A> =
            Arc::new(move || Box::new(PreAggregate::new(Arc::clone(&value_of)).with_mini_batch_keys(mini_batch_keys)));
        ProcessedStream {
            keyed: self,
            factory,
            local_sum,
        }
    }
}

/// The output of a keyed operator, ready for a sink. `A`: see [`Job`].
pub struct ProcessedStream<K, T, O, A: Accumulator = ()> {
    pub(crate) keyed: KeyedStream<K, T>,
    pub(crate) factory: OperatorFactory<K, T, O, A>,
    /// For a pre-aggregation: what a record adds to its key's accumulator,
    /// which source tasks may fold before the shuffle (see
    /// [`JobSettings::local_aggregation`]).
    pub(crate) local_sum: Option<ValueOf<T, A>>,
}

impl<K, T, O, A> ProcessedStream<K, T, O, A>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Send + 'static,
    O: Send + 'static,
    A: Accumulator,
{
    /// Sends the output to `sink` and returns the job, ready to execute.
    pub fn add_sink(self, sink: SinkFactory<O>) -> Job<K, T, O, A> {
        let KeyedStream {
            stream,
            key_of,
            watermarks,
        } = self.keyed;
        Job {
            settings: stream.settings,
            source: stream.source,
            chain: stream.chain,
            key_of,
            watermarks,
            factory: self.factory,
            local_sum: self.local_sum,
            sink,
            final_sink: None,
        }
    }

    /// Flink's `print()`.
    pub fn print(self) -> Job<K, T, O, A>
    where
        O: FlinkDisplay,
    {
        self.add_sink(Arc::new(|subtask, parallelism| {
            Ok(Box::new(PrintSink::new(subtask, parallelism)) as Box<_>)
        }))
    }

    /// Writes records to `dir/part-<subtask>`.
    pub fn write_to_files(self, dir: impl Into<PathBuf>) -> Job<K, T, O, A>
    where
        O: FlinkDisplay,
    {
        let dir = dir.into();
        self.add_sink(Arc::new(move |subtask, _| {
            Ok(Box::new(FileSink::open(&dir, subtask)?) as Box<_>)
        }))
    }

    /// Discards records.
    pub fn discard(self) -> Job<K, T, O, A> {
        self.add_sink(Arc::new(|_, _| Ok(Box::new(crate::sink::DiscardSink) as Box<_>)))
    }
}

impl<K, T, O, A> Job<K, T, O, A>
where
    K: Serialize + DeserializeOwned + Clone + Send + 'static,
    T: Send + 'static,
    O: Send + 'static,
    A: Accumulator,
{
    /// Sends what the keyed operator's `finish` emits at the end of a
    /// bounded input (a word count's final counts) to `sink`, one per keyed
    /// subtask, as it is produced, instead of collecting it in
    /// [`crate::JobResult::final_records`]: a large state's final results are
    /// never all in memory at once. Each subtask emits its keys a key group
    /// at a time; nothing is sorted.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamstate_runtime::word_count::{word_count, Word};
    /// use streamstate_runtime::{sink::Sink, StreamExecutionEnvironment};
    ///
    /// struct Collect(Arc<Mutex<Vec<(Word, i64)>>>);
    /// impl Sink<(Word, i64)> for Collect {
    ///     fn write(&mut self, record: &(Word, i64)) -> streamstate_api::Result<()> {
    ///         self.0.lock().unwrap().push(record.clone());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let finals = Arc::new(Mutex::new(Vec::new()));
    /// let into = Arc::clone(&finals);
    /// let env = StreamExecutionEnvironment::new();
    /// let lines = env.from_lines(vec!["to be or".into(), "not to be".into()], 1);
    /// let result = word_count(lines)
    ///     .discard()
    ///     .with_final_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
    ///     .execute()
    ///     .unwrap()
    ///     .wait()
    ///     .unwrap();
    /// assert!(result.final_records.is_empty());
    /// let mut finals = finals.lock().unwrap().clone();
    /// finals.sort();
    /// assert_eq!(finals[0], ("BE".into(), 2));
    /// ```
    pub fn with_final_sink(mut self, sink: SinkFactory<O>) -> Self {
        self.final_sink = Some(sink);
        self
    }

    /// Restores (if asked), starts every thread and returns the handle.
    ///
    /// # Errors
    /// Configuration errors, or restore errors naming the checkpoint.
    pub fn execute(self) -> streamstate_api::Result<JobHandle<O>> {
        crate::execution::local::execute(self)
    }

    /// Runs this process's part of the job on the cluster executor
    /// (timely-dataflow workers; see [`crate::execution::cluster`]) and
    /// waits for a bounded input to end. Every process runs the same job
    /// with its own [`crate::execution::ClusterConfig::process`]; the
    /// parallelism is processes times workers. Returns this process's
    /// final records.
    ///
    /// ```
    /// use streamstate_runtime::{execution::ClusterConfig, word_count::word_count, StreamExecutionEnvironment};
    /// let env = StreamExecutionEnvironment::new();
    /// let lines = env.from_lines(vec!["to be or".into(), "not to be".into()], 1);
    /// let cluster = ClusterConfig::single_process(2);
    /// let mut counts = word_count(lines).discard().execute_cluster(&cluster).unwrap().final_records;
    /// counts.sort();
    /// assert_eq!(counts[0], ("BE".into(), 2));
    /// ```
    ///
    /// # Errors
    /// Configuration errors; a restore's errors naming the checkpoint; a
    /// task's error; too many failed checkpoints; a lost peer process,
    /// named.
    #[cfg(feature = "cluster")]
    pub fn execute_cluster(
        self,
        cluster: &crate::execution::ClusterConfig,
    ) -> streamstate_api::Result<crate::handle::JobResult<O>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static,
        T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static,
    {
        crate::execution::cluster::execute(self, cluster, &crate::execution::ClusterSignals::default())
    }

    /// As [`Self::execute_cluster`], stopping with a savepoint when
    /// `signals` asks (in any process: the request travels to worker 0,
    /// whose savepoint, once complete, stops every process; the result's
    /// `stopped_with_savepoint` names it).
    ///
    /// ```
    /// use streamstate_runtime::execution::{ClusterConfig, ClusterSignals};
    /// use streamstate_runtime::{word_count::word_count, StreamExecutionEnvironment};
    /// let env = StreamExecutionEnvironment::new();
    /// let lines = env.from_lines(vec!["a b".into()], 1);
    /// let signals = ClusterSignals::default();
    /// // e.g. from a SIGTERM handler:
    /// // signals.stop_with_savepoint.store(true, std::sync::atomic::Ordering::SeqCst);
    /// let result = word_count(lines).discard().execute_cluster_with(&ClusterConfig::single_process(1), &signals).unwrap();
    /// assert_eq!(result.stopped_with_savepoint, None);
    /// ```
    ///
    /// # Errors
    /// As [`Self::execute_cluster`].
    #[cfg(feature = "cluster")]
    pub fn execute_cluster_with(
        self,
        cluster: &crate::execution::ClusterConfig,
        signals: &crate::execution::ClusterSignals,
    ) -> streamstate_api::Result<crate::handle::JobResult<O>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static,
        T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static,
    {
        crate::execution::cluster::execute(self, cluster, signals)
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

opaque_debug!(DataStream<T>);
opaque_debug!(KeyedStream<K, T>);
opaque_debug!(TimestampedStream<T>);
impl<K, T, O, A: Accumulator> std::fmt::Debug for ProcessedStream<K, T, O, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessedStream").finish_non_exhaustive()
    }
}
