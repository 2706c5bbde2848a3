//! What every conformance case and property test runs on: a backend under
//! test with its storage ([`TestTarget`], [`StorageFixture`]), a dump of
//! a backend's whole state, and checkpoint helpers.

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
    /// (HDFS waits on each file's close), so the suite stays within CI time.
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
            let value = if meta.stores_map() {
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
