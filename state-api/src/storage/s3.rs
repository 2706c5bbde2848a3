//! The `s3://` service: options from Flink's keys or the `AWS_*` variables.
//!
//! | Flink key | environment | meaning |
//! |---|---|---|
//! | `s3.endpoint` | `AWS_ENDPOINT_URL` | endpoint of an S3-compatible server |
//! | `s3.region` | `AWS_REGION`, `AWS_DEFAULT_REGION` | region (default `us-east-1`) |
//! | `s3.path.style.access` | | `true` (default) for path-style requests |
//! | `s3.access-key` | `AWS_ACCESS_KEY_ID` | access key |
//! | `s3.secret-key` | `AWS_SECRET_ACCESS_KEY` | secret key, never printed |
//!
//! Keys in the options win over the environment. The cloud metadata address
//! is never asked for credentials unless `s3.ec2-metadata` is `true`, so a
//! missing credential fails fast instead of waiting on a network timeout.

use opendal::Operator;

use super::{StorageOptions, StorageUri};
use crate::{Error, Result};

fn option(options: &StorageOptions, key: &str, env: &[&str]) -> Option<String> {
    options
        .service_options
        .get(key)
        .cloned()
        .or_else(|| env.iter().find_map(|var| std::env::var(var).ok()))
        .filter(|v| !v.is_empty())
}

pub(super) fn build(uri: &StorageUri, options: &StorageOptions) -> Result<Operator> {
    // OpenDAL needs a process-wide HTTP transport; installing it twice is a
    // no-op.
    opendal::install_default();
    let bucket = uri.authority.as_deref().unwrap_or_default();
    let mut builder = opendal::services::S3::default()
        .bucket(bucket)
        .root(&uri.root)
        .region(
            &option(options, "s3.region", &["AWS_REGION", "AWS_DEFAULT_REGION"]).unwrap_or_else(|| "us-east-1".into()),
        )
        .disable_config_load();
    if let Some(endpoint) = option(options, "s3.endpoint", &["AWS_ENDPOINT_URL"]) {
        builder = builder.endpoint(&endpoint);
    }
    if option(options, "s3.path.style.access", &[]).is_some_and(|v| v.eq_ignore_ascii_case("false")) {
        builder = builder.enable_virtual_host_style();
    }
    if let Some(key) = option(options, "s3.access-key", &["AWS_ACCESS_KEY_ID"]) {
        builder = builder.access_key_id(&key);
    }
    if let Some(secret) = option(options, "s3.secret-key", &["AWS_SECRET_ACCESS_KEY"]) {
        builder = builder.secret_access_key(&secret);
    }
    if !option(options, "s3.ec2-metadata", &[]).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        builder = builder.disable_ec2_metadata();
    }
    // The builder's error may echo configuration; keep only its kind.
    Operator::new(builder).map_err(|e| Error::config(format!("cannot configure s3://{bucket}: {}", e.kind())))
}
