//! The timer index of a backend that keeps timers in timestamp order
//! (RocksDB): Flink's `KeyGroupPartitionedPriorityQueue` over its
//! `RocksDBCachingPriorityQueueSet`s. Per key group, the first few timers
//! are cached in memory, refilled from the backend by one scan when they
//! run out; across key groups, an ordered set of each group's first timer
//! gives the next timer to fire. Memory stays bounded however many timers
//! the backend holds.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::entry::{get_timestamp, write_entry};
use crate::backend::{KeyedStateBackend, StateId};
use crate::Result;

/// Timers cached per key group (Flink's default RocksDB timer cache size).
const CACHED: usize = 128;

/// How many recent registrations are remembered before starting over.
const RECENT: usize = 1 << 16;

/// A key group's first timers: exactly its smallest entries, and whether
/// they are all it has.
#[derive(Debug)]
struct Group {
    first: BTreeSet<Vec<u8>>,
    complete: bool,
}

/// See the [module docs](self). Entries are the service's `timestamp |
/// varint len(key) | key | namespace`, so byte order is firing order.
#[derive(Debug, Default)]
pub(super) struct GroupHeads {
    /// (first entry, key group) of every key group with timers.
    heads: BTreeSet<(Vec<u8>, u32)>,
    /// Every key group with timers, its first timers cached.
    groups: HashMap<u32, Group>,
    /// How many timers the backend holds.
    len: usize,
    /// Timers registered lately and not removed since: a window registers
    /// the same timer for each of its records, and this answers those
    /// without a read.
    recent: HashSet<Vec<u8>>,
}

impl GroupHeads {
    /// Loads the index of `state`'s timers in every key group of the
    /// backend: one scan each, which also counts them.
    pub(super) fn open<B: KeyedStateBackend + ?Sized>(backend: &B, state: StateId) -> Result<Self> {
        let mut heads = Self::default();
        for key_group in backend.key_group_range().iter() {
            heads.len += heads.refill(backend, state, key_group, true)?;
        }
        Ok(heads)
    }

    /// Reads `key_group`'s first timers from the backend. With `count_all`
    /// the scan goes on to the group's end and returns how many timers it
    /// holds; otherwise it stops after the first ones.
    fn refill<B: KeyedStateBackend + ?Sized>(
        &mut self,
        backend: &B,
        state: StateId,
        key_group: u32,
        count_all: bool,
    ) -> Result<usize> {
        let mut first = BTreeSet::new();
        let mut seen = 0;
        backend.scan_timers(state, key_group, &mut |key, user_key| {
            seen += 1;
            if first.len() == CACHED {
                return Ok(count_all);
            }
            let (timestamp, namespace) = get_timestamp(user_key)?;
            let mut entry = Vec::new();
            write_entry(&mut entry, timestamp, key, namespace);
            first.insert(entry);
            Ok(true)
        })?;
        self.unlink(key_group);
        if !first.is_empty() {
            let complete = seen <= CACHED;
            self.groups.insert(key_group, Group { first, complete });
            self.link(key_group);
        }
        Ok(seen)
    }

    /// Takes `key_group` out of the heads (its first timer may change).
    fn unlink(&mut self, key_group: u32) -> Option<Group> {
        let group = self.groups.remove(&key_group)?;
        if let Some(first) = group.first.first() {
            self.heads.remove(&(first.clone(), key_group));
        }
        Some(group)
    }

    /// Puts `key_group`'s first timer into the heads.
    fn link(&mut self, key_group: u32) {
        if let Some(first) = self.groups.get(&key_group).and_then(|g| g.first.first()) {
            self.heads.insert((first.clone(), key_group));
        }
    }

    /// Whether `entry` is known to be registered without asking the
    /// backend: it was registered lately and not removed since.
    pub(super) fn knows(&self, entry: &[u8]) -> bool {
        self.recent.contains(entry)
    }

    /// `entry`, in `key_group`, was just stored in the backend.
    pub(super) fn inserted(&mut self, entry: &[u8], key_group: u32) {
        self.len += 1;
        if self.recent.len() >= RECENT {
            self.recent.clear();
        }
        self.recent.insert(entry.to_vec());
        let Some(mut group) = self.unlink(key_group) else {
            // A group without an index entry has no timers: this is all.
            let first = BTreeSet::from([entry.to_vec()]);
            self.groups.insert(key_group, Group { first, complete: true });
            self.link(key_group);
            return;
        };
        let cached = group.complete || group.first.last().is_some_and(|last| entry < last.as_slice());
        if cached {
            group.first.insert(entry.to_vec());
            if group.first.len() > 2 * CACHED {
                group.first.pop_last();
                group.complete = false;
            }
        }
        self.groups.insert(key_group, group);
        self.link(key_group);
    }

    /// `entry`, in `key_group`, was just removed from the backend.
    pub(super) fn removed<B: KeyedStateBackend + ?Sized>(
        &mut self,
        backend: &B,
        state: StateId,
        entry: &[u8],
        key_group: u32,
    ) -> Result<()> {
        self.len = self.len.saturating_sub(1);
        self.recent.remove(entry);
        let Some(mut group) = self.unlink(key_group) else {
            return Ok(());
        };
        group.first.remove(entry);
        match (group.first.is_empty(), group.complete) {
            (false, _) => {
                self.groups.insert(key_group, group);
                self.link(key_group);
                Ok(())
            }
            // The group's last timer.
            (true, true) => Ok(()),
            (true, false) => self.refill(backend, state, key_group, false).map(|_| ()),
        }
    }

    /// The earliest timer's entry.
    pub(super) fn first(&self) -> Option<&[u8]> {
        self.heads.first().map(|(entry, _)| entry.as_slice())
    }

    /// How many timers the backend holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}
