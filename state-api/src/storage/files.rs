//! [`AsyncCheckpointStorage`] and its file operations: whole-file and
//! chunked writes, atomic writes, verified reads, listing and deletes, each
//! error naming the URI and file.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use opendal::{EntryMode, Operator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::options::{FILE_READ_BYTES, FILE_WRITE_CONCURRENCY, WRITE_CHUNK_BYTES, WRITE_CONCURRENCY};
use super::{operator, StorageOptions, StorageScheme, StorageUri};
use crate::handle::FileRef;
use crate::{Error, ErrorKind, Result};

/// Checkpoint storage on one OpenDAL operator, async: the core that
/// [`crate::CheckpointStorage`] (blocking) wraps. Cheap to clone; clones
/// share the operator (and so, for `memory://`, the stored data).
///
/// Call it from any Tokio runtime with I/O and time enabled.
///
/// ```
/// use streamstate_api::storage::AsyncCheckpointStorage;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let storage = AsyncCheckpointStorage::open(dir.path().to_str().unwrap()).unwrap();
/// let file = storage.write("job/chk-1/a", b"hello".to_vec()).await.unwrap();
/// assert_eq!(storage.read_verified(&file).await.unwrap(), b"hello");
/// # });
/// ```
#[derive(Clone)]
pub struct AsyncCheckpointStorage {
    inner: Arc<Inner>,
}

struct Inner {
    uri: StorageUri,
    display: String,
    op: Operator,
}

impl std::fmt::Debug for AsyncCheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncCheckpointStorage")
            .field("uri", &self.inner.display)
            .finish()
    }
}

impl AsyncCheckpointStorage {
    /// Opens the checkpoint directory `uri` with default options. Nothing
    /// is read or written yet.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a malformed URI or a scheme this build was
    /// compiled without.
    pub fn open(uri: &str) -> Result<Self> {
        Self::open_with(uri, &StorageOptions::default())
    }

