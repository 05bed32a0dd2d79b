//! The HTTP layer every MLflow call goes through: base URL, auth (bearer token or basic),
//! timeouts, and retries with exponential backoff and jitter for connection errors, 429 and 5xx.
//! Endpoint modules ([`super::tracking`], [`super::registry`], [`super::artifacts`]) build
//! requests on top of it and never touch `reqwest` themselves.

use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{RequestBuilder, Response};
use serde::de::DeserializeOwned;

use super::error::{MlflowError, chain, hint_for};
use crate::env_vars;
use crate::untrusted::redact;

/// Default seconds per request (MLflow's Python client uses 120).
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;
/// Default attempts per request, the first one included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// How the client proves who it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer <token>` (`MLFLOW_TRACKING_TOKEN`).
    Bearer(String),
    /// HTTP basic auth (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`).
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Auth {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

/// When and how long to wait before trying a request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each later one.
    pub base_delay: Duration,
    /// Upper bound of one wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// No retries: for callers that keep their own backlog (the training tracker).
    pub fn once() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 = the first retry): exponential, capped, with
    /// "equal jitter" (a uniform draw from the upper half), so many clients that failed together
    /// do not come back together.
    pub fn delay(&self, retry: u32, rng: &mut impl rand::Rng) -> Duration {
        let exp = self.base_delay.saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(rng.random::<f64>())
    }

    /// Statuses worth another attempt: rate limiting and server-side failures.
    pub fn retryable_status(status: u16) -> bool {
        status == 429 || (500..=599).contains(&status)
    }
}

