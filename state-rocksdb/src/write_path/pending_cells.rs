//! Cell writes as a file of a native snapshot: the write-back cache's dirty
//! cells at a checkpoint (*pending cells*), and the writes a changelog
//! gathers between checkpoints ([`crate::snapshots::changelog`], the [`WriteLog`],
//! which is what a segment's SSTs are folded from; a segment of an earlier
//! version was such a file).
//!
//! Writing those cells into RocksDB was most of a checkpoint's synchronous
//! pause (up to 16,384 memtable inserts). Copied into a buffer they cost
//! a fraction of that (docs/BENCHMARKS.md); they stay dirty in the cache and reach
//! RocksDB later, at the dirty limit, as between checkpoints. A native
//! snapshot's state is then its RocksDB checkpoint with the pending cells
//! laid over it: restore puts them back into the write-back cache (or into
//! RocksDB when the cache is off or smaller), leaving out those of key
//! groups a rescaled instance does not own. A changelog's base
//! writes its pending cells as SSTs instead, which restore ingests with
//! the segments after them. Canonical snapshots (savepoints) still write
//! the cells into RocksDB first: their files hold everything in one format.
//!
//! A changelog's log holds every kind of write, in the order made: cell
//! puts and removals, list appends (RocksDB merges), and the removal of a
//! key range (a map state's `clear`).
//!
//! ```text
//! file:   MAGIC | varint(state count) | state name frames | write*
//! write:  varint(state index) | frame(RocksDB key) | op
//! op:     0 (removed) | 1 frame(value) | 2 frame(appended bytes)
//!         | 3 frame(end key, exclusive: every key from the RocksDB key up to it removed)
//! frame:  varint(len) | bytes
//! ```
//!
//! The storage layer checksums the file; decoding still checks every frame,
//! so a corrupt file is an error naming it, never a panic.

use streamstate_api::codec::{get_length_prefixed, get_varint, put_length_prefixed, put_varint};
use streamstate_api::{Error, Result};

/// The local name of the pending-cells file in a downloaded native
/// snapshot.
pub(crate) const PENDING_CELLS_FILE: &str = "streamstate-pending-cells";

/// The first bytes of the file (format version 1; tags 2 and 3 came with
/// changelog segments, which only this version reads).
const MAGIC: &[u8; 8] = b"SSPCELL1";

/// A cell of a small key and value (a word and its count): 12.5 bytes on
/// average in the word count's checkpoints.
const TYPICAL_CELL_BYTES: usize = 16;

const REMOVED: u8 = 0;
const PRESENT: u8 = 1;
const APPENDED: u8 = 2;
const RANGE_REMOVED: u8 = 3;

/// One write to a RocksDB key of a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOp<'a> {
    /// The key now holds this value.
    Put(&'a [u8]),
    /// The key is removed.
    Remove,
    /// These bytes are appended to the key's value (a list's merge).
    Append(&'a [u8]),
    /// Every key from the written key up to this one (exclusive) is
    /// removed.
    RemoveRange(&'a [u8]),
}

impl<'a> WriteOp<'a> {
    /// A put of `value`, or a removal for `None`.
    pub(crate) fn put_or_remove(value: Option<&'a [u8]>) -> Self {
        value.map_or(Self::Remove, Self::Put)
    }
}

fn encode(out: &mut Vec<u8>, state_index: usize, key: &[u8], op: WriteOp<'_>) {
    put_varint(out, state_index as u64);
    put_length_prefixed(out, key);
    let (tag, operand) = match op {
        WriteOp::Remove => (REMOVED, None),
        WriteOp::Put(value) => (PRESENT, Some(value)),
        WriteOp::Append(bytes) => (APPENDED, Some(bytes)),
        WriteOp::RemoveRange(end) => (RANGE_REMOVED, Some(end)),
    };
    out.push(tag);
    if let Some(operand) = operand {
        put_length_prefixed(out, operand);
    }
}

/// Encoded writes without the file's header: what a changelog gathers
/// between checkpoints. State indexes are the backend's state ids; the
/// header that names them is written with the file.
#[derive(Debug, Default)]
pub(crate) struct WriteLog {
    bytes: Vec<u8>,
}

impl WriteLog {
    /// Adds one write of the state at `state_index`.
    pub(crate) fn add(&mut self, state_index: usize, key: &[u8], op: WriteOp<'_>) {
        encode(&mut self.bytes, state_index, key, op);
    }

    /// Encoded bytes so far.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The encoded writes, leaving the log empty.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// Builds a file of cell writes.
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
        encode(&mut self.out, state_index, key, WriteOp::put_or_remove(value));
    }

    /// Adds writes a [`WriteLog`] encoded, with the same state indexes (as
    /// changelog segments of an earlier version held them).
    #[cfg(test)]
    pub(crate) fn extend_encoded(&mut self, encoded: &[u8]) {
        self.out.extend_from_slice(encoded);
    }

    /// The file's bytes.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// One write, borrowed from the file's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PendingCell<'a> {
    /// The state's name.
    pub(crate) state: &'a str,
    /// The RocksDB key (key group prefix and key).
    pub(crate) key: &'a [u8],
    /// What was written.
    pub(crate) op: WriteOp<'a>,
}

/// Decodes a file of cell writes; `file` names it in errors.
///
/// # Errors
/// Corrupt, naming what is wrong, for any malformed file.
pub(crate) fn decode<'a>(bytes: &'a [u8], file: &str) -> Result<Vec<PendingCell<'a>>> {
    decode_cells(bytes).map_err(|e| e.with_context("file", file.to_owned()))
}

