//! The inference API (TorchServe's port 8080): `/ping`, `/predictions/{model}[/{version}]`, the
//! upstream aliases `/predict` and `/health`, and the web page at `/`. A prediction request is
//! read under `max_request_size`, preprocessed on the blocking pool, queued for the model's
//! batcher and answered as a PNG mask or JSON; every failure is an [`ApiError`].

use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Serialize;

use super::batcher::SubmitError;
use super::error::ApiError;
use super::metrics::{InflightGuard, StatusLabels};
use super::predict;
use super::state::{LoadedModel, SharedState};

/// The web page: one self-contained file, no external resources.
const INDEX_HTML: &str = include_str!("web/index.html");

/// Multipart field names taken as the image, in order of preference (TorchServe uses `data`,
/// upstream's FastAPI app `file`, its web form `image`).
const IMAGE_FIELDS: &[&str] = &["data", "image", "file"];

pub fn app(state: SharedState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ping", get(ping))
        .route("/health", get(ping))
        // PUT as TorchServe takes it too: its docs' `curl -T photo.jpg URL` uploads with PUT.
        .route("/predictions/{model}", post(predictions).put(predictions))
        .route(
            "/predictions/{model}/{version}",
            post(predictions_version).put(predictions_version),
        )
        .route("/predict", post(predict_alias))
        .fallback(not_found)
        // We read bodies ourselves under max_request_size, so errors are JSON.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The page, with what is loaded (name, version, the test metrics it was exported with)
/// where it says `<!--models-->`.
async fn index(State(state): State<SharedState>) -> Html<String> {
    Html(INDEX_HTML.replace("<!--models-->", &loaded_models_html(&state)))
}

/// One list item per loaded model; every value escaped (metadata comes from the model file).
fn loaded_models_html(state: &SharedState) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let mut html = String::from("<ul id=\"models\">");
    for m in &state.models {
        let info = m.engine.info();
        html.push_str(&format!(
            "<li><strong>{}</strong> version {}",
            esc(&info.name),
            esc(&info.version)
        ));
        let metrics: std::collections::BTreeMap<String, serde_json::Value> = info
            .metadata
            .get(crate::onnx::meta_keys::METRICS)
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let shown: Vec<String> = metrics
            .iter()
            .filter(|(k, _)| k.starts_with("test_"))
            .filter_map(|(k, v)| v.as_f64().map(|v| format!("{} {v:.4}", esc(k))))
            .collect();
        if !shown.is_empty() {
            html.push_str(&format!(": {}", shown.join(", ")));
        }
        html.push_str("</li>");
    }
    html.push_str("</ul>");
    html
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

async fn ping(State(state): State<SharedState>) -> Response {
    if state.is_ready() {
        Json(Health { status: "Healthy" }).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "Unhealthy",
            }),
        )
            .into_response()
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "code": 404,
            "type": "ResourceNotFoundException",
            "message": "no such endpoint; hint: POST /predictions/{model}, GET /ping",
        })),
    )
        .into_response()
}

async fn predictions(
    State(state): State<SharedState>,
    Path(model): Path<String>,
    req: Request,
) -> Response {
    handle(&state, &model, None, req, false).await
}

async fn predictions_version(
    State(state): State<SharedState>,
    Path((model, version)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle(&state, &model, Some(&version), req, false).await
}

/// Upstream's `POST /predict`: the (first) loaded model, JSON always.
async fn predict_alias(State(state): State<SharedState>, req: Request) -> Response {
    let Some(name) = state.models.first().map(|m| m.engine.info().name.clone()) else {
        return ApiError::ModelNotFound {
            name: String::new(),
        }
        .into_response();
    };
    handle(&state, &name, None, req, true).await
}

/// Runs one prediction and records its metrics, whatever the outcome.
async fn handle(
    state: &SharedState,
    name: &str,
    version: Option<&str>,
    req: Request,
    force_json: bool,
) -> Response {
    let arrived = Instant::now();
    let Some(model) = state.model(name) else {
        return ApiError::ModelNotFound {
            name: name.to_string(),
        }
        .into_response();
    };
    let info = model.engine.info();
    if let Some(v) = version
        && v != info.version
    {
        return ApiError::VersionNotFound {
            name: name.to_string(),
            version: v.to_string(),
            loaded: info.version.clone(),
        }
        .into_response();
    }
    let _inflight = InflightGuard::new(&state.metrics.inflight);
    let timeout = state.limits.response_timeout;
    let result = match tokio::time::timeout(
        timeout,
        predict_response(state, model, req, force_json, arrived),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ApiError::Timeout {
            seconds: timeout.as_secs(),
        }),
    };
    let labels = model.labels();
    let response = result.unwrap_or_else(IntoResponse::into_response);
    let status = response.status();
    state
        .metrics
        .inference_total
        .get_or_create(&StatusLabels {
            model: labels.model.clone(),
            version: labels.version.clone(),
            status: status.as_u16().to_string(),
        })
        .inc();
    if status.is_success() {
        state
            .metrics
            .latency_seconds
            .get_or_create(&labels)
            .observe(arrived.elapsed().as_secs_f64());
    }
    response
}

