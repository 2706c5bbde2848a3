//! [`NamespacedListState`]: an appendable list per key and namespace,
//! stored as one cell of length-prefixed frames per namespace.

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{decode_value, encode_value_into, get_length_prefixed, put_varint, with_scratch};
use crate::Result;

use super::cells::{namespaces_of, read_cell, with_namespace, Marker};

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

/// An appendable list per key and namespace (Flink's `InternalListState`).
#[derive(Debug)]
pub struct NamespacedListState<N, T> {
    pub(super) id: StateId,
    pub(super) _type: Marker<(N, T)>,
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
