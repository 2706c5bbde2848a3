//! `--output FILE` of a windowed word count, exactly once across failures
//! (Flink's two-phase-commit file sink): a window's line reaches `FILE`
//! only once a checkpoint covering the window's firing has completed, and a
//! job restored from a checkpoint first cuts `FILE` back to what that
//! checkpoint covers.
//!
//! ```text
//! FILE                          committed lines, in checkpoint order
//! FILE.staging/inprogress-S     subtask S's lines since its last barrier
//! FILE.staging/<id>-<S>.staged  subtask S's lines before barrier <id>
//! FILE.staging/commits          "<id> <length of FILE after it>" per commit
//! ```
//!
//! At barrier `id` a subtask syncs its in-progress file and renames it to
//! `<id>-<S>.staged` (before its state is snapshot). When checkpoint `id`
//! completes, the staged files up to it are appended to `FILE` in
//! checkpoint, then subtask, order, `FILE` is synced, and the commit is
//! logged. A job restored from checkpoint `R` truncates `FILE` to the
//! length logged for the last commit up to `R`, commits what was staged up
//! to `R` and not yet committed, and drops everything staged after `R`:
//! `FILE` then holds exactly the windows that fired before `R`'s barrier,
//! each once, and the restored job emits the rest. A job started without a
//! restore starts `FILE` empty. When the job ends, the rest is committed;
//! the commit log stays, so the job can still be restored from one of its
//! checkpoints.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use streamstate_api::{Error, ErrorKind};
use streamstate_runtime::sink::Sink;
use streamstate_runtime::stream::SinkFactory;

use crate::output::{LineFormat, CHUNK_BYTES};

/// The output file and its staging directory: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct CommittedOutput {
    files: Arc<Mutex<Files>>,
    /// `FILE.staging`, as in `files` (subtasks write there without the lock).
    staging: PathBuf,
}

#[derive(Debug)]
struct Files {
    path: PathBuf,
    staging: PathBuf,
    /// Whether a subtask's `open` has already recovered the files.
    recovered: bool,
}

fn storage_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Storage, format!("{what}: {e}")).with_context("file", path.display().to_string())
}

/// A staged file's checkpoint id and subtask, from its name.
fn staged_name(name: &str) -> Option<(u64, u32)> {
    let (id, subtask) = name.strip_suffix(".staged")?.split_once('-')?;
    Some((id.parse().ok()?, subtask.parse().ok()?))
}

impl Files {
    fn log_path(&self) -> PathBuf {
        self.staging.join("commits")
    }

