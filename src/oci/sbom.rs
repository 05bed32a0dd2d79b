//! The image's SBOM: an SPDX 2.3 JSON document (fields as ko writes them, `internal/sbom/spdx.go`)
//! naming what the image runs — the `wms-serve` binary and the crates compiled into it, ONNX
//! Runtime with the version its file name carries, the model (name, version, sha256), and the
//! base (its name and digest, or `scratch`) — attached to the image as an OCI artifact: an image
//! manifest with `artifactType: application/spdx+json`, the empty config, the document as its one
//! layer and `subject` = the image. Pushed after the image; where the registry does not answer
//! `OCI-Subject`, the referrers API is asked (`GET /v2/<name>/referrers/<digest>`), and only
//! where that answers 404 (no referrers API, e.g. distribution 2.8) is the referrers tag
//! schema's `sha256-<hex>` index kept up to date instead (distribution-spec `spec.md`, "Pushing
//! Manifests with Subject", "Listing Referrers"). Written into the OCI layout too, as an untagged `index.json` entry.
//!
//! The crates are those linked into `wms-serve`: `build.rs` walks `cargo metadata`'s resolve
//! (no features, this platform) from the `wms` package along normal dependencies only, leaving
//! out proc-macro crates, build and dev dependencies and the `train`-only `tch`/`torch-sys`;
//! versions, sources and checksums come from Cargo.lock. The granularity is cargo's: `wms-serve`
//! links the `wms` library, so a crate the library uses is listed even where no code of it is
//! reached from `wms-serve` (the linker drops that code). Where cargo metadata failed at build
//! time the list falls back to Cargo.lock's closure and the document's comment says so. The
//! crates describe the `wms-serve` built from the same tree as this `wms`. The document is a function of the image and its inputs: the same build gives
//! the same SBOM bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::fsutil::{WriteError, write_atomic};
use crate::oci::BuiltImage;
use crate::oci::blob::{digest_hex, sha256_digest};
use crate::oci::registry::{RegistryError, RegistryOptions, Session, Target};
use crate::oci::spec::{
    ArtifactDescriptor, ArtifactManifest, Descriptor, EMPTY_JSON, MEDIA_EMPTY, MEDIA_INDEX,
    MEDIA_MANIFEST, MEDIA_SPDX, ReferrersIndex,
};

/// The lock and manifest of the tree this `wms` was built from.
const CARGO_LOCK: &str = include_str!("../../Cargo.lock");
const CARGO_TOML: &str = include_str!("../../Cargo.toml");
/// The crates linked into `wms-serve` with their normal dependencies, from `cargo metadata` at
/// build time (`build.rs`): `name version\tdep version,dep version` per line; empty when cargo
/// metadata failed there.
const SERVE_CRATES: &str = include_str!(concat!(env!("OUT_DIR"), "/serve-crates.txt"));

/// What the SBOM describes besides the image itself.
#[derive(Debug, Clone)]
pub struct SbomInputs<'a> {
    pub image: &'a BuiltImage,
    /// `REGISTRY/REPO` of the first tag, if any (the purl's repository).
    pub name: Option<&'a str>,
    pub model: &'a Path,
    pub serve_binary: &'a Path,
    pub ort_library: &'a Path,
    /// `SOURCE_DATE_EPOCH`: the document's `created`.
    pub created: u64,
    pub licenses: &'a str,
}

/// The SBOM as blobs and the artifact manifest that refers to the image.
#[derive(Debug, Clone)]
pub struct Sbom {
    pub document: Vec<u8>,
    pub document_digest: String,
    pub manifest: Vec<u8>,
    /// `sha256:…` of the artifact manifest (`sbom_digest`).
    pub digest: String,
    /// The image's manifest digest (the `subject`).
    pub subject: String,
}

