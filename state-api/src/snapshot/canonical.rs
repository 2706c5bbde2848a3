//! The canonical snapshot file: backend-neutral key/value records by key
//! group.
//!
//! ```text
//! header   "SSKGSNAP" | version u32 LE | reserved u32 LE            16 bytes
//! blocks   one per non-empty key group, ascending; each a run of records:
//!            varint state_index | varint key_len | key
//!            [varint user_key_len | user_key]     (map states only)
//!            varint value_len | value
//!          in a delta file (index `"delta": true`) the first varint is
//!          `state_index << 1 | removed`; a removal record is that varint
//!          and the key only
//! index    JSON CanonicalIndex: states, key-group range, and per block
//!          { key_group, offset, len, records, crc32c }
//! footer   index_offset u64 | index_len u64 | index_crc32c u32 |
//!          version u32 | "SSKGSNAP"                                  32 bytes
//! ```
//!
//! A full file holds every key. A *delta* file (incremental heap
//! checkpoints) holds only the keys that changed since an earlier snapshot:
//! a removal record for each key removed, and each changed key's whole
//! current value; a changed map key is written as a removal followed by all
//! its entries, so applying records in order replaces the key's map. A
//! snapshot is then a chain, one full file and the deltas after it, applied
//! in order ([`read_handles`], [`restore_into`]).
//!
//! Values are stored exactly as the typed layer wrote them (TTL prefix, list
//! framing), so any backend can restore any canonical file. Expired TTL
//! values are dropped while writing. Every length read from a file is checked
//! against the bytes that remain, so corrupt input fails with
//! [`ErrorKind::Corrupt`] instead of allocating without bound.

use serde::{Deserialize, Serialize};

use crate::backend::{KeyedStateBackend, KeyedStateHandle, SnapshotFormat, StateId};
use crate::codec::{get_length_prefixed, get_varint, put_length_prefixed, put_varint};
use crate::descriptor::{StateKind, StateMeta};
use crate::key_group::{assign_to_key_group, KeyGroupRange};
use crate::storage::CheckpointStorage;
use crate::ttl::{self, TimestampMs};
use crate::{Error, ErrorKind, Result};

/// Magic bytes at both ends of a canonical file.
pub const MAGIC: &[u8; 8] = b"SSKGSNAP";
/// The version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 16;
/// Footer length in bytes.
pub const FOOTER_LEN: usize = 32;
/// Upper bound on an index, so a corrupt footer cannot ask for gigabytes.
pub const MAX_INDEX_LEN: u64 = 64 << 20;

/// Where one key group's records are in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroupBlock {
    /// The key group.
    pub key_group: u32,
    /// Byte offset of the block from the start of the file.
    pub offset: u64,
    /// Block length in bytes.
    pub len: u64,
    /// Number of records in the block.
    pub records: u64,
    /// CRC-32C of the block's bytes.
    pub crc32c: u32,
}

/// The index at the end of a canonical file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalIndex {
    /// Key groups the file covers.
    pub key_group_range: KeyGroupRange,
    /// States, in the order records index them.
    pub states: Vec<StateMeta>,
    /// Blocks of non-empty key groups, ascending by key group.
    pub blocks: Vec<KeyGroupBlock>,
    /// Whether this is a delta file: its records change an earlier file's
    /// keys and include removals.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
}

impl CanonicalIndex {
    /// Total number of records in the file.
    pub fn record_count(&self) -> u64 {
        self.blocks.iter().map(|b| b.records).sum()
    }
}

/// One key/value record read from a canonical file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanonicalRecord<'a> {
    /// Index into [`CanonicalIndex::states`].
    pub state_index: usize,
    /// The key group the record was stored under.
    pub key_group: u32,
    /// Serialized key.
    pub key: &'a [u8],
    /// Serialized user key, for map states.
    pub user_key: Option<&'a [u8]>,
    /// Stored value bytes (TTL prefix and list framing included); empty for
    /// a removal.
    pub value: &'a [u8],
    /// Whether the record removes the key from the state (delta files only):
    /// its value and, for map states, all its entries.
    pub removed: bool,
}

