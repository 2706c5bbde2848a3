//! Checkpoint URIs: which storage service, which root.
//!
//! Accepted forms:
//!
//! | form | service |
//! |---|---|
//! | `file:///abs/path`, `/abs/path`, `rel/path` | local file system |
//! | `memory://` or `memory://name` | process memory (Flink's JobManager storage) |
//! | `s3://bucket/prefix` | S3 or an S3-compatible server |
//! | `hdfs://namenode:port/path` | HDFS (pure-Rust client) |
//!
//! Anything else is a [`crate::ErrorKind::Config`] error that lists these.

use std::fmt;
use std::path::PathBuf;

use crate::{Error, Result};

/// The storage services a checkpoint URI can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageScheme {
    /// `memory://`
    Memory,
    /// `file://` or a plain path.
    File,
    /// `s3://`
    S3,
    /// `hdfs://`
    Hdfs,
}

impl StorageScheme {
    /// The URI scheme (`file`, `memory`, `s3`, `hdfs`).
    pub fn as_str(self) -> &'static str {
        match self {
            StorageScheme::Memory => "memory",
            StorageScheme::File => "file",
            StorageScheme::S3 => "s3",
            StorageScheme::Hdfs => "hdfs",
        }
    }
}

/// What the error for a bad URI lists.
pub const SUPPORTED_SCHEMES: &str =
    "file:///absolute/path (or a plain path), memory://, s3://bucket/prefix, hdfs://namenode:port/path";

/// A parsed checkpoint URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageUri {
    /// The service.
    pub scheme: StorageScheme,
    /// Bucket (s3) or `host:port` (hdfs); `None` for file and memory.
    pub authority: Option<String>,
    /// Root path inside the service: absolute for file, `/prefix/` style
    /// for the others (always starts and ends with `/`).
    pub root: String,
}

impl StorageUri {
    /// Parses a checkpoint URI or plain path.
    ///
    /// ```
    /// use streamstate_api::storage::{StorageUri, StorageScheme};
    /// let u = StorageUri::parse("s3://bucket/checkpoints").unwrap();
    /// assert_eq!(u.scheme, StorageScheme::S3);
    /// assert_eq!(u.authority.as_deref(), Some("bucket"));
    /// assert_eq!(u.root, "/checkpoints/");
    /// assert!(StorageUri::parse("ftp://x/y").is_err());
    /// ```
    ///
    /// # Errors
    /// [`crate::ErrorKind::Config`] naming the URI and listing the supported
    /// schemes.
    pub fn parse(uri: &str) -> Result<Self> {
        let shown = redact_uri(uri);
        let bad = |why: &str| {
            Error::config(format!(
                "invalid checkpoint URI {shown:?}: {why}; supported: {SUPPORTED_SCHEMES}"
            ))
            .with_context("uri", shown.clone())
        };
        if uri.trim().is_empty() {
            return Err(bad("it is empty"));
        }
        if uri.chars().any(|c| c.is_control()) {
            return Err(bad("it contains control characters"));
        }
        let Some((scheme, rest)) = uri.split_once("://") else {
            // A plain path, unless it looks like a mistyped URI (`s3:bucket`).
            if let Some((head, _)) = uri.split_once(':') {
                if !head.contains('/') {
                    return Err(bad("missing `//` after the scheme"));
                }
            }
            return Self::file(PathBuf::from(uri)).map_err(|e| bad(e.message()));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "memory" => Ok(Self {
                scheme: StorageScheme::Memory,
                authority: None,
                root: "/".to_owned(),
            }),
            "file" => {
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if !path.starts_with('/') {
                    return Err(bad("file URIs must be absolute, as in file:///path"));
                }
                Self::file(PathBuf::from(path)).map_err(|e| bad(e.message()))
            }
            scheme @ ("s3" | "hdfs") => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                if authority.is_empty() {
                    return Err(bad(if scheme == "s3" {
                        "the bucket is missing, as in s3://bucket/prefix"
                    } else {
                        "the namenode is missing, as in hdfs://namenode:8020/path"
                    }));
                }
                if scheme == "s3"
                    && !authority
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                {
                    return Err(bad("bucket names use lower-case letters, digits, `-` and `.`"));
                }
                if authority.contains('@') {
                    return Err(bad(
                        "credentials do not belong in the URI; use the config file or AWS_* variables",
                    ));
                }
                Ok(Self {
                    scheme: if scheme == "s3" {
                        StorageScheme::S3
                    } else {
                        StorageScheme::Hdfs
                    },
                    authority: Some(authority.to_owned()),
                    root: normalize_root(path).map_err(|why| bad(&why))?,
                })
            }
            other => Err(bad(&format!("unknown scheme `{other}`"))),
        }
    }

    fn file(path: PathBuf) -> Result<Self> {
        let absolute = std::path::absolute(&path)
            .map_err(|e| Error::config(format!("cannot make {} absolute: {e}", path.display())))?;
        let text = absolute
            .to_str()
            .ok_or_else(|| Error::config("path is not valid UTF-8"))?;
        Ok(Self {
            scheme: StorageScheme::File,
            authority: None,
            root: normalize_root(text).map_err(Error::config)?,
        })
    }

    /// The local directory of a `file` URI.
    pub fn local_path(&self) -> Option<PathBuf> {
        (self.scheme == StorageScheme::File).then(|| PathBuf::from(&self.root))
    }
}

