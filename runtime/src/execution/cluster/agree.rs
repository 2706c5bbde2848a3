//! Before the job's dataflow: every worker of every process agrees on the
//! job's id and on the snapshot they all restore, in rounds of votes on a
//! small dataflow of its own (every worker broadcasts its vote, and reads
//! all once timely's progress says the round is complete).
//!
//! From `latest`, each worker restores its own part of the newest
//! checkpoint it can (falling back past damaged ones) and votes for it;
//! the oldest vote wins, and whoever restored a newer one restores again
//! at most that one, until every vote is the same. A damaged file of one
//! subtask therefore sends every subtask back to the same older checkpoint.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use streamstate_api::{CheckpointStorage, CompletedSnapshot, Error, ErrorKind, Result, StateBackend};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use super::wire::Builder;
use crate::execution::restore::{keyed_options, newest_restorable, restore_subtask, snapshot_uri, SubtaskRestore};
use crate::plan::{JobSettings, RestoreFrom};

/// Rounds of votes among all workers.
struct Ballot<V: Clone + Send + 'static> {
    input: InputHandle<u64, Builder<(u64, u32, V)>>,
    probe: ProbeHandle<u64>,
    seen: Rc<RefCell<Vec<(u64, u32, V)>>>,
    round: u64,
}

impl<V: Clone + Send + Serialize + DeserializeOwned + 'static> Ballot<V> {
    fn new(worker: &mut timely::worker::Worker) -> Self {
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let inspected = Rc::clone(&seen);
        worker.dataflow::<u64, _, _>(|scope| {
            input
                .to_stream(scope)
                .broadcast()
                .inspect(move |vote: &(u64, u32, V)| inspected.borrow_mut().push(vote.clone()))
                .probe_with(&probe);
        });
        Self {
            input,
            probe,
            seen,
            round: 0,
        }
    }

    /// Casts this worker's vote and returns every worker's, by worker index.
    fn vote(&mut self, worker: &mut timely::worker::Worker, vote: V) -> Vec<V> {
        let index = worker.index() as u32;
        self.input.send((self.round, index, vote));
        self.round += 1;
        self.input.advance_to(self.round);
        while self.probe.less_than(&self.round) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        let round = self.round - 1;
        let mut votes: Vec<(u64, u32, V)> = Vec::new();
        self.seen.borrow_mut().retain(|vote| {
            if vote.0 == round {
                votes.push(vote.clone());
                false
            } else {
                true
            }
        });
        votes.sort_by_key(|vote| vote.1);
        votes.into_iter().map(|(_, _, vote)| vote).collect()
    }
}

/// Orders checkpoints as `latest` does: commit time, then id, then
/// directory (so every worker orders the same list the same way).
type SnapshotKey = (u64, u64, String);

fn key_of(snapshot: &CompletedSnapshot) -> SnapshotKey {
    (
        snapshot.manifest.created_at_ms,
        snapshot.manifest.checkpoint_id,
        snapshot.dir.clone(),
    )
}

#[derive(Clone, Serialize, Deserialize)]
struct Vote {
    job_id: String,
    /// The snapshot this worker restored, if any.
    restored: Option<SnapshotKey>,
    /// Why this worker cannot restore at all.
    error: Option<String>,
}

/// What a worker starts from.
pub(crate) struct Start {
    pub(crate) job_id: String,
    pub(crate) restored: Option<SubtaskRestore>,
    /// Id of the snapshot restored (the next checkpoint's id is one more).
    pub(crate) checkpoint_id: Option<u64>,
    /// URI of the snapshot restored, and how long this worker took.
    pub(crate) path: Option<String>,
    pub(crate) restore_ms: u64,
}

impl Start {
    /// Without state.
    fn fresh(job_id: String) -> Self {
        Self {
            job_id,
            restored: None,
            checkpoint_id: None,
            path: None,
            restore_ms: 0,
        }
    }
}

