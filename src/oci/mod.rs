//! `wms build-image`: a daemonless, reproducible OCI image of `wms-serve` + ONNX Runtime + one
//! model (DESIGN §9, issue #12). Layers in the order they change, rarely first, so a new model
//! version adds one small layer: the base's layers (a registry base, [`pull`]) or the runtime
//! libraries (a `scratch` base: the shared-library closure of `wms-serve` and `libonnxruntime` as
//! this machine's loader resolves it, loader included) → `wms-serve` + ONNX Runtime → model +
//! config. Every timestamp is
//! `SOURCE_DATE_EPOCH`; tar headers, entry order and gzip bytes are fixed (see [`tar`], [`blob`]),
//! so the same inputs give the same digest on any machine and from any directory.
//!
//! This module assembles blobs in memory and writes OCI layouts; it does not run containers and
//! reads nothing from the model repository except the model and config files it is given.

pub mod blob;
pub mod closure;
pub mod ecr;
pub mod layout;
pub mod pull;
pub mod registry;
pub mod sbom;
pub mod spec;
pub mod tar;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message as _;

use crate::onnx::meta_keys;
use spec::{
    Descriptor, History, ImageConfig, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_MANIFEST, Manifest,
    Platform, RootFs, RunConfig,
};
use tar::{LayerBuilder, TarError};

/// Where things live inside the image.
pub mod paths {
    pub const ROOT: &str = "/opt/wms";
    pub const SERVE: &str = "/opt/wms/bin/wms-serve";
    /// `wms-serve` looks next to itself in `lib/` (see `ort_runtime`); `ORT_DYLIB_PATH` also
    /// names it, since a container without `/proc` cannot find its own executable.
    pub const ORT_DIR: &str = "/opt/wms/bin/lib";
    pub const CONFIG: &str = "/opt/wms/config.properties";
    pub const MODEL_STORE: &str = "/opt/wms/model-store";
    pub const MODEL: &str = "/opt/wms/model-store/model.onnx";
}

/// The non-root user the image runs as (distroless' `nonroot`).
pub const USER: &str = "65532:65532";
/// Inference, management and metrics (TorchServe's ports).
pub const PORTS: [u16; 3] = [8080, 8081, 8082];
/// The image's `config.properties` when none is given: the repository's
/// `torchserve/config.properties`, built into the binary so `wms` needs no source tree.
pub const DEFAULT_CONFIG: &str = include_str!("../../torchserve/config.properties");
/// The only platform built today.
pub const PLATFORM: &str = "linux/amd64";
/// Models larger than this are refused before they are read (ONNX protobufs cap at 2 GiB).
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// The base when `--base` is not given: Google's distroless `cc` image for Debian 12, tag
/// `nonroot`. It is the smallest public image with what `wms-serve` and ONNX Runtime load
/// besides themselves (glibc, libgcc_s, libstdc++, the loader), CA certificates and tzdata, no
/// shell or package manager, and a `nonroot` user 65532 ([`USER`]). Pulled over https from
/// gcr.io; pin it (`--base gcr.io/distroless/cc-debian12@sha256:…`) or point `--base` at a mirror
/// where gcr.io is not reachable. `--base scratch` needs no registry at all: the image then
/// carries the runtime libraries of the build machine as its loader resolves them.
pub const DEFAULT_BASE: &str = "gcr.io/distroless/cc-debian12:nonroot";

/// What the image is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// No base: the runtime libraries come from this machine.
    Scratch,
    /// An image in a registry that supplies glibc and libstdc++ (pulled by [`pull::pull`] and
    /// handed to [`build`]).
    Registry(pull::BaseRef),
}

/// Annotations (and labels) naming the base (annotations.md; ko writes the same two).
pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const ANNOTATION_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// Where a built image's base came from, so a push to the same registry can mount its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseOrigin {
    pub registry: String,
    pub repository: String,
    /// The reference as given, e.g. `gcr.io/distroless/cc-debian12:latest`.
    pub name: String,
    /// The base's linux/amd64 manifest digest.
    pub digest: String,
    /// Digests of the base's layers (in the base's repository).
    pub layers: Vec<String>,
}