/// How the SBOM was made findable from the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Referrers {
    /// The registry answered `OCI-Subject`: its referrers API lists the SBOM.
    Api,
    /// The registry has no referrers API: the SBOM is listed under this tag.
    Tag(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("cannot read {} for the SBOM", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot push the SBOM of {subject} to {registry}/{repository}")]
    Push {
        registry: String,
        repository: String,
        subject: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error(
        "the tag {tag} in {registry}/{repository} is not a referrers index; hint: it belongs to the referrers tag schema (sha256-<hex>), delete it and push again"
    )]
    ForeignReferrersTag {
        registry: String,
        repository: String,
        tag: String,
    },
    #[error(
        "cannot add the SBOM to the OCI layout; hint: check that --oci-layout names a writable directory"
    )]
    Write(#[from] WriteError),
    #[error("{} is not an OCI image index; hint: pick an empty or new directory", .path.display())]
    ForeignLayout {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Builds the SPDX document and the artifact manifest for `inputs.image`.
pub fn build(inputs: &SbomInputs) -> Result<Sbom, SbomError> {
    let document = serde_json::to_vec_pretty(&document(inputs)?).expect("JSON always serializes");
    let document_digest = sha256_digest(&document);
    let image = inputs.image;
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.into(),
        artifact_type: MEDIA_SPDX.into(),
        config: empty_descriptor(),
        layers: vec![Descriptor {
            media_type: MEDIA_SPDX.into(),
            digest: document_digest.clone(),
            size: document.len() as u64,
            platform: None,
            annotations: BTreeMap::from([(
                "org.opencontainers.image.title".to_string(),
                "sbom.spdx.json".to_string(),
            )]),
        }],
        subject: Descriptor {
            platform: None,
            ..image.manifest_descriptor()
        },
        annotations: BTreeMap::from([(
            "org.opencontainers.image.created".to_string(),
            crate::oci::rfc3339(inputs.created),
        )]),
    };
    let manifest = serde_json::to_vec(&manifest).expect("a manifest always serializes");
    Ok(Sbom {
        digest: sha256_digest(&manifest),
        manifest,
        document,
        document_digest,
        subject: image.digest().to_string(),
    })
}

fn empty_descriptor() -> Descriptor {
    Descriptor {
        media_type: MEDIA_EMPTY.into(),
        digest: sha256_digest(EMPTY_JSON),
        size: EMPTY_JSON.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

impl Sbom {
    /// The index entry that names the artifact (referrers list, layout `index.json`).
    pub fn descriptor(&self) -> ArtifactDescriptor {
        ArtifactDescriptor {
            media_type: MEDIA_MANIFEST.into(),
            digest: self.digest.clone(),
            size: self.manifest.len() as u64,
            artifact_type: Some(MEDIA_SPDX.into()),
            annotations: BTreeMap::new(),
        }
    }

    /// The artifact's blobs (empty config, document) and its manifest, by digest.
    fn blobs(&self) -> [(String, &[u8]); 3] {
        [
            (sha256_digest(EMPTY_JSON), EMPTY_JSON),
            (self.document_digest.clone(), &self.document),
            (self.digest.clone(), &self.manifest),
        ]
    }
}

/// The SPDX 2.3 document.
fn document(inputs: &SbomInputs) -> Result<serde_json::Value, SbomError> {
    let image = inputs.image;
    let hex = digest_hex(image.digest()).expect("our digests are sha256");
    let file_sha256 = |path: &Path| -> Result<String, SbomError> {
        let bytes = fs_err::read(path).map_err(|source| SbomError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(sha256_digest(&bytes)["sha256:".len()..].to_string())
    };
    let checksum = |hex: &str| json!([{"algorithm": "SHA256", "checksumValue": hex}]);
    let purl = |locator: String| json!([{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator}]);
    let package = |id: &str, name: &str, version: &str, purpose: &str| {
        json!({
            "SPDXID": id,
            "name": name,
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": purpose,
        })
    };
    let relationship = |a: &str, kind: &str, b: &str| json!({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b});

    let name = inputs.name.unwrap_or("wms-serve");
    let (repository_url, short) = match name.rsplit_once('/') {
        Some((_, last)) => (Some(name), last),
        None => (None, name),
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(image.manifest_bytes()).expect("we wrote the manifest");
    let annotation = |k: &str| manifest["annotations"][k].as_str().map(String::from);
    let base = annotation(crate::oci::ANNOTATION_BASE_NAME)
        .zip(annotation(crate::oci::ANNOTATION_BASE_DIGEST));

    let mut image_package = package("SPDXRef-Image", name, image.digest(), "CONTAINER");
    image_package["checksums"] = checksum(hex);
    image_package["externalRefs"] = purl(format!(
        "pkg:oci/{short}@sha256%3A{hex}{}",
        repository_url
            .map(|u| format!("?repository_url={u}"))
            .unwrap_or_default()
    ));
    if base.is_none() {
        image_package["comment"] = json!(
            "base: scratch; the runtime libraries are the build machine's, as its dynamic loader resolved them for wms-serve and ONNX Runtime"
        );
    }

    let mut serve = package(
        "SPDXRef-wms-serve",
        "wms-serve",
        env!("CARGO_PKG_VERSION"),
        "APPLICATION",
    );
    serve["checksums"] = checksum(&file_sha256(inputs.serve_binary)?);
    serve["licenseDeclared"] = json!(inputs.licenses);

    let ort_version = onnxruntime_version(inputs.ort_library);
    let mut ort = package(
        "SPDXRef-onnxruntime",
        "onnxruntime",
        ort_version.as_deref().unwrap_or("NOASSERTION"),
        "LIBRARY",
    );
    ort["checksums"] = checksum(&file_sha256(inputs.ort_library)?);
    ort["licenseDeclared"] = json!("MIT");
    if let Some(v) = &ort_version {
        ort["externalRefs"] = purl(format!("pkg:github/microsoft/onnxruntime@v{v}"));
    }

    let label = |k: &str| image.labels.get(k).cloned();
    let model_sha256 = file_sha256(inputs.model)?;
    let mut model = package(
        "SPDXRef-Model",
        &label("io.wms.model.name").unwrap_or_else(|| "model".into()),
        &label("io.wms.model.version").unwrap_or_else(|| "NOASSERTION".into()),
        "FILE",
    );
    model["checksums"] = checksum(&model_sha256);
    model["comment"] = json!(format!("ONNX model at {}", crate::oci::paths::MODEL));

    let mut packages = vec![image_package, serve, ort, model];
    let mut relationships = vec![
        relationship("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image"),
        relationship("SPDXRef-Image", "CONTAINS", "SPDXRef-wms-serve"),
        relationship("SPDXRef-Image", "CONTAINS", "SPDXRef-onnxruntime"),
        relationship("SPDXRef-Image", "CONTAINS", "SPDXRef-Model"),
        relationship("SPDXRef-wms-serve", "DEPENDS_ON", "SPDXRef-onnxruntime"),
    ];
    if let Some((base_name, base_digest)) = &base {
        let mut p = package("SPDXRef-Base", base_name, base_digest, "CONTAINER");
        if let Some(h) = digest_hex(base_digest) {
            p["checksums"] = checksum(h);
        }
        packages.push(p);
        relationships.push(relationship(
            "SPDXRef-Image",
            "DESCENDANT_OF",
            "SPDXRef-Base",
        ));
    }

    let lock = Lockfile::parse(CARGO_LOCK);
    let (crates, method) = serve_crates(&lock);
    for (key, c) in &crates {
        let mut p = package(&crate_id(key), &c.name, &c.version, "LIBRARY");
        if c.source
            .as_deref()
            .is_some_and(|s| s.starts_with("registry+https://github.com/rust-lang/crates.io-index"))
        {
            p["downloadLocation"] = json!(format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                c.name, c.version
            ));
        }
        if let Some(sum) = &c.checksum {
            p["checksums"] = checksum(sum);
        }
        p["externalRefs"] = purl(format!("pkg:cargo/{}@{}", c.name, c.version));
        packages.push(p);
    }
    for (key, c) in &crates {
        let from = if c.name == ROOT_PACKAGE {
            "SPDXRef-wms-serve".to_string()
        } else {
            crate_id(key)
        };
        for dep in &c.dependencies {
            if crates.contains_key(dep) {
                relationships.push(relationship(&from, "DEPENDS_ON", &crate_id(dep)));
            }
        }
    }

    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{name}@{}", image.digest()),
        "documentNamespace": format!("https://spdx.org/spdxdocs/wms-serve-sha256-{hex}"),
        "creationInfo": {
            "created": crate::oci::rfc3339(inputs.created),
            "creators": [format!("Tool: wms-{}", env!("CARGO_PKG_VERSION"))],
        },
        "comment": format!("Crates: {method}."),
        "documentDescribes": ["SPDXRef-Image"],
        "packages": packages,
        "relationships": relationships,
    }))
}

/// `libonnxruntime.so.1.31.1` (or a link to it) → `1.31.1`.
fn onnxruntime_version(library: &Path) -> Option<String> {
    let resolved = std::fs::canonicalize(library).unwrap_or_else(|_| library.to_path_buf());
    [resolved.as_path(), library].iter().find_map(|p| {
        let name = p.file_name()?.to_str()?;
        let version = name.split_once(".so.")?.1;
        (version.split('.').count() >= 2
            && version
                .split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
        .then(|| version.to_string())
    })
}

/// The package whose dependencies the crates are.
const ROOT_PACKAGE: &str = "wms";

/// The crates of `wms-serve` by lock key, with their source and checksum from Cargo.lock and
/// their normal dependencies, and how they were found (the SBOM's comment).
fn serve_crates(lock: &Lockfile) -> (BTreeMap<String, LockedCrate>, &'static str) {
    let crates = parse_serve_crates(SERVE_CRATES, lock);
    if crates.is_empty() {
        let closure = lock
            .closure(ROOT_PACKAGE, &root_dependencies(CARGO_TOML))
            .into_iter()
            .map(|(k, c)| (k, c.clone()))
            .collect();
        return (
            closure,
            "Cargo.lock's resolution of wms's normal, non-optional dependencies (cargo metadata was not available when wms was built, so build-time crates are included)",
        );
    }
    (
        crates,
        "the crates linked into wms-serve: cargo metadata's normal dependencies of the wms package for this platform, without features (no tch/torch-sys), proc-macro, build and dev dependencies; checksums from Cargo.lock",
    )
}

/// `name version\tdeps` lines (see [`SERVE_CRATES`]) as lock entries; a crate Cargo.lock does
/// not list keeps no source or checksum.
fn parse_serve_crates(text: &str, lock: &Lockfile) -> BTreeMap<String, LockedCrate> {
    text.lines()
        .filter_map(|line| {
            let (key, deps) = line.split_once('\t').unwrap_or((line, ""));
            let (name, version) = key.split_once(' ')?;
            let mut c = lock.packages.get(key).cloned().unwrap_or(LockedCrate {
                name: name.into(),
                version: version.into(),
                ..LockedCrate::default()
            });
            c.dependencies = deps
                .split(',')
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect();
            Some((key.to_string(), c))
        })
        .collect()
}

/// An SPDX id for a lock key (`name version`): `SPDXRef-crate-<name>-<version>`, limited to the
/// characters SPDX allows (letters, digits, `.` and `-`).
fn crate_id(key: &str) -> String {
    let clean: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-crate-{clean}")
}

/// The names under `[dependencies]` of `Cargo.toml` that are not `optional = true`.
fn root_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if !in_deps || line.starts_with('#') {
            continue;
        }
        let Some((name, spec)) = line.split_once('=') else {
            continue;
        };
        let optional = spec.replace(' ', "").contains("optional=true");
        if !optional {
            deps.insert(name.trim().to_string());
        }
    }
    deps
}

