//! Windows on a keyed stream (Flink's `window(...)`): which windows a
//! record belongs to ([`WindowAssigner`]), in event or processing time,
//! and the keyed operator that keeps each window's contents in namespaced
//! state and emits them when a timer at the window's end fires
//! ([`WindowOperator`]).
//!
//! | module | job |
//! |---|---|
//! | `assigner` | [`TimeWindow`], [`WindowAssigner`], [`Windowing`], [`WindowResult`] |
//! | `operator` | the window operator, a keyed process function |
//! | `windowed_stream` | [`WindowedStream`]: `reduce` and `aggregate` |
//!
//! A window's state lives in the namespace of the window (Flink's
//! `TimeWindow` namespace) and is cleared when the window is purged, at
//! its end plus the allowed lateness, so state stays bounded on an
//! unbounded stream. Windows are aligned to the epoch as in Flink: a
//! tumbling window of size `s` holding time `t` starts at `t - t mod s`.

mod assigner;
mod operator;
mod windowed_stream;

pub use assigner::{window_start, TimeWindow, WindowAssigner, WindowResult, WindowTime, Windowing};
pub use operator::{WindowOperator, WindowOutput, SESSIONS_STATE, WINDOW_STATE};
pub use windowed_stream::WindowedStream;
