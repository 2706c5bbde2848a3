//! Namespaced keyed state: state scoped to a key *and a namespace*, as
//! Flink's internal states are (a window's contents are its key's state in
//! the window's namespace).
//!
//! Every state kind can be namespaced. A namespaced state is registered
//! from the same descriptor as a plain one, through
//! [`NamespacedStateExt`], with the namespace's type `N` (any serde type: a
//! window, a session id). Each call names its namespace; the current key
//! still comes from [`KeyedStateBackend::set_current_key`].
//!
//! ```
//! use streamstate_api::namespaced::NamespacedStateExt;
//! use streamstate_api::{KeyedStateBackend, KeyedStateBackendExt, ReducingStateDescriptor};
//!
//! /// Counts `word` in the window `[start, end)`; returns the window's count.
//! fn count_in_window(backend: &mut dyn KeyedStateBackend, word: &str, window: (i64, i64)) -> streamstate_api::Result<u64> {
//!     let counts = backend
//!         .namespaced_reducing_state::<(i64, i64), u64>(&ReducingStateDescriptor::new("count", |a, b| a + b))?;
//!     backend.set_current_key_typed(&word)?;
//!     counts.add(backend, &window, 1)?;
//!     Ok(counts.get(backend, &window)?.unwrap_or(0))
//! }
//! ```
//!
//! # Storage
//!
//! A backend stores a namespaced state as a map state per key, from the
//! serialized namespace to the cell a plain state of that kind would hold
//! ([`crate::StateMeta::stores_map`]); a namespaced map state's user keys
//! are `varint len(namespace) | namespace | user key`. Snapshots (every
//! format, full and incremental), rescaling restores and `checkpoints
//! inspect` therefore need nothing new, and states without a namespace
//! (Flink's `VoidNamespace`) cost what they cost before. On RocksDB the
//! layout is Flink's: key group, key, namespace.
//!
//! Namespaced states take no TTL (Flink's window state has none): a
//! descriptor with one is refused with [`ErrorKind::Unsupported`].
//!
//! # Merging
//!
//! List, reducing and aggregating states merge namespaces
//! (`merge_namespaces(target, sources)`, Flink's `mergeNamespaces`): the
//! sources' contents are folded into the target and the sources cleared, as
//! when session windows merge.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{decode_value, encode_value_into, get_length_prefixed, get_varint, put_varint, with_scratch};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReduceFn,
    ReducingStateDescriptor, StateMeta, ValueStateDescriptor,
};
use crate::{Error, ErrorKind, Result};

/// The type marker of a handle: it holds no value of its types.
type Marker<T> = PhantomData<fn() -> T>;

/// Registers namespaced states; implemented for every backend.
pub trait NamespacedStateExt: KeyedStateBackend {
    /// Registers a [`NamespacedValueState`] with namespaces of type `N`.
    ///
    /// # Errors
    /// As [`KeyedStateBackend::register_state`]; [`ErrorKind::Unsupported`]
    /// for a descriptor with a TTL.
    fn namespaced_value_state<N, T>(
        &mut self,
        descriptor: &ValueStateDescriptor<T>,
    ) -> Result<NamespacedValueState<N, T>> {
        Ok(NamespacedValueState {
            id: register::<N, _>(self, descriptor.meta())?,
            _type: PhantomData,
        })
    }

    /// Registers a [`NamespacedListState`].
    ///
    /// # Errors
    /// As [`NamespacedStateExt::namespaced_value_state`].
    fn namespaced_list_state<N, T>(
        &mut self,
        descriptor: &ListStateDescriptor<T>,
    ) -> Result<NamespacedListState<N, T>> {
        Ok(NamespacedListState {
            id: register::<N, _>(self, descriptor.meta())?,
            _type: PhantomData,
        })
    }

    /// Registers a [`NamespacedMapState`].
    ///
    /// # Errors
    /// As [`NamespacedStateExt::namespaced_value_state`].
    fn namespaced_map_state<N, K, V>(
        &mut self,
        descriptor: &MapStateDescriptor<K, V>,
    ) -> Result<NamespacedMapState<N, K, V>> {
        Ok(NamespacedMapState {
            id: register::<N, _>(self, descriptor.meta())?,
            _type: PhantomData,
        })
    }