/// Builds a canonical file in memory, key group by key group.
///
/// ```
/// use streamstate_api::snapshot::canonical::{CanonicalWriter, parse_file};
/// use streamstate_api::{KeyGroupRange, StateMeta, StateKind};
/// let states = vec![StateMeta::new::<u64>("count", StateKind::Value)];
/// let mut w = CanonicalWriter::new(states, KeyGroupRange::new(0, 127), 0);
/// let key = b"\x02hi";
/// w.start_key_group(streamstate_api::key_group::assign_to_key_group(key, 128)).unwrap();
/// w.add_cell(0, key, &[7]).unwrap();
/// let bytes = w.finish().unwrap();
/// let (index, records) = parse_file(&bytes).unwrap();
/// assert_eq!(index.record_count(), 1);
/// assert_eq!(records[0].value, &[7]);
/// ```
#[derive(Debug)]
pub struct CanonicalWriter {
    buf: Vec<u8>,
    index: CanonicalIndex,
    open_block: Option<(u32, usize, u64)>,
    now_ms: TimestampMs,
    scratch: Vec<u8>,
}

impl CanonicalWriter {
    /// A writer of a delta file: see the [module docs](self). Cells whose
    /// values all expired at `now_ms` are written as removals, so a stale
    /// value of an earlier file does not come back.
    pub fn new_delta(states: Vec<StateMeta>, range: KeyGroupRange, now_ms: TimestampMs) -> Self {
        let mut writer = Self::new(states, range, now_ms);
        writer.index.delta = true;
        writer
    }

    /// A writer for `states` covering `range`. TTL values that are expired
    /// at `now_ms` are dropped.
    pub fn new(states: Vec<StateMeta>, range: KeyGroupRange, now_ms: TimestampMs) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        Self {
            buf,
            index: CanonicalIndex {
                key_group_range: range,
                states,
                blocks: Vec::new(),
                delta: false,
            },
            open_block: None,
            now_ms,
            scratch: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing but the header was written.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_LEN
    }

    /// Starts the block of `key_group`; key groups must ascend.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a key group outside the range or
    /// not above the previous one.
    pub fn start_key_group(&mut self, key_group: u32) -> Result<()> {
        let last = self
            .open_block
            .map(|(kg, _, _)| kg)
            .or_else(|| self.index.blocks.last().map(|b| b.key_group));
        if !self.index.key_group_range.contains(key_group) || last.is_some_and(|l| key_group <= l) {
            return Err(Error::invalid_argument(format!(
                "key group {key_group} is out of order or outside {}",
                self.index.key_group_range
            )));
        }
        self.close_block();
        self.open_block = Some((key_group, self.buf.len(), 0));
        Ok(())
    }

    fn close_block(&mut self) {
        if let Some((key_group, offset, records)) = self.open_block.take() {
            if records > 0 {
                let bytes = &self.buf[offset..];
                self.index.blocks.push(KeyGroupBlock {
                    key_group,
                    offset: offset as u64,
                    len: bytes.len() as u64,
                    records,
                    crc32c: crc32c::crc32c(bytes),
                });
            }
        }
    }

    fn state(&self, state: StateId) -> Result<&StateMeta> {
        self.index
            .states
            .get(state)
            .ok_or_else(|| crate::backend::unknown_state(state))
    }

    /// The live part of a stored cell: `None` when everything expired.
    fn live_cell<'a>(&'a mut self, state: StateId, value: &'a [u8]) -> Result<Option<&'a [u8]>> {
        let meta = self.state(state)?;
        if meta.ttl.is_none() {
            return Ok(Some(value));
        }
        let now = self.now_ms;
        if meta.kind != StateKind::List {
            let (expires_at, _) = ttl::unwrap(value)?;
            return Ok((!ttl::is_expired(expires_at, now)).then_some(value));
        }
        // Lists expire element by element.
        self.scratch.clear();
        let mut rest = value;
        while !rest.is_empty() {
            let element = get_length_prefixed(&mut rest)?;
            let (expires_at, _) = ttl::unwrap(element)?;
            if !ttl::is_expired(expires_at, now) {
                put_length_prefixed(&mut self.scratch, element);
            }
        }
        Ok((!self.scratch.is_empty()).then_some(&self.scratch[..]))
    }

    fn open_key_group(&self) -> Result<u32> {
        self.open_block
            .map(|(kg, _, _)| kg)
            .ok_or_else(|| Error::invalid_argument("add a record after start_key_group"))
    }

