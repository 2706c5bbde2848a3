//! Key groups: the unit of state redistribution.
//!
//! As in Flink, every key belongs to exactly one of `max_parallelism` key
//! groups, and each of `p` parallel subtasks owns a contiguous
//! [`KeyGroupRange`]. Snapshots are laid out by key group, so a job restored
//! with another parallelism reads only the key groups each subtask now owns.
//!
//! # The hash (a stable on-disk contract)
//!
//! `key_group = xxh3_64(serialized_key, seed = 0) % max_parallelism`
//!
//! The hash is computed over the key's serialized bytes (postcard encoding of
//! the key type), not over a language-level `Hash` impl, so it never changes
//! with the Rust version or the platform. Changing it would silently send
//! restored keys to the wrong subtask; `tests::pinned_hash_values` fails if it
//! ever changes.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Flink's default `max_parallelism` when none is configured for small jobs.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The largest supported `max_parallelism` (Flink's upper bound, 2^15).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// The 64-bit hash of a serialized key that key groups are taken from.
#[inline]
pub fn key_hash(serialized_key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(serialized_key)
}

/// The key group of a key hash (see [`key_hash`]).
#[inline]
pub fn key_group_for_hash(hash: u64, max_parallelism: u32) -> u32 {
    // The same result as `%`: a mask for powers of two (the default 128
    // among them) spares a 64-bit division per record, a tenth of the
    // source thread's record loop in the word count's profile.
    if max_parallelism.is_power_of_two() {
        (hash & u64::from(max_parallelism - 1)) as u32
    } else {
        (hash % u64::from(max_parallelism)) as u32
    }
}

/// The key group `serialized_key` belongs to, in `[0, max_parallelism)`.
///
/// ```
/// use streamstate_api::key_group::assign_to_key_group;
/// let kg = assign_to_key_group(b"\x05hello", 128);
/// assert!(kg < 128);
/// // Stable: the same bytes always land in the same group.
/// assert_eq!(kg, assign_to_key_group(b"\x05hello", 128));
/// ```
#[inline]
pub fn assign_to_key_group(serialized_key: &[u8], max_parallelism: u32) -> u32 {
    key_group_for_hash(key_hash(serialized_key), max_parallelism)
}

/// Checks `max_parallelism` and `parallelism` the way Flink does.
///
/// # Errors
/// [`crate::ErrorKind::Config`] when `max_parallelism` is 0 or above
/// [`UPPER_BOUND_MAX_PARALLELISM`], or `parallelism` is 0 or above
/// `max_parallelism`.
pub fn check_parallelism(parallelism: u32, max_parallelism: u32) -> Result<()> {
    if max_parallelism == 0 || max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
        return Err(Error::config(format!(
            "max parallelism {max_parallelism} is outside [1, {UPPER_BOUND_MAX_PARALLELISM}]"
        )));
    }
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(Error::config(format!(
            "parallelism {parallelism} is outside [1, max parallelism {max_parallelism}]"
        )));
    }
    Ok(())
}

/// A contiguous, inclusive range of key groups `[start, end]`, or empty.
///
/// ```
/// use streamstate_api::KeyGroupRange;
/// let r = KeyGroupRange::new(0, 63);
/// assert_eq!(r.len(), 64);
/// assert!(r.contains(63) && !r.contains(64));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    start: u32,
    /// Exclusive end, so that the empty range needs no special value.
    end_exclusive: u32,
}

impl KeyGroupRange {
    /// The inclusive range `[start, end]`.
    ///
    /// # Panics
    /// When `end < start`; use [`KeyGroupRange::empty`] for no key groups.
    pub fn new(start: u32, end: u32) -> Self {
        assert!(end >= start, "key group range end {end} < start {start}");
        Self {
            start,
            end_exclusive: end + 1,
        }
    }

    /// The range of no key groups.
    pub fn empty() -> Self {
        Self {
            start: 0,
            end_exclusive: 0,
        }
    }

    /// All key groups of a job: `[0, max_parallelism - 1]`.
    pub fn all(max_parallelism: u32) -> Self {
        Self::new(0, max_parallelism - 1)
    }

    /// First key group (meaningless when empty).
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Last key group, inclusive, or `None` when empty.
    pub fn end(&self) -> Option<u32> {
        (!self.is_empty()).then(|| self.end_exclusive - 1)
    }

