//! Pushing a built image over the OCI distribution protocol (distribution-spec `spec.md`):
//! `HEAD /v2/<name>/blobs/<digest>` skips blobs the registry has, a cross-repository mount
//! (`POST …/blobs/uploads/?mount=&from=`) reuses blobs pushed to another repository of the same
//! registry in this run, other blobs go up as one monolithic upload (`POST` then `PUT ?digest=`);
//! an upload that fails in transit (the connection dropped mid-body, 5xx, 429) starts over in a
//! fresh upload session, with backoff. The manifest goes last — only after a `HEAD` of every blob
//! it names confirms the registry has it, so no registry ever holds a manifest pointing at a
//! missing blob.
//!
//! A base image from the same registry is mounted from its own repository (`from` = the base's
//! repository), so a build on a registry base uploads only its own layers.
//!
//! [`Session`] is the one implementation of talking to a registry, shared with pulls
//! ([`crate::oci::pull`]): auth follows the registry's `WWW-Authenticate` challenge: `Basic` sends
//! the credentials; `Bearer realm=…,service=…` fetches a token from the realm (with the
//! credentials, when there are any) for the session's scopes (`repository:<name>:pull,push` for a
//! push, plus `repository:<from>:pull` for a mount; `repository:<name>:pull` for a pull). Credentials come from the workflow (`--username` and
//! `--password-stdin`, or a Docker `config.json`); they are never printed: errors name where
//! credentials were looked for, not what they were. Connection errors, 429 and 5xx are retried
//! with exponential backoff.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};

use crate::oci::BuiltImage;
use crate::oci::spec::MEDIA_MANIFEST;
use crate::untrusted::text::for_log;

/// Attempts per request, the first included.
const ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubled for each later one.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Upload sessions per blob, the first included: a blob upload that fails in transit (the
/// connection dropped mid-body, a 5xx or 429 answer) starts over with a fresh session.
const UPLOAD_ATTEMPTS: u32 = 4;

/// Where an image goes: `host[:port]` and the repository path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

impl Target {
    /// Splits `REGISTRY/REPO` as Docker does: the first component is a registry when it has a
    /// `.` or `:` or is `localhost`; otherwise the image is on Docker Hub.
    pub fn new(name: &str, tag: &str) -> Self {
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ if !name.contains('/') => ("registry-1.docker.io".into(), format!("library/{name}")),
            _ => ("registry-1.docker.io".into(), name.to_string()),
        };
        Target {
            registry,
            repository,
            tag: tag.to_string(),
        }
    }

    /// Whether the registry is on this machine (plain HTTP is only allowed there).
    pub fn is_loopback(&self) -> bool {
        crate::untrusted::is_loopback_authority(&self.registry)
    }
}

/// A user name and password (or token) and where they came from, for error messages.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .field("source", &self.source)
            .finish()
    }
}

/// How to reach a registry, to push or to pull.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Plain HTTP (loopback registries only; checked by the caller).
    pub insecure: bool,
    pub credentials: Option<Credentials>,
    /// Where credentials were looked for, named in a 401/403 error.
    pub tried: Vec<String>,
    pub timeout: Duration,
}

/// The options of a push (the same as a pull's).
pub type PushOptions = RegistryOptions;

/// What one push did, blob by blob.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushReport {
    pub uploaded: Vec<String>,
    pub mounted: Vec<String>,
    pub existing: Vec<String>,
    /// Blob uploads started over with a fresh upload session after one failed in transit.
    pub retries: u32,
    pub manifest_digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "cannot reach the registry {registry}; hint: check the address, and pass --insecure for a plain-HTTP registry on loopback"
    )]
    Unreachable {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the registry {registry} refused {what} ({status}); credentials tried: {tried}; hint: pass --username and --password-stdin, or log in with `docker login {registry}`"
    )]
    Denied {
        registry: String,
        what: String,
        status: u16,
        tried: String,
    },
    #[error("the registry {registry} answered {status} to {what}: {body}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error(
        "the upload of {digest} to {registry} failed {attempts} times, each in a fresh upload session; no manifest was pushed; hint: check the registry's health and the network between (a proxy that cuts long requests?), then push again"
    )]
    UploadFailed {
        registry: String,
        digest: String,
        attempts: u32,
        /// The last attempt's failure: the transport error, or the registry's answer.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the registry {registry} does not confirm {digest} after its upload; no manifest was pushed; hint: push again; if it persists, the registry loses uploads"
    )]
    NotConfirmed { registry: String, digest: String },
    #[error("the registry {registry}'s token service {realm} failed: {message}")]
    Token {
        registry: String,
        realm: String,
        message: String,
    },
}

