//! Typed state handles, scoped to the backend's current key.
//!
//! Register a descriptor once (usually in an operator's `open`) to get a
//! cheap, copyable handle; pass the backend to every call. Handles hold no
//! borrow of the backend, so one operator can use many states at once.
//!
//! ```
//! use streamstate_api::{KeyedStateBackend, KeyedStateBackendExt, ValueStateDescriptor};
//! fn count_word(backend: &mut dyn KeyedStateBackend, word: &str) -> streamstate_api::Result<u64> {
//!     let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//!     backend.set_current_key_typed(&word)?;
//!     let next = count.value(backend)?.unwrap_or(0) + 1;
//!     count.update(backend, &next)?;
//!     Ok(next)
//! }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{decode_value, encode_value_into, get_length_prefixed, put_varint, with_scratch};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReduceFn,
    ReducingStateDescriptor, StateMeta, ValueStateDescriptor,
};
use crate::ttl::{self, TtlConfig, TtlUpdateType};
use crate::Result;

/// Encodes a value as stored: `[expiry]` (when TTL is set) then postcard.
fn encode_stored<T: Serialize + ?Sized>(
    value: &T,
    ttl: Option<TtlConfig>,
    backend: &(impl KeyedStateBackend + ?Sized),
    out: &mut Vec<u8>,
) -> Result<()> {
    if let Some(ttl) = ttl {
        out.extend_from_slice(&ttl.expiry_for(backend.clock().now_ms()).to_le_bytes());
    }
    encode_value_into(value, out)
}

/// The clock's time when `ttl` needs it; reading the clock costs a system
/// call's worth per state access, which states without TTL skip.
fn now_for(ttl: Option<TtlConfig>, backend: &(impl KeyedStateBackend + ?Sized)) -> ttl::TimestampMs {
    if ttl.is_some() {
        backend.clock().now_ms()
    } else {
        0
    }
}

/// The payload of a stored value, or `None` if it has expired.
fn live_payload(stored: &[u8], ttl: Option<TtlConfig>, now: ttl::TimestampMs) -> Result<Option<&[u8]>> {
    match ttl {
        None => Ok(Some(stored)),
        Some(_) => {
            let (expires_at, payload) = ttl::unwrap(stored)?;
            Ok((!ttl::is_expired(expires_at, now)).then_some(payload))
        }
    }
}

fn refreshes_on_read(ttl: Option<TtlConfig>) -> bool {
    matches!(ttl, Some(t) if t.update_type == TtlUpdateType::OnReadAndWrite)
}

/// Registers descriptors and serializes keys; implemented for every backend.
pub trait KeyedStateBackendExt: KeyedStateBackend {
    /// Registers a [`ValueState`].
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn value_state<T>(&mut self, descriptor: &ValueStateDescriptor<T>) -> Result<ValueState<T>> {
        Ok(ValueState {
            id: register(self, descriptor.meta())?,
            ttl: descriptor.meta().ttl,
            _type: PhantomData,
        })
    }

    /// Registers a [`ListState`].
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn list_state<T>(&mut self, descriptor: &ListStateDescriptor<T>) -> Result<ListState<T>> {
        Ok(ListState {
            id: register(self, descriptor.meta())?,
            ttl: descriptor.meta().ttl,
            _type: PhantomData,
        })
    }

    /// Registers a [`MapState`].
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn map_state<K, V>(&mut self, descriptor: &MapStateDescriptor<K, V>) -> Result<MapState<K, V>> {
        Ok(MapState {
            id: register(self, descriptor.meta())?,
            ttl: descriptor.meta().ttl,
            _type: PhantomData,
        })
    }

    /// Registers a [`ReducingState`].
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn reducing_state<T>(&mut self, descriptor: &ReducingStateDescriptor<T>) -> Result<ReducingState<T>> {
        Ok(ReducingState {
            value: ValueState {
                id: register(self, descriptor.meta())?,
                ttl: descriptor.meta().ttl,
                _type: PhantomData,
            },
            reduce: Arc::clone(descriptor.reduce_fn()),
        })
    }

