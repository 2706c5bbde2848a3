//! Operator (non-keyed) list state, such as source offsets.
//!
//! Each parallel instance keeps named lists of elements. On restore with a
//! different parallelism every list's elements from all old instances are
//! pooled and split into even, contiguous shares (Flink's split-distribute
//! redistribution), so no element is lost or duplicated. A *union* list
//! ([`OperatorStateStore::union_list_state`], Flink's union redistribution)
//! instead gives every new instance all elements, for state an instance
//! re-splits itself (a file source's unread byte ranges).
//!
//! The snapshot file is `"SSOPSTAT" | version u32 LE | postcard(map)`, and is
//! listed in the manifest with its CRC-32C like every other file.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};

use crate::backend::{FileRef, SnapshotTarget};
use crate::codec::{decode_value, encode_value};
use crate::snapshot::manifest::OperatorStateHandle;
use crate::storage::CheckpointStorage;
use crate::{Error, ErrorKind, Result};

const MAGIC: &[u8; 8] = b"SSOPSTAT";
const VERSION: u32 = 1;

/// Names of union lists start with this (the snapshot format has no other
/// place for the mode, and old snapshots have no such names).
pub const UNION_PREFIX: &str = "union:";

/// Named lists of serialized elements: one operator instance's state.
pub type OperatorStateMap = BTreeMap<String, Vec<Vec<u8>>>;

/// The operator state of one parallel instance.
///
/// ```
/// use streamstate_api::operator_state::OperatorStateStore;
/// let mut store = OperatorStateStore::default();
/// let offsets = store.list_state::<u64>("offsets");
/// offsets.update(&mut store, &[42]).unwrap();
/// assert_eq!(offsets.get(&store).unwrap(), vec![42]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStateStore {
    states: OperatorStateMap,
}

impl OperatorStateStore {
    /// A store holding `states` (as restored).
    pub fn from_map(states: OperatorStateMap) -> Self {
        Self { states }
    }

    /// The raw lists.
    pub fn as_map(&self) -> &OperatorStateMap {
        &self.states
    }

    /// A typed handle on the list named `name`, split between the new
    /// instances on a restore at another parallelism.
    pub fn list_state<T>(&mut self, name: &str) -> OperatorListState<T> {
        self.states.entry(name.to_owned()).or_default();
        OperatorListState {
            name: name.to_owned(),
            _type: PhantomData,
        }
    }

    /// A typed handle on the *union* list named `name`: on restore every
    /// instance gets the elements of all old instances (Flink's
    /// `getUnionListState`), whatever the parallelism.
    ///
    /// ```
    /// use streamstate_api::operator_state::{redistribute, OperatorStateStore};
    /// let mut old = Vec::new();
    /// for offset in [10u64, 20] {
    ///     let mut store = OperatorStateStore::default();
    ///     store.union_list_state::<u64>("offsets").update(&mut store, &[offset]).unwrap();
    ///     old.push(store.as_map().clone());
    /// }
    /// for share in redistribute(old, 3) {
    ///     let mut store = OperatorStateStore::from_map(share);
    ///     assert_eq!(store.union_list_state::<u64>("offsets").get(&store).unwrap(), vec![10, 20]);
    /// }
    /// ```
    pub fn union_list_state<T>(&mut self, name: &str) -> OperatorListState<T> {
        self.list_state(&format!("{UNION_PREFIX}{name}"))
    }

    /// Encodes the store as a snapshot file's bytes.
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] if encoding fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&encode_value(&self.states)?);
        Ok(out)
    }

    /// Decodes a snapshot file's bytes.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] or [`ErrorKind::IncompatibleVersion`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(Error::corrupt("operator state file has no SSOPSTAT header"));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(Error::new(
                ErrorKind::IncompatibleVersion,
                format!("operator state version {version}; this build reads {VERSION}"),
            ));
        }
        let states =
            decode_value(&bytes[12..]).map_err(|e| Error::corrupt(format!("operator state does not decode: {e}")))?;
        Ok(Self { states })
    }

    /// Writes the store into `target`'s exclusive directory.
    ///
    /// # Errors
    /// Storage errors naming the file.
    pub fn write(
        &self,
        storage: &CheckpointStorage,
        target: &SnapshotTarget,
        subtask: u32,
    ) -> Result<OperatorStateHandle> {
        let path = target.exclusive_file(&format!("{}.opstate", target.file_stem));
        let file: FileRef = storage.write(&path, self.to_bytes()?)?;
        Ok(OperatorStateHandle { subtask, file })
    }

    /// Reads the stores of `handles` (checksums verified) and splits them
    /// over `parallelism` instances; returns the store of `subtask`.
    ///
    /// # Errors
    /// Storage, [`ErrorKind::ChecksumMismatch`] or [`ErrorKind::Corrupt`]
    /// errors naming the file.
    pub fn restore(
        storage: &CheckpointStorage,
        handles: &[OperatorStateHandle],
        parallelism: u32,
        subtask: u32,
    ) -> Result<Self> {
        let mut sorted: Vec<&OperatorStateHandle> = handles.iter().collect();
        sorted.sort_by_key(|h| h.subtask);
        let mut old = Vec::with_capacity(sorted.len());
        for handle in sorted {
            let bytes = storage.read_verified(&handle.file)?;
            old.push(
                Self::from_bytes(&bytes)
                    .map_err(|e| e.with_context("file", handle.file.path.clone()))?
                    .states,
            );
        }
        let mut shares = redistribute(old, parallelism);
        let index = subtask as usize;
        if index >= shares.len() {
            return Err(Error::invalid_argument(format!(
                "subtask {subtask} of parallelism {parallelism}"
            )));
        }
        Ok(Self::from_map(shares.swap_remove(index)))
    }
}

