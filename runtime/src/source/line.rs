//! What every line source is ([`LineSource`], [`SourcePoll`]) and the
//! line reading they share: a bounded line read and a lenient UTF-8 decode.

use std::io::{BufRead, ErrorKind as IoErrorKind};

use streamstate_api::operator_state::OperatorStateStore;
use streamstate_api::Result;

/// Longest line a source passes on; longer lines are skipped.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// What a poll of a source produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePoll {
    /// A line was read; `more_buffered` says whether more input is already
    /// waiting (if not, the source flushes its batches for latency).
    Line {
        /// Whether more bytes are buffered.
        more_buffered: bool,
    },
    /// Nothing available right now.
    Idle,
    /// The input is exhausted.
    End,
}

/// A source of text lines, run on its own thread.
pub trait LineSource: Send {
    /// Reads the next line into `line` (cleared first).
    ///
    /// # Errors
    /// I/O failures, naming the input.
    fn poll_line(&mut self, line: &mut String) -> Result<SourcePoll>;

    /// Records the position to resume from into `store`.
    ///
    /// # Errors
    /// Serialization errors.
    fn snapshot(&self, store: &mut OperatorStateStore) -> Result<()>;

    /// Whether a restore can replay from a recorded position.
    fn replayable(&self) -> bool;

    /// Bytes read and total bytes, for progress display.
    fn progress(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Reads one `\n`-terminated line of at most `MAX_LINE_BYTES` from `reader`
/// into `raw`. Returns the bytes consumed (0 at end of input) and whether
/// the line was too long (then `raw` is empty and the line was skipped).
pub(super) fn read_bounded_line(reader: &mut impl BufRead, raw: &mut Vec<u8>) -> std::io::Result<(u64, bool)> {
    raw.clear();
    let mut consumed = 0u64;
    let mut too_long = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((consumed, too_long));
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        if !too_long && raw.len() + chunk.len() > MAX_LINE_BYTES + 1 {
            too_long = true;
            raw.clear();
        }
        if !too_long {
            raw.extend_from_slice(chunk);
        }
        let n = chunk.len();
        consumed += n as u64;
        reader.consume(n);
        if done {
            return Ok((consumed, too_long));
        }
    }
}

/// `origin` names the input in the warning about invalid UTF-8; it is
/// formatted only then, not once per line.
pub(super) fn decode_line(raw: &[u8], line: &mut String, origin: &dyn std::fmt::Display, offset: u64) {
    let trimmed = raw.strip_suffix(b"\n").unwrap_or(raw);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    line.clear();
    match std::str::from_utf8(trimmed) {
        Ok(s) => line.push_str(s),
        Err(_) => {
            tracing::warn!(
                input = %origin,
                offset,
                "line is not valid UTF-8; invalid bytes replaced with U+FFFD"
            );
            line.push_str(&String::from_utf8_lossy(trimmed));
        }
    }
}
