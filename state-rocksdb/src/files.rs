//! Local directories and file names: creating and removing working
//! directories, removing the ones dead processes left, and a guard that
//! removes a snapshot's directory when its upload is done.

use std::path::{Path, PathBuf};

use streamstate_api::Result;

use crate::errors::io_error;

/// Separates the owner prefix from the local file name in storage names.
pub(crate) const NAME_SEPARATOR: char = '~';

/// The snapshot's local directory of hard links, removed when the snapshot
/// is dropped: after its asynchronous phase, successful or not, or unused.
pub(crate) struct DirGuard(pub(crate) PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        remove_dir(&self.0);
    }
}

/// Removes working directories of processes that no longer run: after a
/// crash they hold state of unknown age and are never reused.
pub(crate) fn clean_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('_').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::warn!(dir = %entry.path().display(), "removing a RocksDB directory left by a dead process");
            remove_dir(&entry.path());
        }
    }
}

/// Removes a directory and what it holds; one already gone is fine, any
/// other failure is logged (a leftover directory costs disk, not state).
pub(crate) fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a snapshot directory");
        }
    }
}

/// Creates a directory and its parents.
///
/// # Errors
/// [`streamstate_api::ErrorKind::Storage`] naming the directory.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating a directory", dir, e))
}
