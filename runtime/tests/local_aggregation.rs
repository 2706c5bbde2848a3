//! Local-global aggregation: a `sum` behind discarding sinks is folded on
//! the source threads before the shuffle. The final sums must equal a plain
//! count whether it is on or off, its table must overflow and flush, and a
//! sink that reads every update must turn it off (each record still emits
//! its own running sum).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use streamstate_runtime::execution::LOCAL_SUM_KEYS;
use streamstate_runtime::sink::Sink;
use streamstate_runtime::word_count::{word_count, Word};
use streamstate_runtime::StreamExecutionEnvironment;

/// Lines over `distinct` words, skewed (word `i` of each line is drawn from
/// a range that shrinks along the line), and the count of each word.
fn lines(distinct: u64, lines: usize) -> (Vec<String>, BTreeMap<String, i64>) {
    let mut expected = BTreeMap::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let text = (0..lines)
        .map(|_| {
            (1..=16u64)
                .map(|position| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let word = format!("k{}", x % (distinct / position).max(1));
                    *expected.entry(word.to_uppercase()).or_insert(0) += 1;
                    word
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (text, expected)
}

struct Run {
    counts: BTreeMap<String, i64>,
    records: u64,
    partial_sums: u64,
}

fn run_discarding(lines: &[String], local_aggregation: bool) -> Run {
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    env.settings_mut().local_aggregation = local_aggregation;
    let job = word_count(env.from_lines(lines.to_vec(), 2))
        .discard()
        .execute()
        .unwrap();
    let metrics = Arc::clone(job.metrics());
    let result = job.wait().unwrap();
    Run {
        counts: result
            .final_records
            .into_iter()
            .map(|(word, n)| (word.to_string(), n))
            .collect(),
        records: metrics.records.load(Ordering::Relaxed),
        partial_sums: metrics.partial_sums.load(Ordering::Relaxed),
    }
}

#[test]
fn sums_are_the_same_with_and_without_local_aggregation() {
    let (text, expected) = lines(3 * LOCAL_SUM_KEYS as u64, 4_000);
    let words: i64 = expected.values().sum();
    assert!(
        expected.len() > LOCAL_SUM_KEYS,
        "the local table must overflow: {} keys",
        expected.len()
    );

    let folded = run_discarding(&text, true);
    assert_eq!(folded.counts, expected, "with local aggregation");
    assert_eq!(folded.records, words as u64, "every record counted once");
    assert!(
        folded.partial_sums > 0 && folded.partial_sums < words as u64,
        "{} partial sums for {words} words",
        folded.partial_sums
    );

    let plain = run_discarding(&text, false);
    assert_eq!(plain.counts, expected, "without local aggregation");
    assert_eq!(plain.records, words as u64);
    assert_eq!(plain.partial_sums, 0);
}

/// Keeps every record it is given.
struct Collect(Arc<Mutex<Vec<(Word, i64)>>>);

impl Sink<(Word, i64)> for Collect {
    fn write(&mut self, record: &(Word, i64)) -> streamstate_api::Result<()> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
}

#[test]
fn a_sink_that_reads_every_update_gets_one_per_record() {
    let (text, expected) = lines(500, 300);
    let words: i64 = expected.values().sum();
    let written = Arc::new(Mutex::new(Vec::new()));
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let sink_records = Arc::clone(&written);
    let job = word_count(env.from_lines(text, 2))
        .add_sink(Arc::new(move |_, _| {
            Ok(Box::new(Collect(Arc::clone(&sink_records))) as Box<_>)
        }))
        .execute()
        .unwrap();
    let metrics = Arc::clone(job.metrics());
    job.wait().unwrap();
    assert_eq!(metrics.partial_sums.load(Ordering::Relaxed), 0, "nothing folded");
    let written = written.lock().unwrap();
    assert_eq!(written.len() as i64, words, "one update per record");
    // Each word's updates run 1, 2, …, its count: no update skipped.
    let mut last = BTreeMap::<String, i64>::new();
    for (word, sum) in written.iter() {
        let previous = last.entry(word.to_string()).or_insert(0);
        assert_eq!(*sum, *previous + 1, "updates of {word}");
        *previous = *sum;
    }
    assert_eq!(last, expected);
}
