//! What a keyed task runs: the runtime's keyed operator contract
//! ([`KeyedOperator`]). A user's [`KeyedProcessFunction`] runs behind the
//! [`FunctionOperator`] adapter, record by record; the runtime's
//! pre-aggregation ([`crate::aggregate::PreAggregate`]) also folds records
//! and partial accumulators per key before they reach state. Users never
//! implement this trait: key hashes, buffers and partials stay here.

use serde::de::DeserializeOwned;
use streamstate_api::{Error, KeyedStateBackend, Result};

use crate::function::KeyedProcessFunction;
use crate::mini_batch::Accumulator;

/// The keyed operator of a job, as its keyed task drives it. `A` is the
/// accumulator of partials a source may fold ahead of the shuffle (`()`
/// for operators that take none).
pub(crate) trait KeyedOperator<K, T, O, A: Accumulator>: Send {
    /// Registers states; `records_wanted` says whether anyone reads the
    /// records `process` emits (`false` behind a discarding sink: an
    /// operator may then fold records before writing state).
    fn open(&mut self, backend: &mut dyn KeyedStateBackend, records_wanted: bool) -> Result<()>;

    /// Offers a record before `process`: `Ok(None)` when the operator kept
    /// it (folded into its buffer), `Ok(Some(value))` hands it back.
    /// `key_hash` is the key's [`streamstate_api::key_group::key_hash`],
    /// computed once by the source that routed the record.
    fn buffer(
        &mut self,
        key_hash: u64,
        key_bytes: &[u8],
        value: T,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<Option<T>>;

    /// Loads the buffer slot of `key_hash` ahead of a group of records, so
    /// their cache misses overlap; returns a word of it (to keep the load).
    fn touch_buffer(&self, key_hash: u64) -> u64;

    /// Adds a partial accumulator folded on a source thread.
    fn buffer_partial(
        &mut self,
        key_hash: u64,
        key_bytes: &[u8],
        partial: A,
        backend: &mut dyn KeyedStateBackend,
    ) -> Result<()>;

    /// Writes the buffer to state: before every snapshot and before `finish`.
    fn flush_buffer(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()>;

    /// Handles one record with its key current.
    fn process(&mut self, key: &K, value: T, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut(O))
        -> Result<()>;

    /// The end of a bounded input.
    fn finish(&mut self, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut(O)) -> Result<()>;
}

/// A user's [`KeyedProcessFunction`] as a keyed operator: every record goes
/// to `process`; nothing is buffered and no partial is accepted.
pub(crate) struct FunctionOperator<K, T, O> {
    function: Box<dyn KeyedProcessFunction<K, T, O>>,
}

impl<K, T, O> FunctionOperator<K, T, O> {
    pub(crate) fn new(function: Box<dyn KeyedProcessFunction<K, T, O>>) -> Self {
        Self { function }
    }
}

impl<K: DeserializeOwned + Send, T: Send, O: Send> KeyedOperator<K, T, O, ()> for FunctionOperator<K, T, O> {
    fn open(&mut self, backend: &mut dyn KeyedStateBackend, _records_wanted: bool) -> Result<()> {
        self.function.open(backend)
    }

    fn buffer(&mut self, _: u64, _: &[u8], value: T, _: &mut dyn KeyedStateBackend) -> Result<Option<T>> {
        Ok(Some(value))
    }

    fn touch_buffer(&self, _key_hash: u64) -> u64 {
        0
    }

    fn buffer_partial(&mut self, _: u64, _: &[u8], _: (), _: &mut dyn KeyedStateBackend) -> Result<()> {
        Err(Error::unsupported(
            "a keyed process function takes no partial accumulators (pre-aggregation is for `sum`/`aggregate`)",
        ))
    }

    fn flush_buffer(&mut self, _backend: &mut dyn KeyedStateBackend) -> Result<()> {
        Ok(())
    }

    fn process(
        &mut self,
        key: &K,
        value: T,
        backend: &mut dyn KeyedStateBackend,
        out: &mut dyn FnMut(O),
    ) -> Result<()> {
        self.function.process(key, value, backend, out)
    }

    fn finish(&mut self, backend: &mut dyn KeyedStateBackend, out: &mut dyn FnMut(O)) -> Result<()> {
        self.function.finish(backend, out)
    }
}