    /// Opens `uri` with explicit options.
    ///
    /// # Errors
    /// As [`AsyncCheckpointStorage::open`].
    pub fn open_with(uri: &str, options: &StorageOptions) -> Result<Self> {
        let parsed = StorageUri::parse(uri)?;
        let display = parsed.to_string();
        let op = operator::layered_operator(&parsed, options).map_err(|e| e.with_context("uri", display.clone()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                uri: parsed,
                display,
                op,
            }),
        })
    }

    /// The checkpoint directory's URI (never holds credentials).
    pub fn uri(&self) -> &str {
        &self.inner.display
    }

    /// The parsed URI.
    pub fn storage_uri(&self) -> &StorageUri {
        &self.inner.uri
    }

    fn op(&self) -> &Operator {
        &self.inner.op
    }

    pub(super) fn storage_error(&self, what: &str, path: &str, err: opendal::Error) -> Error {
        let kind = match err.kind() {
            opendal::ErrorKind::NotFound => ErrorKind::NotFound,
            opendal::ErrorKind::Unsupported => ErrorKind::Unsupported,
            opendal::ErrorKind::ConfigInvalid => ErrorKind::Config,
            _ => ErrorKind::Storage,
        };
        let temporary = err.is_temporary();
        Error::new(kind, format!("{what} failed"))
            .with_context("uri", self.inner.display.clone())
            .with_context("file", path.to_owned())
            .set_temporary(temporary)
            .with_source(err)
    }

    /// Writes a whole file and returns its [`FileRef`] (size and CRC-32C).
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI and file.
    pub async fn write(&self, path: &str, bytes: Vec<u8>) -> Result<FileRef> {
        let file = FileRef {
            path: path.to_owned(),
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
        };
        // Large files go up in parts, a few at a time (multipart on S3).
        self.op()
            .write_with(path, bytes)
            .chunk(WRITE_CHUNK_BYTES)
            .concurrent(WRITE_CONCURRENCY)
            .await
            .map_err(|e| self.storage_error("write", path, e))?;
        Ok(file)
    }

    /// Writes the local file at `local` to `path`, reading it a MiB at a
    /// time and uploading it in parts, and returns its [`FileRef`]: a file
    /// of any size costs a few parts of memory (RocksDB's SSTs reach
    /// 64 MiB), not its size.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the local file when it cannot be read,
    /// or the URI and file when the upload fails (the partial upload is
    /// aborted).
    pub async fn write_from_file(&self, path: &str, local: &Path) -> Result<FileRef> {
        let local_error = |e: std::io::Error| {
            Error::new(ErrorKind::Storage, "reading a local file failed")
                .with_context("file", local.display().to_string())
                .with_source(e)
        };
        let mut source = tokio::fs::File::open(local).await.map_err(local_error)?;
        let mut writer = self
            .op()
            .writer_with(path)
            .chunk(self.file_part_bytes())
            .concurrent(FILE_WRITE_CONCURRENCY)
            .await
            .map_err(|e| self.storage_error("write", path, e))?;
        let (mut size, mut crc32c) = (0u64, 0u32);
        // Read in small pieces: the writer gathers them into upload parts.
        let mut part = vec![0u8; FILE_READ_BYTES];
        let uploaded = loop {
            let mut filled = 0;
            while filled < part.len() {
                match source.read(&mut part[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(local_error(e));
                    }
                }
            }
            if filled == 0 {
                break writer.close().await.map(|_| ());
            }
            size += filled as u64;
            crc32c = crc32c::crc32c_append(crc32c, &part[..filled]);
            if let Err(e) = writer.write(part[..filled].to_vec()).await {
                break Err(e);
            }
        };
        if let Err(e) = uploaded {
            let _ = writer.abort().await;
            return Err(self.storage_error("write", path, e));
        }
        Ok(FileRef {
            path: path.to_owned(),
            size,
            crc32c,
        })
    }

    /// The part size of [`AsyncCheckpointStorage::write_from_file`]: S3's
    /// multipart uploads need parts of at least 5 MiB; other services
    /// stream, so a part only costs memory there.
    fn file_part_bytes(&self) -> usize {
        match self.storage_uri().scheme {
            StorageScheme::S3 => WRITE_CHUNK_BYTES,
            StorageScheme::File | StorageScheme::Hdfs | StorageScheme::Memory => FILE_READ_BYTES,
        }
    }

    /// Writes a file so that readers see either nothing or all of it: a
    /// temporary name then a rename where the service can rename (and the
    /// parent directory synced on local disks), a single PUT elsewhere.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the URI and file.
    pub async fn write_atomic(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        if !self.op().info().capability().rename {
            self.write(path, bytes).await?;
            return Ok(());
        }
        let temp = format!("{path}.inprogress");
        self.write(&temp, bytes).await?;
        self.op()
            .rename(&temp, path)
            .await
            .map_err(|e| self.storage_error("rename", path, e))?;
        if let Some(local_root) = self.inner.uri.local_path() {
            let full = local_root.join(path);
            if let Some(parent) = full.parent() {
                let synced = match tokio::fs::File::open(parent).await {
                    Ok(dir) => dir.sync_all().await,
                    Err(e) => Err(e),
                };
                synced.map_err(|e| {
                    Error::new(ErrorKind::Storage, "syncing the directory failed")
                        .with_context("uri", self.inner.display.clone())
                        .with_context("file", path.to_owned())
                        .with_source(e)
                })?;
            }
        }
        Ok(())
    }

    /// Reads a whole file.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] or [`ErrorKind::Storage`] naming the file.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.op()
            .read(path)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.storage_error("read", path, e))
    }

    /// Reads a byte range of a file.
    ///
    /// # Errors
    /// As [`AsyncCheckpointStorage::read`]; [`ErrorKind::Corrupt`] when the
    /// file is shorter than the range.
    pub async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let wanted = range.end.saturating_sub(range.start);
        let bytes = self
            .op()
            .read_with(path)
            .range(range.clone())
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.storage_error("read", path, e))?;
        if bytes.len() as u64 != wanted {
            return Err(Error::corrupt(format!(
                "read {} bytes at {}..{}, expected {wanted} (file truncated?)",
                bytes.len(),
                range.start,
                range.end
            ))
            .with_context("file", path.to_owned()));
        }
        Ok(bytes)
    }

    /// Reads a file and checks its size and CRC-32C against `file`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a missing file, [`ErrorKind::ChecksumMismatch`]
    /// for a changed or truncated one, naming the file.
    pub async fn read_verified(&self, file: &FileRef) -> Result<Vec<u8>> {
        let bytes = self.read(&file.path).await?;
        let actual = crc32c::crc32c(&bytes);
        if bytes.len() as u64 != file.size || actual != file.crc32c {
            return Err(self.checksum_mismatch(file, bytes.len() as u64, Some(actual)));
        }
        Ok(bytes)
    }

    /// Reads a file into the local file `local` a part at a time (a file of
    /// any size costs one part of memory) and checks its size and CRC-32C
    /// against `file`.
    ///
    /// # Errors
    /// As [`AsyncCheckpointStorage::read_verified`]; [`ErrorKind::Storage`]
    /// naming `local` when it cannot be written. `local` may hold part of
    /// the file after an error.
    pub async fn read_verified_into(&self, file: &FileRef, local: &Path) -> Result<()> {
        let actual_size = self.stat_len(&file.path).await?;
        if actual_size != file.size {
            return Err(self.checksum_mismatch(file, actual_size, None));
        }
        let local_error = |e: std::io::Error| {
            Error::new(ErrorKind::Storage, "writing a local file failed")
                .with_context("file", local.display().to_string())
                .with_source(e)
        };
        let mut out = tokio::fs::File::create(local).await.map_err(local_error)?;
        let mut crc32c = 0u32;
        let mut offset = 0u64;
        while offset < file.size {
            let end = file.size.min(offset + WRITE_CHUNK_BYTES as u64);
            let part = self.read_range(&file.path, offset..end).await?;
            crc32c = crc32c::crc32c_append(crc32c, &part);
            out.write_all(&part).await.map_err(local_error)?;
            offset = end;
        }
        out.flush().await.map_err(local_error)?;
        if crc32c != file.crc32c {
            return Err(self.checksum_mismatch(file, file.size, Some(crc32c)));
        }
        Ok(())
    }

    fn checksum_mismatch(&self, file: &FileRef, actual_size: u64, actual_crc32c: Option<u32>) -> Error {
        let actual = match actual_crc32c {
            Some(crc) => format!("{actual_size} bytes with CRC-32C {crc:08x}"),
            None => format!("{actual_size} bytes"),
        };
        Error::new(
            ErrorKind::ChecksumMismatch,
            format!(
                "file has {actual}; the manifest recorded {} bytes with {:08x}",
                file.size, file.crc32c
            ),
        )
        .with_context("uri", self.inner.display.clone())
        .with_context("file", file.path.clone())
    }

    /// The size of a file.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] or [`ErrorKind::Storage`] naming the file.
    pub async fn stat_len(&self, path: &str) -> Result<u64> {
        self.op()
            .stat(path)
            .await
            .map(|m| m.content_length())
            .map_err(|e| self.storage_error("stat", path, e))
    }

    /// Whether a file exists.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] when the service cannot tell.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        self.op()
            .exists(path)
            .await
            .map_err(|e| self.storage_error("exists", path, e))
    }

    /// Names of the direct subdirectories of `dir` (which ends with `/`, or
    /// is empty for the root), without trailing `/`, sorted.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the directory.
    pub async fn list_dirs(&self, dir: &str) -> Result<Vec<String>> {
        self.list_children(dir, EntryMode::DIR).await
    }

    /// Names of the files directly in `dir`, sorted.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the directory.
    pub async fn list_files(&self, dir: &str) -> Result<Vec<String>> {
        self.list_children(dir, EntryMode::FILE).await
    }

    async fn list_children(&self, dir: &str, mode: EntryMode) -> Result<Vec<String>> {
        let path = if dir.is_empty() { "/" } else { dir };
        let entries = match self.op().list(path).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.storage_error("list", dir, e)),
        };
        let prefix = dir.trim_start_matches('/');
        let mut names: Vec<String> = entries
            .iter()
            .filter(|e| e.metadata().mode() == mode)
            .map(|e| e.path().trim_start_matches('/'))
            .filter(|p| *p != prefix)
            .filter_map(|p| p.strip_prefix(prefix))
            .map(|p| p.trim_end_matches('/').to_owned())
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Deletes one file (absent files are fine).
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the file.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.op()
            .delete(path)
            .await
            .map_err(|e| self.storage_error("delete", path, e))
    }

    /// Deletes a directory and everything under it.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the directory.
    pub async fn delete_dir(&self, dir: &str) -> Result<()> {
        let dir = if dir.ends_with('/') {
            dir.to_owned()
        } else {
            format!("{dir}/")
        };
        self.op()
            .delete_with(&dir)
            .recursive(true)
            .await
            .map_err(|e| self.storage_error("delete", &dir, e))
    }
}
