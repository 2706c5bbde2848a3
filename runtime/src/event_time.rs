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
//! every event-time timer left. A source that reads nothing for
//! [`WatermarkStrategy::with_idleness`]'s timeout says it is idle, and its
//! keyed subtasks leave it out of the minimum until it reads again
//! (Flink's `withIdleness`). Across processes the same messages travel
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
    idle_timeout: Option<Duration>,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        Self {
            timestamp_of: Arc::clone(&self.timestamp_of),
            out_of_orderness_ms: self.out_of_orderness_ms,
            interval: self.interval,
            idle_timeout: self.idle_timeout,
        }
    }
}

impl<T> std::fmt::Debug for WatermarkStrategy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkStrategy")
            .field("out_of_orderness_ms", &self.out_of_orderness_ms)
            .field("interval", &self.interval)
            .field("idle_timeout", &self.idle_timeout)
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
            idle_timeout: None,
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

    /// Flink's `withIdleness`: a source subtask that reads no record for
    /// `timeout` is marked idle, and keyed subtasks take the minimum over
    /// their other inputs, so a quiet source does not hold event time back
    /// (without it, windows wait for it forever). It counts again from its
    /// next record; records it sends before its watermark catches up may be
    /// late.
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamstate_runtime::event_time::WatermarkStrategy;
    /// let strategy = WatermarkStrategy::for_monotonous_timestamps(|t: &i64| *t)
    ///     .with_idleness(Duration::from_secs(10));
    /// assert_eq!(strategy.idle_timeout(), Some(Duration::from_secs(10)));
    /// ```
    #[must_use]
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// After how long without records a source is idle, if ever.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
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
            records: 0,
            records_checked: 0,
            active_at: Instant::now(),
            idle: false,
            resumed: false,
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
    /// Records seen, and the count at the last idleness check: a change
    /// means the source was active since (cheaper than a clock read per
    /// record).
    records: u64,
    records_checked: u64,
    /// When the last idleness check saw new records.
    active_at: Instant,
    /// Whether the source said it is idle.
    idle: bool,
    /// A record came after the source said it is idle: its next watermark
    /// goes out at once, and marks it active downstream.
    resumed: bool,
}

impl<T> WatermarkGenerator<T> {
    pub(crate) fn on_record(&mut self, record: &T) {
        self.max_timestamp = self.max_timestamp.max((self.strategy.timestamp_of)(record));
        self.records += 1;
        if self.idle {
            self.idle = false;
            self.resumed = true;
        }
    }

    /// Whether the source just became idle: no record for the strategy's
    /// idle timeout. The caller then sends that it is idle.
    pub(crate) fn became_idle(&mut self) -> bool {
        let Some(timeout) = self.strategy.idle_timeout else {
            return false;
        };
        if self.records != self.records_checked {
            self.records_checked = self.records;
            self.active_at = Instant::now();
        }
        if self.idle || self.active_at.elapsed() < timeout {
            return false;
        }
        self.idle = true;
        true
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
        self.resumed || (self.current() > self.emitted && self.emitted_at.elapsed() >= self.strategy.interval)
    }

    /// The watermark to send now, marked as sent.
    pub(crate) fn emit(&mut self) -> i64 {
        self.resumed = false;
        self.emitted = self.current();
        self.emitted_at = Instant::now();
        self.emitted
    }
}

/// A keyed subtask's watermark: the minimum of its active inputs'
/// watermarks, an ended input counting as [`MAX_WATERMARK`] and an idle
/// one not at all.
#[derive(Debug)]
pub(crate) struct InputWatermarks {
    inputs: Vec<i64>,
    idle: Vec<bool>,
    current: i64,
}

impl InputWatermarks {
    pub(crate) fn new(inputs: usize) -> Self {
        Self {
            inputs: vec![MIN_WATERMARK; inputs],
            idle: vec![false; inputs],
            current: MIN_WATERMARK,
        }
    }

    /// The subtask's watermark.
    pub(crate) fn current(&self) -> i64 {
        self.current
    }

    /// Input `input` reached `watermark` (a smaller one than before is
    /// ignored: watermarks never go back) and is active. Returns the
    /// subtask's new watermark when it advanced.
    pub(crate) fn advance(&mut self, input: usize, watermark: i64) -> Option<i64> {
        let slot = &mut self.inputs[input];
        *slot = (*slot).max(watermark);
        self.idle[input] = false;
        self.combine()
    }

    /// Input `input` is idle: the minimum leaves it out until its next
    /// watermark. Returns the subtask's new watermark when it advanced.
    pub(crate) fn mark_idle(&mut self, input: usize) -> Option<i64> {
        self.idle[input] = true;
        self.combine()
    }

    /// The minimum over active inputs. When every input is idle, the
    /// largest of their watermarks (Flink's `StatusWatermarkValve` does
    /// the same): the input that went idle last may be ahead of the
    /// others, and nothing else would let its windows fire.
    fn combine(&mut self) -> Option<i64> {
        let active = (self.inputs.iter().zip(&self.idle))
            .filter(|(_, idle)| !**idle)
            .map(|(watermark, _)| *watermark)
            .min();
        let combined = active.or_else(|| self.inputs.iter().copied().max())?;
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
    fn an_idle_input_is_left_out_of_the_minimum_until_it_sends_again() {
        let mut w = InputWatermarks::new(2);
        assert_eq!(w.advance(0, 100), None, "input 1 holds it back");
        assert_eq!(w.mark_idle(1), Some(100));
        assert_eq!(w.advance(0, 150), Some(150));
        assert_eq!(w.mark_idle(0), None, "every input idle: the largest watermark, 150");
        assert_eq!(w.current(), 150);
        // Input 1 is back, behind: the watermark does not go back, and
        // waits for it.
        assert_eq!(w.advance(1, 120), None);
        assert_eq!(w.advance(0, 300), None, "input 0 is active again too");
        assert_eq!(w.advance(1, 200), Some(200));
        // The input that was never heard of goes idle last: the others'
        // watermark counts.
        let mut w = InputWatermarks::new(2);
        assert_eq!(w.advance(0, 100), None);
        assert_eq!(w.mark_idle(0), None, "input 1 is active, at the minimum");
        assert_eq!(w.mark_idle(1), Some(100), "every input idle: the largest watermark");
    }

    #[test]
    fn a_source_goes_idle_after_the_timeout_and_its_next_record_sends_a_watermark_at_once() {
        let strategy = WatermarkStrategy::for_monotonous_timestamps(|t: &i64| *t)
            .with_interval(Duration::from_secs(3600))
            .with_idleness(Duration::from_millis(30));
        let mut g = strategy.generator();
        g.on_record(&10);
        assert!(!g.became_idle(), "a record was just seen");
        std::thread::sleep(Duration::from_millis(40));
        assert!(g.became_idle());
        assert!(!g.became_idle(), "said once");
        assert!(!g.due(), "the interval has not passed");
        g.on_record(&20);
        assert!(g.due(), "a resumed source sends its watermark at once");
        assert_eq!(g.emit(), 19);
        assert!(!g.due());
        let never = WatermarkStrategy::for_monotonous_timestamps(|t: &i64| *t);
        let mut g = never.generator();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!g.became_idle(), "no idleness without with_idleness");
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
