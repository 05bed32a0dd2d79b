//! EKS credentials for `wms deploy --eks-cluster NAME --region R`, without the aws CLI or
//! kubectl: the cluster's API endpoint and CA from EKS `DescribeCluster`, and the bearer token
//! `aws eks get-token` prints, both signed with SigV4 using the AWS SDK's default credential chain
//! (which includes what `wms aws assume-role` exported).
//!
//! The token (aws-cli `awscli/customizations/eks/get_token.py`; checked on the cluster side by
//! aws-iam-authenticator `pkg/token/token.go`) is `k8s-aws-v1.` + unpadded base64url of a
//! presigned `GET https://sts.<region>.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15`
//! whose signed headers include `x-k8s-aws-id: <cluster>`. The authenticator accepts it for
//! 15 minutes after `X-Amz-Date` whatever `X-Amz-Expires` says, so the client re-signs a token
//! that is older than 14 minutes before each request ([`TokenSource`]); a long rollout wait
//! never runs into a 401.
//!
//! `DescribeCluster` is one SigV4-signed REST GET (`/clusters/<name>`) through the same signer,
//! not aws-sdk-eks: the token needs `aws-sigv4` directly anyway, and the generated EKS client
//! (every EKS operation, ~60 of them) would add a large crate to every build for one GET of
//! which we read two fields. The endpoint follows the SDK's overrides (`AWS_ENDPOINT_URL_EKS`,
//! then `AWS_ENDPOINT_URL` / `--endpoint-url`).
//!
//! This module must not print or log a token, a signature or credentials, and trusts nothing
//! in EKS's answer: the endpoint must be an https URL and the CA real PEM certificates.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningError, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;

use crate::aws;
use crate::untrusted::{redact, text};

/// What every EKS token starts with (aws-cli `TOKEN_PREFIX`).
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The signed header that binds a token to one cluster (aws-cli `K8S_AWS_ID_HEADER`).
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// `X-Amz-Expires` of the presigned URL, as aws-cli sends it. The authenticator ignores it
/// (tokens live 15 minutes after `X-Amz-Date`) but rejects values outside 0..=900.
pub const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);
/// How long the cluster accepts a token after its `X-Amz-Date` (aws-iam-authenticator).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// A token this old is re-signed before the next request (aws-cli's ExecCredential expiry).
pub const REFRESH_AFTER: Duration = Duration::from_secs(14 * 60);
/// The longest token the authenticator accepts.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The STS API version GetCallerIdentity is called with.
pub const STS_API_VERSION: &str = "2011-06-15";
/// Refresh SDK credentials this long before they expire.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Answers from DescribeCluster larger than this are refused (a real one is a few KiB).
const MAX_DESCRIBE_BYTES: usize = 1 << 20;
/// A CA bundle larger than this is refused (one EKS CA is ~1.5 KiB of PEM).
const MAX_CA_BYTES: usize = 64 << 10;

