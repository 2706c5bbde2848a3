//! `streamstate wordcount`: Flink's socket word-count walkthrough.
//!
//! Lines come from a TCP server (`--socket HOST:PORT`, e.g. `nc -lk 9999`)
//! or a file (`--input FILE`); words are upper-cased and split on
//! whitespace, as Flink's example does; running counts print as
//! `(WORD,COUNT)`. Ctrl-C cancels (the latest checkpoint is kept under
//! RETAIN_ON_CANCELLATION); SIGTERM stops with a savepoint. Either way the
//! path to restart from is printed.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use streamstate_api::{CheckpointStorage, StorageOptions};
use streamstate_runtime::aggregate::Accumulator;
use streamstate_runtime::backends::{state_backend_with, BackendConfig, StateBackendKind};
use streamstate_runtime::execution::ClusterConfig;
use streamstate_runtime::window::WindowAssigner;
use streamstate_runtime::word_count::WordWindows;
use streamstate_runtime::{
    CheckpointingMode, Job, JobMetrics, RestoreFrom, RetentionOnCancellation, StreamExecutionEnvironment,
};

use crate::committed_output::CommittedOutput;
use crate::config::{parse_duration, parse_memory_size, FlinkConfig};
use crate::output::{self, OutputFile};

/// Options of `streamstate wordcount`.
#[derive(Debug, clap::Args)]
pub struct WordCountArgs {
    /// Read lines from this TCP server (start one with `nc -lk PORT`).
    #[arg(
        long,
        value_name = "HOST:PORT",
        conflicts_with = "input",
        required_unless_present = "input"
    )]
    socket: Option<String>,
    /// Read lines from this file (bounded: the job ends at its end).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// memory, fs or rocksdb (Flink's jobmanager, hashmap/filesystem, rocksdb).
    #[arg(long, value_name = "NAME")]
    state_backend: Option<String>,
    /// Memory backend: the largest snapshot of one operator instance, e.g.
    /// 10mb (`state.backend.memory.max-state-size`) [default: 5mb, as
    /// Flink's MemoryStateBackend].
    #[arg(long, value_name = "SIZE")]
    memory_max_state_size: Option<String>,
    /// Checkpoint directory URI [default: file://<cwd>/checkpoints].
    #[arg(long, value_name = "URI")]
    checkpoint_dir: Option<String>,
    /// Time between checkpoints, e.g. 6s or 500ms [default: 6s].
    #[arg(long, value_name = "DURATION")]
    checkpoint_interval: Option<String>,
    /// A checkpoint not done in this time fails [default: 10min].
    #[arg(long, value_name = "DURATION")]
    checkpoint_timeout: Option<String>,
    /// exactly-once or at-least-once [default: exactly-once].
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
    /// Upload only what changed, where the backend can.
    #[arg(long, overrides_with = "no_incremental")]
    incremental: bool,
    /// Always upload full snapshots.
    #[arg(long)]
    no_incremental: bool,
    /// RocksDB: changelog checkpoints (Flink's
    /// `state.backend.changelog.enabled`): incremental checkpoints upload
    /// the writes made since the one before, with a RocksDB checkpoint
    /// after every 10 of them.
    #[arg(long)]
    changelog: bool,
    /// Keep checkpoints when the job is cancelled (the default).
    #[arg(long, overrides_with = "delete_on_cancellation")]
    retain_on_cancellation: bool,
    /// Delete checkpoints when the job is cancelled.
    #[arg(long)]
    delete_on_cancellation: bool,
    /// Parallelism of the counting operator [default: 1].
    #[arg(long, value_name = "N")]
    parallelism: Option<u32>,
    /// Number of key groups, the most the job can be scaled to [default: 128].
    #[arg(long, value_name = "N")]
    max_parallelism: Option<u32>,
    /// Restore from a checkpoint or savepoint directory URI, or `latest`.
    #[arg(long, value_name = "PATH|latest")]
    from_checkpoint: Option<String>,
    /// Bounded input: write the final counts here, `WORD<TAB>COUNT` per
    /// line, unsorted (`LC_ALL=C sort FILE` sorts them), instead of printing
    /// every update.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// YAML file with Flink's key names; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run across this many processes (timely-dataflow), each started with
    /// the same arguments and its own `--process`; parallelism is
    /// processes x workers. Checkpoints go to storage every process must
    /// reach (s3://, hdfs://, or a file:// path they share).
    #[arg(long, value_name = "N")]
    processes: Option<usize>,
    /// This process's index in the cluster, 0 to N-1.
    #[arg(long, value_name = "I")]
    process: Option<usize>,
    /// File of `host:port` lines, one per process in process order (timely's
    /// hostfile); needed with more than one process.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// Worker threads per process in a cluster [default: 1].
    #[arg(long, value_name = "W")]
    workers: Option<usize>,
    /// Serve the job's metrics in Prometheus text format at
    /// `http://HOST:PORT/metrics` (Flink's Prometheus reporter uses 9249).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// How long a cluster process waits for the others to connect, e.g.
    /// 30s [default: 5min].
    #[arg(long, value_name = "DURATION")]
    startup_timeout: Option<String>,
    /// Count per window of this size, e.g. 5s (Flink's
    /// SocketWindowWordCount): tumbling windows aligned to the epoch,
    /// printed as `(WORD,COUNT) [START, END)` when each ends; with
    /// `--output`, `WINDOW_START<TAB>WINDOW_END<TAB>WORD<TAB>COUNT` lines.
    #[arg(long, value_name = "DURATION")]
    window: Option<String>,
    /// Sliding windows: a new `--window` every this long, e.g. 1s.
    #[arg(long, value_name = "DURATION")]
    slide: Option<String>,
    /// Session windows instead of `--window`: a word's session ends after
    /// this long without it, e.g. 3s; sessions closer than that merge.
    #[arg(long, value_name = "DURATION", conflicts_with = "window")]
    session_gap: Option<String>,
    /// Windows in event time: each line starts with its epoch-millisecond
    /// timestamp (as `gen_corpus.py --timestamps` writes) [default:
    /// processing time].
    #[arg(long)]
    event_time: bool,
    /// Event time: how much later than newer lines a line may come and
    /// still count, e.g. 2s [default: 0].
    #[arg(long, value_name = "DURATION")]
    out_of_orderness: Option<String>,
    /// Event time: how long after its end a window still counts late
    /// words, emitting its count again for each [default: 0].
    #[arg(long, value_name = "DURATION")]
    allowed_lateness: Option<String>,
}

