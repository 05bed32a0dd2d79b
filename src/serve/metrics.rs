//! Prometheus metrics of `wms-serve` (served on the metrics listener, `GET /metrics`). Names are
//! the contract with the dashboard and alerts in `infra/helm/monitoring` (tested against a real
//! Prometheus in `tests/it/monitoring.rs`); change them only together.
//!
//! Besides traffic and latency, two model-drift signals per version, observed on every successful
//! prediction from values the request path computes anyway: the photo's mean brightness and the
//! share of the mask predicted foreground. A model whose masks suddenly cover nothing (or half the
//! photo), or a camera fleet whose photos got darker, shows up here while latency looks fine.
//! This module must not compute anything from pixels itself: callers hand it the numbers.

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

/// Labels of `wms_model_precision_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrecisionLabels {
    pub model: String,
    pub version: String,
    /// `fp32` or `int8`.
    pub precision: String,
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
    pub input_brightness: HistogramFamily<ModelLabels>,
    pub mask_coverage: HistogramFamily<ModelLabels>,
    pub model_loaded: Family<ModelLabels, Gauge>,
    pub model_precision: Family<PrecisionLabels, Gauge>,
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

/// Mean brightness, 0 (black) to 1 (white), in twentieths: photos of meters sit in the middle,
/// and a drift of a twentieth is already visible in the distribution.
fn brightness_histogram() -> Histogram {
    Histogram::new((1..=20).map(|i| f64::from(i) / 20.0))
}

/// Foreground share of a mask. A meter's digit window is a few percent of the photo, so the
/// low end is finely bucketed; 0 % and ≥ 40 % are the failure modes the drift alert names.
const COVERAGE_BUCKETS: [f64; 14] = [
    0.0, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.4, 0.6,
];

