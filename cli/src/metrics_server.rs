//! `--metrics-addr HOST:PORT`: the job's counters in Prometheus text format
//! at `/metrics` (Flink's Prometheus reporter serves port 9249), rendered
//! by the Prometheus org's client and served by hyper on a thread of its
//! own, so scraping never touches a task thread.
//!
//! Checkpoint series move in the process that commits checkpoints (the
//! only one of a local job, process 0 of a cluster); record series count
//! this process's keyed subtasks, and `task_records_in`/`_out` each
//! subtask (labels `operator`, `subtask`). Every series carries a `process`
//! label.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use streamstate_runtime::JobMetrics;

/// The running endpoint; it serves until the process exits.
pub struct MetricsServer {
    /// Where it listens (the port the OS chose for `:0`).
    pub address: std::net::SocketAddr,
}

/// Starts serving `metrics` at `address` (`HOST:PORT`).
///
/// # Errors
/// The address does not parse or cannot be bound, named.
pub fn serve(address: &str, metrics: Arc<JobMetrics>, process: usize) -> Result<MetricsServer> {
    let listener =
        std::net::TcpListener::bind(address).with_context(|| format!("cannot serve metrics on {address}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the metrics endpoint's runtime")?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept(listener, metrics, process)))
        .context("cannot start the metrics endpoint's thread")?;
    tracing::info!(address = %bound, "serving metrics at /metrics");
    Ok(MetricsServer { address: bound })
}

async fn accept(listener: std::net::TcpListener, metrics: Arc<JobMetrics>, process: usize) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(request.uri().path(), &metrics, process);
                async move { Ok::<_, Infallible>(response) }
            });
            // A scraper that hangs up early is its own business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(path: &str, metrics: &JobMetrics, process: usize) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => match render(metrics, process) {
            Ok(text) => (StatusCode::OK, prometheus_text::CONTENT_TYPE, text),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The exposition of `metrics` now.