/// The windows `--window`, `--slide`, `--event-time`,
/// `--out-of-orderness` and `--allowed-lateness` ask for (`None`: the
/// running word count).
fn word_windows(args: &WordCountArgs) -> Result<Option<WordWindows>> {
    let flag = |name: &str, text: &str| parse_duration(text).with_context(|| format!("--{name} {text:?}"));
    let assigner = match (args.window.as_deref(), args.session_gap.as_deref()) {
        (Some(size), None) => {
            let size = flag("window", size)?;
            match args.slide.as_deref() {
                Some(slide) => WindowAssigner::sliding(size, flag("slide", slide)?),
                None => WindowAssigner::tumbling(size),
            }
        }
        (None, Some(gap)) if args.slide.is_none() => WindowAssigner::session(flag("session-gap", gap)?),
        (None, Some(_)) => bail!("--slide is for --window; sessions have no slide"),
        (Some(_), Some(_)) => bail!("give --window or --session-gap, not both"),
        (None, None) => {
            let given = [
                ("--slide", args.slide.is_some()),
                ("--event-time", args.event_time),
                ("--out-of-orderness", args.out_of_orderness.is_some()),
                ("--allowed-lateness", args.allowed_lateness.is_some()),
            ];
            if let Some((name, _)) = given.iter().find(|(_, given)| *given) {
                bail!("{name} needs --window or --session-gap");
            }
            return Ok(None);
        }
    };
    if !args.event_time {
        if let Some(name) = [
            ("--out-of-orderness", args.out_of_orderness.is_some()),
            ("--allowed-lateness", args.allowed_lateness.is_some()),
        ]
        .iter()
        .find_map(|(name, given)| given.then_some(name))
        {
            bail!("{name} needs --event-time (windows are in processing time without it)");
        }
    }
    let zero_or = |name: &str, text: Option<&str>| text.map_or(Ok(Duration::ZERO), |t| flag(name, t));
    Ok(Some(WordWindows {
        assigner,
        event_time: args
            .event_time
            .then(|| zero_or("out-of-orderness", args.out_of_orderness.as_deref()))
            .transpose()?,
        allowed_lateness: zero_or("allowed-lateness", args.allowed_lateness.as_deref())?,
    }))
}

