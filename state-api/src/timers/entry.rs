//! A timer's bytes: the timestamp written so that byte order is numeric
//! order, and the index entry `timestamp | varint len(key) | key |
//! namespace` whose byte order is firing order.

use crate::codec::put_varint;
use crate::{Error, Result};

/// Writes a timestamp so that byte order is numeric order.
pub(super) fn put_timestamp(out: &mut Vec<u8>, timestamp: i64) {
    out.extend_from_slice(&((timestamp as u64) ^ (1 << 63)).to_be_bytes());
}

/// Reads a timestamp written by [`put_timestamp`], and the bytes after it.
pub(super) fn get_timestamp(bytes: &[u8]) -> Result<(i64, &[u8])> {
    if bytes.len() < 8 {
        return Err(Error::corrupt("timer entry shorter than its timestamp"));
    }
    let (ts, rest) = bytes.split_at(8);
    let raw = u64::from_be_bytes(ts.try_into().map_err(|_| Error::corrupt("timer timestamp"))?);
    Ok(((raw ^ (1 << 63)) as i64, rest))
}

/// Writes the index entry of a timer into `out`.
pub(super) fn write_entry(out: &mut Vec<u8>, timestamp: i64, key: &[u8], namespace: &[u8]) {
    out.clear();
    put_timestamp(out, timestamp);
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    out.extend_from_slice(namespace);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_numbers_in_bytes() {
        let stamps = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let encoded: Vec<Vec<u8>> = stamps
            .iter()
            .map(|&t| {
                let mut out = Vec::new();
                put_timestamp(&mut out, t);
                out
            })
            .collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(sorted, encoded);
        for (bytes, &t) in encoded.iter().zip(&stamps) {
            assert_eq!(get_timestamp(bytes).unwrap(), (t, &[][..]));
        }
    }
}
