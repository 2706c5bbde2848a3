//! What the namespaced handles share: the type marker, the namespace
//! serialized for a call, a cell read, and the namespaces of a key.

use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{decode_value, encode_value_into, with_scratch};
use crate::Result;

/// The type marker of a handle: it holds no value of its types.
pub(crate) type Marker<T> = PhantomData<fn() -> T>;

/// Calls `f` with the namespace serialized.
pub(crate) fn with_namespace<N: Serialize + ?Sized, R>(namespace: &N, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
    with_scratch(|ns| {
        encode_value_into(namespace, ns)?;
        f(ns)
    })
}

/// The current key's cell of `state` in the serialized namespace, decoded.
pub(crate) fn read_cell<B: KeyedStateBackend + ?Sized, R>(
    backend: &B,
    state: StateId,
    ns: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<Option<R>> {
    backend.map_get(state, ns)?.map(|cell| decode(&cell)).transpose()
}

/// The namespaces in which the current key has an entry of `state`,
/// decoded, in the order of their serialized bytes.
pub(crate) fn namespaces_of<B: KeyedStateBackend + ?Sized, N: DeserializeOwned>(
    backend: &B,
    state: StateId,
) -> Result<Vec<N>> {
    backend
        .map_entries(state)?
        .iter()
        .map(|(ns, _)| decode_value(ns))
        .collect()
}