/// Agrees with every other worker on the job id (worker 0's proposal, when
/// the settings name none) and restores this worker's part of the snapshot
/// they agree on.
pub(crate) fn agree_and_restore(
    worker: &mut timely::worker::Worker,
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    proposed_job_id: &str,
) -> Result<Start> {
    let subtask = worker.index() as u32;
    let mut ballot: Ballot<Vote> = Ballot::new(worker);
    let votes = ballot.vote(
        worker,
        Vote {
            job_id: proposed_job_id.to_owned(),
            restored: None,
            error: None,
        },
    );
    let job_id = votes[0].job_id.clone();
    streamstate_api::storage::layout::validate_job_id(&job_id)?;
    let (storage, candidates) = match &settings.restore {
        None => return Ok(Start::fresh(job_id)),
        Some(RestoreFrom::Snapshot { storage, dir }) => (storage, vec![storage.load(dir)?]),
        Some(RestoreFrom::Latest) => {
            let storage = settings
                .storage
                .as_ref()
                .ok_or_else(|| Error::config("restoring from latest needs checkpoint storage"))?;
            (storage, storage.completed_checkpoints(None)?)
        }
    };
    let started = std::time::Instant::now();
    let mut bound: Option<SnapshotKey> = None;
    let mut mine: Option<(SnapshotKey, u64, SubtaskRestore)> = None;
    loop {
        let mut error = None;
        if mine
            .as_ref()
            .is_none_or(|(key, _, _)| bound.as_ref().is_some_and(|b| key > b))
        {
            mine = None;
            match restore_newest(
                settings,
                backend,
                &job_id,
                storage,
                &candidates,
                bound.as_ref(),
                subtask,
            ) {
                Ok(found) => mine = found,
                Err(e) => error = Some(e),
            }
        }
        let vote = Vote {
            job_id: job_id.clone(),
            restored: mine.as_ref().map(|(key, _, _)| key.clone()),
            error: error.as_ref().map(ToString::to_string),
        };
        let votes = ballot.vote(worker, vote);
        if let Some(e) = error {
            return Err(e);
        }
        if let Some((index, vote)) = votes.iter().enumerate().find(|(_, v)| v.error.is_some()) {
            return Err(Error::new(
                ErrorKind::Storage,
                format!(
                    "subtask {index} cannot restore: {}",
                    vote.error.as_deref().unwrap_or("")
                ),
            ));
        }
        let restored: Vec<Option<&SnapshotKey>> = votes.iter().map(|v| v.restored.as_ref()).collect();
        if restored.iter().all(Option::is_none) {
            if !candidates.is_empty() {
                return Err(Error::new(ErrorKind::NotFound, "no restorable checkpoint"));
            }
            tracing::warn!(
                uri = storage.uri(),
                "no completed checkpoint found; starting without state"
            );
            return Ok(Start::fresh(job_id));
        }
        if restored.iter().any(Option::is_none) {
            return Err(Error::config(format!(
                "the processes see different checkpoints under {}: is the checkpoint storage shared by all?",
                storage.uri()
            )));
        }
        let oldest = restored.iter().flatten().min().map(|k| (*k).clone());
        if restored.iter().all(|k| k.cloned() == oldest) {
            let ((_, _, dir), id, part) = mine.expect("every vote names a checkpoint");
            return Ok(Start {
                job_id,
                restored: Some(part),
                checkpoint_id: Some(id),
                path: Some(snapshot_uri(storage, &dir)),
                restore_ms: started.elapsed().as_millis() as u64,
            });
        }
        bound = oldest;
    }
}

/// This subtask's part of the newest of `candidates` (newest first) at or
/// before `bound` that is not damaged.
fn restore_newest(
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    job_id: &str,
    storage: &CheckpointStorage,
    candidates: &[CompletedSnapshot],
    bound: Option<&SnapshotKey>,
    subtask: u32,
) -> Result<Option<(SnapshotKey, u64, SubtaskRestore)>> {
    let eligible = candidates
        .iter()
        .filter(|snapshot| bound.is_none_or(|b| &key_of(snapshot) <= b));
    let found = newest_restorable(eligible, |snapshot| {
        let started = std::time::Instant::now();
        let part = restore_subtask(settings, backend, job_id, storage, snapshot, subtask)?;
        let (path, restore_ms) = (
            snapshot_uri(storage, &snapshot.dir),
            started.elapsed().as_millis() as u64,
        );
        tracing::info!(%path, subtask, restore_ms, "restored");
        Ok(part)
    })?;
    Ok(found.map(|(snapshot, part)| (key_of(snapshot), snapshot.manifest.checkpoint_id, part)))
}

/// A fresh keyed backend for this worker (no restore).
pub(crate) fn fresh_keyed(
    settings: &JobSettings,
    backend: &Arc<dyn StateBackend>,
    job_id: &str,
    subtask: u32,
) -> Result<Box<dyn streamstate_api::KeyedStateBackend>> {
    backend.create_keyed_backend(keyed_options(settings, job_id, subtask))
}
