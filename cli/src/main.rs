//! The `streamstate` command.
//!
//! `streamstate wordcount` runs Flink's word-count walkthrough;
//! `streamstate checkpoints list URI` and `streamstate checkpoints inspect
//! PATH` show what a checkpoint directory and a snapshot hold.

mod committed_output;
mod config;
mod inspect;
mod metrics_server;
mod native_view;
mod output;
mod wordcount;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "streamstate",
    version,
    about = "Flink-grade keyed state for Rust stream processing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Flink's socket word count: count words from a socket or a file, with
    /// checkpoints, restartable from the latest one.
    Wordcount(Box<wordcount::WordCountArgs>),
    /// Look at checkpoints and savepoints.
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
}

#[derive(Debug, Subcommand)]
enum CheckpointsCommand {
    /// List the checkpoints and savepoints under a checkpoint directory.
    List {
        /// Checkpoint directory URI (file:///..., memory://, or a path).
        uri: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show what one checkpoint or savepoint holds, down to keys and values.
    Inspect {
        /// Snapshot directory URI, e.g. file:///tmp/checkpoints/<job>/chk-3.
        path: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Show only this state.
        #[arg(long)]
        state: Option<String>,
        /// Show only this key (a string key, as the word count uses).
        #[arg(long)]
        key: Option<String>,
    },
}

/// mimalloc instead of the system allocator: the dataflow allocates records
/// on source threads and frees them on keyed threads, which glibc's malloc
/// handles slowly (its profile share is in docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Modules whose debug logs print credentials (reqsign logs each credential
/// provider with its secret key at DEBUG); capped at INFO whatever `RUST_LOG`
/// asks for.
const SECRET_LOGGING_TARGETS: &[&str] = &["reqsign", "reqsign_core", "reqsign_aws_v4", "reqsign_file_read_tokio"];

/// `RUST_LOG` (default `warn`), with [`SECRET_LOGGING_TARGETS`] capped.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    for target in SECRET_LOGGING_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        // Colours only on a terminal: logs redirected to a file stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Wordcount(args) => wordcount::run(*args),
        Command::Checkpoints(CheckpointsCommand::List { uri, json }) => inspect::list(&uri, json),
        Command::Checkpoints(CheckpointsCommand::Inspect { path, json, state, key }) => {
            inspect::inspect(&path, json, state.as_deref(), key.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, no backtrace: these are user-facing errors.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