    /// Adds the cell of a value, list, reducing or aggregating state.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] without an open key group, for an
    /// unknown state or a map state.
    pub fn add_cell(&mut self, state: StateId, key: &[u8], value: &[u8]) -> Result<()> {
        self.open_key_group()?;
        if self.state(state)?.kind.is_map() {
            return Err(crate::backend::wrong_state_kind(self.state(state)?, "a cell state"));
        }
        let mut buf = std::mem::take(&mut self.buf);
        let delta = self.index.delta;
        match self.live_cell(state, value) {
            Ok(Some(live)) => {
                put_varint(&mut buf, state_tag(state, delta, false));
                put_length_prefixed(&mut buf, key);
                put_length_prefixed(&mut buf, live);
                self.bump_records();
            }
            Ok(None) if delta => {
                put_varint(&mut buf, state_tag(state, delta, true));
                put_length_prefixed(&mut buf, key);
                self.bump_records();
            }
            Ok(None) => {}
            Err(e) => {
                self.buf = buf;
                return Err(e);
            }
        }
        self.buf = buf;
        Ok(())
    }

    /// Adds a removal of `key` from `state` (delta files only).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] in a full file, without an open key
    /// group, or for an unknown state.
    pub fn add_removal(&mut self, state: StateId, key: &[u8]) -> Result<()> {
        self.open_key_group()?;
        self.state(state)?;
        if !self.index.delta {
            return Err(Error::invalid_argument("removal records belong in delta files only"));
        }
        put_varint(&mut self.buf, state_tag(state, true, true));
        put_length_prefixed(&mut self.buf, key);
        self.bump_records();
        Ok(())
    }

    /// Adds one entry of a map state.
    ///
    /// # Errors
    /// As [`CanonicalWriter::add_cell`], for a non-map state.
    pub fn add_map_entry(&mut self, state: StateId, key: &[u8], user_key: &[u8], value: &[u8]) -> Result<()> {
        self.open_key_group()?;
        let meta = self.state(state)?;
        if !meta.kind.is_map() {
            return Err(crate::backend::wrong_state_kind(meta, "a map state"));
        }
        if meta.ttl.is_some() {
            let (expires_at, _) = ttl::unwrap(value)?;
            if ttl::is_expired(expires_at, self.now_ms) {
                return Ok(());
            }
        }
        put_varint(&mut self.buf, state_tag(state, self.index.delta, false));
        put_length_prefixed(&mut self.buf, key);
        put_length_prefixed(&mut self.buf, user_key);
        put_length_prefixed(&mut self.buf, value);
        self.bump_records();
        Ok(())
    }

    fn bump_records(&mut self) {
        if let Some((_, _, records)) = self.open_block.as_mut() {
            *records += 1;
        }
    }

    /// Writes index and footer and returns the file's bytes and its index.
    ///
    /// # Errors
    /// [`ErrorKind::Serialization`] if the index cannot be encoded.
    pub fn finish_with_index(mut self) -> Result<(Vec<u8>, CanonicalIndex)> {
        self.close_block();
        let index_json = serde_json::to_vec(&self.index)
            .map_err(|e| Error::new(ErrorKind::Serialization, "cannot encode canonical index").with_source(e))?;
        let index_offset = self.buf.len() as u64;
        self.buf.extend_from_slice(&index_json);
        self.buf.extend_from_slice(&index_offset.to_le_bytes());
        self.buf.extend_from_slice(&(index_json.len() as u64).to_le_bytes());
        self.buf.extend_from_slice(&crc32c::crc32c(&index_json).to_le_bytes());
        self.buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        self.buf.extend_from_slice(MAGIC);
        Ok((self.buf, self.index))
    }

    /// Writes index and footer and returns the file's bytes.
    ///
    /// # Errors
    /// As [`CanonicalWriter::finish_with_index`].
    pub fn finish(self) -> Result<Vec<u8>> {
        Ok(self.finish_with_index()?.0)
    }
}

/// The leading varint of a record: the state index, and in delta files the
/// removal flag in the low bit.
fn state_tag(state: StateId, delta: bool, removed: bool) -> u64 {
    if delta {
        (state as u64) << 1 | u64::from(removed)
    } else {
        state as u64
    }
}

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
    if version != FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::IncompatibleVersion,
            format!("canonical snapshot format version {version}; this build reads version {FORMAT_VERSION}"),
        ));
    }
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
        let user_key = if meta.kind.is_map() {
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
fn parse_file_index(bytes: &[u8]) -> Result<CanonicalIndex> {
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
fn block_bytes<'a>(file: &'a [u8], block: &KeyGroupBlock) -> &'a [u8] {
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
    if version != FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::IncompatibleVersion,
            format!("canonical snapshot format version {version}; this build reads version {FORMAT_VERSION}"),
        ));
    }
    Ok(())
}

