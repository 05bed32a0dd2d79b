//! Pulling a base image from a registry (distribution-spec `spec.md`, `GET /v2/<name>/manifests/
//! <ref>` and `GET /v2/<name>/blobs/<digest>`): OCI and Docker v2 schema2 manifests, and an OCI
//! index or Docker manifest list resolved to linux/amd64. The registry is untrusted: every
//! document has a size bound and every byte is checked against the digest that names it — the
//! manifest against a digest reference (and against `Docker-Content-Digest` when the registry sends
//! one), the platform's manifest against the index entry, the config and each layer against their
//! descriptors — before anything is parsed or used; each layer must also inflate to the
//! `diff_id` the config names for it (the inflated size is reported, the tar is not kept).
//!
//! Layers keep their bytes (so their digests, and with them cross-repository mounts, still hold);
//! Docker's layer media type is rewritten to its OCI twin (`…rootfs.diff.tar.gzip` → `…layer.v1.
//! tar+gzip`, the same gzip-compressed tar), since the image wms writes is an OCI manifest and OCI
//! tools such as umoci 0.4 refuse layer types they do not know. Foreign and non-distributable
//! layers (fetched from other URLs) are refused. This module downloads and checks; it does not
//! decide what the image built on the base looks like ([`crate::oci::build`] does).

use std::io::Read as _;

use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde::Deserialize;

use crate::oci::blob::{GunzipError, digest_hex, gunzip_digest, sha256_digest};
use crate::oci::registry::{self, RegistryError, RegistryOptions, Session, Target};
use crate::oci::spec::{History, MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_MANIFEST};
use crate::untrusted::text::for_log;

pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Manifests and indexes larger than this are refused (the distribution spec asks registries to
/// accept at least 4 MB; nothing legitimate is near it).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Image configs larger than this are refused.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// The base's layers are held in memory; together they may not exceed this.
pub const MAX_BASE_BYTES: u64 = 2 << 30;
/// What the base's layers may inflate to, together (each is inflated once, streamed, to check
/// its `diff_id`; distroless `cc` is about 25 MB).
pub const MAX_BASE_UNCOMPRESSED_BYTES: u64 = 16 << 30;
/// The `Accept` of a manifest request: every manifest and index type we can read.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// `REGISTRY/REPO[:TAG][@sha256:…]`: where a base is, and which one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// A pinned manifest digest; when present it wins over the tag and the bytes must match it.
    pub digest: Option<String>,
}

impl BaseRef {
    /// Parses a base reference; `Err` says what is wrong (the caller names the flag).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                if digest_hex(digest).is_none() {
                    return Err("the digest must be sha256: and 64 lowercase hex digits");
                }
                (name, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[slash..].rfind(':') {
            Some(i) => (&name[..slash + i], Some(name[slash + i + 1..].to_string())),
            None => (name, None),
        };
        if tag.as_deref().is_some_and(|t| !tag_ok(t)) {
            return Err("the tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -");
        }
        let name_ok = !name.is_empty()
            && !name.starts_with('/')
            && !name.ends_with('/')
            && !name.contains("//")
            && name.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'_' | b'-' | b'/' | b':')
            });
        if !name_ok {
            return Err("the repository name must be lowercase [a-z0-9._-/]");
        }
        let target = Target::new(name, "");
        Ok(BaseRef {
            registry: target.registry,
            repository: target.repository,
            tag: if digest.is_none() && tag.is_none() {
                Some("latest".into())
            } else {
                tag
            },
            digest,
        })
    }

    /// What the manifest request names: the digest when pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// Whether plain HTTP may be used (loopback registries only).
    pub fn is_loopback(&self) -> bool {
        crate::untrusted::is_loopback_authority(&self.registry)
    }
}

impl std::fmt::Display for BaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The distribution spec's tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn tag_ok(tag: &str) -> bool {
    let Some(first) = tag.bytes().next() else {
        return false;
    };
    tag.len() <= 128
        && (first.is_ascii_alphanumeric() || first == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// One layer of the base, checked against its digest.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    /// The OCI media type it goes into our manifest with.
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
    /// Bytes of the tar it inflates to (checked against the config's `diff_id`).
    pub uncompressed_size: u64,
}

