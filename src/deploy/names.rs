//! Names of a deployment and the checks on them: DNS-1123 labels for the model, the version and
//! the namespaces (Kubernetes' own rule, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters),
//! and image references pinned by digest. Pure; errors name the flag the value came from.

use super::DeployError;
use crate::untrusted::text::for_log;

/// Version namespaces are `<prefix><model>-<version>`.
pub const DEFAULT_PREFIX: &str = "wms-";
/// The stable entry points, promotion history and deploy Lease live here.
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "wms-system";
/// Prometheus' namespace (kube-prometheus-stack's usual one).
pub const DEFAULT_MONITORING_NAMESPACE: &str = "monitoring";

/// Where one version lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub model: String,
    pub version: String,
    /// `<prefix><model>-<version>`.
    pub namespace: String,
    /// `<model>-<version>` (`app.kubernetes.io/instance`).
    pub instance: String,
}

impl Names {
    pub fn new(prefix: &str, model: &str, version: &str) -> Self {
        Names {
            model: model.into(),
            version: version.into(),
            namespace: format!("{prefix}{model}-{version}"),
            instance: format!("{model}-{version}"),
        }
    }

    /// The in-cluster DNS name of the version's Service.
    pub fn service_host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.model, self.namespace)
    }
}

/// Whether `s` is a DNS-1123 label.
pub fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 label, or an error naming `flag`.
pub fn check_label(flag: &'static str, value: &str) -> Result<(), DeployError> {
    if is_label(value) {
        return Ok(());
    }
    let why = if value.is_empty() {
        "is empty".to_string()
    } else if value.len() > 63 {
        format!("is {} characters long (at most 63)", value.len())
    } else {
        "is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)".into()
    };
    Err(DeployError::NotDnsSafe {
        flag,
        value: value.to_string(),
        why,
    })
}

/// A namespace prefix: empty, or lowercase letters, digits and '-' starting with a letter or
/// digit.
pub fn check_prefix(flag: &'static str, value: &str) -> Result<(), DeployError> {
    let ok = value.len() <= 40
        && value
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !value.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(DeployError::NotDnsSafe {
            flag,
            value: value.to_string(),
            why: "must be at most 40 of [a-z0-9-], not starting with '-'".into(),
        })
    }
}

/// An image reference split into its repository and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `registry/repo` (with a `:tag` part dropped).
    pub name: String,
    /// The 64 hex digits of `@sha256:…`; `None` for a tag-only reference.
    pub digest_hex: Option<String>,
}

impl ImageRef {
    /// `name@sha256:<64 hex>` (a `:tag` before the `@` is allowed and ignored, as the container
    /// runtime ignores it); a tag-only reference only with `allow_tag`.
    pub fn parse(image: &str, allow_tag: bool) -> Result<Self, DeployError> {
        let bad = |why: &str| DeployError::Image {
            image: for_log(image).into_owned(),
            why: why.to_string(),
        };
        if image.is_empty()
            || image
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("must be one NAME@sha256:DIGEST, without spaces"));
        }
        match image.split_once('@') {
            Some((name, digest)) => {
                let Some(hex) = digest.strip_prefix("sha256:") else {
                    return Err(bad("only sha256 digests are supported"));
                };
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(bad("the digest must be sha256: and 64 hex digits"));
                }
                let slash = name.rfind('/').map_or(0, |i| i + 1);
                let repo = match name[slash..].rfind(':') {
                    Some(c) => &name[..slash + c],
                    None => name,
                };
                if repo.is_empty() {
                    return Err(bad("no repository before the digest"));
                }
                Ok(ImageRef {
                    name: repo.to_string(),
                    digest_hex: Some(hex.to_string()),
                })
            }
            None if allow_tag => Ok(ImageRef {
                name: image.to_string(),
                digest_hex: None,
            }),
            None => Err(DeployError::TagOnly {
                image: for_log(image).into_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["v3", "a", "water-meters", "1-2-3", &"a".repeat(63)] {
            assert!(is_label(ok), "{ok}");
        }
        for bad in [
            "",
            "V3",
            "v1.2",
            "-a",
            "a-",
            "a_b",
            "a b",
            &"a".repeat(64),
            "ä",
        ] {
            assert!(!is_label(bad), "{bad}");
        }
    }

    #[test]
    fn image_refs() {
        let d = "0".repeat(64);
        let r = ImageRef::parse(&format!("127.0.0.1:5000/m:v1@sha256:{d}"), false).unwrap();
        assert_eq!(r.name, "127.0.0.1:5000/m");
        assert_eq!(r.digest_hex.as_deref(), Some(d.as_str()));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/m@sha256:{d}"), false).unwrap();
        assert_eq!(r.name, "127.0.0.1:5000/m");
        let e = ImageRef::parse("127.0.0.1:5000/m:v1", false).unwrap_err();
        assert!(e.to_string().contains("--allow-tag"), "{e}");
        assert!(ImageRef::parse("127.0.0.1:5000/m:v1", true).is_ok());
        assert!(ImageRef::parse(&format!("m@sha512:{d}"), false).is_err());
        assert!(ImageRef::parse(&format!("m @sha256:{d}"), false).is_err());
        assert!(ImageRef::parse(&format!("@sha256:{d}"), false).is_err());
        assert!(ImageRef::parse(&format!("m@sha256:{}", "A".repeat(64)), false).is_err());
    }
}
