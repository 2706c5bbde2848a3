//! The conformance suite and model-based property tests every backend runs.
//!
//! A backend crate adds a test file like:
//!
//! ```ignore
//! mod on_memory { streamstate_api::conformance_tests!(streamstate_api::testkit::TestTarget::new(MyBackend::new(), streamstate_api::testkit::StorageFixture::memory)); }
//! mod on_file { streamstate_api::conformance_tests!(streamstate_api::testkit::TestTarget::new(MyBackend::new(), streamstate_api::testkit::StorageFixture::local_dir)); }
//! ```
//!
//! [`conformance_tests!`](crate::conformance_tests) expands to one `#[test]`
//! per spec-named case in [`conformance`]; [`property_tests!`](crate::property_tests)
//! adds the model-based property tests of [`model`].

pub mod conformance;
pub mod model;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::{
    KeyedBackendOptions, KeyedStateBackend, KeyedStateHandle, SnapshotFormat, SnapshotKind, SnapshotTarget,
    StateBackend,
};
use crate::snapshot::manifest::{OperatorSnapshot, SnapshotManifest};
use crate::storage::CheckpointStorage;
use crate::{KeyGroupRange, Result};

/// Checkpoint storage for one test, with whatever keeps it alive (a
/// temporary directory is deleted when the fixture drops).
#[derive(Debug)]
pub struct StorageFixture {
    /// The storage under test.
    pub storage: CheckpointStorage,
    _guard: Option<tempfile::TempDir>,
}

impl StorageFixture {
    /// In-process `memory://` storage.
    ///
    /// # Panics
    /// If the storage cannot be built (a bug).
    pub fn memory() -> Self {
        Self {
            storage: CheckpointStorage::open("memory://").unwrap_or_else(|e| panic!("memory storage: {e}")),
            _guard: None,
        }
    }

    /// `file://` storage in a fresh temporary directory.
    ///
    /// # Panics
    /// If the directory cannot be created.
    pub fn local_dir() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let uri = format!("file://{}", dir.path().display());
        Self {
            storage: CheckpointStorage::open(&uri).unwrap_or_else(|e| panic!("file storage {uri}: {e}")),
            _guard: Some(dir),
        }
    }

    /// Storage at the URI in environment variable `var`, under a fresh
    /// unique prefix. Fails loudly (never skips) when the variable is unset
    /// or the storage cannot be reached.
    ///
    /// # Panics
    /// When `var` is unset or the storage cannot be opened.
    pub fn from_env(var: &str) -> Self {
        let base = std::env::var(var).unwrap_or_else(|_| {
            panic!("{var} is not set: start the test servers with scripts/test.sh (it sets {var})")
        });
        let unique = format!(
            "{}/t-{}-{}",
            base.trim_end_matches('/'),
            std::process::id(),
            NEXT_PREFIX.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let storage =
            CheckpointStorage::open(&unique).unwrap_or_else(|e| panic!("cannot open storage from {var}: {e}"));
        if let Err(e) = storage.write("_probe", b"probe".to_vec()) {
            panic!("storage from {var} is unreachable: {e}");
        }
        Self { storage, _guard: None }
    }
}

impl StorageFixture {
    /// The real S3 server of the test script (`STREAMSTATE_TEST_S3_URI`).
    ///
    /// # Panics
    /// When the server is not running.
    pub fn s3() -> Self {
        Self::from_env("STREAMSTATE_TEST_S3_URI")
    }

    /// The real HDFS of the test script (`STREAMSTATE_TEST_HDFS_URI`).
    ///
    /// # Panics
    /// When the server is not running.
    pub fn hdfs() -> Self {
        Self::from_env("STREAMSTATE_TEST_HDFS_URI")
    }
}

static NEXT_PREFIX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A backend under test plus how to make storage for each test.
#[derive(Clone)]
pub struct TestTarget {
    /// The backend factory.
    pub backend: Arc<dyn StateBackend>,
    /// Makes a fresh storage fixture.
    pub storage: fn() -> StorageFixture,
    /// The snapshot format the suite asks for (canonical by default).
    pub format: crate::SnapshotFormat,
    /// Whether the suite asks for incremental snapshots.
    pub incremental: bool,
    /// Property-test cases when `PROPTEST_CASES` is not set (default 256).
    pub property_cases: u32,
}

