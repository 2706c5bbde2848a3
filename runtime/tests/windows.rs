//! Event time, timers and windows on the local executor: window counts
//! against a plain count by event time computed here, late records, and
//! timers of a keyed process function.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use streamstate_api::Result;
use streamstate_runtime::backends::{state_backend, StateBackendKind};
use streamstate_runtime::event_time::WatermarkStrategy;
use streamstate_runtime::function::{Context, KeyedProcessFunction};
use streamstate_runtime::window::{WindowAssigner, WindowResult};
use streamstate_runtime::word_count::{window_word_count, Word, WordWindows};
use streamstate_runtime::StreamExecutionEnvironment;

use common::{
    count_by_session, count_by_window, timed_words, timestamped_lines, Collect, Collected, TimedWord, WindowCounts,
};

fn run_windows(
    lines: Vec<String>,
    windows: WordWindows,
    backend: StateBackendKind,
    parallelism: u32,
) -> BTreeMap<(i64, i64, String), i64> {
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism)
        .set_state_backend(state_backend(backend).unwrap())
        .enable_checkpointing(Duration::from_millis(20));
    let results: Collected<WindowResult<Word, i64>> = Arc::default();
    let into = Arc::clone(&results);
    window_word_count(env.from_lines(lines, 2), windows)
        .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
        .execute()
        .unwrap()
        .wait()
        .unwrap();
    let mut got = BTreeMap::new();
    for r in results.lock().unwrap().iter() {
        let previous = got.insert((r.window.start, r.window.end, r.key.to_string()), r.value);
        assert_eq!(previous, None, "window {:?} of {} emitted twice", r.window, r.key);
    }
    got
}

#[test]
fn event_time_tumbling_and_sliding_windows_count_like_a_plain_count_by_event_time() {
    let lines = timestamped_lines(6_000, 1_733_000_000_000, 300);
    for backend in streamstate_runtime::backends::compiled_backends() {
        for parallelism in [1, 2] {
            for (size, slide) in [(1_000, 1_000), (2_000, 500)] {
                let windows = WordWindows {
                    assigner: if size == slide {
                        WindowAssigner::tumbling(Duration::from_millis(size as u64))
                    } else {
                        WindowAssigner::sliding(Duration::from_millis(size as u64), Duration::from_millis(slide as u64))
                    },
                    event_time: Some(Duration::from_millis(300)),
                    allowed_lateness: Duration::ZERO,
                };
                let got = run_windows(lines.clone(), windows, backend, parallelism);
                let expected = count_by_window(&lines, size, slide);
                assert_eq!(
                    got.len(),
                    expected.len(),
                    "{backend:?} p{parallelism} {size}/{slide}: windows emitted"
                );
                assert!(
                    got == expected,
                    "{backend:?} p{parallelism} {size}/{slide}: counts differ"
                );
            }
        }
    }
}