    /// Registers a [`NamespacedReducingState`].
    ///
    /// # Errors
    /// As [`NamespacedStateExt::namespaced_value_state`].
    fn namespaced_reducing_state<N, T>(
        &mut self,
        descriptor: &ReducingStateDescriptor<T>,
    ) -> Result<NamespacedReducingState<N, T>> {
        Ok(NamespacedReducingState {
            value: NamespacedValueState {
                id: register::<N, _>(self, descriptor.meta())?,
                _type: PhantomData,
            },
            reduce: Arc::clone(descriptor.reduce_fn()),
        })
    }

    /// Registers a [`NamespacedAggregatingState`].
    ///
    /// # Errors
    /// As [`NamespacedStateExt::namespaced_value_state`].
    fn namespaced_aggregating_state<N, A: AggregateFunction>(
        &mut self,
        descriptor: &AggregatingStateDescriptor<A>,
    ) -> Result<NamespacedAggregatingState<N, A>> {
        Ok(NamespacedAggregatingState {
            accumulator: NamespacedValueState {
                id: register::<N, _>(self, descriptor.meta())?,
                _type: PhantomData,
            },
            function: Arc::clone(descriptor.function()),
        })
    }
}

impl<B: KeyedStateBackend + ?Sized> NamespacedStateExt for B {}

fn register<N, B: KeyedStateBackend + ?Sized>(backend: &mut B, meta: &StateMeta) -> Result<StateId> {
    meta.validate_user_state()?;
    if meta.ttl.is_some() {
        return Err(Error::new(ErrorKind::Unsupported, "a namespaced state takes no TTL")
            .with_context("state", meta.name.clone()));
    }
    let mut meta = meta.clone();
    meta.namespace_type = Some(std::any::type_name::<N>().to_owned());
    backend.register_state(&meta)
}

/// Calls `f` with the namespace serialized.
fn with_namespace<N: Serialize + ?Sized, R>(namespace: &N, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
    with_scratch(|ns| {
        encode_value_into(namespace, ns)?;
        f(ns)
    })
}

/// The current key's cell of `state` in the serialized namespace, decoded.
fn read_cell<B: KeyedStateBackend + ?Sized, R>(
    backend: &B,
    state: StateId,
    ns: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<Option<R>> {
    backend.map_get(state, ns)?.map(|cell| decode(&cell)).transpose()
}

/// The elements of a list cell (`varint len | postcard` frames).
fn decode_list<T: DeserializeOwned>(cell: &[u8]) -> Result<Vec<T>> {
    let mut rest = cell;
    let mut elements = Vec::new();
    while !rest.is_empty() {
        elements.push(decode_value(get_length_prefixed(&mut rest)?)?);
    }
    Ok(elements)
}

/// Appends `value` to a list cell as one frame.
fn frame_into<T: Serialize>(value: &T, cell: &mut Vec<u8>) -> Result<()> {
    with_scratch(|element| {
        encode_value_into(value, element)?;
        put_varint(cell, element.len() as u64);
        cell.extend_from_slice(element);
        Ok(())
    })
}

macro_rules! copy_handle {
    ($name:ident < $($p:ident),* >) => {
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),*> Copy for $name<$($p),*> {}
    };
}

/// One value per key and namespace (Flink's `InternalValueState`).
#[derive(Debug)]
pub struct NamespacedValueState<N, T> {
    id: StateId,
    _type: Marker<(N, T)>,
}
copy_handle!(NamespacedValueState<N, T>);