/// Pushes `image` to every target, blobs first, manifests last.
pub fn push(
    image: &BuiltImage,
    targets: &[Target],
    opts: &PushOptions,
) -> Result<PushReport, RegistryError> {
    let mut report = PushReport {
        manifest_digest: image.digest().to_string(),
        ..PushReport::default()
    };
    let client = client(opts)?;
    // Repositories of this run per registry that already hold every blob, for mounts.
    let mut done: Vec<Target> = Vec::new();
    for target in targets {
        let mount_from = done
            .iter()
            .find(|d| d.registry == target.registry && d.repository != target.repository)
            .map(|d| d.repository.clone());
        // The base's layers are in the base's repository when it is on this registry.
        let base_from = image
            .base
            .as_ref()
            .filter(|b| b.registry == target.registry && b.repository != target.repository);
        let mut scopes = vec![format!("repository:{}:pull,push", target.repository)];
        scopes.extend(
            mount_from
                .iter()
                .chain(base_from.map(|b| &b.repository))
                .map(|r| format!("repository:{r}:pull")),
        );
        let mut session = Session::new(&client, &target.registry, &target.repository, opts, scopes);
        for (digest, bytes) in image.blobs() {
            if session.has_blob(digest)? {
                report.existing.push(digest.clone());
                continue;
            }
            let from = match base_from {
                Some(b) if b.layers.contains(digest) => Some(&b.repository),
                _ => mount_from.as_ref(),
            };
            if let Some(from) = from
                && session.mount(digest, from)?
            {
                report.mounted.push(digest.clone());
                continue;
            }
            report.retries += session.upload(digest, bytes)?;
            report.uploaded.push(digest.clone());
        }
        // Every blob the manifest names is confirmed by the registry itself before it goes up.
        for (digest, _) in image.blobs() {
            if !session.has_blob(digest)? {
                return Err(RegistryError::NotConfirmed {
                    registry: target.registry.clone(),
                    digest: digest.clone(),
                });
            }
        }
        session.put_manifest(&target.tag, image.manifest_bytes())?;
        if !done
            .iter()
            .any(|d| d.registry == target.registry && d.repository == target.repository)
        {
            done.push(target.clone());
        }
    }
    Ok(report)
}

/// The HTTP client of a push or a pull.
pub(crate) fn client(opts: &RegistryOptions) -> Result<Client, RegistryError> {
    Client::builder()
        .timeout(opts.timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| RegistryError::Unreachable {
            registry: String::new(),
            source,
        })
}