    /// The commit log: `(checkpoint id, FILE length after it)`.
    fn log(&self) -> streamstate_api::Result<Vec<(u64, u64)>> {
        let path = self.log_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage_error(&path, "cannot read the commit log", e)),
        };
        text.lines()
            .map(|line| {
                let (id, len) = line.split_once(' ').unwrap_or((line, ""));
                match (id.parse(), len.parse()) {
                    (Ok(id), Ok(len)) => Ok((id, len)),
                    _ => Err(
                        Error::corrupt(format!("commit log line {line:?} is not `<id> <length>`"))
                            .with_context("file", path.display().to_string()),
                    ),
                }
            })
            .collect()
    }

    fn write_log(&self, log: &[(u64, u64)]) -> streamstate_api::Result<()> {
        let path = self.log_path();
        let tmp = self.staging.join("commits.tmp");
        let text: String = log.iter().map(|(id, len)| format!("{id} {len}\n")).collect();
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| storage_error(&path, "cannot write the commit log", e))
    }

    /// The staged files, ordered by checkpoint id, then subtask.
    fn staged(&self) -> streamstate_api::Result<Vec<(u64, u32, PathBuf)>> {
        let entries = match fs::read_dir(&self.staging) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage_error(&self.staging, "cannot list the staging directory", e)),
        };
        let mut staged = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| storage_error(&self.staging, "cannot list the staging directory", e))?;
            if let Some((id, subtask)) = entry.file_name().to_str().and_then(staged_name) {
                staged.push((id, subtask, entry.path()));
            }
        }
        staged.sort();
        Ok(staged)
    }

    /// Appends the staged files of checkpoints up to `up_to` (and any
    /// in-progress files, when `with_in_progress`) to FILE, logging each
    /// checkpoint's commit. Staged files of checkpoints already logged (a
    /// crash between the log and their removal) are removed unread.
    fn commit_up_to(&mut self, up_to: u64, with_in_progress: bool) -> streamstate_api::Result<()> {
        let mut log = self.log()?;
        let last_logged = log.last().map_or(0, |(id, _)| *id);
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| storage_error(&self.path, "cannot open the output", e))?;
        let mut groups: Vec<(u64, Vec<PathBuf>)> = Vec::new();
        for (id, _, path) in self.staged()? {
            if id > up_to {
                continue;
            }
            if id <= last_logged {
                let _ = fs::remove_file(&path);
                continue;
            }
            match groups.last_mut() {
                Some((last, paths)) if *last == id => paths.push(path),
                _ => groups.push((id, vec![path])),
            }
        }
        if with_in_progress {
            let mut rest: Vec<PathBuf> = fs::read_dir(&self.staging)
                .map_err(|e| storage_error(&self.staging, "cannot list the staging directory", e))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("inprogress-")))
                .map(|e| e.path())
                .collect();
            rest.sort();
            if !rest.is_empty() {
                groups.push((last_logged.max(groups.last().map_or(0, |g| g.0)) + 1, rest));
            }
        }
        for (id, paths) in groups {
            for path in &paths {
                let mut bytes = Vec::new();
                File::open(path)
                    .and_then(|mut f| f.read_to_end(&mut bytes))
                    .map_err(|e| storage_error(path, "cannot read staged output", e))?;
                out.write_all(&bytes)
                    .map_err(|e| storage_error(&self.path, "cannot append to the output", e))?;
            }
            out.sync_all()
                .map_err(|e| storage_error(&self.path, "cannot sync the output", e))?;
            let len = out
                .metadata()
                .map_err(|e| storage_error(&self.path, "cannot read the output's length", e))?
                .len();
            log.push((id, len));
            self.write_log(&log)?;
            for path in &paths {
                let _ = fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// What a restore from `restored` (or a fresh start) needs: see the
    /// [module docs](self).
    fn recover(&mut self, restored: Option<u64>) -> streamstate_api::Result<()> {
        if std::mem::replace(&mut self.recovered, true) {
            return Ok(());
        }
        let Some(restored) = restored else {
            if self.staging.exists() {
                fs::remove_dir_all(&self.staging)
                    .map_err(|e| storage_error(&self.staging, "cannot clear the staging directory", e))?;
            }
            fs::create_dir_all(&self.staging)
                .map_err(|e| storage_error(&self.staging, "cannot create the staging directory", e))?;
            File::create(&self.path).map_err(|e| storage_error(&self.path, "cannot create the output", e))?;
            return Ok(());
        };
        fs::create_dir_all(&self.staging)
            .map_err(|e| storage_error(&self.staging, "cannot create the staging directory", e))?;
        let log: Vec<(u64, u64)> = self.log()?.into_iter().filter(|(id, _)| *id <= restored).collect();
        let keep = log.last().map_or(0, |(_, len)| *len);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .map_err(|e| storage_error(&self.path, "cannot open the output", e))?;
        let len = file
            .metadata()
            .map_err(|e| storage_error(&self.path, "cannot read the output's length", e))?
            .len();
        if len < keep {
            return Err(Error::corrupt(format!(
                "the output holds {len} bytes, but checkpoint {restored} committed {keep}: it was cut or replaced"
            ))
            .with_context("file", self.path.display().to_string()));
        }
        file.set_len(keep)
            .and_then(|()| file.sync_all())
            .map_err(|e| storage_error(&self.path, "cannot cut the output back", e))?;
        self.write_log(&log)?;
        for entry in fs::read_dir(&self.staging)
            .map_err(|e| storage_error(&self.staging, "cannot list the staging directory", e))?
            .filter_map(|e| e.ok())
        {
            let name = entry.file_name();
            let name = name.to_str().unwrap_or("");
            let after = staged_name(name).is_some_and(|(id, _)| id > restored);
            if after || name.starts_with("inprogress-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        self.commit_up_to(restored, false)
    }
}

impl CommittedOutput {
    /// The output at `path`; nothing is touched until the job's first
    /// subtask opens its sink (it then knows what was restored).
    pub fn new(path: &Path) -> Self {
        let mut staging = path.as_os_str().to_owned();
        staging.push(".staging");
        let staging = PathBuf::from(staging);
        Self {
            files: Arc::new(Mutex::new(Files {
                path: path.to_owned(),
                staging: staging.clone(),
                recovered: false,
            })),
            staging,
        }
    }

    /// One sink per keyed subtask, each record as `format` writes it.
    pub fn sink_factory<R: 'static>(&self, format: LineFormat<R>) -> SinkFactory<R> {
        let files = Arc::clone(&self.files);
        let staging = self.staging.clone();
        Arc::new(move |subtask, _| {
            Ok(Box::new(StagedSink {
                files: Arc::clone(&files),
                staging: staging.clone(),
                subtask,
                in_progress: None,
                lines: Vec::new(),
                format,
            }) as Box<_>)
        })
    }

    /// The job ran to its end: commits everything staged and in progress.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn finish(self) -> Result<()> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| anyhow!("a subtask failed while writing the output"))?;
        files.recovered = true;
        files.commit_up_to(u64::MAX, true)?;
        Ok(())
    }
}

/// A subtask's side of [`CommittedOutput`].
struct StagedSink<R> {
    files: Arc<Mutex<Files>>,
    /// `FILE.staging`, where its in-progress file goes.
    staging: PathBuf,
    subtask: u32,
    /// The in-progress file, once something was written since the last
    /// barrier.
    in_progress: Option<(PathBuf, BufWriter<File>)>,
    lines: Vec<u8>,
    format: LineFormat<R>,
}

impl<R> Sink<R> for StagedSink<R> {
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
        if self.in_progress.is_none() {
            let path = self.staging.join(format!("inprogress-{:06}", self.subtask));
            let file = File::create(&path).map_err(|e| storage_error(&path, "cannot create staged output", e))?;
            self.in_progress = Some((path, BufWriter::new(file)));
        }
        if let Some((path, writer)) = self.in_progress.as_mut() {
            writer
                .write_all(&self.lines)
                .map_err(|e| storage_error(path, "cannot write staged output", e))?;
        }
        self.lines.clear();
        Ok(())
    }

    fn open(&mut self, restored_checkpoint: Option<u64>) -> streamstate_api::Result<()> {
        self.files
            .lock()
            .map_err(|_| Error::new(ErrorKind::Storage, "another subtask failed while recovering the output"))?
            .recover(restored_checkpoint)
    }

    fn pre_commit(&mut self, checkpoint_id: u64) -> streamstate_api::Result<()> {
        self.flush()?;
        let Some((path, writer)) = self.in_progress.take() else {
            return Ok(());
        };
        let file = writer
            .into_inner()
            .map_err(|e| storage_error(&path, "cannot write staged output", e.error()))?;
        file.sync_all()
            .map_err(|e| storage_error(&path, "cannot sync staged output", e))?;
        let staged = path.with_file_name(format!("{checkpoint_id:020}-{:06}.staged", self.subtask));
        fs::rename(&path, &staged).map_err(|e| storage_error(&path, "cannot stage output", e))
    }

    fn commit(&mut self, checkpoint_id: u64) -> streamstate_api::Result<()> {
        self.files
            .lock()
            .map_err(|_| Error::new(ErrorKind::Storage, "another subtask failed while committing the output"))?
            .commit_up_to(checkpoint_id, false)
    }
}