/// `uri` with any `user:password@` part replaced by `***@`, for messages.
///
/// ```
/// assert_eq!(streamstate_api::storage::redact_uri("s3://AK:SK@bucket/x"), "s3://***@bucket/x");
/// ```
pub fn redact_uri(uri: &str) -> String {
    if let Some((scheme, rest)) = uri.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    uri.to_owned()
}

fn normalize_root(path: &str) -> std::result::Result<String, String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err("`..` is not allowed in a checkpoint path".to_owned());
    }
    if parts.is_empty() {
        return Ok("/".to_owned());
    }
    Ok(format!("/{}/", parts.join("/")))
}

impl fmt::Display for StorageUri {
    /// The canonical form (never contains credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            StorageScheme::File => write!(f, "file://{}", self.root.trim_end_matches('/')),
            StorageScheme::Memory => f.write_str("memory://"),
            StorageScheme::S3 | StorageScheme::Hdfs => write!(
                f,
                "{}://{}{}",
                self.scheme.as_str(),
                self.authority.as_deref().unwrap_or_default(),
                self.root.trim_end_matches('/')
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let f = StorageUri::parse("file:///tmp/x/").unwrap();
        assert_eq!((f.scheme, f.root.as_str()), (StorageScheme::File, "/tmp/x/"));
        assert_eq!(f.to_string(), "file:///tmp/x");
        let plain = StorageUri::parse("/var/chk").unwrap();
        assert_eq!(plain.root, "/var/chk/");
        let rel = StorageUri::parse("rel/dir").unwrap();
        assert!(rel.root.ends_with("/rel/dir/") && rel.root.starts_with('/'));
        let m = StorageUri::parse("memory://").unwrap();
        assert_eq!(m.scheme, StorageScheme::Memory);
        let h = StorageUri::parse("hdfs://127.0.0.1:9000/flink/chk").unwrap();
        assert_eq!(h.authority.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(h.to_string(), "hdfs://127.0.0.1:9000/flink/chk");
    }

    #[test]
    fn malformed_uris_are_config_errors_listing_schemes() {
        for bad in [
            "",
            "   ",
            "ftp://host/x",
            "file://relative/x",
            "s3://",
            "s3://Bad_Bucket/x",
            "s3://key:secret@bucket/x",
            "hdfs:///no-namenode",
            "s3:bucket",
            "file:///a/../b",
            "file:///a\0b",
        ] {
            let err = StorageUri::parse(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad:?}");
            assert!(err.to_string().contains("supported:"), "{err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }
}
