//! Sinks, chained into the keyed operator's thread.

use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;

use streamstate_api::{Error, ErrorKind, Result};

/// Receives a keyed operator's output.
pub trait Sink<O>: Send {
    /// Handles one record.
    ///
    /// # Errors
    /// I/O errors; they fail the job.
    fn write(&mut self, record: &O) -> Result<()>;

    /// Makes written records visible (called after each batch and before
    /// each checkpoint).
    ///
    /// # Errors
    /// I/O errors.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether the sink drops every record unseen, so operators need not
    /// build them (their final state still counts).
    fn discards_records(&self) -> bool {
        false
    }

    /// Called once, before the first record, with the checkpoint the job
    /// restored (`None`: it started from nothing): a sink that publishes
    /// only what checkpoints cover (Flink's two-phase-commit sinks) drops
    /// what it staged after that checkpoint and publishes what it staged
    /// up to it. The default does nothing.
    ///
    /// # Errors
    /// I/O errors; they fail the job.
    fn open(&mut self, restored_checkpoint: Option<u64>) -> Result<()> {
        let _ = restored_checkpoint;
        Ok(())
    }

    /// Checkpoint `checkpoint_id`'s barrier: every record written so far
    /// belongs to it (Flink's `preCommit`). Called before the operator's
    /// state is snapshot; the default flushes.
    ///
    /// # Errors
    /// I/O errors; they fail the job (as a failed `flush` does), which
    /// restarts from its last completed checkpoint.
    fn pre_commit(&mut self, checkpoint_id: u64) -> Result<()> {
        let _ = checkpoint_id;
        self.flush()
    }

    /// Checkpoint `checkpoint_id` completed: what was pre-committed up to
    /// it may be published (Flink's `commit`). Not called for every
    /// checkpoint (one call covers the ones before it), and in a cluster
    /// only in the process that commits checkpoints; what is left is
    /// published by [`Sink::open`] after a restore. The default does
    /// nothing.
    ///
    /// # Errors
    /// I/O errors; they fail the job.
    fn commit(&mut self, checkpoint_id: u64) -> Result<()> {
        let _ = checkpoint_id;
        Ok(())
    }
}

/// Formats a record as Flink prints it: tuples as `(a,b)`.
pub trait FlinkDisplay {
    /// Appends the record's text.
    fn fmt_flink(&self, out: &mut String);
}

impl<A: Display, B: Display> FlinkDisplay for (A, B) {
    fn fmt_flink(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(out, "({},{})", self.0, self.1);
    }
}

impl FlinkDisplay for String {
    fn fmt_flink(&self, out: &mut String) {
        out.push_str(self);
    }
}

/// Flink's `print()`: one line per record on stdout, prefixed `N> ` (1-based
/// subtask) when the operator runs with parallelism > 1.
#[derive(Debug)]
pub struct PrintSink {
    prefix: String,
    line: String,
    buffer: Vec<u8>,
}

impl PrintSink {
    /// The print sink of `subtask` (0-based) of `parallelism`.
    pub fn new(subtask: u32, parallelism: u32) -> Self {
        Self {
            prefix: if parallelism > 1 {
                format!("{}> ", subtask + 1)
            } else {
                String::new()
            },
            line: String::new(),
            buffer: Vec::new(),
        }
    }
}

impl<O: FlinkDisplay> Sink<O> for PrintSink {
    fn write(&mut self, record: &O) -> Result<()> {
        self.line.clear();
        self.line.push_str(&self.prefix);
        record.fmt_flink(&mut self.line);
        self.buffer.extend_from_slice(self.line.as_bytes());
        self.buffer.push(b'\n');
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let result = out.write_all(&self.buffer).and_then(|_| out.flush());
        self.buffer.clear();
        match result {
            Ok(()) => Ok(()),
            // A closed stdout (e.g. `| head`) is not a reason to fail the job.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(Error::new(ErrorKind::Storage, "cannot write to stdout").with_source(e)),
        }
    }
}

/// Appends records, one per line, to `<dir>/part-<subtask>`.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    line: String,
}

impl FileSink {
    /// Opens (creates) the part file of `subtask` in `dir`.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn open(dir: impl Into<PathBuf>, subtask: u32) -> Result<Self> {
        let dir = dir.into();
        let path = dir.join(format!("part-{subtask}"));
        let file = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::OpenOptions::new().create(true).append(true).open(&path))
            .map_err(|e| {
                Error::new(ErrorKind::Storage, "cannot open the sink file")
                    .with_context("file", path.display().to_string())
                    .with_source(e)
            })?;
        Ok(Self {
            path,
            file: std::io::BufWriter::new(file),
            line: String::new(),
        })
    }
}

impl<O: FlinkDisplay> Sink<O> for FileSink {
    fn write(&mut self, record: &O) -> Result<()> {
        self.line.clear();
        record.fmt_flink(&mut self.line);
        self.line.push('\n');
        self.file.write_all(self.line.as_bytes()).map_err(|e| {
            Error::new(ErrorKind::Storage, "cannot write the sink file")
                .with_context("file", self.path.display().to_string())
                .with_source(e)
        })
    }

    fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| {
            Error::new(ErrorKind::Storage, "cannot flush the sink file")
                .with_context("file", self.path.display().to_string())
                .with_source(e)
        })
    }
}

/// Discards records (benchmarks).
#[derive(Debug, Default)]
pub struct DiscardSink;

impl<O> Sink<O> for DiscardSink {
    fn write(&mut self, _record: &O) -> Result<()> {
        Ok(())
    }

    fn discards_records(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_print_like_flink() {
        let mut s = String::new();
        ("HELLO".to_owned(), 3i64).fmt_flink(&mut s);
        assert_eq!(s, "(HELLO,3)");
        assert_eq!(PrintSink::new(1, 2).prefix, "2> ");
        assert_eq!(PrintSink::new(0, 1).prefix, "");
    }
}
