//! A text file read by byte ranges: the split a subtask reads at start, and
//! on restore the unread ranges of every old subtask, split again between
//! the new ones (so a restore at another parallelism reads every line
//! exactly once).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, ErrorKind as IoErrorKind, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use streamstate_api::operator_state::{OperatorStateStore, UNION_PREFIX};
use streamstate_api::{Error, ErrorKind, Result};

use super::line::{decode_line, read_bounded_line, LineSource, SourcePoll, MAX_LINE_BYTES};

/// Before ranges: one offset per subtask, split-redistributed (still read,
/// so older checkpoints restore).
const OFFSET_STATE: &str = "file-offset";

/// Unread `[start, end)` byte ranges, as a union list: every new subtask
/// sees all of them and takes its share.
const RANGES_STATE: &str = "file-ranges";

/// Reads a text file line by line; the byte ranges it has not read yet are
/// operator state, so a restore resumes exactly after the last
/// checkpointed line, at any parallelism.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    /// Lines starting at or after this offset belong to the next range.
    end: u64,
    /// Ranges after the current one, each starting at a line start.
    next: VecDeque<(u64, u64)>,
    len: u64,
    raw: Vec<u8>,
}

/// The offset of the first line that starts at or after `at` (> 0): the
/// byte before `at` ends a line or the line it is in is skipped.
fn first_line_at_or_after(file: &mut File, at: u64) -> std::io::Result<u64> {
    file.seek(SeekFrom::Start(at - 1))?;
    let mut reader = BufReader::new(&mut *file);
    let mut skipped = Vec::new();
    let (consumed, _) = read_bounded_line(&mut reader, &mut skipped)?;
    Ok(at - 1 + consumed)
}

fn storage_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Storage, what.to_owned())
        .with_context("file", path.display().to_string())
        .with_source(e)
}

/// Share `subtask` of `parallelism` of the bytes in `ranges` (sorted,
/// disjoint, each starting at a line start), cut evenly by bytes; a cut
/// inside a range moves up to the next line start, as a split's start does.
fn share_of(
    file: &mut File,
    ranges: &[(u64, u64)],
    subtask: u32,
    parallelism: u32,
) -> std::io::Result<VecDeque<(u64, u64)>> {
    let total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    let p = u64::from(parallelism.max(1));
    let (from, to) = (total * u64::from(subtask) / p, total * (u64::from(subtask) + 1) / p);
    let mut share = VecDeque::new();
    let mut before = 0u64;
    for &(start, end) in ranges {
        let len = end - start;
        let (lo, hi) = (from.max(before), to.min(before + len));
        if lo < hi {
            let (cut_start, cut_end) = (start + (lo - before), start + (hi - before));
            let aligned = if cut_start == start {
                start
            } else {
                first_line_at_or_after(file, cut_start)?
            };
            if aligned < cut_end {
                share.push_back((aligned, cut_end));
            }
        }
        before += len;
    }
    Ok(share)
}

impl FileSource {
    /// Opens `path` at the position recorded in `restored` (or at 0).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] or [`ErrorKind::Config`] naming the file.
    pub fn open(path: impl Into<PathBuf>, restored: Option<&mut OperatorStateStore>) -> Result<Self> {
        Self::open_split(path, 0, 1, restored)
    }

