//! State backend selection by name, gated by Cargo features.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use streamstate_api::{Error, Result, StateBackend};

/// The state backends, named as in Flink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateBackendKind {
    /// Heap state, snapshots capped in size (Flink's MemoryStateBackend;
    /// `jobmanager` in Flink configs).
    Memory,
    /// Heap state, snapshots to any URI (Flink's FsStateBackend; `hashmap`
    /// or `filesystem` in Flink configs).
    Fs,
    /// RocksDB state (Flink's RocksDBStateBackend).
    RocksDb,
}

impl StateBackendKind {
    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            StateBackendKind::Memory => "memory",
            StateBackendKind::Fs => "fs",
            StateBackendKind::RocksDb => "rocksdb",
        }
    }
}

impl fmt::Display for StateBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StateBackendKind {
    type Err = Error;

    /// Parses the names Flink users write, case-insensitively.
    ///
    /// ```
    /// use streamstate_runtime::backends::StateBackendKind;
    /// assert_eq!("hashmap".parse::<StateBackendKind>().unwrap(), StateBackendKind::Fs);
    /// assert_eq!("jobmanager".parse::<StateBackendKind>().unwrap(), StateBackendKind::Memory);
    /// assert!("cassandra".parse::<StateBackendKind>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" | "jobmanager" => Ok(StateBackendKind::Memory),
            "fs" | "filesystem" | "hashmap" => Ok(StateBackendKind::Fs),
            "rocksdb" => Ok(StateBackendKind::RocksDb),
            other => Err(Error::config(format!(
                "unknown state backend {other:?}; use memory (jobmanager), fs (hashmap, filesystem) or rocksdb"
            ))),
        }
    }
}

fn not_compiled(kind: StateBackendKind) -> Error {
    Error::config(format!(
        "this streamstate build does not include the {kind} backend; rebuild with `--features {kind}`"
    ))
}

/// Settings of the backends that have any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendConfig {
    /// The memory backend's largest snapshot of one operator instance,
    /// bytes (`state.backend.memory.max-state-size`; default
    /// `streamstate_memory::DEFAULT_MAX_STATE_SIZE`, Flink's 5 MiB).
    pub memory_max_state_size: Option<u64>,
    /// RocksDB working directory root (`state.backend.rocksdb.localdir`).
    pub rocksdb_local_dir: Option<std::path::PathBuf>,
    /// Keys of RocksDB's write-back buffer
    /// (`state.backend.rocksdb.write-back.entries`; 0 turns it off; default
    /// `streamstate_rocksdb::DEFAULT_WRITE_BACK_ENTRIES`).
    pub rocksdb_write_back_entries: Option<usize>,
    /// RocksDB's shared block cache, bytes (default
    /// `streamstate_rocksdb::RocksDbConfig::default().block_cache_bytes`).
    pub rocksdb_block_cache_bytes: Option<usize>,
    /// RocksDB's memtable budget, charged to the block cache, bytes.
    pub rocksdb_write_buffer_bytes: Option<usize>,
    /// One column family's memtable, bytes (Flink's
    /// `state.backend.rocksdb.writebuffer.size`).
    pub rocksdb_write_buffer_size: Option<usize>,
    /// RocksDB's changelog checkpoints (`state.backend.changelog.enabled`,
    /// see `streamstate_rocksdb::RocksDbConfig::changelog`).
    pub rocksdb_changelog: bool,
    /// Whether a rescaling restore compacts the key-group ranges it
    /// clipped away, in the background
    /// (`state.backend.rocksdb.rescaling.compact-clipped-ranges`; default
    /// `streamstate_rocksdb::RocksDbConfig::default().compact_clipped_ranges`).
    pub rocksdb_compact_clipped_ranges: Option<bool>,
    /// RocksDB keeps every timer in memory too, instead of reading them
    /// from RocksDB in timestamp order
    /// (`state.backend.rocksdb.timer-service.factory: HEAP`; see
    /// `streamstate_rocksdb::TimerStore`).
    pub rocksdb_heap_timers: bool,
}

/// The backend `kind` with default settings, if this build includes it.
///
/// # Errors
/// [`streamstate_api::ErrorKind::Config`] when the backend's feature is off.
pub fn state_backend(kind: StateBackendKind) -> Result<Arc<dyn StateBackend>> {
    state_backend_with(kind, &BackendConfig::default())
}

