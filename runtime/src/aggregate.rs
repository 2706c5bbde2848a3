//! Pre-aggregation, the runtime's own keyed operator behind `sum` and
//! `aggregate`: the running fold of a value per key (Flink's `sum`), with
//! Flink SQL's two optimizations when nobody reads the per-record output
//! (a discarding sink, or only the final results wanted):
//!
//! * mini-batch: the keyed task folds records per key in a table of up to
//!   [`SUM_MINI_BATCH_KEYS`] keys and writes each key's accumulator to
//!   state once, a key group at a time, prefetching each group of keys'
//!   cells;
//! * local-global: each source folds records in a small table of its own
//!   ([`crate::execution::LOCAL_SUM_KEYS`] keys) and sends partial
//!   accumulators instead of records, which the mini-batch merges.
//!
//! Checkpoints stay exact: both tables are flushed before every barrier
//! goes on. With per-record output wanted, every record updates state and
//! is emitted, as in Flink.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::{KeyedStateBackend, KeyedStateBackendExt, Result, ValueState, ValueStateDescriptor};

pub use crate::mini_batch::Accumulator;
use crate::mini_batch::MiniBatch;
use crate::operator::KeyedOperator;

/// Distinct keys the mini-batch holds, by default, before it writes its
/// accumulators to state (`JobSettings::mini_batch_keys`). The bound is on
/// keys, not records: the table's memory is bounded (at most 262,144 slots,
/// kept from batch to batch), and hot keys fold any number of records
/// without filling it. How the bound was chosen: docs/BENCHMARKS.md.
pub const SUM_MINI_BATCH_KEYS: usize = 131_072;

/// The default mini-batch bound over a backend with a write-back cache
/// ([`streamstate_api::Capabilities::write_back_cache`], RocksDB): the cache
/// already absorbs hot keys, so a large mini-batch gains little there, and
/// half the table stays inside the memory budget a RocksDB user sizes.
pub const SUM_MINI_BATCH_KEYS_OVER_WRITE_BACK: usize = 65_536;

/// Name of the state [`PreAggregate`] keeps its accumulators in.
pub const SUM_STATE: &str = "sum";

/// What an accumulator is made of a record: `value_of(record)`.
pub type ValueOf<T, A> = Arc<dyn Fn(&T) -> A + Send + Sync>;

/// The running fold of `value_of(record)` per key, in a `ValueState<A>`
/// named [`SUM_STATE`]. Emits `(key, accumulator)` per record; at the end
/// of a bounded input emits the final `(key, accumulator)` of every key
/// this subtask owns. See the [module docs](self) for the mini-batch.
pub struct PreAggregate<K, T, A> {
    value_of: ValueOf<T, A>,
    state: Option<ValueState<A>>,
    records_wanted: bool,
    /// Accumulators not yet in state, by serialized key (mini-batch);
    /// created by `open` with the bound in force.
    buffered: MiniBatch<A>,
    /// Distinct keys the mini-batch holds before it is written to state;
    /// `None` until `open` picks the backend's default.
    mini_batch_keys: Option<usize>,
    _key: PhantomData<fn() -> K>,
}

impl<K, T, A> std::fmt::Debug for PreAggregate<K, T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreAggregate").finish_non_exhaustive()
    }
}

impl<K, T, A: Accumulator> PreAggregate<K, T, A> {
    /// Folds `value_of(record)` per key.
    pub fn new(value_of: ValueOf<T, A>) -> Self {
        Self {
            value_of,
            state: None,
            records_wanted: true,
            buffered: MiniBatch::new(SUM_MINI_BATCH_KEYS),
            mini_batch_keys: None,
            _key: PhantomData,
        }
    }

    /// Writes the mini-batch to state once it holds `keys` distinct keys
    /// (at least 1); `None` leaves the choice to the backend
    /// ([`SUM_MINI_BATCH_KEYS`], or [`SUM_MINI_BATCH_KEYS_OVER_WRITE_BACK`]
    /// over a write-back cache).
    pub fn with_mini_batch_keys(mut self, keys: Option<usize>) -> Self {
        self.mini_batch_keys = keys.map(|keys| keys.max(1));
        self
    }

    /// The mini-batch bound in force: the one set, else the backend's
    /// default (known once the operator is open).
    pub fn mini_batch_keys(&self) -> Option<usize> {
        self.mini_batch_keys
    }

    fn state(&self) -> Result<ValueState<A>> {
        self.state
            .ok_or_else(|| streamstate_api::Error::invalid_argument("PreAggregate used before open"))
    }
}

