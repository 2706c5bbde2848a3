//! Flink's word-count example as a pipeline of this runtime: the job the
//! CLI runs, and the reference job of the runtime's tests and benchmarks.

use crate::stream::{DataStream, ProcessedStream};

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
        .flat_map(|mut line: String| {
            // In place for ASCII (no copy of the line); `to_uppercase` else.
            if line.is_ascii() {
                line.make_ascii_uppercase();
            } else {
                line = line.to_uppercase();
            }
            Words { line, position: 0 }
        })
        .map(|word| (word, 1i64))
        .key_by(|(word, _)| word.clone())
        .sum(|(_, n)| *n)
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
