//! `--output FILE`: what a word count writes to a file, one line per
//! record ([`OutputFile`]): the final counts of a bounded input as
//! `WORD<TAB>COUNT`, or every window's count as
//! `WINDOW_START<TAB>WINDOW_END<TAB>WORD<TAB>COUNT` (epoch milliseconds).
//! Lines go to `FILE.partial`, renamed to `FILE` once the job has finished,
//! so a cancelled or failed job leaves no partial output behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use streamstate_runtime::sink::Sink;
use streamstate_runtime::stream::SinkFactory;
use streamstate_runtime::window::WindowResult;
use streamstate_runtime::word_count::Word;

/// Formats one record as one line (with its newline) into the buffer.
pub type LineFormat<R> = fn(&R, &mut Vec<u8>);

/// A final count's line: `WORD<TAB>COUNT`.
pub fn count_line((word, count): &(Word, i64), out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail; the count is formatted in place.
    let _ = writeln!(out, "{word}\t{count}");
}

/// A window's line: `WINDOW_START<TAB>WINDOW_END<TAB>WORD<TAB>COUNT`.
pub fn window_line(result: &WindowResult<Word, i64>, out: &mut Vec<u8>) {
    let _ = writeln!(
        out,
        "{}\t{}\t{}\t{}",
        result.window.start, result.window.end, result.key, result.value
    );
}

/// `--output`: lines written while the keyed subtasks emit them (final
/// counts a key group at a time, unsorted: a large state's counts are never
/// all in memory), to `FILE.partial` until [`OutputFile::commit`].
pub struct OutputFile {
    path: PathBuf,
    partial: PathBuf,
    writer: Arc<Mutex<std::io::BufWriter<std::fs::File>>>,
    committed: bool,
}

impl OutputFile {
    /// Creates `FILE.partial`.
    ///
    /// # Errors
    /// When the file cannot be created, naming it.
    pub fn create(path: &Path) -> Result<Self> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
        Ok(Self {
            path: path.to_owned(),
            partial,
            writer: Arc::new(Mutex::new(std::io::BufWriter::new(file))),
            committed: false,
        })
    }

    /// One sink per keyed subtask, all appending to this file, each record
    /// as `format` writes it.
    pub fn sink_factory<R: 'static>(&self, format: LineFormat<R>) -> SinkFactory<R> {
        let writer = Arc::clone(&self.writer);
        let path = self.partial.clone();
        Arc::new(move |_, _| {
            Ok(Box::new(LinesSink {
                writer: Arc::clone(&writer),
                path: path.clone(),
                lines: Vec::new(),
                format,
            }) as Box<_>)
        })
    }

    /// Syncs the file and gives it its final name (the job has finished:
    /// no sink writes any more).
    ///
    /// # Errors
    /// When a subtask failed while writing, or the file cannot be synced or
    /// renamed, naming it.
    pub fn commit(mut self) -> Result<()> {
        {
            let mut writer = self
                .writer
                .lock()
                .map_err(|_| anyhow::anyhow!("a subtask failed while writing {}", self.partial.display()))?;
            writer
                .flush()
                .and_then(|()| writer.get_ref().sync_all())
                .with_context(|| format!("cannot write {}", self.partial.display()))?;
        }
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("cannot rename {} to {}", self.partial.display(), self.path.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// A subtask's side of [`OutputFile`]: lines gather in a local buffer and
/// are appended whole, so subtasks never interleave within a line.
struct LinesSink<R> {
    writer: Arc<Mutex<std::io::BufWriter<std::fs::File>>>,
    path: PathBuf,
    lines: Vec<u8>,
    format: LineFormat<R>,
}

/// Lines a subtask buffers before writing them out in one piece.
pub const CHUNK_BYTES: usize = 64 << 10;

impl<R> Sink<R> for LinesSink<R> {
    fn write(&mut self, record: &R) -> streamstate_api::Result<()> {
        (self.format)(record, &mut self.lines);
        if self.lines.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> streamstate_api::Result<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let failed = |message: String| {
            streamstate_api::Error::new(streamstate_api::ErrorKind::Storage, message)
                .with_context("file", self.path.display().to_string())
        };
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| failed("another subtask failed while writing the output".into()))?;
        writer
            .write_all(&self.lines)
            .map_err(|e| failed(format!("writing the output failed: {e}")))?;
        self.lines.clear();
        Ok(())
    }
}