    /// Number of key groups in the range.
    pub fn len(&self) -> u32 {
        self.end_exclusive.saturating_sub(self.start)
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key_group` is in the range.
    #[inline]
    pub fn contains(&self, key_group: u32) -> bool {
        key_group >= self.start && key_group < self.end_exclusive
    }

    /// The key groups both ranges hold.
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end_exclusive = self.end_exclusive.min(other.end_exclusive);
        if end_exclusive <= start {
            KeyGroupRange::empty()
        } else {
            KeyGroupRange { start, end_exclusive }
        }
    }

    /// Iterates the key groups in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + use<> {
        self.start..self.end_exclusive
    }

    /// The range operator `subtask` of `parallelism` owns (Flink's
    /// `computeKeyGroupRangeForOperatorIndex`).
    ///
    /// ```
    /// use streamstate_api::KeyGroupRange;
    /// assert_eq!(KeyGroupRange::for_subtask(128, 2, 0), KeyGroupRange::new(0, 63));
    /// assert_eq!(KeyGroupRange::for_subtask(128, 2, 1), KeyGroupRange::new(64, 127));
    /// ```
    ///
    /// # Panics
    /// When `subtask >= parallelism` or `parallelism > max_parallelism`.
    pub fn for_subtask(max_parallelism: u32, parallelism: u32, subtask: u32) -> Self {
        assert!(
            subtask < parallelism && parallelism <= max_parallelism,
            "subtask {subtask} of {parallelism} (max parallelism {max_parallelism})"
        );
        let (max, p, i) = (u64::from(max_parallelism), u64::from(parallelism), u64::from(subtask));
        let start = (i * max).div_ceil(p);
        let end = ((i + 1) * max - 1) / p;
        KeyGroupRange::new(start as u32, end as u32)
    }
}

impl std::fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.end() {
            Some(end) => write!(f, "[{}, {}]", self.start, end),
            None => f.write_str("[]"),
        }
    }
}

/// The subtask that owns `key_group` at `parallelism` (Flink's
/// `computeOperatorIndexForKeyGroup`); the inverse of
/// [`KeyGroupRange::for_subtask`].
#[inline]
pub fn subtask_for_key_group(max_parallelism: u32, parallelism: u32, key_group: u32) -> u32 {
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The on-disk contract: these values must never change, or restored
    /// keys would be routed to the wrong subtask.
    #[test]
    fn pinned_hash_values() {
        assert_eq!(key_hash(b""), 0x2d06800538d394c2);
        assert_eq!(key_hash(b"\x05hello"), key_hash(&[5, b'h', b'e', b'l', b'l', b'o']));
        let pinned: &[(&[u8], u64, u32)] = &[
            (b"", 0x2d06800538d394c2, 66),
            (b"\x03the", PINNED_THE, 44),
            (b"\x04word", PINNED_WORD, 22),
        ];
        for (key, hash, group) in pinned {
            assert_eq!(key_hash(key), *hash, "hash of {key:?}");
            assert_eq!(assign_to_key_group(key, 128), *group, "group of {key:?}");
        }
    }
    const PINNED_THE: u64 = 2490773066208427820;
    const PINNED_WORD: u64 = 10950200382094629398;

    #[test]
    fn ranges_cover_all_groups_exactly_once() {
        for max in [1u32, 7, 128, 1000] {
            for p in 1..=max.min(17) {
                let mut next = 0;
                for i in 0..p {
                    let r = KeyGroupRange::for_subtask(max, p, i);
                    assert_eq!(r.start(), next, "max {max} p {p} i {i}");
                    next = r.end().map_or(next, |e| e + 1);
                    for kg in r.iter() {
                        assert_eq!(subtask_for_key_group(max, p, kg), i);
                    }
                }
                assert_eq!(next, max);
            }
        }
    }

    /// The power-of-two fast path is the remainder, for every supported
    /// power of two and hashes across the whole 64-bit range.
    #[test]
    fn key_groups_of_powers_of_two_are_the_remainder() {
        let hashes = (0..10_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).chain([
            0,
            1,
            u64::MAX,
            u64::MAX - 1,
            PINNED_THE,
            PINNED_WORD,
        ]);
        for shift in 0..=15 {
            let max_parallelism = 1u32 << shift;
            for hash in hashes.clone() {
                assert_eq!(
                    u64::from(key_group_for_hash(hash, max_parallelism)),
                    hash % u64::from(max_parallelism),
                    "hash {hash:#x}, max parallelism {max_parallelism}"
                );
            }
        }
    }

    #[test]
    fn intersection_and_empty() {
        let a = KeyGroupRange::new(0, 63);
        let b = KeyGroupRange::new(32, 127);
        assert_eq!(a.intersection(&b), KeyGroupRange::new(32, 63));
        assert!(a.intersection(&KeyGroupRange::new(64, 70)).is_empty());
        assert_eq!(KeyGroupRange::empty().len(), 0);
        assert_eq!(KeyGroupRange::empty().end(), None);
        assert_eq!(KeyGroupRange::new(3, 3).to_string(), "[3, 3]");
    }

    #[test]
    fn parallelism_checks() {
        assert!(check_parallelism(2, 128).is_ok());
        assert!(check_parallelism(0, 128).is_err());
        assert!(check_parallelism(129, 128).is_err());
        assert!(check_parallelism(1, 0).is_err());
        assert!(check_parallelism(1, UPPER_BOUND_MAX_PARALLELISM + 1).is_err());
    }
}