/// One `[[package]]` of Cargo.lock.
#[derive(Debug, Clone, Default)]
struct LockedCrate {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
    /// Keys (`name version`) of its dependencies.
    dependencies: Vec<String>,
}

/// Cargo.lock (format v3/v4) as a graph keyed by `name version`.
#[derive(Debug, Default)]
struct Lockfile {
    packages: BTreeMap<String, LockedCrate>,
}

impl Lockfile {
    /// A line parser for the subset of TOML Cargo writes: `[[package]]` tables with string
    /// fields and a `dependencies` array, one entry per line.
    fn parse(text: &str) -> Self {
        let mut raw: Vec<(LockedCrate, Vec<String>)> = Vec::new();
        let mut in_package = false;
        let mut in_deps = false;
        let unquote = |v: &str| v.trim().trim_end_matches(',').trim_matches('"').to_string();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') && !in_deps {
                in_package = line == "[[package]]";
                if in_package {
                    raw.push(Default::default());
                }
                continue;
            }
            if !in_package {
                continue;
            }
            let (c, deps) = raw.last_mut().expect("a package is open");
            if in_deps {
                if line.starts_with(']') {
                    in_deps = false;
                } else if !line.is_empty() {
                    deps.push(unquote(line));
                }
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key.trim() {
                "name" => c.name = unquote(value),
                "version" => c.version = unquote(value),
                "source" => c.source = Some(unquote(value)),
                "checksum" => c.checksum = Some(unquote(value)),
                "dependencies" => {
                    let value = value.trim();
                    if value == "[" {
                        in_deps = true;
                    } else {
                        let inner = value.trim_start_matches('[').trim_end_matches(']');
                        deps.extend(inner.split(',').map(unquote).filter(|d| !d.is_empty()));
                    }
                }
                _ => {}
            }
        }
        // A dependency is `name` when the lock has one version of it, `name version` (and a
        // ` (source)`) otherwise.
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (c, _) in &raw {
            by_name
                .entry(c.name.clone())
                .or_default()
                .push(c.version.clone());
        }
        let mut packages = BTreeMap::new();
        for (mut c, deps) in raw {
            c.dependencies = deps
                .iter()
                .filter_map(|d| {
                    let mut parts = d.split(' ');
                    let name = parts.next()?;
                    let version = match parts.next() {
                        Some(v) => v.to_string(),
                        None => by_name.get(name)?.first()?.clone(),
                    };
                    Some(format!("{name} {version}"))
                })
                .collect();
            packages.insert(format!("{} {}", c.name, c.version), c);
        }
        Lockfile { packages }
    }

    /// `root` and every package reachable from it through `root_deps` (names), by key.
    fn closure(&self, root: &str, root_deps: &BTreeSet<String>) -> BTreeMap<String, &LockedCrate> {
        let mut out = BTreeMap::new();
        let Some((root_key, root_crate)) = self
            .packages
            .iter()
            .find(|(_, c)| c.name == root && c.source.is_none())
        else {
            return out;
        };
        out.insert(root_key.clone(), root_crate);
        let mut todo: Vec<&String> = root_crate
            .dependencies
            .iter()
            .filter(|k| k.split(' ').next().is_some_and(|n| root_deps.contains(n)))
            .collect();
        while let Some(key) = todo.pop() {
            let Some(c) = self.packages.get(key) else {
                continue;
            };
            if out.insert(key.clone(), c).is_none() {
                todo.extend(c.dependencies.iter());
            }
        }
        out
    }
}