#[test]
fn a_record_behind_the_watermark_is_dropped_and_counted_late() {
    // One source, a watermark after every line: "10000" moves it to 9999,
    // so the word at 1000 (window [0, 5000)) comes late; 12000 is on time.
    let mut env = StreamExecutionEnvironment::new();
    env.enable_checkpointing(Duration::from_secs(60));
    let results: Collected<WindowResult<String, TimedWord>> = Arc::default();
    let into = Arc::clone(&results);
    let handle = timed_words(&env, &["10000 a", "1000 a", "12000 a"])
        .window(WindowAssigner::tumbling(Duration::from_secs(5)))
        .reduce(|a, b| (a.0.clone(), a.1, a.2 + b.2))
        .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
        .execute()
        .unwrap();
    let metrics = Arc::clone(handle.metrics());
    handle.wait().unwrap();
    let mut got: Vec<(i64, i64)> = results
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.window.start, r.value.2))
        .collect();
    got.sort();
    assert_eq!(got, vec![(10_000, 2)], "only the window of 10000 and 12000");
    assert_eq!(metrics.late_records.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// Emits `(key, timer time)` from event-time timers set 100 ms after each
/// record, and deletes the timer of a record marked "cancel".
#[derive(Default)]
struct Reminders;

impl KeyedProcessFunction<String, (String, i64), (String, i64)> for Reminders {
    fn open(&mut self, _backend: &mut dyn streamstate_api::KeyedStateBackend) -> Result<()> {
        Ok(())
    }

    fn process(
        &mut self,
        key: &String,
        (_, at): (String, i64),
        ctx: &mut Context<'_>,
        _out: &mut dyn FnMut((String, i64)),
    ) -> Result<()> {
        assert_eq!(ctx.timestamp(), Some(at));
        // The same timer twice is one timer.
        ctx.register_event_time_timer(at + 100)?;
        ctx.register_event_time_timer(at + 100)?;
        if key == "cancel" {
            ctx.delete_event_time_timer(at + 100)?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        key: &String,
        ctx: &mut Context<'_>,
        out: &mut dyn FnMut((String, i64)),
    ) -> Result<()> {
        assert!(
            ctx.current_watermark() >= timestamp,
            "an event-time timer fires once the watermark passed it"
        );
        out((key.clone(), timestamp));
        Ok(())
    }
}

#[test]
fn event_time_timers_fire_once_each_with_their_key() {
    let key = |i: i64| {
        if i % 9 == 0 {
            "cancel".to_owned()
        } else {
            format!("k{}", i % 7)
        }
    };
    let lines: Vec<String> = (0..300).map(|i| format!("{} {}", i * 10, key(i))).collect();
    let mut expected: Vec<(String, i64)> = (0..300)
        .filter(|i| i % 9 != 0)
        .map(|i| (key(i), i * 10 + 100))
        .collect();
    expected.sort();
    for parallelism in [1, 3] {
        let mut env = StreamExecutionEnvironment::new();
        env.set_parallelism(parallelism);
        let results: Collected<(String, i64)> = Arc::default();
        let into = Arc::clone(&results);
        env.from_lines(lines.clone(), 2)
            .map(|line: String| {
                let (at, key) = line.split_once(' ').unwrap();
                (key.to_owned(), at.parse::<i64>().unwrap())
            })
            .assign_timestamps_and_watermarks(WatermarkStrategy::for_bounded_out_of_orderness(
                Duration::from_millis(50),
                |(_, at): &(String, i64)| *at,
            ))
            .key_by(|(key, _)| key.clone())
            .process(Arc::new(|| Box::new(Reminders) as Box<_>))
            .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
            .execute()
            .unwrap()
            .wait()
            .unwrap();
        let mut got = results.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, expected, "parallelism {parallelism}");
    }
}

#[test]
fn event_time_session_windows_merge_like_a_plain_split_at_the_gaps() {
    // Sparse words (one every ~40 ms per word on average) so that sessions
    // of a 60 ms gap both merge and end.
    let lines: Vec<String> = timestamped_lines(4_000, 1_733_000_000_000, 100)
        .into_iter()
        .map(|line| line.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let expected = count_by_session(&lines, 60);
    assert!(
        expected.len() > 100 && expected.values().any(|c| *c > 1),
        "the input makes many sessions, some merged"
    );
    for backend in streamstate_runtime::backends::compiled_backends() {
        for parallelism in [1, 2] {
            let windows = WordWindows {
                assigner: WindowAssigner::session(Duration::from_millis(60)),
                event_time: Some(Duration::from_millis(100)),
                allowed_lateness: Duration::ZERO,
            };
            let got = run_windows(lines.clone(), windows, backend, parallelism);
            assert_eq!(got.len(), expected.len(), "{backend:?} p{parallelism}: sessions");
            assert!(got == expected, "{backend:?} p{parallelism}: session counts differ");
        }
    }
}

#[test]
fn window_state_is_cleared_as_windows_fire_so_checkpoints_stay_small() {
    // 20,000 lines over 140 s of event time in 100 ms windows: 1,400 windows of
    // up to 13 words. Kept forever, their contents and timers would make
    // checkpoints of well over 100 KiB; cleared when they fire, a
    // checkpoint holds the few windows still open.
    let lines = timestamped_lines(20_000, 1_733_000_000_000, 50);
    let mut env = StreamExecutionEnvironment::new();
    env.set_state_backend(state_backend(StateBackendKind::Fs).unwrap())
        .enable_checkpointing(Duration::from_millis(10));
    // A watermark after every line (the default sends one every 200 ms,
    // which a run this short would not reach before its end).
    let handle = env
        .from_lines(lines, 1)
        .flat_map(|line: String| {
            let mut parts = line.split_whitespace();
            let at: i64 = parts.next().unwrap().parse().unwrap();
            parts.map(|word| (word.to_owned(), at, 1i64)).collect::<Vec<_>>()
        })
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(
                Duration::from_millis(50),
                |(_, at, _): &(String, i64, i64)| *at,
            )
            .with_interval(Duration::ZERO),
        )
        .key_by(|(word, _, _)| word.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(100)))
        .reduce(|a, b| (a.0.clone(), a.1, a.2 + b.2))
        .discard()
        .execute()
        .unwrap();
    let result = handle.wait().unwrap();
    let sizes: Vec<u64> = result.completed.iter().map(|c| c.stats.full_bytes).collect();
    assert!(sizes.len() >= 2, "checkpoints were taken: {sizes:?}");
    eprintln!("checkpoint sizes: {sizes:?}");
    let largest = sizes.iter().copied().max().unwrap();
    assert!(
        largest < 64 << 10,
        "a checkpoint of {largest} bytes: window state was not cleared ({sizes:?})"
    );
}

/// A source subtask that reads its lines, then stays open with nothing to
/// read (as a quiet socket does) until `release`.
struct HeldOpen {
    lines: Vec<String>,
    next: usize,
    release: Arc<std::sync::atomic::AtomicBool>,
}

impl streamstate_runtime::source::LineSource for HeldOpen {
    fn poll_line(&mut self, line: &mut String) -> Result<streamstate_runtime::source::SourcePoll> {
        use streamstate_runtime::source::SourcePoll;
        if let Some(next) = self.lines.get(self.next) {
            self.next += 1;
            line.clone_from(next);
            return Ok(SourcePoll::Line { more_buffered: true });
        }
        if self.release.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(SourcePoll::End);
        }
        std::thread::sleep(Duration::from_millis(2));
        Ok(SourcePoll::Idle)
    }
    fn snapshot(&self, _: &mut streamstate_api::operator_state::OperatorStateStore) -> Result<()> {
        Ok(())
    }
    fn replayable(&self) -> bool {
        false
    }
}

