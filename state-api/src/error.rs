//! One error type for every layer: a [`ErrorKind`] a caller can match on, a
//! human message, and the context a user needs to act (URI, file, state).
//!
//! Backends convert native errors (OpenDAL, RocksDB, I/O) in one place each,
//! so the mapping from "what went wrong underneath" to "what kind of failure
//! this is" can be audited.

use std::fmt;

/// Result alias used throughout streamstate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is. Match on this, not on messages.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A checkpoint, file or state that was asked for does not exist.
    NotFound,
    /// Bytes were read but do not decode (truncated file, bad framing).
    Corrupt,
    /// A file's checksum differs from the one its manifest recorded.
    ChecksumMismatch,
    /// A snapshot or manifest of a format version this build cannot read.
    IncompatibleVersion,
    /// A state was registered again with a different kind.
    IncompatibleState,
    /// The storage service failed (network, permissions, full disk, ...).
    Storage,
    /// A configuration value or URI is invalid.
    Config,
    /// A snapshot is larger than the configured maximum.
    StateTooLarge,
    /// The backend does not support the requested operation.
    Unsupported,
    /// A caller passed an argument that cannot be valid (key outside the
    /// backend's key-group range, empty name, ...).
    InvalidArgument,
    /// Serializing or deserializing a user value failed.
    Serialization,
}

impl ErrorKind {
    /// A stable, human-readable name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Corrupt => "Corrupt",
            ErrorKind::ChecksumMismatch => "ChecksumMismatch",
            ErrorKind::IncompatibleVersion => "IncompatibleVersion",
            ErrorKind::IncompatibleState => "IncompatibleState",
            ErrorKind::Storage => "Storage",
            ErrorKind::Config => "Config",
            ErrorKind::StateTooLarge => "StateTooLarge",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::Serialization => "Serialization",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The streamstate error: kind, message, context, optional source.
///
/// ```
/// use streamstate_api::{Error, ErrorKind};
/// let err = Error::new(ErrorKind::NotFound, "checkpoint has no _metadata")
///     .with_context("uri", "file:///tmp/chk")
///     .with_context("file", "job/chk-3/_metadata");
/// assert_eq!(err.kind(), ErrorKind::NotFound);
/// assert_eq!(err.context_value("file"), Some("job/chk-3/_metadata"));
/// assert!(err.to_string().contains("job/chk-3/_metadata"));
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Vec<(&'static str, String)>,
    temporary: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a message saying what failed.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            context: Vec::new(),
            temporary: false,
            source: None,
        }
    }

    /// Adds a `key: value` context entry (e.g. `"uri"`, `"file"`, `"state"`).
    #[must_use]
    pub fn with_context(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.context.push((key, value.into()));
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Marks the error as temporary: retrying the same operation may succeed.
    #[must_use]
    pub fn set_temporary(mut self, temporary: bool) -> Self {
        self.temporary = temporary;
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether a retry of the same operation may succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// All context entries, in the order they were added.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// The first context value recorded under `key`.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.context.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    /// A copy for handing one error to several receivers (a savepoint's
    /// caller and the job's failure, say). `Error` is not `Clone` because
    /// its source is any boxed error; the copy keeps kind, message, context
    /// and temporariness, and carries the source's text as a `cause`
    /// context entry.
    ///
    /// ```
    /// use streamstate_api::{Error, ErrorKind};
    /// let io = std::io::Error::new(std::io::ErrorKind::Other, "disk on fire");
    /// let err = Error::new(ErrorKind::Storage, "cannot write").with_context("file", "a.kgs").with_source(io);
    /// let copy = err.to_detached();
    /// assert_eq!(copy.kind(), ErrorKind::Storage);
    /// assert_eq!(copy.context_value("file"), Some("a.kgs"));
    /// assert_eq!(copy.context_value("cause"), Some("disk on fire"));
    /// ```
    #[must_use]
    pub fn to_detached(&self) -> Error {
        let mut copy = Error::new(self.kind, self.message.clone()).set_temporary(self.temporary);
        copy.context = self.context.clone();
        if let Some(source) = &self.source {
            copy.context.push(("cause", source.to_string()));
        }
        copy
    }

    // Shorthands for the kinds raised most often; they keep call sites short.

    /// A [`ErrorKind::Corrupt`] error.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    /// A [`ErrorKind::Config`] error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A [`ErrorKind::Unsupported`] error.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// A [`ErrorKind::InvalidArgument`] error.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}: {v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug prints the same single line as Display so `unwrap()` output
        // and test failures stay readable.
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<postcard::Error> for Error {
    fn from(err: postcard::Error) -> Self {
        Error::new(ErrorKind::Serialization, "postcard (de)serialization failed").with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_kind_message_context_and_source() {
        let io = std::io::Error::other("disk on fire");
        let err = Error::new(ErrorKind::Storage, "write failed")
            .with_context("uri", "file:///x")
            .with_source(io);
        assert_eq!(err.to_string(), "Storage: write failed (uri: file:///x): disk on fire");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn temporary_flag_round_trips() {
        let err = Error::new(ErrorKind::Storage, "timeout").set_temporary(true);
        assert!(err.is_temporary());
        assert!(!Error::config("x").is_temporary());
    }
}
