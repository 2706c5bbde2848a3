//! [`NamespacedValueState`]: one value per key and namespace.

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{decode_value, encode_value_into, with_scratch};
use crate::Result;

use super::cells::{namespaces_of, read_cell, with_namespace, Marker};

/// One value per key and namespace (Flink's `InternalValueState`).
#[derive(Debug)]
pub struct NamespacedValueState<N, T> {
    pub(super) id: StateId,
    pub(super) _type: Marker<(N, T)>,
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