/// Writes the SBOM's blobs into the layout at `dir` and lists its manifest in `index.json`
/// without a ref name (after the image was written there).
pub fn write_layout(dir: &Path, sbom: &Sbom) -> Result<(), SbomError> {
    for (digest, bytes) in sbom.blobs() {
        let hex = digest_hex(&digest).expect("our digests are sha256");
        let path = dir.join("blobs/sha256").join(hex);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            continue;
        }
        write_atomic(&path, bytes)?;
    }
    let index_path = dir.join("index.json");
    let read = fs_err::read(&index_path).map_err(|source| SbomError::Read {
        path: index_path.clone(),
        source,
    })?;
    // A generic value keeps whatever else the entries carry.
    let mut index: serde_json::Value =
        serde_json::from_slice(&read).map_err(|source| SbomError::ForeignLayout {
            path: index_path.clone(),
            source,
        })?;
    let Some(manifests) = index["manifests"].as_array_mut() else {
        return Err(SbomError::ForeignLayout {
            path: index_path,
            source: serde::de::Error::custom("no `manifests` array"),
        });
    };
    manifests.retain(|m| m["digest"] != sbom.digest.as_str());
    manifests.push(serde_json::to_value(sbom.descriptor()).expect("a descriptor serializes"));
    let json = serde_json::to_vec_pretty(&index).expect("an index always serializes");
    write_atomic(&index_path, &json)?;
    Ok(())
}

