//! Copy-on-write state tables.
//!
//! A table is split into shards: `SUB_SHARDS` per key group. Each shard is an
//! `Arc<HashMap>`. The synchronous snapshot phase clones the `Arc`s only
//! (microseconds, independent of the number of keys); the first write to a
//! shard after a snapshot copies that one shard (`Arc::make_mut`), so the
//! copying is spread over processing and limited to the shards written while
//! the snapshot is being uploaded. Flink's `CopyOnWriteStateMap` makes the
//! same trade at entry granularity.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use state_api::KeyGroupRange;

/// Shards per key group: small shards keep a post-snapshot copy short.
pub const SUB_SHARDS: usize = 16;

/// The hasher of in-memory tables: foldhash, much faster than SipHash on
/// short keys (the tables never see untrusted keys' hash flooding, but it is
/// seeded per process anyway).
pub type FastHasher = foldhash::fast::RandomState;

/// One shard: serialized key to value.
pub type Shard<V> = Arc<HashMap<Box<[u8]>, V, FastHasher>>;

/// A map state's per-key map: user key bytes to stored value, ordered so
/// iteration follows user-key bytes like RocksDB.
pub type UserMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// A sharded copy-on-write table.
#[derive(Debug, Clone)]
pub struct Table<V> {
    range: KeyGroupRange,
    shards: Vec<Shard<V>>,
}

impl<V: Clone> Table<V> {
    /// An empty table for `range`.
    pub fn new(range: KeyGroupRange) -> Self {
        let shards = (0..range.len() as usize * SUB_SHARDS)
            .map(|_| Arc::new(HashMap::with_hasher(FastHasher::default())))
            .collect();
        Self { range, shards }
    }

    /// Index of the shard of a key in `key_group` with `hash`.
    #[inline]
    pub fn shard_index(&self, key_group: u32, hash: u64) -> usize {
        (key_group - self.range.start()) as usize * SUB_SHARDS + ((hash >> 32) as usize % SUB_SHARDS)
    }

    /// Reads the value of `key` in shard `shard`.
    #[inline]
    pub fn get(&self, shard: usize, key: &[u8]) -> Option<&V> {
        self.shards[shard].get(key)
    }

    /// Mutable access to shard `shard`, copying it first if a snapshot
    /// still shares it.
    #[inline]
    pub fn shard_mut(&mut self, shard: usize) -> &mut HashMap<Box<[u8]>, V, FastHasher> {
        Arc::make_mut(&mut self.shards[shard])
    }

    /// The shards of `key_group`.
    pub fn key_group_shards(&self, key_group: u32) -> &[Shard<V>] {
        let start = (key_group - self.range.start()) as usize * SUB_SHARDS;
        &self.shards[start..start + SUB_SHARDS]
    }

    /// All entries, in shard order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.shards.iter().flat_map(|s| s.iter().map(|(k, v)| (&**k, v)))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }
}

/// A state's table: cells for value/list/reducing/aggregating states, maps
/// for map states.
#[derive(Debug, Clone)]
pub enum StateTable {
    /// One byte cell per key.
    Cells(Table<Vec<u8>>),
    /// One ordered map per key.
    Maps(Table<UserMap>),
}
