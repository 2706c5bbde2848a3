//! The table a [`crate::function::SumFunction`] folds records into before
//! it writes them to state (Flink SQL's mini-batch aggregation).
//!
//! Why not a `HashMap`: the table holds up to hundreds of thousands of
//! keys (tens of MiB), so nearly every record's lookup is a cache miss, and
//! a record's lookup cannot start before the previous record's has finished
//! when the two run one after the other. This table lets the keyed task
//! [`touch`](MiniBatch::touch) the slots of a group of records first: those
//! loads are independent, so the CPU overlaps their misses, and the lookups
//! that follow find their slots in cache (docs/BENCHMARKS.md measures it).
//! Slots are one cache line each, hold the key inline (up to 24 bytes) and
//! its hash, and are found by linear probing at a load factor of at most
//! one half.
//!
//! The hash is the key's [`state_api::key_group::key_hash`], the one key
//! groups are taken from: draining gives each key's group without hashing
//! the key again.

use state_api::key_group::key_hash;

use crate::function::KeyBytes;

/// One key and its sum. An empty key marks a free slot (serialized keys
/// are never empty: backends reject them).
#[derive(Clone, Default)]
#[repr(align(64))]
struct Slot {
    hash: u64,
    sum: i64,
    key: KeyBytes,
}

/// Sums per serialized key, for keys up to a bound given to
/// [`MiniBatch::new`].
pub(crate) struct MiniBatch {
    slots: Vec<Slot>,
    len: usize,
    max_keys: usize,
}

/// Slots the table starts with; it doubles while more than half full.
const INITIAL_SLOTS: usize = 1024;

impl MiniBatch {
    /// A table that holds up to `max_keys` keys (at least 1).
    pub(crate) fn new(max_keys: usize) -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
            max_keys: max_keys.max(1),
        }
    }

    /// Distinct keys held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the table holds as many keys as its bound.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.max_keys
    }

    /// Loads the first slot `key_bytes` would probe and returns a word of
    /// it, so the load is not optimized away. Called for a group of records
    /// before [`MiniBatch::add`] runs for them: the misses overlap.
    #[inline]
    pub(crate) fn touch(&self, key_bytes: &[u8]) -> u64 {
        if self.slots.is_empty() {
            return 0;
        }
        let mask = self.slots.len() - 1;
        self.slots[key_hash(key_bytes) as usize & mask].hash
    }

    /// Adds `delta` to the sum of `key_bytes` (not empty).
    #[inline]
    pub(crate) fn add(&mut self, key_bytes: &[u8], delta: i64) {
        debug_assert!(!key_bytes.is_empty(), "serialized keys are never empty");
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let hash = key_hash(key_bytes);
        let mask = self.slots.len() - 1;
        let mut index = hash as usize & mask;
        loop {
            let slot = &mut self.slots[index];
            if slot.key.is_empty() {
                *slot = Slot {
                    hash,
                    sum: delta,
                    key: KeyBytes::from_slice(key_bytes),
                };
                self.len += 1;
                return;
            }
            if slot.hash == hash && slot.key.as_slice() == key_bytes {
                slot.sum += delta;
                return;
            }
            index = (index + 1) & mask;
        }
    }

    /// Moves every key out as `(key hash, key, sum)`, leaving the table
    /// empty with its slots allocated for the next batch.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<(u64, KeyBytes, i64)>) {
        out.reserve(self.len);
        for slot in &mut self.slots {
            if !slot.key.is_empty() {
                let Slot { hash, sum, key } = std::mem::take(slot);
                out.push((hash, key, sum));
            }
        }
        self.len = 0;
    }

    /// Doubles the slots and re-places the keys. The caller drains at the
    /// key bound, so the slots stop at twice the bound (rounded up to a
    /// power of two).
    fn grow(&mut self) {
        let wanted = (self.slots.len() * 2).max(INITIAL_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); wanted]);
        let mask = wanted - 1;
        for slot in old.into_iter().filter(|slot| !slot.key.is_empty()) {
            let mut index = slot.hash as usize & mask;
            while !self.slots[index].key.is_empty() {
                index = (index + 1) & mask;
            }
            self.slots[index] = slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn drained(table: &mut MiniBatch) -> BTreeMap<Vec<u8>, i64> {
        let mut out = Vec::new();
        table.drain_into(&mut out);
        assert!(table.is_empty());
        out.into_iter()
            .map(|(hash, key, sum)| {
                assert_eq!(hash, key_hash(&key), "the stored hash is the key's");
                (key.to_vec(), sum)
            })
            .collect()
    }

    proptest! {
        /// The table sums like a `BTreeMap` model, across growth and
        /// repeated drains (slots reused).
        #[test]
        fn sums_match_a_model(
            rounds in prop::collection::vec(
                prop::collection::vec((prop::collection::vec(any::<u8>(), 1..40), -5i64..5), 0..300),
                1..4,
            ),
        ) {
            let mut table = MiniBatch::new(10_000);
            for records in rounds {
                let mut model = BTreeMap::<Vec<u8>, i64>::new();
                for (key, delta) in &records {
                    let _ = table.touch(key);
                    table.add(key, *delta);
                    *model.entry(key.clone()).or_default() += delta;
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(drained(&mut table), model);
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
    }
}