/// Where a job runs.
#[derive(Debug, Clone, Copy)]
enum Executor {
    Local,
    /// The cluster executor, two timely workers in this process.
    #[cfg(feature = "cluster")]
    Cluster,
}

/// Two source subtasks, the second never reading a line: windows of the
/// first fire while both are open only with `idleness`. Returns the
/// windows emitted while the sources were open (waiting up to `wait` for
/// `want` of them), then all of them.
fn windows_with_a_quiet_source(
    executor: Executor,
    lines: &[String],
    idleness: Option<Duration>,
    want: usize,
    wait: Duration,
) -> (WindowCounts, WindowCounts) {
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (held, released) = (lines.to_vec(), Arc::clone(&release));
    let mut strategy = WatermarkStrategy::for_bounded_out_of_orderness(
        Duration::from_millis(300),
        |(_, at, _): &(String, i64, i64)| *at,
    )
    .with_interval(Duration::from_millis(5));
    if let Some(timeout) = idleness {
        strategy = strategy.with_idleness(timeout);
    }
    let results: Collected<WindowResult<String, (String, i64, i64)>> = Arc::default();
    let into = Arc::clone(&results);
    let job = StreamExecutionEnvironment::new()
        .add_source(
            2,
            Arc::new(move |subtask, _, _| {
                Ok(Box::new(HeldOpen {
                    lines: if subtask == 0 { held.clone() } else { Vec::new() },
                    next: 0,
                    release: Arc::clone(&released),
                }) as Box<_>)
            }),
        )
        .flat_map(|line: String| {
            let mut parts = line.split_whitespace();
            let at: i64 = parts.next().unwrap().parse().unwrap();
            parts.map(|w| (w.to_uppercase(), at, 1i64)).collect::<Vec<_>>()
        })
        .assign_timestamps_and_watermarks(strategy)
        .key_by(|(word, _, _)| word.clone())
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .reduce(|a, b| (a.0.clone(), a.1, a.2 + b.2))
        .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)));
    let counts = |results: &[WindowResult<String, (String, i64, i64)>]| -> WindowCounts {
        let mut got = BTreeMap::new();
        for r in results {
            let previous = got.insert((r.window.start, r.window.end, r.key.clone()), r.value.2);
            assert_eq!(previous, None, "window {:?} of {} emitted twice", r.window, r.key);
        }
        got
    };
    // Watches the sink while the job runs, then lets the sources end.
    let seen = Arc::clone(&results);
    let watcher = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + wait;
        while seen.lock().unwrap().len() < want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let while_open = seen.lock().unwrap().clone();
        release.store(true, std::sync::atomic::Ordering::Release);
        while_open
    });
    match executor {
        Executor::Local => {
            job.execute().unwrap().wait().unwrap();
        }
        #[cfg(feature = "cluster")]
        Executor::Cluster => {
            job.execute_cluster(&streamstate_runtime::execution::ClusterConfig::single_process(2))
                .unwrap();
        }
    }
    let while_open = counts(&watcher.join().unwrap());
    let all = counts(&results.lock().unwrap());
    (while_open, all)
}

fn idle_source_case(executor: Executor) {
    let lines = timestamped_lines(2_000, 1_733_000_000_000, 300);
    let expected = count_by_window(&lines, 1_000, 1_000);
    let last_timestamp = lines
        .iter()
        .map(|l| l.split_once(' ').unwrap().0.parse::<i64>().unwrap())
        .max()
        .unwrap();
    let watermark = last_timestamp - 300 - 1;
    let passed: BTreeMap<_, _> = expected
        .iter()
        .filter(|((_, end, _), _)| end - 1 <= watermark)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert!(!passed.is_empty());
    let (while_open, all) = windows_with_a_quiet_source(
        executor,
        &lines,
        Some(Duration::from_millis(50)),
        passed.len(),
        Duration::from_secs(30),
    );
    assert_eq!(all, expected, "{executor:?}: every window, once, with the plain count");
    assert_eq!(
        while_open, passed,
        "{executor:?}: with the quiet source idle, every window the busy source's watermark passed fired while both were open"
    );

    // Without idleness the quiet source holds every window back.
    let (while_open, all) = windows_with_a_quiet_source(executor, &lines, None, 1, Duration::from_millis(500));
    assert!(
        while_open.is_empty(),
        "{executor:?}: {} windows fired",
        while_open.len()
    );
    assert_eq!(all, expected);
}

#[test]
fn an_idle_source_does_not_hold_event_time_back_with_idleness() {
    idle_source_case(Executor::Local);
}

#[cfg(feature = "cluster")]
#[test]
fn an_idle_source_does_not_hold_event_time_back_on_the_cluster_executor() {
    idle_source_case(Executor::Cluster);
}
