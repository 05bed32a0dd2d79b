//! AWS credentials without long-lived keys: the SDK's default provider chain for everything wms
//! calls, and GitHub OIDC → STS `AssumeRoleWithWebIdentity`, exported to later workflow steps
//! as aws-actions/configure-aws-credentials does (masked, then `NAME=value` in `$GITHUB_ENV`).
//!
//! The GitHub side follows the runner's documentation ("Configuring OpenID Connect in Amazon Web
//! Services"): `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=sts.amazonaws.com` with
//! `Authorization: Bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN` answers `{"value": "<jwt>"}`. STS
//! needs no credentials for `AssumeRoleWithWebIdentity`; the token is the proof. This module
//! never prints a secret; callers mask before they export.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sts::error::DisplayErrorContext;

use crate::github::actions::{Actions, ActionsError};
use crate::untrusted::redact;

/// The audience AWS expects in GitHub's OIDC token.
pub const DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
/// configure-aws-credentials' default session name.
pub const DEFAULT_SESSION_NAME: &str = "GitHubActions";
/// configure-aws-credentials' default session length (1 h).
pub const DEFAULT_DURATION_SECONDS: i32 = 3600;

/// Errors from getting or using AWS credentials; each names the endpoint involved.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "no GitHub OIDC token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN unset); hint: give the job `permissions: id-token: write`"
    )]
    NoOidcEnvironment,
    #[error("OIDC token request to {url} failed: {message}; hint: {hint}")]
    Token {
        url: String,
        message: String,
        hint: &'static str,
    },
    #[error("no AWS region; hint: pass --region (or the `aws-region` input) or set AWS_REGION")]
    NoRegion,
    #[error("STS {operation} at {endpoint} failed: {message}; hint: {hint}")]
    Sts {
        operation: &'static str,
        endpoint: String,
        message: String,
        hint: &'static str,
    },
    #[error("STS {operation} answered without {field}; hint: check the STS endpoint")]
    Incomplete {
        operation: &'static str,
        field: &'static str,
    },
    #[error(transparent)]
    Actions(#[from] ActionsError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Temporary credentials from STS.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// RFC 3339.
    pub expiration: String,
    pub assumed_role_arn: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &"***")
            .field("expiration", &self.expiration)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish_non_exhaustive()
    }
}

/// Who the current credentials are (`aws sts get-caller-identity`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CallerIdentity {
    pub user_id: String,
    pub account: String,
    pub arn: String,
}

/// Where to reach AWS: region and endpoint overrides (`None`: the SDK's own resolution, which
/// includes `AWS_REGION`, profiles, `AWS_ENDPOINT_URL_STS` and `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// What `assume-role` needs.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    pub session_name: String,
    pub duration_seconds: i32,
    pub audience: String,
    pub target: Target,
    /// `ACTIONS_ID_TOKEN_REQUEST_URL` and `…_TOKEN`.
    pub token_request: (String, String),
}

/// A current-thread runtime for one SDK call sequence.
pub fn runtime() -> Result<tokio::runtime::Runtime, AwsError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AwsError::Runtime)
}

/// The SDK configuration from the default provider chain plus `target`'s overrides.
pub async fn sdk_config(target: &Target) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = &target.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &target.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

fn endpoint_for_messages(target: &Target) -> String {
    target
        .endpoint_url
        .clone()
        .or_else(|| std::env::var(crate::env_vars::AWS_ENDPOINT_URL_STS).ok())
        .or_else(|| std::env::var(crate::env_vars::AWS_ENDPOINT_URL).ok())
        .map(|url| redact::url(&url).into_owned())
        .unwrap_or_else(|| "the default STS endpoint".into())
}

/// The token request URL with the audience appended (the runner's URL already has a query).
pub fn token_url(base: &str, audience: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let encoded: String = audience
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{base}{sep}audience={encoded}")
}

/// The HTTP client of the calls to AWS-side endpoints wms makes itself (GitHub's OIDC token
/// endpoint, EKS `DescribeCluster`): 30 s per request.
pub(crate) fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
}

/// Waits before try `attempt` of a retried call: nothing before the first (0), then `base`
/// doubled per try (`base << attempt`).
pub(crate) async fn backoff(attempt: u32, base: Duration) {
    if attempt > 0 {
        tokio::time::sleep(base * (1 << attempt)).await;
    }
}