/// Pushes the SBOM to each repository of `targets` (the image must be there already), then
/// makes it findable: the referrers API where the registry answered `OCI-Subject`, else the
/// `sha256-<hex>` tag of the referrers tag schema.
pub fn push(
    sbom: &Sbom,
    targets: &[Target],
    opts: &RegistryOptions,
) -> Result<Vec<(String, Referrers)>, SbomError> {
    let mut done: Vec<(String, Referrers)> = Vec::new();
    for target in targets {
        let place = format!("{}/{}", target.registry, target.repository);
        if done.iter().any(|(p, _)| *p == place) {
            continue;
        }
        let fail = |source| SbomError::Push {
            registry: target.registry.clone(),
            repository: target.repository.clone(),
            subject: sbom.subject.clone(),
            source: Box::new(source),
        };
        let client = crate::oci::registry::client(opts).map_err(fail)?;
        let scopes = vec![format!("repository:{}:pull,push", target.repository)];
        let mut session = Session::new(&client, &target.registry, &target.repository, opts, scopes);
        let [config, document, _] = sbom.blobs();
        for (digest, bytes) in [config, document] {
            session.ensure_blob(&digest, bytes).map_err(fail)?;
        }
        let indexed = session
            .put_manifest_as(&sbom.digest, MEDIA_MANIFEST, &sbom.manifest)
            .map_err(fail)?;
        let how = if indexed || listed_by_referrers_api(&mut session, sbom, target)? {
            Referrers::Api
        } else {
            let tag = referrers_tag(&sbom.subject);
            update_referrers_tag(&mut session, &tag, sbom.descriptor(), target)?;
            Referrers::Tag(tag)
        };
        done.push((place, how));
    }
    Ok(done)
}