/// The file records passed to [`read_handles`]' `apply` came from.
#[derive(Debug, Clone, Copy)]
pub struct RecordFile<'a> {
    /// The file's states; a record's `state_index` points into them.
    pub states: &'a [StateMeta],
    /// Whether the file is a delta (records change an earlier file's state)
    /// rather than a full snapshot (every record a key of its own).
    pub delta: bool,
    /// The file's place among the files read, from 0: records of one file
    /// share it, so a caller can map the file's states to its own once per
    /// file instead of comparing state lists per record.
    pub ordinal: usize,
}

impl<'a> RecordFile<'a> {
    fn of(index: &'a CanonicalIndex, ordinal: usize) -> Self {
        Self {
            states: &index.states,
            delta: index.delta,
            ordinal,
        }
    }
}

/// Reads every canonical record of `handles` whose key group is in `range`
/// and passes them to `apply` a key-group block at a time, with the file
/// they came from. A handle's files are read in order: a full file, then
/// the deltas after it, whose removal records (`removed`) `apply` must
/// carry out.
///
/// A file whose whole range is wanted is read at once and its CRC-32C checked
/// against the manifest; otherwise only its footer, index and the wanted
/// blocks are read. Each block is checked against its own CRC before its
/// records are passed on.
///
/// # Errors
/// [`ErrorKind::Unsupported`] for a non-canonical handle; storage,
/// [`ErrorKind::NotFound`], [`ErrorKind::Corrupt`] and
/// [`ErrorKind::ChecksumMismatch`] errors naming the file.
pub fn read_handles(
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    range: KeyGroupRange,
    mut apply: impl FnMut(RecordFile<'_>, &[CanonicalRecord<'_>]) -> Result<()>,
) -> Result<()> {
    let mut ordinal = 0;
    for handle in handles {
        if handle.format != SnapshotFormat::Canonical {
            return Err(Error::unsupported(format!(
                "snapshot written by backend `{}` is in {:?} format; only the same backend restores it",
                handle.backend, handle.format
            )));
        }
        let wanted = handle.key_group_range.intersection(&range);
        if wanted.is_empty() {
            continue;
        }
        for file in &handle.files {
            let with_file = |e: Error| e.with_context("file", file.path.clone());
            let this_file = ordinal;
            ordinal += 1;
            if wanted == handle.key_group_range {
                let bytes = storage.read_verified(file)?;
                let index = parse_file_index(&bytes).map_err(with_file)?;
                // A block at a time: a vector of the whole file's records
                // (~50 MiB at 700k keys) cost a heap restore a fifth of its
                // time in page faults and copies (docs/BENCHMARKS.md).
                for block in &index.blocks {
                    let records = parse_block(&index, block, block_bytes(&bytes, block)).map_err(with_file)?;
                    apply(RecordFile::of(&index, this_file), &records).map_err(with_file)?;
                }
            } else {
                let len = storage.stat_len(&file.path)?;
                if len != file.size {
                    return Err(
                        Error::corrupt(format!("file is {len} bytes, manifest says {}", file.size))
                            .with_context("file", file.path.clone()),
                    );
                }
                if len < (HEADER_LEN + FOOTER_LEN) as u64 {
                    return Err(with_file(Error::corrupt(format!(
                        "canonical snapshot of {len} bytes is too short"
                    ))));
                }
                let footer_bytes = storage.read_range(&file.path, len - FOOTER_LEN as u64..len)?;
                let footer = parse_footer(&footer_bytes, len).map_err(with_file)?;
                let index_bytes =
                    storage.read_range(&file.path, footer.index_offset..footer.index_offset + footer.index_len)?;
                let index = parse_index(&index_bytes, &footer).map_err(with_file)?;
                for block in index.blocks.iter().filter(|b| wanted.contains(b.key_group)) {
                    let bytes = storage.read_range(&file.path, block.offset..block.offset + block.len)?;
                    let records = parse_block(&index, block, &bytes).map_err(with_file)?;
                    apply(RecordFile::of(&index, this_file), &records).map_err(with_file)?;
                }
            }
        }
    }
    Ok(())
}

