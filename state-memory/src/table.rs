//! Copy-on-write state tables with change versions.
//!
//! A table is split into shards: `SUB_SHARDS` per key group. Each shard is an
//! `Arc` of a hash map. The synchronous snapshot phase clones the `Arc`s only
//! (microseconds, independent of the number of keys); the first write to a
//! shard after a snapshot copies that one shard (`Arc::make_mut`), so the
//! copying is spread over processing and limited to the shards written while
//! the snapshot is being uploaded. Flink's `CopyOnWriteStateMap` makes the
//! same trade at entry granularity.
//!
//! For incremental snapshots every entry and every shard carries the
//! *epoch* of its last change (the backend starts a new epoch at each
//! snapshot), so a delta can skip unchanged shards and write only the
//! entries changed after the snapshot it builds on. A key removed while
//! incremental snapshots are on stays as a *removal marker* (no value) until
//! an uploaded snapshot covers the removal; the first write to a shard in a
//! new epoch drops the markers already covered.

use std::collections::BTreeMap;

use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;
use streamstate_api::KeyGroupRange;

/// Shards per key group: small shards keep a post-snapshot copy short.
pub const SUB_SHARDS: usize = 16;

/// The hasher of in-memory tables: foldhash, much faster than SipHash on
/// short keys (the tables never see untrusted keys' hash flooding, but it is
/// seeded per process anyway).
pub type FastHasher = foldhash::fast::RandomState;

/// Key and cell bytes, stored inline up to 16 bytes: most keys and counts
/// fit, so a lookup compares bytes without following a pointer and copying
/// a shard after a snapshot allocates nothing per entry.
pub type Bytes = SmallVec<[u8; 16]>;

/// A map state's per-key map: user key bytes to stored value, ordered so
/// iteration follows user-key bytes like RocksDB.
pub type UserMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// Snapshot epochs: the backend's counter, bumped by every snapshot.
pub type Epoch = u64;

/// One key's slot.
#[derive(Debug, Clone)]
pub struct Entry<V> {
    /// The value; `None` marks a removal not yet covered by an uploaded
    /// incremental snapshot.
    pub value: Option<V>,
    /// Epoch of the last change.
    pub changed: Epoch,
}

/// One shard's keys and change bookkeeping.
#[derive(Debug, Clone)]
pub struct ShardData<V> {
    entries: HashMap<Bytes, Entry<V>, FastHasher>,
    /// Epoch of the last change to any entry.
    changed: Epoch,
    /// Number of removal markers among `entries`.
    removals: usize,
}

impl<V> Default for ShardData<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::with_hasher(FastHasher::default()),
            changed: 0,
            removals: 0,
        }
    }
}

impl<V> ShardData<V> {
    /// Epoch of the last change to any entry.
    pub fn changed(&self) -> Epoch {
        self.changed
    }

    /// Keys with a value, and their values.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.value.as_ref().map(|v| (&**k, v)))
    }

    /// Entries changed after `epoch`: `None` values are removals.
    pub fn changed_after(&self, epoch: Epoch) -> impl Iterator<Item = (&[u8], Option<&V>)> {
        self.entries
            .iter()
            .filter(move |(_, e)| e.changed > epoch)
            .map(|(k, e)| (&**k, e.value.as_ref()))
    }

    fn len(&self) -> usize {
        self.entries.len() - self.removals
    }
}

/// One shard, shared with snapshots until written.
pub type Shard<V> = Arc<ShardData<V>>;

/// How a write treats change bookkeeping: the epoch writes are stamped
/// with, and whether removals must leave markers (incremental snapshots on)
/// and which of them are covered already.
#[derive(Debug, Clone, Copy)]
pub struct WriteEpoch {
    /// The current epoch.
    pub current: Epoch,
    /// Leave removal markers for a later delta.
    pub keep_removals: bool,
    /// Markers changed at or before this epoch are in an uploaded snapshot
    /// every later delta builds on, and can go.
    pub covered: Epoch,
}

/// A sharded copy-on-write table.
#[derive(Debug, Clone)]
pub struct Table<V> {
    range: KeyGroupRange,
    shards: Vec<Shard<V>>,
}

