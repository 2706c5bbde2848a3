//! The benchmarks' baseline: the tightest honest single-thread word count
//! of a file, with no runtime and no state backend. One reused line buffer,
//! upper-cased in place (ASCII; other lines as `str::to_uppercase`), words
//! split as `str::split_whitespace` splits them, a std `HashMap` with
//! foldhash (the heap backend's hasher family) looked up by `&str`, so a
//! word already counted costs no allocation; a new word allocates once.
//! It writes what `streamstate wordcount --output` writes (`WORD<TAB>COUNT`,
//! unsorted), so a benchmark run can check both agree after sorting them.
//!
//! Usage: `baseline_wordcount INPUT OUTPUT`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};

fn main() {
    let mut args = std::env::args().skip(1);
    let (input, output) = match (args.next(), args.next()) {
        (Some(input), Some(output)) => (input, output),
        _ => {
            eprintln!("usage: baseline_wordcount INPUT OUTPUT");
            std::process::exit(2);
        }
    };
    let file = std::fs::File::open(&input).expect("cannot open the input");
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut counts: HashMap<Box<str>, u64, foldhash::fast::RandomState> = HashMap::default();
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
        for word in line.split_whitespace() {
            match counts.get_mut(word) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(word.into(), 1);
                }
            }
        }
    }
    let mut out = BufWriter::new(std::fs::File::create(&output).expect("cannot create the output"));
    for (word, count) in counts {
        writeln!(out, "{word}\t{count}").unwrap();
    }
    out.flush().unwrap();
}