/// Restores canonical `handles` into `backend`, keeping only the key groups
/// of the backend's range. Works for every backend through the
/// [`KeyedStateBackend`] trait; states are registered as found.
///
/// # Errors
/// See [`read_handles`]; [`ErrorKind::Corrupt`] when a record's key does not
/// hash to the key group it was stored under.
pub fn restore_into(
    backend: &mut dyn KeyedStateBackend,
    handles: &[KeyedStateHandle],
    storage: &CheckpointStorage,
) -> Result<()> {
    let range = backend.key_group_range();
    let max_parallelism = backend.max_parallelism();
    // Maps a file's states to backend ids, once per file; files of one
    // snapshot share their state lists, so they share the ids too.
    let mut ids: Vec<(Vec<StateMeta>, Vec<StateId>)> = Vec::new();
    let mut file_ids: Option<(usize, usize)> = None;
    let mut new_keys: Vec<usize> = Vec::new();
    read_handles(storage, handles, range, |file, records| {
        let slot = match file_ids {
            Some((ordinal, slot)) if ordinal == file.ordinal => slot,
            _ => {
                let slot = match ids.iter().position(|(s, _)| s.as_slice() == file.states) {
                    Some(slot) => slot,
                    None => {
                        let registered = file
                            .states
                            .iter()
                            .map(|meta| backend.register_state(meta))
                            .collect::<Result<Vec<_>>>()?;
                        ids.push((file.states.to_vec(), registered));
                        ids.len() - 1
                    }
                };
                file_ids = Some((file.ordinal, slot));
                slot
            }
        };
        let state_ids = &ids[slot].1;
        if let (false, Some(first)) = (file.delta, records.first()) {
            // Every cell record of a full file is a key of its own: say how
            // many each state gets in this key group before writing them.
            new_keys.clear();
            new_keys.resize(state_ids.len(), 0);
            for record in records.iter().filter(|r| r.user_key.is_none()) {
                new_keys[record.state_index] += 1;
            }
            for (&state, &keys) in state_ids.iter().zip(&new_keys) {
                if keys > 0 {
                    backend.reserve_keys(state, first.key_group, keys);
                }
            }
        }
        for record in records {
            restore_record(backend, state_ids[record.state_index], record, max_parallelism)?;
        }
        Ok(())
    })
}