/// Asks GitHub for an OIDC token for `audience`.
pub async fn fetch_github_token(
    base_url: &str,
    bearer: &str,
    audience: &str,
) -> Result<String, AwsError> {
    let url = token_url(base_url, audience);
    let fail = |message: String, hint: &'static str| AwsError::Token {
        url: redact::url(base_url).into_owned(),
        message: redact::text(&message).into_owned(),
        hint,
    };
    let client = http_client().map_err(|e| fail(e.to_string(), "check the TLS setup"))?;
    let mut last = None;
    // The runner's endpoint is occasionally slow to answer right after a job starts.
    for attempt in 0..3u32 {
        backoff(attempt, Duration::from_millis(500)).await;
        let resp = match client
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header(reqwest::header::ACCEPT, "application/json; api-version=2.0")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                last = Some(fail(
                    e.to_string(),
                    "the runner's token endpoint did not answer; re-run the job",
                ));
                continue;
            }
        };
        let status = resp.status();
        if status.is_server_error() {
            last = Some(fail(format!("HTTP {status}"), "re-run the job"));
            continue;
        }
        if !status.is_success() {
            return Err(fail(
                format!("HTTP {status}"),
                "check `permissions: id-token: write` and that the token is the job's",
            ));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            value: Option<String>,
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| fail(format!("not the expected JSON: {e}"), "re-run the job"))?;
        return body
            .value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| fail("no `value` in the answer".into(), "re-run the job"));
    }
    Err(last.unwrap_or(AwsError::NoOidcEnvironment))
}

/// GitHub OIDC token → `AssumeRoleWithWebIdentity` → temporary credentials.
pub async fn assume_role_with_github_oidc(
    req: &AssumeRole,
    actions: &Actions,
) -> Result<(Credentials, String), AwsError> {
    let (url, bearer) = &req.token_request;
    actions.add_mask(bearer);
    let jwt = fetch_github_token(url, bearer, &req.audience).await?;
    actions.add_mask(&jwt);
    let sdk = sdk_config(&req.target).await;
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .ok_or(AwsError::NoRegion)?;
    let client = aws_sdk_sts::Client::new(&sdk);
    let resp = client
        .assume_role_with_web_identity()
        .role_arn(&req.role_arn)
        .role_session_name(&req.session_name)
        .web_identity_token(jwt)
        .duration_seconds(req.duration_seconds)
        .send()
        .await
        .map_err(|e| AwsError::Sts {
            operation: "AssumeRoleWithWebIdentity",
            endpoint: endpoint_for_messages(&req.target),
            message: redact::text(&DisplayErrorContext(&e).to_string()).into_owned(),
            hint: "check the role's trust policy (token.actions.githubusercontent.com, audience, `sub` condition)",
        })?;
    let missing = |field| AwsError::Incomplete {
        operation: "AssumeRoleWithWebIdentity",
        field,
    };
    let c = resp.credentials().ok_or(missing("Credentials"))?;
    let creds = Credentials {
        access_key_id: c.access_key_id().to_string(),
        secret_access_key: c.secret_access_key().to_string(),
        session_token: c.session_token().to_string(),
        expiration: c
            .expiration()
            .fmt(aws_sdk_sts::primitives::DateTimeFormat::DateTime)
            .unwrap_or_default(),
        assumed_role_arn: resp
            .assumed_role_user()
            .map(|u| u.arn().to_string())
            .unwrap_or_default(),
    };
    Ok((creds, region))
}

/// Masks the credentials and exports them (and the region) to later steps.
pub fn export_to_later_steps(
    actions: &Actions,
    creds: &Credentials,
    region: &str,
) -> Result<(), AwsError> {
    use crate::env_vars as ev;
    actions.add_mask(&creds.access_key_id);
    actions.add_mask(&creds.secret_access_key);
    actions.add_mask(&creds.session_token);
    actions.export_env(ev::AWS_ACCESS_KEY_ID, &creds.access_key_id)?;
    actions.export_env(ev::AWS_SECRET_ACCESS_KEY, &creds.secret_access_key)?;
    actions.export_env(ev::AWS_SESSION_TOKEN, &creds.session_token)?;
    actions.export_env(ev::AWS_REGION, region)?;
    actions.export_env(ev::AWS_DEFAULT_REGION, region)?;
    Ok(())
}

/// STS `GetCallerIdentity` with the default provider chain.
pub async fn caller_identity(target: &Target) -> Result<CallerIdentity, AwsError> {
    let sdk = sdk_config(target).await;
    let client = aws_sdk_sts::Client::new(&sdk);
    let resp = client
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| AwsError::Sts {
            operation: "GetCallerIdentity",
            endpoint: endpoint_for_messages(target),
            message: redact::text(&DisplayErrorContext(&e).to_string()).into_owned(),
            hint: "no usable credentials? run `wms aws assume-role` or set AWS_PROFILE / AWS_ACCESS_KEY_ID",
        })?;
    Ok(CallerIdentity {
        user_id: resp.user_id().unwrap_or_default().to_string(),
        account: resp.account().unwrap_or_default().to_string(),
        arn: resp.arn().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_url_appends_the_audience() {
        assert_eq!(
            token_url("https://x/token?api-version=2.0", DEFAULT_AUDIENCE),
            "https://x/token?api-version=2.0&audience=sts.amazonaws.com"
        );
        assert_eq!(token_url("http://x/t", "a b"), "http://x/t?audience=a%20b");
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = Credentials {
            access_key_id: "AKIA".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: "tok".into(),
            expiration: "2026-01-01T00:00:00Z".into(),
            assumed_role_arn: "arn".into(),
        };
        let d = format!("{c:?}");
        assert!(
            !d.contains("AKIA") && !d.contains("s3cr3t") && !d.contains("tok\""),
            "{d}"
        );
    }
}
