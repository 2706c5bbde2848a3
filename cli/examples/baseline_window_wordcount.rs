//! The window benchmarks' baseline: the same per-window counts as
//! `streamstate wordcount --window SIZE --event-time`, in one single-thread
//! loop with no runtime, no state backend and no watermarks (it holds every
//! window's counts until the end). Each line starts with its epoch
//! millisecond timestamp (`gen_corpus.py --timestamps`); words are
//! upper-cased and split as the word count does; a tumbling window of
//! `SIZE_MS` holding time `t` starts at `t - t mod SIZE_MS`. It writes
//! `WINDOW_START<TAB>WINDOW_END<TAB>WORD<TAB>COUNT` lines, unsorted, as
//! `--output` does, so a benchmark run can check both agree.
//!
//! Usage: `baseline_window_wordcount INPUT OUTPUT SIZE_MS`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, size] = args.as_slice() else {
        eprintln!("usage: baseline_window_wordcount INPUT OUTPUT SIZE_MS");
        std::process::exit(2);
    };
    let size: i64 = size.parse().expect("SIZE_MS is a number of milliseconds");
    let file = std::fs::File::open(input).expect("cannot open the input");
    let mut reader = BufReader::with_capacity(1 << 16, file);
    // Per window start, the window's counts: looked up by `&str`, so a
    // word already counted in its window costs no allocation.
    type Counts = HashMap<Box<str>, u64, foldhash::fast::RandomState>;
    let mut windows: HashMap<i64, Counts, foldhash::fast::RandomState> = HashMap::default();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("the input is UTF-8 text") == 0 {
            break;
        }
        if line.is_ascii() {
            line.make_ascii_uppercase();
        } else {
            line = line.to_uppercase();
        }
        let mut words = line.split_whitespace();
        let Some(at) = words.next().and_then(|t| t.parse::<i64>().ok()) else {
            continue;
        };
        let counts = windows.entry(at - at.rem_euclid(size)).or_default();
        for word in words {
            match counts.get_mut(word) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(word.into(), 1);
                }
            }
        }
    }
    let mut out = BufWriter::new(std::fs::File::create(output).expect("cannot create the output"));
    for (start, counts) in windows {
        for (word, count) in counts {
            writeln!(out, "{start}\t{}\t{word}\t{count}", start + size).unwrap();
        }
    }
    out.flush().unwrap();
}
