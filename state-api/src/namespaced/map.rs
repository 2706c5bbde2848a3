//! [`NamespacedMapState`]: a map per key and namespace, its entries
//! stored under `varint len(namespace) | namespace | user key`.

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{decode_value, encode_value_into, get_varint, put_varint, with_scratch};
use crate::{Error, Result};

use super::cells::{read_cell, with_namespace, Marker};

/// A map per key and namespace (Flink's `InternalMapState`). Entries
/// iterate in the order of their serialized user keys.
#[derive(Debug)]
pub struct NamespacedMapState<N, K, V> {
    pub(super) id: StateId,
    pub(super) _type: Marker<(N, K, V)>,
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