/// Errors from getting EKS credentials; each names the cluster or field involved.
#[derive(Debug, thiserror::Error)]
pub enum EksError {
    #[error(
        "--eks-cluster {name:?} is not an EKS cluster name ({reason}); hint: pass the name `aws eks list-clusters` shows (letters, digits, `-` and `_`, starting with a letter or digit, at most 100)"
    )]
    ClusterName { name: String, reason: &'static str },
    #[error(
        "--region {region:?} is not an AWS region name; hint: pass the cluster's region, e.g. --region eu-west-1"
    )]
    Region { region: String },
    #[error("no AWS region for EKS cluster {cluster}; hint: pass --region or set AWS_REGION")]
    NoRegion { cluster: String },
    #[error(
        "no AWS credentials for EKS cluster {cluster}: {message}; hint: run `wms aws assume-role` first, or set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )]
    Credentials { cluster: String, message: String },
    #[error(
        "cannot SigV4-sign the {what} for EKS cluster {cluster}; hint: check --region and the AWS credentials"
    )]
    Sign {
        what: &'static str,
        cluster: String,
        #[source]
        source: SigningError,
    },
    #[error(
        "the EKS token for cluster {cluster} would be {len} bytes, over the {MAX_TOKEN_BYTES} the cluster accepts; hint: use credentials with a shorter session token (e.g. `wms aws assume-role`)"
    )]
    TokenTooLong { cluster: String, len: usize },
    #[error("EKS DescribeCluster {cluster} at {endpoint} failed: {message}; hint: {hint}")]
    Describe {
        cluster: String,
        endpoint: String,
        message: String,
        hint: &'static str,
    },
    #[error(
        "EKS DescribeCluster {cluster} answered an unusable `{field}` ({reason}); hint: {hint}"
    )]
    ClusterField {
        cluster: String,
        field: &'static str,
        reason: String,
        hint: &'static str,
    },
    #[error(
        "cannot build the Kubernetes client for EKS cluster {cluster}; hint: check the cluster's CA (`aws eks describe-cluster --name {cluster}`)"
    )]
    Client {
        cluster: String,
        #[source]
        source: kube::Error,
    },
}

/// Checks an EKS cluster name (EKS: `^[0-9A-Za-z][A-Za-z0-9\-_]*`, 1..=100). It goes into a URL
/// path and a signed header, so nothing else may pass.
pub fn check_cluster_name(name: &str) -> Result<(), EksError> {
    let bad = |reason| {
        Err(EksError::ClusterName {
            name: text::for_log(name).into_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 100 {
        return bad("longer than 100 characters");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return bad("only letters, digits, `-` and `_` are allowed");
    }
    Ok(())
}

/// Checks an AWS region name (`eu-west-1`, `us-gov-west-1`, `cn-north-1`): it becomes part of a
/// host name.
pub fn check_region(region: &str) -> Result<(), EksError> {
    let ok = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
        && region.contains('-');
    if ok {
        Ok(())
    } else {
        Err(EksError::Region {
            region: text::for_log(region).into_owned(),
        })
    }
}

/// The DNS suffix of the region's partition (China regions live under `amazonaws.com.cn`).
fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// The regional STS endpoint host the token points at (`sts.<region>.amazonaws.com`). Always
/// the real one: the cluster's authenticator calls it, not us.
pub fn sts_host(region: &str) -> String {
    format!("sts.{region}.{}", dns_suffix(region))
}

/// Percent-encodes everything but SigV4's unreserved characters (`A-Z a-z 0-9 - _ . ~`), the
/// encoding SigV4's canonical query string uses, so the URL carries exactly what was signed.
fn aws_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The presigned STS `GetCallerIdentity` URL for `cluster`, signed at `at`.
pub fn presigned_url(
    creds: &Credentials,
    region: &str,
    cluster: &str,
    at: SystemTime,
) -> Result<String, EksError> {
    check_cluster_name(cluster)?;
    check_region(region)?;
    let base = format!(
        "https://{}/?Action=GetCallerIdentity&Version={STS_API_VERSION}",
        sts_host(region)
    );
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(at)
        .settings(settings)
        .build()
        .expect("identity, region, name, time and settings are all set")
        .into();
    // The empty body's hash, as botocore and aws-sdk-go presign non-S3 requests.
    let request = SignableRequest::new(
        "GET",
        &base,
        std::iter::once((CLUSTER_ID_HEADER, cluster)),
        SignableBody::Bytes(&[]),
    )
    .map_err(|source| EksError::Sign {
        what: "STS GetCallerIdentity URL",
        cluster: cluster.to_string(),
        source,
    })?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|source| EksError::Sign {
            what: "STS GetCallerIdentity URL",
            cluster: cluster.to_string(),
            source,
        })?
        .into_parts();
    let mut url = base;
    for (name, value) in instructions.params() {
        url.push('&');
        url.push_str(&aws_encode(name));
        url.push('=');
        url.push_str(&aws_encode(value));
    }
    Ok(url)
}

/// The bearer token for `cluster`: `k8s-aws-v1.` + unpadded base64url of [`presigned_url`].
pub fn token(
    creds: &Credentials,
    region: &str,
    cluster: &str,
    at: SystemTime,
) -> Result<String, EksError> {
    let url = presigned_url(creds, region, cluster, at)?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url.as_bytes())
    );
    if token.len() > MAX_TOKEN_BYTES {
        return Err(EksError::TokenTooLong {
            cluster: cluster.to_string(),
            len: token.len(),
        });
    }
    Ok(token)
}