/// Asks the referrers API (`GET /v2/<name>/referrers/<subject>`) whether it lists the SBOM, for a
/// registry that did not answer `OCI-Subject`: `false` on 404 (no referrers API, e.g.
/// distribution 2.8: the tag schema is the fallback) or when the index does not list it yet;
/// any other answer is an error, not a reason to guess.
fn listed_by_referrers_api(
    session: &mut Session,
    sbom: &Sbom,
    target: &Target,
) -> Result<bool, SbomError> {
    let fail = |source| SbomError::Push {
        registry: target.registry.clone(),
        repository: target.repository.clone(),
        subject: sbom.subject.clone(),
        source: Box::new(source),
    };
    let what = format!("referrers of {}", sbom.subject);
    let resp = session
        .get(&what, &format!("referrers/{}", sbom.subject), MEDIA_INDEX)
        .map_err(fail)?;
    match resp.status() {
        reqwest::StatusCode::NOT_FOUND => Ok(false),
        s if s.is_success() => {
            let mut bytes = Vec::new();
            // A referrers index of one image is small; a hostile endless one is cut off.
            let _ = std::io::Read::read_to_end(
                &mut std::io::Read::take(resp, crate::oci::pull::MAX_MANIFEST_BYTES),
                &mut bytes,
            );
            let index: Option<ReferrersIndex> = serde_json::from_slice(&bytes).ok();
            Ok(index.is_some_and(|i| i.manifests.iter().any(|m| m.digest == sbom.digest)))
        }
        _ => Err(fail(session.status_error(&what, resp))),
    }
}

