//! Where things live under a checkpoint directory (Flink's layout).
//!
//! ```text
//! <dir>/<job-id>/chk-<n>/_metadata      commit point of checkpoint n
//! <dir>/<job-id>/chk-<n>/...            files exclusive to checkpoint n
//! <dir>/<job-id>/shared/...             files shared by incremental checkpoints
//! <dir>/<job-id>/taskowned/...          files owned by tasks, not checkpoints
//! <dir>/savepoints/savepoint-<job6>-<n>/_metadata   self-contained savepoints
//! ```
//!
//! All paths here are relative to the storage root and use `/`.

use crate::{Error, Result};

/// Directory name of savepoints under the checkpoint directory.
pub const SAVEPOINTS_DIR: &str = "savepoints";
/// Directory of shared files inside a job directory.
pub const SHARED_DIR: &str = "shared";
/// Directory of task-owned files inside a job directory.
pub const TASKOWNED_DIR: &str = "taskowned";

/// Checks a job id: 1 to 128 of `[A-Za-z0-9_-]`, and not `savepoints`.
///
/// # Errors
/// [`crate::ErrorKind::Config`] naming the id.
pub fn validate_job_id(job_id: &str) -> Result<()> {
    let ok = !job_id.is_empty()
        && job_id.len() <= 128
        && job_id != SAVEPOINTS_DIR
        && job_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "job id {job_id:?} must be 1 to 128 letters, digits, `-` or `_` (and not `{SAVEPOINTS_DIR}`)"
        )))
    }
}

/// `<job-id>/`
pub fn job_dir(job_id: &str) -> String {
    format!("{job_id}/")
}

/// `chk-<n>`
pub fn checkpoint_dir_name(checkpoint_id: u64) -> String {
    format!("chk-{checkpoint_id}")
}

/// `<job-id>/chk-<n>/`
pub fn checkpoint_dir(job_id: &str, checkpoint_id: u64) -> String {
    format!("{job_id}/chk-{checkpoint_id}/")
}

/// `savepoint-<first 6 chars of job id>-<n>`
pub fn savepoint_dir_name(job_id: &str, checkpoint_id: u64) -> String {
    let short: String = job_id.chars().take(6).collect();
    format!("savepoint-{short}-{checkpoint_id}")
}

/// `savepoints/savepoint-<job6>-<n>/`
pub fn savepoint_dir(job_id: &str, checkpoint_id: u64) -> String {
    format!("{SAVEPOINTS_DIR}/{}/", savepoint_dir_name(job_id, checkpoint_id))
}

/// The id of a `chk-<n>` directory name.
///
/// ```
/// use streamstate_api::storage::layout::parse_checkpoint_dir_name;
/// assert_eq!(parse_checkpoint_dir_name("chk-12"), Some(12));
/// assert_eq!(parse_checkpoint_dir_name("chk-x"), None);
/// ```
pub fn parse_checkpoint_dir_name(name: &str) -> Option<u64> {
    let digits = name.trim_end_matches('/').strip_prefix("chk-")?;
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Normalizes a snapshot directory path given by a user: no leading `/`,
/// exactly one trailing `/`.
///
/// # Errors
/// [`crate::ErrorKind::Config`] for `..` components or an empty path.
pub fn normalize_dir(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(Error::config(format!(
            "snapshot path {path:?} is empty or contains `..`"
        )));
    }
    Ok(format!("{}/", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_flink() {
        assert_eq!(checkpoint_dir("job", 3), "job/chk-3/");
        assert_eq!(savepoint_dir("abcdefgh", 9), "savepoints/savepoint-abcdef-9/");
        assert!(validate_job_id("wordcount-1").is_ok());
        for bad in ["", "a/b", "..", "savepoints", "a b"] {
            assert!(validate_job_id(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_dir("/job/chk-1").unwrap(), "job/chk-1/");
        assert!(normalize_dir("job/../x").is_err());
    }
}
