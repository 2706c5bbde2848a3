//! Event time: timestamps of records and the watermarks that say how far
//! event time has come (Flink's `WatermarkStrategy`).
//!
//! A source subtask reads each record's timestamp with the strategy's
//! timestamp function and, every [`WatermarkStrategy::with_interval`]
//! (Flink's `pipeline.auto-watermark-interval`, 200 ms), sends its
//! watermark, the largest timestamp seen minus the allowed out-of-orderness
//! minus one, to every keyed subtask, after every record read before it.
//! A keyed subtask's watermark is the minimum over its inputs
//! (`InputWatermarks`); an input that ended no longer holds it back, and
//! the end of every input advances it to [`MAX_WATERMARK`], which fires
//! every event-time timer left. Across processes the same messages travel
//! through the cluster's exchange.
//!
//! ```
//! use std::time::Duration;
//! use streamstate_runtime::event_time::WatermarkStrategy;
//! // Lines "<epoch ms> <text>", up to 2 s out of order.
//! let strategy = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(2), |line: &(i64, String)| line.0);
//! assert_eq!(strategy.out_of_orderness_ms(), 2000);
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The watermark before any record: nothing is known yet.
pub const MIN_WATERMARK: i64 = i64::MIN;
/// The watermark at the end of a bounded input: every event time passed.
pub const MAX_WATERMARK: i64 = i64::MAX;

/// A record's event time in epoch milliseconds.
pub type TimestampOf<T> = Arc<dyn Fn(&T) -> i64 + Send + Sync>;

/// How records get timestamps and sources make watermarks.
pub struct WatermarkStrategy<T> {
    timestamp_of: TimestampOf<T>,
    out_of_orderness_ms: i64,
    interval: Duration,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        Self {
            timestamp_of: Arc::clone(&self.timestamp_of),
            out_of_orderness_ms: self.out_of_orderness_ms,
            interval: self.interval,
        }
    }
}

impl<T> std::fmt::Debug for WatermarkStrategy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkStrategy")
            .field("out_of_orderness_ms", &self.out_of_orderness_ms)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl<T> WatermarkStrategy<T> {
    /// Flink's `forBoundedOutOfOrderness`: records may arrive up to `max`
    /// later than records with larger timestamps; the watermark trails the
    /// largest timestamp seen by `max` (and one millisecond).
    pub fn for_bounded_out_of_orderness(
        max: Duration,
        timestamp_of: impl Fn(&T) -> i64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            timestamp_of: Arc::new(timestamp_of),
            out_of_orderness_ms: i64::try_from(max.as_millis()).unwrap_or(i64::MAX),
            interval: Duration::from_millis(200),
        }
    }

    /// Flink's `forMonotonousTimestamps`: timestamps never decrease.
    pub fn for_monotonous_timestamps(timestamp_of: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        Self::for_bounded_out_of_orderness(Duration::ZERO, timestamp_of)
    }

    /// How often a source sends its watermark on (Flink's
    /// `pipeline.auto-watermark-interval`; default 200 ms).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The allowed out-of-orderness in milliseconds.
    pub fn out_of_orderness_ms(&self) -> i64 {
        self.out_of_orderness_ms
    }

    /// The record's timestamp.
    pub fn timestamp_of(&self) -> &TimestampOf<T> {
        &self.timestamp_of
    }

    pub(crate) fn generator(&self) -> WatermarkGenerator<T> {
        WatermarkGenerator {
            strategy: self.clone(),
            max_timestamp: MIN_WATERMARK,
            emitted: MIN_WATERMARK,
            emitted_at: Instant::now(),
        }
    }
}

/// A source subtask's watermark: the largest timestamp seen so far, and
/// when the last watermark went out.
pub(crate) struct WatermarkGenerator<T> {
    strategy: WatermarkStrategy<T>,
    max_timestamp: i64,
    emitted: i64,
    emitted_at: Instant,
}

impl<T> WatermarkGenerator<T> {
    pub(crate) fn on_record(&mut self, record: &T) {
        self.max_timestamp = self.max_timestamp.max((self.strategy.timestamp_of)(record));
    }

    fn current(&self) -> i64 {
        if self.max_timestamp == MIN_WATERMARK {
            return MIN_WATERMARK;
        }
        self.max_timestamp
            .saturating_sub(self.strategy.out_of_orderness_ms)
            .saturating_sub(1)
    }

    /// Whether the interval has passed since the last watermark went out
    /// and the watermark has moved: the caller then sends what it buffered,
    /// then [`Self::emit`]'s watermark.
    pub(crate) fn due(&self) -> bool {
        self.current() > self.emitted && self.emitted_at.elapsed() >= self.strategy.interval
    }

    /// The watermark to send now, marked as sent.
    pub(crate) fn emit(&mut self) -> i64 {
        self.emitted = self.current();
        self.emitted_at = Instant::now();
        self.emitted
    }
}

/// A keyed subtask's watermark: the minimum of its inputs' watermarks, an
/// ended input counting as [`MAX_WATERMARK`].
#[derive(Debug)]
pub(crate) struct InputWatermarks {
    inputs: Vec<i64>,
    current: i64,
}

impl InputWatermarks {
    pub(crate) fn new(inputs: usize) -> Self {
        Self {
            inputs: vec![MIN_WATERMARK; inputs],
            current: MIN_WATERMARK,
        }
    }

    /// The subtask's watermark.
    pub(crate) fn current(&self) -> i64 {
        self.current
    }

    /// Input `input` reached `watermark` (a smaller one than before is
    /// ignored: watermarks never go back). Returns the subtask's new
    /// watermark when it advanced.
    pub(crate) fn advance(&mut self, input: usize, watermark: i64) -> Option<i64> {
        let slot = &mut self.inputs[input];
        *slot = (*slot).max(watermark);
        let combined = self.inputs.iter().copied().min().unwrap_or(MAX_WATERMARK);
        (combined > self.current).then(|| {
            self.current = combined;
            combined
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subtask_watermark_is_the_minimum_over_inputs_that_have_not_ended() {
        let mut w = InputWatermarks::new(3);
        assert_eq!(w.advance(0, 100), None, "two inputs still at the minimum");
        assert_eq!(w.advance(1, 50), None);
        assert_eq!(w.advance(2, 70), Some(50));
        assert_eq!(w.advance(1, 40), None, "watermarks never go back");
        assert_eq!(w.advance(1, 200), Some(70));
        // An ended input counts as the maximum.
        assert_eq!(w.advance(2, MAX_WATERMARK), Some(100));
        assert_eq!(w.advance(0, MAX_WATERMARK), Some(200));
        assert_eq!(w.advance(1, MAX_WATERMARK), Some(MAX_WATERMARK));
        assert_eq!(w.current(), MAX_WATERMARK);
    }

    #[test]
    fn a_source_watermark_trails_the_largest_timestamp_by_the_out_of_orderness() {
        let strategy = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(10), |t: &i64| *t)
            .with_interval(Duration::ZERO);
        let mut g = strategy.generator();
        assert!(!g.due(), "no record, no watermark");
        for t in [100, 90, 120, 110] {
            g.on_record(&t);
        }
        assert!(g.due());
        assert_eq!(g.emit(), 109);
        assert!(!g.due(), "nothing new since");
        g.on_record(&105);
        assert!(!g.due(), "an older record does not move it");
        g.on_record(&130);
        assert_eq!(g.emit(), 119);
    }
}
