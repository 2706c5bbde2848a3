//! A bounded write-back cache for cell states (value, list, reducing,
//! aggregating): the latest value of recently used keys, kept in a hash map.
//!
//! A read-modify-write per record (a running count) then costs a hash lookup
//! for cached keys instead of a RocksDB get and put. Entries are *dirty*
//! (newer than RocksDB) or *clean* (written, kept for reads). The dirty
//! entries are written to RocksDB in one `WriteBatch` whenever they reach
//! the dirty limit and before canonical snapshots; they stay cached, clean,
//! so hot keys stay cached across writes and checkpoints. A native snapshot
//! copies the dirty entries into its pending-cells file instead
//! ([`crate::write_path::pending_cells`]) and leaves them dirty. A
//! cache holding `capacity` keys is written and emptied. The dirty limit
//! (at most `MAX_DIRTY_ENTRIES`) bounds what a snapshot's synchronous phase
//! writes; the larger capacity holds the hot keys of a skewed stream.
//! (Writing dirty entries far more often, every 2,048, cost 1.5–4× the
//! word count's throughput: hot keys were written to RocksDB that much more
//! often.) Map states bypass the cache: their entries are read by prefix
//! scans, which must see every write.
//!
//! Invariant: a cached key's value (or removal, `None`) is what a read must
//! return; a clean entry equals what RocksDB holds. Anything that writes a
//! cached key to RocksDB directly must [`WriteBack::clear`] first.
//!
//! For changelog checkpoints ([`crate::snapshots::changelog`]) an entry is also
//! *unlogged* while its latest value is in no changelog piece yet: it is
//! logged when the cache writes it to RocksDB or when a checkpoint takes
//! the unlogged entries, whichever comes first, so each change reaches the
//! changelog once. Unlogged entries are always dirty.

use std::collections::HashMap;

use rocksdb::{ColumnFamily, WriteBatch};
use streamstate_api::StateId;

use crate::write_path::pending_cells::{PendingCellsWriter, WriteLog, WriteOp};

type FastHasher = foldhash::fast::RandomState;

/// One cached cell: the latest value (`None`: removed) and whether RocksDB
/// has it yet.
#[derive(Debug)]
struct Slot {
    value: Option<Vec<u8>>,
    dirty: bool,
    /// Changed since the changelog last took this entry.
    unlogged: bool,
}

/// One state's cached cells, by RocksDB key.
type Cells = HashMap<Box<[u8]>, Slot, FastHasher>;

/// Cached cells of every state.
#[derive(Debug)]
pub(crate) struct WriteBack {
    states: Vec<Cells>,
    entries: usize,
    dirty: usize,
    capacity: usize,
    dirty_limit: usize,
}

/// The most dirty entries a cache holds before writing them (a memtable
/// insert each):
/// what a savepoint's synchronous phase may have to write, and what a
/// checkpoint's pending-cells file holds, unless writes held back for the
/// previous checkpoint were still held back when it began
/// ([`WriteBack::beyond_hold_back_limits`]).
pub(crate) const MAX_DIRTY_ENTRIES: usize = 16_384;

/// What the cache knows of a key.
pub(crate) enum Buffered<'a> {
    /// Not cached: RocksDB has the answer.
    Unknown,
    /// Cached with this value, or removed (`None`).
    Known(Option<&'a [u8]>),
}

