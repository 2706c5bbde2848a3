//! Builds the OpenDAL [`Operator`] for a checkpoint URI, with the retry,
//! timeout and concurrency layers every storage gets.

use std::time::Duration;

use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::Operator;

use super::{StorageOptions, StorageScheme, StorageUri};
use crate::{Error, ErrorKind, Result};

/// The operator for `uri`, layered as `options` says.
pub(super) fn layered_operator(uri: &StorageUri, options: &StorageOptions) -> Result<Operator> {
    let op = build_operator(uri, options)?;
    Ok(op
        .layer(
            TimeoutLayer::new()
                .with_timeout(options.operation_timeout)
                .with_io_timeout(options.io_timeout),
        )
        .layer(
            RetryLayer::new()
                .with_max_times(options.max_retries)
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(5))
                .with_jitter(),
        )
        .layer(ConcurrentLimitLayer::new(options.max_concurrency.max(1))))
}

fn build_operator(uri: &StorageUri, options: &StorageOptions) -> Result<Operator> {
    let map = |e: opendal::Error| Error::config("cannot configure storage").with_source(e);
    match uri.scheme {
        StorageScheme::Memory => Operator::new(opendal::services::Memory::default()).map_err(map),
        StorageScheme::File => {
            std::fs::create_dir_all(&uri.root).map_err(|e| {
                Error::new(ErrorKind::Storage, "cannot create the checkpoint directory")
                    .with_context("file", uri.root.clone())
                    .with_source(e)
            })?;
            Operator::new(opendal::services::Fs::default().root(&uri.root)).map_err(map)
        }
        #[cfg(feature = "s3")]
        StorageScheme::S3 => super::s3::build(uri, options),
        #[cfg(feature = "hdfs")]
        StorageScheme::Hdfs => {
            let authority = uri.authority.as_deref().unwrap_or_default();
            Operator::new(
                opendal::services::HdfsNative::default()
                    .name_node(&format!("hdfs://{authority}"))
                    .root(&uri.root),
            )
            .map_err(map)
        }
        #[allow(unreachable_patterns)]
        scheme => {
            let _ = options;
            Err(Error::config(format!(
                "{}:// storage is not compiled into this build; rebuild with `--features {}`",
                scheme.as_str(),
                scheme.as_str()
            )))
        }
    }
}
