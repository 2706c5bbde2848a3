//! [`CanonicalWriter`]: builds a canonical file in memory, key group by
//! key group (full files, and the delta files of incremental heap
//! checkpoints).

use super::format::{CanonicalIndex, KeyGroupBlock, FORMAT_VERSION, HEADER_LEN, MAGIC};
use crate::backend::StateId;
use crate::codec::{get_length_prefixed, put_length_prefixed, put_varint};
use crate::descriptor::{StateKind, StateMeta};
use crate::key_group::KeyGroupRange;
use crate::ttl::{self, TimestampMs};
use crate::{Error, ErrorKind, Result};

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
    /// A writer of a delta file: see the [module docs](crate::snapshot::canonical). Cells whose
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
        if self.state(state)?.stores_map() {
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
        if !meta.stores_map() {
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
