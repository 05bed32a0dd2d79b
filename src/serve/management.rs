//! The management API (TorchServe's port 8081), read-only: `GET /models` (paged with `limit` and
//! `next_page_token`), `GET /models/{name}`, `/models/{name}/all` and `/models/{name}/{version}`
//! in TorchServe's response shapes, so existing tooling and dashboards keep working. Models are
//! fixed at startup (one image per model version), so registration and scaling are not offered.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::error::ApiError;
use super::state::{LoadedModel, SharedState};

pub fn app(state: SharedState) -> Router {
    Router::new()
        .route("/models", get(list))
        .route("/models/{name}", get(describe))
        .route("/models/{name}/{version}", get(describe_version))
        .with_state(state)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListEntry {
    model_name: String,
    model_url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
    models: Vec<ListEntry>,
}

fn bad_query(detail: String) -> Response {
    ApiError::BadQuery { detail }.into_response()
}

async fn list(State(state): State<SharedState>, RawQuery(query): RawQuery) -> Response {
    let param = |key: &str| {
        query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    };
    let parse = |v: Option<String>, default: usize, key: &str| match v {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| format!("{key}={s}: expected a non-negative integer")),
    };
    // TorchServe: limit defaults to 100; the token is the offset of the next page.
    let limit = match parse(param("limit"), 100, "limit") {
        Ok(0) => 100,
        Ok(v) => v,
        Err(e) => return bad_query(e),
    };
    let offset = match parse(param("next_page_token"), 0, "next_page_token") {
        Ok(v) => v,
        Err(e) => return bad_query(e),
    };
    let mut names: Vec<&LoadedModel> = state.models.iter().collect();
    names.sort_by(|a, b| a.engine.info().name.cmp(&b.engine.info().name));
    let page: Vec<ListEntry> = names
        .iter()
        .skip(offset)
        .take(limit)
        .map(|m| ListEntry {
            model_name: m.engine.info().name.clone(),
            model_url: model_url(m),
        })
        .collect();
    let next = offset.saturating_add(limit);
    Json(ListResponse {
        next_page_token: (next < names.len()).then(|| next.to_string()),
        models: page,
    })
    .into_response()
}

fn model_url(m: &LoadedModel) -> String {
    m.engine
        .info()
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Worker {
    id: String,
    start_time: String,
    status: &'static str,
    memory_usage: u64,
    pid: u32,
    gpu: bool,
    gpu_usage: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Description {
    model_name: String,
    model_version: String,
    model_url: String,
    runtime: &'static str,
    /// `fp32` or `int8`: what the loaded graph computes in (wms addition to TorchServe's shape).
    precision: String,
    min_workers: usize,
    max_workers: usize,
    batch_size: usize,
    max_batch_delay: u64,
    response_timeout: u64,
    loaded_at_startup: bool,
    workers: Vec<Worker>,
    metadata: std::collections::BTreeMap<String, String>,
}

fn description(state: &SharedState, m: &LoadedModel) -> Description {
    let info = m.engine.info();
    let status = if state.is_ready() {
        "READY"
    } else {
        "UNLOADING"
    };
    let start_time = rfc3339(m.loaded_at);
    // Workers are sessions in this one process (same pid), so each reports the process's
    // resident bytes, as TorchServe reports each worker process's.
    let memory_usage = crate::memory::resident_bytes().unwrap_or(0);
    let workers = (0..m.engine.workers())
        .map(|i| Worker {
            id: format!("{}", 9000 + i),
            start_time: start_time.clone(),
            status,
            memory_usage,
            pid: std::process::id(),
            gpu: false,
            gpu_usage: "N/A",
        })
        .collect();
    Description {
        model_name: info.name.clone(),
        model_version: info.version.clone(),
        model_url: model_url(m),
        runtime: "onnxruntime",
        precision: info.precision.clone(),
        min_workers: m.engine.workers(),
        max_workers: m.engine.workers(),
        batch_size: state.batching.batch_size,
        max_batch_delay: state.batching.max_batch_delay.as_millis() as u64,
        response_timeout: state.limits.response_timeout.as_secs(),
        loaded_at_startup: true,
        workers,
        metadata: info.metadata.clone(),
    }
}

async fn describe(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    describe_matching(&state, &name, None)
}

async fn describe_version(
    State(state): State<SharedState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let v = (version != "all").then_some(version.as_str());
    describe_matching(&state, &name, v)
}

fn describe_matching(state: &SharedState, name: &str, version: Option<&str>) -> Response {
    let Some(m) = state.model(name) else {
        return ApiError::ModelNotFound {
            name: name.to_string(),
        }
        .into_response();
    };
    if let Some(v) = version
        && v != m.engine.info().version
    {
        return ApiError::VersionNotFound {
            name: name.to_string(),
            version: v.to_string(),
            loaded: m.engine.info().version.clone(),
        }
        .into_response();
    }
    (StatusCode::OK, Json(vec![description(state, m)])).into_response()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), as TorchServe prints worker start times.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    crate::calendar::rfc3339_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
    }
}