impl<N: Serialize + DeserializeOwned, T: Serialize + DeserializeOwned> NamespacedValueState<N, T> {
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.id
    }

    /// The current key's value in `namespace`, `None` when unset.
    ///
    /// # Errors
    /// Backend errors, or [`ErrorKind::Serialization`] when the stored bytes
    /// are not a `T`.
    pub fn value<B: KeyedStateBackend + ?Sized>(&self, backend: &B, namespace: &N) -> Result<Option<T>> {
        with_namespace(namespace, |ns| read_cell(backend, self.id, ns, decode_value::<T>))
    }

    /// Sets the current key's value in `namespace`.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn update<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N, value: &T) -> Result<()> {
        with_namespace(namespace, |ns| {
            with_scratch(|bytes| {
                encode_value_into(value, bytes)?;
                backend.map_put(self.id, ns, bytes)
            })
        })
    }

    /// Removes the current key's value in `namespace` (Flink clears a
    /// window's state when the window is purged).
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N) -> Result<()> {
        with_namespace(namespace, |ns| backend.map_remove(self.id, ns))
    }

    /// The namespaces in which the current key has a value, ordered by
    /// their serialized bytes.
    ///
    /// # Errors
    /// Backend errors, or [`ErrorKind::Serialization`] for a stored
    /// namespace that is not an `N`.
    pub fn namespaces<B: KeyedStateBackend + ?Sized>(&self, backend: &B) -> Result<Vec<N>> {
        namespaces_of(backend, self.id)
    }
}

fn namespaces_of<B: KeyedStateBackend + ?Sized, N: DeserializeOwned>(backend: &B, state: StateId) -> Result<Vec<N>> {
    backend
        .map_entries(state)?
        .iter()
        .map(|(ns, _)| decode_value(ns))
        .collect()
}

/// An appendable list per key and namespace (Flink's `InternalListState`).
#[derive(Debug)]
pub struct NamespacedListState<N, T> {
    id: StateId,
    _type: Marker<(N, T)>,
}
copy_handle!(NamespacedListState<N, T>);

impl<N: Serialize + DeserializeOwned, T: Serialize + DeserializeOwned> NamespacedListState<N, T> {
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.id
    }

    /// The current key's elements in `namespace`, in insertion order.
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &B, namespace: &N) -> Result<Vec<T>> {
        with_namespace(namespace, |ns| {
            Ok(read_cell(backend, self.id, ns, decode_list::<T>)?.unwrap_or_default())
        })
    }

    /// Appends one element in `namespace`.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn add<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N, value: &T) -> Result<()> {
        self.add_all(backend, namespace, std::slice::from_ref(value))
    }

    /// Appends `values` in order in `namespace`.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn add_all<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N, values: &[T]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        with_namespace(namespace, |ns| {
            let mut cell = backend
                .map_get(self.id, ns)?
                .map(|c| c.into_owned())
                .unwrap_or_default();
            for value in values {
                frame_into(value, &mut cell)?;
            }
            backend.map_put(self.id, ns, &cell)
        })
    }

    /// Replaces the list in `namespace`; an empty `values` clears it.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn update<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N, values: &[T]) -> Result<()> {
        self.clear(backend, namespace)?;
        self.add_all(backend, namespace, values)
    }

    /// Removes the current key's list in `namespace`.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N) -> Result<()> {
        with_namespace(namespace, |ns| backend.map_remove(self.id, ns))
    }

    /// Appends the lists of `sources` (in that order) to `target`'s and
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
        let target_ns = crate::codec::encode_value(target)?;
        let mut merged = backend
            .map_get(self.id, &target_ns)?
            .map(|c| c.into_owned())
            .unwrap_or_default();
        let before = merged.len();
        for source in sources {
            let source_ns = crate::codec::encode_value(source)?;
            if source_ns == target_ns {
                continue;
            }
            if let Some(cell) = backend.map_get(self.id, &source_ns)? {
                merged.extend_from_slice(&cell);
            }
            backend.map_remove(self.id, &source_ns)?;
        }
        if merged.len() > before {
            backend.map_put(self.id, &target_ns, &merged)?;
        }
        Ok(())
    }

    /// The namespaces in which the current key has a list.
    ///
    /// # Errors
    /// As [`NamespacedValueState::namespaces`].
    pub fn namespaces<B: KeyedStateBackend + ?Sized>(&self, backend: &B) -> Result<Vec<N>> {
        namespaces_of(backend, self.id)
    }
}

/// A map per key and namespace (Flink's `InternalMapState`). Entries
/// iterate in the order of their serialized user keys.
#[derive(Debug)]
pub struct NamespacedMapState<N, K, V> {
    id: StateId,
    _type: Marker<(N, K, V)>,
}
copy_handle!(NamespacedMapState<N, K, V>);

