//! The folding namespaced states: [`NamespacedReducingState`] and
//! [`NamespacedAggregatingState`], one folded value per key and namespace,
//! merged across namespaces for sessions.

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{KeyedStateBackend, StateId};
use crate::descriptor::{AggregateFunction, ReduceFn};
use crate::Result;

use super::NamespacedValueState;

/// One value per key and namespace folded with a reduce function (Flink's
/// `InternalReducingState`).
pub struct NamespacedReducingState<N, T> {
    pub(super) value: NamespacedValueState<N, T>,
    pub(super) reduce: ReduceFn<T>,
}

impl<N, T> Clone for NamespacedReducingState<N, T> {
    fn clone(&self) -> Self {
        Self {
            value: self.value,
            reduce: Arc::clone(&self.reduce),
        }
    }
}

impl<N, T> std::fmt::Debug for NamespacedReducingState<N, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespacedReducingState")
            .field("id", &self.value.id)
            .finish_non_exhaustive()
    }
}

impl<N: Serialize + DeserializeOwned, T: Serialize + DeserializeOwned> NamespacedReducingState<N, T> {
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.value.id
    }

    /// The reduced value in `namespace`, `None` when nothing was added.
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &B, namespace: &N) -> Result<Option<T>> {
        self.value.value(backend, namespace)
    }

    /// Folds `value` into the current key's value in `namespace`.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn add<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N, value: T) -> Result<()> {
        let next = match self.value.value(backend, namespace)? {
            Some(current) => (self.reduce)(&current, &value),
            None => value,
        };
        self.value.update(backend, namespace, &next)
    }

    /// Removes the current key's value in `namespace`.
    ///
    /// # Errors
    /// Backend errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N) -> Result<()> {
        self.value.clear(backend, namespace)
    }

    /// Folds the values of `sources` into `target`'s (in that order) and
    /// clears the sources; a source equal to `target` is left as is.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn merge_namespaces<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        target: &N,
        sources: &[N],
    ) -> Result<()> {
        let reduce = &self.reduce;
        merge_values(&self.value, backend, target, sources, |a, b| reduce(&a, &b))
    }

    /// The namespaces in which the current key has a value.
    ///
    /// # Errors
    /// As [`NamespacedValueState::namespaces`].
    pub fn namespaces<B: KeyedStateBackend + ?Sized>(&self, backend: &B) -> Result<Vec<N>> {
        self.value.namespaces(backend)
    }
}

/// Folds the values of `sources` into `target`'s with `merge` and clears
/// the sources: what reducing and aggregating states share.
fn merge_values<B: KeyedStateBackend + ?Sized, N: Serialize + DeserializeOwned, T: Serialize + DeserializeOwned>(
    state: &NamespacedValueState<N, T>,
    backend: &mut B,
    target: &N,
    sources: &[N],
    merge: impl Fn(T, T) -> T,
) -> Result<()> {
    let target_ns = crate::codec::encode_value(target)?;
    let mut merged = state.value(backend, target)?;
    let mut changed = false;
    for source in sources {
        if crate::codec::encode_value(source)? == target_ns {
            continue;
        }
        if let Some(value) = state.value(backend, source)? {
            merged = Some(match merged {
                Some(current) => merge(current, value),
                None => value,
            });
            changed = true;
        }
        state.clear(backend, source)?;
    }
    match merged {
        Some(value) if changed => state.update(backend, target, &value),
        _ => Ok(()),
    }
}

/// One accumulator per key and namespace folded with an
/// [`AggregateFunction`] (Flink's `InternalAggregatingState`).
pub struct NamespacedAggregatingState<N, A: AggregateFunction> {
    pub(super) accumulator: NamespacedValueState<N, A::Acc>,
    pub(super) function: Arc<A>,
}

impl<N, A: AggregateFunction> Clone for NamespacedAggregatingState<N, A> {
    fn clone(&self) -> Self {
        Self {
            accumulator: self.accumulator,
            function: Arc::clone(&self.function),
        }
    }
}

impl<N, A: AggregateFunction> std::fmt::Debug for NamespacedAggregatingState<N, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespacedAggregatingState")
            .field("id", &self.accumulator.id)
            .finish_non_exhaustive()
    }
}

impl<N: Serialize + DeserializeOwned, A: AggregateFunction> NamespacedAggregatingState<N, A> {
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.accumulator.id
    }

    /// The aggregate's result in `namespace`, `None` when nothing was added.
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &B, namespace: &N) -> Result<Option<A::Out>> {
        Ok(self
            .accumulator
            .value(backend, namespace)?
            .map(|acc| self.function.get_result(&acc)))
    }

    /// Folds `value` into the current key's accumulator in `namespace`.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn add<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N, value: &A::In) -> Result<()> {
        let acc = match self.accumulator.value(backend, namespace)? {
            Some(acc) => acc,
            None => self.function.create_accumulator(),
        };
        self.accumulator
            .update(backend, namespace, &self.function.add(value, acc))
    }

    /// Merges `partial`, records already folded elsewhere (a
    /// pre-aggregation), into the current key's accumulator in `namespace`
    /// with [`AggregateFunction::merge`]: one read and one write for all of
    /// them.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn add_accumulator<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        namespace: &N,
        partial: A::Acc,
    ) -> Result<()> {
        let merged = match self.accumulator.value(backend, namespace)? {
            Some(acc) => self.function.merge(acc, partial),
            None => partial,
        };
        self.accumulator.update(backend, namespace, &merged)
    }

    /// Removes the current key's accumulator in `namespace`.
    ///
    /// # Errors
    /// Backend errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N) -> Result<()> {
        self.accumulator.clear(backend, namespace)
    }

    /// Merges the accumulators of `sources` into `target`'s with
    /// [`AggregateFunction::merge`] and clears the sources.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn merge_namespaces<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        target: &N,
        sources: &[N],
    ) -> Result<()> {
        let function = &self.function;
        merge_values(&self.accumulator, backend, target, sources, |a, b| function.merge(a, b))
    }

    /// The namespaces in which the current key has an accumulator.
    ///
    /// # Errors
    /// As [`NamespacedValueState::namespaces`].
    pub fn namespaces<B: KeyedStateBackend + ?Sized>(&self, backend: &B) -> Result<Vec<N>> {
        self.accumulator.namespaces(backend)
    }
}