/// Where and how to reach the tracking server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `http://127.0.0.1:5000` (no trailing slash).
    pub uri: String,
    pub auth: Auth,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// A server at `uri`. Credentials in its userinfo (`http://user:password@host`) become basic
    /// auth, so the URL kept, and shown in every message and output, has none.
    pub fn new(uri: impl Into<String>) -> Self {
        let (uri, userinfo) = redact::take_userinfo(uri.into().trim_end_matches('/'));
        ClientConfig {
            uri,
            auth: userinfo.map_or(Auth::None, |u| Auth::Basic {
                username: u.user,
                password: u.password.unwrap_or_default(),
            }),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            retry: RetryPolicy::default(),
        }
    }

    /// The secrets a tracking configuration from the environment holds, for `::add-mask::`
    /// before anything could print them: `MLFLOW_TRACKING_TOKEN`, `MLFLOW_TRACKING_PASSWORD`
    /// and the password (or token) in `MLFLOW_TRACKING_URI`'s userinfo, whichever are set and
    /// whether or not they end up used. Never fails, so callers mask even a broken setting.
    pub fn secrets_from_env() -> Vec<String> {
        Self::secrets_from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ClientConfig::secrets_from_env`] from `lookup(name)`.
    pub fn secrets_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut out = lookup(env_vars::MLFLOW_TRACKING_URI)
            .map(|uri| redact::userinfo_secrets(uri.trim()))
            .unwrap_or_default();
        for name in [
            env_vars::MLFLOW_TRACKING_TOKEN,
            env_vars::MLFLOW_TRACKING_PASSWORD,
        ] {
            if let Some(v) = lookup(name).map(|v| v.trim().to_string())
                && !v.is_empty()
                && !out.contains(&v)
            {
                out.push(v);
            }
        }
        out
    }

    /// From the process environment; `None` when `MLFLOW_TRACKING_URI` is unset or empty.
    pub fn from_env() -> Result<Option<ClientConfig>, MlflowError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From `lookup(name)` (the environment, or a map in tests): `MLFLOW_TRACKING_URI`, then
    /// `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME`/`PASSWORD`,
    /// `MLFLOW_HTTP_REQUEST_TIMEOUT` and `MLFLOW_HTTP_REQUEST_MAX_RETRIES` (MLflow's own names).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ClientConfig>, MlflowError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(uri) = get(env_vars::MLFLOW_TRACKING_URI) else {
            return Ok(None);
        };
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(MlflowError::Config {
                name: env_vars::MLFLOW_TRACKING_URI,
                value: redact::url(&uri).into_owned(),
                message: "only http(s) tracking servers are supported".into(),
                hint: "start `mlflow server --serve-artifacts` and set MLFLOW_TRACKING_URI=http://host:port",
            });
        }
        // The environment's credentials win over those in the URI's userinfo.
        let mut cfg = ClientConfig::new(uri);
        cfg.auth = match (
            get(env_vars::MLFLOW_TRACKING_TOKEN),
            get(env_vars::MLFLOW_TRACKING_USERNAME),
            get(env_vars::MLFLOW_TRACKING_PASSWORD),
        ) {
            (Some(token), _, _) => Auth::Bearer(token),
            (None, Some(username), Some(password)) => Auth::Basic { username, password },
            (None, Some(u), None) => {
                return Err(MlflowError::Config {
                    name: env_vars::MLFLOW_TRACKING_USERNAME,
                    value: u,
                    message: "a username without a password".into(),
                    hint: "set MLFLOW_TRACKING_PASSWORD too, or use MLFLOW_TRACKING_TOKEN",
                });
            }
            _ => cfg.auth,
        };
        if let Some(v) = get(env_vars::MLFLOW_HTTP_REQUEST_TIMEOUT) {
            let secs: u64 =
                v.parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| MlflowError::Config {
                        name: env_vars::MLFLOW_HTTP_REQUEST_TIMEOUT,
                        value: v.clone(),
                        message: "not a positive number of seconds".into(),
                        hint: "e.g. MLFLOW_HTTP_REQUEST_TIMEOUT=120",
                    })?;
            cfg.timeout = Duration::from_secs(secs);
        }
        if let Some(v) = get(env_vars::MLFLOW_HTTP_REQUEST_MAX_RETRIES) {
            let retries: u32 = v.parse().map_err(|_| MlflowError::Config {
                name: env_vars::MLFLOW_HTTP_REQUEST_MAX_RETRIES,
                value: v.clone(),
                message: "not a non-negative integer".into(),
                hint: "e.g. MLFLOW_HTTP_REQUEST_MAX_RETRIES=4 (0 disables retries)",
            })?;
            cfg.retry.max_attempts = retries.saturating_add(1);
        }
        Ok(Some(cfg))
    }
}

/// A blocking MLflow REST client. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
    auth: Auth,
    retry: RetryPolicy,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, MlflowError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("wms/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MlflowError::Config {
                name: env_vars::MLFLOW_TRACKING_URI,
                value: cfg.uri.clone(),
                message: chain(&e),
                hint: "the TLS backend failed to start; check the system's CA certificates",
            })?;
        Ok(Client {
            base: cfg.uri,
            http,
            auth: cfg.auth,
            retry: cfg.retry,
        })
    }

    /// `Client::new(ClientConfig::new(uri))`: no auth, default timeout and retries.
    pub fn for_uri(uri: &str) -> Result<Client, MlflowError> {
        Client::new(ClientConfig::new(uri))
    }

    /// The same server with another retry policy.
    pub fn with_retry(&self, retry: RetryPolicy) -> Client {
        Client {
            retry,
            ..self.clone()
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// `GET /api/2.0/mlflow/<endpoint>?query` → JSON.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T, MlflowError> {
        let url = self.api_url(endpoint);
        let resp = self.send(Method::GET, &url, |r| r.query(query))?;
        decode(&url, resp)
    }

    /// Every item of a paginated `GET`: the array `items` of each page, following
    /// `next_page_token` until the server sends none (or an empty one).
    pub(crate) fn get_all<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
        items: &str,
    ) -> Result<Vec<T>, MlflowError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut page_query = query.to_vec();
            if let Some(t) = &token {
                page_query.push(("page_token", t));
            }
            let mut page: serde_json::Map<String, serde_json::Value> =
                self.get(endpoint, &page_query)?;
            if let Some(list) = page.remove(items).filter(|v| !v.is_null()) {
                let list: Vec<T> =
                    serde_json::from_value(list).map_err(|e| MlflowError::Decode {
                        url: self.api_url(endpoint),
                        message: format!("`{items}`: {e}"),
                    })?;
                out.extend(list);
            }
            match page.get("next_page_token").and_then(|t| t.as_str()) {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// `POST /api/2.0/mlflow/<endpoint>` with a JSON body → JSON.
    pub(crate) fn post<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &serde_json::Value,
    ) -> Result<T, MlflowError> {
        let url = self.api_url(endpoint);
        let resp = self.send(Method::POST, &url, |r| r.json(body))?;
        decode(&url, resp)
    }

    /// `DELETE /api/2.0/mlflow/<endpoint>` with a JSON body (how MLflow's handlers read DELETE).
    pub(crate) fn delete(
        &self,
        endpoint: &str,
        body: &serde_json::Value,
    ) -> Result<(), MlflowError> {
        let url = self.api_url(endpoint);
        self.send(Method::DELETE, &url, |r| r.json(body))?;
        Ok(())
    }

    /// A request to a path under the base URL (the artifact proxy), body as given.
    pub(crate) fn raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, MlflowError> {
        let url = format!("{}{}", self.base, path_and_query);
        self.send(method, &url, |r| match body {
            Some(b) => r
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(b.to_vec()),
            None => r,
        })
    }

    fn api_url(&self, endpoint: &str) -> String {
        format!("{}/api/2.0/mlflow/{endpoint}", self.base)
    }

    /// Sends with retries. `build` adds the body/query to a fresh builder for each attempt.
    fn send(
        &self,
        method: Method,
        url: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, MlflowError> {
        let method_name = method_name(&method);
        let mut rng = rand::rng();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = build(self.http.request(method.clone(), url));
            req = match &self.auth {
                Auth::None => req,
                Auth::Bearer(token) => req.bearer_auth(token),
                Auth::Basic { username, password } => req.basic_auth(username, Some(password)),
            };
            let last = attempt >= self.retry.max_attempts.max(1);
            let retry_after = match req.send() {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if last || !RetryPolicy::retryable_status(status) {
                        return Err(api_error(method_name, url, resp));
                    }
                    retry_after(&resp)
                }
                Err(e) => {
                    if last {
                        return Err(MlflowError::Transport {
                            method: method_name,
                            url: url.to_string(),
                            cause: chain(&e),
                            attempts: attempt,
                            hint: if e.is_timeout() {
                                "the server did not answer in time; raise MLFLOW_HTTP_REQUEST_TIMEOUT or check its load"
                            } else {
                                "is the MLflow server running and reachable? check MLFLOW_TRACKING_URI"
                            },
                        });
                    }
                    None
                }
            };
            let wait = self.retry.delay(attempt, &mut rng);
            // A server's Retry-After wins over our own schedule, within the policy's cap.
            let wait = retry_after.map_or(wait, |ra| ra.min(self.retry.max_delay).max(wait));
            tracing::debug!(
                url,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying MLflow request"
            );
            std::thread::sleep(wait);
        }
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "HTTP",
    }
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?;
    v.to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// An error answer, with the `error_code` and `message` of MLflow's JSON body when present.
fn api_error(method: &'static str, url: &str, resp: Response) -> MlflowError {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let (error_code, message) = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => (
            v["error_code"].as_str().unwrap_or("").to_string(),
            v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| one_line(&text)),
        ),
        Err(_) => (String::new(), one_line(&text)),
    };
    MlflowError::Api {
        method,
        url: url.to_string(),
        status,
        hint: hint_for(status, &error_code),
        error_code: if error_code.is_empty() {
            "(no error_code)".into()
        } else {
            error_code
        },
        message,
    }
}

/// The first 300 characters of a body, on one line.
fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 300 {
        format!("{}…", flat.chars().take(300).collect::<String>())
    } else if flat.is_empty() {
        "(empty body)".into()
    } else {
        flat
    }
}

fn decode<T: DeserializeOwned>(url: &str, resp: Response) -> Result<T, MlflowError> {
    let bytes = resp.bytes().map_err(|e| MlflowError::Decode {
        url: url.to_string(),
        message: chain(&e),
    })?;
    // MLflow answers `{}` for calls without a result; an empty body reads as that too.
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|e| MlflowError::Decode {
        url: url.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::testserver::{Reply, ScriptedServer};
    use rand::SeedableRng as _;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_the_upper_half() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (retry, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            for _ in 0..50 {
                let d = p.delay(retry, &mut rng).as_millis() as u64;
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d} ms");
            }
        }
        // Jitter: not every draw is the same.
        let draws: std::collections::BTreeSet<_> = (0..20).map(|_| p.delay(3, &mut rng)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn only_rate_limits_and_server_errors_are_retried() {
        for s in [429, 500, 502, 503, 504] {
            assert!(RetryPolicy::retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409] {
            assert!(!RetryPolicy::retryable_status(s), "{s}");
        }
    }

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    /// Uses a tiny in-test HTTP server ([`ScriptedServer`]) that answers 503 twice, then 200:
    /// the client retries and returns the 200's body.
    #[test]
    fn a_503_is_retried_until_the_server_answers() {
        let server = ScriptedServer::start(vec![
            Reply::status(
                503,
                r#"{"error_code":"TEMPORARILY_UNAVAILABLE","message":"busy"}"#,
            ),
            Reply::status(503, ""),
            Reply::json(r#"{"experiment_id":"7"}"#),
        ]);
        let client = Client::for_uri(&server.url).unwrap().with_retry(quick(5));
        let v: serde_json::Value = client
            .post("experiments/create", &serde_json::json!({"name": "x"}))
            .unwrap();
        assert_eq!(v["experiment_id"], "7");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 3);
        assert!(reqs.iter().all(|r| r.method == "POST"));
        assert!(
            reqs.iter()
                .all(|r| r.path == "/api/2.0/mlflow/experiments/create")
        );
        assert!(reqs.iter().all(|r| r.body == br#"{"name":"x"}"#));
    }

    #[test]
    fn gives_up_after_max_attempts_and_names_the_url_and_error_code() {
        let server = ScriptedServer::start(vec![
            Reply::status(
                503,
                r#"{"error_code":"TEMPORARILY_UNAVAILABLE","message":"busy"}"#
            );
            3
        ]);
        let client = Client::for_uri(&server.url).unwrap().with_retry(quick(2));
        let err = client
            .get::<serde_json::Value>("runs/get", &[("run_id", "r1")])
            .unwrap_err();
        assert_eq!(server.requests().len(), 2);
        let text = err.to_string();
        assert!(text.contains("/api/2.0/mlflow/runs/get"), "{text}");
        assert!(
            text.contains("HTTP 503 TEMPORARILY_UNAVAILABLE: busy"),
            "{text}"
        );
        assert!(text.contains("hint:"), "{text}");
        assert!(err.is_transient());
    }

    #[test]
    fn client_errors_are_not_retried() {
        let server = ScriptedServer::start(vec![
            Reply::status(
                404,
                r#"{"error_code":"RESOURCE_DOES_NOT_EXIST","message":"no run"}"#
            );
            2
        ]);
        let client = Client::for_uri(&server.url).unwrap().with_retry(quick(5));
        let err = client
            .get::<serde_json::Value>("runs/get", &[("run_id", "r1")])
            .unwrap_err();
        assert_eq!(server.requests().len(), 1);
        assert!(err.is_not_found());
        assert!(!err.is_transient());
    }

    #[test]
    fn connection_errors_are_retried_then_reported_with_a_hint() {
        // A port nothing listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::for_uri(&format!("http://127.0.0.1:{port}"))
            .unwrap()
            .with_retry(quick(3));
        let err = client
            .get::<serde_json::Value>("experiments/search", &[])
            .unwrap_err();
        match &err {
            MlflowError::Transport { attempts, .. } => assert_eq!(*attempts, 3),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("MLFLOW_TRACKING_URI"), "{err}");
    }

    #[test]
    fn auth_headers_come_from_token_or_user_and_password() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(ClientConfig::from_lookup(env(&[])).unwrap().is_none());
        let cfg = ClientConfig::from_lookup(env(&[
            ("MLFLOW_TRACKING_URI", "http://h:5000/"),
            ("MLFLOW_TRACKING_TOKEN", "t0k"),
            ("MLFLOW_TRACKING_USERNAME", "u"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(cfg.uri, "http://h:5000");
        assert_eq!(cfg.auth, Auth::Bearer("t0k".into()));
        assert!(!format!("{:?}", cfg.auth).contains("t0k"));
        let cfg = ClientConfig::from_lookup(env(&[
            ("MLFLOW_TRACKING_URI", "http://h"),
            ("MLFLOW_TRACKING_USERNAME", "u"),
            ("MLFLOW_TRACKING_PASSWORD", "p"),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            cfg.auth,
            Auth::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(cfg.retry.max_attempts, 1);
        let err = ClientConfig::from_lookup(env(&[("MLFLOW_TRACKING_URI", "file:///tmp/mlruns")]))
            .unwrap_err();
        assert!(err.to_string().contains("hint:"), "{err}");

        // On the wire.
        let server = ScriptedServer::start(vec![Reply::json("{}"); 2]);
        let mut cfg = ClientConfig::new(server.url.clone());
        cfg.auth = Auth::Bearer("secret".into());
        Client::new(cfg.clone())
            .unwrap()
            .get::<serde_json::Value>("x", &[])
            .unwrap();
        cfg.auth = Auth::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        Client::new(cfg)
            .unwrap()
            .get::<serde_json::Value>("x", &[])
            .unwrap();
        let reqs = server.requests();
        assert_eq!(
            reqs[0].header("authorization").as_deref(),
            Some("Bearer secret")
        );
        // base64("u:p")
        assert_eq!(
            reqs[1].header("authorization").as_deref(),
            Some("Basic dTpw")
        );
    }

    /// Pages are followed by `next_page_token` (sent as `page_token` with the first query) until
    /// the server sends an empty one; a page without the item array adds nothing.
    #[test]
    fn get_all_follows_next_page_tokens() {
        let server = ScriptedServer::start(vec![
            Reply::json(r#"{"metrics": [1, 2], "next_page_token": "p2"}"#),
            Reply::json(r#"{"next_page_token": "p3"}"#),
            Reply::json(r#"{"metrics": [3], "next_page_token": ""}"#),
        ]);
        let client = Client::new(ClientConfig::new(server.url.clone())).unwrap();
        let all: Vec<u32> = client
            .get_all("metrics/get-history", &[("run_id", "r")], "metrics")
            .unwrap();
        assert_eq!(all, [1, 2, 3]);
        let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        assert!(!paths[0].contains("page_token"), "{paths:?}");
        assert!(
            paths[1].contains("run_id=r") && paths[1].contains("page_token=p2"),
            "{paths:?}"
        );
        assert!(paths[2].contains("page_token=p3"), "{paths:?}");
    }

    #[test]
    fn userinfo_in_the_uri_becomes_basic_auth_and_leaves_the_url() {
        let server = ScriptedServer::start(vec![Reply::json("{}")]);
        let with_userinfo = server.url.replacen("://", "://u:p%40ss@", 1);
        let cfg = ClientConfig::from_lookup(|k| {
            (k == "MLFLOW_TRACKING_URI").then(|| with_userinfo.clone())
        })
        .unwrap()
        .unwrap();
        assert_eq!(cfg.uri, server.url.trim_end_matches('/'));
        let client = Client::new(cfg).unwrap();
        assert!(!client.base_url().contains('@'), "{}", client.base_url());
        client.get::<serde_json::Value>("x", &[]).unwrap();
        // base64("u:p@ss")
        assert_eq!(
            server.requests()[0].header("authorization").as_deref(),
            Some("Basic dTpwQHNz")
        );
        let secrets = ClientConfig::secrets_from_lookup(|k| match k {
            "MLFLOW_TRACKING_URI" => Some("https://u:p%40ss@h".into()),
            "MLFLOW_TRACKING_TOKEN" => Some(" t0k ".into()),
            _ => None,
        });
        assert_eq!(secrets, ["p%40ss", "t0k"]);
    }
}