/// What `DescribeCluster` says about a cluster, as answered (checked by the methods).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    /// The API server URL (`https://….eks.amazonaws.com`).
    pub endpoint: String,
    /// `certificateAuthority.data`: base64 of the PEM bundle.
    pub certificate_authority: String,
    /// `ACTIVE`, `CREATING`, …
    pub status: Option<String>,
}

impl Cluster {
    fn field_error(&self, field: &'static str, reason: String, hint: &'static str) -> EksError {
        EksError::ClusterField {
            cluster: self.name.clone(),
            field,
            reason,
            hint,
        }
    }

    /// The API server URL: https, a host, no user info.
    pub fn cluster_url(&self) -> Result<http::Uri, EksError> {
        let hint = "check that the cluster is ACTIVE (`aws eks describe-cluster`)";
        let uri: http::Uri = self.endpoint.parse().map_err(|e: http::uri::InvalidUri| {
            self.field_error("endpoint", format!("not a URL: {e}"), hint)
        })?;
        if uri.scheme_str() != Some("https") {
            return Err(self.field_error("endpoint", "not an https URL".into(), hint));
        }
        match uri.authority() {
            Some(a) if !a.as_str().contains('@') && !a.host().is_empty() => Ok(uri),
            _ => Err(self.field_error("endpoint", "no host, or user info".into(), hint)),
        }
    }

    /// The CA certificates (DER), decoded from base64 of PEM.
    pub fn ca_certificates(&self) -> Result<Vec<Vec<u8>>, EksError> {
        let hint = "the cluster's certificateAuthority must be base64 of PEM certificates; check `aws eks describe-cluster`";
        let fail = |reason: String| self.field_error("certificateAuthority.data", reason, hint);
        let compact: String = self
            .certificate_authority
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if compact.len() > MAX_CA_BYTES * 4 / 3 + 4 {
            return Err(fail(format!("over {MAX_CA_BYTES} bytes")));
        }
        let pem = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| fail(format!("not base64: {e}")))?;
        let pem = std::str::from_utf8(&pem).map_err(|_| fail("not PEM text".into()))?;
        pem_certificates(pem).map_err(fail)
    }

    /// A `kube::Config` for this cluster with a fixed bearer token (valid [`TOKEN_LIFETIME`]);
    /// [`EksAuth::client`] re-signs instead.
    pub fn kube_config(&self, token: Option<&str>) -> Result<kube::Config, EksError> {
        let mut config = kube::Config::new(self.cluster_url()?);
        config.root_cert = Some(self.ca_certificates()?);
        config.auth_info.token = token.map(|t| t.to_string().into());
        Ok(config)
    }
}

/// The DER bodies of the `CERTIFICATE` blocks of a PEM bundle; at least one, nothing else.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        if !block.starts_with(BEGIN) {
            return Err("a PEM block that is not a CERTIFICATE".into());
        }
        let body_and_more = &block[BEGIN.len()..];
        let end = body_and_more
            .find(END)
            .ok_or_else(|| "a CERTIFICATE block without its END line".to_string())?;
        let body: String = body_and_more[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("certificate {} is not base64: {e}", certs.len() + 1))?;
        // A certificate is a DER SEQUENCE.
        if der.len() < 16 || der[0] != 0x30 {
            return Err(format!("certificate {} is not DER", certs.len() + 1));
        }
        certs.push(der);
        rest = &body_and_more[end + END.len()..];
    }
    if certs.is_empty() {
        return Err("no PEM CERTIFICATE block".into());
    }
    Ok(certs)
}