impl std::fmt::Debug for TestTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestTarget")
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl TestTarget {
    /// A target for `backend` with storage from `storage`.
    pub fn new(backend: impl StateBackend + 'static, storage: fn() -> StorageFixture) -> Self {
        Self {
            backend: Arc::new(backend),
            storage,
            format: crate::SnapshotFormat::Canonical,
            incremental: false,
            property_cases: 256,
        }
    }

    /// Runs `cases` property-test cases unless `PROPTEST_CASES` says
    /// otherwise: for storage where every snapshot waits on slow round trips
    /// (HDFS closes each file in ~220 ms), so the suite stays within CI time.
    #[must_use]
    pub fn with_property_cases(mut self, cases: u32) -> Self {
        self.property_cases = cases;
        self
    }

    /// Runs the suite with incremental snapshots in the canonical format
    /// (the heap backends' delta chains).
    #[must_use]
    pub fn with_incremental_snapshots(mut self) -> Self {
        self.incremental = true;
        self
    }

    /// Runs the suite with native, incremental snapshots (backends that
    /// have them).
    #[must_use]
    pub fn with_native_incremental_snapshots(mut self) -> Self {
        self.format = crate::SnapshotFormat::Native;
        self.incremental = true;
        self
    }

    /// Options for an instance owning `range` of `max_parallelism` groups.
    pub fn options(&self, range: KeyGroupRange, max_parallelism: u32) -> KeyedBackendOptions {
        KeyedBackendOptions::new("conformance-job", "op", range, max_parallelism)
    }

    /// A new keyed backend over every key group of `max_parallelism`.
    ///
    /// # Errors
    /// Backend creation errors.
    pub fn create_full(&self, max_parallelism: u32) -> Result<Box<dyn KeyedStateBackend>> {
        self.backend
            .create_keyed_backend(self.options(KeyGroupRange::all(max_parallelism), max_parallelism))
    }
}

/// What one key holds in one state, read back through the raw trait.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoredValue {
    /// A cell's bytes.
    Cell(Vec<u8>),
    /// A map's entries, by user key.
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

/// Everything a backend holds: `(state name, key) -> value`.
pub type StateDump = BTreeMap<(String, Vec<u8>), StoredValue>;

/// Reads every key of every registered state through the raw trait. Leaves
/// the backend's current key changed.
///
/// # Errors
/// Backend errors.
pub fn dump(backend: &mut dyn KeyedStateBackend) -> Result<StateDump> {
    let mut out = BTreeMap::new();
    for (id, meta) in backend.registered_states().into_iter().enumerate() {
        for key in backend.keys(id)? {
            backend.set_current_key(&key)?;
            let value = if meta.kind.is_map() {
                StoredValue::Map(backend.map_entries(id)?.into_iter().collect())
            } else {
                match backend.get(id)? {
                    Some(v) => StoredValue::Cell(v.into_owned()),
                    None => continue,
                }
            };
            out.insert((meta.name.clone(), key), value);
        }
    }
    Ok(out)
}

/// The target of checkpoint `id` of `job` as the runtime lays it out:
/// files in `<job>/chk-<id>/` (shared ones in `<job>/shared/`), named after
/// `file_stem`.
pub fn checkpoint_target(
    job: &str,
    id: u64,
    format: SnapshotFormat,
    incremental: bool,
    file_stem: &str,
) -> SnapshotTarget {
    SnapshotTarget {
        format,
        incremental,
        ..SnapshotTarget::checkpoint(job, id, file_stem)
    }
}