/// The cluster this process is part of, when `--processes` or `--workers`
/// (or their keys in the `--config` file: `cluster.processes`,
/// `cluster.process`, `cluster.hosts`, `cluster.workers` or Flink's
/// `taskmanager.numberOfTaskSlots`, `cluster.startup-timeout`) asks for
/// one. Flags override the file.
fn cluster_config(args: &WordCountArgs, file: &FlinkConfig) -> Result<Option<ClusterConfig>> {
    let processes = args.processes.or(file.get_usize(&["cluster.processes"])?);
    let workers = args
        .workers
        .or(file.get_usize(&["cluster.workers", "taskmanager.numberOfTaskSlots"])?);
    let index = args.process.or(file.get_usize(&["cluster.process"])?);
    let hosts = args.hosts.clone().or(file.get(&["cluster.hosts"]).map(PathBuf::from));
    let startup_timeout = args
        .startup_timeout
        .as_deref()
        .or(file.get(&["cluster.startup-timeout"]));
    let Some(processes) = processes.or(workers.map(|_| 1)) else {
        if index.is_some() || hosts.is_some() || startup_timeout.is_some() {
            bail!("--process, --hosts and --startup-timeout need --processes N (or cluster.processes in --config)");
        }
        return Ok(None);
    };
    let workers = workers.unwrap_or(1);
    let process = index.unwrap_or(0);
    let mut config = match (&hosts, processes) {
        (Some(hosts), _) => ClusterConfig::from_hostfile(hosts, processes, process, workers)?,
        (None, 1) => ClusterConfig::single_process(workers),
        (None, _) => bail!("--processes {processes} needs --hosts FILE (one host:port per process)"),
    };
    if processes > 1 && index.is_none() {
        bail!(
            "--processes {processes} needs --process I (this process's index, 0 to {})",
            processes - 1
        );
    }
    if let Some(p) = args.parallelism.filter(|p| *p != config.parallelism()) {
        bail!(
            "--parallelism {p} differs from processes x workers = {}; leave it out in a cluster",
            config.parallelism()
        );
    }
    if let Some(text) = startup_timeout {
        config.startup_timeout = parse_duration(text)?;
    }
    config.validate()?;
    Ok(Some(config))
}

fn default_backend_name() -> &'static str {
    if streamstate_runtime::backends::compiled_backends().contains(&StateBackendKind::RocksDb) {
        "rocksdb"
    } else {
        "fs"
    }
}

