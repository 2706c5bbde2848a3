//! RocksDB key layout: every key starts with its key group (2 bytes, big
//! endian), so a key-group range is one contiguous key range (range deletes
//! and range scans for rescaling).
//!
//! ```text
//! cell state:  kg u16 BE | key
//! map state:   kg u16 BE | varint len(key) | key | user key
//! ```

use streamstate_api::codec::{get_varint, put_varint};
use streamstate_api::{Error, Result};

/// Appends the 2-byte key-group prefix.
#[inline]
pub fn put_key_group(out: &mut Vec<u8>, key_group: u32) {
    out.extend_from_slice(&(key_group as u16).to_be_bytes());
}

/// The first key of `key_group` (and the end bound of `key_group - 1`).
pub fn key_group_start(key_group: u32) -> Vec<u8> {
    if key_group > u32::from(u16::MAX) {
        return vec![0xff, 0xff, 0xff];
    }
    (key_group as u16).to_be_bytes().to_vec()
}

/// An inclusive upper bound below `key` that lies above nearly every key
/// before it: for `DeleteFilesInRange`, whose end bound is inclusive, so
/// that a file ending exactly at `key` stays.
pub fn inclusive_bound_below(key: &[u8]) -> Vec<u8> {
    let mut bound = key.to_vec();
    match bound.pop() {
        // A proper prefix of `key` sorts before it.
        None | Some(0) => bound,
        Some(last) => {
            bound.push(last - 1);
            bound.extend_from_slice(&[0xff; 8]);
            bound
        }
    }
}

/// Writes the map-state prefix of `key` in `key_group`.
pub fn map_prefix(out: &mut Vec<u8>, key_group: u32, key: &[u8]) {
    out.clear();
    put_key_group(out, key_group);
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
}

/// Splits a stored map key into (key, user key).
///
/// # Errors
/// Corrupt for a malformed key.
pub fn split_map_key(stored: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut rest = stored
        .get(2..)
        .ok_or_else(|| Error::corrupt("map key without key group"))?;
    let len = get_varint(&mut rest)? as usize;
    if len > rest.len() {
        return Err(Error::corrupt("map key length exceeds the key"));
    }
    Ok(rest.split_at(len))
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when no such key exists (all `0xff`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < 0xff {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        let mut k = Vec::new();
        map_prefix(&mut k, 300, b"key");
        k.extend_from_slice(b"user");
        assert_eq!(&k[..2], &300u16.to_be_bytes());
        assert_eq!(split_map_key(&k).unwrap(), (&b"key"[..], &b"user"[..]));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff]), None);
        assert!(key_group_start(1) > key_group_start(0));
    }

    #[test]
    fn the_bound_below_a_key_group_lies_above_the_previous_group_s_keys() {
        for key_group in [1u32, 2, 255, 256, 257, 300, 65535, 65536] {
            let start = key_group_start(key_group);
            let bound = inclusive_bound_below(&start);
            assert!(bound < start, "{key_group}: {bound:?} !< {start:?}");
            let mut previous = key_group_start(key_group - 1);
            previous.extend_from_slice(b"some key");
            assert!(bound >= previous, "{key_group}: {bound:?} < {previous:?}");
        }
    }
}