/// Merges `delta` into the current key's accumulator in `state`; returns
/// the new accumulator.
fn merge_into_state<A: Accumulator>(state: ValueState<A>, backend: &mut dyn KeyedStateBackend, delta: A) -> Result<A> {
    let mut acc = state.value(backend)?.unwrap_or_default();
    acc.merge(delta);
    state.update(backend, &acc)?;
    Ok(acc)
}

impl<K, T, A> KeyedOperator<K, T, (K, A), A> for PreAggregate<K, T, A>
where
    K: Serialize + DeserializeOwned + Clone + Send,
    T: Send,
    A: Accumulator,
{
    fn open(&mut self, backend: &mut dyn KeyedStateBackend, records_wanted: bool) -> Result<()> {
        self.state = Some(backend.value_state(&ValueStateDescriptor::<A>::new(SUM_STATE))?);
        let backend_default = if backend.capabilities().write_back_cache {
            SUM_MINI_BATCH_KEYS_OVER_WRITE_BACK
        } else {
            SUM_MINI_BATCH_KEYS
        };
        let keys = *self.mini_batch_keys.get_or_insert(backend_default);
        self.buffered = MiniBatch::new(keys);
        self.records_wanted = records_wanted;
        Ok(())
    }

    fn process(
        &mut self,
        key: &K,
        value: T,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut((K, A)),
    ) -> Result<()> {
        let acc = merge_into_state(self.state()?, backend, (self.value_of)(&value))?;
        if self.records_wanted {
            out((key.clone(), acc));
        }
        Ok(())
    }

    fn buffer(
        &mut self,
        key_hash: u64,
        key_bytes: &[u8],
        value: T,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<Option<T>> {
        if self.records_wanted {
            return Ok(Some(value));
        }
        let delta = (self.value_of)(&value);
        self.buffer_partial(key_hash, key_bytes, delta, backend)?;
        Ok(None)
    }

    fn buffer_partial(
        &mut self,
        key_hash: u64,
        key_bytes: &[u8],
        partial: A,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<()> {
        if self.records_wanted {
            return Err(streamstate_api::Error::invalid_argument(
                "a partial accumulator reached an operator whose every update is read",
            ));
        }
        if key_bytes.is_empty() {
            // What the backend would say at `set_current_key`; the
            // mini-batch table keeps empty keys for its free slots.
            return Err(streamstate_api::Error::invalid_argument(
                "keys must serialize to at least one byte",
            ));
        }
        self.buffered.add_hashed(key_hash, key_bytes, partial);
        if self.buffered.is_full() {
            self.flush_buffer(backend)?;
        }
        Ok(())
    }

    fn touch_buffer(&self, key_hash: u64) -> u64 {
        self.buffered.touch(key_hash)
    }

    fn flush_buffer(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let state = self.state()?;
        // Written a key group at a time: backends lay state out by key
        // group (the heap backends' shards, RocksDB's key prefixes), so
        // consecutive writes hit tables already in cache instead of a
        // cache miss per key across the whole state (docs/BENCHMARKS.md).
        self.buffered.drain_by_key_group(
            backend.max_parallelism(),
            backend,
            |backend, keys| backend.prefetch(state.id(), keys),
            |backend, key_bytes, delta| {
                backend.set_current_key(key_bytes)?;
                state.update_with(backend, |acc| {
                    let mut acc = acc.unwrap_or_default();
                    acc.merge(delta);
                    acc
                })
            },
        )
    }

    fn finish(&mut self, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut((K, A))) -> Result<()> {
        let state = self.state()?;
        // A key group at a time: a large state's keys are never all in
        // memory at once.
        for key_group in backend.key_group_range().iter() {
            state.for_each_in_key_group_unordered(backend, key_group, |key_bytes, acc| {
                out((streamstate_api::codec::decode_value::<K>(key_bytes)?, acc));
                Ok(())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use streamstate_api::{KeyGroupRange, KeyedBackendOptions, StateBackend};

    use super::*;

    fn backend() -> Box<dyn KeyedStateBackend> {
        streamstate_memory::MemoryStateBackend::new()
            .create_keyed_backend(KeyedBackendOptions::new(
                "job",
                "keyed",
                KeyGroupRange::new(0, 127),
                128,
            ))
            .unwrap()
    }

    fn sums_in_state(
        function: &mut PreAggregate<String, i64, i64>,
        backend: &mut dyn KeyedStateBackend,
    ) -> BTreeMap<String, i64> {
        let mut sums = BTreeMap::new();
        function
            .finish(backend, &mut |(key, sum)| {
                sums.insert(key, sum);
            })
            .unwrap();
        sums
    }

    /// Records offered to `buffer` as the keyed task does: buffered ones
    /// return `None`, the rest go through `process`.
    fn offer(
        function: &mut PreAggregate<String, i64, i64>,
        backend: &mut dyn KeyedStateBackend,
        key: &str,
        value: i64,
    ) -> Vec<(String, i64)> {
        let key_bytes = streamstate_api::codec::encode_value(&key.to_string()).unwrap();
        let mut emitted = Vec::new();
        let key_hash = streamstate_api::key_group::key_hash(&key_bytes);
        if let Some(value) = function.buffer(key_hash, &key_bytes, value, backend).unwrap() {
            backend.set_current_key(&key_bytes).unwrap();
            function
                .process(&key.to_string(), value, backend, &mut |o| emitted.push(o))
                .unwrap();
        }
        emitted
    }

    #[test]
    fn without_readers_sums_are_buffered_until_the_mini_batch_fills_or_is_flushed() {
        let mut backend = backend();
        let keys = 1_000;
        let mut function =
            PreAggregate::<String, i64, i64>::new(Arc::new(|n: &i64| *n)).with_mini_batch_keys(Some(keys));
        function.open(backend.as_mut(), false).unwrap();
        assert_eq!(function.mini_batch_keys(), Some(keys));
        let mut model = BTreeMap::new();
        // One key short of a full mini-batch, hot keys many times over:
        // nothing reaches state.
        for i in 0..3 * keys {
            let key = format!("k{}", i % (keys - 1));
            assert!(offer(&mut function, backend.as_mut(), &key, 2).is_empty());
            *model.entry(key).or_insert(0) += 2;
        }
        assert_eq!(backend.keys(function.state().unwrap().id()).unwrap().len(), 0);
        // The key that fills it writes every buffered sum.
        offer(&mut function, backend.as_mut(), "k-last", 5);
        model.insert("k-last".into(), 5);
        assert_eq!(sums_in_state(&mut function, backend.as_mut()), model);
        // A flush (before a snapshot, before finish) writes the rest.
        offer(&mut function, backend.as_mut(), "new", 3);
        offer(&mut function, backend.as_mut(), "k1", 1);
        model.insert("new".into(), 3);
        *model.get_mut("k1").unwrap() += 1;
        assert_ne!(sums_in_state(&mut function, backend.as_mut()), model);
        function.flush_buffer(backend.as_mut()).unwrap();
        assert_eq!(sums_in_state(&mut function, backend.as_mut()), model);
    }

    #[test]
    fn the_mini_batch_bound_follows_the_backends_write_back_cache() {
        let dir = tempfile::tempdir().unwrap();
        let bound_over = |state_backend: &dyn StateBackend, set: Option<usize>| {
            let mut backend = state_backend
                .create_keyed_backend(KeyedBackendOptions::new(
                    "job",
                    "keyed",
                    KeyGroupRange::new(0, 127),
                    128,
                ))
                .unwrap();
            let mut function = PreAggregate::<String, i64, i64>::new(Arc::new(|n: &i64| *n)).with_mini_batch_keys(set);
            function.open(backend.as_mut(), true).unwrap();
            function.mini_batch_keys()
        };
        let rocksdb = |write_back_entries| {
            streamstate_rocksdb::RocksDbStateBackend::new(streamstate_rocksdb::RocksDbConfig {
                local_dir: Some(dir.path().to_path_buf()),
                write_back_entries,
                ..Default::default()
            })
        };
        let heap = streamstate_memory::MemoryStateBackend::new();
        assert_eq!(bound_over(&heap, None), Some(SUM_MINI_BATCH_KEYS));
        assert_eq!(
            bound_over(&rocksdb(streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES), None),
            Some(SUM_MINI_BATCH_KEYS_OVER_WRITE_BACK)
        );
        // Without its cache, RocksDB pays a round trip per write: the large
        // mini-batch is worth it again.
        assert_eq!(bound_over(&rocksdb(0), None), Some(SUM_MINI_BATCH_KEYS));
        // A bound that was set wins over every default.
        assert_eq!(
            bound_over(&rocksdb(streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES), Some(7)),
            Some(7)
        );
        assert_eq!(bound_over(&heap, Some(0)), Some(1));
    }

    #[test]
    fn with_readers_every_record_updates_state_and_is_emitted() {
        let mut backend = backend();
        let mut function = PreAggregate::<String, i64, i64>::new(Arc::new(|n: &i64| *n));
        function.open(backend.as_mut(), true).unwrap();
        assert_eq!(
            offer(&mut function, backend.as_mut(), "a", 2),
            vec![("a".to_string(), 2)]
        );
        assert_eq!(
            offer(&mut function, backend.as_mut(), "a", 3),
            vec![("a".to_string(), 5)]
        );
        assert_eq!(
            sums_in_state(&mut function, backend.as_mut()),
            BTreeMap::from([("a".to_string(), 5)])
        );
    }
}