fn split_host_port(address: &str) -> Result<(String, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("--socket {address:?} must be HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("--socket {address:?}: {port:?} is not a port number"))?;
    Ok((host.to_owned(), port))
}

/// RocksDB's memory, sized from Flink's keys as Flink sizes it:
/// `state.backend.rocksdb.memory.fixed-per-tm` is the process's total, of
/// which the block cache gets `(3 - r) / 3` and the memtables (charged to
/// the cache) `2r / 3`, `r` being `state.backend.rocksdb.memory.write-buffer-ratio`
/// (default 0.5). Memtables may overshoot their budget by about half before
/// RocksDB flushes them, so cache and memtables together stay within the
/// total.
fn rocksdb_memory(config: &FlinkConfig) -> Result<BackendConfig> {
    let Some(total) = config.get_memory_size(&["state.backend.rocksdb.memory.fixed-per-tm"])? else {
        return Ok(BackendConfig::default());
    };
    let ratio = config
        .get_fraction(&["state.backend.rocksdb.memory.write-buffer-ratio"])?
        .unwrap_or(0.5);
    let total_f = total as f64;
    Ok(BackendConfig {
        rocksdb_block_cache_bytes: Some((total_f * (3.0 - ratio) / 3.0) as usize),
        rocksdb_write_buffer_bytes: Some((total_f * 2.0 * ratio / 3.0) as usize),
        ..BackendConfig::default()
    })
}

/// The memory backend's snapshot cap: `--memory-max-state-size`, else
/// `state.backend.memory.max-state-size`, else the backend's default.
fn memory_max_state_size(flag: Option<&str>, config: &FlinkConfig) -> Result<Option<u64>> {
    let bytes = match flag {
        Some(size) => Some(parse_memory_size(size).context("in --memory-max-state-size")?),
        None => config.get_memory_size(&["state.backend.memory.max-state-size"])?,
    };
    Ok(bytes.map(|bytes| bytes as u64))
}

/// Runs the word count until its input ends or a signal arrives.
pub fn run(args: WordCountArgs) -> Result<()> {
    // SIGTERM means stop with a savepoint from the first moment on (a
    // TERM before the job is running is taken once it is).
    let terminated = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&terminated))?;
    let config = match &args.config {
        Some(path) => FlinkConfig::load(path)?,
        None => FlinkConfig::default(),
    };
    let backend_name = args
        .state_backend
        .clone()
        .or_else(|| config.get(&["state.backend.type", "state.backend"]).map(str::to_owned))
        .unwrap_or_else(|| default_backend_name().to_owned());
    let backend_kind: StateBackendKind = backend_name.parse()?;
    let backend_name = backend_kind.as_str();
    let backend = state_backend_with(
        backend_kind,
        &BackendConfig {
            memory_max_state_size: memory_max_state_size(args.memory_max_state_size.as_deref(), &config)?,
            rocksdb_local_dir: config.get(&["state.backend.rocksdb.localdir"]).map(PathBuf::from),
            rocksdb_write_back_entries: config.get_usize(&["state.backend.rocksdb.write-back.entries"])?,
            rocksdb_write_buffer_size: config.get_memory_size(&["state.backend.rocksdb.writebuffer.size"])?,
            rocksdb_changelog: args.changelog
                || config.get_bool(&["state.backend.changelog.enabled"])?.unwrap_or(false),
            rocksdb_compact_clipped_ranges: config
                .get_bool(&["state.backend.rocksdb.rescaling.compact-clipped-ranges"])?,
            rocksdb_heap_timers: config.rocksdb_heap_timers()?,
            ..rocksdb_memory(&config)?
        },
    )?;
    let checkpoint_dir = match args.checkpoint_dir.clone().or_else(|| {
        config
            .get(&["execution.checkpointing.dir", "state.checkpoints.dir"])
            .map(str::to_owned)
    }) {
        Some(dir) => dir,
        None => format!("file://{}/checkpoints", std::env::current_dir()?.display()),
    };
    let storage_options = StorageOptions {
        service_options: config.s3_options(),
        ..StorageOptions::default()
    };
    let storage = CheckpointStorage::open_with(&checkpoint_dir, &storage_options)?;

    let cluster = cluster_config(&args, &config)?;
    let mut env = StreamExecutionEnvironment::new();
    let interval = match args
        .checkpoint_interval
        .as_deref()
        .or(config.get(&["execution.checkpointing.interval"]))
    {
        Some(text) => parse_duration(text)?,
        None => Duration::from_secs(6),
    };
    env.enable_checkpointing(interval)
        .set_state_backend(backend)
        .set_checkpoint_storage(storage.clone());
    if let Some(p) = args
        .parallelism
        .or(config.get(&["parallelism.default"]).map(str::parse).transpose()?)
    {
        env.set_parallelism(p);
    }
    if let Some(p) = args
        .max_parallelism
        .or(config.get(&["pipeline.max-parallelism"]).map(str::parse).transpose()?)
    {
        env.set_max_parallelism(p);
    }
    let checkpoint = env.checkpoint_config();
    if let Some(text) = args
        .checkpoint_timeout
        .as_deref()
        .or(config.get(&["execution.checkpointing.timeout"]))
    {
        checkpoint.timeout = parse_duration(text)?;
    }
    if let Some(text) = config.get(&["execution.checkpointing.min-pause"]) {
        checkpoint.min_pause = parse_duration(text)?;
    }
    checkpoint.mode = match args.mode.as_deref().or(config.get(&["execution.checkpointing.mode"])) {
        None => CheckpointingMode::ExactlyOnce,
        Some(m) => match m.to_ascii_lowercase().replace('_', "-").as_str() {
            "exactly-once" => CheckpointingMode::ExactlyOnce,
            "at-least-once" => CheckpointingMode::AtLeastOnce,
            other => bail!("checkpointing mode {other:?} must be exactly-once or at-least-once"),
        },
    };
    checkpoint.incremental = if args.incremental {
        true
    } else if args.no_incremental {
        false
    } else {
        config
            .get_bool(&["execution.checkpointing.incremental", "state.backend.incremental"])?
            .unwrap_or(backend_name == "rocksdb")
    };
    checkpoint.retention_on_cancellation = if args.delete_on_cancellation {
        RetentionOnCancellation::Delete
    } else if args.retain_on_cancellation {
        RetentionOnCancellation::Retain
    } else {
        match config.get(&["execution.checkpointing.externalized-checkpoint-retention"]) {
            None => RetentionOnCancellation::Retain,
            Some(v) if v.eq_ignore_ascii_case("RETAIN_ON_CANCELLATION") => RetentionOnCancellation::Retain,
            Some(v) if v.eq_ignore_ascii_case("DELETE_ON_CANCELLATION") => RetentionOnCancellation::Delete,
            Some(other) => bail!("retention {other:?} must be RETAIN_ON_CANCELLATION or DELETE_ON_CANCELLATION"),
        }
    };
    if let Some(n) = config
        .get(&["execution.checkpointing.num-retained", "state.checkpoints.num-retained"])
        .map(str::parse)
        .transpose()?
    {
        checkpoint.num_retained = n;
    }
    if let Some(n) = config
        .get(&["execution.checkpointing.tolerable-failed-checkpoints"])
        .map(str::parse)
        .transpose()?
    {
        checkpoint.tolerable_failures = n;
    }
    match args.from_checkpoint.as_deref() {
        None => {}
        Some("latest") => {
            env.restore_from(RestoreFrom::Latest);
        }
        Some(path) => {
            let (root, dir) = crate::inspect::split_snapshot_uri(path)?;
            let from = CheckpointStorage::open_with(&root, &storage_options)?;
            env.restore_from(RestoreFrom::Snapshot { storage: from, dir });
        }
    }

    let lines = match (&args.socket, &args.input) {
        (Some(address), _) => {
            let (host, port) = split_host_port(address)?;
            env.socket_text_stream(&host, port)
        }
        (None, Some(path)) => env.read_text_file(path),
        (None, None) => bail!("give --socket HOST:PORT or --input FILE"),
    };
    let launch = Launch {
        cluster,
        terminated,
        metrics_addr: args.metrics_addr.clone(),
        backend_name,
        interval,
        storage_uri: storage.uri().to_owned(),
    };
    match word_windows(&args)? {
        Some(windows) => {
            // Windows are emitted while the job runs: their file is
            // committed on checkpoints, exactly once across restores.
            let output = args.output.as_deref().map(CommittedOutput::new);
            let counts = streamstate_runtime::word_count::window_word_count(lines, windows);
            let job = match &output {
                Some(file) => counts.add_sink(file.sink_factory(output::window_line)),
                None => counts.print(),
            };
            launch.run(job, || output.map_or(Ok(()), CommittedOutput::finish))
        }
        None => {
            let output = args.output.as_deref().map(OutputFile::create).transpose()?;
            let counts = streamstate_runtime::word_count::word_count(lines);
            let job = match &output {
                Some(file) => counts.discard().with_final_sink(file.sink_factory(output::count_line)),
                None => counts.print(),
            };
            launch.run(job, || output.map_or(Ok(()), OutputFile::commit))
        }
    }
}