#[derive(Serialize)]
struct PredictionJson {
    mask_base64: String,
    metadata: PredictionMeta,
}

#[derive(Serialize)]
struct PredictionMeta {
    model_name: String,
    model_version: String,
    latency_ms: f64,
    /// [width, height] the model ran at.
    input_size: [u32; 2],
    /// [width, height] of the returned mask.
    mask_size: [u32; 2],
    coverage: f64,
}

async fn predict_response(
    state: &SharedState,
    model: &LoadedModel,
    req: Request,
    force_json: bool,
    arrived: Instant,
) -> Result<Response, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::NotReady);
    }
    let mut model_size = wants_model_size(req.uri().query())?;
    let json = force_json || wants_json(req.headers());
    let limits = &state.limits;
    let (bytes, size_field) = tokio::time::timeout(
        limits.body_read_timeout,
        read_image(req, limits.max_request_size),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout {
        seconds: limits.body_read_timeout.as_secs(),
    })??;
    // A form's `size` field overrides the query's.
    if let Some(v) = size_field {
        model_size = size_is_model(&String::from_utf8_lossy(&v))?;
    }

    // Admission before decode: the header gives the decode's cost, which is reserved from the
    // budget before a pixel is allocated (issue 11).
    let spec = model.engine.info().preprocessing.clone();
    let image_limits = predict::ImageLimits {
        max_pixels: limits.max_image_pixels,
        max_bit_depth: limits.max_image_bit_depth,
    };
    let read = arrived.elapsed();
    let (bytes, admission) = {
        let spec = spec.clone();
        blocking(move || {
            let a = predict::inspect(&bytes, &image_limits, &spec);
            (bytes, a)
        })
        .await?
    };
    let admission = admission?;
    let reservation = state
        .decode_budget
        .reserve(admission.cost, admission.width, admission.height)
        .await?;
    // The reservation moves into the task: a timed-out request does not free budget that its
    // still-running decode holds.
    let prepared = blocking(move || {
        let p = predict::prepare(&bytes, &admission, &spec);
        drop(reservation);
        p
    })
    .await??;
    let preprocessed = arrived.elapsed();

    let rx = model.batcher.submit(prepared.input).map_err(|e| match e {
        SubmitError::Full => ApiError::QueueFull,
        SubmitError::Closed => ApiError::ShuttingDown,
    })?;
    let batched = match rx.await {
        Ok(Ok(batched)) => batched,
        Ok(Err(e)) => {
            tracing::error!(model = %model.engine.info().name, error = %e, "inference failed");
            return Err(ApiError::Internal);
        }
        Err(_) => return Err(ApiError::ShuttingDown),
    };

    let inferred = arrived.elapsed();
    let engine = model.engine.clone();
    let size = (!model_size).then_some((prepared.width, prepared.height));
    let brightness = prepared.brightness;
    // A mask at the photo's size and its PNG: about two bytes per pixel.
    let reservation = match size {
        Some((w, h)) => Some(
            state
                .decode_budget
                .reserve(u64::from(w) * u64::from(h) * 2, w, h)
                .await?,
        ),
        None => None,
    };
    let logits = batched.logits;
    let (prediction, png) = blocking(move || {
        let p = predict::postprocess(&logits, engine.info(), size);
        let png = predict::encode_png(&p.mask);
        drop(reservation);
        (p, png)
    })
    .await?;
    let png = png.map_err(|e| {
        tracing::error!(error = %e, "PNG encoding failed");
        ApiError::Internal
    })?;

    state
        .metrics
        .observe_prediction(&model.labels(), brightness, prediction.coverage);
    let info = model.engine.info();
    let total = arrived.elapsed();
    let latency_ms = total.as_secs_f64() * 1e3;
    let timing = ServerTiming {
        read,
        preprocess: preprocessed.saturating_sub(read),
        queue: batched.queued,
        compute: batched.compute,
        batch_size: batched.batch_size,
        postprocess: total.saturating_sub(inferred),
        total,
    };
    let version_header = [
        ("X-Model-Version", info.version.clone()),
        ("Server-Timing", timing.header()),
    ];
    if json {
        let body = PredictionJson {
            mask_base64: base64::engine::general_purpose::STANDARD.encode(&png),
            metadata: PredictionMeta {
                model_name: info.name.clone(),
                model_version: info.version.clone(),
                latency_ms: (latency_ms * 1000.0).round() / 1000.0,
                input_size: [
                    info.preprocessing.input_width,
                    info.preprocessing.input_height,
                ],
                mask_size: [prediction.mask.width(), prediction.mask.height()],
                coverage: prediction.coverage,
            },
        };
        Ok((version_header, Json(body)).into_response())
    } else {
        Ok((version_header, [(header::CONTENT_TYPE, "image/png")], png).into_response())
    }
}

