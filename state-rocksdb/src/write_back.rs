//! A bounded write-back buffer for cell states (value, list, reducing,
//! aggregating): the latest value of recently written keys, kept in a hash
//! map and written to RocksDB in one `WriteBatch` when the buffer is full and
//! before every snapshot.
//!
//! A read-modify-write per record (a running count) then costs a hash lookup
//! for keys written since the last flush instead of a RocksDB get and put,
//! and RocksDB receives batches instead of single writes. Hot keys of a
//! skewed stream stay in the buffer between flushes. Map states bypass it:
//! their entries are read by prefix scans, which must see every write.
//!
//! Invariant: a buffered key's value (or removal, `None`) supersedes what
//! RocksDB holds for it; reads check the buffer first.

use std::collections::HashMap;

use rocksdb::{ColumnFamily, WriteBatch};
use state_api::StateId;

type FastHasher = foldhash::fast::RandomState;

/// One state's buffered cells: RocksDB key to latest value (`None`: removed).
type Cells = HashMap<Box<[u8]>, Option<Vec<u8>>, FastHasher>;

/// Buffered cells: per state, RocksDB key to latest value (`None`: removed).
#[derive(Debug)]
pub(crate) struct WriteBack {
    states: Vec<Cells>,
    entries: usize,
    capacity: usize,
}

/// What the buffer knows of a key.
pub(crate) enum Buffered<'a> {
    /// Not buffered: RocksDB has the answer.
    Unknown,
    /// Buffered with this value, or removed (`None`).
    Known(Option<&'a [u8]>),
}

impl WriteBack {
    /// A buffer of at most `capacity` keys (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            states: Vec::new(),
            entries: 0,
            capacity,
        }
    }

    /// Whether writes go through the buffer at all.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Whether the buffer has reached its capacity and must be flushed.
    pub(crate) fn is_full(&self) -> bool {
        self.entries >= self.capacity
    }

    /// Whether nothing is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    fn state_mut(&mut self, state: StateId) -> &mut Cells {
        if self.states.len() <= state {
            self.states
                .resize_with(state + 1, || HashMap::with_hasher(FastHasher::default()));
        }
        &mut self.states[state]
    }

    /// The buffered value of `key` in `state`.
    pub(crate) fn get(&self, state: StateId, key: &[u8]) -> Buffered<'_> {
        match self.states.get(state).and_then(|cells| cells.get(key)) {
            None => Buffered::Unknown,
            Some(value) => Buffered::Known(value.as_deref()),
        }
    }

    /// Buffers `value` (or a removal) as `key`'s latest.
    pub(crate) fn put(&mut self, state: StateId, key: &[u8], value: Option<&[u8]>) {
        let cells = self.state_mut(state);
        match cells.get_mut(key) {
            Some(slot) => match (slot.as_mut(), value) {
                // Reuse the buffer's allocation for the common overwrite.
                (Some(old), Some(new)) => {
                    old.clear();
                    old.extend_from_slice(new);
                }
                _ => *slot = value.map(<[u8]>::to_vec),
            },
            None => {
                cells.insert(key.into(), value.map(<[u8]>::to_vec));
                self.entries += 1;
            }
        }
    }

    /// Appends `bytes` to a buffered cell; `false` when `key` is not
    /// buffered (the caller merges in RocksDB instead).
    pub(crate) fn append(&mut self, state: StateId, key: &[u8], bytes: &[u8]) -> bool {
        match self.states.get_mut(state).and_then(|cells| cells.get_mut(key)) {
            None => false,
            Some(slot) => {
                slot.get_or_insert_with(Vec::new).extend_from_slice(bytes);
                true
            }
        }
    }

    /// Moves every buffered write into `batch`; `cf_of` finds each state's
    /// column family. Nothing is taken out unless every family is found.
    ///
    /// # Errors
    /// `cf_of`'s error, with the buffer unchanged.
    pub(crate) fn drain_into<'a>(
        &mut self,
        batch: &mut WriteBatch,
        cf_of: impl Fn(StateId) -> state_api::Result<&'a ColumnFamily>,
    ) -> state_api::Result<()> {
        let families = (0..self.states.len())
            .map(|state| {
                if self.states[state].is_empty() {
                    Ok(None)
                } else {
                    cf_of(state).map(Some)
                }
            })
            .collect::<state_api::Result<Vec<_>>>()?;
        for (cells, cf) in self.states.iter_mut().zip(families) {
            let Some(cf) = cf else {
                continue;
            };
            for (key, value) in cells.drain() {
                match value {
                    Some(value) => batch.put_cf(cf, key, value),
                    None => batch.delete_cf(cf, key),
                }
            }
        }
        self.entries = 0;
        Ok(())
    }

    /// Buffered keys of `state`: those with a value and those removed.
    pub(crate) fn keys(&self, state: StateId) -> impl Iterator<Item = (&[u8], bool)> {
        self.states
            .get(state)
            .into_iter()
            .flat_map(|cells| cells.iter().map(|(k, v)| (&**k, v.is_some())))
    }
}
