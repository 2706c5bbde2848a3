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
//! [`crate::ErrorKind::Corrupt`] instead of allocating without bound.
//!
//! | module | job |
//! |---|---|
//! | `format` | constants, [`CanonicalIndex`], [`KeyGroupBlock`], [`CanonicalRecord`] |
//! | `writer` | [`CanonicalWriter`] |
//! | `reader` | [`parse_file`], [`parse_footer`], [`parse_index`], [`parse_block`] |
//! | `restore` | [`read_handles`], [`restore_into`] |

mod format;
mod reader;
mod restore;
#[cfg(test)]
mod tests;
mod writer;

pub use format::{
    check_version, CanonicalIndex, CanonicalRecord, KeyGroupBlock, FOOTER_LEN, FORMAT_VERSION, HEADER_LEN, MAGIC,
    MAX_INDEX_LEN, OLDEST_READABLE_VERSION,
};
pub use reader::{parse_block, parse_file, parse_footer, parse_index, Footer};
pub use restore::{read_handles, restore_into, RecordFile};
pub use writer::CanonicalWriter;