/// The EKS API base URL: `AWS_ENDPOINT_URL_EKS`, else the SDK's global override
/// (`AWS_ENDPOINT_URL`, profile, `--endpoint-url`), else `https://eks.<region>.<suffix>`.
pub fn eks_endpoint(sdk: &aws_config::SdkConfig, region: &str) -> String {
    let configured = std::env::var(crate::env_vars::AWS_ENDPOINT_URL_EKS)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| sdk.endpoint_url().map(str::to_string));
    match configured {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("https://eks.{region}.{}", dns_suffix(region)),
    }
}

/// The first line of an AWS error answer: its type (header or body) and message, made safe
/// for a log line.
fn aws_error_text(error_type: Option<&str>, body: &[u8]) -> String {
    #[derive(serde::Deserialize, Default)]
    struct ErrorBody {
        #[serde(alias = "Message")]
        message: Option<String>,
        #[serde(rename = "__type")]
        kind: Option<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    // `x-amzn-ErrorType` may carry `:http://…` after the name.
    let kind = error_type
        .map(|t| t.split(':').next().unwrap_or(t).to_string())
        .or(parsed.kind);
    let mut line = match (kind, parsed.message) {
        (Some(k), Some(m)) => format!("{k}: {m}"),
        (Some(k), None) => k,
        (None, Some(m)) => m,
        (None, None) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    if line.len() > 300 {
        let mut cut = 300;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    redact::text(&text::for_log(&line)).into_owned()
}

/// EKS `DescribeCluster` for `name` in `region` with `creds`.
pub async fn describe_cluster(
    sdk: &aws_config::SdkConfig,
    creds: &Credentials,
    region: &str,
    name: &str,
) -> Result<Cluster, EksError> {
    check_cluster_name(name)?;
    check_region(region)?;
    let endpoint = eks_endpoint(sdk, region);
    let url = format!("{endpoint}/clusters/{name}");
    let fail = |message: String, hint: &'static str| EksError::Describe {
        cluster: name.to_string(),
        endpoint: redact::url(&endpoint).into_owned(),
        message,
        hint,
    };
    let http = crate::aws::http_client().map_err(|e| fail(e.to_string(), "check the TLS setup"))?;
    let mut last = None;
    // EKS occasionally answers 5xx or throttles; the SDK would retry three times too.
    for attempt in 0..3u32 {
        crate::aws::backoff(attempt, Duration::from_millis(250)).await;
        let headers = signed_headers(creds, region, "eks", &url, name)?;
        let mut req = http.get(&url).header("accept", "application/json");
        for (k, v) in &headers {
            req = req.header(*k, v.as_ref());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                last = Some(fail(
                    redact::text(&e.to_string()).into_owned(),
                    "EKS did not answer; check the network and --region",
                ));
                continue;
            }
        };
        let status = resp.status();
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_limited(resp).await.map_err(|m| {
            fail(
                m,
                "EKS's answer was cut or too large; check the EKS endpoint",
            )
        })?;
        if status.is_server_error() || status.as_u16() == 429 {
            last = Some(fail(
                format!(
                    "HTTP {status}: {}",
                    aws_error_text(error_type.as_deref(), &body)
                ),
                "EKS is unavailable or throttling; re-run the job",
            ));
            continue;
        }
        if !status.is_success() {
            let hint = match status.as_u16() {
                404 => {
                    "no such cluster in this region; check --eks-cluster and --region (`aws eks list-clusters --region R`)"
                }
                401 | 403 => {
                    "the credentials need `eks:DescribeCluster` on the cluster; run `wms aws assume-role` with a role that has it"
                }
                _ => "check the EKS endpoint and the request",
            };
            return Err(fail(
                format!(
                    "HTTP {status}: {}",
                    aws_error_text(error_type.as_deref(), &body)
                ),
                hint,
            ));
        }
        return parse_describe(name, &body);
    }
    Err(last.expect("the loop ran at least once"))
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_DESCRIBE_BYTES {
            return Err(format!("answer over {MAX_DESCRIBE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_describe(name: &str, body: &[u8]) -> Result<Cluster, EksError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        cluster: Option<Described>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Described {
        endpoint: Option<String>,
        certificate_authority: Option<Ca>,
        status: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Ca {
        data: Option<String>,
    }
    let bad = |field: &'static str, reason: String| EksError::ClusterField {
        cluster: name.to_string(),
        field,
        reason,
        hint: "check the EKS endpoint (AWS_ENDPOINT_URL_EKS) and that the cluster is ACTIVE",
    };
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| bad("cluster", format!("not the expected JSON: {e}")))?;
    let described = answer
        .cluster
        .ok_or_else(|| bad("cluster", "missing".into()))?;
    let status = described.status.map(|s| text::for_log(&s).into_owned());
    let missing = |field| {
        bad(
            field,
            format!(
                "missing (cluster status {})",
                status.as_deref().unwrap_or("unknown")
            ),
        )
    };
    let endpoint = described
        .endpoint
        .filter(|e| !e.is_empty())
        .ok_or_else(|| missing("endpoint"))?;
    let certificate_authority = described
        .certificate_authority
        .and_then(|c| c.data)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| missing("certificateAuthority.data"))?;
    Ok(Cluster {
        name: name.to_string(),
        endpoint,
        certificate_authority,
        status,
    })
}

/// SigV4 `Authorization`, `x-amz-date` (and `x-amz-security-token`) headers for a GET of `url`.
fn signed_headers(
    creds: &Credentials,
    region: &str,
    service: &str,
    url: &str,
    cluster: &str,
) -> Result<Vec<(&'static str, Cow<'static, str>)>, EksError> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("identity, region, name, time and settings are all set")
        .into();
    let err = |source| EksError::Sign {
        what: "DescribeCluster request",
        cluster: cluster.to_string(),
        source,
    };
    let request = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(err)?;
    let (instructions, _) = sign(request, &params).map_err(err)?.into_parts();
    let (headers, _) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), Cow::Owned(h.value().to_string())))
        .collect())
}