    /// Opens split `subtask` of `parallelism` of `path`: the lines that
    /// start in its byte range `[len * subtask / parallelism, len *
    /// (subtask + 1) / parallelism)`, as Hadoop's and Flink's file splits
    /// are read (a line crossing a split's end belongs to the split it
    /// starts in). Restored, it reads its share of the ranges no subtask
    /// had read at the checkpoint, whatever the parallelism then.
    ///
    /// ```
    /// # use streamstate_runtime::source::{FileSource, LineSource, SourcePoll};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("in.txt");
    /// std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
    /// let mut lines = Vec::new();
    /// for subtask in 0..2 {
    ///     let mut source = FileSource::open_split(&path, subtask, 2, None).unwrap();
    ///     let mut line = String::new();
    ///     while let SourcePoll::Line { .. } = source.poll_line(&mut line).unwrap() {
    ///         lines.push(line.clone());
    ///     }
    /// }
    /// assert_eq!(lines, ["one", "two", "three"]);
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] or [`ErrorKind::Config`] naming the file
    /// (also when a recorded offset lies past its end: another file).
    pub fn open_split(
        path: impl Into<PathBuf>,
        subtask: u32,
        parallelism: u32,
        restored: Option<&mut OperatorStateStore>,
    ) -> Result<Self> {
        let path = path.into();
        let shown = path.display().to_string();
        let mut file = File::open(&path).map_err(|e| {
            let kind = if e.kind() == IoErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Config
            };
            Error::new(kind, "cannot open the input file")
                .with_context("file", shown.clone())
                .with_source(e)
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let p = u64::from(parallelism.max(1));
        let (start, end) = (len * u64::from(subtask) / p, len * (u64::from(subtask) + 1) / p);
        let past_end = |offset: u64| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "checkpointed offset {offset} is past the end of the input ({len} bytes): is it the same file?"
                ),
            )
            .with_context("file", shown.clone())
        };
        let mut ranges: VecDeque<(u64, u64)> = match restored {
            Some(store) if store.as_map().contains_key(&format!("{UNION_PREFIX}{RANGES_STATE}")) => {
                let mut all = store.union_list_state::<(u64, u64)>(RANGES_STATE).get(store)?;
                if let Some(&(offset, _)) = all.iter().find(|(offset, _)| *offset > len) {
                    return Err(past_end(offset));
                }
                all.iter_mut().for_each(|range| range.1 = range.1.min(len));
                all.retain(|(s, e)| s < e);
                all.sort_unstable();
                share_of(&mut file, &all, subtask, parallelism)
                    .map_err(|e| storage_error(&path, "cannot read the input file", e))?
            }
            Some(store) => {
                // An offset per old subtask (before ranges): at the same
                // parallelism, the one in this split.
                let offset = store
                    .list_state::<u64>(OFFSET_STATE)
                    .get(store)?
                    .into_iter()
                    .filter(|offset| p == 1 || (start..=end).contains(offset))
                    .max()
                    .unwrap_or(start);
                if offset > len {
                    return Err(past_end(offset));
                }
                VecDeque::from([(offset, end)])
            }
            None if start == 0 => VecDeque::from([(0, end)]),
            None => {
                let aligned = first_line_at_or_after(&mut file, start)
                    .map_err(|e| storage_error(&path, "cannot read the input file", e))?;
                VecDeque::from([(aligned, end)])
            }
        };
        // One reader of the whole file reads on to its end, also what is
        // appended after the start.
        if p == 1 {
            if let Some(last) = ranges.back_mut().filter(|last| last.1 == len) {
                last.1 = u64::MAX;
            }
        }
        let (offset, end) = ranges.pop_front().unwrap_or((len, len));
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| storage_error(&path, "cannot seek", e))?;
        Ok(Self {
            path,
            reader: BufReader::with_capacity(1 << 16, file),
            offset,
            end,
            next: ranges,
            len,
            raw: Vec::new(),
        })
    }

    /// Moves to the next unread range; false when there is none.
    fn next_range(&mut self) -> Result<bool> {
        let Some((offset, end)) = self.next.pop_front() else {
            return Ok(false);
        };
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| storage_error(&self.path, "cannot seek", e))?;
        (self.offset, self.end) = (offset, end);
        Ok(true)
    }
}

impl LineSource for FileSource {
    fn poll_line(&mut self, line: &mut String) -> Result<SourcePoll> {
        loop {
            let start = self.offset;
            if start >= self.end {
                if self.next_range()? {
                    continue;
                }
                return Ok(SourcePoll::End);
            }
            let (consumed, too_long) = read_bounded_line(&mut self.reader, &mut self.raw)
                .map_err(|e| storage_error(&self.path, "cannot read the input file", e))?;
            if consumed == 0 {
                if self.next_range()? {
                    continue;
                }
                return Ok(SourcePoll::End);
            }
            self.offset += consumed;
            if too_long {
                tracing::warn!(file = %self.path.display(), offset = start, bytes = consumed,
                    "skipping a line longer than {MAX_LINE_BYTES} bytes");
                continue;
            }
            decode_line(&self.raw, line, &self.path.display(), start);
            return Ok(SourcePoll::Line { more_buffered: true });
        }
    }

