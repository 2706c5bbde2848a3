//! The table a pre-aggregation ([`crate::aggregate`]) folds records into,
//! per key, before it writes them to state (Flink SQL's mini-batch
//! aggregation), and the [`Accumulator`] it folds them into.
//!
//! Why not a `HashMap`: the table holds up to hundreds of thousands of
//! keys (tens of MiB), so nearly every record's lookup is a cache miss, and
//! a record's lookup cannot start before the previous record's has finished
//! when the two run one after the other. This table lets the keyed task
//! [`touch`](MiniBatch::touch) the slots of a group of records first: those
//! loads are independent, so the CPU overlaps their misses, and the lookups
//! that follow find their slots in cache (docs/BENCHMARKS.md measures it).
//! Slots hold the key inline (up to 24 bytes), its hash and its
//! accumulator (48 bytes for a sum); keys are found by linear probing at a load factor of at
//! most one half. (Slots aligned to 64-byte cache lines were no faster in
//! alternated runs and took a third more memory.)
//!
//! The hash is the key's [`streamstate_api::key_group::key_hash`], the one key
//! groups are taken from: draining orders the keys by key group without
//! hashing them again.

use serde::{de::DeserializeOwned, Serialize};
use streamstate_api::key_group::{key_group_for_hash, key_hash};
use streamstate_api::Result;

/// What a pre-aggregation folds the records of one key into: a sum, a
/// count, a minimum... `Default` is the empty accumulator and `merge` adds
/// another one to it; `merge` must be associative and commutative, since
/// the partial accumulators of one key arrive from several sources in any
/// order. Stored in keyed state with postcard, so it is `Serialize`.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use streamstate_runtime::aggregate::Accumulator;
///
/// /// The smallest and largest value seen.
/// #[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
/// struct Range { min: i64, max: i64 }
/// impl Default for Range {
///     fn default() -> Self { Range { min: i64::MAX, max: i64::MIN } }
/// }
/// impl Accumulator for Range {
///     fn merge(&mut self, other: Self) {
///         self.min = self.min.min(other.min);
///         self.max = self.max.max(other.max);
///     }
/// }
/// let mut r = Range::default();
/// r.merge(Range { min: 3, max: 3 });
/// r.merge(Range { min: -1, max: -1 });
/// assert_eq!(r, Range { min: -1, max: 3 });
/// ```
pub trait Accumulator: Copy + Default + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// Adds `other` to `self`.
    fn merge(&mut self, other: Self);
}

impl Accumulator for i64 {
    #[inline]
    fn merge(&mut self, other: Self) {
        *self += other;
    }
}

impl Accumulator for u64 {
    #[inline]
    fn merge(&mut self, other: Self) {
        *self += other;
    }
}

/// No accumulator: the jobs whose keyed operator folds nothing ahead
/// (a [`crate::function::KeyedProcessFunction`]).
impl Accumulator for () {
    #[inline]
    fn merge(&mut self, _other: Self) {}
}

/// A serialized key. Keys up to 24 bytes sit inline: records and
/// mini-batches carry them without an allocation per record.
pub(crate) type KeyBytes = smallvec::SmallVec<[u8; 24]>;

/// One key and its accumulator. An empty key marks a free slot
/// (serialized keys are never empty: backends reject them).
#[derive(Clone, Default)]
struct Slot<A> {
    hash: u64,
    acc: A,
    key: KeyBytes,
}

/// An accumulator per serialized key, for keys up to a bound given to
/// [`MiniBatch::new`].
pub(crate) struct MiniBatch<A> {
    slots: Vec<Slot<A>>,
    /// Indexes of the slots in use, in insertion order: a drain visits
    /// those only, not every slot (a source thread's small table is
    /// drained every few thousand keys).
    filled: Vec<u32>,
    max_keys: usize,
}

/// Keys whose slots (or state cells) are loaded together before they are
/// handled: enough to keep the CPU's ~10–12 outstanding cache misses busy,
/// few enough that what was loaded is still cached when it is used
/// (docs/BENCHMARKS.md).
pub(crate) const TOUCH_GROUP: usize = 16;

/// Slots the table starts with; it doubles while more than half full.
const INITIAL_SLOTS: usize = 1024;

impl<A: Accumulator> MiniBatch<A> {
    /// A table that holds up to `max_keys` keys (at least 1).
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            slots: Vec::new(),
            filled: Vec::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// Distinct keys held.
    pub(crate) fn len(&self) -> usize {
        self.filled.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.filled.is_empty()
    }

