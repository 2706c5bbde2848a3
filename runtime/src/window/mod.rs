//! Windows on a keyed stream (Flink's `window(...)`): which windows a
//! record belongs to ([`WindowAssigner`]), in event or processing time,
//! and the keyed operator that keeps each window's contents in namespaced
//! state and emits them when a timer at the window's end fires
//! ([`WindowOperator`]).
//!
//! | module | job |
//! |---|---|
//! | `assigner` | [`TimeWindow`], [`WindowAssigner`], [`Windowing`], [`WindowResult`] |
//! | `function` | what a window keeps and emits: [`WindowFunction`], [`ProcessWindowFunction`], late data ([`WindowOrLate`]) |
//! | `operator` | the window operator, a keyed process function |
//! | `windowed_stream` | [`WindowedStream`]: `reduce`, `aggregate`, `process`, `side_output_late_data` |
//!
//! A window's state lives in the namespace of the window (Flink's
//! `TimeWindow` namespace) and is cleared when the window is purged, at
//! its end plus the allowed lateness, so state stays bounded on an
//! unbounded stream. Windows are aligned to the epoch as in Flink: a
//! tumbling window of size `s` holding time `t` starts at `t - t mod s`.

mod assigner;
mod function;
mod operator;
mod windowed_stream;

pub use assigner::{window_start, TimeWindow, WindowAssigner, WindowResult, WindowTime, Windowing};
pub use function::{
    Aggregated, ProcessWindowFunction, Processed, WindowContext, WindowFunction, WindowOrLate, WindowOutput,
    WithLateData, WINDOW_STATE,
};
pub use operator::{WindowOperator, SESSIONS_STATE};
pub use windowed_stream::{LateDataWindowedStream, WindowedStream};