/// The referrers tag schema's tag for a digest: `<alg>-<hex>`.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Adds `entry` to the index under `tag` (created when missing), as the tag schema says: pull,
/// add if absent, push.
fn update_referrers_tag(
    session: &mut Session,
    tag: &str,
    entry: ArtifactDescriptor,
    target: &Target,
) -> Result<(), SbomError> {
    let fail = |source| SbomError::Push {
        registry: target.registry.clone(),
        repository: target.repository.clone(),
        subject: tag.to_string(),
        source: Box::new(source),
    };
    let foreign = || SbomError::ForeignReferrersTag {
        registry: target.registry.clone(),
        repository: target.repository.clone(),
        tag: tag.to_string(),
    };
    let what = format!("referrers tag {tag}");
    let resp = session
        .get(&what, &format!("manifests/{tag}"), MEDIA_INDEX)
        .map_err(fail)?;
    let mut index = match resp.status() {
        reqwest::StatusCode::NOT_FOUND => ReferrersIndex {
            schema_version: 2,
            media_type: MEDIA_INDEX.into(),
            manifests: Vec::new(),
        },
        s if s.is_success() => {
            let bytes = resp.bytes().map_err(|_| foreign())?;
            let index: ReferrersIndex = serde_json::from_slice(&bytes).map_err(|_| foreign())?;
            if index.media_type != MEDIA_INDEX {
                return Err(foreign());
            }
            index
        }
        _ => return Err(fail(session.status_error(&what, resp))),
    };
    if index.manifests.iter().any(|m| m.digest == entry.digest) {
        return Ok(());
    }
    index.manifests.push(entry);
    let bytes = serde_json::to_vec(&index).expect("an index always serializes");
    session
        .put_manifest_as(tag, MEDIA_INDEX, &bytes)
        .map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_closure_leaves_out_train_and_dev_only_crates() {
        let lock = Lockfile::parse(CARGO_LOCK);
        let crates = lock.closure(ROOT_PACKAGE, &root_dependencies(CARGO_TOML));
        let names: BTreeSet<&str> = crates.values().map(|c| c.name.as_str()).collect();
        for want in ["wms", "ort", "axum", "tokio", "serde", "prost"] {
            assert!(names.contains(want), "{want} missing");
        }
        for unwanted in ["tch", "torch-sys", "tokio-tungstenite"] {
            assert!(!names.contains(unwanted), "{unwanted} listed");
        }
        let ort = crates.values().find(|c| c.name == "ort").unwrap();
        assert!(ort.checksum.as_ref().is_some_and(|c| c.len() == 64));
    }

    #[test]
    fn the_sbom_lists_the_crates_linked_into_wms_serve_only() {
        let lock = Lockfile::parse(CARGO_LOCK);
        let (crates, method) = serve_crates(&lock);
        assert!(
            method.starts_with("the crates linked into wms-serve"),
            "{method}"
        );
        let names: BTreeSet<&str> = crates.values().map(|c| c.name.as_str()).collect();
        for want in ["wms", "ort", "axum", "tokio", "serde", "prost", "ndarray"] {
            assert!(names.contains(want), "{want} missing");
        }
        // train-only, proc-macro (run by the compiler), build-only and dev-only crates.
        for unwanted in [
            "tch",
            "torch-sys",
            "clap_derive",
            "serde_derive",
            "thiserror-impl",
            "tokio-macros",
            "cc",
            "tokio-tungstenite",
            "tungstenite",
        ] {
            assert!(!names.contains(unwanted), "{unwanted} listed");
        }
        let ort = crates.values().find(|c| c.name == "ort").unwrap();
        assert!(ort.checksum.as_ref().is_some_and(|c| c.len() == 64));
        // Dependencies point inside the set.
        for c in crates.values() {
            for d in &c.dependencies {
                assert!(crates.contains_key(d), "{} -> {d}", c.name);
            }
        }
    }

    #[test]
    fn lock_dependencies_with_versions_resolve() {
        let lock = Lockfile::parse(
            "version = 4\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\ndependencies = [\n \"b 0.1.0\",\n \"c\",\n]\n\n\
             [[package]]\nname = \"b\"\nversion = \"0.1.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n\
             [[package]]\nname = \"b\"\nversion = \"0.2.0\"\n\n[[package]]\nname = \"c\"\nversion = \"2.0.0\"\n",
        );
        let keys: Vec<String> = lock
            .closure("a", &["b".into(), "c".into()].into())
            .into_keys()
            .collect();
        assert_eq!(keys, ["a 1.0.0", "b 0.1.0", "c 2.0.0"]);
    }

    #[test]
    fn onnxruntime_versions_come_from_the_file_name() {
        assert_eq!(
            onnxruntime_version(Path::new("/nowhere/libonnxruntime.so.1.31.1")).as_deref(),
            Some("1.31.1")
        );
        assert_eq!(
            onnxruntime_version(Path::new("/nowhere/libonnxruntime.so")),
            None
        );
        assert_eq!(
            crate_id("serde_json 1.0.1"),
            "SPDXRef-crate-serde-json-1.0.1"
        );
        assert_eq!(referrers_tag("sha256:abc"), "sha256-abc");
    }
}