/// Commits checkpoint `id` of `job` holding one keyed operator,
/// `operator_id`, with a handle per subtask: what the runtime's coordinator
/// writes once every subtask has acknowledged. The checkpoint exists from
/// then on (its `_metadata`); retention is not run.
///
/// ```
/// use streamstate_api::testkit::{checkpoint_target, commit_keyed_checkpoint, StorageFixture};
/// use streamstate_api::SnapshotFormat;
///
/// let fixture = StorageFixture::memory();
/// let target = checkpoint_target("job", 1, SnapshotFormat::Canonical, false, "op-0");
/// assert_eq!(target.exclusive_dir, "chk-1");
/// commit_keyed_checkpoint(&fixture.storage, "job", 1, 128, "op", vec![]).unwrap();
/// let latest = fixture.storage.latest_completed(Some("job")).unwrap().unwrap();
/// assert_eq!(latest.manifest.checkpoint_id, 1);
/// ```
///
/// # Errors
/// The storage's error when the manifest cannot be written.
pub fn commit_keyed_checkpoint(
    storage: &CheckpointStorage,
    job: &str,
    id: u64,
    max_parallelism: u32,
    operator_id: &str,
    handles: Vec<KeyedStateHandle>,
) -> Result<()> {
    let mut manifest = SnapshotManifest::new(job, id, SnapshotKind::Checkpoint, max_parallelism);
    manifest.operators.push(OperatorSnapshot {
        operator_id: operator_id.into(),
        parallelism: handles.len() as u32,
        keyed_state: handles,
        operator_state: vec![],
    });
    storage.commit(&manifest)?;
    Ok(())
}

/// Expands to one `#[test]` per conformance case, each run against
/// `$target` (an expression of type [`TestTarget`]).
#[macro_export]
macro_rules! conformance_tests {
    ($target:expr) => {
        $crate::__conformance_cases!($target;
            value_get_returns_none_before_update,
            value_update_then_get_returns_value,
            value_update_overwrites_previous_value,
            value_update_with_reads_and_writes_in_one_step,
            value_is_scoped_to_current_key,
            value_clear_removes_only_current_key,
            list_get_is_empty_before_add,
            list_add_preserves_insertion_order,
            list_add_all_appends_after_existing_elements,
            list_update_replaces_elements,
            list_update_with_nothing_clears,
            list_clear_removes_list,
            map_get_of_absent_user_key_returns_none,
            map_put_get_remove_round_trip,
            map_entries_are_ordered_by_serialized_user_key,
            map_contains_and_is_empty_follow_puts_and_removes,
            map_clear_removes_only_current_key_entries,
            reducing_state_folds_added_values,
            reducing_state_clear_starts_over,
            aggregating_state_folds_and_reports_result,
            keys_lists_every_key_with_state,
            keys_in_key_group_partitions_keys_by_group,
            for_each_cell_in_key_group_visits_what_get_reads_in_key_order,
            states_with_different_names_are_independent,
            registering_same_name_twice_returns_same_state,
            registering_same_name_with_other_kind_is_incompatible,
            key_outside_key_group_range_is_rejected,
            unknown_state_id_is_invalid_argument,
            cell_call_on_map_state_is_invalid_argument,
            ttl_value_is_not_returned_after_expiry,
            ttl_list_elements_expire_individually,
            ttl_map_entries_expire_individually,
            ttl_on_read_and_write_refreshes_on_read,
            ttl_expired_values_are_purged_at_snapshot,
            snapshot_excludes_writes_after_sync_phase,
            snapshot_write_runs_on_another_thread,
            prefetch_changes_no_reads_or_writes,
            snapshot_restore_round_trips_every_state_kind,
            snapshot_and_restore_inside_a_current_thread_tokio_runtime,
            snapshot_and_restore_inside_a_multi_thread_tokio_runtime_that_runs_the_io,
            restore_at_parallelism_1_2_4_keeps_state_identical,
            restore_skips_key_groups_outside_range,
            restore_from_missing_file_is_not_found,
            restore_from_corrupt_file_is_checksum_mismatch,
            restore_from_truncated_file_is_detected,
            committed_checkpoint_restores_through_manifest,
            latest_ignores_checkpoint_without_metadata,
            retention_keeps_newest_checkpoints_restorable,
            unsupported_snapshot_request_is_unsupported_error,
            operator_state_is_split_evenly_on_restore,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($target:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::conformance::$name(&$target);
            }
        )*
    };
}

/// Expands to the model-based property tests of [`model`] against
/// `$target`: one property, its cases split over
/// [`model::PARTS`] tests so that they run in parallel (storage round trips,
/// not CPU, dominate on remote storage).
#[macro_export]
macro_rules! property_tests {
    ($target:expr) => {
        $crate::__property_parts!($target;
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_0 0,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_1 1,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_2 2,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_3 3,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_4 4,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_5 5,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_6 6,
            random_operations_with_snapshots_and_rescaling_match_btreemap_model_part_7 7,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __property_parts {
    ($target:expr; $($name:ident $part:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::model::run_part(&$target, $part);
            }
        )*
    };
}
