//! The GitHub REST client every wms command shares (`wms report`, `wms compare collect`): an
//! [`octocrab`] client pointed at `GITHUB_API_URL` (github.com or GitHub Enterprise Server's
//! `https://HOST/api/v3`) with the workflow's token, behind a small blocking API:
//! [`GitHub::get`], [`GitHub::get_all`] (follows `Link: rel="next"` across every page),
//! [`GitHub::post`] and [`GitHub::patch`].
//!
//! It owns the transport rules: secondary and primary rate limits are waited out a bounded number
//! of times (403/429 with `retry-after`, or `x-ratelimit-remaining: 0` with `x-ratelimit-reset`,
//! as GitHub's "Rate limits for the REST API" page asks); every other non-2xx answer becomes a
//! typed [`GitHubError`] naming the request, GitHub's message and, for 403, the job permission
//! the caller said it needs. It never follows a link to another host (the token would go with
//! it) and never prints the token. It knows nothing about comments, check runs or workflow runs:
//! callers build the paths and bodies.
//!
//! Blocking: it runs its own single-threaded Tokio runtime, so call it from plain threads, not
//! from inside an async task.

use std::time::Duration;

use octocrab::Octocrab;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::env_vars;
use crate::untrusted::text::for_log;

/// github.com's REST API; `GITHUB_API_URL` overrides it (Actions sets it on every runner).
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// GitHub's largest page (`per_page` above 100 is capped to 100).
pub const PER_PAGE: usize = 100;

/// The job permission a request needs, named as a workflow's `permissions:` block spells it, so a
/// 403 can say what to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    PullRequestsRead,
    PullRequestsWrite,
    ChecksWrite,
    DeploymentsWrite,
    ActionsRead,
    ContentsRead,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::PullRequestsRead => "pull-requests: read",
            Permission::PullRequestsWrite => "pull-requests: write",
            Permission::ChecksWrite => "checks: write",
            Permission::DeploymentsWrite => "deployments: write",
            Permission::ActionsRead => "actions: read",
            Permission::ContentsRead => "contents: read",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong talking to GitHub. `method` and `path` name the request (never the token);
/// `message` is GitHub's own `message` field, escaped for a log line.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error(
        "{api_url} is not a usable GitHub API URL: {reason}; hint: set GITHUB_API_URL to https://api.github.com or, for GitHub Enterprise Server, https://HOST/api/v3"
    )]
    BadApiUrl { api_url: String, reason: String },
    #[error("cannot start the GitHub client")]
    Setup {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{method} {path}: 401 {message}; hint: the token is missing, expired or wrong: pass GITHUB_TOKEN (in a workflow: `env: GITHUB_TOKEN: ${{{{ github.token }}}}`)"
    )]
    Unauthorized {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error(
        "{method} {path}: 403 {message}: the token lacks `{permission}`; hint: add `permissions: {permission}` to the job (a pull request from a fork only ever gets a read-only token)"
    )]
    Forbidden {
        method: &'static str,
        path: String,
        message: String,
        permission: Permission,
    },
    #[error(
        "{method} {path}: 404 {message}; hint: check the repository (owner/name), the number and GITHUB_API_URL; a token without access to a private repository also gets 404"
    )]
    NotFound {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error(
        "{method} {path}: 422 {message}{details}; hint: GitHub rejected the request's content, this is a wms bug if the inputs were valid — please report it"
    )]
    Validation {
        method: &'static str,
        path: String,
        message: String,
        /// GitHub's `errors` list, rendered as `: resource.field code, …`.
        details: String,
    },
    #[error(
        "{method} {path}: {status} rate limited, still after {retries} waits (GitHub asks to wait {wait_s} s more); hint: run the job again later"
    )]
    RateLimited {
        method: &'static str,
        path: String,
        status: u16,
        retries: u32,
        wait_s: u64,
    },
    #[error(
        "{method} {path}: {status} {message}; hint: GitHub may be having trouble; run the job again"
    )]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{method} {path}: the request failed; hint: check the network and GITHUB_API_URL")]
    Transport {
        method: &'static str,
        path: String,
        #[source]
        source: Box<octocrab::Error>,
    },
    #[error("{method} {path}: the answer is not the JSON GitHub sends; hint: check GITHUB_API_URL")]
    Decode {
        method: &'static str,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{method} {path}: the next-page link {link} leaves {api_url}; hint: check GITHUB_API_URL (wms does not send the token elsewhere)"
    )]
    ForeignLink {
        method: &'static str,
        path: String,
        link: String,
        api_url: String,
    },
}

