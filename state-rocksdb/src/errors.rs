//! The errors of RocksDB calls and local files, with what a user needs to
//! know: one audited conversion from `rocksdb::Error`.

use std::path::Path;

use streamstate_api::{Error, ErrorKind};

pub(crate) fn rocks_error(what: &str, err: rocksdb::Error) -> Error {
    Error::new(
        ErrorKind::Storage,
        format!("RocksDB {what} failed: {}", err.into_string()),
    )
}

/// The error of a call on a backend whose database was closed.
pub(crate) fn backend_closed() -> Error {
    Error::invalid_argument("the RocksDB backend is closed")
}

pub(crate) fn io_error(what: &str, path: &Path, err: std::io::Error) -> Error {
    Error::new(ErrorKind::Storage, format!("{what} failed"))
        .with_context("file", path.display().to_string())
        .with_source(err)
}