/// The inputs of one build, resolved by the CLI.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    pub model: PathBuf,
    /// `config.properties` for wms-serve; `None` is [`DEFAULT_CONFIG`].
    pub config: Option<PathBuf>,
    pub serve_binary: PathBuf,
    pub ort_library: PathBuf,
    pub base: Base,
    /// Seconds since the epoch for every timestamp (`SOURCE_DATE_EPOCH`).
    pub created: u64,
    /// `org.opencontainers.image.*` values that come from the workflow.
    pub revision: Option<String>,
    pub source: Option<String>,
    pub licenses: String,
    /// Compressed layers from earlier builds ([`blob::GzipCache`]).
    pub layer_cache: blob::GzipCache,
}

/// One layer as built.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerInfo {
    pub role: &'static str,
    pub digest: String,
    pub size: u64,
    /// Bytes of the layer's tar (a base layer's as inflated when its diff_id was checked).
    pub uncompressed_size: u64,
}

/// A built image: its blobs by digest, the manifest and a summary of the layers.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    blobs: BTreeMap<String, Vec<u8>>,
    manifest: Vec<u8>,
    digest: String,
    pub layers: Vec<LayerInfo>,
    pub config_digest: String,
    pub labels: BTreeMap<String, String>,
    /// `None` for `scratch`.
    pub base: Option<BaseOrigin>,
}

