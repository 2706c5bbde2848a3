//! Keyed process functions: user logic with keyed state, run per record
//! with the record's key as the backend's current key. A user implements
//! `open`, `process` and `finish`; how records reach them (batches, key
//! hashes, pre-aggregation) is the runtime's business
//! ([`crate::aggregate`] is the runtime's own keyed operator for `sum`).

use streamstate_api::{KeyedStateBackend, Result};

/// Flink's `KeyedProcessFunction`: `open` registers state, `process` is
/// called for each record with its key current, `finish` once at the end of
/// a bounded input.
///
/// ```
/// use streamstate_api::{KeyedStateBackend, KeyedStateBackendExt, Result, ValueState, ValueStateDescriptor};
/// use streamstate_runtime::function::KeyedProcessFunction;
///
/// /// Emits a key the first time it is seen, never again.
/// #[derive(Default)]
/// struct FirstSeen(Option<ValueState<bool>>);
///
/// impl KeyedProcessFunction<String, String, String> for FirstSeen {
///     fn open(&mut self, backend: &mut dyn KeyedStateBackend) -> Result<()> {
///         self.0 = Some(backend.value_state(&ValueStateDescriptor::<bool>::new("seen"))?);
///         Ok(())
///     }
///
///     fn process(&mut self, key: &String, _value: String, backend: &mut dyn KeyedStateBackend,
///                out: &mut dyn FnMut(String)) -> Result<()> {
///         let seen = self.0.expect("opened");
///         if seen.value(backend)?.is_none() {
///             seen.update(backend, &true)?;
///             out(key.clone());
///         }
///         Ok(())
///     }
/// }
/// ```
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
}