    /// Registers an [`AggregatingState`].
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn aggregating_state<A: AggregateFunction>(
        &mut self,
        descriptor: &AggregatingStateDescriptor<A>,
    ) -> Result<AggregatingState<A>> {
        Ok(AggregatingState {
            accumulator: ValueState {
                id: register(self, descriptor.meta())?,
                ttl: descriptor.meta().ttl,
                _type: PhantomData,
            },
            function: Arc::clone(descriptor.function()),
        })
    }

    /// Serializes `key` with postcard and makes it the current key.
    ///
    /// # Errors
    /// See [`KeyedStateBackend::set_current_key`].
    fn set_current_key_typed<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<()> {
        with_scratch(|bytes| {
            encode_value_into(key, bytes)?;
            self.set_current_key(bytes)
        })
    }
}

impl<B: KeyedStateBackend + ?Sized> KeyedStateBackendExt for B {}

fn register<B: KeyedStateBackend + ?Sized>(backend: &mut B, meta: &StateMeta) -> Result<StateId> {
    meta.validate_user_state()?;
    backend.register_state(meta)
}

/// One value per key (Flink's `ValueState`).
#[derive(Debug)]
pub struct ValueState<T> {
    id: StateId,
    ttl: Option<TtlConfig>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ValueState<T> {}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.id
    }

    /// The current key's value, `None` when unset or expired.
    ///
    /// # Errors
    /// Backend errors, or [`crate::ErrorKind::Serialization`] when the stored
    /// bytes are not a `T`.
    pub fn value<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Option<T>> {
        let now = now_for(self.ttl, backend);
        let value = match backend.get(self.id)? {
            None => return Ok(None),
            Some(stored) => match live_payload(&stored, self.ttl, now)? {
                None => None,
                Some(payload) => Some(decode_value::<T>(payload)?),
            },
        };
        match &value {
            // Expired values are removed when seen, so they stop costing space.
            None => backend.clear(self.id)?,
            Some(v) if refreshes_on_read(self.ttl) => self.update(backend, v)?,
            Some(_) => {}
        }
        Ok(value)
    }

    /// Sets the current key's value.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn update<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, value: &T) -> Result<()> {
        with_scratch(|bytes| {
            encode_stored(value, self.ttl, backend, bytes)?;
            backend.put(self.id, bytes)
        })
    }

    /// Sets the current key's value to `update(value)`, where `value` is
    /// what [`ValueState::value`] would return: a running count's
    /// read-modify-write, in one lookup on backends that keep cells in hash
    /// tables ([`KeyedStateBackend::update_cell`]). Under a TTL it reads
    /// with [`ValueState::value`] and writes with [`ValueState::update`].
    ///
    /// ```
    /// use streamstate_api::{KeyedStateBackend, ValueState};
    /// /// Counts one more of the current key.
    /// fn count_one(backend: &mut dyn KeyedStateBackend, counts: ValueState<u64>) -> streamstate_api::Result<()> {
    ///     counts.update_with(backend, |count| count.unwrap_or(0) + 1)
    /// }
    /// ```
    ///
    /// # Errors
    /// Backend errors, or [`crate::ErrorKind::Serialization`] when the stored
    /// bytes are not a `T` (the value then unchanged).
    pub fn update_with<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        update: impl FnOnce(Option<T>) -> T,
    ) -> Result<()> {
        if self.ttl.is_some() {
            let value = update(self.value(backend)?);
            return self.update(backend, &value);
        }
        let mut update = Some(update);
        backend.update_cell(self.id, &mut |old, new| {
            let old = old.map(decode_value::<T>).transpose()?;
            let update = update
                .take()
                .ok_or_else(|| crate::Error::invalid_argument("update_cell called its update twice"))?;
            encode_value_into(&update(old), new)
        })
    }

    /// Calls `visit(key, value)` for every key of `key_group` with a live
    /// value, in serialized key order (the key as serialized bytes): a
    /// bounded job's final results, without a lookup per key on backends
    /// that walk their cells in place
    /// ([`KeyedStateBackend::for_each_cell_in_key_group`]). May change the
    /// current key. Expired values are skipped (and left for
    /// [`ValueState::value`] to remove); under a TTL that refreshes on
    /// read, each key is read with [`ValueState::value`], which refreshes it.
    ///
    /// ```
    /// use streamstate_api::{KeyedStateBackend, ValueState};
    /// /// One key group's keys (serialized `String`s) and their counts.
    /// fn counts_of_group(
    ///     backend: &mut dyn KeyedStateBackend,
    ///     counts: ValueState<u64>,
    ///     key_group: u32,
    /// ) -> streamstate_api::Result<Vec<(String, u64)>> {
    ///     let mut found = Vec::new();
    ///     counts.for_each_in_key_group(backend, key_group, |key, count| {
    ///         found.push((streamstate_api::codec::decode_value(key)?, count));
    ///         Ok(())
    ///     })?;
    ///     Ok(found)
    /// }
    /// ```
    ///
    /// # Errors
    /// Backend errors, [`crate::ErrorKind::Serialization`] when stored bytes
    /// are not a `T`, and the first error `visit` returns.
    pub fn for_each_in_key_group<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        key_group: u32,
        visit: impl FnMut(&[u8], T) -> Result<()>,
    ) -> Result<()> {
        self.visit_key_group(backend, key_group, true, visit)
    }

    /// [`ValueState::for_each_in_key_group`] in whatever order the backend
    /// keeps its cells
    /// ([`KeyedStateBackend::for_each_cell_in_key_group_unordered`]): for
    /// readers that need every value but no order, such as a bounded job's
    /// final results.
    ///
    /// # Errors
    /// As [`ValueState::for_each_in_key_group`].
    pub fn for_each_in_key_group_unordered<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        key_group: u32,
        visit: impl FnMut(&[u8], T) -> Result<()>,
    ) -> Result<()> {
        self.visit_key_group(backend, key_group, false, visit)
    }

    fn visit_key_group<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        key_group: u32,
        in_key_order: bool,
        mut visit: impl FnMut(&[u8], T) -> Result<()>,
    ) -> Result<()> {
        if refreshes_on_read(self.ttl) {
            for key in backend.keys_in_key_group(self.id, key_group)? {
                backend.set_current_key(&key)?;
                if let Some(value) = self.value(backend)? {
                    visit(&key, value)?;
                }
            }
            return Ok(());
        }
        let (ttl, now) = (self.ttl, now_for(self.ttl, backend));
        let mut visit_live = |key: &[u8], stored: &[u8]| match live_payload(stored, ttl, now)? {
            Some(payload) => visit(key, decode_value::<T>(payload)?),
            None => Ok(()),
        };
        if in_key_order {
            backend.for_each_cell_in_key_group(self.id, key_group, &mut visit_live)
        } else {
            backend.for_each_cell_in_key_group_unordered(self.id, key_group, &mut visit_live)
        }
    }

    /// Removes the current key's value.
    ///
    /// # Errors
    /// Backend errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<()> {
        backend.clear(self.id)
    }
}