    /// Whether the table holds as many keys as its bound.
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.max_keys
    }

    /// Loads the first slot `key_bytes` would probe and returns a word of
    /// it, so the load is not optimized away. Called for a group of records
    /// before [`MiniBatch::add`] runs for them: the misses overlap.
    /// `hash` is the key's [`key_hash`].
    #[inline]
    pub(crate) fn touch(&self, hash: u64) -> u64 {
        if self.slots.is_empty() {
            return 0;
        }
        let mask = self.slots.len() - 1;
        self.slots[hash as usize & mask].hash
    }

    /// Merges `delta` into the accumulator of `key_bytes` (not empty).
    #[inline]
    pub(crate) fn add(&mut self, key_bytes: &[u8], delta: A) {
        self.add_hashed(key_hash(key_bytes), key_bytes, delta);
    }

    /// [`MiniBatch::add`] of a key whose [`key_hash`] is known already:
    /// the keyed task's records and partial sums carry the hash their
    /// source routed them by, so the keyed thread, the busier one, does not
    /// hash them again.
    #[inline]
    pub(crate) fn add_hashed(&mut self, hash: u64, key_bytes: &[u8], delta: A) {
        debug_assert!(!key_bytes.is_empty(), "serialized keys are never empty");
        debug_assert_eq!(hash, key_hash(key_bytes), "the hash is the key's");
        if (self.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut index = hash as usize & mask;
        loop {
            let slot = &mut self.slots[index];
            if slot.key.is_empty() {
                *slot = Slot {
                    hash,
                    acc: delta,
                    key: KeyBytes::from_slice(key_bytes),
                };
                self.filled.push(index as u32);
                return;
            }
            if slot.hash == hash && slot.key.as_slice() == key_bytes {
                slot.acc.merge(delta);
                return;
            }
            index = (index + 1) & mask;
        }
    }

    /// Empties the table, calling `take(hash, key, acc)` for every key in
    /// insertion order, and keeps the slots allocated.
    pub(crate) fn drain(&mut self, mut take: impl FnMut(u64, KeyBytes, A)) {
        for index in self.filled.drain(..) {
            let Slot { hash, acc, key } = std::mem::take(&mut self.slots[index as usize]);
            take(hash, key, acc);
        }
    }

    /// Empties the table, calling `write(context, key, acc)` for every key
    /// in key-group order (key groups of `max_parallelism`), and keeps the
    /// slots allocated for the next batch. Before a group of
    /// [`TOUCH_GROUP`] keys is written, `prefetch(context, keys)` runs for
    /// the group, so the writes' lookups are loaded together: their cache
    /// misses overlap, or RocksDB reads them in one batch
    /// ([`streamstate_api::KeyedStateBackend::prefetch`]). Stops writing at the
    /// first error; the table is empty either way.
    ///
    /// # Errors
    /// The first error `write` returns.
    pub(crate) fn drain_by_key_group<C: ?Sized>(
        &mut self,
        max_parallelism: u32,
        context: &mut C,
        mut prefetch: impl FnMut(&mut C, &[&[u8]]) -> u64,
        mut write: impl FnMut(&mut C, &[u8], A) -> Result<()>,
    ) -> Result<()> {
        // The keys are moved to the front and sorted there: the table is
        // being emptied, so it needs no second buffer for the order.
        let mut filled = 0;
        for index in 0..self.slots.len() {
            if !self.slots[index].key.is_empty() {
                self.slots.swap(filled, index);
                filled += 1;
            }
        }
        let keys = &mut self.slots[..filled];
        keys.sort_unstable_by_key(|slot| key_group_for_hash(slot.hash, max_parallelism));
        self.filled.clear();
        let mut result = Ok(());
        for group in keys.chunks_mut(TOUCH_GROUP) {
            if result.is_ok() {
                let mut keys: [&[u8]; TOUCH_GROUP] = [&[]; TOUCH_GROUP];
                for (key, slot) in keys.iter_mut().zip(group.iter()) {
                    *key = slot.key.as_slice();
                }
                std::hint::black_box(prefetch(context, &keys[..group.len()]));
            }
            for slot in group {
                let Slot { key, acc, .. } = std::mem::take(slot);
                if result.is_ok() {
                    result = write(context, &key, acc);
                }
            }
        }
        result
    }

    /// Doubles the slots and re-places the keys. The caller drains at the
    /// key bound, so the slots stop at twice the bound (rounded up to a
    /// power of two).
    fn grow(&mut self) {
        let wanted = (self.slots.len() * 2).max(INITIAL_SLOTS);
        let mut old = std::mem::replace(&mut self.slots, vec![Slot::default(); wanted]);
        let mask = wanted - 1;
        for filled in &mut self.filled {
            let slot = std::mem::take(&mut old[*filled as usize]);
            let mut index = slot.hash as usize & mask;
            while !self.slots[index].key.is_empty() {
                index = (index + 1) & mask;
            }
            self.slots[index] = slot;
            *filled = index as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use streamstate_api::key_group::assign_to_key_group;

    use super::*;

    const MAX_PARALLELISM: u32 = 128;

    /// Drains the table, checking the key-group order of the writes.
    fn drained(table: &mut MiniBatch<i64>) -> BTreeMap<Vec<u8>, i64> {
        let mut written = Vec::new();
        let mut prefetched = Vec::new();
        table
            .drain_by_key_group(
                MAX_PARALLELISM,
                &mut written,
                |written, keys| {
                    assert!(!keys.is_empty() && keys.len() <= TOUCH_GROUP, "a group of keys");
                    for &key in keys {
                        assert!(
                            !written.iter().any(|(k, _): &(Vec<u8>, i64)| k == key),
                            "prefetched before written"
                        );
                        prefetched.push(key.to_vec());
                    }
                    keys.len() as u64
                },
                |written, key, sum| {
                    written.push((key.to_vec(), sum));
                    Ok(())
                },
            )
            .unwrap();
        let written_keys: Vec<Vec<u8>> = written.iter().map(|(key, _)| key.clone()).collect();
        assert_eq!(prefetched, written_keys, "every key prefetched, in the order written");
        assert!(table.is_empty());
        let groups: Vec<u32> = written
            .iter()
            .map(|(key, _)| assign_to_key_group(key, MAX_PARALLELISM))
            .collect();
        assert!(groups.is_sorted(), "written in key-group order: {groups:?}");
        let sums: BTreeMap<Vec<u8>, i64> = written.iter().cloned().collect();
        assert_eq!(sums.len(), written.len(), "each key written once");
        sums
    }

    /// Drains in insertion order (the source thread's drain).
    fn drained_in_insertion_order(table: &mut MiniBatch<i64>) -> BTreeMap<Vec<u8>, i64> {
        let mut written = Vec::new();
        table.drain(|hash, key, sum| {
            assert_eq!(hash, key_hash(&key), "the stored hash is the key's");
            written.push((key.to_vec(), sum));
        });
        assert!(table.is_empty());
        let sums: BTreeMap<Vec<u8>, i64> = written.iter().cloned().collect();
        assert_eq!(sums.len(), written.len(), "each key drained once");
        sums
    }

    proptest! {
        /// The table sums like a `BTreeMap` model, across growth (past
        /// 512 keys) and repeated drains of both kinds (slots reused).
        #[test]
        fn sums_match_a_model(
            rounds in prop::collection::vec(
                prop::collection::vec((prop::collection::vec(any::<u8>(), 1..12), -5i64..5), 0..1500),
                1..4,
            ),
        ) {
            let mut table = MiniBatch::new(10_000);
            for (round, records) in rounds.into_iter().enumerate() {
                let mut model = BTreeMap::<Vec<u8>, i64>::new();
                for (key, delta) in &records {
                    let _ = table.touch(key_hash(key));
                    table.add(key, *delta);
                    *model.entry(key.clone()).or_default() += delta;
                }
                prop_assert_eq!(table.len(), model.len());
                let sums = if round % 2 == 0 {
                    drained(&mut table)
                } else {
                    drained_in_insertion_order(&mut table)
                };
                prop_assert_eq!(sums, model);
            }
        }
    }

    #[test]
    fn the_bound_caps_the_slots_and_marks_the_table_full() {
        let mut table = MiniBatch::new(3_000);
        for n in 0u32..3_000 {
            assert!(!table.is_full());
            table.add(&n.to_le_bytes(), 1);
        }
        assert!(table.is_full());
        assert_eq!(
            table.slots.len(),
            8_192,
            "twice the bound, rounded up to a power of two"
        );
        assert_eq!(drained(&mut table).len(), 3_000);
        assert_eq!(table.slots.len(), 8_192, "slots kept for the next batch");
        assert!(
            table.slots.iter().all(|slot| slot.key.is_empty()),
            "every slot free again"
        );
    }

    #[test]
    fn a_failed_write_stops_the_drain_and_empties_the_table() {
        let mut table = MiniBatch::new(100);
        for n in 0u8..50 {
            table.add(&[n + 1], 1);
        }
        let mut writes = 0;
        let result = table.drain_by_key_group(
            MAX_PARALLELISM,
            &mut writes,
            |_, _| 0,
            |writes, _, _| {
                *writes += 1;
                Err(streamstate_api::Error::invalid_argument("storage down"))
            },
        );
        assert!(result.is_err());
        assert_eq!(writes, 1, "no write after the first error");
        assert!(table.is_empty());
        table.add(b"\x01a", 2);
        assert_eq!(drained(&mut table), BTreeMap::from([(b"\x01a".to_vec(), 2)]));
    }
}
