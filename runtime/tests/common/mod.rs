//! Helpers the window tests share: timestamped input and the plain
//! counts by window and by session they are checked against, and a sink
//! that collects.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use streamstate_api::Result;
use streamstate_runtime::event_time::WatermarkStrategy;
use streamstate_runtime::sink::Sink;
use streamstate_runtime::{KeyedStream, StreamExecutionEnvironment};

/// Counts by (window start, window end, word).
pub type WindowCounts = BTreeMap<(i64, i64, String), i64>;

/// Lines "<epoch ms> <words>", one every 7 ms from `start`, each up to
/// `disorder` ms earlier than its place (a small xorshift, no crate).
pub fn timestamped_lines(n: u64, start: i64, disorder: i64) -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let jitter = (x % (disorder as u64 + 1)) as i64;
            let at = start + i as i64 * 7 - jitter;
            format!("{at} w{} w{} x", x % 13, (x >> 8) % 5)
        })
        .collect()
}

/// The plain count by event time: for each line's timestamp, every window
/// of `size` starting every `slide` that holds it (`start <= t < start +
/// size`, starts multiples of `slide`), one per word.
pub fn count_by_window(lines: &[String], size: i64, slide: i64) -> WindowCounts {
    let mut counts = BTreeMap::new();
    for line in lines {
        let mut parts = line.split_whitespace();
        let at: i64 = parts.next().unwrap().parse().unwrap();
        let words: Vec<&str> = parts.collect();
        let mut start = at.div_euclid(slide) * slide;
        while start + size > at {
            for word in &words {
                *counts.entry((start, start + size, word.to_uppercase())).or_insert(0) += 1;
            }
            start -= slide;
        }
    }
    counts
}

/// What a [`Collect`] sink gathered, from every subtask.
pub type Collected<O> = Arc<Mutex<Vec<O>>>;

pub struct Collect<O>(pub Collected<O>);

impl<O: Clone + Send> Sink<O> for Collect<O> {
    fn write(&mut self, record: &O) -> Result<()> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
}

/// Sessions per word computed plainly: a word's sorted timestamps split
/// where the next comes more than `gap` after the one before; a session is
/// `[first, last + gap)` and counts its words.
pub fn count_by_session(lines: &[String], gap: i64) -> WindowCounts {
    let mut times: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in lines {
        let mut parts = line.split_whitespace();
        let at: i64 = parts.next().unwrap().parse().unwrap();
        for word in parts {
            times.entry(word.to_uppercase()).or_default().push(at);
        }
    }
    let mut sessions = BTreeMap::new();
    for (word, mut at) in times {
        at.sort_unstable();
        let (mut first, mut last, mut count) = (at[0], at[0], 0);
        for t in at {
            if t > last + gap {
                sessions.insert((first, last + gap, word.clone()), count);
                (first, count) = (t, 0);
            }
            last = t;
            count += 1;
        }
        sessions.insert((first, last + gap, word), count);
    }
    sessions
}

/// A word with its event time and a count of one.
pub type TimedWord = (String, i64, i64);

/// `"<epoch ms> <word>"` lines from one source as [`TimedWord`]s keyed by
/// word, with a watermark (the newest time, minus one) after every line:
/// each line's lateness is exact.
pub fn timed_words(env: &StreamExecutionEnvironment, lines: &[&str]) -> KeyedStream<String, TimedWord> {
    env.from_lines(lines.iter().map(|l| (*l).to_owned()).collect(), 1)
        .map(|line: String| {
            let (at, word) = line.split_once(' ').unwrap();
            (word.to_owned(), at.parse::<i64>().unwrap(), 1i64)
        })
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps(|(_, at, _): &TimedWord| *at).with_interval(Duration::ZERO),
        )
        .key_by(|(word, _, _)| word.clone())
}