impl BuiltImage {
    /// `sha256:…` of the manifest: the image's identity.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest
    }

    /// Config and layer blobs (not the manifest), by digest.
    pub fn blobs(&self) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.blobs.iter()
    }

    pub fn manifest_descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: MEDIA_MANIFEST.into(),
            digest: self.digest.clone(),
            size: self.manifest.len() as u64,
            platform: Some(Platform {
                architecture: "amd64".into(),
                os: "linux".into(),
            }),
            annotations: BTreeMap::new(),
        }
    }

    /// Bytes a registry stores for this image: manifest, config and compressed layers.
    pub fn compressed_size(&self) -> u64 {
        self.manifest.len() as u64 + self.blobs.values().map(|b| b.len() as u64).sum::<u64>()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is {size} bytes, over the {MAX_MODEL_BYTES}-byte limit of an ONNX model; hint: pass the model.onnx that `wms export-onnx` wrote", .path.display())]
    ModelTooLarge { path: PathBuf, size: u64 },
    #[error("{} is not an ONNX model; hint: pass the model.onnx that `wms export-onnx` wrote", .path.display())]
    NotOnnx {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{} is not an ONNX model (it has no graph); hint: pass the model.onnx that `wms export-onnx` wrote", .path.display())]
    NoGraph { path: PathBuf },
    #[error("runtime libraries for a scratch image")]
    Closure(#[from] closure::ClosureError),
    #[error("image layer")]
    Tar(#[from] TarError),
    #[error(
        "the base {reference} was not pulled before the build; hint: this is a bug in wms, please report it"
    )]
    BaseNotPulled { reference: String },
}

/// Reads the model and checks that it is an ONNX model with a graph; returns its bytes and
/// `metadata_props`. The CLI calls it before pulling a base, so a bad model is named before any
/// network traffic.
pub fn read_model(path: &Path) -> Result<(Vec<u8>, BTreeMap<String, String>), ImageError> {
    let size = std::fs::metadata(path)
        .map_err(|source| ImageError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size > MAX_MODEL_BYTES {
        return Err(ImageError::ModelTooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let model = fs_err::read(path).map_err(|source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let metadata = model_metadata(path, &model)?;
    Ok((model, metadata))
}

/// Builds the image in memory; a registry base (`inputs.base`) must come pulled as `base`.
pub fn build(
    inputs: &ImageInputs,
    base: Option<&pull::BaseImage>,
) -> Result<BuiltImage, ImageError> {
    let read = |p: &Path| {
        fs_err::read(p).map_err(|source| ImageError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let (model, metadata) = read_model(&inputs.model)?;
    let config = match &inputs.config {
        Some(p) => read(p)?,
        None => DEFAULT_CONFIG.as_bytes().to_vec(),
    };

    let mut layers: Vec<(&'static str, String, LayerBuilder)> = Vec::new();
    let base = match (&inputs.base, base) {
        (Base::Scratch, _) => None,
        (Base::Registry(_), Some(pulled)) => Some(pulled),
        (Base::Registry(r), None) => {
            return Err(ImageError::BaseNotPulled {
                reference: r.to_string(),
            });
        }
    };
    // A registry base supplies glibc and libstdc++; only `scratch` carries this machine's.
    if base.is_none() {
        let mut runtime = LayerBuilder::new();
        let loader = closure::interpreter(&inputs.serve_binary)?;
        let mut libs = closure::shared_library_closure(&loader, &inputs.serve_binary)?;
        for lib in closure::shared_library_closure(&loader, &inputs.ort_library)? {
            if !libs.contains(&lib) {
                libs.push(lib);
            }
        }
        for lib in &libs {
            runtime.file(&lib.to_string_lossy(), read(lib)?, true)?;
        }
        // Writable scratch space for the non-root user (tar modes are fixed at 0755, so the
        // deploy mounts an emptyDir here for anything that needs to write).
        runtime.dir("tmp")?;
        layers.push((
            "runtime libraries",
            "closure of wms-serve and ONNX Runtime".into(),
            runtime,
        ));
    }
    let mut server = LayerBuilder::new();
    server.file(paths::SERVE, read(&inputs.serve_binary)?, true)?;
    let ort_name = inputs
        .ort_library
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "libonnxruntime.so".into());
    let ort_path = format!("{}/{ort_name}", paths::ORT_DIR);
    server.file(&ort_path, read(&inputs.ort_library)?, true)?;
    layers.push((
        "wms-serve + ONNX Runtime",
        "wms-serve, libonnxruntime".into(),
        server,
    ));

    let mut model_layer = LayerBuilder::new();
    model_layer.file(paths::MODEL, model, false)?;
    model_layer.file(paths::CONFIG, config, false)?;
    layers.push((
        "model + config",
        "model.onnx, config.properties".into(),
        model_layer,
    ));

    let created = rfc3339(inputs.created);
    let mut blobs = BTreeMap::new();
    let mut infos = Vec::new();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    // The base's layers first, bytes and digests unchanged (see `pull` for the media types).
    for (i, layer) in base.iter().flat_map(|b| b.layers.iter().enumerate()) {
        let b = base.expect("layers come from a base");
        infos.push(LayerInfo {
            role: "base",
            digest: layer.digest.clone(),
            size: layer.bytes.len() as u64,
            uncompressed_size: layer.uncompressed_size,
        });
        descriptors.push(Descriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        });
        diff_ids.push(b.diff_ids[i].clone());
        history.push(b.history[i].clone());
        blobs.insert(layer.digest.clone(), layer.bytes.clone());
    }
    for (role, what, layer) in &layers {
        let tar = layer.finish(inputs.created)?;
        let gz = inputs.layer_cache.gzip(&tar);
        let digest = blob::sha256_digest(&gz);
        diff_ids.push(blob::sha256_digest(&tar));
        infos.push(LayerInfo {
            role,
            digest: digest.clone(),
            size: gz.len() as u64,
            uncompressed_size: tar.len() as u64,
        });
        descriptors.push(Descriptor {
            media_type: MEDIA_LAYER_GZIP.into(),
            digest: digest.clone(),
            size: gz.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        });
        history.push(History {
            created: created.clone(),
            created_by: format!("wms build-image: {role} ({what})"),
        });
        blobs.insert(digest, gz);
    }

    let mut labels = labels(inputs, &metadata, &created);
    let mut annotations = BTreeMap::from([(
        "org.opencontainers.image.created".to_string(),
        created.clone(),
    )]);
    if let Some(b) = base {
        for (k, v) in [
            (ANNOTATION_BASE_NAME, b.reference.to_string()),
            (ANNOTATION_BASE_DIGEST, b.digest.clone()),
        ] {
            labels.insert(k.into(), v.clone());
            annotations.insert(k.into(), v);
        }
    }
    let own_env = vec![
        format!("{}={ort_path}", crate::env_vars::ORT_DYLIB_PATH),
        format!(
            "{}={}",
            crate::env_vars::WMS_SERVE_MODEL_STORE,
            paths::MODEL_STORE
        ),
        format!("{}=model.onnx", crate::env_vars::WMS_SERVE_LOAD_MODELS),
    ];
    let env = merge_env(base.map_or(&[][..], |b| &b.env), own_env);
    let image_config = ImageConfig {
        created: created.clone(),
        architecture: "amd64".into(),
        os: "linux".into(),
        config: RunConfig {
            user: USER.into(),
            env,
            entrypoint: vec![paths::SERVE.into(), "--config".into(), paths::CONFIG.into()],
            cmd: Vec::new(),
            working_dir: paths::ROOT.into(),
            exposed_ports: PORTS
                .iter()
                .map(|p| (format!("{p}/tcp"), serde_json::Map::new()))
                .collect(),
            labels: labels.clone(),
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history,
    };
    let config_bytes = serde_json::to_vec(&image_config).expect("the config always serializes");
    let config_digest = blob::sha256_digest(&config_bytes);
    let config_descriptor = Descriptor {
        media_type: MEDIA_CONFIG.into(),
        digest: config_digest.clone(),
        size: config_bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    };
    blobs.insert(config_digest.clone(), config_bytes);
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.into(),
        config: config_descriptor,
        layers: descriptors,
        annotations,
    };
    let manifest = serde_json::to_vec(&manifest).expect("the manifest always serializes");
    Ok(BuiltImage {
        digest: blob::sha256_digest(&manifest),
        manifest,
        blobs,
        layers: infos,
        config_digest,
        labels,
        base: base.map(|b| BaseOrigin {
            registry: b.reference.registry.clone(),
            repository: b.reference.repository.clone(),
            name: b.reference.to_string(),
            digest: b.digest.clone(),
            layers: b.layers.iter().map(|l| l.digest.clone()).collect(),
        }),
    })
}

/// The base's `KEY=value` entries with ours on top: a key we set replaces the base's in place
/// (as a Dockerfile `ENV` does), new keys follow in our order.
fn merge_env(base: &[String], ours: Vec<String>) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let mut env = base.to_vec();
    for kv in ours {
        match env.iter().position(|e| key(e) == key(&kv)) {
            Some(i) => env[i] = kv,
            None => env.push(kv),
        }
    }
    env
}

/// `metadata_props` of the model, after checking it decodes as an ONNX model with a graph.
fn model_metadata(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, String>, ImageError> {
    let model =
        crate::onnx::proto::ModelProto::decode(bytes).map_err(|source| ImageError::NotOnnx {
            path: path.to_path_buf(),
            source,
        })?;
    if model.graph.is_none() {
        return Err(ImageError::NoGraph {
            path: path.to_path_buf(),
        });
    }
    Ok(model
        .metadata_props
        .into_iter()
        .filter_map(|e| Some((e.key?, e.value.unwrap_or_default())))
        .collect())
}

fn labels(
    inputs: &ImageInputs,
    metadata: &BTreeMap<String, String>,
    created: &str,
) -> BTreeMap<String, String> {
    let meta = |k: &str| metadata.get(k).filter(|v| !v.is_empty()).cloned();
    let name = meta(meta_keys::MODEL_NAME).unwrap_or_else(|| "model".into());
    let mut labels = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            labels.insert(k.to_string(), v);
        }
    };
    put(
        "org.opencontainers.image.created",
        Some(created.to_string()),
    );
    put(
        "org.opencontainers.image.title",
        Some(format!("wms-serve: {name}")),
    );
    put("org.opencontainers.image.version", meta(meta_keys::VERSION));
    put(
        "org.opencontainers.image.revision",
        inputs.revision.clone().or_else(|| meta(meta_keys::GIT_SHA)),
    );
    put("org.opencontainers.image.source", inputs.source.clone());
    put(
        "org.opencontainers.image.licenses",
        Some(inputs.licenses.clone()),
    );
    put("io.wms.model.name", Some(name));
    put("io.wms.model.version", meta(meta_keys::VERSION));
    put("io.wms.model.metrics", meta(meta_keys::METRICS));
    labels
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub fn rfc3339(seconds: u64) -> String {
    let u = crate::calendar::utc(seconds);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_env_overrides_the_base_in_place() {
        let base = [
            "PATH=/usr/bin:/bin".to_string(),
            "A=1".into(),
            "SSL=x".into(),
        ];
        let env = merge_env(&base, vec!["A=2".into(), "B=3".into()]);
        assert_eq!(env, ["PATH=/usr/bin:/bin", "A=2", "SSL=x", "B=3"]);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_208_000 + 3661), "2024-02-29T13:01:01Z");
    }
}