impl GitHubError {
    /// The permission a 403 said is missing (the fork / read-only token case), else `None`.
    pub fn missing_permission(&self) -> Option<Permission> {
        match self {
            GitHubError::Forbidden { permission, .. } => Some(*permission),
            _ => None,
        }
    }
}

/// How long rate limits are waited out. GitHub's advice is "wait `retry-after` seconds", else
/// "until `x-ratelimit-reset`", else "at least a minute"; a wait longer than `max_wait` is not
/// worth a CI job's time and fails instead.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            max_wait: Duration::from_secs(120),
        }
    }
}

/// Where the client goes and with what.
#[derive(Clone)]
pub struct GitHubConfig {
    /// `https://api.github.com` or `https://HOST/api/v3`, no trailing slash.
    pub api_url: String,
    pub token: Option<String>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("api_url", &self.api_url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("retry", &self.retry)
            .finish()
    }
}

impl GitHubConfig {
    /// `GITHUB_API_URL` (else github.com) and `token`, else `GITHUB_TOKEN`; an empty token is none.
    pub fn from_env(token: Option<String>) -> Self {
        let api_url = std::env::var(env_vars::GITHUB_API_URL)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_API_URL.to_string());
        let token = token
            .or_else(|| std::env::var(env_vars::GITHUB_TOKEN).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        GitHubConfig {
            api_url,
            token,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// One parsed answer: status, the headers wms reads, the body.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    ratelimit_remaining: Option<u64>,
    ratelimit_reset: Option<u64>,
    link: Option<String>,
    body: String,
}

/// The shared GitHub client. Cheap to keep for a whole command.
pub struct GitHub {
    octo: Octocrab,
    runtime: tokio::runtime::Runtime,
    base: reqwest::Url,
    retry: RetryPolicy,
    has_token: bool,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.base.as_str())
            .field("has_token", &self.has_token)
            .finish()
    }
}