/// `key`'s entry in `entries`, and whether it was inserted now (with no
/// value, changed in `epoch`): one lookup by slice, the owned key made only
/// on insertion.
#[inline]
fn entry_for_write<'a, V>(
    entries: &'a mut HashMap<Bytes, Entry<V>, FastHasher>,
    key: &[u8],
    epoch: WriteEpoch,
) -> (&'a mut Entry<V>, bool) {
    match entries.entry_ref(key) {
        EntryRef::Occupied(occupied) => (occupied.into_mut(), false),
        EntryRef::Vacant(vacant) => (
            vacant.insert_with_key(
                Bytes::from_slice(key),
                Entry {
                    value: None,
                    changed: epoch.current,
                },
            ),
            true,
        ),
    }
}

impl<V: Clone> Table<V> {
    /// An empty table for `range`.
    pub fn new(range: KeyGroupRange) -> Self {
        let shards = (0..range.len() as usize * SUB_SHARDS)
            .map(|_| Arc::new(ShardData::default()))
            .collect();
        Self { range, shards }
    }

    /// Index of the shard of a key in `key_group` with `hash`.
    #[inline]
    pub fn shard_index(&self, key_group: u32, hash: u64) -> usize {
        (key_group - self.range.start()) as usize * SUB_SHARDS + ((hash >> 32) as usize % SUB_SHARDS)
    }

    /// Makes room for `keys` more keys in `key_group` (none if it is
    /// outside the range), spread over its shards as their hashes spread
    /// them: a shard's share, plus an eighth for the spread (about two
    /// standard deviations at restore sizes), so the shards rarely grow
    /// while they are filled.
    pub fn reserve(&mut self, key_group: u32, keys: usize) {
        if !self.range.contains(key_group) {
            return;
        }
        let per_shard = keys.div_ceil(SUB_SHARDS);
        let first = self.shard_index(key_group, 0);
        for shard in &mut self.shards[first..first + SUB_SHARDS] {
            Arc::make_mut(shard).entries.reserve(per_shard + per_shard / 8 + 4);
        }
    }

    /// Reads the value of `key` in shard `shard`.
    #[inline]
    pub fn get(&self, shard: usize, key: &[u8]) -> Option<&V> {
        self.shards[shard].entries.get(key).and_then(|e| e.value.as_ref())
    }

    /// The shard, writable: copied first if a snapshot still shares it, and
    /// on its first write in an epoch cleared of covered removal markers.
    #[inline]
    fn shard_for_write(&mut self, shard: usize, epoch: WriteEpoch) -> &mut ShardData<V> {
        let data = Arc::make_mut(&mut self.shards[shard]);
        if data.changed < epoch.current {
            if data.removals > 0 {
                data.entries
                    .retain(|_, e| e.value.is_some() || e.changed > epoch.covered);
                data.removals = data.entries.values().filter(|e| e.value.is_none()).count();
            }
            data.changed = epoch.current;
        }
        data
    }

    /// The value of `key` for writing, inserted from `V::default()` when
    /// absent; the entry counts as changed in `epoch`.
    #[inline]
    pub fn upsert(&mut self, shard: usize, key: &[u8], epoch: WriteEpoch) -> &mut V
    where
        V: Default,
    {
        let data = self.shard_for_write(shard, epoch);
        let (entry, inserted) = entry_for_write(&mut data.entries, key, epoch);
        if !inserted && entry.value.is_none() {
            // It was a removal marker; it is a value again.
            data.removals -= 1;
        }
        entry.changed = epoch.current;
        entry.value.get_or_insert_with(V::default)
    }

    /// A read-modify-write of `key` in one lookup: `update(value, present)`
    /// gets `key`'s value (a default one when absent, `present` false) to
    /// change in place; the entry then counts as changed in `epoch`. When
    /// `update` fails it must leave the value as it was, and the key is as
    /// before: an absent key stays absent.
    ///
    /// # Errors
    /// The error `update` returns.
    pub fn read_modify_write<E>(
        &mut self,
        shard: usize,
        key: &[u8],
        epoch: WriteEpoch,
        update: impl FnOnce(&mut V, bool) -> Result<(), E>,
    ) -> Result<(), E>
    where
        V: Default,
    {
        let data = self.shard_for_write(shard, epoch);
        let (entry, inserted) = entry_for_write(&mut data.entries, key, epoch);
        let present = entry.value.is_some();
        match update(entry.value.get_or_insert_with(V::default), present) {
            Ok(()) => {
                entry.changed = epoch.current;
                if !present && !inserted {
                    // It was a removal marker; it is a value again.
                    data.removals -= 1;
                }
                Ok(())
            }
            Err(e) => {
                if inserted {
                    data.entries.remove(key);
                } else if !present {
                    entry.value = None;
                }
                Err(e)
            }
        }
    }