/// One registry + repository, with the auth it has negotiated.
pub(crate) struct Session<'a> {
    client: &'a Client,
    registry: &'a str,
    repository: &'a str,
    opts: &'a RegistryOptions,
    /// Token scopes asked of a Bearer realm.
    scopes: Vec<String>,
    base: String,
    authorization: Option<String>,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        client: &'a Client,
        registry: &'a str,
        repository: &'a str,
        opts: &'a RegistryOptions,
        scopes: Vec<String>,
    ) -> Self {
        let scheme = if opts.insecure { "http" } else { "https" };
        Session {
            client,
            registry,
            repository,
            opts,
            scopes,
            base: format!("{scheme}://{registry}"),
            authorization: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// `GET /v2/<name>/<path>` with auth and retries; the caller judges the status.
    pub(crate) fn get(
        &mut self,
        what: &str,
        path: &str,
        accept: &str,
    ) -> Result<Response, RegistryError> {
        let url = self.url(path);
        self.send(what, |c| {
            let request = c.get(&url);
            if accept.is_empty() {
                request
            } else {
                request.header(reqwest::header::ACCEPT, accept)
            }
        })
    }

    fn has_blob(&mut self, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.send(&format!("HEAD blob {digest}"), |c| c.head(&url))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&format!("HEAD blob {digest}"), resp)),
        }
    }

    /// Asks the registry to link a blob from another repository; `false` when it started an
    /// ordinary upload instead (the session is then abandoned and a fresh upload made).
    fn mount(&mut self, digest: &str, from: &str) -> Result<bool, RegistryError> {
        let url = self.url("blobs/uploads/");
        let query = [("mount", digest), ("from", from)];
        let resp = self.send(&format!("mount of {digest}"), |c| {
            c.post(&url).query(&query)
        })?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => Ok(false),
            _ => Err(self.status_error(&format!("mount of {digest}"), resp)),
        }
    }

    /// Uploads a blob; one that fails in transit is uploaded again in a fresh session (the
    /// broken one is left to the registry to expire), with backoff. Returns the retries.
    fn upload(&mut self, digest: &str, bytes: &[u8]) -> Result<u32, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload_once(digest, bytes) {
                Ok(()) => return Ok(attempt - 1),
                Err(e) if retry_upload(&e) => {
                    if attempt >= UPLOAD_ATTEMPTS {
                        return Err(RegistryError::UploadFailed {
                            registry: self.registry.to_string(),
                            digest: digest.to_string(),
                            attempts: attempt,
                            source: match e {
                                RegistryError::Unreachable { source, .. } => Box::new(source),
                                other => Box::new(other),
                            },
                        });
                    }
                    tracing::warn!(registry = %self.registry, digest, attempt, error = %e, "blob upload failed in transit; starting a fresh upload session");
                    std::thread::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One upload session: `POST` to open it, one `PUT ?digest=` with the whole blob.
    fn upload_once(&mut self, digest: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let what = format!("upload of {digest}");
        let url = self.url("blobs/uploads/");
        let resp = self.send(&what, |c| c.post(&url).header(CONTENT_LENGTH, 0))?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&what, resp));
        }
        let location = self.location(&resp, &what)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{separator}digest={digest}");
        let resp = self.send(&what, |c| {
            c.put(&put_url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(bytes.to_vec())
        })?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(&what, resp));
        }
        Ok(())
    }

    fn put_manifest(&mut self, tag: &str, manifest: &[u8]) -> Result<(), RegistryError> {
        self.put_manifest_as(tag, MEDIA_MANIFEST, manifest)
            .map(|_| ())
    }

    /// The upload URL from `Location`, made absolute (registries may answer a path).
    fn location(&self, resp: &Response, what: &str) -> Result<String, RegistryError> {
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Status {
                registry: self.registry.to_string(),
                what: what.into(),
                status: resp.status().as_u16(),
                body: "no Location header".into(),
            })?;
        Ok(if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        })
    }

    /// Sends with auth, answering one 401 challenge and retrying transient failures.
    fn send(
        &mut self,
        what: &str,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut challenged = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = build(self.client);
            if let Some(auth) = &self.authorization {
                request = request.header(AUTHORIZATION, auth);
            }
            let result = request.send();
            let retry_after = match &result {
                Err(e) if attempt < ATTEMPTS && (e.is_timeout() || e.is_connect()) => {
                    Some(FIRST_BACKOFF * 2u32.pow(attempt - 1))
                }
                Ok(r) if attempt < ATTEMPTS && transient(r.status()) => {
                    Some(retry_after(r).unwrap_or(FIRST_BACKOFF * 2u32.pow(attempt - 1)))
                }
                _ => None,
            };
            if let Some(wait) = retry_after {
                tracing::warn!(registry = %self.registry, what, attempt, "retrying");
                std::thread::sleep(wait);
                continue;
            }
            let resp = result.map_err(|source| RegistryError::Unreachable {
                registry: self.registry.to_string(),
                source,
            })?;
            match resp.status() {
                StatusCode::UNAUTHORIZED if !challenged => {
                    challenged = true;
                    let challenge = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    self.authorization = Some(self.answer(&challenge, what)?);
                    attempt = 0;
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(self.denied(what, resp.status()));
                }
                _ => return Ok(resp),
            }
        }
    }

    /// The `Authorization` value for a `WWW-Authenticate` challenge.
    fn answer(&self, challenge: &str, what: &str) -> Result<String, RegistryError> {
        let (scheme, params) = parse_challenge(challenge);
        let basic = self.opts.credentials.as_ref().map(|c| {
            let pair = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        if scheme.eq_ignore_ascii_case("bearer") {
            let realm = params
                .iter()
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let token_err = |message: String| RegistryError::Token {
                registry: self.registry.to_string(),
                realm: realm.clone(),
                message,
            };
            let allowed = realm.starts_with("https://")
                || (self.opts.insecure && realm.starts_with("http://"));
            if !allowed {
                return Err(token_err(format!(
                    "the realm {} is not an https URL; hint: wms sends credentials only over https",
                    for_log(&realm)
                )));
            }
            let mut query: Vec<(String, String)> = params
                .iter()
                .filter(|(k, _)| k == "service")
                .cloned()
                .collect();
            query.extend(self.scopes.iter().map(|s| ("scope".to_string(), s.clone())));
            let mut request = self.client.get(&realm).query(&query);
            if let Some(b) = &basic {
                request = request.header(AUTHORIZATION, b);
            }
            let resp = request.send().map_err(|e| token_err(e.to_string()))?;
            if matches!(
                resp.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                return Err(self.denied(what, resp.status()));
            }
            if !resp.status().is_success() {
                return Err(token_err(format!("HTTP {}", resp.status().as_u16())));
            }
            #[derive(serde::Deserialize)]
            struct TokenResponse {
                token: Option<String>,
                access_token: Option<String>,
            }
            let body: TokenResponse = resp
                .json()
                .map_err(|e| token_err(format!("not a token response: {e}")))?;
            let token = body
                .token
                .or(body.access_token)
                .ok_or_else(|| token_err("no token in the response".into()))?;
            return Ok(format!("Bearer {token}"));
        }
        basic.ok_or_else(|| self.denied(what, StatusCode::UNAUTHORIZED))
    }

    pub(crate) fn denied(&self, what: &str, status: StatusCode) -> RegistryError {
        RegistryError::Denied {
            registry: self.registry.to_string(),
            what: what.into(),
            status: status.as_u16(),
            tried: if self.opts.tried.is_empty() {
                "none (anonymous)".into()
            } else {
                self.opts.tried.join(", ")
            },
        }
    }

    pub(crate) fn status_error(&self, what: &str, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        RegistryError::Status {
            registry: self.registry.to_string(),
            what: what.into(),
            status,
            body: short_body(resp),
        }
    }
}

/// The first 300 characters of an error body, escaped for a log line (the registry is untrusted).
pub(crate) fn short_body(resp: Response) -> String {
    let mut body = Vec::new();
    // An error body is small; a hostile registry's endless one is cut off.
    let _ = std::io::Read::read_to_end(&mut std::io::Read::take(resp, 4096), &mut body);
    let body = String::from_utf8_lossy(&body);
    let mut body = for_log(body.trim()).into_owned();
    if body.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| body.is_char_boundary(i))
            .unwrap_or(0);
        body.truncate(cut);
        body.push('…');
    }
    body
}

