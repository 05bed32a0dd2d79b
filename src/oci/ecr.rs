//! Logging in to Amazon ECR: `GetAuthorizationToken` through the AWS SDK, with the credentials of
//! the default provider chain (the environment, a profile, or what `wms aws assume-role` exported
//! from the GitHub OIDC role), decoded into the Basic credentials the push uses. As aws-cli's
//! `ecr get-login-password` does (`awscli/customizations/ecr.py`), the token is base64 of
//! `AWS:<password>`, valid for 12 hours; the deprecated `registryIds` is not sent, so the token is
//! for the calling account's registry.
//!
//! The region comes from the registry host (`<account>.dkr.ecr.<region>.amazonaws.com`, `.cn`
//! too); for a registry reached under another name (`--ecr`), from the SDK's own resolution
//! (`AWS_REGION`, the profile). The endpoint is the SDK's: `AWS_ENDPOINT_URL_ECR` or
//! `AWS_ENDPOINT_URL` point it elsewhere (the tests use moto). This module never prints the token
//! or the password, and masks both for the Actions log before returning them.

use aws_config::SdkConfig;
use aws_sdk_ecr::error::DisplayErrorContext;
use base64::Engine as _;

use crate::aws;
use crate::github::actions::Actions;
use crate::oci::registry::Credentials;
use crate::untrusted::redact;

/// The account and region an ECR registry host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    pub account: String,
    pub region: String,
}

/// `<12-digit account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn][:port]`, or `None`.
pub fn parse_host(registry: &str) -> Option<EcrHost> {
    let host = registry
        .rsplit_once(':')
        .map_or(registry, |(h, _)| h)
        .to_ascii_lowercase();
    let host = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let mut parts = host.split('.');
    let (account, dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (parts.next().is_none()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && matches!(ecr, "ecr" | "ecr-fips")
        && region_ok)
        .then(|| EcrHost {
            account: account.to_string(),
            region: region.to_string(),
        })
}

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error(
        "cannot tell the AWS region of the registry {registry}; hint: set AWS_REGION, or tag with the ECR host name <account>.dkr.ecr.<region>.amazonaws.com"
    )]
    NoRegion { registry: String },
    #[error(
        "ECR GetAuthorizationToken for {registry} (region {region}) failed: {message}; hint: run `wms aws assume-role` (or set AWS_PROFILE / AWS_ACCESS_KEY_ID) with a role allowed ecr:GetAuthorizationToken, or pass --username AWS --password-stdin"
    )]
    Token {
        registry: String,
        region: String,
        message: String,
    },
    #[error(
        "ECR GetAuthorizationToken for {registry} (region {region}) answered {what}; hint: check the ECR endpoint (AWS_ENDPOINT_URL_ECR, AWS_ENDPOINT_URL)"
    )]
    BadAnswer {
        registry: String,
        region: String,
        what: &'static str,
    },
    #[error("cannot start the async runtime for ECR")]
    Runtime(#[from] aws::AwsError),
}

/// Credentials for `registry` from the default provider chain; the region from the host name
/// when it is an ECR host, else the chain's. Masked before they are returned.
pub fn login(registry: &str, actions: &Actions) -> Result<Credentials, EcrError> {
    let target = aws::Target {
        region: parse_host(registry).map(|h| h.region),
        endpoint_url: None,
    };
    aws::runtime()?.block_on(async {
        let sdk = aws::sdk_config(&target).await;
        request(&sdk, registry, actions).await
    })
}

/// `GetAuthorizationToken` with `sdk` (region, endpoint and credentials), decoded into Basic
/// credentials for `registry`; the token and the password are masked before they are returned.
pub fn ecr_credentials(
    sdk: &SdkConfig,
    registry: &str,
    actions: &Actions,
) -> Result<Credentials, EcrError> {
    aws::runtime()?.block_on(request(sdk, registry, actions))
}

async fn request(
    sdk: &SdkConfig,
    registry: &str,
    actions: &Actions,
) -> Result<Credentials, EcrError> {
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .ok_or_else(|| EcrError::NoRegion {
            registry: registry.to_string(),
        })?;
    let bad = |what| EcrError::BadAnswer {
        registry: registry.to_string(),
        region: region.clone(),
        what,
    };
    let client = aws_sdk_ecr::Client::new(sdk);
    let answer = client
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| EcrError::Token {
            registry: registry.to_string(),
            region: region.clone(),
            message: redact::text(&DisplayErrorContext(&e).to_string()).into_owned(),
        })?;
    let token = answer
        .authorization_data()
        .iter()
        .find_map(|d| d.authorization_token())
        .ok_or_else(|| bad("no authorization token"))?;
    actions.add_mask(token);
    let (username, password) =
        decode_token(token).ok_or_else(|| bad("a token that is not base64 of user:password"))?;
    actions.add_mask(&password);
    Ok(Credentials {
        username,
        password,
        source: format!("ECR GetAuthorizationToken ({region})"),
    })
}

/// base64 `AWS:<password>` → (`AWS`, password).
fn decode_token(token: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty() && !password.is_empty()).then(|| (user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_name_their_account_and_region() {
        let host = |r: &str| parse_host(r).map(|h| (h.account, h.region));
        let want = |a: &str, r: &str| Some((a.to_string(), r.to_string()));
        assert_eq!(
            host("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            want("123456789012", "eu-west-1")
        );
        assert_eq!(
            host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            want("123456789012", "cn-north-1")
        );
        assert_eq!(
            host("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com:443"),
            want("123456789012", "us-gov-west-1")
        );
        for other in [
            "127.0.0.1:5000",
            "ghcr.io",
            "12345.dkr.ecr.eu-west-1.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
            "x.123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "public.ecr.aws",
        ] {
            assert_eq!(parse_host(other), None, "{other}");
        }
    }

    #[test]
    fn tokens_decode_to_user_and_password() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:pa:ss");
        assert_eq!(
            decode_token(&token),
            Some(("AWS".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(decode_token("not base64!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("AWS");
        assert_eq!(decode_token(&no_colon), None);
    }
}
