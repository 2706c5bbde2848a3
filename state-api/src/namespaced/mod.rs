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

use crate::backend::{KeyedStateBackend, StateId};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    StateMeta, ValueStateDescriptor,
};
use crate::{Error, ErrorKind, Result};

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

mod cells;
mod folding;
mod list;
mod map;
mod value;

pub use folding::{NamespacedAggregatingState, NamespacedReducingState};
pub use list::NamespacedListState;
pub use map::NamespacedMapState;
pub use value::NamespacedValueState;

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
