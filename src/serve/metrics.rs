//! Prometheus metrics of `wms-serve` (served on the metrics listener, `GET /metrics`). Names are
//! the contract with dashboards and alerts in `infra/monitoring`; change them only together.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::state::SharedState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub model: String,
    pub version: String,
    /// HTTP status code of the response, e.g. "200", "400", "503".
    pub status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// All metrics, registered once.
pub struct Metrics {
    registry: Registry,
    pub inference_total: Family<StatusLabels, Counter>,
    pub latency_seconds: HistogramFamily<ModelLabels>,
    pub queue_seconds: HistogramFamily<ModelLabels>,
    pub compute_seconds: HistogramFamily<ModelLabels>,
    pub batch_size: HistogramFamily<ModelLabels>,
    pub model_loaded: Family<ModelLabels, Gauge>,
    pub inflight: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn batch_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let inference_total = Family::<StatusLabels, Counter>::default();
        let latency_seconds: HistogramFamily<ModelLabels> =
            Family::new_with_constructor(latency_histogram);
        let queue_seconds: HistogramFamily<ModelLabels> =
            Family::new_with_constructor(latency_histogram);
        let compute_seconds: HistogramFamily<ModelLabels> =
            Family::new_with_constructor(latency_histogram);
        let batch_size: HistogramFamily<ModelLabels> =
            Family::new_with_constructor(batch_histogram);
        let model_loaded = Family::<ModelLabels, Gauge>::default();
        let inflight = Gauge::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "wms_inference",
            "Inference requests by response status",
            inference_total.clone(),
        );
        registry.register(
            "wms_inference_latency_seconds",
            "Time from request arrival to response, successful predictions",
            latency_seconds.clone(),
        );
        registry.register(
            "wms_inference_queue_seconds",
            "Time a preprocessed request waited for its batch to start",
            queue_seconds.clone(),
        );
        registry.register(
            "wms_inference_compute_seconds",
            "ONNX Runtime time of one batch's forward pass",
            compute_seconds.clone(),
        );
        registry.register(
            "wms_inference_batch_size",
            "Requests per ONNX Runtime run",
            batch_size.clone(),
        );
        registry.register(
            "wms_model_loaded",
            "1 when the model is loaded and warmed up",
            model_loaded.clone(),
        );
        registry.register(
            "wms_inflight_requests",
            "Prediction requests being processed",
            inflight.clone(),
        );
        Metrics {
            registry,
            inference_total,
            latency_seconds,
            queue_seconds,
            compute_seconds,
            batch_size,
            model_loaded,
            inflight,
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the in-flight gauge when the request ends, however it ends.
pub struct InflightGuard(Gauge);

impl InflightGuard {
    pub fn new(g: &Gauge) -> Self {
        g.inc();
        InflightGuard(g.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The metrics API (TorchServe serves it on its own port, 8082).
pub fn app(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