/// Where one prediction's time went, as a W3C `Server-Timing` header (durations in ms), so
/// clients and benchmarks can tell the model's forward pass from decoding and queueing.
/// `compute` is the whole batch's forward pass; its `desc` says how many requests shared it.
struct ServerTiming {
    read: Duration,
    preprocess: Duration,
    queue: Duration,
    compute: Duration,
    batch_size: usize,
    postprocess: Duration,
    total: Duration,
}

impl ServerTiming {
    fn header(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "read;dur={:.3}, preprocess;dur={:.3}, queue;dur={:.3}, \
             compute;dur={:.3};desc=\"batch of {}\", postprocess;dur={:.3}, total;dur={:.3}",
            ms(self.read),
            ms(self.preprocess),
            ms(self.queue),
            ms(self.compute),
            self.batch_size,
            ms(self.postprocess),
            ms(self.total),
        )
    }
}

/// Runs CPU work on the blocking pool; a panic there is an internal error, not a crash.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "blocking task failed");
        ApiError::Internal
    })
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

/// Whether the mask is wanted at the network's input size: `?size=model`. The default (and
/// `?size=original`) is the photo's size, what a client overlays on the photo and what
/// TorchServe serving our `.mar` answers (`torchserve/handler.py`).
fn wants_model_size(query: Option<&str>) -> Result<bool, ApiError> {
    let mut model_size = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "size" {
            model_size = size_is_model(v)?;
        }
    }
    Ok(model_size)
}

/// One `size` value, from the query or a form field: `model` or `original` (empty: the
/// default, `original`).
fn size_is_model(value: &str) -> Result<bool, ApiError> {
    match value {
        "model" => Ok(true),
        "original" | "" => Ok(false),
        other => Err(ApiError::BadQuery {
            detail: format!(
                "size={}; expected size=original or size=model",
                // A form field can be long: the start is enough to recognise it.
                crate::untrusted::text::for_log(&other.chars().take(40).collect::<String>())
            ),
        }),
    }
}

/// The image bytes: the raw body, or the image field of a multipart form with its `size` field
/// if it has one (TorchServe hands form fields to the handler but drops the query of
/// `/predictions`, so a form field is how a client asks both servers for `size=model`).
async fn read_image(req: Request, limit: usize) -> Result<(Bytes, Option<Bytes>), ApiError> {
    let too_large = ApiError::BodyTooLarge { limit };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::BadMultipart {
                detail: "the request body could not be read".into(),
            }
        }
    })?;
    if !is_multipart {
        return Ok((bytes, None));
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut multipart =
        Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::BadMultipart {
                detail: e.body_text(),
            })?;
    let mut chosen: Option<(usize, Bytes)> = None;
    let mut size = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::BadMultipart {
                    detail: e.body_text(),
                });
            }
        };
        let is_size = field.name() == Some("size");
        let rank = field
            .name()
            .and_then(|n| IMAGE_FIELDS.iter().position(|f| *f == n))
            .or_else(|| field.file_name().map(|_| IMAGE_FIELDS.len()));
        let data = field.bytes().await.map_err(|e| ApiError::BadMultipart {
            detail: e.body_text(),
        })?;
        if is_size {
            size = Some(data);
            continue;
        }
        if let Some(rank) = rank
            && chosen.as_ref().is_none_or(|(r, _)| rank < *r)
        {
            chosen = Some((rank, data));
        }
    }
    let image = chosen.map(|(_, b)| b).ok_or(ApiError::MissingImageField)?;
    Ok((image, size))
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_query() {
        assert!(!wants_model_size(None).unwrap());
        assert!(!wants_model_size(Some("size=original")).unwrap());
        assert!(!wants_model_size(Some("size=")).unwrap());
        assert!(wants_model_size(Some("a=b&size=model")).unwrap());
        assert!(wants_model_size(Some("size=huge")).is_err());
        assert!(size_is_model("model").unwrap());
        assert!(!size_is_model("original").unwrap());
        assert!(size_is_model("Model").is_err());
    }

    #[test]
    fn server_timing_header_lists_each_phase_in_ms() {
        let ms = Duration::from_micros;
        let t = ServerTiming {
            read: ms(250),
            preprocess: ms(4_000),
            queue: ms(1_500),
            compute: ms(140_125),
            batch_size: 3,
            postprocess: ms(2_000),
            total: ms(148_000),
        };
        assert_eq!(
            t.header(),
            "read;dur=0.250, preprocess;dur=4.000, queue;dur=1.500, \
             compute;dur=140.125;desc=\"batch of 3\", postprocess;dur=2.000, total;dur=148.000"
        );
    }
}