/// How a job is started and watched, whatever it computes: on this
/// process's threads or as one process of a cluster.
struct Launch {
    cluster: Option<ClusterConfig>,
    /// SIGTERM: stop with a savepoint.
    terminated: Arc<AtomicBool>,
    metrics_addr: Option<String>,
    backend_name: &'static str,
    interval: Duration,
    storage_uri: String,
}

impl Launch {
    /// Runs `job` until it ends, is cancelled (SIGINT) or stopped with a
    /// savepoint (SIGTERM); `finished` runs once it ran to its end.
    fn run<K, T, O, A>(self, job: Job<K, T, O, A>, finished: impl FnOnce() -> Result<()>) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static,
        T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static,
        O: Send + 'static,
        A: Accumulator,
    {
        let Self {
            cluster,
            terminated,
            metrics_addr,
            backend_name,
            interval,
            storage_uri,
        } = self;
        if let Some(cluster) = cluster {
            eprintln!(
                "process {} of {} ({} workers each) started: backend {backend_name}, checkpoints every {interval:?} to {}",
                cluster.process,
                cluster.processes,
                cluster.workers,
                storage_uri
            );
            // SIGTERM stops the whole cluster with a savepoint (whichever
            // process gets it); SIGINT ends this process, and its peers then
            // stop as after any lost process.
            let signals = streamstate_runtime::execution::ClusterSignals {
                stop_with_savepoint: Arc::clone(&terminated),
                metrics: Arc::default(),
            };
            if let Some(address) = &metrics_addr {
                let server = crate::metrics_server::serve(address, Arc::clone(&signals.metrics), cluster.process)?;
                eprintln!(
                    "process {}: metrics at http://{}/metrics",
                    cluster.process, server.address
                );
            }
            let result = job.execute_cluster_with(&cluster, &signals)?;
            if let Some(path) = &result.restored_from {
                eprintln!("process {} restored from {path}", cluster.process);
            }
            if let Some(savepoint) = &result.stopped_with_savepoint {
                eprintln!(
                    "process {} stopped with savepoint {savepoint}; restart with `--from-checkpoint {savepoint}`",
                    cluster.process
                );
                return Ok(());
            }
            finished()?;
            let sent = signals.metrics.network_bytes_sent.load(Ordering::Relaxed);
            match &result.last_snapshot_path {
                Some(path) => eprintln!(
                    "process {} finished ({sent} bytes sent to peers); last checkpoint: {path}",
                    cluster.process
                ),
                None => eprintln!("process {} finished ({sent} bytes sent to peers)", cluster.process),
            }
            return Ok(());
        }

        let interrupted = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted))?;

        let handle = job.execute()?;
        eprintln!(
            "job {} started: backend {backend_name}, checkpoints every {interval:?} to {}",
            handle.job_id(),
            storage_uri
        );
        let status_line = std::io::stderr().is_terminal();
        let metrics = Arc::clone(handle.metrics());
        if let Some(address) = &metrics_addr {
            let server = crate::metrics_server::serve(address, Arc::clone(&metrics), 0)?;
            eprintln!("metrics at http://{}/metrics", server.address);
        }
        let (mut last_status, mut last_records) = (Instant::now(), 0u64);
        loop {
            if handle.is_finished() {
                let result = handle.wait()?;
                if status_line {
                    eprintln!();
                }
                finished()?;
                let counted = counted_records(&metrics);
                match &result.last_snapshot_path {
                    Some(path) => eprintln!("job finished: {counted}; last checkpoint: {path}"),
                    None => eprintln!("job finished: {counted}"),
                }
                return Ok(());
            }
            if interrupted.load(Ordering::SeqCst) {
                let result = handle.cancel()?;
                match result.last_snapshot_path {
                    Some(path) => eprintln!(
                        "\ncancelled; restart from the latest checkpoint with `--from-checkpoint latest` (it is {path})"
                    ),
                    None => eprintln!("\ncancelled before any checkpoint completed; nothing to restart from"),
                }
                return Ok(());
            }
            if terminated.load(Ordering::SeqCst) {
                let (savepoint, _) = handle.stop_with_savepoint()?;
                eprintln!("\nstopped with savepoint {savepoint}; restart with `--from-checkpoint {savepoint}`");
                return Ok(());
            }
            if status_line && last_status.elapsed() >= Duration::from_secs(1) {
                let records = metrics.records.load(Ordering::Relaxed);
                let rate = (records - last_records) as f64 / last_status.elapsed().as_secs_f64();
                let progress = metrics
                    .input_progress
                    .lock()
                    .ok()
                    .and_then(|p| *p)
                    .filter(|(_, total)| *total > 0)
                    .map(|(done, total)| format!(", input {:.1}%", done as f64 * 100.0 / total as f64))
                    .unwrap_or_default();
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r{rate:.0} records/s, state {} bytes, last checkpoint {} ({} ms){progress}   ",
                    metrics.last_checkpoint_bytes.load(Ordering::Relaxed),
                    metrics.last_checkpoint_id.load(Ordering::Relaxed),
                    metrics.last_checkpoint_ms.load(Ordering::Relaxed)
                );
                let _ = err.flush();
                last_status = Instant::now();
                last_records = records;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the keyed operator counted: records, and the partial sums they
/// reached it as when sources folded them first (local aggregation; one
/// partial sum per record would mean folding gained nothing).
fn counted_records(metrics: &JobMetrics) -> String {
    let records = metrics.records.load(Ordering::Relaxed);
    match metrics.partial_sums.load(Ordering::Relaxed) {
        0 => format!("{records} records"),
        partial_sums => format!("{records} records, folded into {partial_sums} partial sums on the way"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn memory_max_state_size_comes_from_the_flag_then_the_config_key() {
        let config = FlinkConfig::parse("state.backend.memory.max-state-size: 10mb\n").unwrap();
        assert_eq!(memory_max_state_size(None, &config).unwrap(), Some(10 << 20));
        assert_eq!(memory_max_state_size(Some("64kb"), &config).unwrap(), Some(64 << 10));
        assert_eq!(memory_max_state_size(None, &FlinkConfig::default()).unwrap(), None);
        let nested = FlinkConfig::parse("state:\n  backend:\n    memory:\n      max-state-size: 1 gb\n").unwrap();
        assert_eq!(memory_max_state_size(None, &nested).unwrap(), Some(1 << 30));
    }

    #[test]
    fn a_bad_memory_max_state_size_names_the_flag_or_key() {
        let err = memory_max_state_size(Some("lots"), &FlinkConfig::default()).unwrap_err();
        assert!(format!("{err:#}").contains("--memory-max-state-size"), "{err:#}");
        let config = FlinkConfig::parse("state.backend.memory.max-state-size: lots\n").unwrap();
        let err = memory_max_state_size(None, &config).unwrap_err();
        assert!(
            format!("{err:#}").contains("state.backend.memory.max-state-size"),
            "{err:#}"
        );
    }
}