/// Whether a failed upload session is worth a fresh one: the connection broke, or the
/// registry answered 5xx or 429 (after [`Session::send`]'s own retries).
fn retry_upload(e: &RegistryError) -> bool {
    match e {
        RegistryError::Unreachable { .. } => true,
        RegistryError::Status { status, .. } => StatusCode::from_u16(*status).is_ok_and(transient),
        _ => false,
    }
}

fn transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// `Bearer realm="https://auth",service="registry",scope="…"` → ("Bearer", [(realm, …), …]).
pub fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.push((key, value.to_string()));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    (scheme.to_string(), params)
}

// Artifacts that refer to an image (the SBOM, `crate::oci::sbom`): any blob, and a manifest of
// any media type under a tag or a digest.
impl Session<'_> {
    /// Uploads `bytes` unless the repository has the blob; `true` when it was uploaded.
    pub(crate) fn ensure_blob(
        &mut self,
        digest: &str,
        bytes: &[u8],
    ) -> Result<bool, RegistryError> {
        if self.has_blob(digest)? {
            return Ok(false);
        }
        self.upload(digest, bytes)?;
        if !self.has_blob(digest)? {
            return Err(RegistryError::NotConfirmed {
                registry: self.registry.to_string(),
                digest: digest.to_string(),
            });
        }
        Ok(true)
    }

    /// `PUT /v2/<name>/manifests/<reference>` with `media_type`; `true` when the registry
    /// answered `OCI-Subject`, i.e. it indexes the manifest's `subject` for the referrers API.
    pub(crate) fn put_manifest_as(
        &mut self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<bool, RegistryError> {
        let what = format!("manifest {reference}");
        let url = self.url(&format!("manifests/{reference}"));
        let resp = self.send(&what, |c| {
            c.put(&url)
                .header(CONTENT_TYPE, media_type)
                .body(bytes.to_vec())
        })?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(&what, resp));
        }
        Ok(resp.headers().contains_key("oci-subject"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_like_docker() {
        let t = Target::new("127.0.0.1:5000/meters/unet", "v1");
        assert_eq!(
            (t.registry.as_str(), t.repository.as_str()),
            ("127.0.0.1:5000", "meters/unet")
        );
        assert!(t.is_loopback());
        let hub = Target::new("meters", "v1");
        assert_eq!(hub.registry, "registry-1.docker.io");
        assert_eq!(hub.repository, "library/meters");
        assert!(!hub.is_loopback());
        let ecr = Target::new("123456789012.dkr.ecr.eu-west-1.amazonaws.com/meters", "v1");
        assert_eq!(ecr.registry, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert!(Target::new("localhost:5000/m", "t").is_loopback());
        assert!(Target::new("[::1]:5000/m", "t").is_loopback());
        assert!(Target::new("127.0.0.2/m", "t").is_loopback());
        assert!(!Target::new("127.0.0.1.example.com/m", "t").is_loopback());
    }

    #[test]
    fn challenges_are_parsed() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:m:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:m:pull,push".into()),
            ]
        );
        assert_eq!(parse_challenge(r#"Basic realm="wms""#).0, "Basic");
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
            source: "--password-stdin".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
