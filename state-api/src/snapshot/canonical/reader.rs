//! Parsing a canonical file: footer, index, blocks, records; every length
//! checked against the bytes that remain, so corrupt input is an error,
//! never an unbounded allocation.

use super::format::{
    check_version, CanonicalIndex, CanonicalRecord, KeyGroupBlock, FOOTER_LEN, HEADER_LEN, MAGIC, MAX_INDEX_LEN,
};
use crate::codec::{get_length_prefixed, get_varint};
use crate::{Error, ErrorKind, Result};

fn read_u64(bytes: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(a)
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(a)
}

/// Where the index is, as told by a footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Offset of the index.
    pub index_offset: u64,
    /// Length of the index.
    pub index_len: u64,
    /// CRC-32C of the index.
    pub index_crc32c: u32,
}

/// Parses the footer of a file of `file_len` bytes.
///
/// # Errors
/// [`ErrorKind::Corrupt`] for bad magic or out-of-bounds offsets;
/// [`ErrorKind::IncompatibleVersion`] for another format version.
pub fn parse_footer(footer: &[u8], file_len: u64) -> Result<Footer> {
    if footer.len() != FOOTER_LEN || file_len < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(Error::corrupt(format!(
            "canonical snapshot of {file_len} bytes is too short to hold header and footer"
        )));
    }
    if &footer[24..32] != MAGIC {
        return Err(Error::corrupt(
            "canonical snapshot footer has no magic bytes (truncated or not a snapshot)",
        ));
    }
    let version = read_u32(&footer[20..24]);
    check_version(version)?;
    let f = Footer {
        index_offset: read_u64(&footer[0..8]),
        index_len: read_u64(&footer[8..16]),
        index_crc32c: read_u32(&footer[16..20]),
    };
    let index_end = f.index_offset.checked_add(f.index_len);
    if f.index_len > MAX_INDEX_LEN
        || f.index_offset < HEADER_LEN as u64
        || index_end != Some(file_len - FOOTER_LEN as u64)
    {
        return Err(Error::corrupt(format!(
            "canonical snapshot index at {}+{} does not fit a file of {file_len} bytes",
            f.index_offset, f.index_len
        )));
    }
    Ok(f)
}

/// Parses and checks the index bytes described by `footer`.
///
/// # Errors
/// [`ErrorKind::ChecksumMismatch`] when the index's CRC differs;
/// [`ErrorKind::Corrupt`] when it does not decode or its blocks do not fit.
pub fn parse_index(index_bytes: &[u8], footer: &Footer) -> Result<CanonicalIndex> {
    let actual = crc32c::crc32c(index_bytes);
    if actual != footer.index_crc32c {
        return Err(Error::new(
            ErrorKind::ChecksumMismatch,
            format!(
                "canonical snapshot index checksum {actual:08x} differs from recorded {:08x}",
                footer.index_crc32c
            ),
        ));
    }
    let index: CanonicalIndex = serde_json::from_slice(index_bytes)
        .map_err(|e| Error::corrupt("canonical snapshot index does not decode").with_source(e))?;
    let mut previous_end = HEADER_LEN as u64;
    let mut previous_group = None;
    for block in &index.blocks {
        let end = block.offset.checked_add(block.len);
        if block.offset < previous_end
            || end.is_none_or(|e| e > footer.index_offset)
            || !index.key_group_range.contains(block.key_group)
            || previous_group.is_some_and(|g| block.key_group <= g)
        {
            return Err(Error::corrupt(format!(
                "canonical snapshot block of key group {} at {}+{} is out of place",
                block.key_group, block.offset, block.len
            )));
        }
        previous_end = end.unwrap_or(u64::MAX);
        previous_group = Some(block.key_group);
    }
    Ok(index)
}

