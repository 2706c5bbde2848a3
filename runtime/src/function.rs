//! Keyed process functions: user logic with keyed state, run per record
//! with the record's key as the backend's current key.

use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::{KeyedStateBackend, KeyedStateBackendExt, Result, ValueState, ValueStateDescriptor};

use crate::mini_batch::MiniBatch;

/// Flink's `KeyedProcessFunction`: `open` registers state, `process` is
/// called for each record with its key current, `finish` once at the end of
/// a bounded input.
pub trait KeyedProcessFunction<K, T, O>: Send {
    /// Registers states (called once per subtask, after any restore).
    ///
    /// # Errors
    /// State registration errors.
    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()>;

    /// Handles one record; `out` emits results downstream.
    ///
    /// # Errors
    /// State errors; they fail the job.
    fn process(&mut self, key: &K, value: T, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut(O))
        -> Result<()>;

    /// Called when a bounded input is exhausted; `out` collects the job's
    /// final results (returned by [`crate::JobHandle::wait`]).
    ///
    /// # Errors
    /// State errors.
    fn finish(&mut self, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut(O)) -> Result<()> {
        let _ = (backend, out);
        Ok(())
    }

    /// Told before the first record whether anyone reads the records
    /// `process` emits (`false` behind a discarding sink): a function may
    /// then skip building them. `finish` output is always wanted.
    fn set_records_wanted(&mut self, wanted: bool) {
        let _ = wanted;
    }

    /// Offers a record to the function's mini-batch before `process`
    /// (Flink SQL's mini-batch aggregation): a function that can fold
    /// records of one key together before touching state (a sum) keeps
    /// `value` under `key_bytes` and returns `Ok(None)`, sparing the state
    /// lookup per record; `Ok(Some(value))` hands the record back for
    /// `process`. The default buffers nothing. `key_hash` is
    /// [`streamstate_api::key_group::key_hash`] of `key_bytes`, computed once by
    /// the source that routed the record (here and in the hooks below).
    ///
    /// A function buffers only while nobody reads what `process` emits
    /// (see [`KeyedProcessFunction::set_records_wanted`]); it may write its
    /// buffer to state here (the backend's current key is then changed).
    ///
    /// # Errors
    /// State errors from writing the buffer.
    fn buffer(
        &mut self,
        key_hash: u64,
        key_bytes: &[u8],
        value: T,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<Option<T>> {
        let _ = (key_hash, key_bytes, backend);
        Ok(Some(value))
    }

    /// Called for a group of records' keys before [`buffer`] runs for
    /// them: a function whose mini-batch is a large table loads the slots
    /// those keys need now, so the cache misses of the group overlap
    /// instead of following one another. Returns a word read from the
    /// table (the caller passes it to [`std::hint::black_box`]). The default
    /// loads nothing.
    ///
    /// [`buffer`]: KeyedProcessFunction::buffer
    fn touch_buffer(&self, key_hash: u64) -> u64 {
        let _ = key_hash;
        0
    }

    /// Adds `partial`, the sum of several records of the key `key_bytes`
    /// already folded on a source thread (local-global aggregation), to
    /// the mini-batch. Only a `sum` whose per-record output nobody reads
    /// receives these; the default refuses them.
    ///
    /// # Errors
    /// [`streamstate_api::ErrorKind::Unsupported`] by default; state errors from
    /// writing the buffer.
    fn buffer_partial(
        &mut self,
        key_hash: u64,
        key_bytes: &[u8],
        partial: i64,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<()> {
        let _ = (key_hash, key_bytes, partial, backend);
        Err(streamstate_api::Error::unsupported(
            "this keyed function takes no partial sums (local aggregation is for `sum`)",
        ))
    }

    /// Writes what [`KeyedProcessFunction::buffer`] holds to state. Called
    /// before every snapshot (so a checkpoint holds every record before its
    /// barrier) and before `finish`.
    ///
    /// # Errors
    /// State errors.
    fn flush_buffer(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        let _ = backend;
        Ok(())
    }
}

/// Distinct keys a [`SumFunction`]'s mini-batch holds, by default, before
/// it writes its sums to state (`JobSettings::mini_batch_keys`). The bound
/// is on keys, not records: the buffer's memory is bounded (the table grows
/// to at most 262,144 slots of 48 bytes, 12 MiB, kept from batch to
/// batch), and hot keys fold any number of records without filling it. On
/// the Zipf benchmark corpus (1M-word vocabulary), with the sources' local
/// aggregation in front, the heap backends count as fast with it as with
/// 65,536 keys and ~5% faster than with 262,144 (docs/BENCHMARKS.md).
pub const SUM_MINI_BATCH_KEYS: usize = 131_072;

/// The default mini-batch bound over a backend with a write-back cache
/// ([`streamstate_api::Capabilities::write_back_cache`], RocksDB): the cache
/// already absorbs hot keys, so a large mini-batch gains little there
/// (docs/BENCHMARKS.md), and 6 MiB instead of 12 MiB stays inside the
/// memory budget a RocksDB user sizes.
pub const SUM_MINI_BATCH_KEYS_OVER_WRITE_BACK: usize = 65_536;

/// The running sum per key (Flink's `sum`), in a `ValueState<i64>` named
/// `sum`. Emits `(key, new_sum)` per record; at the end of a bounded input
/// emits the final `(key, sum)` of every key this subtask owns.
///
/// Behind a sink that discards per-record output, records are summed per
/// key in a mini-batch of up to [`SUM_MINI_BATCH_KEYS`] keys
/// ([`SUM_MINI_BATCH_KEYS_OVER_WRITE_BACK`] over a backend with a
/// write-back cache) and written to state once per key: the same sums at
/// every checkpoint and at the end, with fewer state updates.
pub struct SumFunction<K, T> {
    value_of: std::sync::Arc<dyn Fn(&T) -> i64 + Send + Sync>,
    state: Option<ValueState<i64>>,
    records_wanted: bool,
    /// Sums not yet in state, by serialized key (mini-batch); created by
    /// `open` with the bound in force.
    buffered: MiniBatch,
    /// Distinct keys the mini-batch holds before it is written to state;
    /// `None` until `open` picks the backend's default.
    mini_batch_keys: Option<usize>,
    _key: PhantomData<fn() -> K>,
}

impl<K, T> std::fmt::Debug for SumFunction<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SumFunction").finish_non_exhaustive()
    }
}