fn render(metrics: &JobMetrics, process: usize) -> Result<String> {
    let labels = [(Cow::Borrowed("process"), Cow::Owned(process.to_string()))];
    let mut registry = Registry::with_prefix_and_labels("streamstate", labels.into_iter());
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    registry.register(
        "records_in",
        "Records the keyed operators processed",
        ConstCounter::new(load(&metrics.records)),
    );
    registry.register(
        "records_out",
        "Records the keyed operators emitted",
        ConstCounter::new(load(&metrics.records_out)),
    );
    registry.register(
        "partial_sums_in",
        "Partial sums the keyed operators folded in place of records",
        ConstCounter::new(load(&metrics.partial_sums)),
    );
    registry.register(
        "late_records_dropped",
        "Records dropped because every window they belong to had closed (Flink's numLateRecordsDropped)",
        ConstCounter::new(load(&metrics.late_records)),
    );
    registry.register(
        "checkpoints_completed",
        "Checkpoints and savepoints completed",
        ConstCounter::new(load(&metrics.checkpoints_completed)),
    );
    registry.register(
        "checkpoints_failed",
        "Checkpoints that expired or were declined",
        ConstCounter::new(load(&metrics.checkpoints_failed)),
    );
    registry.register(
        "last_checkpoint_id",
        "Id of the last completed checkpoint (0: none)",
        ConstGauge::new(load(&metrics.last_checkpoint_id) as i64),
    );
    registry.register(
        "last_checkpoint_duration_seconds",
        "Duration of the last completed checkpoint",
        ConstGauge::new(load(&metrics.last_checkpoint_ms) as f64 / 1000.0),
    );
    registry.register(
        "last_checkpoint_size_bytes",
        "Full size of the last completed checkpoint",
        ConstGauge::new(load(&metrics.last_checkpoint_bytes) as i64),
    );
    let uploaded = metrics
        .completed
        .lock()
        .ok()
        .and_then(|c| c.back().map(|last| last.stats.uploaded_bytes))
        .unwrap_or(0);
    registry.register(
        "last_checkpoint_uploaded_bytes",
        "Bytes the last completed checkpoint uploaded (less than its size when incremental)",
        ConstGauge::new(uploaded as i64),
    );
    registry.register(
        "restore_duration_seconds",
        "How long the restore at start took (0: none)",
        ConstGauge::new(load(&metrics.restore_ms) as f64 / 1000.0),
    );
    registry.register(
        "network_sent_bytes",
        "Bytes this process sent to its peers (0 in one process)",
        ConstCounter::new(load(&metrics.network_bytes_sent)),
    );
    let (read, total) = metrics.input_progress.lock().ok().and_then(|p| *p).unwrap_or((0, 0));
    registry.register(
        "input_read_bytes",
        "Bytes of the input file read by the last reporting source",
        ConstGauge::new(read as i64),
    );
    registry.register(
        "input_size_bytes",
        "Size of the input file",
        ConstGauge::new(total as i64),
    );
    // Per subtask, as Flink's numRecordsIn/numRecordsOut per task.
    let task_in = Family::<[(&'static str, String); 2], Counter>::default();
    let task_out = Family::<[(&'static str, String); 2], Counter>::default();
    for (operator, subtask, records_in, records_out) in metrics.task_counts() {
        let labels = [("operator", operator), ("subtask", subtask.to_string())];
        task_in.get_or_create(&labels).inc_by(records_in);
        task_out.get_or_create(&labels).inc_by(records_out);
    }
    let entries = Family::<[(&'static str, String); 1], Gauge>::default();
    for (subtask, count) in metrics.state_entries(streamstate_runtime::plan::KEYED_OPERATOR) {
        entries
            .get_or_create(&[("subtask", subtask.to_string())])
            .set(count as i64);
    }
    let watermarks = Family::<[(&'static str, String); 1], Gauge>::default();
    for (subtask, watermark) in metrics.watermarks(streamstate_runtime::plan::KEYED_OPERATOR) {
        watermarks
            .get_or_create(&[("subtask", subtask.to_string())])
            .set(watermark);
    }
    registry.register(
        "watermark_milliseconds",
        "A keyed subtask's event-time watermark, epoch milliseconds (Flink's currentInputWatermark)",
        watermarks,
    );
    registry.register(
        "state_entries",
        "Entries in a keyed subtask's state at its last checkpoint (RocksDB: its estimate)",
        entries,
    );
    registry.register(
        "task_records_in",
        "Records and partial sums a subtask received",
        task_in,
    );
    registry.register(
        "task_records_out",
        "Records and partial sums a subtask sent on or emitted",
        task_out,
    );
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry).context("cannot encode the metrics")?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_series_with_its_value() {
        let metrics = JobMetrics::default();
        metrics.records.store(42, Ordering::Relaxed);
        metrics.last_checkpoint_ms.store(1500, Ordering::Relaxed);
        metrics.task("keyed", 1).records_in.store(7, Ordering::Relaxed);
        metrics.task("source", 0).records_out.store(9, Ordering::Relaxed);
        metrics.task("keyed", 1).state_entries.store(11, Ordering::Relaxed);
        metrics
            .task("keyed", 1)
            .watermark
            .store(1_733_000_000_000, Ordering::Relaxed);
        metrics.late_records.store(4, Ordering::Relaxed);
        let text = render(&metrics, 3).unwrap();
        assert!(
            text.contains("streamstate_task_records_in_total{process=\"3\",operator=\"keyed\",subtask=\"1\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("streamstate_task_records_out_total{process=\"3\",operator=\"source\",subtask=\"0\"} 9\n"),
            "{text}"
        );
        assert!(
            text.contains("streamstate_state_entries{process=\"3\",subtask=\"1\"} 11\n"),
            "{text}"
        );
        assert!(
            text.contains("streamstate_watermark_milliseconds{process=\"3\",subtask=\"1\"} 1733000000000\n"),
            "{text}"
        );
        assert!(
            text.contains("streamstate_late_records_dropped_total{process=\"3\"} 4\n"),
            "{text}"
        );
        assert!(
            !text.contains("streamstate_watermark_milliseconds{process=\"3\",subtask=\"0\"}"),
            "no watermark before any: {text}"
        );
        assert!(
            text.contains("streamstate_records_in_total{process=\"3\"} 42\n"),
            "{text}"
        );
        assert!(
            text.contains("streamstate_last_checkpoint_duration_seconds{process=\"3\"} 1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE streamstate_checkpoints_failed_total counter"),
            "{text}"
        );
    }
}
