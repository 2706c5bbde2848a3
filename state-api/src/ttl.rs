//! State time-to-live (Flink's `StateTtlConfig`) and the clock it reads.
//!
//! A state with TTL stores each value (each list element, each map entry)
//! behind an 8-byte little-endian expiry timestamp in milliseconds. Expired
//! values are never returned (Flink's `NeverReturnExpired`) and are purged
//! when a snapshot is written, so they never reach storage. The encoding lives
//! here, in `state-api`, so every backend expires values the same way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Milliseconds since the Unix epoch, as seen by a [`Clock`].
pub type TimestampMs = u64;

/// Length of the expiry prefix in front of every TTL-wrapped value.
pub const TTL_PREFIX_LEN: usize = 8;

/// The time source for TTL. Inject a [`ManualClock`] in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> TimestampMs;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; for tests.
///
/// ```
/// use streamstate_api::ttl::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: TimestampMs) -> Self {
        Self(AtomicU64::new(start_ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to `now_ms`.
    pub fn set(&self, now_ms: TimestampMs) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> TimestampMs {
        self.0.load(Ordering::SeqCst)
    }
}

/// The default clock handed to backends.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// When the expiry timestamp of a value is refreshed (Flink's `UpdateType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TtlUpdateType {
    /// Refreshed when the value is created or written (Flink's default).
    #[default]
    OnCreateAndWrite,
    /// Also refreshed when the value is read.
    OnReadAndWrite,
}

/// Time-to-live of a state's values.
///
/// ```
/// use streamstate_api::ttl::TtlConfig;
/// use std::time::Duration;
/// let ttl = TtlConfig::new(Duration::from_secs(60));
/// assert_eq!(ttl.ttl_ms, 60_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlConfig {
    /// How long a value lives after its last refresh, in milliseconds.
    pub ttl_ms: u64,
    /// What refreshes it.
    pub update_type: TtlUpdateType,
}

impl TtlConfig {
    /// A TTL refreshed on create and write.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl_ms: ttl.as_millis() as u64,
            update_type: TtlUpdateType::OnCreateAndWrite,
        }
    }

    /// Sets what refreshes the TTL.
    #[must_use]
    pub fn with_update_type(mut self, update_type: TtlUpdateType) -> Self {
        self.update_type = update_type;
        self
    }

    /// The expiry timestamp of a value written at `now`.
    pub fn expiry_for(&self, now: TimestampMs) -> TimestampMs {
        now.saturating_add(self.ttl_ms)
    }
}

/// Appends `expires_at` and then `payload` to `out`.
pub fn wrap_into(expires_at: TimestampMs, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&expires_at.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits a TTL-wrapped value into its expiry timestamp and payload.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] when the value is shorter than the prefix.
pub fn unwrap(value: &[u8]) -> Result<(TimestampMs, &[u8])> {
    if value.len() < TTL_PREFIX_LEN {
        return Err(Error::corrupt(format!(
            "TTL value of {} bytes is shorter than its {TTL_PREFIX_LEN}-byte expiry prefix",
            value.len()
        )));
    }
    let (prefix, payload) = value.split_at(TTL_PREFIX_LEN);
    let mut ts = [0u8; TTL_PREFIX_LEN];
    ts.copy_from_slice(prefix);
    Ok((u64::from_le_bytes(ts), payload))
}

/// Whether a value that expires at `expires_at` is expired at `now`.
#[inline]
pub fn is_expired(expires_at: TimestampMs, now: TimestampMs) -> bool {
    expires_at <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_round_trip() {
        let mut buf = Vec::new();
        wrap_into(42, b"abc", &mut buf);
        assert_eq!(unwrap(&buf).unwrap(), (42, &b"abc"[..]));
        assert!(unwrap(b"short").is_err());
    }

    #[test]
    fn expiry_is_inclusive_at_the_deadline() {
        let ttl = TtlConfig::new(Duration::from_millis(10));
        let exp = ttl.expiry_for(100);
        assert!(!is_expired(exp, 109));
        assert!(is_expired(exp, 110));
    }
}
