//! Which S3 endpoint the signed requests of `push` and `pull` go to. The repository is not
//! trusted to choose it: `.dvc/config` (and a committed `.dvc/config.local`) come from whoever
//! wrote the pull request, and an `endpointurl` there would receive requests signed with the
//! workflow's AWS credentials (session token included). So:
//!
//! - an endpoint chosen by the workflow (`WMS_DVC_ENDPOINT_URL` / `--endpoint-url`) wins, and the
//!   repository's `endpointurl` is then ignored;
//! - otherwise the repository's `endpointurl` is used only when the workflow allows it
//!   (`WMS_DVC_TRUST_ENDPOINT=1` / `--trust-endpoint`), and refused with an error when not —
//!   never silently replaced by AWS's default endpoint, which would hide the setting;
//! - whichever is chosen, plain `http://` is refused unless the host is loopback or the workflow
//!   allows it (`WMS_DVC_ALLOW_HTTP=1` / `--allow-http`).
//!
//! Everything here is decided before the first connection. This module must not read the
//! environment itself: the CLI resolves flags and variables into an [`EndpointPolicy`].

use std::path::PathBuf;

use super::DvcError;
use super::config::RemoteConfig;

/// What the workflow allows (from flags and the environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// The workflow's own endpoint; replaces the repository's `endpointurl`.
    pub endpoint_url: Option<String>,
    /// Use the repository's `endpointurl` when the workflow sets none.
    pub trust_repository: bool,
    /// Allow plain HTTP to a host that is not loopback.
    pub allow_http: bool,
}

/// Who chose an endpoint, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointOrigin {
    /// `WMS_DVC_ENDPOINT_URL` / `--endpoint-url`.
    Workflow,
    /// `endpointurl` in this config file, allowed by `WMS_DVC_TRUST_ENDPOINT`.
    Repository { file: PathBuf },
}

impl std::fmt::Display for EndpointOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointOrigin::Workflow => write!(
                f,
                "from {} / --endpoint-url",
                crate::env_vars::WMS_DVC_ENDPOINT_URL
            ),
            EndpointOrigin::Repository { file } => {
                write!(f, "the `endpointurl` in {}", file.display())
            }
        }
    }
}

impl EndpointPolicy {
    /// The endpoint for remote `name` (`None`: the AWS SDK's own, from the environment or the
    /// profile), or why none may be used.
    pub fn choose(&self, name: &str, remote: &RemoteConfig) -> Result<Option<String>, DvcError> {
        let (url, origin) = match (&self.endpoint_url, &remote.endpointurl) {
            (Some(url), _) => (url.clone(), EndpointOrigin::Workflow),
            (None, None) => return Ok(None),
            (None, Some(set)) if self.trust_repository => (
                set.value.clone(),
                EndpointOrigin::Repository {
                    file: set.file.clone(),
                },
            ),
            (None, Some(set)) => {
                return Err(DvcError::UntrustedEndpoint {
                    file: set.file.clone(),
                    remote: name.to_string(),
                    url: set.value.clone(),
                });
            }
        };
        check_transport(&url, &origin, self.allow_http)?;
        Ok(Some(url))
    }
}

/// Refuses anything but `https://`, or `http://` to loopback (or anywhere with `allow_http`).
fn check_transport(url: &str, origin: &EndpointOrigin, allow_http: bool) -> Result<(), DvcError> {
    let bad = |message: &str| DvcError::BadEndpoint {
        url: url.to_string(),
        origin: origin.clone(),
        message: message.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_http || is_loopback(&parsed) => Ok(()),
        "http" => Err(DvcError::PlainHttpEndpoint {
            url: url.to_string(),
            origin: origin.clone(),
        }),
        _ => Err(bad("only http:// and https:// endpoints are supported")),
    }
}

/// `localhost`, 127.0.0.0/8 or `::1`: traffic that never leaves the machine.
fn is_loopback(url: &reqwest::Url) -> bool {
    // The parser has already normalised IPv4 spellings (`0x7f.1` is `127.0.0.1`) and brackets
    // IPv6 addresses.
    url.host_str()
        .is_some_and(crate::untrusted::is_loopback_host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dvc::config::ConfigValue;

    fn remote(endpoint: Option<&str>) -> RemoteConfig {
        RemoteConfig {
            url: "s3://bucket/prefix".into(),
            endpointurl: endpoint.map(|value| ConfigValue {
                value: value.into(),
                file: PathBuf::from("/repo/.dvc/config.local"),
            }),
            region: None,
        }
    }

    #[test]
    fn issue11_a_repository_endpoint_needs_the_workflows_allowance() {
        let from_repo = remote(Some("https://evil.example"));
        let err = EndpointPolicy::default()
            .choose("storage", &from_repo)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/repo/.dvc/config.local")
                && text.contains("WMS_DVC_TRUST_ENDPOINT")
                && text.contains("WMS_DVC_ENDPOINT_URL")
                && !text.contains('\n'),
            "{text}"
        );
        let trusting = EndpointPolicy {
            trust_repository: true,
            ..EndpointPolicy::default()
        };
        assert_eq!(
            trusting.choose("storage", &from_repo).unwrap().as_deref(),
            Some("https://evil.example")
        );
        // The workflow's endpoint replaces the repository's without any allowance.
        let workflow = EndpointPolicy {
            endpoint_url: Some("https://minio.internal:9000".into()),
            ..EndpointPolicy::default()
        };
        assert_eq!(
            workflow.choose("storage", &from_repo).unwrap().as_deref(),
            Some("https://minio.internal:9000")
        );
        // No endpoint anywhere: the SDK's default.
        assert_eq!(
            EndpointPolicy::default()
                .choose("storage", &remote(None))
                .unwrap(),
            None
        );
    }

    #[test]
    fn issue11_plain_http_only_to_loopback_unless_allowed() {
        let trusting = EndpointPolicy {
            trust_repository: true,
            ..EndpointPolicy::default()
        };
        for ok in [
            "http://127.0.0.1:5000",
            "http://127.3.4.5",
            "http://localhost:9000/",
            "http://[::1]:9000",
        ] {
            assert!(trusting.choose("s", &remote(Some(ok))).is_ok(), "{ok}");
        }
        for far in [
            "http://10.0.0.5:9000",
            "http://s3.example.com",
            "http://127.0.0.1.nip.io",
        ] {
            let err = trusting.choose("s", &remote(Some(far))).unwrap_err();
            assert!(matches!(err, DvcError::PlainHttpEndpoint { .. }), "{far}");
            assert!(err.to_string().contains("WMS_DVC_ALLOW_HTTP"), "{err}");
        }
        let allowing = EndpointPolicy {
            allow_http: true,
            ..trusting.clone()
        };
        assert!(
            allowing
                .choose("s", &remote(Some("http://10.0.0.5:9000")))
                .is_ok()
        );
        // The workflow's own endpoint obeys the same rule.
        let workflow = EndpointPolicy {
            endpoint_url: Some("http://minio.internal:9000".into()),
            ..EndpointPolicy::default()
        };
        assert!(matches!(
            workflow.choose("s", &remote(None)),
            Err(DvcError::PlainHttpEndpoint { .. })
        ));
        for odd in ["file:///etc/passwd", "not a url", "ftp://x"] {
            assert!(
                matches!(
                    allowing.choose("s", &remote(Some(odd))),
                    Err(DvcError::BadEndpoint { .. })
                ),
                "{odd}"
            );
        }
    }

    #[test]
    fn credentials_in_an_endpoint_are_not_printed() {
        let err = EndpointPolicy::default()
            .choose("s", &remote(Some("https://user:s3cret@evil.example")))
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
