//! Keyed process functions: user logic with keyed state, run per record
//! with the record's key as the backend's current key.

use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};
use state_api::{KeyedStateBackend, KeyedStateBackendExt, Result, ValueState, ValueStateDescriptor};

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
}

/// The running sum per key (Flink's `sum`), in a `ValueState<i64>` named
/// `sum`. Emits `(key, new_sum)` per record; at the end of a bounded input
/// emits the final `(key, sum)` of every key this subtask owns.
pub struct SumFunction<K, T> {
    value_of: std::sync::Arc<dyn Fn(&T) -> i64 + Send + Sync>,
    state: Option<ValueState<i64>>,
    records_wanted: bool,
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
            _key: PhantomData,
        }
    }

    fn state(&self) -> Result<ValueState<i64>> {
        self.state
            .ok_or_else(|| state_api::Error::invalid_argument("SumFunction used before open"))
    }
}

impl<K, T> KeyedProcessFunction<K, T, (K, i64)> for SumFunction<K, T>
where
    K: Serialize + DeserializeOwned + Clone + Send,
    T: Send,
{
    fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
        self.state = Some(backend.value_state(&ValueStateDescriptor::<i64>::new(SUM_STATE))?);
        Ok(())
    }

    fn process(
        &mut self,
        key: &K,
        value: T,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut((K, i64)),
    ) -> Result<()> {
        let state = self.state()?;
        let sum = state.value(backend)?.unwrap_or(0) + (self.value_of)(&value);
        state.update(backend, &sum)?;
        if self.records_wanted {
            out((key.clone(), sum));
        }
        Ok(())
    }

    fn set_records_wanted(&mut self, wanted: bool) {
        self.records_wanted = wanted;
    }

    fn finish(&mut self, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut((K, i64))) -> Result<()> {
        let state = self.state()?;
        // A key group at a time: a large state's keys are never all in
        // memory at once.
        for key_group in backend.key_group_range().iter() {
            for key_bytes in backend.keys_in_key_group(state.id(), key_group)? {
                backend.set_current_key(&key_bytes)?;
                if let Some(sum) = state.value(backend)? {
                    out((state_api::codec::decode_value::<K>(&key_bytes)?, sum));
                }
            }
        }
        Ok(())
    }
}