/// Writes one record of a canonical file into `backend`'s `state`.
fn restore_record(
    backend: &mut dyn KeyedStateBackend,
    state: StateId,
    record: &CanonicalRecord<'_>,
    max_parallelism: u32,
) -> Result<()> {
    // `set_current_key` hashes the key to its key group; checking that
    // group against the one the record was stored under costs no second
    // hash. It refuses a key outside the backend's range, which a corrupt
    // record's key may hash to: that is corruption too.
    let key_group_mismatch = |actual: u32| {
        Error::corrupt(format!(
            "record stored under key group {} hashes to key group {actual} (max parallelism {max_parallelism})",
            record.key_group
        ))
    };
    if let Err(refused) = backend.set_current_key(record.key) {
        let actual = assign_to_key_group(record.key, max_parallelism);
        return Err(if actual == record.key_group {
            refused
        } else {
            key_group_mismatch(actual)
        });
    }
    if backend.current_key_group() != record.key_group {
        return Err(key_group_mismatch(backend.current_key_group()));
    }
    match record.user_key {
        _ if record.removed => backend.clear(state),
        Some(user_key) => backend.map_put(state, user_key, record.value),
        None => backend.put(state, record.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttl::TtlConfig;

    fn states() -> Vec<StateMeta> {
        vec![
            StateMeta::new::<u64>("v", StateKind::Value),
            StateMeta::new::<u64>("m", StateKind::Map),
        ]
    }

    fn sample() -> Vec<u8> {
        let mut w = CanonicalWriter::new(states(), KeyGroupRange::new(0, 9), 0);
        w.start_key_group(2).unwrap();
        w.add_cell(0, b"a", b"1").unwrap();
        w.add_map_entry(1, b"a", b"x", b"2").unwrap();
        w.start_key_group(5).unwrap();
        w.start_key_group(7).unwrap();
        w.add_cell(0, b"b", b"3").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trip_keeps_records_and_skips_empty_groups() {
        let bytes = sample();
        let (index, records) = parse_file(&bytes).unwrap();
        assert_eq!(index.blocks.len(), 2);
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].user_key, Some(&b"x"[..]));
        assert_eq!(records[2].key_group, 7);
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let bytes = sample();
        for i in 0..bytes.len() {
            let mut copy = bytes.clone();
            copy[i] ^= 0x40;
            assert!(parse_file(&copy).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(parse_file(&bytes[..len]).is_err(), "truncation to {len} went unnoticed");
        }
    }

    fn sample_delta() -> Vec<u8> {
        let mut w = CanonicalWriter::new_delta(states(), KeyGroupRange::new(0, 9), 0);
        w.start_key_group(2).unwrap();
        w.add_removal(0, b"a").unwrap();
        w.add_removal(1, b"a").unwrap();
        w.add_map_entry(1, b"a", b"y", b"4").unwrap();
        w.start_key_group(7).unwrap();
        w.add_cell(0, b"b", b"5").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn delta_files_carry_removals_in_order() {
        let bytes = sample_delta();
        let (index, records) = parse_file(&bytes).unwrap();
        assert!(index.delta);
        let summary: Vec<_> = records
            .iter()
            .map(|r| (r.state_index, r.key, r.user_key, r.value, r.removed))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, &b"a"[..], None, &b""[..], true),
                (1, &b"a"[..], None, &b""[..], true),
                (1, &b"a"[..], Some(&b"y"[..]), &b"4"[..], false),
                (0, &b"b"[..], None, &b"5"[..], false),
            ]
        );
        for i in 0..bytes.len() {
            let mut copy = bytes.clone();
            copy[i] ^= 0x40;
            assert!(parse_file(&copy).is_err(), "flip at {i} went unnoticed");
        }
        // A full file has no removals and its index says so.
        let full = sample();
        let (index, records) = parse_file(&full).unwrap();
        assert!(!index.delta && records.iter().all(|r| !r.removed));
        let mut full = CanonicalWriter::new(states(), KeyGroupRange::new(0, 9), 0);
        full.start_key_group(1).unwrap();
        assert_eq!(
            full.add_removal(0, b"a").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn expired_cells_become_removals_in_deltas() {
        let mut meta = StateMeta::new::<u64>("t", StateKind::Value);
        meta.ttl = Some(TtlConfig::new(std::time::Duration::from_millis(5)));
        let mut expired = Vec::new();
        ttl::wrap_into(10, b"e", &mut expired);
        let mut w = CanonicalWriter::new_delta(vec![meta], KeyGroupRange::new(0, 0), 50);
        w.start_key_group(0).unwrap();
        w.add_cell(0, b"k", &expired).unwrap();
        let bytes = w.finish().unwrap();
        let (_, records) = parse_file(&bytes).unwrap();
        assert_eq!(records.len(), 1);
        assert!(records[0].removed);
    }

    #[test]
    fn newer_version_is_a_typed_error() {
        let mut bytes = sample();
        let n = bytes.len();
        bytes[n - 12..n - 8].copy_from_slice(&2u32.to_le_bytes());
        let err = parse_file(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::IncompatibleVersion);
    }

    #[test]
    fn key_groups_must_ascend_within_range() {
        let mut w = CanonicalWriter::new(states(), KeyGroupRange::new(0, 9), 0);
        w.start_key_group(3).unwrap();
        assert!(w.start_key_group(3).is_err());
        assert!(w.start_key_group(10).is_err());
        assert!(w.add_map_entry(0, b"k", b"u", b"v").is_err());
    }

    #[test]
    fn expired_ttl_values_are_purged() {
        let mut meta = StateMeta::new::<u64>("t", StateKind::List);
        meta.ttl = Some(TtlConfig::new(std::time::Duration::from_millis(5)));
        let mut cell = Vec::new();
        for expires in [10u64, 100] {
            let mut element = Vec::new();
            ttl::wrap_into(expires, b"e", &mut element);
            put_length_prefixed(&mut cell, &element);
        }
        let mut w = CanonicalWriter::new(vec![meta], KeyGroupRange::new(0, 0), 50);
        w.start_key_group(0).unwrap();
        w.add_cell(0, b"k", &cell).unwrap();
        let bytes = w.finish().unwrap();
        let (_, records) = parse_file(&bytes).unwrap();
        let elements = crate::codec::list_elements(records[0].value).unwrap();
        assert_eq!(elements.len(), 1);
        assert_eq!(ttl::unwrap(elements[0]).unwrap().0, 100);
    }
}