/// Signs EKS tokens for one cluster and hands out one no older than [`REFRESH_AFTER`].
pub struct TokenSource {
    cluster: String,
    region: String,
    state: Mutex<TokenState>,
}

struct TokenState {
    creds: Credentials,
    token: String,
    signed_at: SystemTime,
}

impl TokenSource {
    /// Signs the first token at `at` (so bad input fails here, not on the first request).
    pub fn new(
        creds: Credentials,
        region: &str,
        cluster: &str,
        at: SystemTime,
    ) -> Result<Self, EksError> {
        let token = token(&creds, region, cluster, at)?;
        Ok(Self {
            cluster: cluster.to_string(),
            region: region.to_string(),
            state: Mutex::new(TokenState {
                creds,
                token,
                signed_at: at,
            }),
        })
    }

    /// The token to send at `now`: the current one, or a new one when the current one is
    /// [`REFRESH_AFTER`] old (or from the future: the clock moved back).
    pub fn token_at(&self, now: SystemTime) -> Result<String, EksError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stale = match now.duration_since(state.signed_at) {
            Ok(age) => age >= REFRESH_AFTER,
            Err(_) => true,
        };
        if stale {
            state.token = token(&state.creds, &self.region, &self.cluster, now)?;
            state.signed_at = now;
        }
        Ok(state.token.clone())
    }

    /// When the current token was signed.
    pub fn signed_at(&self) -> SystemTime {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .signed_at
    }

    /// Uses `creds` for the tokens signed from now on.
    pub fn set_credentials(&self, creds: Credentials) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).creds = creds;
    }

    fn credentials_expiry(&self) -> Option<SystemTime> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .creds
            .expiry()
    }
}

