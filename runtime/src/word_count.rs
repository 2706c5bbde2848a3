//! Flink's word-count example as a pipeline of this runtime: the job the
//! CLI runs, and the reference job of the runtime's tests and benchmarks.

use std::time::Duration;

use streamstate_api::AggregateFunction;

use crate::event_time::WatermarkStrategy;
use crate::stream::{DataStream, ProcessedStream};
use crate::window::{WindowAssigner, WindowResult};

/// A word of [`word_count`]. Words up to 24 bytes are stored inline, so
/// splitting a line allocates nothing per word. A `Word` serializes as a
/// string: its key bytes in state and checkpoints are those of a `String`.
pub type Word = compact_str::CompactString;

/// Flink's word-count example pipeline over `lines`: upper-case, split on
/// whitespace (empty words dropped), count per word. Emits `(WORD, count)`
/// on every update; at the end of a bounded input `finish` emits every
/// word's final count.
///
/// ```
/// use streamstate_runtime::{word_count::word_count, StreamExecutionEnvironment};
/// let env = StreamExecutionEnvironment::new();
/// let lines = env.from_lines(vec!["to be or".into(), "not To BE".into()], 1);
/// let mut counts = word_count(lines).discard().execute().unwrap().wait().unwrap().final_records;
/// counts.sort();
/// assert_eq!(counts[0], ("BE".into(), 2));
/// ```
pub fn word_count(lines: DataStream<String>) -> ProcessedStream<Word, (Word, i64), (Word, i64), i64> {
    lines
        .flat_map(upper_words)
        .map(|word| (word, 1i64))
        .key_by(|(word, _)| word.clone())
        .sum(|(_, n)| *n)
}

/// The windows of a [`window_word_count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WordWindows {
    /// Which windows a word belongs to.
    pub assigner: WindowAssigner,
    /// Event time, with this much out-of-orderness allowed (each line then
    /// starts with its epoch-millisecond timestamp); `None`: processing
    /// time.
    pub event_time: Option<Duration>,
    /// How long after its end a window still counts late words (event
    /// time).
    pub allowed_lateness: Duration,
}

/// Counts one per word: the window word count's aggregate.
#[derive(Debug, Clone, Copy)]
struct CountWords;

impl AggregateFunction for CountWords {
    type In = (Word, i64);
    type Acc = i64;
    type Out = i64;
    fn create_accumulator(&self) -> i64 {
        0
    }
    fn add(&self, _: &(Word, i64), count: i64) -> i64 {
        count + 1
    }
    fn get_result(&self, count: &i64) -> i64 {
        *count
    }
    fn merge(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

/// Flink's `SocketWindowWordCount` over `lines`: words upper-cased and
/// split as in [`word_count`], counted per word and window, each window's
/// count emitted once when the window ends (and again for each late word
/// within the allowed lateness). In event time each line starts with its
/// timestamp in epoch milliseconds (as `gen_corpus.py --timestamps`
/// writes); a line without one is skipped with a warning.
///
/// ```
/// use std::time::Duration;
/// use streamstate_runtime::window::WindowAssigner;
/// use streamstate_runtime::word_count::{window_word_count, WordWindows};
/// use streamstate_runtime::StreamExecutionEnvironment;
/// let env = StreamExecutionEnvironment::new();
/// let lines = env.from_lines(vec!["1000 to be".into(), "7000 be".into(), "2000 or not".into()], 1);
/// let windows = WordWindows {
///     assigner: WindowAssigner::tumbling(Duration::from_secs(5)),
///     event_time: Some(Duration::from_secs(10)),
///     allowed_lateness: Duration::ZERO,
/// };
/// let job = window_word_count(lines, windows).discard();
/// assert_eq!(job.execute().unwrap().wait().unwrap().records, 5);
/// ```
pub fn window_word_count(
    lines: DataStream<String>,
    windows: WordWindows,
) -> ProcessedStream<Word, (Word, i64), WindowResult<Word, i64>> {
    let keyed = match windows.event_time {
        Some(out_of_orderness) => lines
            .flat_map(|line: String| {
                let Some((timestamp, rest)) = leading_timestamp(&line) else {
                    tracing::warn!(line = %line.chars().take(80).collect::<String>(), "line has no leading epoch-millisecond timestamp; skipped");
                    return Vec::new();
                };
                upper_words(rest.to_owned()).map(|word| (word, timestamp)).collect()
            })
            .assign_timestamps_and_watermarks(WatermarkStrategy::for_bounded_out_of_orderness(
                out_of_orderness,
                |(_, timestamp): &(Word, i64)| *timestamp,
            ))
            .key_by(|(word, _): &(Word, i64)| word.clone()),
        None => lines
            .flat_map(upper_words)
            .map(|word| (word, 0i64))
            .key_by(|(word, _): &(Word, i64)| word.clone()),
    };
    keyed
        .window(windows.assigner)
        .allowed_lateness(windows.allowed_lateness)
        .aggregate(CountWords)
}

/// The timestamp a line starts with and the rest of the line.
fn leading_timestamp(line: &str) -> Option<(i64, &str)> {
    let line = line.trim_start();
    let end = line.find(char::is_whitespace).unwrap_or(line.len());
    Some((line[..end].parse().ok()?, &line[end..]))
}

/// A line's words, upper-cased (in place for ASCII).
fn upper_words(mut line: String) -> Words {
    if line.is_ascii() {
        line.make_ascii_uppercase();
    } else {
        line = line.to_uppercase();
    }
    Words { line, position: 0 }
}

/// The words of an owned line, split on Unicode whitespace like
/// `str::split_whitespace`, without collecting them first.
struct Words {
    line: String,
    /// Byte offset of the rest of the line.
    position: usize,
}

impl Iterator for Words {
    type Item = Word;

    fn next(&mut self) -> Option<Word> {
        let rest = &self.line[self.position..];
        let start = rest.find(|c: char| !c.is_whitespace())?;
        let word = &rest[start..];
        let len = word.find(char::is_whitespace).unwrap_or(word.len());
        self.position += start + len;
        Some(Word::from(&word[..len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_timestamp_is_read_and_a_missing_one_is_none() {
        assert_eq!(
            leading_timestamp("1733000000000 to be"),
            Some((1_733_000_000_000, " to be"))
        );
        assert_eq!(leading_timestamp("  -5\tx"), Some((-5, "\tx")));
        assert_eq!(leading_timestamp("42"), Some((42, "")));
        assert_eq!(leading_timestamp("to be"), None);
        assert_eq!(leading_timestamp(""), None);
    }

    #[test]
    fn words_split_like_split_whitespace() {
        for line in ["", "   ", "a", " to  be\tor\u{3000}not ", "ÄÖ ü\u{a0}ß\n", "x\r\ny"] {
            let words: Vec<Word> = Words {
                line: line.to_string(),
                position: 0,
            }
            .collect();
            let expected: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words, expected, "line {line:?}");
        }
    }
}