    fn snapshot(&self, store: &mut OperatorStateStore) -> Result<()> {
        let mut unread = vec![(self.offset, self.end)];
        unread.extend(self.next.iter().copied());
        store
            .union_list_state::<(u64, u64)>(RANGES_STATE)
            .update(store, &unread)
    }

    fn replayable(&self) -> bool {
        true
    }

    fn progress(&self) -> Option<(u64, u64)> {
        Some((self.offset, self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_source_resumes_at_checkpointed_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let mut source = FileSource::open(&path, None).unwrap();
        let mut line = String::new();
        source.poll_line(&mut line).unwrap();
        let mut store = OperatorStateStore::default();
        source.snapshot(&mut store).unwrap();
        let mut resumed = FileSource::open(&path, Some(&mut store)).unwrap();
        assert!(matches!(resumed.poll_line(&mut line).unwrap(), SourcePoll::Line { .. }));
        assert_eq!(line, "two");
        assert_eq!(resumed.progress(), Some((8, 14)));
    }

    #[test]
    fn an_offset_of_the_old_format_still_restores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let mut store = OperatorStateStore::default();
        store.list_state::<u64>(OFFSET_STATE).update(&mut store, &[4]).unwrap();
        let mut resumed = FileSource::open(&path, Some(&mut store)).unwrap();
        let mut line = String::new();
        resumed.poll_line(&mut line).unwrap();
        assert_eq!(line, "two");
    }

    #[test]
    fn an_offset_past_the_end_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "one\n").unwrap();
        let mut store = OperatorStateStore::default();
        store
            .union_list_state::<(u64, u64)>(RANGES_STATE)
            .update(&mut store, &[(99, 120)])
            .unwrap();
        let err = FileSource::open(&path, Some(&mut store)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("in.txt"), "{err}");
    }

    #[test]
    fn missing_file_is_not_found_naming_it() {
        let err = FileSource::open("/no/such/file.txt", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("/no/such/file.txt"));
    }

    /// Reads `take` lines from each of `from` splits, snapshots each, and
    /// restores the pooled snapshots at `to` splits: returns the lines read
    /// before and after, in the order read.
    fn read_across_restore(path: &Path, from: u32, take: usize, to: u32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut old = Vec::new();
        let mut line = String::new();
        for subtask in 0..from {
            let mut source = FileSource::open_split(path, subtask, from, None).unwrap();
            for _ in 0..take {
                match source.poll_line(&mut line).unwrap() {
                    SourcePoll::Line { .. } => lines.push(line.clone()),
                    _ => break,
                }
            }
            let mut store = OperatorStateStore::default();
            source.snapshot(&mut store).unwrap();
            old.push(store.as_map().clone());
        }
        for (subtask, share) in streamstate_api::operator_state::redistribute(old, to)
            .into_iter()
            .enumerate()
        {
            let mut store = OperatorStateStore::from_map(share);
            let mut source = FileSource::open_split(path, subtask as u32, to, Some(&mut store)).unwrap();
            while let SourcePoll::Line { .. } = source.poll_line(&mut line).unwrap() {
                lines.push(line.clone());
            }
        }
        lines
    }

    proptest::proptest! {
        /// Splits read every line exactly once, in order, whatever the
        /// lines (empty ones, one without its newline, lines longer than
        /// a split) and the number of splits; and so does a restore at
        /// another number of splits from a snapshot taken mid-way.
        #[test]
        fn splits_read_every_line_once(
            lines in proptest::collection::vec("[a-c ]{0,40}", 0..30),
            trailing_newline: bool,
            parallelism in 1u32..7,
            restored_at in 1u32..7,
            take in 0usize..5,
        ) {
            let mut text = lines.join("\n");
            if trailing_newline && !lines.is_empty() {
                text.push('\n');
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.txt");
            std::fs::write(&path, &text).unwrap();
            // The model: `str::lines` over the same text.
            let mut expected: Vec<String> = text.lines().map(str::to_owned).collect();
            let mut read = read_across_restore(&path, parallelism, usize::MAX, 1);
            proptest::prop_assert_eq!(&read, &expected);
            read = read_across_restore(&path, parallelism, take, restored_at);
            read.sort();
            expected.sort();
            proptest::prop_assert_eq!(read, expected);
        }
    }
}