/// An appendable list per key (Flink's `ListState`).
#[derive(Debug)]
pub struct ListState<T> {
    id: StateId,
    ttl: Option<TtlConfig>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ListState<T> {}

impl<T: Serialize + DeserializeOwned> ListState<T> {
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.id
    }

    fn frame(&self, backend: &(impl KeyedStateBackend + ?Sized), value: &T, out: &mut Vec<u8>) -> Result<()> {
        with_scratch(|element| {
            encode_stored(value, self.ttl, backend, element)?;
            put_varint(out, element.len() as u64);
            out.extend_from_slice(element);
            Ok(())
        })
    }

    /// The current key's elements in insertion order; empty when unset.
    /// Expired elements are skipped.
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Vec<T>> {
        let now = now_for(self.ttl, backend);
        let mut elements = Vec::new();
        // Frames of live elements, kept as stored so their expiry survives a
        // rewrite that only drops expired elements.
        let mut live_frames = Vec::new();
        let mut saw_expired = false;
        if let Some(cell) = backend.get(self.id)? {
            let mut rest: &[u8] = &cell;
            while !rest.is_empty() {
                let frame = get_length_prefixed(&mut rest)?;
                match live_payload(frame, self.ttl, now)? {
                    Some(payload) => {
                        elements.push(decode_value::<T>(payload)?);
                        if self.ttl.is_some() {
                            put_varint(&mut live_frames, frame.len() as u64);
                            live_frames.extend_from_slice(frame);
                        }
                    }
                    None => saw_expired = true,
                }
            }
        }
        if refreshes_on_read(self.ttl) && !elements.is_empty() {
            self.update(backend, &elements)?;
        } else if saw_expired {
            if live_frames.is_empty() {
                backend.clear(self.id)?;
            } else {
                backend.put(self.id, &live_frames)?;
            }
        }
        Ok(elements)
    }

