//! The smoke test of a rolled-out version, through the API server's service proxy
//! (`/api/v1/namespaces/{ns}/services/http:{svc}:{port}/proxy/…`), so it needs nothing but the
//! credentials the deploy already has (no port-forward, no ingress): `GET /ping` must answer
//! `{"status": "Healthy"}`, and with a photo one `POST /predictions/{model}?size=original` must
//! return a mask exactly the photo's size (checked in the JSON metadata and in the PNG itself).
//!
//! The response is from a server wms deployed but in a cluster we do not control: it is read
//! bounded and quoted, never trusted. This module must not retry: a flaky first answer is a
//! finding.

use std::io::Cursor;

use base64::Engine as _;
use serde_json::Value;

use super::DeployError;
use super::cluster::Cluster;
use super::names::Names;
use super::render::PORT_INFERENCE;
use crate::untrusted::text::for_log;

/// What the smoke test saw.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct SmokeReport {
    pub ping: String,
    /// `[width, height]` of the mask, when a photo was sent.
    pub mask_size: Option<[u32; 2]>,
    pub coverage: Option<f64>,
}

/// The service proxy path of `path` on the version's inference port.
pub fn proxy_path(names: &Names, path: &str) -> String {
    format!(
        "/api/v1/namespaces/{}/services/http:{}:{PORT_INFERENCE}/proxy{path}",
        names.namespace, names.model
    )
}

/// Width and height of an image's bytes (JPEG or PNG), from its header.
pub fn image_size(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// `/ping`, then (with `photo`) one prediction for `serve_model`.
pub async fn smoke(
    cluster: &Cluster,
    names: &Names,
    serve_model: &str,
    photo: Option<&[u8]>,
) -> Result<SmokeReport, DeployError> {
    let fail = |target: &str, why: String| DeployError::Smoke {
        target: target.to_string(),
        version: names.version.clone(),
        why,
    };
    let ping_path = proxy_path(names, "/ping");
    let req = http::Request::get(&ping_path)
        .body(Vec::new())
        .expect("a GET with a path builds");
    let body = cluster.client.request_text(req).await.map_err(|e| {
        if matches!(&e, kube::Error::Api(s) if s.code == 401 || s.code == 403) {
            return cluster.error(
                "get",
                &format!("services/proxy in namespace {}", names.namespace),
                e,
            );
        }
        fail(&ping_path, describe(e))
    })?;
    let status = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["status"].as_str().map(String::from));
    if status.as_deref() != Some("Healthy") {
        return Err(fail(
            &ping_path,
            format!(
                "expected {{\"status\": \"Healthy\"}}, got {}",
                for_log(&body.chars().take(200).collect::<String>())
            ),
        ));
    }
    let mut report = SmokeReport {
        ping: "Healthy".into(),
        mask_size: None,
        coverage: None,
    };
    let Some(photo) = photo else {
        return Ok(report);
    };
    let Some((w, h)) = image_size(photo) else {
        return Err(DeployError::Flag {
            flag: "--smoke-test",
            value: format!("({} bytes)", photo.len()),
            why: "not a JPEG or PNG image".into(),
        });
    };
    let path = proxy_path(names, &format!("/predictions/{serve_model}?size=original"));
    let content_type = if photo.starts_with(b"\x89PNG") {
        "image/png"
    } else {
        "image/jpeg"
    };
    let req = http::Request::post(&path)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::ACCEPT, "application/json")
        .body(photo.to_vec())
        .expect("a POST with a path builds");
    let body = cluster
        .client
        .request_text(req)
        .await
        .map_err(|e| fail(&path, describe(e)))?;
    let v: Value = serde_json::from_str(&body).map_err(|e| {
        fail(
            &path,
            format!(
                "the answer is not JSON ({e}): {}",
                for_log(&body.chars().take(200).collect::<String>())
            ),
        )
    })?;
    let meta = &v["metadata"];
    let said = (
        meta["mask_size"][0].as_u64().unwrap_or(0),
        meta["mask_size"][1].as_u64().unwrap_or(0),
    );
    let png = v["mask_base64"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| fail(&path, "the answer has no mask_base64".into()))?;
    let actual =
        image_size(&png).ok_or_else(|| fail(&path, "mask_base64 is not an image".into()))?;
    if actual != (w, h) || said != (u64::from(w), u64::from(h)) {
        return Err(fail(
            &path,
            format!(
                "the mask is {}x{} (metadata says {}x{}) for a {w}x{h} photo",
                actual.0, actual.1, said.0, said.1
            ),
        ));
    }
    report.mask_size = Some([w, h]);
    report.coverage = meta["coverage"].as_f64();
    Ok(report)
}

/// An error answer as one line: the status code and the server's (quoted) message.
fn describe(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "{} {}",
            s.code,
            for_log(&s.message.chars().take(300).collect::<String>())
        ),
        other => for_log(&other.to_string()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths_name_scheme_service_and_port() {
        let n = Names::new("wms-", "m", "v1");
        assert_eq!(
            proxy_path(&n, "/ping"),
            "/api/v1/namespaces/wms-m-v1/services/http:m:8080/proxy/ping"
        );
    }
}