    /// Changes the value of `key` with `change` if it has one; the entry
    /// counts as changed in `epoch`. `change` returns whether the key is now
    /// empty and should be removed.
    pub fn modify(&mut self, shard: usize, key: &[u8], epoch: WriteEpoch, change: impl FnOnce(&mut V) -> bool) {
        if self.get(shard, key).is_none() {
            // Only copy a shared shard when there is something to change.
            return;
        }
        let data = self.shard_for_write(shard, epoch);
        let Some(entry) = data.entries.get_mut(key) else {
            return;
        };
        let Some(value) = entry.value.as_mut() else {
            return;
        };
        entry.changed = epoch.current;
        if change(value) {
            if epoch.keep_removals {
                entry.value = None;
                data.removals += 1;
            } else {
                data.entries.remove(key);
            }
        }
    }

    /// Removes `key`'s value, if any.
    pub fn remove(&mut self, shard: usize, key: &[u8], epoch: WriteEpoch) {
        self.modify(shard, key, epoch, |_| true);
    }

    /// The shards of `key_group`.
    pub fn key_group_shards(&self, key_group: u32) -> &[Shard<V>] {
        let start = (key_group - self.range.start()) as usize * SUB_SHARDS;
        &self.shards[start..start + SUB_SHARDS]
    }

    /// All keys with a value, in shard order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Number of keys with a value.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A state's table: cells for value/list/reducing/aggregating states, maps
/// for map states.
#[derive(Debug, Clone)]
pub enum StateTable {
    /// One byte cell per key.
    Cells(Table<Bytes>),
    /// One ordered map per key.
    Maps(Table<UserMap>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(current: Epoch, covered: Epoch) -> WriteEpoch {
        WriteEpoch {
            current,
            keep_removals: true,
            covered,
        }
    }

    #[test]
    fn removal_markers_live_until_covered() {
        let mut table: Table<Bytes> = Table::new(KeyGroupRange::new(0, 0));
        table.upsert(0, b"a", epoch(1, 0)).push(1);
        table.upsert(0, b"b", epoch(1, 0)).push(2);
        table.remove(0, b"a", epoch(2, 0));
        assert_eq!(table.len(), 1);
        assert!(table.get(0, b"a").is_none());
        let changed: Vec<_> = table.shards[0].changed_after(1).collect();
        assert_eq!(changed, vec![(&b"a"[..], None)]);
        // Epoch 3 builds on an upload of epoch 2: the marker goes.
        table.upsert(0, b"b", epoch(3, 2)).push(3);
        assert_eq!(table.shards[0].entries.len(), 1);
        assert_eq!(table.shards[0].removals, 0);
        // Re-inserting a removed key clears its marker.
        table.remove(0, b"b", epoch(4, 2));
        table.upsert(0, b"b", epoch(4, 2)).push(4);
        assert_eq!(table.get(0, b"b").map(|v| v.as_slice()), Some(&[4u8][..]));
        assert_eq!(table.shards[0].removals, 0);
    }

    #[test]
    fn reserve_makes_room_in_every_shard_of_the_key_group_only() {
        fn capacities(table: &Table<Bytes>, group: u32) -> Vec<usize> {
            table
                .key_group_shards(group)
                .iter()
                .map(|s| s.entries.capacity())
                .collect()
        }
        let mut table: Table<Bytes> = Table::new(KeyGroupRange::new(4, 5));
        table.reserve(5, 1_600);
        assert!(
            capacities(&table, 5).iter().all(|&c| c >= 100 + 100 / 8),
            "a shard's share and the spread"
        );
        assert!(
            capacities(&table, 4).iter().all(|&c| c == 0),
            "other key groups untouched"
        );
        table.reserve(9, 1_600);
        assert!(
            capacities(&table, 4).iter().all(|&c| c == 0),
            "a group outside the range reserves nothing"
        );
    }

    #[test]
    fn without_incremental_snapshots_removals_leave_nothing() {
        let mut table: Table<Bytes> = Table::new(KeyGroupRange::new(0, 0));
        let plain = WriteEpoch {
            current: 1,
            keep_removals: false,
            covered: 0,
        };
        table.upsert(0, b"a", plain).push(1);
        table.remove(0, b"a", plain);
        assert!(table.shards[0].entries.is_empty());
        assert!(table.is_empty());
    }
}