/// Pools every list's elements (in old-subtask order) and splits them into
/// `parallelism` contiguous shares whose sizes differ by at most one; a
/// union list (name starting with [`UNION_PREFIX`]) goes whole to every
/// share.
///
/// ```
/// use std::collections::BTreeMap;
/// use streamstate_api::operator_state::redistribute;
/// let old = vec![BTreeMap::from([("o".to_string(), vec![vec![1], vec![2], vec![3]])])];
/// let new = redistribute(old, 2);
/// assert_eq!(new[0]["o"], vec![vec![1], vec![2]]);
/// assert_eq!(new[1]["o"], vec![vec![3]]);
/// ```
pub fn redistribute(old: Vec<OperatorStateMap>, parallelism: u32) -> Vec<OperatorStateMap> {
    let parallelism = parallelism.max(1) as usize;
    let mut pooled: OperatorStateMap = BTreeMap::new();
    for map in old {
        for (name, elements) in map {
            pooled.entry(name).or_default().extend(elements);
        }
    }
    let mut shares = vec![OperatorStateMap::new(); parallelism];
    for (name, elements) in pooled {
        if name.starts_with(UNION_PREFIX) {
            for share in shares.iter_mut() {
                share.insert(name.clone(), elements.clone());
            }
            continue;
        }
        let (base, extra) = (elements.len() / parallelism, elements.len() % parallelism);
        let mut iter = elements.into_iter();
        for (i, share) in shares.iter_mut().enumerate() {
            let n = base + usize::from(i < extra);
            share.insert(name.clone(), iter.by_ref().take(n).collect());
        }
    }
    shares
}

/// A typed handle on one named list of an [`OperatorStateStore`].
#[derive(Debug, Clone)]
pub struct OperatorListState<T> {
    name: String,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> OperatorListState<T> {
    /// The elements.
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] when an element is not a `T`.
    pub fn get(&self, store: &OperatorStateStore) -> Result<Vec<T>> {
        store
            .states
            .get(&self.name)
            .map(|elements| elements.iter().map(|e| decode_value(e)).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Replaces the elements.
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] when an element cannot be encoded.
    pub fn update(&self, store: &mut OperatorStateStore, values: &[T]) -> Result<()> {
        let encoded = values.iter().map(encode_value).collect::<Result<Vec<_>>>()?;
        store.states.insert(self.name.clone(), encoded);
        Ok(())
    }

    /// Appends one element.
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] when it cannot be encoded.
    pub fn add(&self, store: &mut OperatorStateStore, value: &T) -> Result<()> {
        let encoded = encode_value(value)?;
        store.states.entry(self.name.clone()).or_default().push(encoded);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn redistribution_keeps_every_element_once(
            sizes in proptest::collection::vec(0usize..20, 1..6),
            parallelism in 1u32..8,
        ) {
            let mut next = 0u32;
            let old: Vec<OperatorStateMap> = sizes.iter().map(|&n| {
                let elements = (0..n).map(|_| { next += 1; next.to_le_bytes().to_vec() }).collect();
                BTreeMap::from([("offsets".to_owned(), elements)])
            }).collect();
            let new = redistribute(old, parallelism);
            prop_assert_eq!(new.len(), parallelism as usize);
            let all: Vec<Vec<u8>> = new.iter().flat_map(|m| m["offsets"].clone()).collect();
            let expected: Vec<Vec<u8>> = (1..=next).map(|i| i.to_le_bytes().to_vec()).collect();
            prop_assert_eq!(all, expected);
            let lens: Vec<usize> = new.iter().map(|m| m["offsets"].len()).collect();
            prop_assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn bytes_round_trip_and_reject_garbage() {
        let mut store = OperatorStateStore::default();
        let s = store.list_state::<String>("names");
        s.add(&mut store, &"a".to_owned()).unwrap();
        let back = OperatorStateStore::from_bytes(&store.to_bytes().unwrap()).unwrap();
        assert_eq!(back, store);
        assert_eq!(
            OperatorStateStore::from_bytes(b"junk").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
