//! Which windows there are: [`TimeWindow`], the [`WindowAssigner`] that
//! puts a record's time into windows, [`Windowing`] (assigner, clock,
//! allowed lateness) and what a window emits ([`WindowResult`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A window `[start, end)` in epoch milliseconds (Flink's `TimeWindow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after it.
    pub end: i64,
}

impl TimeWindow {
    /// Whether the windows overlap or touch, so that sessions merge
    /// (Flink's `TimeWindow.intersects`).
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The last millisecond in the window: when its timer fires.
    ///
    /// ```
    /// use streamstate_runtime::window::TimeWindow;
    /// assert_eq!(TimeWindow { start: 0, end: 5000 }.max_timestamp(), 4999);
    /// ```
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }
}

/// The start of the window of size `size` (and `offset`) holding
/// `timestamp`, as Flink's `TimeWindow.getWindowStartWithOffset`, for
/// negative timestamps too.
///
/// ```
/// use streamstate_runtime::window::window_start;
/// assert_eq!(window_start(12_345, 0, 5_000), 10_000);
/// assert_eq!(window_start(-1, 0, 5_000), -5_000);
/// ```
pub fn window_start(timestamp: i64, offset: i64, size: i64) -> i64 {
    timestamp - (timestamp - offset).rem_euclid(size)
}

/// Which clock windows follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowTime {
    /// Records' timestamps; windows fire when the watermark passes their
    /// end.
    EventTime,
    /// The wall clock when a record is processed; windows fire when the
    /// clock passes their end.
    ProcessingTime,
}

/// Which windows a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Back-to-back windows of one size (Flink's `TumblingEventTimeWindows`).
    Tumbling {
        /// Window length in milliseconds.
        size: i64,
    },
    /// Windows of `size` starting every `slide` (Flink's
    /// `SlidingEventTimeWindows`): a record is in `size / slide` of them.
    Sliding {
        /// Window length in milliseconds.
        size: i64,
        /// Milliseconds between window starts.
        slide: i64,
    },
    /// Per key, activity separated by gaps of at least `gap` (Flink's
    /// `EventTimeSessionWindows.withGap`): each record opens a window
    /// `[t, t + gap)`, and windows that overlap or touch merge.
    Session {
        /// The inactivity that ends a session, in milliseconds.
        gap: i64,
    },
}

impl WindowAssigner {
    /// Tumbling windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        Self::Tumbling { size: millis(size) }
    }

    /// Session windows ending after `gap` without records.
    pub fn session(gap: Duration) -> Self {
        Self::Session { gap: millis(gap) }
    }

    /// Whether windows merge (sessions).
    pub fn is_merging(&self) -> bool {
        matches!(self, Self::Session { .. })
    }

    /// Sliding windows of `size` every `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Self::Sliding {
            size: millis(size),
            slide: millis(slide),
        }
    }

    /// The windows holding `timestamp`, latest start first (as Flink
    /// assigns them).
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamstate_runtime::window::{TimeWindow, WindowAssigner};
    /// let sliding = WindowAssigner::sliding(Duration::from_secs(10), Duration::from_secs(5));
    /// assert_eq!(
    ///     sliding.assign(12_000),
    ///     vec![TimeWindow { start: 10_000, end: 20_000 }, TimeWindow { start: 5_000, end: 15_000 }]
    /// );
    /// ```
    pub fn assign(&self, timestamp: i64) -> Vec<TimeWindow> {
        match *self {
            Self::Tumbling { size } => {
                let start = window_start(timestamp, 0, size);
                vec![TimeWindow {
                    start,
                    end: start + size,
                }]
            }
            Self::Sliding { size, slide } => {
                let mut windows = Vec::with_capacity(usize::try_from(size / slide).unwrap_or(1));
                let mut start = window_start(timestamp, 0, slide);
                while start > timestamp - size {
                    windows.push(TimeWindow {
                        start,
                        end: start + size,
                    });
                    start -= slide;
                }
                windows
            }
            Self::Session { gap } => vec![TimeWindow {
                start: timestamp,
                end: timestamp.saturating_add(gap),
            }],
        }
    }

    pub(crate) fn check(&self) -> streamstate_api::Result<()> {
        let ok = match *self {
            Self::Tumbling { size } => size > 0,
            Self::Sliding { size, slide } => size > 0 && slide > 0,
            Self::Session { gap } => gap > 0,
        };
        if ok {
            Ok(())
        } else {
            Err(streamstate_api::Error::config(format!(
                "window sizes, slides and session gaps must be at least 1 ms: {self:?}"
            )))
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Everything that says which windows there are and when they end: the
/// assigner, the clock, and how long after its end a window still takes
/// late records (Flink's `allowedLateness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    /// Which windows a record belongs to.
    pub assigner: WindowAssigner,
    /// Which clock they follow.
    pub time: WindowTime,
    /// Milliseconds after a window's end during which late records still
    /// update it (each firing it again); event time only.
    pub allowed_lateness: i64,
}

impl Windowing {
    /// When a window's state is purged: its end plus the allowed lateness.
    pub fn cleanup_time(&self, window: &TimeWindow) -> i64 {
        match self.time {
            WindowTime::EventTime => window.max_timestamp().saturating_add(self.allowed_lateness),
            WindowTime::ProcessingTime => window.max_timestamp(),
        }
    }
}

/// What a window emits: the key, the window and the function's result.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowResult<K, O> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: TimeWindow,
    /// The window function's result over the window's records.
    pub value: O,
}

impl<K: std::fmt::Display, O: std::fmt::Display> crate::sink::FlinkDisplay for WindowResult<K, O> {
    fn fmt_flink(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "({},{}) [{}, {})",
            self.key, self.value, self.window.start, self.window.end
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_windows_are_aligned_to_the_epoch() {
        let tumbling = WindowAssigner::tumbling(Duration::from_secs(5));
        for (t, start) in [
            (0, 0),
            (4_999, 0),
            (5_000, 5_000),
            (-1, -5_000),
            (1_733_000_001_234, 1_733_000_000_000),
        ] {
            assert_eq!(
                tumbling.assign(t),
                vec![TimeWindow {
                    start,
                    end: start + 5_000
                }],
                "{t}"
            );
        }
    }

    #[test]
    fn a_record_is_in_size_over_slide_sliding_windows_each_holding_it() {
        let sliding = WindowAssigner::sliding(Duration::from_secs(3), Duration::from_secs(1));
        for t in [0i64, 1, 999, 1_000, 2_500, -700] {
            let windows = sliding.assign(t);
            assert_eq!(windows.len(), 3, "{t}");
            for w in windows {
                assert!(
                    w.start <= t && t < w.end && w.start.rem_euclid(1_000) == 0,
                    "{t} in {w:?}"
                );
            }
        }
        assert!(WindowAssigner::Sliding { size: 10, slide: 0 }.check().is_err());
    }
}
