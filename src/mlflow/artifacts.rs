//! Run artifacts: uploads through the tracking server's artifact proxy
//! (`PUT /api/2.0/mlflow-artifacts/artifacts/<exp>/<run>/artifacts/<path>`, raw body; the server
//! runs with `--serve-artifacts`) or straight to S3 when the run's artifact URI is `s3://…`;
//! listing through the proxy.

use std::path::Path;

use reqwest::Method;
use serde::Deserialize;

use super::client::Client;
use super::error::{MlflowError, chain};
use super::tracking::RunInfo;
use crate::env_vars;

const PROXY_PREFIX: &str = "/api/2.0/mlflow-artifacts/artifacts";

/// Where a run's artifacts live, parsed from its `artifact_uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRoot {
    /// `mlflow-artifacts:/1/<run>/artifacts` → the proxy path `1/<run>/artifacts`.
    Proxy(String),
    /// `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String },
}

impl ArtifactRoot {
    pub fn parse(run: &RunInfo) -> Result<ArtifactRoot, MlflowError> {
        let uri = run.artifact_uri.as_str();
        if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/path` or `mlflow-artifacts://host:port/path`.
            let path = match rest.strip_prefix("//") {
                Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
                None => rest,
            };
            return Ok(ArtifactRoot::Proxy(path.trim_matches('/').to_string()));
        }
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            return Ok(ArtifactRoot::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        Err(MlflowError::ArtifactUri {
            run_id: run.run_id.clone(),
            uri: uri.to_string(),
            hint: "start the server with `--serve-artifacts` (artifacts through the server) or an `s3://` --default-artifact-root",
        })
    }
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default, deserialize_with = "de_size")]
    pub file_size: Option<u64>,
}

impl Client {
    /// Uploads the file `local` as the run's artifact `artifact_path` (e.g. `model/best.safetensors`).
    pub fn upload_artifact(
        &self,
        run: &RunInfo,
        local: &Path,
        artifact_path: &str,
    ) -> Result<(), MlflowError> {
        let bytes = fs_err::read(local).map_err(|cause| MlflowError::Io {
            path: local.to_path_buf(),
            cause,
        })?;
        self.upload_artifact_bytes(run, &bytes, artifact_path)
    }

    pub fn upload_artifact_bytes(
        &self,
        run: &RunInfo,
        bytes: &[u8],
        artifact_path: &str,
    ) -> Result<(), MlflowError> {
        let artifact_path = artifact_path.trim_matches('/');
        match ArtifactRoot::parse(run)? {
            ArtifactRoot::Proxy(root) => {
                let path = format!(
                    "{PROXY_PREFIX}/{}",
                    encode_path(&join(&root, artifact_path))
                );
                self.raw(Method::PUT, &path, Some(bytes))?;
                Ok(())
            }
            ArtifactRoot::S3 { bucket, prefix } => {
                let endpoint = std::env::var(env_vars::MLFLOW_S3_ENDPOINT_URL)
                    .ok()
                    .filter(|v| !v.is_empty());
                S3Uploader::from_env(endpoint.as_deref())?.put(
                    &bucket,
                    &join(&prefix, artifact_path),
                    bytes.to_vec(),
                )
            }
        }
    }

    /// The entries directly under `path` (`""` = the run's root), through the proxy.
    pub fn list_artifacts(&self, run: &RunInfo, path: &str) -> Result<Vec<FileInfo>, MlflowError> {
        #[derive(Deserialize)]
        struct Resp {
            #[serde(default)]
            files: Vec<FileInfo>,
        }
        let ArtifactRoot::Proxy(root) = ArtifactRoot::parse(run)? else {
            return Err(MlflowError::ArtifactUri {
                run_id: run.run_id.clone(),
                uri: run.artifact_uri.clone(),
                hint: "listing goes through the artifact proxy; list s3:// artifacts with the AWS CLI",
            });
        };
        let full = join(&root, path.trim_matches('/'));
        let query = format!("{PROXY_PREFIX}?path={}", encode_query(&full));
        let url = format!("{}{query}", self.base_url());
        let resp = self.raw(Method::GET, &query, None)?;
        let resp: Resp = resp.json().map_err(|e| MlflowError::Decode {
            url,
            message: chain(&e),
        })?;
        // The proxy answers paths relative to the listed folder; report them from the run root.
        let base = path.trim_matches('/');
        Ok(resp
            .files
            .into_iter()
            .map(|mut f| {
                let name = f.path.rsplit('/').next().unwrap_or(&f.path).to_string();
                f.path = join(base, &name);
                f
            })
            .collect())
    }

