//! Line sources: a text file (replayable: its offset is operator state), a
//! TCP socket (Flink's `socketTextStream`: a client, not replayable) and an
//! in-memory generator (replayable, for tests and benchmarks).
//!
//! Hostile input is handled, not fatal: a line longer than
//! [`MAX_LINE_BYTES`] is skipped with a warning naming its byte offset, and
//! bytes that are not UTF-8 are replaced with U+FFFD (as Java's decoders
//! do), with a warning.

use std::io::{BufReader, ErrorKind as IoErrorKind, Read};
use std::net::TcpStream;
use std::time::Duration;

use streamstate_api::operator_state::OperatorStateStore;
use streamstate_api::{Error, ErrorKind, Result};

mod file;
mod line;
pub use file::FileSource;
use line::{decode_line, read_bounded_line};
pub use line::{LineSource, SourcePoll, MAX_LINE_BYTES};

/// Reads lines from a TCP server, as Flink's `socketTextStream` does: it
/// connects as a client, so `nc -lk PORT` can feed it. A socket cannot
/// replay, so after a restore the lines sent while the job was down are not
/// seen (as in Flink); state is restored exactly.
#[derive(Debug)]
pub struct SocketSource {
    address: String,
    reader: BufReader<TcpStream>,
    raw: Vec<u8>,
    partial: Vec<u8>,
}

impl SocketSource {
    /// Connects to `host:port`.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming the address when nothing listens there.
    pub fn connect(host: &str, port: u16) -> Result<Self> {
        let address = format!("{host}:{port}");
        let stream = TcpStream::connect(&address).map_err(|e| {
            Error::config(format!(
                "cannot connect to {address}: is a server (e.g. `nc -lk {port}`) running?"
            ))
            .with_source(e)
        })?;
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| Error::config(format!("cannot configure the socket to {address}")).with_source(e))?;
        Ok(Self {
            address,
            reader: BufReader::new(stream),
            raw: Vec::new(),
            partial: Vec::new(),
        })
    }
}

impl LineSource for SocketSource {
    fn poll_line(&mut self, line: &mut String) -> Result<SourcePoll> {
        loop {
            match read_bounded_line(&mut self.reader, &mut self.raw) {
                Ok((0, _)) => {
                    if !self.partial.is_empty() {
                        // The peer closed after a last line without `\n`.
                        let last = std::mem::take(&mut self.partial);
                        decode_line(&last, line, &self.address, 0);
                        return Ok(SourcePoll::Line { more_buffered: false });
                    }
                    return Ok(SourcePoll::End);
                }
                Ok((_, true)) => {
                    tracing::warn!(socket = %self.address, "skipping a line longer than {MAX_LINE_BYTES} bytes");
                    self.partial.clear();
                }
                Ok((_, false)) => {
                    if !self.raw.ends_with(b"\n") {
                        // A timeout or close cut the line; keep the part.
                        self.partial.extend_from_slice(&self.raw);
                        continue;
                    }
                    let mut whole = std::mem::take(&mut self.partial);
                    whole.extend_from_slice(&self.raw);
                    if whole.len() > MAX_LINE_BYTES + 1 {
                        tracing::warn!(socket = %self.address, "skipping a line longer than {MAX_LINE_BYTES} bytes");
                        continue;
                    }
                    decode_line(&whole, line, &self.address, 0);
                    return Ok(SourcePoll::Line {
                        more_buffered: !self.reader.buffer().is_empty(),
                    });
                }
                Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => {
                    return Ok(SourcePoll::Idle);
                }
                Err(e) if matches!(e.kind(), IoErrorKind::ConnectionReset | IoErrorKind::BrokenPipe) => {
                    if !self.partial.is_empty() {
                        tracing::warn!(socket = %self.address, bytes = self.partial.len(),
                            "connection reset in the middle of a line; the partial line is dropped");
                        self.partial.clear();
                    }
                    return Ok(SourcePoll::End);
                }
                Err(e) => {
                    return Err(
                        Error::new(ErrorKind::Storage, format!("reading from {} failed", self.address)).with_source(e),
                    )
                }
            }
        }
    }

    fn snapshot(&self, _store: &mut OperatorStateStore) -> Result<()> {
        Ok(())
    }

    fn replayable(&self) -> bool {
        false
    }
}

const POSITION_STATE: &str = "generator-position";

/// Emits a fixed list of lines; subtask `i` of `n` emits lines `i, i+n, ...`
/// and checkpoints how many it has emitted.
#[derive(Debug)]
pub struct GeneratorSource {
    lines: std::sync::Arc<Vec<String>>,
    subtask: usize,
    parallelism: usize,
    emitted: u64,
}

impl GeneratorSource {
    /// Subtask `subtask` of `parallelism` over `lines`, resuming from
    /// `restored`.
    ///
    /// # Errors
    /// Deserialization errors of the restored state.
    pub fn new(
        lines: std::sync::Arc<Vec<String>>,
        subtask: usize,
        parallelism: usize,
        restored: Option<&mut OperatorStateStore>,
    ) -> Result<Self> {
        let emitted = match restored {
            Some(store) => store
                .list_state::<u64>(POSITION_STATE)
                .get(store)?
                .into_iter()
                .max()
                .unwrap_or(0),
            None => 0,
        };
        Ok(Self {
            lines,
            subtask,
            parallelism,
            emitted,
        })
    }
}

impl LineSource for GeneratorSource {
    fn poll_line(&mut self, line: &mut String) -> Result<SourcePoll> {
        let index = self.subtask + self.emitted as usize * self.parallelism;
        match self.lines.get(index) {
            Some(l) => {
                line.clear();
                line.push_str(l);
                self.emitted += 1;
                Ok(SourcePoll::Line { more_buffered: true })
            }
            None => Ok(SourcePoll::End),
        }
    }

    fn snapshot(&self, store: &mut OperatorStateStore) -> Result<()> {
        store.list_state::<u64>(POSITION_STATE).update(store, &[self.emitted])
    }

    fn replayable(&self) -> bool {
        true
    }
}

/// Drains a reader; used by tests of hostile input.
#[doc(hidden)]
pub fn read_all_lines(reader: impl Read) -> std::io::Result<Vec<String>> {
    let mut reader = BufReader::new(reader);
    let (mut raw, mut line, mut out) = (Vec::new(), String::new(), Vec::new());
    let mut offset = 0;
    loop {
        let (n, too_long) = read_bounded_line(&mut reader, &mut raw)?;
        if n == 0 {
            return Ok(out);
        }
        if !too_long {
            decode_line(&raw, &mut line, &"test", offset);
            out.push(line.clone());
        }
        offset += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_skipped_and_bad_utf8_replaced() {
        let mut input = b"a b\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        input.extend_from_slice(b"\n\xff\xfeok\r\n\nlast");
        let lines = read_all_lines(&input[..]).unwrap();
        assert_eq!(lines, vec!["a b", "\u{fffd}\u{fffd}ok", "", "last"]);
    }
}