    /// Appends one element.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn add<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, value: &T) -> Result<()> {
        with_scratch(|frame| {
            self.frame(backend, value, frame)?;
            backend.append(self.id, frame)
        })
    }

    /// Appends all `values` in order.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn add_all<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, values: &[T]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let mut frames = Vec::new();
        for value in values {
            self.frame(backend, value, &mut frames)?;
        }
        backend.append(self.id, &frames)
    }

    /// Replaces the list; an empty `values` clears it.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn update<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, values: &[T]) -> Result<()> {
        if values.is_empty() {
            return backend.clear(self.id);
        }
        let mut frames = Vec::new();
        for value in values {
            self.frame(backend, value, &mut frames)?;
        }
        backend.put(self.id, &frames)
    }

    /// Removes the current key's list.
    ///
    /// # Errors
    /// Backend errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<()> {
        backend.clear(self.id)
    }
}

/// A map per key (Flink's `MapState`). Entries iterate in the order of their
/// serialized user keys.
#[derive(Debug)]
pub struct MapState<K, V> {
    id: StateId,
    ttl: Option<TtlConfig>,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for MapState<K, V> {}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.id
    }

    /// The value under `user_key`, `None` when absent or expired.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, user_key: &K) -> Result<Option<V>> {
        let mut uk = Vec::new();
        encode_value_into(user_key, &mut uk)?;
        let now = now_for(self.ttl, backend);
        let value = match backend.map_get(self.id, &uk)? {
            None => return Ok(None),
            Some(stored) => match live_payload(&stored, self.ttl, now)? {
                None => None,
                Some(payload) => Some(decode_value::<V>(payload)?),
            },
        };
        match &value {
            None => backend.map_remove(self.id, &uk)?,
            Some(v) if refreshes_on_read(self.ttl) => self.put(backend, user_key, v)?,
            Some(_) => {}
        }
        Ok(value)
    }

    /// Inserts or replaces the value under `user_key`.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn put<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, user_key: &K, value: &V) -> Result<()> {
        with_scratch(|uk| {
            encode_value_into(user_key, uk)?;
            with_scratch(|bytes| {
                encode_stored(value, self.ttl, backend, bytes)?;
                backend.map_put(self.id, uk, bytes)
            })
        })
    }

    /// Removes `user_key`'s entry.
    ///
    /// # Errors
    /// Backend or serialization errors.
    pub fn remove<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, user_key: &K) -> Result<()> {
        with_scratch(|uk| {
            encode_value_into(user_key, uk)?;
            backend.map_remove(self.id, uk)
        })
    }

    /// Whether a live entry exists under `user_key`.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn contains<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, user_key: &K) -> Result<bool> {
        Ok(self.get(backend, user_key)?.is_some())
    }

    /// All live entries, ordered by serialized user key.
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn entries<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Vec<(K, V)>> {
        let now = now_for(self.ttl, backend);
        let mut live = Vec::new();
        let mut expired = Vec::new();
        for (uk, stored) in backend.map_entries(self.id)? {
            match live_payload(&stored, self.ttl, now)? {
                Some(payload) => live.push((decode_value::<K>(&uk)?, decode_value::<V>(payload)?)),
                None => expired.push(uk),
            }
        }
        for uk in expired {
            backend.map_remove(self.id, &uk)?;
        }
        Ok(live)
    }

    /// All live user keys, ordered by their serialized bytes.
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn keys<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Vec<K>> {
        Ok(self.entries(backend)?.into_iter().map(|(k, _)| k).collect())
    }

    /// Whether the current key's map has no live entry.
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn is_empty<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<bool> {
        Ok(self.entries(backend)?.is_empty())
    }

    /// Removes all of the current key's entries.
    ///
    /// # Errors
    /// Backend errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<()> {
        backend.clear(self.id)
    }
}

