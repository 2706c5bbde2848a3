//! The snapshot format: canonical key-group files and the `_metadata`
//! manifest that commits a checkpoint.
//!
//! * [`canonical`]: a backend-neutral stream of key/value records grouped by
//!   key group, with an index of per-key-group offsets and checksums, so a
//!   restore at another parallelism reads only the key groups it owns.
//! * [`manifest`]: the JSON `_metadata` file listing every file of a
//!   checkpoint with its size and CRC-32C. Writing it is the commit point.
//!
//! Both are versioned; a reader meeting a newer version fails with
//! [`crate::ErrorKind::IncompatibleVersion`] rather than guessing.

pub mod canonical;
pub mod manifest;