impl<R> Drop for StagedSink<R> {
    fn drop(&mut self) {
        // A finished job's last lines: written out for `finish` to commit.
        let _ = self.flush();
        if let Some((_, writer)) = self.in_progress.as_mut() {
            let _ = writer.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn line(text: &&str, out: &mut Vec<u8>) {
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }

    fn sink(output: &CommittedOutput, subtask: u32) -> Box<dyn Sink<&'static str>> {
        (output.sink_factory(line))(subtask, 2).unwrap()
    }

    #[test]
    fn only_what_a_restored_checkpoint_covers_stays_and_the_rest_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tsv");
        let output = CommittedOutput::new(&path);
        let (mut a, mut b) = (sink(&output, 0), sink(&output, 1));
        a.open(None).unwrap();
        b.open(None).unwrap();
        a.write(&"a1").unwrap();
        b.write(&"b1").unwrap();
        a.pre_commit(1).unwrap();
        b.pre_commit(1).unwrap();
        a.write(&"a2").unwrap();
        a.pre_commit(2).unwrap();
        b.pre_commit(2).unwrap();
        a.commit(1).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a1\nb1\n", "checkpoint 1 committed");
        b.write(&"b3").unwrap();
        b.flush().unwrap();
        // A crash; the job restarts from checkpoint 2, which completed but
        // whose commit never happened: its lines are committed, b3 dropped.
        drop((a, b));
        let output = CommittedOutput::new(&path);
        let mut a = sink(&output, 0);
        a.open(Some(2)).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a1\nb1\na2\n");
        // Restored from checkpoint 1 instead: a2 goes again.
        let output = CommittedOutput::new(&path);
        sink(&output, 0).open(Some(1)).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a1\nb1\n");
        // A fresh start empties the file.
        let output = CommittedOutput::new(&path);
        let mut a = sink(&output, 0);
        a.open(None).unwrap();
        a.write(&"x").unwrap();
        drop(a);
        output.finish().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "x\n");
    }

    #[test]
    fn a_staged_file_already_logged_is_not_appended_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tsv");
        let output = CommittedOutput::new(&path);
        let mut a = sink(&output, 0);
        a.open(None).unwrap();
        a.write(&"once").unwrap();
        a.pre_commit(1).unwrap();
        let staged = dir
            .path()
            .join("out.tsv.staging")
            .join(format!("{:020}-{:06}.staged", 1, 0));
        let kept = fs::read(&staged).unwrap();
        a.commit(1).unwrap();
        // A crash after the log was written, before the staged file went.
        fs::write(&staged, kept).unwrap();
        let output = CommittedOutput::new(&path);
        sink(&output, 0).open(Some(1)).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "once\n");
        assert!(!staged.exists());
    }

    #[test]
    fn an_output_shorter_than_committed_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tsv");
        let output = CommittedOutput::new(&path);
        let mut a = sink(&output, 0);
        a.open(None).unwrap();
        a.write(&"line").unwrap();
        a.pre_commit(1).unwrap();
        a.commit(1).unwrap();
        fs::write(&path, "").unwrap();
        let output = CommittedOutput::new(&path);
        let err = sink(&output, 0).open(Some(1)).unwrap_err();
        assert!(err.to_string().contains("committed"), "{err}");
        assert!(err.to_string().contains("out.tsv"), "{err}");
    }
}