impl WriteBack {
    /// A cache of at most `capacity` keys (0 disables it), of which at most
    /// half, and at most `MAX_DIRTY_ENTRIES`, dirty.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            states: Vec::new(),
            entries: 0,
            dirty: 0,
            capacity,
            dirty_limit: (capacity / 2).clamp(1, MAX_DIRTY_ENTRIES),
        }
    }

    /// Whether writes go through the cache at all.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Whether the cache holds `capacity` keys and must be written and
    /// emptied.
    pub(crate) fn is_full(&self) -> bool {
        self.entries >= self.capacity
    }

    /// Whether the dirty entries reached the dirty limit and must be
    /// written (the cache keeps them, clean).
    pub(crate) fn must_write(&self) -> bool {
        self.dirty >= self.dirty_limit
    }

    /// Whether the cache, while RocksDB must not be written (a checkpoint
    /// is being made), can hold no more: twice its capacity in entries, or
    /// its capacity dirty. Until then it keeps writes it would otherwise
    /// have written, and the task thread goes on instead of waiting for the
    /// checkpoint; once it is made, the next write writes them all.
    ///
    /// Why that much: making the checkpoint `fsync`s, and on a shared disk
    /// an `fsync` now and then takes hundreds of milliseconds, longer than
    /// twice the dirty limit (the bound before) held a word count's writes
    /// (docs/BENCHMARKS.md). The cost is memory during such a stall
    /// (the capacity's ~15 MiB again at the default), and a snapshot that
    /// begins while writes are still held back copies up to the capacity's
    /// cells.
    pub(crate) fn beyond_hold_back_limits(&self) -> bool {
        self.entries >= 2 * self.capacity || self.dirty >= self.capacity.max(2 * self.dirty_limit)
    }

    /// Whether some entry is newer than RocksDB.
    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty > 0
    }

    /// How many entries are newer than RocksDB.
    pub(crate) fn dirty_entries(&self) -> usize {
        self.dirty
    }

    fn state_mut(&mut self, state: StateId) -> &mut Cells {
        if self.states.len() <= state {
            self.states
                .resize_with(state + 1, || HashMap::with_hasher(FastHasher::default()));
        }
        &mut self.states[state]
    }

    /// The cached value of `key` in `state`.
    pub(crate) fn get(&self, state: StateId, key: &[u8]) -> Buffered<'_> {
        match self.states.get(state).and_then(|cells| cells.get(key)) {
            None => Buffered::Unknown,
            Some(slot) => Buffered::Known(slot.value.as_deref()),
        }
    }

    /// Caches `value` (or a removal) as `key`'s latest, dirty.
    pub(crate) fn put(&mut self, state: StateId, key: &[u8], value: Option<&[u8]>) {
        let cells = self.state_mut(state);
        let newly_dirty = match cells.get_mut(key) {
            Some(slot) => {
                match (slot.value.as_mut(), value) {
                    // Reuse the allocation for the common overwrite.
                    (Some(old), Some(new)) => {
                        old.clear();
                        old.extend_from_slice(new);
                    }
                    _ => slot.value = value.map(<[u8]>::to_vec),
                }
                slot.unlogged = true;
                !std::mem::replace(&mut slot.dirty, true)
            }
            None => {
                cells.insert(
                    key.into(),
                    Slot {
                        value: value.map(<[u8]>::to_vec),
                        dirty: true,
                        unlogged: true,
                    },
                );
                self.entries += 1;
                true
            }
        };
        if newly_dirty {
            self.dirty += 1;
        }
    }

    /// Room left before the cache is full: how many keys
    /// [`WriteBack::insert_clean`] may add.
    pub(crate) fn room(&self) -> usize {
        self.capacity.saturating_sub(self.entries)
    }

    /// Caches what RocksDB holds for `key` (`None`: nothing), clean: a
    /// prefetch read it. A key already cached keeps its entry, which may be
    /// newer than RocksDB.
    pub(crate) fn insert_clean(&mut self, state: StateId, key: &[u8], value: Option<&[u8]>) {
        let cells = self.state_mut(state);
        if cells.contains_key(key) {
            return;
        }
        cells.insert(
            key.into(),
            Slot {
                value: value.map(<[u8]>::to_vec),
                dirty: false,
                unlogged: false,
            },
        );
        self.entries += 1;
    }

    /// Appends `bytes` to a cached cell; `false` when `key` is not cached
    /// (the caller merges in RocksDB instead).
    pub(crate) fn append(&mut self, state: StateId, key: &[u8], bytes: &[u8]) -> bool {
        let Some(slot) = self.states.get_mut(state).and_then(|cells| cells.get_mut(key)) else {
            return false;
        };
        slot.value.get_or_insert_with(Vec::new).extend_from_slice(bytes);
        slot.unlogged = true;
        if !std::mem::replace(&mut slot.dirty, true) {
            self.dirty += 1;
        }
        true
    }

    /// Adds every dirty entry to `batch` and marks it clean, and the
    /// unlogged ones to `log` (when a changelog is kept) marking them
    /// logged; `cf_of` finds each state's column family. Nothing changes
    /// unless every family is found. The caller must write `batch`; if that
    /// fails, the cache no longer matches RocksDB and must be
    /// [`WriteBack::clear`]ed.
    ///
    /// # Errors
    /// `cf_of`'s error, with the cache unchanged.
    pub(crate) fn write_dirty_into<'a>(
        &mut self,
        batch: &mut WriteBatch,
        mut log: Option<&mut WriteLog>,
        cf_of: impl Fn(StateId) -> streamstate_api::Result<&'a ColumnFamily>,
    ) -> streamstate_api::Result<()> {
        let families = (0..self.states.len())
            .map(|state| {
                if self.states[state].is_empty() {
                    Ok(None)
                } else {
                    cf_of(state).map(Some)
                }
            })
            .collect::<streamstate_api::Result<Vec<_>>>()?;
        for (state, (cells, cf)) in self.states.iter_mut().zip(families).enumerate() {
            let Some(cf) = cf else {
                continue;
            };
            // In key order: RocksDB's memtable skiplist remembers where the
            // last insert went, so ascending keys skip most of the search
            // (and its cache misses), here and when a restore replays the
            // WAL that this batch lands in.
            let mut dirty: Vec<(&Box<[u8]>, &mut Slot)> = cells.iter_mut().filter(|(_, slot)| slot.dirty).collect();
            dirty.sort_unstable_by_key(|(key, _)| *key);
            for (key, slot) in dirty {
                match &slot.value {
                    Some(value) => batch.put_cf(cf, key, value),
                    None => batch.delete_cf(cf, key),
                }
                if let (true, Some(log)) = (slot.unlogged, log.as_deref_mut()) {
                    log.add(state, key, WriteOp::put_or_remove(slot.value.as_deref()));
                }
                slot.dirty = false;
                slot.unlogged = false;
            }
        }
        self.dirty = 0;
        Ok(())
    }

    /// Adds every dirty entry to `writer`, under its state's id. The
    /// entries stay dirty; `mark_logged` marks them logged too (the
    /// snapshot starts a new changelog, which builds on them).
    pub(crate) fn add_dirty_to(&mut self, writer: &mut PendingCellsWriter, mark_logged: bool) {
        for (state, cells) in self.states.iter_mut().enumerate() {
            for (key, slot) in cells.iter_mut().filter(|(_, slot)| slot.dirty) {
                writer.add(state, key, slot.value.as_deref());
                slot.unlogged &= !mark_logged;
            }
        }
    }

    /// Adds every unlogged entry to `log` and marks it logged; the entries
    /// stay dirty.
    pub(crate) fn add_unlogged_to(&mut self, log: &mut WriteLog) {
        for (state, cells) in self.states.iter_mut().enumerate() {
            for (key, slot) in cells.iter_mut().filter(|(_, slot)| slot.unlogged) {
                log.add(state, key, WriteOp::put_or_remove(slot.value.as_deref()));
                slot.unlogged = false;
            }
        }
    }

    /// Forgets every entry (dirty ones are lost: write them first).
    pub(crate) fn clear(&mut self) {
        for cells in &mut self.states {
            cells.clear();
        }
        self.entries = 0;
        self.dirty = 0;
    }

    /// Cached keys of `state`: those with a value and those removed.
    pub(crate) fn keys(&self, state: StateId) -> impl Iterator<Item = (&[u8], bool)> {
        self.cells(state).map(|(key, value)| (key, value.is_some()))
    }

    /// Cached cells of `state`: their values, `None` for removed keys.
    pub(crate) fn cells(&self, state: StateId) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.states
            .get(state)
            .into_iter()
            .flat_map(|cells| cells.iter().map(|(k, slot)| (&**k, slot.value.as_deref())))
    }
}