/// One value per key folded with a reduce function (Flink's `ReducingState`).
pub struct ReducingState<T> {
    value: ValueState<T>,
    reduce: ReduceFn<T>,
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        Self {
            value: self.value,
            reduce: Arc::clone(&self.reduce),
        }
    }
}

impl<T> std::fmt::Debug for ReducingState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducingState")
            .field("id", &self.value.id)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> ReducingState<T> {
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.value.id
    }

    /// The reduced value, `None` when nothing was added (or it expired).
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Option<T>> {
        self.value.value(backend)
    }

    /// Folds `value` into the current key's reduced value.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn add<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, value: T) -> Result<()> {
        let next = match self.value.value(backend)? {
            Some(current) => (self.reduce)(&current, &value),
            None => value,
        };
        self.value.update(backend, &next)
    }

    /// Removes the current key's value.
    ///
    /// # Errors
    /// Backend errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<()> {
        self.value.clear(backend)
    }
}

/// One accumulator per key folded with an [`AggregateFunction`] (Flink's
/// `AggregatingState`).
pub struct AggregatingState<A: AggregateFunction> {
    accumulator: ValueState<A::Acc>,
    function: Arc<A>,
}

impl<A: AggregateFunction> Clone for AggregatingState<A> {
    fn clone(&self) -> Self {
        Self {
            accumulator: self.accumulator,
            function: Arc::clone(&self.function),
        }
    }
}

impl<A: AggregateFunction> std::fmt::Debug for AggregatingState<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregatingState")
            .field("id", &self.accumulator.id)
            .finish_non_exhaustive()
    }
}

impl<A: AggregateFunction> AggregatingState<A> {
    /// The state's id in its backend.
    pub fn id(&self) -> StateId {
        self.accumulator.id
    }

    /// The aggregate's result, `None` when nothing was added (or it expired).
    ///
    /// # Errors
    /// Backend or deserialization errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Option<A::Out>> {
        Ok(self
            .accumulator
            .value(backend)?
            .map(|acc| self.function.get_result(&acc)))
    }

    /// Folds `value` into the current key's accumulator.
    ///
    /// # Errors
    /// Backend or (de)serialization errors.
    pub fn add<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, value: &A::In) -> Result<()> {
        let acc = match self.accumulator.value(backend)? {
            Some(acc) => acc,
            None => self.function.create_accumulator(),
        };
        self.accumulator.update(backend, &self.function.add(value, acc))
    }

    /// Removes the current key's accumulator.
    ///
    /// # Errors
    /// Backend errors.
    pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<()> {
        self.accumulator.clear(backend)
    }
}