/// A pulled linux/amd64 base: what [`crate::oci::build`] puts under the image's own layers.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub reference: BaseRef,
    /// `sha256:…` of the platform's image manifest (not of an index).
    pub digest: String,
    pub layers: Vec<BaseLayer>,
    /// `rootfs.diff_ids` of the base config, one per layer.
    pub diff_ids: Vec<String>,
    /// `config.Env` of the base config (`PATH`, `SSL_CERT_FILE`, …).
    pub env: Vec<String>,
    /// One entry per layer: the base's own history when it matches its layers, else a note.
    pub history: Vec<History>,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot pull the base image {reference}")]
    Registry {
        reference: String,
        #[source]
        source: RegistryError,
    },
    #[error(
        "cannot reach the registry {registry} to pull the base image {reference}; hint: pass --base scratch (no base: the image carries this machine's runtime libraries), or --base with a mirror of it that you can reach (pinned by digest)"
    )]
    Unreachable {
        reference: String,
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the base image {reference} was not found: the registry {registry} answered {status}: {body}; hint: check the name and tag (`skopeo inspect docker://{reference}`), or use --base scratch"
    )]
    NotFound {
        reference: String,
        registry: String,
        status: u16,
        body: String,
    },
    #[error(
        "the base image {reference}: the registry {registry} answered {status} to {what}: {body}"
    )]
    Status {
        reference: String,
        registry: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error(
        "the base image {reference} has no linux/amd64 image (it has {platforms}); hint: pick a base built for linux/amd64, or use --base scratch"
    )]
    NoAmd64 {
        reference: String,
        platforms: String,
    },
    #[error(
        "the base image {reference}: {what} does not match its digest {expected} (the bytes hash to {actual}); hint: the registry or a proxy served altered content; retry, or pin a mirror you trust"
    )]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "the base image {reference}: {what} is {size} bytes, over the {limit}-byte limit; hint: pick a smaller base"
    )]
    TooLarge {
        reference: String,
        what: String,
        size: u64,
        limit: u64,
    },
    #[error(
        "the base image {reference}: {what} has {size} bytes, not the {expected} its descriptor says; hint: the registry served truncated or altered content; retry"
    )]
    SizeMismatch {
        reference: String,
        what: String,
        size: u64,
        expected: u64,
    },
    #[error(
        "the base image {reference}: {what} has media type {media_type}, which wms cannot build on; hint: use a base with OCI or Docker v2 schema2 manifests and gzip layers"
    )]
    MediaType {
        reference: String,
        what: String,
        media_type: String,
    },
    #[error(
        "the base image {reference}: {what} names {digest}, which is not a sha256 digest; hint: use another base"
    )]
    BadDigest {
        reference: String,
        what: String,
        digest: String,
    },
    #[error("the base image {reference}: {what} is malformed; hint: use another base")]
    Malformed {
        reference: String,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the base image {reference}: its config has {diff_ids} diff_ids for {layers} layers; hint: use another base"
    )]
    RootFs {
        reference: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error(
        "the base image {reference}: {what} inflates to {actual}, not to the diff_id {expected} its config names; hint: the base's config and layers disagree (altered or broken image); use another base, or pin a digest you trust"
    )]
    DiffIdMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("the base image {reference}: {what} cannot be inflated; hint: use another base")]
    Inflate {
        reference: String,
        what: String,
        #[source]
        source: crate::oci::blob::GunzipError,
    },
    #[error("cannot read {what} of the base image {reference} from {registry}")]
    Read {
        reference: String,
        registry: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A descriptor as a registry sends it (fields we do not use are ignored; `platform` has its
/// variant so an error can name `linux/arm/v7`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoteDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<RemotePlatform>,
}

#[derive(Debug, Default, Deserialize)]
struct RemotePlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

impl RemotePlatform {
    fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoteIndex {
    manifests: Vec<RemoteDescriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoteManifest {
    config: RemoteDescriptor,
    layers: Vec<RemoteDescriptor>,
}

#[derive(Debug, Default, Deserialize)]
struct RemoteConfig {
    /// `architecture`, `os` and `variant` sit at the top of a config.
    #[serde(flatten)]
    platform: RemotePlatform,
    #[serde(default)]
    config: Option<RemoteRunConfig>,
    rootfs: RemoteRootFs,
    #[serde(default)]
    history: Vec<RemoteHistory>,
}

#[derive(Debug, Default, Deserialize)]
struct RemoteRunConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RemoteRootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RemoteHistory {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    created_by: Option<String>,
    #[serde(default)]
    empty_layer: bool,
}

/// Pulls the linux/amd64 image of `reference`: manifest, config and every layer, each checked.
pub fn pull(reference: &BaseRef, opts: &RegistryOptions) -> Result<BaseImage, PullError> {
    let shown = reference.to_string();
    let registry_err = |source| PullError::Registry {
        reference: shown.clone(),
        source,
    };
    let client = registry::client(opts).map_err(registry_err)?;
    let mut puller = Puller {
        session: Session::new(
            &client,
            &reference.registry,
            &reference.repository,
            opts,
            vec![format!("repository:{}:pull", reference.repository)],
        ),
        reference: shown.clone(),
        registry: reference.registry.clone(),
    };

    let (media_type, bytes) = puller.manifest(reference.reference(), None)?;
    let digest = sha256_digest(&bytes);
    if let Some(expected) = &reference.digest
        && *expected != digest
    {
        return Err(puller.mismatch("the manifest", expected, &digest));
    }
    let (digest, bytes) = if media_type == MEDIA_INDEX || media_type == MEDIA_DOCKER_LIST {
        let index: RemoteIndex = puller.parse("the image index", &bytes)?;
        let Some(entry) = index.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        }) else {
            let mut platforms: Vec<String> = index
                .manifests
                .iter()
                .map(|d| d.platform.as_ref().map_or("unknown".into(), |p| p.name()))
                .collect();
            platforms.dedup();
            return Err(PullError::NoAmd64 {
                reference: shown,
                platforms: if platforms.is_empty() {
                    "no images".into()
                } else {
                    for_log(&platforms.join(", ")).into_owned()
                },
            });
        };
        puller.check_digest("the linux/amd64 manifest", &entry.digest)?;
        if entry.size > MAX_MANIFEST_BYTES {
            return Err(puller.too_large(
                "the linux/amd64 manifest",
                entry.size,
                MAX_MANIFEST_BYTES,
            ));
        }
        let (media_type, bytes) = puller.manifest(&entry.digest, Some(entry.size))?;
        puller.verify(
            "the linux/amd64 manifest",
            &entry.digest,
            entry.size,
            &bytes,
        )?;
        if media_type != MEDIA_MANIFEST && media_type != MEDIA_DOCKER_MANIFEST {
            return Err(puller.media_type("the linux/amd64 manifest", &media_type));
        }
        (entry.digest.clone(), bytes)
    } else if media_type == MEDIA_MANIFEST || media_type == MEDIA_DOCKER_MANIFEST {
        (digest, bytes)
    } else {
        return Err(puller.media_type("the manifest", &media_type));
    };

    let manifest: RemoteManifest = puller.parse("the manifest", &bytes)?;
    let config_type = manifest.config.media_type.as_str();
    if config_type != MEDIA_CONFIG && config_type != MEDIA_DOCKER_CONFIG {
        return Err(puller.media_type("the config", config_type));
    }
    let config_bytes = puller.blob("the config", &manifest.config, MAX_CONFIG_BYTES)?;
    let config: RemoteConfig = puller.parse("the config", &config_bytes)?;
    if config.platform.os != "linux" || config.platform.architecture != "amd64" {
        return Err(PullError::NoAmd64 {
            reference: shown,
            platforms: for_log(&config.platform.name()).into_owned(),
        });
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(PullError::RootFs {
            reference: shown,
            diff_ids: config.rootfs.diff_ids.len(),
            layers: manifest.layers.len(),
        });
    }
    for d in &config.rootfs.diff_ids {
        puller.check_digest("a diff_id of the config", d)?;
    }

    let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
    if total > MAX_BASE_BYTES {
        return Err(puller.too_large("the layers together", total, MAX_BASE_BYTES));
    }
    let mut layers = Vec::new();
    let mut inflated_budget = MAX_BASE_UNCOMPRESSED_BYTES;
    for (descriptor, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let what = format!("layer {}", for_log(&descriptor.digest));
        let media_type = match descriptor.media_type.as_str() {
            MEDIA_DOCKER_LAYER_GZIP | MEDIA_LAYER_GZIP => MEDIA_LAYER_GZIP,
            MEDIA_LAYER_TAR => MEDIA_LAYER_TAR,
            other => return Err(puller.media_type(&what, other)),
        };
        let bytes = puller.blob(&what, descriptor, MAX_BASE_BYTES)?;
        // The diff_id is what the image's rootfs is checked against when it is unpacked: a
        // layer that inflates to anything else is refused here, not by the runtime later.
        let (tar_digest, uncompressed_size) = if media_type == MEDIA_LAYER_TAR {
            (sha256_digest(&bytes), bytes.len() as u64)
        } else {
            gunzip_digest(&bytes, inflated_budget).map_err(|source| match source {
                GunzipError::TooLarge { limit } => {
                    puller.too_large(&format!("{what} inflated"), limit + 1, limit)
                }
                source => PullError::Inflate {
                    reference: shown.clone(),
                    what: what.clone(),
                    source,
                },
            })?
        };
        if tar_digest != *diff_id {
            return Err(PullError::DiffIdMismatch {
                reference: shown,
                what,
                expected: diff_id.clone(),
                actual: tar_digest,
            });
        }
        inflated_budget -= uncompressed_size;
        layers.push(BaseLayer {
            media_type: media_type.into(),
            digest: descriptor.digest.clone(),
            bytes,
            uncompressed_size,
        });
    }

    let own: Vec<&RemoteHistory> = config.history.iter().filter(|h| !h.empty_layer).collect();
    let history = if own.len() == layers.len() {
        own.iter()
            .map(|h| History {
                created: h.created.clone().unwrap_or_default(),
                created_by: h.created_by.clone().unwrap_or_default(),
            })
            .collect()
    } else {
        (1..=layers.len())
            .map(|i| History {
                created: String::new(),
                created_by: format!("base {shown} layer {i}"),
            })
            .collect()
    };
    Ok(BaseImage {
        reference: reference.clone(),
        digest,
        layers,
        diff_ids: config.rootfs.diff_ids,
        env: config.config.and_then(|c| c.env).unwrap_or_default(),
        history,
    })
}

/// A pull session plus the names its errors carry.
struct Puller<'a> {
    session: Session<'a>,
    reference: String,
    registry: String,
}

