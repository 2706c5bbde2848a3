//! RocksDB key layout: every key starts with its key group (2 bytes, big
//! endian), so a key-group range is one contiguous key range (range deletes
//! and range scans for rescaling).
//!
//! ```text
//! cell state:  kg u16 BE | key
//! map state:   kg u16 BE | varint len(key) | key | user key
//! timer state: kg u16 BE | timestamp (8 B) | varint len(key) | key | namespace
//! ```
//!
//! A timer's user key is its timestamp (8 bytes, in byte order) and its
//! namespace; in timestamp order (the default timer store) the timestamp
//! comes before the key, so a key group's timers iterate in firing order
//! (Flink's RocksDB timer layout).

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

/// Writes the stored key of timer `user_key` (timestamp | namespace) of
/// `key` in `key_group`, in timestamp order.
///
/// # Errors
/// [`streamstate_api::ErrorKind::InvalidArgument`] for a user key shorter
/// than a timestamp.
pub fn timer_key(out: &mut Vec<u8>, key_group: u32, key: &[u8], user_key: &[u8]) -> Result<()> {
    if user_key.len() < 8 {
        return Err(Error::invalid_argument(
            "a timer's user key starts with its 8-byte timestamp",
        ));
    }
    let (timestamp, namespace) = user_key.split_at(8);
    out.clear();
    put_key_group(out, key_group);
    out.extend_from_slice(timestamp);
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    out.extend_from_slice(namespace);
    Ok(())
}

/// Splits a stored timer key ([`timer_key`]) into (key, user key).
///
/// # Errors
/// Corrupt for a malformed key.
pub fn split_timer_key(stored: &[u8]) -> Result<(&[u8], Vec<u8>)> {
    if stored.len() < 10 {
        return Err(Error::corrupt("timer key shorter than key group and timestamp"));
    }
    let timestamp = &stored[2..10];
    let mut rest = &stored[10..];
    let len = get_varint(&mut rest)? as usize;
    if len > rest.len() {
        return Err(Error::corrupt("timer key length exceeds the key"));
    }
    let (key, namespace) = rest.split_at(len);
    let mut user_key = Vec::with_capacity(8 + namespace.len());
    user_key.extend_from_slice(timestamp);
    user_key.extend_from_slice(namespace);
    Ok((key, user_key))
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
    fn timer_keys_sort_by_timestamp_before_key_and_round_trip() {
        let mut early = Vec::new();
        timer_key(&mut early, 7, b"zzz", &[0, 0, 0, 0, 0, 0, 0, 1, 9]).unwrap();
        let mut late = Vec::new();
        timer_key(&mut late, 7, b"a", &[0, 0, 0, 0, 0, 0, 0, 2]).unwrap();
        assert!(early < late, "the timestamp orders before the key");
        assert_eq!(&early[..2], &7u16.to_be_bytes());
        assert_eq!(
            split_timer_key(&early).unwrap(),
            (&b"zzz"[..], vec![0, 0, 0, 0, 0, 0, 0, 1, 9])
        );
        assert!(timer_key(&mut late, 7, b"a", &[1, 2]).is_err());
        assert!(split_timer_key(&early[..9]).is_err());
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