/// The backend `kind` with `config`, if this build includes it.
///
/// # Errors
/// [`streamstate_api::ErrorKind::Config`] when the backend's feature is off.
pub fn state_backend_with(kind: StateBackendKind, config: &BackendConfig) -> Result<Arc<dyn StateBackend>> {
    let _ = config;
    match kind {
        #[cfg(feature = "memory")]
        StateBackendKind::Memory => Ok(Arc::new(match config.memory_max_state_size {
            Some(bytes) => streamstate_memory::MemoryStateBackend::with_max_state_size(bytes),
            None => streamstate_memory::MemoryStateBackend::new(),
        })),
        #[cfg(feature = "fs")]
        StateBackendKind::Fs => Ok(Arc::new(streamstate_fs::FsStateBackend::new())),
        #[cfg(feature = "rocksdb")]
        StateBackendKind::RocksDb => {
            let defaults = streamstate_rocksdb::RocksDbConfig::default();
            Ok(Arc::new(streamstate_rocksdb::RocksDbStateBackend::new(
                streamstate_rocksdb::RocksDbConfig {
                    local_dir: config.rocksdb_local_dir.clone(),
                    write_back_entries: config.rocksdb_write_back_entries.unwrap_or(defaults.write_back_entries),
                    block_cache_bytes: config.rocksdb_block_cache_bytes.unwrap_or(defaults.block_cache_bytes),
                    write_buffer_bytes: config.rocksdb_write_buffer_bytes.unwrap_or(defaults.write_buffer_bytes),
                    write_buffer_size: config.rocksdb_write_buffer_size.unwrap_or(defaults.write_buffer_size),
                    changelog: config.rocksdb_changelog,
                    compact_clipped_ranges: config
                        .rocksdb_compact_clipped_ranges
                        .unwrap_or(defaults.compact_clipped_ranges),
                    timer_store: if config.rocksdb_heap_timers {
                        streamstate_rocksdb::TimerStore::Heap
                    } else {
                        streamstate_rocksdb::TimerStore::RocksDb
                    },
                },
            )))
        }
        #[allow(unreachable_patterns)]
        other => Err(not_compiled(other)),
    }
}

/// The backends compiled into this build.
pub fn compiled_backends() -> Vec<StateBackendKind> {
    let mut kinds = Vec::new();
    if cfg!(feature = "memory") {
        kinds.push(StateBackendKind::Memory);
    }
    if cfg!(feature = "fs") {
        kinds.push(StateBackendKind::Fs);
    }
    if cfg!(feature = "rocksdb") {
        kinds.push(StateBackendKind::RocksDb);
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_backends_are_created_with_their_names() {
        for kind in compiled_backends() {
            match state_backend(kind) {
                Ok(backend) => assert_eq!(backend.name(), kind.as_str()),
                Err(e) => assert_eq!(kind, StateBackendKind::RocksDb, "{e}"),
            }
        }
    }

    /// Flink's `new MemoryStateBackend(bytes)`: a snapshot over the cap
    /// fails with `StateTooLarge`; one under it succeeds.
    #[cfg(feature = "memory")]
    #[test]
    fn memory_backend_caps_snapshots_at_the_configured_size() {
        use streamstate_api::{
            CheckpointStorage, ErrorKind, KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt, SnapshotTarget,
            ValueStateDescriptor,
        };
        let storage = CheckpointStorage::open("memory://").unwrap();
        let snapshot_of = |cap: u64| {
            let config = BackendConfig {
                memory_max_state_size: Some(cap),
                ..BackendConfig::default()
            };
            let backend = state_backend_with(StateBackendKind::Memory, &config).unwrap();
            let options = KeyedBackendOptions::new("job", "op", KeyGroupRange::all(128), 128);
            let mut keyed = backend.create_keyed_backend(options).unwrap();
            let state = keyed.value_state(&ValueStateDescriptor::<String>::new("v")).unwrap();
            for i in 0..100 {
                keyed.set_current_key_typed(&i).unwrap();
                state.update(keyed.as_mut(), &"x".repeat(100)).unwrap();
            }
            let target = SnapshotTarget::checkpoint("job", 1, "op-0");
            keyed
                .snapshot(&target)
                .and_then(|pending| pending.write(&storage, &target))
        };
        // 100 values of 100 bytes: over 1 KiB, under 1 MiB.
        let err = snapshot_of(1024).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StateTooLarge, "{err}");
        assert!(err.to_string().contains("1024"), "{err}");
        assert!(snapshot_of(1 << 20).is_ok());
    }

    #[test]
    fn aliases_parse_case_insensitively() {
        for (name, kind) in [
            ("MEMORY", StateBackendKind::Memory),
            ("filesystem", StateBackendKind::Fs),
            (" RocksDB ", StateBackendKind::RocksDb),
        ] {
            assert_eq!(name.parse::<StateBackendKind>().unwrap(), kind);
        }
        let err = "".parse::<StateBackendKind>().unwrap_err();
        assert_eq!(err.kind(), streamstate_api::ErrorKind::Config);
    }
}