impl Puller<'_> {
    /// `GET …/manifests/<reference>`: the media type (from the body, else `Content-Type`) and
    /// at most [`MAX_MANIFEST_BYTES`] of bytes.
    fn manifest(
        &mut self,
        reference: &str,
        expected_size: Option<u64>,
    ) -> Result<(String, Vec<u8>), PullError> {
        let what = format!("manifest {}", for_log(reference));
        let resp = self
            .session
            .get(&what, &format!("manifests/{reference}"), ACCEPT)
            .map_err(|source| self.registry_error(source))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(PullError::NotFound {
                reference: self.reference.clone(),
                registry: self.registry.clone(),
                status: resp.status().as_u16(),
                body: registry::short_body(resp),
            });
        }
        let resp = self.success(&what, resp)?;
        let header_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self.read(&what, resp, expected_size.unwrap_or(MAX_MANIFEST_BYTES))?;
        let actual = sha256_digest(&bytes);
        if let Some(claimed) = header_digest
            && claimed.starts_with("sha256:")
            && claimed != actual
        {
            return Err(self.mismatch(&what, &claimed, &actual));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct MediaTypeOnly {
            #[serde(default)]
            media_type: Option<String>,
        }
        let body_type = serde_json::from_slice::<MediaTypeOnly>(&bytes)
            .map_err(|source| PullError::Malformed {
                reference: self.reference.clone(),
                what: what.clone(),
                source,
            })?
            .media_type;
        let media_type = body_type.or(header_type).unwrap_or_default();
        Ok((media_type, bytes))
    }

    /// `GET …/blobs/<digest>`, checked against the descriptor's size and digest.
    fn blob(
        &mut self,
        what: &str,
        descriptor: &RemoteDescriptor,
        limit: u64,
    ) -> Result<Vec<u8>, PullError> {
        self.check_digest(what, &descriptor.digest)?;
        if descriptor.size > limit {
            return Err(self.too_large(what, descriptor.size, limit));
        }
        let resp = self
            .session
            .get(what, &format!("blobs/{}", descriptor.digest), "")
            .map_err(|source| self.registry_error(source))?;
        let resp = self.success(what, resp)?;
        let bytes = self.read(what, resp, descriptor.size)?;
        self.verify(what, &descriptor.digest, descriptor.size, &bytes)?;
        Ok(bytes)
    }

    /// A registry failure; an unreachable registry gets its own error, with what to do instead.
    fn registry_error(&self, source: RegistryError) -> PullError {
        match source {
            RegistryError::Unreachable { source, .. } => PullError::Unreachable {
                reference: self.reference.clone(),
                registry: self.registry.clone(),
                source,
            },
            source => PullError::Registry {
                reference: self.reference.clone(),
                source,
            },
        }
    }

    fn success(&self, what: &str, resp: Response) -> Result<Response, PullError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(PullError::Status {
            reference: self.reference.clone(),
            registry: self.registry.clone(),
            what: what.into(),
            status: resp.status().as_u16(),
            body: registry::short_body(resp),
        })
    }

    /// At most `limit` bytes of the body; one more byte is an error, not a truncation.
    fn read(&self, what: &str, resp: Response, limit: u64) -> Result<Vec<u8>, PullError> {
        let mut bytes = Vec::new();
        resp.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| PullError::Read {
                reference: self.reference.clone(),
                registry: self.registry.clone(),
                what: what.into(),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(self.too_large(what, bytes.len() as u64, limit));
        }
        Ok(bytes)
    }

    fn verify(&self, what: &str, digest: &str, size: u64, bytes: &[u8]) -> Result<(), PullError> {
        if bytes.len() as u64 != size {
            return Err(PullError::SizeMismatch {
                reference: self.reference.clone(),
                what: what.into(),
                size: bytes.len() as u64,
                expected: size,
            });
        }
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(self.mismatch(what, digest, &actual));
        }
        Ok(())
    }

    fn check_digest(&self, what: &str, digest: &str) -> Result<(), PullError> {
        match digest_hex(digest) {
            Some(_) => Ok(()),
            None => Err(PullError::BadDigest {
                reference: self.reference.clone(),
                what: what.into(),
                digest: for_log(digest).chars().take(80).collect(),
            }),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, PullError> {
        serde_json::from_slice(bytes).map_err(|source| PullError::Malformed {
            reference: self.reference.clone(),
            what: what.into(),
            source,
        })
    }

    fn mismatch(&self, what: &str, expected: &str, actual: &str) -> PullError {
        PullError::DigestMismatch {
            reference: self.reference.clone(),
            what: what.into(),
            expected: for_log(expected).chars().take(80).collect(),
            actual: actual.into(),
        }
    }

    fn too_large(&self, what: &str, size: u64, limit: u64) -> PullError {
        PullError::TooLarge {
            reference: self.reference.clone(),
            what: what.into(),
            size,
            limit,
        }
    }

    fn media_type(&self, what: &str, media_type: &str) -> PullError {
        PullError::MediaType {
            reference: self.reference.clone(),
            what: what.into(),
            media_type: for_log(media_type).chars().take(120).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_refs_are_parsed() {
        let r = BaseRef::parse("127.0.0.1:5000/base/cc:1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference()),
            ("127.0.0.1:5000", "base/cc", "1")
        );
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/base/cc:1");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = BaseRef::parse(&format!("gcr.io/distroless/cc-debian12@{d}")).unwrap();
        assert_eq!((r.reference(), r.tag.as_deref()), (d.as_str(), None));
        assert!(!r.is_loopback());
        let r = BaseRef::parse("gcr.io/distroless/cc-debian12").unwrap();
        assert_eq!(r.reference(), "latest");
        for bad in ["x@sha256:00", "Up/x:v", "x:-v", "x:a\nb", "/x", "a//b", ""] {
            assert!(BaseRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