/// Writes the stored user key of a namespaced map entry:
/// `varint len(namespace) | namespace | user key`.
fn map_user_key<N: Serialize, K: Serialize>(namespace: &N, user_key: &K, out: &mut Vec<u8>) -> Result<()> {
    with_namespace(namespace, |ns| {
        put_varint(out, ns.len() as u64);
        out.extend_from_slice(ns);
        Ok(())
    })?;
    encode_value_into(user_key, out)
}

impl<N, K, V> NamespacedMapState<N, K, V>
where
    N: Serialize + DeserializeOwned,
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.id
    }

    /// The value under `user_key` in `namespace`, `None` when absent.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &B, namespace: &N, user_key: &K) -> Result<Option<V>> {
        with_scratch(|uk| {
            map_user_key(namespace, user_key, uk)?;
            read_cell(backend, self.id, uk, decode_value::<V>)
        })
    }

    /// Inserts or replaces the value under `user_key` in `namespace`.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn put<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        namespace: &N,
        user_key: &K,
        value: &V,
    ) -> Result<()> {
        let mut uk = Vec::new();
        map_user_key(namespace, user_key, &mut uk)?;
        with_scratch(|bytes| {
            encode_value_into(value, bytes)?;
            backend.map_put(self.id, &uk, bytes)
        })
    }

    /// Removes `user_key`'s entry in `namespace`.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn remove<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N, user_key: &K) -> Result<()> {
        with_scratch(|uk| {
            map_user_key(namespace, user_key, uk)?;
            backend.map_remove(self.id, uk)
        })
    }

    /// The stored user keys and values of the current key's entries in
    /// `namespace`, ordered by serialized user key.
    fn raw_entries<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &B,
        namespace: &N,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let ns = crate::codec::encode_value(namespace)?;
        let mut prefix = Vec::with_capacity(ns.len() + 5);
        put_varint(&mut prefix, ns.len() as u64);
        prefix.extend_from_slice(&ns);
        Ok(backend
            .map_entries(self.id)?
            .into_iter()
            .filter(|(uk, _)| uk.starts_with(&prefix))
            .map(|(uk, v)| (uk[prefix.len()..].to_vec(), v))
            .collect())
    }

    /// The current key's entries in `namespace`, ordered by serialized user
    /// key.
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn entries<B: KeyedStateBackend + ?Sized>(&self, backend: &B, namespace: &N) -> Result<Vec<(K, V)>> {
        self.raw_entries(backend, namespace)?
            .iter()
            .map(|(uk, v)| Ok((decode_value(uk)?, decode_value(v)?)))
            .collect()
    }

    /// Removes all of the current key's entries in `namespace`.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, namespace: &N) -> Result<()> {
        let ns = crate::codec::encode_value(namespace)?;
        let mut uk = Vec::new();
        for (user_key, _) in self.raw_entries(backend, namespace)? {
            uk.clear();
            put_varint(&mut uk, ns.len() as u64);
            uk.extend_from_slice(&ns);
            uk.extend_from_slice(&user_key);
            backend.map_remove(self.id, &uk)?;
        }
        Ok(())
    }

    /// The namespaces in which the current key has entries, each once,
    /// ordered by their serialized bytes.
    ///
    /// # Errors
    /// Backend errors; [`ErrorKind::Corrupt`] for a malformed stored user
    /// key.
    pub fn namespaces<B: KeyedStateBackend + ?Sized>(&self, backend: &B) -> Result<Vec<N>> {
        let mut found = std::collections::BTreeSet::new();
        for (uk, _) in backend.map_entries(self.id)? {
            let mut rest = &uk[..];
            let len = get_varint(&mut rest)? as usize;
            let ns = rest
                .get(..len)
                .ok_or_else(|| Error::corrupt("namespaced map key shorter than its namespace"))?;
            found.insert(ns.to_vec());
        }
        found.iter().map(|ns| decode_value(ns)).collect()
    }
}

/// One value per key and namespace folded with a reduce function (Flink's
/// `InternalReducingState`).
pub struct NamespacedReducingState<N, T> {
    value: NamespacedValueState<N, T>,
    reduce: ReduceFn<T>,
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
    accumulator: NamespacedValueState<N, A::Acc>,
    function: Arc<A>,
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
