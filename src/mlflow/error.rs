//! The one error type of the MLflow client: every variant names the endpoint or URL involved and
//! ends with a hint saying what to try next.

use std::path::PathBuf;

/// Everything talking to MLflow (tracking, registry, artifacts) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// No answer at all: connection refused, DNS, TLS, timeout (after the retries).
    #[error("MLflow {method} {url}: {cause} (after {attempts} attempt(s)); hint: {hint}")]
    Transport {
        method: &'static str,
        url: String,
        // Not `#[source]`: the message already shows the whole chain, and `{:#}` would repeat it.
        cause: String,
        attempts: u32,
        hint: &'static str,
    },
    /// The server answered with an error status; `error_code`/`message` come from its JSON body
    /// (`{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "…"}`) when it sent one.
    #[error("MLflow {method} {url}: HTTP {status} {error_code}: {message}; hint: {hint}")]
    Api {
        method: &'static str,
        url: String,
        status: u16,
        error_code: String,
        message: String,
        hint: String,
    },
    /// A 2xx answer whose body is not what the API documents.
    #[error(
        "MLflow {url}: unexpected response ({message}); hint: check that MLFLOW_TRACKING_URI points at an MLflow tracking server (2.9 or newer)"
    )]
    Decode { url: String, message: String },
    #[error("invalid MLflow setting {name}={value:?}: {message}; hint: {hint}")]
    Config {
        name: &'static str,
        value: String,
        message: String,
        hint: &'static str,
    },
    #[error("cannot read {path}: {cause}; hint: check that the file exists and is readable")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The run stores artifacts somewhere this client cannot write (e.g. the server's local disk).
    #[error("run {run_id}: artifact URI {uri} is not supported; hint: {hint}")]
    ArtifactUri {
        run_id: String,
        uri: String,
        hint: &'static str,
    },
    #[error("S3 upload to s3://{bucket}/{key}: {cause}; hint: {hint}")]
    S3 {
        bucket: String,
        key: String,
        cause: String,
        hint: &'static str,
    },
    /// Registry state that rules a request out (no run metrics behind an alias, …).
    #[error("{message}; hint: {hint}")]
    Registry { message: String, hint: String },
}

impl MlflowError {
    /// The server's `error_code` (`RESOURCE_DOES_NOT_EXIST`, …) for API errors.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            MlflowError::Api { error_code, .. } => Some(error_code),
            _ => None,
        }
    }

    /// HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            MlflowError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.error_code() == Some("RESOURCE_DOES_NOT_EXIST") || self.status() == Some(404)
    }

    pub fn is_already_exists(&self) -> bool {
        self.error_code() == Some("RESOURCE_ALREADY_EXISTS")
    }

    /// True when the server could not be reached or failed on its side: worth trying later.
    pub fn is_transient(&self) -> bool {
        match self {
            MlflowError::Transport { .. } => true,
            MlflowError::Api { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// The hint for an HTTP error status (and MLflow error code) on `endpoint`.
pub(crate) fn hint_for(status: u16, error_code: &str) -> String {
    match (status, error_code) {
        (401, _) | (_, "UNAUTHENTICATED") => {
            "set MLFLOW_TRACKING_TOKEN (bearer) or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (basic auth)".into()
        }
        (403, _) | (_, "PERMISSION_DENIED") => {
            "the credentials are valid but lack permission on this experiment or model; ask the MLflow admin".into()
        }
        (_, "RESOURCE_DOES_NOT_EXIST") | (404, _) => {
            "check the name or id (and that MLFLOW_TRACKING_URI is the server that holds it)".into()
        }
        (_, "RESOURCE_ALREADY_EXISTS") => "the name is taken; pick another or reuse it".into(),
        (_, "INVALID_PARAMETER_VALUE") => {
            "the server rejected a value; params are immutable once logged and keys are limited to 250 characters".into()
        }
        (429, _) => "the server is rate limiting; retry later or lower the request rate".into(),
        (s, _) if s >= 500 => {
            "the server failed (retried with backoff); see the MLflow server's log".into()
        }
        _ => "see the server's message; the MLflow REST API reference lists the fields".into(),
    }
}

/// Formats an error with its whole `source()` chain on one line, with the userinfo of every URL
/// in it removed (HTTP clients quote the URL they failed on).
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    crate::untrusted::redact::text(&text).into_owned()
}