    /// Downloads the run's artifact `artifact_path` through the proxy.
    pub fn download_artifact(
        &self,
        run: &RunInfo,
        artifact_path: &str,
    ) -> Result<Vec<u8>, MlflowError> {
        let ArtifactRoot::Proxy(root) = ArtifactRoot::parse(run)? else {
            return Err(MlflowError::ArtifactUri {
                run_id: run.run_id.clone(),
                uri: run.artifact_uri.clone(),
                hint: "downloads go through the artifact proxy; fetch s3:// artifacts with the AWS CLI",
            });
        };
        let path = format!(
            "{PROXY_PREFIX}/{}",
            encode_path(&join(&root, artifact_path))
        );
        let url = format!("{}{path}", self.base_url());
        let resp = self.raw(Method::GET, &path, None)?;
        resp.bytes()
            .map(|b| b.to_vec())
            .map_err(|e| MlflowError::Decode {
                url,
                message: chain(&e),
            })
    }
}

/// Puts objects into S3 (or an S3-compatible endpoint such as moto or MinIO, addressed by path
/// style). The SDK is async; a private current-thread runtime keeps this API blocking, and the
/// client's connection pool lives and dies with that runtime.
pub struct S3Uploader {
    rt: tokio::runtime::Runtime,
    s3: aws_sdk_s3::Client,
}

impl S3Uploader {
    /// Credentials and region from the AWS default chain; `endpoint` overrides the service URL.
    pub fn from_env(endpoint: Option<&str>) -> Result<S3Uploader, MlflowError> {
        let rt = runtime()?;
        let shared = rt.block_on(aws_config::load_defaults(
            aws_config::BehaviorVersion::latest(),
        ));
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(url) = endpoint {
            conf = conf.endpoint_url(url).force_path_style(true);
        }
        let s3 = aws_sdk_s3::Client::from_conf(conf.build());
        Ok(S3Uploader { rt, s3 })
    }

    /// With a client the caller configured (tests, explicit credentials).
    pub fn with_client(s3: aws_sdk_s3::Client) -> Result<S3Uploader, MlflowError> {
        Ok(S3Uploader { rt: runtime()?, s3 })
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), MlflowError> {
        self.rt
            .block_on(
                self.s3
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| MlflowError::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
                cause: chain(&e),
                hint: "check the AWS credentials (AWS_* or `wms aws` OIDC), the bucket and its region, and MLFLOW_S3_ENDPOINT_URL",
            })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, MlflowError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MlflowError::Io {
            path: "(tokio runtime for S3)".into(),
            cause: e,
        })
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// Percent-encodes a path, keeping `/` and RFC 3986 unreserved characters.
fn encode_path(path: &str) -> String {
    encode(path, b"/")
}

fn encode_query(value: &str) -> String {
    encode(value, b"")
}

fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::tracking::RunStatus;

    fn run(uri: &str) -> RunInfo {
        RunInfo {
            run_id: "r".into(),
            experiment_id: "1".into(),
            run_name: String::new(),
            status: RunStatus::Running,
            artifact_uri: uri.into(),
            lifecycle_stage: "active".into(),
        }
    }

    #[test]
    fn artifact_roots_parse() {
        assert_eq!(
            ArtifactRoot::parse(&run("mlflow-artifacts:/1/abc/artifacts")).unwrap(),
            ArtifactRoot::Proxy("1/abc/artifacts".into())
        );
        assert_eq!(
            ArtifactRoot::parse(&run("mlflow-artifacts://h:5000/1/abc/artifacts")).unwrap(),
            ArtifactRoot::Proxy("1/abc/artifacts".into())
        );
        assert_eq!(
            ArtifactRoot::parse(&run("s3://bkt/mlruns/1/abc/artifacts")).unwrap(),
            ArtifactRoot::S3 {
                bucket: "bkt".into(),
                prefix: "mlruns/1/abc/artifacts".into()
            }
        );
        let err = ArtifactRoot::parse(&run("/srv/mlruns/1/abc/artifacts")).unwrap_err();
        assert!(err.to_string().contains("--serve-artifacts"), "{err}");
    }

    #[test]
    fn paths_are_percent_encoded_but_keep_slashes() {
        assert_eq!(encode_path("1/a b/c%.txt"), "1/a%20b/c%25.txt");
        assert_eq!(encode_query("1/x"), "1%2Fx");
    }
}