/// Checks a block's CRC and decodes its records.
///
/// # Errors
/// [`ErrorKind::ChecksumMismatch`] when the CRC differs; [`ErrorKind::Corrupt`]
/// when a record is truncated or names an unknown state.
pub fn parse_block<'a>(
    index: &CanonicalIndex,
    block: &KeyGroupBlock,
    bytes: &'a [u8],
) -> Result<Vec<CanonicalRecord<'a>>> {
    let actual = crc32c::crc32c(bytes);
    if bytes.len() as u64 != block.len || actual != block.crc32c {
        return Err(Error::new(
            ErrorKind::ChecksumMismatch,
            format!(
                "block of key group {} has checksum {actual:08x} over {} bytes, recorded {:08x} over {}",
                block.key_group,
                bytes.len(),
                block.crc32c,
                block.len
            ),
        ));
    }
    let mut rest = bytes;
    // A record takes at least 3 bytes, which bounds the allocation.
    let mut records = Vec::with_capacity((block.records as usize).min(bytes.len() / 3 + 1));
    while !rest.is_empty() {
        let tag = get_varint(&mut rest)?;
        let (state_index, removed) = if index.delta {
            ((tag >> 1) as usize, tag & 1 == 1)
        } else {
            (tag as usize, false)
        };
        let meta = index.states.get(state_index).ok_or_else(|| {
            Error::corrupt(format!(
                "record names state index {state_index}, the file has {} states",
                index.states.len()
            ))
        })?;
        let key = get_length_prefixed(&mut rest)?;
        if removed {
            records.push(CanonicalRecord {
                state_index,
                key_group: block.key_group,
                key,
                user_key: None,
                value: &[],
                removed,
            });
            continue;
        }
        let user_key = if meta.stores_map() {
            Some(get_length_prefixed(&mut rest)?)
        } else {
            None
        };
        let value = get_length_prefixed(&mut rest)?;
        records.push(CanonicalRecord {
            state_index,
            key_group: block.key_group,
            key,
            user_key,
            value,
            removed,
        });
    }
    if records.len() as u64 != block.records {
        return Err(Error::corrupt(format!(
            "block of key group {} holds {} records, index says {}",
            block.key_group,
            records.len(),
            block.records
        )));
    }
    Ok(records)
}

/// Parses a whole canonical file held in memory.
///
/// # Errors
/// See [`parse_footer`], [`parse_index`] and [`parse_block`].
pub fn parse_file(bytes: &[u8]) -> Result<(CanonicalIndex, Vec<CanonicalRecord<'_>>)> {
    let index = parse_file_index(bytes)?;
    // Sized up front: a record takes at least 3 bytes, which bounds what a
    // corrupt index can ask for.
    let mut records = Vec::with_capacity((index.record_count() as usize).min(bytes.len() / 3 + 1));
    for block in &index.blocks {
        records.extend(parse_block(&index, block, block_bytes(bytes, block))?);
    }
    Ok((index, records))
}

/// Checks the header and footer of a whole canonical file held in memory
/// and parses its index.
pub(super) fn parse_file_index(bytes: &[u8]) -> Result<CanonicalIndex> {
    let len = bytes.len() as u64;
    if bytes.len() < HEADER_LEN + FOOTER_LEN {
        return Err(Error::corrupt(format!(
            "canonical snapshot of {len} bytes is too short"
        )));
    }
    check_header(&bytes[..HEADER_LEN])?;
    let footer = parse_footer(&bytes[bytes.len() - FOOTER_LEN..], len)?;
    let index_start = footer.index_offset as usize;
    parse_index(&bytes[index_start..index_start + footer.index_len as usize], &footer)
}

/// A block's bytes in a whole file whose index [`parse_index`] checked
/// (its blocks lie inside the file).
pub(super) fn block_bytes<'a>(file: &'a [u8], block: &KeyGroupBlock) -> &'a [u8] {
    let start = block.offset as usize;
    &file[start..start + block.len as usize]
}

fn check_header(header: &[u8]) -> Result<()> {
    if &header[..8] != MAGIC {
        return Err(Error::corrupt(
            "file does not start with the canonical snapshot magic bytes",
        ));
    }
    let version = read_u32(&header[8..12]);
    if read_u32(&header[12..16]) != 0 {
        return Err(Error::corrupt("canonical snapshot header has unknown flags set"));
    }
    check_version(version)?;
    Ok(())
}