impl GitHub {
    pub fn new(config: GitHubConfig) -> Result<GitHub, GitHubError> {
        let GitHubConfig {
            api_url,
            token,
            retry,
            timeout,
        } = config;
        let trimmed = api_url.trim_end_matches('/').to_string();
        let bad = |reason: &str| GitHubError::BadApiUrl {
            api_url: for_log(&crate::untrusted::redact::url(&api_url)).into_owned(),
            reason: reason.into(),
        };
        let base = reqwest::Url::parse(&trimmed).map_err(|_| bad("not a URL"))?;
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad(
                "it carries credentials; pass the token as GITHUB_TOKEN",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("it has a query or fragment"));
        }
        match base.scheme() {
            "https" => {}
            // The token would travel in clear text: only to this machine (tests, a local proxy).
            "http"
                if base
                    .host_str()
                    .is_some_and(crate::untrusted::is_loopback_host) => {}
            _ => return Err(bad("only https (or http to 127.0.0.1) carries the token")),
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| GitHubError::Setup { source: e.into() })?;
        let has_token = token.is_some();
        let octo = {
            let _guard = runtime.enter();
            let mut builder = Octocrab::builder()
                .base_uri(trimmed.as_str())
                .map_err(|e| GitHubError::Setup { source: e.into() })?
                .set_connect_timeout(Some(Duration::from_secs(10)))
                .set_read_timeout(Some(timeout))
                .set_write_timeout(Some(timeout));
            if let Some(token) = token {
                builder = builder.personal_token(token);
            }
            builder
                .build()
                .map_err(|e| GitHubError::Setup { source: e.into() })?
        };
        Ok(GitHub {
            octo,
            runtime,
            base,
            retry,
            has_token,
        })
    }

    /// Whether a token was configured (without one, only public reads work).
    pub fn has_token(&self) -> bool {
        self.has_token
    }

    /// The API root requests go to (no trailing slash).
    pub fn api_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET path` (relative to the API root, e.g. `/repos/o/r/issues/1/comments?per_page=100`).
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        permission: Permission,
    ) -> Result<T, GitHubError> {
        let answer = self.send("GET", path, None::<&()>, permission)?;
        decode("GET", path, &answer.body)
    }

    /// `POST path` with a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        permission: Permission,
    ) -> Result<T, GitHubError> {
        let answer = self.send("POST", path, Some(body), permission)?;
        decode("POST", path, &answer.body)
    }

    /// `PATCH path` with a JSON body.
    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        permission: Permission,
    ) -> Result<T, GitHubError> {
        let answer = self.send("PATCH", path, Some(body), permission)?;
        decode("PATCH", path, &answer.body)
    }

    /// Every item of a paginated list, following `Link: <…>; rel="next"` until there is none.
    /// `key` names the array inside an object answer (`workflow_runs`, `jobs`, `check_runs`);
    /// `None` when the answer is the array itself (comments, deployments). `per_page=100` is
    /// added when the path does not set it. `max_items` stops early (`None`: all).
    pub fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        key: Option<&str>,
        permission: Permission,
        max_items: Option<usize>,
    ) -> Result<Vec<T>, GitHubError> {
        let mut next = if path.contains("per_page=") {
            path.to_string()
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}per_page={PER_PAGE}")
        };
        let mut seen = std::collections::HashSet::new();
        let mut items = Vec::new();
        loop {
            if !seen.insert(next.clone()) {
                // A server that links a page to itself would loop forever.
                break;
            }
            let answer = self.send("GET", &next, None::<&()>, permission)?;
            let page: serde_json::Value = decode("GET", &next, &answer.body)?;
            let list = match key {
                None => page,
                Some(k) => page.get(k).cloned().unwrap_or(serde_json::Value::Null),
            };
            let list: Vec<T> =
                serde_json::from_value(list).map_err(|source| GitHubError::Decode {
                    method: "GET",
                    path: next.clone(),
                    source,
                })?;
            let empty = list.is_empty();
            items.extend(list);
            if max_items.is_some_and(|m| items.len() >= m) {
                items.truncate(max_items.unwrap_or(usize::MAX));
                break;
            }
            match answer.link.as_deref().and_then(next_link) {
                Some(url) if !empty => next = self.relative(&next, &url)?,
                _ => break,
            }
        }
        Ok(items)
    }

    /// A next-page URL as a path under the API root; links to anywhere else are refused.
    fn relative(&self, current: &str, link: &str) -> Result<String, GitHubError> {
        let foreign = || GitHubError::ForeignLink {
            method: "GET",
            path: current.to_string(),
            link: for_log(link).into_owned(),
            api_url: self.api_url().to_string(),
        };
        let url = reqwest::Url::parse(link).map_err(|_| foreign())?;
        if url.scheme() != self.base.scheme()
            || url.host_str() != self.base.host_str()
            || url.port_or_known_default() != self.base.port_or_known_default()
        {
            return Err(foreign());
        }
        let prefix = self.base.path().trim_end_matches('/');
        let rest = url.path().strip_prefix(prefix).ok_or_else(foreign)?;
        if !rest.starts_with('/') {
            return Err(foreign());
        }
        Ok(match url.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        })
    }

    /// One request, rate limits waited out, non-2xx mapped to [`GitHubError`].
    fn send<B: Serialize>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&B>,
        permission: Permission,
    ) -> Result<Answer, GitHubError> {
        let mut retries = 0;
        loop {
            let answer = self.runtime.block_on(self.once(method, path, body))?;
            if (200..300).contains(&answer.status) {
                return Ok(answer);
            }
            if let Some(wait) = rate_limit_wait(&answer) {
                if retries >= self.retry.max_retries || wait > self.retry.max_wait {
                    return Err(GitHubError::RateLimited {
                        method,
                        path: path.to_string(),
                        status: answer.status,
                        retries,
                        wait_s: wait.as_secs(),
                    });
                }
                retries += 1;
                tracing::warn!(
                    "{method} {path}: GitHub rate limit ({}), waiting {} s (retry {retries} of {})",
                    answer.status,
                    wait.as_secs(),
                    self.retry.max_retries
                );
                std::thread::sleep(wait);
                continue;
            }
            return Err(status_error(method, path, permission, &answer));
        }
    }

    async fn once<B: Serialize>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer, GitHubError> {
        let transport = |source| GitHubError::Transport {
            method,
            path: path.to_string(),
            source: Box::new(source),
        };
        let builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        let request = self.octo.build_request(builder, body).map_err(transport)?;
        let response = self.octo.execute(request).await.map_err(transport)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let number = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        let status = response.status().as_u16();
        let retry_after = number("retry-after");
        let ratelimit_remaining = number("x-ratelimit-remaining");
        let ratelimit_reset = number("x-ratelimit-reset");
        let link = header("link");
        let body = self
            .octo
            .body_to_string(response)
            .await
            .map_err(transport)?;
        Ok(Answer {
            status,
            retry_after,
            ratelimit_remaining,
            ratelimit_reset,
            link,
            body,
        })
    }
}

/// How long GitHub asks to wait, when the answer is a rate limit (else `None`).
fn rate_limit_wait(answer: &Answer) -> Option<Duration> {
    if answer.status != 403 && answer.status != 429 {
        return None;
    }
    if let Some(s) = answer.retry_after {
        return Some(Duration::from_secs(s));
    }
    if answer.ratelimit_remaining == Some(0) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let reset = answer.ratelimit_reset.unwrap_or(now + 60);
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    // "If you exceeded a secondary rate limit … wait for at least one minute."
    let lower = answer.body.to_ascii_lowercase();
    (answer.status == 429 || lower.contains("secondary rate limit"))
        .then(|| Duration::from_secs(60))
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    message: Option<String>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

fn status_error(
    method: &'static str,
    path: &str,
    permission: Permission,
    answer: &Answer,
) -> GitHubError {
    let parsed: Option<ErrorBody> = serde_json::from_str(&answer.body).ok();
    let message = parsed
        .as_ref()
        .and_then(|b| b.message.clone())
        .unwrap_or_else(|| {
            let mut s: String = answer.body.chars().take(200).collect();
            if s.trim().is_empty() {
                s = "(no message)".into();
            }
            s
        });
    let message = for_log(&message).into_owned();
    let path = path.to_string();
    match answer.status {
        401 => GitHubError::Unauthorized {
            method,
            path,
            message,
        },
        403 => GitHubError::Forbidden {
            method,
            path,
            message,
            permission,
        },
        404 => GitHubError::NotFound {
            method,
            path,
            message,
        },
        422 => {
            let details: Vec<String> = parsed
                .map(|b| b.errors)
                .unwrap_or_default()
                .iter()
                .map(|e| match e {
                    serde_json::Value::String(s) => s.clone(),
                    other => {
                        let field = |k: &str| other.get(k).and_then(|v| v.as_str());
                        match (field("resource"), field("field"), field("code")) {
                            (_, _, Some("custom")) | (None, None, _) => field("message")
                                .map(str::to_string)
                                .unwrap_or_else(|| other.to_string()),
                            (r, f, c) => format!(
                                "{}.{} {}",
                                r.unwrap_or("?"),
                                f.unwrap_or("?"),
                                c.unwrap_or("invalid")
                            ),
                        }
                    }
                })
                .collect();
            GitHubError::Validation {
                method,
                path,
                message,
                details: if details.is_empty() {
                    String::new()
                } else {
                    format!(": {}", for_log(&details.join(", ")))
                },
            }
        }
        status => GitHubError::Status {
            method,
            path,
            status,
            message,
        },
    }
}

fn decode<T: DeserializeOwned>(
    method: &'static str,
    path: &str,
    body: &str,
) -> Result<T, GitHubError> {
    // 204 No Content and the like: decode `null` so `()`/`Value` callers still work.
    let body = if body.trim().is_empty() { "null" } else { body };
    serde_json::from_str(body).map_err(|source| GitHubError::Decode {
        method,
        path: path.to_string(),
        source,
    })
}

/// The `rel="next"` target of a `Link` header (RFC 8288 as GitHub writes it:
/// `<url>; rel="next", <url>; rel="last"`).
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| url.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found_among_the_others() {
        let h = r#"<https://api.github.com/repos/o/r/issues/1/comments?per_page=100&page=1>; rel="prev", <https://api.github.com/repos/o/r/issues/1/comments?per_page=100&page=3>; rel="next", <https://api.github.com/repos/o/r/issues/1/comments?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.github.com/repos/o/r/issues/1/comments?per_page=100&page=3")
        );
        assert_eq!(next_link(r#"<https://x/y>; rel="last""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn api_urls_that_would_leak_the_token_are_refused() {
        let cfg = |url: &str| GitHubConfig {
            api_url: url.into(),
            token: Some("t".into()),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(5),
        };
        for bad in [
            "http://github.example.com/api/v3",
            "https://user:pw@ghe.example.com/api/v3",
            "not a url",
        ] {
            let e = GitHub::new(cfg(bad)).unwrap_err();
            assert!(matches!(e, GitHubError::BadApiUrl { .. }), "{bad}: {e}");
            assert!(!e.to_string().contains("pw@"), "{e}");
        }
        let gh = GitHub::new(cfg("https://ghe.example.com/api/v3/")).unwrap();
        assert_eq!(gh.api_url(), "https://ghe.example.com/api/v3");
        assert_eq!(
            gh.relative(
                "/x",
                "https://ghe.example.com/api/v3/repos/o/r/issues?page=2"
            )
            .unwrap(),
            "/repos/o/r/issues?page=2"
        );
        for foreign in [
            "https://evil.example.com/api/v3/repos/o/r/issues?page=2",
            "http://ghe.example.com/api/v3/repos?page=2",
            "https://ghe.example.com/other/repos?page=2",
        ] {
            assert!(
                matches!(
                    gh.relative("/x", foreign),
                    Err(GitHubError::ForeignLink { .. })
                ),
                "{foreign}"
            );
        }
        assert!(!format!("{:?}", cfg("https://x")).contains("\"t\""));
    }

    #[test]
    fn rate_limits_are_recognised_from_headers_and_message() {
        let answer = |status, retry_after, remaining, body: &str| Answer {
            status,
            retry_after,
            ratelimit_remaining: remaining,
            ratelimit_reset: None,
            link: None,
            body: body.into(),
        };
        assert_eq!(
            rate_limit_wait(&answer(403, Some(7), None, "")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(&answer(429, Some(2), None, "")),
            Some(Duration::from_secs(2))
        );
        assert!(rate_limit_wait(&answer(403, None, Some(0), "")).is_some());
        assert_eq!(
            rate_limit_wait(&answer(
                403,
                None,
                None,
                r#"{"message":"You have exceeded a secondary rate limit"}"#
            )),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            rate_limit_wait(&answer(
                403,
                None,
                Some(4999),
                r#"{"message":"Resource not accessible by integration"}"#
            )),
            None
        );
        assert_eq!(rate_limit_wait(&answer(404, Some(1), None, "")), None);
    }

    #[test]
    fn errors_name_the_request_and_the_missing_permission() {
        let answer = |status, body: &str| Answer {
            status,
            retry_after: None,
            ratelimit_remaining: None,
            ratelimit_reset: None,
            link: None,
            body: body.into(),
        };
        let e = status_error(
            "POST",
            "/repos/o/r/check-runs",
            Permission::ChecksWrite,
            &answer(
                403,
                r#"{"message":"Resource not accessible by integration","documentation_url":"x"}"#,
            ),
        );
        assert_eq!(e.missing_permission(), Some(Permission::ChecksWrite));
        let text = e.to_string();
        assert!(
            text.contains("POST /repos/o/r/check-runs: 403 Resource not accessible by integration"),
            "{text}"
        );
        assert!(text.contains("permissions: checks: write"), "{text}");
        let e = status_error(
            "POST",
            "/p",
            Permission::ChecksWrite,
            &answer(
                422,
                r#"{"message":"Validation Failed","errors":[{"resource":"CheckRun","field":"head_sha","code":"missing_field"},"Only 50 annotations"]}"#,
            ),
        );
        assert!(
            e.to_string().contains(
                "422 Validation Failed: CheckRun.head_sha missing_field, Only 50 annotations"
            ),
            "{e}"
        );
        let e = status_error(
            "GET",
            "/p",
            Permission::ActionsRead,
            &answer(502, "<html>\n"),
        );
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
