//! The two kinds of keyed operator a job can have, each against a plain
//! model computed here: a user's `KeyedProcessFunction` (record by record,
//! its own state), and `aggregate` with an accumulator of the user's own
//! (folded on the keyed thread and on the source threads when nobody reads
//! the per-record output, record by record when someone does).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use streamstate_api::{KeyedStateBackend, KeyedStateBackendExt, Result, ValueState, ValueStateDescriptor};
use streamstate_runtime::aggregate::Accumulator;
use streamstate_runtime::function::{Context, KeyedProcessFunction};
use streamstate_runtime::sink::Sink;
use streamstate_runtime::StreamExecutionEnvironment;

/// `key value` lines: 40 keys, values from a xorshift generator.
fn readings(lines: usize) -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..lines)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("sensor-{} {}", x % 40, (x >> 20) % 1000)
        })
        .collect()
}

fn parse(line: String) -> (String, i64) {
    let (key, value) = line.split_once(' ').unwrap();
    (key.to_owned(), value.parse().unwrap())
}

/// Emits a reading only when it is higher than every earlier one of its
/// key (the key's running maximum, in its own state).
#[derive(Default)]
struct NewHighs(Option<ValueState<i64>>);

impl KeyedProcessFunction<String, (String, i64), (String, i64)> for NewHighs {
    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        self.0 = Some(backend.value_state(&ValueStateDescriptor::<i64>::new("high"))?);
        Ok(())
    }

    fn process(
        &mut self,
        key: &String,
        (_, value): (String, i64),
        ctx: &mut Context<'_>,
        out: &mut dyn FnMut((String, i64)),
    ) -> Result<()> {
        let high = self.0.unwrap();
        if high.value(ctx.backend())?.is_none_or(|h| value > h) {
            high.update(ctx.backend(), &value)?;
            out((key.clone(), value));
        }
        Ok(())
    }
}

/// Collects what a sink is given, from every subtask.
struct Collect<O>(Arc<Mutex<Vec<O>>>);

impl<O: Clone + Send> Sink<O> for Collect<O> {
    fn write(&mut self, record: &O) -> Result<()> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
}

#[test]
fn a_keyed_process_function_sees_every_record_of_its_keys_in_order() {
    let lines = readings(5_000);
    // The model: per key, the readings that beat every earlier one.
    let mut model: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut highs: BTreeMap<String, i64> = BTreeMap::new();
    for (key, value) in lines.iter().cloned().map(parse) {
        if highs.get(&key).is_none_or(|h| value > *h) {
            highs.insert(key.clone(), value);
            model.entry(key).or_default().push(value);
        }
    }
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    let emitted: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let into = Arc::clone(&emitted);
    env.from_lines(lines, 1)
        .map(parse)
        .key_by(|(key, _)| key.clone())
        .process(Arc::new(|| Box::new(NewHighs::default()) as Box<_>))
        .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
        .execute()
        .unwrap()
        .wait()
        .unwrap();
    let mut got: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (key, value) in emitted.lock().unwrap().iter() {
        got.entry(key.clone()).or_default().push(*value);
    }
    assert_eq!(got, model);
}

/// The lowest and highest reading and how many there were.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Spread {
    min: i64,
    max: i64,
    count: u64,
}

impl Default for Spread {
    fn default() -> Self {
        Spread {
            min: i64::MAX,
            max: i64::MIN,
            count: 0,
        }
    }
}

impl Accumulator for Spread {
    fn merge(&mut self, other: Self) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
    }
}

fn spread_model(lines: &[String]) -> BTreeMap<String, Spread> {
    let mut model: BTreeMap<String, Spread> = BTreeMap::new();
    for (key, value) in lines.iter().cloned().map(parse) {
        let s = model.entry(key).or_default();
        s.min = s.min.min(value);
        s.max = s.max.max(value);
        s.count += 1;
    }
    model
}

fn spread_job(
    lines: Vec<String>,
    mini_batch_keys: usize,
    local_aggregation: bool,
) -> streamstate_runtime::ProcessedStream<String, (String, i64), (String, Spread), Spread> {
    let mut env = StreamExecutionEnvironment::new();
    env.set_parallelism(2);
    // A mini-batch smaller than the key count, so it fills and is written
    // out while the input runs, not only at the end.
    env.settings_mut().mini_batch_keys = Some(mini_batch_keys);
    env.settings_mut().local_aggregation = local_aggregation;
    env.from_lines(lines, 2)
        .map(parse)
        .key_by(|(key, _)| key.clone())
        .aggregate(|(_, value)| Spread {
            min: *value,
            max: *value,
            count: 1,
        })
}

#[test]
fn aggregate_folds_a_users_accumulator_ahead_of_state_like_a_model() {
    let lines = readings(20_000);
    let model = spread_model(&lines);
    for local_aggregation in [true, false] {
        let result = spread_job(lines.clone(), 7, local_aggregation)
            .discard()
            .execute()
            .unwrap()
            .wait()
            .unwrap();
        let got: BTreeMap<String, Spread> = result.final_records.into_iter().collect();
        assert_eq!(got, model, "local aggregation {local_aggregation}");
    }
}

#[test]
fn aggregate_emits_every_running_accumulator_when_its_records_are_read() {
    let lines = readings(3_000);
    let emitted: Arc<Mutex<Vec<(String, Spread)>>> = Arc::default();
    let into = Arc::clone(&emitted);
    spread_job(lines.clone(), 7, true)
        .add_sink(Arc::new(move |_, _| Ok(Box::new(Collect(Arc::clone(&into))) as Box<_>)))
        .execute()
        .unwrap()
        .wait()
        .unwrap();
    // Every record emitted its key's running accumulator: per key, the
    // counts run 1, 2, 3... in order, and the last one is the model's.
    let mut by_key: BTreeMap<String, Vec<Spread>> = BTreeMap::new();
    for (key, spread) in emitted.lock().unwrap().iter() {
        by_key.entry(key.clone()).or_default().push(*spread);
    }
    let model = spread_model(&lines);
    assert_eq!(by_key.len(), model.len());
    for (key, spreads) in by_key {
        let counts: Vec<u64> = spreads.iter().map(|s| s.count).collect();
        assert_eq!(counts, (1..=spreads.len() as u64).collect::<Vec<_>>(), "{key}");
        assert_eq!(spreads.last(), model.get(&key), "{key}");
    }
}
