//! Which checkpoints and shared files retention deletes: pure decisions,
//! made completely before anything is deleted.
//!
//! Rules:
//! * the newest `retain` completed checkpoints stay;
//! * older completed checkpoints go;
//! * incomplete checkpoints (no `_metadata`) older than the newest completed
//!   one were abandoned and go; newer ones may still be in progress and stay;
//! * a shared file goes only if a deleted checkpoint referenced it and no
//!   retained checkpoint does;
//! * a completed checkpoint whose manifest cannot be read stays, and while it
//!   exists no shared file is deleted (its references are unknown).

use std::collections::BTreeSet;

/// What retention knows about one checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// Checkpoint id.
    pub id: u64,
    /// Whether `_metadata` exists.
    pub complete: bool,
    /// Files the manifest references, or `None` when it cannot be read.
    pub referenced_files: Option<Vec<String>>,
}

/// The decisions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionPlan {
    /// Checkpoint directories to delete, ascending.
    pub delete_checkpoints: Vec<u64>,
    /// Shared files to delete (storage-root-relative), sorted.
    pub delete_shared_files: Vec<String>,
}

/// Plans retention keeping `retain` (at least 1) completed checkpoints.
/// `is_shared` tells which referenced paths are shared (as opposed to inside
/// the checkpoint's own directory, which goes with the directory).
///
/// ```
/// use streamstate_api::storage::retention::{plan_retention, CheckpointEntry};
/// let entry = |id, files: &[&str]| CheckpointEntry {
///     id, complete: true,
///     referenced_files: Some(files.iter().map(|s| s.to_string()).collect()),
/// };
/// let plan = plan_retention(
///     &[entry(1, &["shared/a", "shared/b"]), entry(2, &["shared/b", "shared/c"])],
///     1,
///     |p| p.starts_with("shared/"),
/// );
/// assert_eq!(plan.delete_checkpoints, vec![1]);
/// assert_eq!(plan.delete_shared_files, vec!["shared/a".to_string()]);
/// ```
pub fn plan_retention(entries: &[CheckpointEntry], retain: usize, is_shared: impl Fn(&str) -> bool) -> RetentionPlan {
    let retain = retain.max(1);
    let mut complete: Vec<&CheckpointEntry> = entries.iter().filter(|e| e.complete).collect();
    complete.sort_by_key(|e| std::cmp::Reverse(e.id));
    let Some(newest_complete) = complete.first().map(|e| e.id) else {
        // Nothing committed yet: nothing is safe to delete.
        return RetentionPlan::default();
    };
    let (kept, dropped) = complete.split_at(complete.len().min(retain));
    let unreadable_exists = complete.iter().any(|e| e.referenced_files.is_none());

    let mut delete_checkpoints: Vec<u64> = dropped
        .iter()
        .filter(|e| e.referenced_files.is_some())
        .map(|e| e.id)
        .collect();
    delete_checkpoints.extend(
        entries
            .iter()
            .filter(|e| !e.complete && e.id < newest_complete)
            .map(|e| e.id),
    );
    delete_checkpoints.sort_unstable();
    delete_checkpoints.dedup();

    let mut delete_shared_files = Vec::new();
    if !unreadable_exists {
        let still_referenced: BTreeSet<&str> = kept
            .iter()
            .flat_map(|e| e.referenced_files.iter().flatten())
            .map(String::as_str)
            .collect();
        let candidates: BTreeSet<&str> = dropped
            .iter()
            .flat_map(|e| e.referenced_files.iter().flatten())
            .map(String::as_str)
            .filter(|p| is_shared(p) && !still_referenced.contains(p))
            .collect();
        delete_shared_files = candidates.into_iter().map(str::to_owned).collect();
    }
    RetentionPlan {
        delete_checkpoints,
        delete_shared_files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(id: u64, files: &[&str]) -> CheckpointEntry {
        CheckpointEntry {
            id,
            complete: true,
            referenced_files: Some(files.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn shared(p: &str) -> bool {
        p.starts_with("shared/")
    }

    #[test]
    fn keeps_newest_and_their_shared_files() {
        let entries = [
            complete(1, &["shared/a"]),
            complete(2, &["shared/a", "shared/b"]),
            complete(3, &["shared/b", "chk-3/x"]),
        ];
        let plan = plan_retention(&entries, 2, shared);
        assert_eq!(plan.delete_checkpoints, vec![1]);
        assert!(plan.delete_shared_files.is_empty(), "shared/a is still used by 2");
        let plan = plan_retention(&entries, 1, shared);
        assert_eq!(plan.delete_checkpoints, vec![1, 2]);
        assert_eq!(plan.delete_shared_files, vec!["shared/a"]);
    }

    #[test]
    fn in_progress_checkpoints_survive_and_abandoned_ones_go() {
        let entries = [
            CheckpointEntry {
                id: 1,
                complete: false,
                referenced_files: None,
            },
            complete(2, &[]),
            CheckpointEntry {
                id: 3,
                complete: false,
                referenced_files: None,
            },
        ];
        let plan = plan_retention(&entries, 1, shared);
        assert_eq!(plan.delete_checkpoints, vec![1]);
    }

    #[test]
    fn nothing_is_deleted_before_a_commit() {
        let entries = [CheckpointEntry {
            id: 1,
            complete: false,
            referenced_files: None,
        }];
        assert_eq!(plan_retention(&entries, 1, shared), RetentionPlan::default());
    }

    #[test]
    fn unreadable_manifest_blocks_shared_deletion() {
        let entries = [
            complete(1, &["shared/a"]),
            CheckpointEntry {
                id: 2,
                complete: true,
                referenced_files: None,
            },
            complete(3, &[]),
        ];
        let plan = plan_retention(&entries, 1, shared);
        assert_eq!(plan.delete_checkpoints, vec![1]);
        assert!(plan.delete_shared_files.is_empty());
    }
}
