//! Crash campaign: the file-input word count with checkpoints every 200 ms is
//! killed with SIGKILL at random moments (before, during and after uploads
//! and commits: most kills come shortly after a run's own commit), restarted with `--from-checkpoint latest`, again and again,
//! and finally left to finish; its final counts must equal a plain count of
//! the input. No restart may find a damaged checkpoint.
//!
//! CI runs a short campaign (`STREAMSTATE_CRASH_KILLS`, default 12 kills per
//! backend); `scripts/crash-campaign.sh` runs the full one (100 per backend,
//! release build). The seed is printed; `STREAMSTATE_CRASH_SEED` replays it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// splitmix64: a seeded, dependency-free source of kill times and words.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// Writes `words` words (10 a line, skewed towards small ranks) and returns
/// their plain count, upper-cased as the job counts them.
fn write_corpus(path: &Path, words: u64, rng: &mut Rng) -> BTreeMap<String, i64> {
    let mut text = String::new();
    let mut expected = BTreeMap::new();
    for i in 0..words {
        // The product of two uniform ranks is skewed: a few hot words, a long tail.
        let rank = rng.below(100) * rng.below(100);
        let word = format!("w{rank:x}");
        *expected.entry(word.to_uppercase()).or_insert(0) += 1;
        text.push_str(&word);
        text.push(if i % 10 == 9 { '\n' } else { ' ' });
    }
    std::fs::write(path, text).unwrap();
    expected
}

/// The newest completed checkpoint id (0: none). While a run is alive its
/// retention may delete a directory being listed; that reads as "none yet".
fn newest_checkpoint(storage: &streamstate_api::CheckpointStorage) -> u64 {
    storage
        .completed_checkpoints(None)
        .map(|all| all.iter().map(|c| c.manifest.checkpoint_id).max().unwrap_or(0))
        .unwrap_or(0)
}

fn read_counts(path: &Path) -> BTreeMap<String, i64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let (word, count) = line.split_once('\t').unwrap();
            (word.to_owned(), count.parse().unwrap())
        })
        .collect()
}

struct Report {
    kills: u64,
    restores: u64,
    runs: u64,
}

fn campaign(backend: &str) -> Report {
    let seed = env_number("STREAMSTATE_CRASH_SEED", u64::from(std::process::id()) ^ 0x5eed);
    let kills = env_number("STREAMSTATE_CRASH_KILLS", 12);
    let words = env_number("STREAMSTATE_CRASH_WORDS", 1_000_000);
    eprintln!("crash campaign {backend}: seed {seed} (STREAMSTATE_CRASH_SEED), {kills} kills, {words} words");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let expected = write_corpus(&input, words, &mut rng);
    let output = dir.path().join("counts.tsv");
    let checkpoints = format!("file://{}/checkpoints", dir.path().display());
    let storage = streamstate_api::CheckpointStorage::open(&checkpoints).unwrap();

    let mut report = Report {
        kills: 0,
        restores: 0,
        runs: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(
            Instant::now() < deadline,
            "{backend}: the campaign made no progress in 10 minutes"
        );
        let had_checkpoint = newest_checkpoint(&storage) > 0;
        let stderr_path = dir.path().join(format!("stderr-{}.txt", report.runs));
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamstate"))
            .args(["wordcount", "--input"])
            .arg(&input)
            .args(["--state-backend", backend, "--checkpoint-interval", "200ms"])
            .args([
                "--checkpoint-dir",
                &checkpoints,
                "--from-checkpoint",
                "latest",
                "--output",
            ])
            .arg(&output)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        report.runs += 1;
        report.restores += u64::from(had_checkpoint);
        let kill_now = report.kills < kills;
        // One kill in four lands in the first 600 ms of a run (often before
        // its first checkpoint, or during the restore); the others land
        // 0-400 ms after the run committed a checkpoint of its own, so they
        // hit the next checkpoint's snapshot, upload or commit (every 200 ms).
        let started = Instant::now();
        let newest_before = newest_checkpoint(&storage);
        let after_commit = rng.below(4) != 0;
        let delay = Duration::from_millis(if after_commit { rng.below(400) } else { rng.below(600) });
        let mut kill_at = (!after_commit).then(|| started + delay);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if kill_at.is_none() && newest_checkpoint(&storage) > newest_before {
                kill_at = Some(Instant::now() + delay);
            }
            if kill_now && kill_at.is_some_and(|at| Instant::now() >= at) {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let stderr = std::fs::read_to_string(&stderr_path).unwrap();
        assert!(
            !stderr.contains("damaged"),
            "{backend}: run {} found a damaged checkpoint after a kill:\n{stderr}",
            report.runs
        );
        match status {
            None => report.kills += 1,
            Some(status) => {
                assert!(status.success(), "{backend}: run {} failed:\n{stderr}", report.runs);
                if report.kills >= kills {
                    break;
                }
                // The input ended before the kill: start over with more kills
                // to come, from a clean directory, so every kill hits a run.
                std::fs::remove_dir_all(dir.path().join("checkpoints")).unwrap();
            }
        }
    }
    let counts = read_counts(&output);
    let mismatches: Vec<_> = expected
        .iter()
        .filter(|(word, count)| counts.get(*word) != Some(count))
        .take(5)
        .collect();
    assert!(
        mismatches.is_empty() && counts.len() == expected.len(),
        "{backend}: after {} kills and {} restores the counts differ from a plain count \
         ({} words expected, {} counted; first differences: {mismatches:?})",
        report.kills,
        report.restores,
        expected.len(),
        counts.len()
    );
    eprintln!(
        "crash campaign {backend}: {} runs, {} kills, {} restores, 0 mismatches",
        report.runs, report.kills, report.restores
    );
    report
}

#[test]
fn memory_backend_survives_kill_9() {
    let report = campaign("memory");
    assert!(report.kills > 0 && report.restores > 0);
}

#[test]
fn fs_backend_survives_kill_9() {
    let report = campaign("fs");
    assert!(report.kills > 0 && report.restores > 0);
}

#[test]
fn rocksdb_backend_survives_kill_9() {
    let report = campaign("rocksdb");
    assert!(report.kills > 0 && report.restores > 0);
}