/// Makes ring the process's rustls provider unless one is installed. kube's rustls client asks
/// for the process default, and this build has two providers compiled in (aws-lc-rs through the
/// AWS SDK, ring through kube and reqwest), so without this rustls panics on the first https
/// API server. Every https `kube::Client` (kubeconfig and in-cluster too) needs it first.
pub fn install_tls_provider() {
    // Err means another provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A connected EKS cluster: where it is and how to authenticate to it.
pub struct EksAuth {
    pub cluster: Cluster,
    pub region: String,
    tokens: Arc<TokenSource>,
    provider: Option<SharedCredentialsProvider>,
}

impl std::fmt::Debug for EksAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EksAuth")
            .field("cluster", &self.cluster.name)
            .field("endpoint", &self.cluster.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

async fn provide(
    provider: &SharedCredentialsProvider,
    cluster: &str,
) -> Result<Credentials, EksError> {
    provider
        .provide_credentials()
        .await
        .map_err(|e| EksError::Credentials {
            cluster: cluster.to_string(),
            message: redact::text(&aws_sdk_sts::error::DisplayErrorContext(&e).to_string())
                .into_owned(),
        })
}

impl EksAuth {
    /// Resolves credentials (the SDK's default chain with `target`'s region/endpoint), calls
    /// `DescribeCluster` and signs the first token.
    pub async fn connect(target: &aws::Target, cluster: &str) -> Result<Self, EksError> {
        check_cluster_name(cluster)?;
        if let Some(r) = &target.region {
            check_region(r)?;
        }
        let sdk = aws::sdk_config(target).await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| EksError::NoRegion {
                cluster: cluster.to_string(),
            })?;
        check_region(&region)?;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| EksError::Credentials {
                cluster: cluster.to_string(),
                message: "the default chain found no provider".into(),
            })?;
        let creds = provide(&provider, cluster).await?;
        let described = describe_cluster(&sdk, &creds, &region, cluster).await?;
        // Check what EKS answered before anything uses it.
        described.cluster_url()?;
        described.ca_certificates()?;
        Self::from_parts(described, &region, creds, Some(provider))
    }

    /// An `EksAuth` from a described cluster and credentials (what [`EksAuth::connect`] ends
    /// with); `provider`, when given, renews the credentials before they expire.
    pub fn from_parts(
        cluster: Cluster,
        region: &str,
        creds: Credentials,
        provider: Option<SharedCredentialsProvider>,
    ) -> Result<Self, EksError> {
        let tokens = Arc::new(TokenSource::new(
            creds,
            region,
            &cluster.name,
            SystemTime::now(),
        )?);
        Ok(Self::from_token_source(cluster, region, tokens, provider))
    }

    /// An `EksAuth` that signs with an existing token source (which may already hold a token).
    pub fn from_token_source(
        cluster: Cluster,
        region: &str,
        tokens: Arc<TokenSource>,
        provider: Option<SharedCredentialsProvider>,
    ) -> Self {
        Self {
            cluster,
            region: region.to_string(),
            tokens,
            provider,
        }
    }

    /// The token source the client uses (the rollout wait may ask it for the token's age).
    pub fn tokens(&self) -> Arc<TokenSource> {
        Arc::clone(&self.tokens)
    }

    /// A `kube::Config` with the current token, for callers that build their own client; it
    /// stops working [`TOKEN_LIFETIME`] after [`TokenSource::signed_at`].
    pub fn kube_config(&self) -> Result<kube::Config, EksError> {
        let token = self.tokens.token_at(SystemTime::now())?;
        self.cluster.kube_config(Some(&token))
    }

    /// A Kubernetes client for the cluster whose every request carries a token younger than
    /// [`REFRESH_AFTER`]. With a credentials provider whose credentials expire (web identity,
    /// SSO, instance roles), a background task renews them 5 minutes before they do; it ends
    /// with the client. Must be called inside a Tokio runtime.
    pub fn client(&self) -> Result<kube::Client, EksError> {
        self.client_for(self.cluster.kube_config(None)?)
    }

    /// Like [`EksAuth::client`] for a `config` made from [`EksAuth::kube_config`] and adjusted
    /// by the caller (timeouts); its fixed token is replaced by the re-signing one.
    pub fn client_for(&self, mut config: kube::Config) -> Result<kube::Client, EksError> {
        install_tls_provider();
        config.auth_info.token = None;
        let builder =
            kube::client::ClientBuilder::try_from(config).map_err(|source| EksError::Client {
                cluster: self.cluster.name.clone(),
                source,
            })?;
        let tokens = Arc::clone(&self.tokens);
        let layer =
            tower::util::MapRequestLayer::new(move |mut req: http::Request<kube::client::Body>| {
                // Signing fails only on input `new` already accepted; keep the request as is
                // then, and let the API server's 401 name the problem.
                match tokens.token_at(SystemTime::now()) {
                    Ok(token) => {
                        if let Ok(mut value) =
                            http::HeaderValue::from_str(&format!("Bearer {token}"))
                        {
                            value.set_sensitive(true);
                            req.headers_mut().insert(http::header::AUTHORIZATION, value);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot re-sign the EKS token"),
                }
                req
            });
        let client = builder.with_layer(&layer).build();
        if let Some(provider) = self.provider.clone()
            && self.tokens.credentials_expiry().is_some()
        {
            tokio::spawn(renew_credentials(
                Arc::downgrade(&self.tokens),
                provider,
                self.cluster.name.clone(),
            ));
        }
        Ok(client)
    }
}

/// Renews the token source's credentials [`CREDENTIALS_MARGIN`] before they expire, for as
/// long as the token source lives.
async fn renew_credentials(
    tokens: Weak<TokenSource>,
    provider: SharedCredentialsProvider,
    cluster: String,
) {
    loop {
        let Some(expiry) = tokens.upgrade().and_then(|t| t.credentials_expiry()) else {
            return;
        };
        let renew_at = expiry.checked_sub(CREDENTIALS_MARGIN).unwrap_or(expiry);
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            // Wake up now and then to notice that the client is gone.
            .min(Duration::from_secs(60));
        tokio::time::sleep(wait).await;
        let Some(source) = tokens.upgrade() else {
            return;
        };
        if SystemTime::now() < renew_at {
            continue;
        }
        match provide(&provider, &cluster).await {
            Ok(creds) => source.set_credentials(creds),
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the AWS credentials for the EKS token");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_that_could_escape_the_path_or_header_are_refused() {
        for bad in ["", "-x", "a/b", "a b", "a\r\nx: y", "..", &"a".repeat(101)] {
            assert!(check_cluster_name(bad).is_err(), "{bad:?}");
        }
        for good in ["prod", "wms-prod_2", "0abc"] {
            check_cluster_name(good).unwrap();
        }
    }

    #[test]
    fn regions_are_host_name_safe() {
        for bad in [
            "",
            "US-EAST-1",
            "eu-west-1.evil.com",
            "eu/west",
            "-eu-1",
            "local",
        ] {
            assert!(check_region(bad).is_err(), "{bad:?}");
        }
        check_region("us-gov-west-1").unwrap();
        assert_eq!(sts_host("cn-north-1"), "sts.cn-north-1.amazonaws.com.cn");
        assert_eq!(sts_host("eu-west-1"), "sts.eu-west-1.amazonaws.com");
    }

    #[test]
    fn pem_bundles_must_hold_only_certificates() {
        assert!(pem_certificates("").is_err());
        assert!(
            pem_certificates("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_err()
        );
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\nMIIB").is_err());
        assert!(
            pem_certificates("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----")
                .is_err()
        );
    }

    #[test]
    fn aws_error_text_keeps_the_type_and_message_on_one_line() {
        let line = aws_error_text(
            Some("ResourceNotFoundException:http://internal.amazon.com/"),
            br#"{"message":"No cluster found for name: x.\nsecond line"}"#,
        );
        assert!(
            line.starts_with("ResourceNotFoundException: No cluster found"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }
}
