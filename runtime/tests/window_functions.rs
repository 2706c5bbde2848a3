//! Window functions beyond `reduce`: a `ProcessWindowFunction` sees every
//! record of its window (tumbling and merged sessions, every backend),
//! `side_output_late_data` puts late records in the output, and allowed
//! lateness fires a window again; checked against plain counts computed
//! here.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use streamstate_runtime::backends::{state_backend, StateBackendKind};
use streamstate_runtime::event_time::WatermarkStrategy;
use streamstate_runtime::window::{WindowAssigner, WindowContext, WindowOrLate, WindowResult};
use streamstate_runtime::StreamExecutionEnvironment;

use common::{
    count_by_session, count_by_window, timed_words, timestamped_lines, Collect, Collected, TimedWord, WindowCounts,
};

/// `(word, event time)` per word of each line.
fn words(line: String) -> Vec<(String, i64)> {
    let mut parts = line.split_whitespace();
    let at: i64 = parts.next().unwrap().parse().unwrap();
    parts.map(|w| (w.to_uppercase(), at)).collect()
}

/// Runs `assigner`'s windows with a process function that emits, per
/// window and word, how many records it was handed, after checking each
/// lies inside the window.
fn process_counts(
    lines: &[String],
    assigner: WindowAssigner,
    backend: StateBackendKind,
    parallelism: u32,
) -> WindowCounts {
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(parallelism)
        .set_state_backend(state_backend(backend).unwrap())
        .enable_checkpointing(Duration::from_millis(20));
    let results: Collected<(i64, i64, String, i64)> = Arc::default();
    let into = Arc::clone(&results);
    env.from_lines(lines.to_vec(), 2)
        .flat_map(words)
        .assign_timestamps_and_watermarks(WatermarkStrategy::for_bounded_out_of_orderness(
            Duration::from_millis(300),
            |(_, at): &(String, i64)| *at,
        ))
        .key_by(|(word, _)| word.clone())
        .window(assigner)
        .process(
            |word: &String, ctx: &WindowContext, records: Vec<(String, i64)>, out: &mut dyn FnMut(_)| {
                let w = ctx.window;
                if let Some((_, at)) = records.iter().find(|(_, at)| *at < w.start || *at >= w.end) {
                    return Err(streamstate_api::Error::invalid_argument(format!(
                        "record at {at} handed to window {w:?}"
                    )));
                }
                out((w.start, w.end, word.clone(), records.len() as i64));
                Ok(())
            },
        )
        .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
        .execute()
        .unwrap()
        .wait()
        .unwrap();
    let mut got = BTreeMap::new();
    for (start, end, word, count) in results.lock().unwrap().iter() {
        let previous = got.insert((*start, *end, word.clone()), *count);
        assert_eq!(previous, None, "window [{start}, {end}) of {word} emitted twice");
    }
    got
}

#[test]
fn a_process_window_function_gets_every_record_of_its_window() {
    let lines = timestamped_lines(4_000, 1_733_000_000_000, 300);
    let expected = count_by_window(&lines, 1_000, 1_000);
    for backend in streamstate_runtime::backends::compiled_backends() {
        for parallelism in [1, 2] {
            let got = process_counts(
                &lines,
                WindowAssigner::tumbling(Duration::from_secs(1)),
                backend,
                parallelism,
            );
            assert!(got == expected, "{backend:?} p{parallelism}: record counts differ");
        }
    }
}

#[test]
fn a_process_window_function_gets_every_record_of_a_merged_session() {
    let lines: Vec<String> = timestamped_lines(3_000, 1_733_000_000_000, 100)
        .into_iter()
        .map(|line| line.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let expected = count_by_session(&lines, 60);
    assert!(expected.values().any(|c| *c > 1), "some sessions merge");
    for backend in streamstate_runtime::backends::compiled_backends() {
        let got = process_counts(&lines, WindowAssigner::session(Duration::from_millis(60)), backend, 2);
        assert_eq!(got.len(), expected.len(), "{backend:?}: sessions");
        assert!(got == expected, "{backend:?}: session record counts differ");
    }
}

#[test]
fn late_records_go_to_the_output_with_side_output_late_data() {
    // One source, a watermark after every line: "10000" moves it to 9999,
    // so "1000 a" and "2000 b" come late for [0, 5000); 12000 is on time.
    let results: Collected<WindowOrLate<WindowResult<String, TimedWord>, TimedWord>> = Arc::default();
    let into = Arc::clone(&results);
    let handle = timed_words(
        &StreamExecutionEnvironment::new(),
        &["10000 a", "1000 a", "12000 a", "2000 b"],
    )
    .window(WindowAssigner::tumbling(Duration::from_secs(5)))
    .side_output_late_data()
    .reduce(|a, b| (a.0.clone(), a.1, a.2 + b.2))
    .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
    .execute()
    .unwrap();
    let metrics = Arc::clone(handle.metrics());
    handle.wait().unwrap();
    let (mut windows, mut late) = (Vec::new(), Vec::new());
    for r in results.lock().unwrap().iter() {
        match r {
            WindowOrLate::Window(w) => windows.push((w.key.clone(), w.window.start, w.value.2)),
            WindowOrLate::Late(record) => late.push(record.clone()),
        }
    }
    late.sort();
    assert_eq!(windows, vec![("a".to_owned(), 10_000, 2)]);
    assert_eq!(late, vec![("a".to_owned(), 1000, 1), ("b".to_owned(), 2000, 1)]);
    assert_eq!(metrics.late_records.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn a_record_within_the_allowed_lateness_fires_its_window_again_and_a_later_one_is_dropped() {
    // One source, a watermark after every line. "6000" moves it to 5999:
    // [0, 5000) fires with 2. "3000" is late but within 2 s of lateness
    // (the window is purged at 6999): it fires again with 3. "9000" moves
    // the watermark to 8999, past the purge; "4000" is then dropped. The
    // end fires [5000, 10000) with 2.
    let lines = ["1000 a", "2000 a", "6000 a", "3000 a", "9000 a", "4000 a"];
    for backend in streamstate_runtime::backends::compiled_backends() {
        let results: Collected<WindowResult<String, TimedWord>> = Arc::default();
        let into = Arc::clone(&results);
        let mut env = StreamExecutionEnvironment::new();
        env.set_state_backend(state_backend(backend).unwrap());
        let handle = timed_words(&env, &lines)
            .window(WindowAssigner::tumbling(Duration::from_secs(5)))
            .allowed_lateness(Duration::from_secs(2))
            .reduce(|a, b| (a.0.clone(), a.1, a.2 + b.2))
            .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
            .execute()
            .unwrap();
        let metrics = Arc::clone(handle.metrics());
        handle.wait().unwrap();
        let fired: Vec<(i64, i64)> = results
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.window.start, r.value.2))
            .collect();
        assert_eq!(
            fired,
            vec![(0, 2), (0, 3), (5_000, 2)],
            "{backend:?}: in the order they fired"
        );
        assert_eq!(
            metrics.late_records.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "{backend:?}"
        );
    }
}