fn decode_cells(bytes: &[u8]) -> Result<Vec<PendingCell<'_>>> {
    let (names, writes) = split_header(bytes)?;
    let mut cells = Vec::new();
    for_each_logged(writes, |index, key, op| {
        let state = usize::try_from(index)
            .ok()
            .and_then(|i| names.get(i))
            .ok_or_else(|| Error::corrupt(format!("state index {index} of a cell is out of range")))?;
        cells.push(PendingCell { state, key, op });
        Ok(())
    })?;
    Ok(cells)
}

/// Splits a file of cell writes into the state names of its header and its
/// writes, in the format a [`WriteLog`] encodes.
///
/// # Errors
/// Corrupt, naming what is wrong, for a malformed header.
pub(crate) fn split_header(bytes: &[u8]) -> Result<(Vec<&str>, &[u8])> {
    let mut input = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| Error::corrupt("not a cell-writes file (unknown header)"))?;
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
    Ok((names, input))
}

/// Decodes the writes a [`WriteLog`] encoded, with their state indexes,
/// calling `each` for every write in order.
///
/// # Errors
/// Corrupt for malformed bytes (a log is built in memory, so only a bug
/// makes one), or what `each` returns.
pub(crate) fn for_each_logged<'a>(
    mut input: &'a [u8],
    mut each: impl FnMut(u64, &'a [u8], WriteOp<'a>) -> Result<()>,
) -> Result<()> {
    while !input.is_empty() {
        let (index, key, op) = next_write(&mut input)?;
        each(index, key, op)?;
    }
    Ok(())
}

/// Decodes one write from the front of `input`: its state index, RocksDB
/// key and operation.
fn next_write<'a>(input: &mut &'a [u8]) -> Result<(u64, &'a [u8], WriteOp<'a>)> {
    let index = get_varint(input)?;
    let key = get_length_prefixed(input)?;
    if key.len() < 3 {
        return Err(Error::corrupt(
            "a cell key is shorter than its key group prefix and one byte",
        ));
    }
    let (&tag, rest) = input
        .split_first()
        .ok_or_else(|| Error::corrupt("a cell ends before its value"))?;
    *input = rest;
    let op = match tag {
        REMOVED => WriteOp::Remove,
        PRESENT => WriteOp::Put(get_length_prefixed(input)?),
        APPENDED => WriteOp::Append(get_length_prefixed(input)?),
        RANGE_REMOVED => WriteOp::RemoveRange(get_length_prefixed(input)?),
        other => return Err(Error::corrupt(format!("unknown cell tag {other}"))),
    };
    Ok((index, key, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut writer = PendingCellsWriter::new(&["count", "last", "items"], 5);
        writer.add(0, b"\x00\x07word", Some(b"\x05"));
        writer.add(1, b"\x01\x00gone", None);
        let mut log = WriteLog::default();
        log.add(2, b"\x00\x09list", WriteOp::Append(b"\x01\x02"));
        log.add(2, b"\x00\x09map\x00", WriteOp::RemoveRange(b"\x00\x09map\x01"));
        writer.extend_encoded(&log.take());
        assert_eq!(log.len(), 0, "take empties the log");
        writer.add(0, b"\x00\x08empty", Some(b""));
        writer.finish()
    }

    #[test]
    fn round_trips_every_kind_of_write_in_order() {
        let bytes = sample();
        let cells = decode(&bytes, PENDING_CELLS_FILE).unwrap();
        let cell = |state, key: &'static [u8], op| PendingCell { state, key, op };
        assert_eq!(
            cells,
            vec![
                cell("count", b"\x00\x07word", WriteOp::Put(b"\x05")),
                cell("last", b"\x01\x00gone", WriteOp::Remove),
                cell("items", b"\x00\x09list", WriteOp::Append(b"\x01\x02")),
                cell("items", b"\x00\x09map\x00", WriteOp::RemoveRange(b"\x00\x09map\x01")),
                cell("count", b"\x00\x08empty", WriteOp::Put(b"")),
            ]
        );
    }

    #[test]
    fn an_empty_file_has_no_cells() {
        let bytes = PendingCellsWriter::new(&[], 0).finish();
        assert!(decode(&bytes, PENDING_CELLS_FILE).unwrap().is_empty());
    }

    #[test]
    fn every_truncation_and_a_bad_header_are_corrupt_errors() {
        let bytes = sample();
        // Cutting inside a cell or the header never decodes; cutting at a
        // cell boundary decodes the cells before it (the storage checksum
        // catches that case).
        for len in 0..bytes.len() {
            match decode(&bytes[..len], "segment-7") {
                Err(e) => {
                    assert_eq!(e.kind(), streamstate_api::ErrorKind::Corrupt, "cut at {len}: {e}");
                    assert!(e.to_string().contains("segment-7"), "{e}");
                }
                Ok(cells) => assert!(cells.len() < 5, "cut at {len} decoded every cell"),
            }
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(decode(&bad, PENDING_CELLS_FILE).is_err());
        let mut bad_tag = bytes;
        // The last cell ends with its tag and an empty value's length.
        let last_tag = bad_tag.len() - 2;
        bad_tag[last_tag] = 7;
        assert!(decode(&bad_tag, PENDING_CELLS_FILE).is_err());
    }
}
