//! The write path around RocksDB: the write-back cache of recent cell
//! writes (`write_back`) and the files of cell writes that snapshots carry
//! and restores replay (`pending_cells`).

pub(crate) mod pending_cells;
pub(crate) mod write_back;
