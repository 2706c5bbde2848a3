//! The canonical format's constants and its index, as data: what the
//! writer, the reader and restore share.

use serde::{Deserialize, Serialize};

use crate::descriptor::StateMeta;
use crate::key_group::KeyGroupRange;

/// Magic bytes at both ends of a canonical file.
pub const MAGIC: &[u8; 8] = b"SSKGSNAP";
/// The version this build writes. Version 2 added namespaced states and
/// timer states (both stored as map records, so the record layout is
/// version 1's): a build that reads only version 1 refuses the file instead
/// of misreading a namespaced state as a plain one.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version this build reads: version 1 files hold only states
/// without namespaces and read as they always did.
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// Checks a version read from a header or footer.
///
/// # Errors
/// [`crate::ErrorKind::IncompatibleVersion`] for a version outside
/// [`OLDEST_READABLE_VERSION`]..=[`FORMAT_VERSION`].
pub fn check_version(version: u32) -> crate::Result<()> {
    if (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Ok(());
    }
    Err(crate::Error::new(
        crate::ErrorKind::IncompatibleVersion,
        format!(
            "canonical snapshot format version {version}; this build reads versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}"
        ),
    ))
}
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
