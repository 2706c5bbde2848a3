//! The write-back cache's dirty cells at a checkpoint, as one file of the
//! native snapshot (*pending cells*).
//!
//! Writing those cells into RocksDB was most of a checkpoint's synchronous
//! pause (up to 16,384 memtable inserts, 12–42 ms). Copied into a buffer
//! they cost about a millisecond; they stay dirty in the cache and reach
//! RocksDB later, at the dirty limit, as between checkpoints. A native
//! snapshot's state is then its RocksDB checkpoint with the pending cells
//! laid over it: restore puts them back into the write-back cache (or into
//! RocksDB when the cache is off or smaller), rescaling copies those of the
//! key groups it takes. Canonical snapshots (savepoints) still write the
//! cells into RocksDB first: their files hold everything in one format.
//!
//! ```text
//! file:   MAGIC | varint(state count) | state name frames | cell*
//! cell:   varint(state index) | frame(RocksDB key) | 0 (removed) | 1 frame(value)
//! frame:  varint(len) | bytes
//! ```
//!
//! The storage layer checksums the file; decoding still checks every frame,
//! so a corrupt file is an error naming it, never a panic.

use state_api::codec::{get_length_prefixed, get_varint, put_length_prefixed, put_varint};
use state_api::{Error, Result};

/// The local name of the file in a downloaded native snapshot.
pub(crate) const PENDING_CELLS_FILE: &str = "streamstate-pending-cells";

/// The first bytes of the file (format version 1).
const MAGIC: &[u8; 8] = b"SSPCELL1";

/// A cell of a small key and value (a word and its count): 12.5 bytes on
/// average in the word count's checkpoints.
const TYPICAL_CELL_BYTES: usize = 16;

const REMOVED: u8 = 0;
const PRESENT: u8 = 1;

/// Builds a pending-cells file.
pub(crate) struct PendingCellsWriter {
    out: Vec<u8>,
}

impl PendingCellsWriter {
    /// A file whose cells belong to `names` (states by index), with room
    /// for about `expected_cells` cells: growing the buffer while cells are
    /// added would copy it again and again during the pause.
    pub(crate) fn new(names: &[&str], expected_cells: usize) -> Self {
        let mut out = Vec::with_capacity(64 + expected_cells.saturating_mul(TYPICAL_CELL_BYTES));
        out.extend_from_slice(MAGIC);
        put_varint(&mut out, names.len() as u64);
        for name in names {
            put_length_prefixed(&mut out, name.as_bytes());
        }
        Self { out }
    }

    /// Adds one cell of the state at `state_index`: its value, or `None`
    /// for a removal.
    pub(crate) fn add(&mut self, state_index: usize, key: &[u8], value: Option<&[u8]>) {
        put_varint(&mut self.out, state_index as u64);
        put_length_prefixed(&mut self.out, key);
        match value {
            Some(value) => {
                self.out.push(PRESENT);
                put_length_prefixed(&mut self.out, value);
            }
            None => self.out.push(REMOVED),
        }
    }

    /// The file's bytes.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// One pending cell, borrowed from the file's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PendingCell<'a> {
    /// The state's name.
    pub(crate) state: &'a str,
    /// The RocksDB key (key group prefix and key).
    pub(crate) key: &'a [u8],
    /// The value, or `None` for a removal.
    pub(crate) value: Option<&'a [u8]>,
}

/// Decodes a pending-cells file.
///
/// # Errors
/// Corrupt, naming what is wrong, for any malformed file.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<PendingCell<'_>>> {
    decode_cells(bytes).map_err(|e| e.with_context("file", PENDING_CELLS_FILE))
}

fn decode_cells(bytes: &[u8]) -> Result<Vec<PendingCell<'_>>> {
    let mut input = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| Error::corrupt("not a pending-cells file (unknown header)"))?;
    let name_count = get_varint(&mut input)?;
    // Every name takes at least one byte: a larger count is corrupt (and
    // must not size an allocation).
    if name_count > input.len() as u64 {
        return Err(Error::corrupt(format!("state count {name_count} exceeds the file")));
    }
    let names = (0..name_count)
        .map(|_| {
            let name = get_length_prefixed(&mut input)?;
            std::str::from_utf8(name).map_err(|_| Error::corrupt("a state name is not UTF-8"))
        })
        .collect::<Result<Vec<&str>>>()?;
    let mut cells = Vec::new();
    while !input.is_empty() {
        let index = get_varint(&mut input)?;
        let state = usize::try_from(index)
            .ok()
            .and_then(|i| names.get(i))
            .ok_or_else(|| Error::corrupt(format!("state index {index} of a cell is out of range")))?;
        let key = get_length_prefixed(&mut input)?;
        if key.len() < 3 {
            return Err(Error::corrupt(
                "a cell key is shorter than its key group prefix and one byte",
            ));
        }
        let (&tag, rest) = input
            .split_first()
            .ok_or_else(|| Error::corrupt("a cell ends before its value"))?;
        input = rest;
        let value = match tag {
            PRESENT => Some(get_length_prefixed(&mut input)?),
            REMOVED => None,
            other => return Err(Error::corrupt(format!("unknown cell tag {other}"))),
        };
        cells.push(PendingCell { state, key, value });
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut writer = PendingCellsWriter::new(&["count", "last"], 3);
        writer.add(0, b"\x00\x07word", Some(b"\x05"));
        writer.add(1, b"\x01\x00gone", None);
        writer.add(0, b"\x00\x08empty", Some(b""));
        writer.finish()
    }

    #[test]
    fn round_trips_values_removals_and_empty_values() {
        let bytes = sample();
        let cells = decode(&bytes).unwrap();
        assert_eq!(
            cells,
            vec![
                PendingCell {
                    state: "count",
                    key: b"\x00\x07word",
                    value: Some(b"\x05"),
                },
                PendingCell {
                    state: "last",
                    key: b"\x01\x00gone",
                    value: None,
                },
                PendingCell {
                    state: "count",
                    key: b"\x00\x08empty",
                    value: Some(b""),
                },
            ]
        );
    }

    #[test]
    fn an_empty_file_has_no_cells() {
        let bytes = PendingCellsWriter::new(&[], 0).finish();
        assert!(decode(&bytes).unwrap().is_empty());
    }

    #[test]
    fn every_truncation_and_a_bad_header_are_corrupt_errors() {
        let bytes = sample();
        // Cutting inside a cell or the header never decodes; cutting at a
        // cell boundary decodes the cells before it (the storage checksum
        // catches that case).
        for len in 0..bytes.len() {
            match decode(&bytes[..len]) {
                Err(e) => {
                    assert_eq!(e.kind(), state_api::ErrorKind::Corrupt, "cut at {len}: {e}");
                    assert!(e.to_string().contains(PENDING_CELLS_FILE), "{e}");
                }
                Ok(cells) => assert!(cells.len() < 3, "cut at {len} decoded every cell"),
            }
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(decode(&bad).is_err());
        let mut bad_tag = bytes;
        // The last cell ends with its tag and an empty value's length.
        let last_tag = bad_tag.len() - 2;
        bad_tag[last_tag] = 7;
        assert!(decode(&bad_tag).is_err());
    }
}