/// Name of the state [`SumFunction`] keeps its sums in.
pub const SUM_STATE: &str = "sum";

impl<K, T> SumFunction<K, T> {
    /// Sums `value_of(record)` per key.
    pub fn new(value_of: std::sync::Arc<dyn Fn(&T) -> i64 + Send + Sync>) -> Self {
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
    /// default (known once `open` ran).
    pub fn mini_batch_keys(&self) -> Option<usize> {
        self.mini_batch_keys
    }

    fn state(&self) -> Result<ValueState<i64>> {
        self.state
            .ok_or_else(|| streamstate_api::Error::invalid_argument("SumFunction used before open"))
    }
}

/// Adds `delta` to the current key's sum in `state`; returns the new sum.
fn add_to_sum(state: ValueState<i64>, backend: &mut dyn KeyedStateBackend, delta: i64) -> Result<i64> {
    let sum = state.value(backend)?.unwrap_or(0) + delta;
    state.update(backend, &sum)?;
    Ok(sum)
}

impl<K, T> KeyedProcessFunction<K, T, (K, i64)> for SumFunction<K, T>
where
    K: Serialize + DeserializeOwned + Clone + Send,
    T: Send,
{
    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        self.state = Some(backend.value_state(&ValueStateDescriptor::<i64>::new(SUM_STATE))?);
        let backend_default = if backend.capabilities().write_back_cache {
            SUM_MINI_BATCH_KEYS_OVER_WRITE_BACK
        } else {
            SUM_MINI_BATCH_KEYS
        };
        let keys = *self.mini_batch_keys.get_or_insert(backend_default);
        self.buffered = MiniBatch::new(keys);
        Ok(())
    }

    fn process(
        &mut self,
        key: &K,
        value: T,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut((K, i64)),
    ) -> Result<()> {
        let sum = add_to_sum(self.state()?, backend, (self.value_of)(&value))?;
        if self.records_wanted {
            out((key.clone(), sum));
        }
        Ok(())
    }

    fn set_records_wanted(&mut self, wanted: bool) {
        self.records_wanted = wanted;
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
        partial: i64,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<()> {
        if self.records_wanted {
            return Err(streamstate_api::Error::invalid_argument(
                "a partial sum reached a sum whose every update is read",
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
                state.update_with(backend, |sum| sum.unwrap_or(0) + delta)
            },
        )
    }

    fn finish(&mut self, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut((K, i64))) -> Result<()> {
        let state = self.state()?;
        // A key group at a time: a large state's keys are never all in
        // memory at once.
        for key_group in backend.key_group_range().iter() {
            state.for_each_in_key_group_unordered(backend, key_group, |key_bytes, sum| {
                out((streamstate_api::codec::decode_value::<K>(key_bytes)?, sum));
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
        function: &mut SumFunction<String, i64>,
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
        function: &mut SumFunction<String, i64>,
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
        let mut function = SumFunction::<String, i64>::new(Arc::new(|n: &i64| *n)).with_mini_batch_keys(Some(keys));
        function.open(backend.as_mut()).unwrap();
        assert_eq!(function.mini_batch_keys(), Some(keys));
        function.set_records_wanted(false);
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
            let mut function = SumFunction::<String, i64>::new(Arc::new(|n: &i64| *n)).with_mini_batch_keys(set);
            function.open(backend.as_mut()).unwrap();
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
        let mut function = SumFunction::<String, i64>::new(Arc::new(|n: &i64| *n));
        function.open(backend.as_mut()).unwrap();
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