fn coverage_histogram() -> Histogram {
    Histogram::new(COVERAGE_BUCKETS)
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
        let input_brightness: HistogramFamily<ModelLabels> =
            Family::new_with_constructor(brightness_histogram);
        let mask_coverage: HistogramFamily<ModelLabels> =
            Family::new_with_constructor(coverage_histogram);
        let model_loaded = Family::<ModelLabels, Gauge>::default();
        let model_precision = Family::<PrecisionLabels, Gauge>::default();
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
            "wms_input_brightness",
            "Mean brightness of the request's photo (mean of its 8-bit RGB values / 255), successful predictions",
            input_brightness.clone(),
        );
        registry.register(
            "wms_mask_coverage",
            "Fraction of the predicted mask's pixels that are foreground, successful predictions",
            mask_coverage.clone(),
        );
        registry.register(
            "wms_model_loaded",
            "1 when the model is loaded and warmed up",
            model_loaded.clone(),
        );
        registry.register(
            "wms_model_precision_info",
            "1 for the numeric precision (fp32, int8) of each loaded model",
            model_precision.clone(),
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
            input_brightness,
            mask_coverage,
            model_loaded,
            model_precision,
            inflight,
        }
    }

    /// Records the drift signals of one successful prediction.
    pub fn observe_prediction(&self, labels: &ModelLabels, brightness: f64, coverage: f64) {
        self.input_brightness
            .get_or_create(labels)
            .observe(brightness);
        self.mask_coverage.get_or_create(labels).observe(coverage);
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
    for m in &state.models {
        let info = m.engine.info();
        state
            .metrics
            .model_precision
            .get_or_create(&PrecisionLabels {
                model: info.name.clone(),
                version: info.version.clone(),
                precision: info.precision.clone(),
            })
            .set(1);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(version: &str) -> ModelLabels {
        ModelLabels {
            model: "meters".into(),
            version: version.into(),
        }
    }

    /// The value of the one sample line that starts with `series` (name and labels, as written).
    fn sample(text: &str, series: &str) -> f64 {
        let hits: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .collect();
        assert_eq!(hits.len(), 1, "{series} in\n{text}");
        hits[0][series.len()..].trim().parse().unwrap()
    }

    #[test]
    fn seed_names_and_labels_are_exposed_next_to_ours() {
        let m = Metrics::new();
        let status = |version: &str, status: &str| StatusLabels {
            model: "meters".into(),
            version: version.into(),
            status: status.into(),
        };
        m.inference_total.get_or_create(&status("v1", "200")).inc();
        m.inference_total.get_or_create(&status("v1", "200")).inc();
        m.inference_total.get_or_create(&status("v2", "503")).inc();
        m.latency_seconds.get_or_create(&labels("v1")).observe(0.3);
        let text = m.encode();
        assert!(text.contains("# TYPE wms_inference counter\n"), "{text}");
        assert_eq!(
            sample(
                &text,
                r#"wms_inference_total{model="meters",version="v1",status="200"}"#
            ),
            2.0
        );
        assert_eq!(
            sample(
                &text,
                r#"wms_inference_total{model="meters",version="v2",status="503"}"#
            ),
            1.0
        );
        assert!(
            text.contains("# TYPE wms_inference_latency_seconds histogram\n"),
            "{text}"
        );
        let series = |suffix: &str, le: &str| {
            format!(r#"wms_inference_latency_seconds_{suffix}{{{le}model="meters",version="v1"}}"#)
        };
        assert_eq!(sample(&text, &series("count", "")), 1.0);
        assert_eq!(sample(&text, &series("sum", "")), 0.3);
        // 0.3 s falls in the 0.512 s bucket (1 ms doubling), not in 0.256 s.
        assert_eq!(sample(&text, &series("bucket", r#"le="0.256","#)), 0.0);
        assert_eq!(sample(&text, &series("bucket", r#"le="0.512","#)), 1.0);
        assert_eq!(sample(&text, &series("bucket", r#"le="+Inf","#)), 1.0);
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    }

    #[test]
    fn drift_histograms_are_per_version_with_their_buckets() {
        let m = Metrics::new();
        m.observe_prediction(&labels("v1"), 0.42, 0.0);
        m.observe_prediction(&labels("v1"), 0.61, 0.04);
        m.observe_prediction(&labels("v2"), 0.05, 0.45);
        let text = m.encode();
        for name in ["wms_input_brightness", "wms_mask_coverage"] {
            assert!(
                text.contains(&format!("# TYPE {name} histogram\n")),
                "{text}"
            );
        }
        let bucket = |name: &str, version: &str, le: &str| {
            sample(
                &text,
                &format!(r#"{name}_bucket{{le="{le}",model="meters",version="{version}"}}"#),
            )
        };
        let b = |version: &str, le: &str| bucket("wms_input_brightness", version, le);
        // Cumulative buckets in twentieths: 0.42 ≤ 0.45, 0.61 ≤ 0.65.
        assert_eq!(b("v1", "0.4"), 0.0);
        assert_eq!(b("v1", "0.45"), 1.0);
        assert_eq!(b("v1", "0.6"), 1.0);
        assert_eq!(b("v1", "0.65"), 2.0);
        assert_eq!(b("v1", "1.0"), 2.0);
        assert_eq!(b("v2", "0.05"), 1.0);
        assert_eq!(
            sample(
                &text,
                r#"wms_input_brightness_sum{model="meters",version="v1"}"#
            ),
            1.03
        );
        let c = |version: &str, le: &str| bucket("wms_mask_coverage", version, le);
        // An empty mask lands in the le="0.0" bucket, which the empty-mask alert reads.
        assert_eq!(c("v1", "0.0"), 1.0);
        assert_eq!(c("v1", "0.03"), 1.0);
        assert_eq!(c("v1", "0.05"), 2.0);
        assert_eq!(c("v2", "0.4"), 0.0);
        assert_eq!(c("v2", "0.6"), 1.0);
        assert_eq!(
            sample(
                &text,
                r#"wms_mask_coverage_count{model="meters",version="v2"}"#
            ),
            1.0
        );
    }
}
