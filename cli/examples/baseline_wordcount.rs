//! The benchmarks' baseline: a bare single-thread word count of a file with
//! a std `HashMap<Vec<u8>, u64>` (SipHash), no runtime and no state backend.
//! It splits and upper-cases words as `streamstate wordcount` does, and
//! writes the same output (`WORD<TAB>COUNT`, unsorted), so a benchmark run
//! can check both agree after sorting them.
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
    let reader = BufReader::new(std::fs::File::open(&input).expect("cannot open the input"));
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    for line in reader.lines() {
        let line = line.expect("the input is UTF-8 text");
        for word in line.to_uppercase().split_whitespace() {
            *counts.entry(word.as_bytes().to_vec()).or_insert(0) += 1;
        }
    }
    let mut out = BufWriter::new(std::fs::File::create(&output).expect("cannot create the output"));
    for (word, count) in counts {
        out.write_all(&word).unwrap();
        writeln!(out, "\t{count}").unwrap();
    }
    out.flush().unwrap();
}
