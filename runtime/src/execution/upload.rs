//! Where snapshots go ([`TargetFactory`]) and the threads that run their
//! asynchronous phases ([`spawn_upload`]), so a processing thread never
//! waits on storage.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use streamstate_api::{Result, SnapshotFormat, SnapshotKind, SnapshotTarget};

use super::messages::{Ack, Barrier, Control, TaskSnapshot};

/// Where snapshots of this job go.
#[derive(Debug, Clone)]
pub(crate) struct TargetFactory {
    pub(crate) job_id: String,
    pub(crate) native: bool,
    pub(crate) incremental: bool,
}

impl TargetFactory {
    pub(crate) fn target(&self, barrier: Barrier, stem: String) -> SnapshotTarget {
        match barrier.kind {
            SnapshotKind::Checkpoint => SnapshotTarget {
                checkpoint_id: barrier.id,
                kind: barrier.kind,
                format: if self.native {
                    SnapshotFormat::Native
                } else {
                    SnapshotFormat::Canonical
                },
                incremental: self.incremental,
                base: streamstate_api::storage::layout::job_dir(&self.job_id),
                exclusive_dir: streamstate_api::storage::layout::checkpoint_dir_name(barrier.id),
                shared_dir: streamstate_api::storage::layout::SHARED_DIR.into(),
                file_stem: stem,
            },
            SnapshotKind::Savepoint => SnapshotTarget {
                checkpoint_id: barrier.id,
                kind: barrier.kind,
                format: SnapshotFormat::Canonical,
                incremental: false,
                base: format!("{}/", streamstate_api::storage::layout::SAVEPOINTS_DIR),
                exclusive_dir: streamstate_api::storage::layout::savepoint_dir_name(&self.job_id, barrier.id),
                shared_dir: streamstate_api::storage::layout::savepoint_dir_name(&self.job_id, barrier.id),
                file_stem: stem,
            },
        }
    }
}

/// The threads running snapshots' asynchronous phases. A job joins them
/// before it reports itself finished, so nothing writes to checkpoint
/// storage after `wait`/`cancel` return (a restart, or a user cleaning up,
/// would otherwise race with a late upload).
#[derive(Debug, Clone, Default)]
pub(crate) struct Uploads(Arc<Mutex<Vec<JoinHandle<()>>>>);

impl Uploads {
    pub(crate) fn push(&self, handle: JoinHandle<()>) {
        if let Ok(mut handles) = self.0.lock() {
            // Forget the finished ones, so the list stays short.
            handles.retain(|h| !h.is_finished());
            handles.push(handle);
        }
    }

    /// Waits for every upload started so far.
    pub(crate) fn join_all(&self) {
        let handles = self.0.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default();
        for handle in handles {
            // An upload that panicked has nothing left to write.
            let _ = handle.join();
        }
    }
}

/// Runs a snapshot's asynchronous phase on its own thread and reports the
/// outcome to the coordinator, so the processing thread never waits on
/// storage.
pub(crate) fn spawn_upload(
    uploads: &Uploads,
    control: Sender<Control>,
    id: u64,
    sync: Duration,
    write: impl FnOnce() -> Result<TaskSnapshot> + Send + 'static,
) {
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let message = match write() {
            Ok(snapshot) => Control::Ack(Box::new(Ack {
                id,
                snapshot,
                sync,
                async_time: started.elapsed(),
            })),
            Err(error) => Control::Decline { id, error },
        };
        let _ = control.send(message);
    });
    uploads.push(handle);
}
