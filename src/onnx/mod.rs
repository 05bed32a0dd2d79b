//! ONNX export: turns a checkpoint into `model.onnx` natively (no Python, no protoc), checks it
//! against an independent Rust forward pass in ONNX Runtime, and packs TorchServe `.mar` archives.
//!
//! - [`export`]: checkpoint → ONNX bytes (opset [`OPSET`]; BatchNorm folded into the convolutions;
//!   input [`INPUT_NAME`] f32 `[N, 3, H, W]`, output [`OUTPUT_NAME`] f32 `[N, 1, H, W]`, N/H/W
//!   dynamic; `metadata_props` under the keys in [`meta_keys`]). Same checkpoint + options ⇒ same
//!   bytes.
//! - [`reference`]: a plain f32 forward pass straight from the checkpoint (BatchNorm *not* folded),
//!   the yardstick for [`check`] and for anyone who needs logits without ONNX Runtime.
//! - [`check`]: runs a written model in ONNX Runtime and compares it with [`reference`].
//! - [`mar`]: TorchServe model archives.
//! - [`quantize`] and [`calibrate`]: int8 export as a QDQ graph, calibrated on the data set's
//!   validation photos and guarded by its test photos.
//! - [`pipeline`]: the whole `wms export-onnx` run (write, check, quantize, archive) for the CLI.
//!
//! This module owns the graph layout; it must not decide anything about the architecture — that
//! comes from the checkpoint's [`ModelSpec`](crate::model::ModelSpec).

pub mod calibrate;
pub mod check;
pub mod fixtures;
mod graph;
pub mod mar;
pub mod pipeline;
pub mod proto;
pub mod quantize;
pub mod reference;

use std::path::PathBuf;

use prost::Message as _;

use crate::checkpoint::{Checkpoint, CheckpointError, TensorData};

/// ai.onnx operator set the graph is written for (ONNX Runtime 1.31 supports up to 23).
pub const OPSET: i64 = 17;
/// IR version that goes with opset 17 (ONNX 1.12).
pub const IR_VERSION: i64 = 8;
/// Name of the graph input: preprocessed images, f32 `[N, 3, H, W]`.
pub const INPUT_NAME: &str = "input";
/// Name of the graph output: logits, f32 `[N, 1, H, W]` (sigmoid is outside the model).
pub const OUTPUT_NAME: &str = "logits";
/// `ModelProto.producer_name`.
pub const PRODUCER_NAME: &str = "wms";

/// Keys of `ModelProto.metadata_props` (DESIGN §4). Readers (wms-serve, the TorchServe handler)
/// use these constants or the same strings.
pub mod meta_keys {
    /// The checkpoint's model name, e.g. `water-meters-unet`.
    pub const MODEL_NAME: &str = "model_name";
    /// The version given at export (`--version`).
    pub const VERSION: &str = "version";
    /// Git commit the checkpoint was trained from (empty when unknown).
    pub const GIT_SHA: &str = "git_sha";
    /// Network input size as `{width}x{height}`, e.g. `512x512`.
    pub const INPUT_SIZE: &str = "input_size";
    /// [`PreprocessSpec`](crate::data::preprocess::PreprocessSpec) as JSON.
    pub const PREPROCESSING: &str = "preprocessing";
    /// Flat metrics (DESIGN §4 keys) as a JSON object.
    pub const METRICS: &str = "metrics";
    /// [`ModelSpec`](crate::model::ModelSpec) as JSON.
    pub const SPEC: &str = "spec";
    /// Data fingerprint of the training set (empty when unknown).
    pub const DATA_FINGERPRINT: &str = "data_fingerprint";
    /// Epoch the weights come from.
    pub const EPOCH: &str = "epoch";
    /// `fp32` or `int8` (absent in models exported before int8 existed: fp32).
    pub const PRECISION: &str = "precision";
    /// int8 models: [`QuantizationRecord`](crate::checkpoint::QuantizationRecord) as JSON (the
    /// accuracy guard's figures).
    pub const QUANTIZATION: &str = "quantization";
}

/// Value of [`meta_keys::PRECISION`] for the graph [`export`] writes.
pub const PRECISION_FP32: &str = "fp32";
/// Value of [`meta_keys::PRECISION`] for a quantized graph.
pub const PRECISION_INT8: &str = "int8";

/// What an export needs besides the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Model version recorded in the metadata (and the `.mar` manifest).
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error(
        "checkpoint {path} does not exist; hint: pass the best.safetensors that `wms-train train` wrote (--checkpoint or the action input `checkpoint`)"
    )]
    CheckpointMissing { path: PathBuf },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "checkpoint tensor {name}: {message}; hint: the weights do not match the checkpoint's model spec — re-export from the training run's checkpoint"
    )]
    Weight { name: String, message: String },
    #[error("cannot write {path}: {cause}; hint: check that the directory exists and is writable")]
    Write { path: PathBuf, cause: String },
    #[error(
        "ONNX Runtime cannot run {path}: {message}; hint: run `wms doctor` to see which ONNX Runtime is loaded"
    )]
    Runtime { path: PathBuf, message: String },
    #[error(transparent)]
    OrtMissing(#[from] crate::ort_runtime::OrtRuntimeError),
    #[error(
        "{path}: ONNX Runtime output differs from the reference forward pass by {max_abs_diff:.3e} (input {shape:?}), above the tolerance {tolerance:e}; hint: the export is wrong — do not ship this model, report it with the checkpoint"
    )]
    Parity {
        path: PathBuf,
        shape: [usize; 4],
        max_abs_diff: f32,
        tolerance: f32,
    },
    #[error(
        "model name {name:?} cannot name a TorchServe archive; hint: use letters, digits, '-', '_' and '.' only (it is the checkpoint's model_name)"
    )]
    MarName { name: String },
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Quantize(#[from] quantize::QuantizeError),
    #[error(
        "calibration data {path} has no photos in its {split} split ({total} photos in all); hint: int8 export calibrates on the val split and measures on the test split (stable hash of the file stem, as training split them) — add photos"
    )]
    EmptySplit {
        path: PathBuf,
        split: &'static str,
        total: usize,
    },
    #[error(
        "int8 model refused: test IoU {int8_iou:.4} vs {fp32_iou:.4} in fp32 drops by {drop:.4}, more than --max-iou-drop {max_drop} (Dice {int8_dice:.4} vs {fp32_dice:.4}, {agreement:.2} % of pixels agree, {test_images} test photos); hint: calibrate on more, and more typical, photos (--calibrate DIR --calibration-images N) or export fp32"
    )]
    AccuracyGuard {
        fp32_iou: f64,
        int8_iou: f64,
        fp32_dice: f64,
        int8_dice: f64,
        drop: f64,
        max_drop: f64,
        agreement: f64,
        test_images: usize,
    },
    #[error(
        "reference forward pass: {message}; hint: input must be [N, {channels}, H, W] with H and W multiples of {multiple}"
    )]
    BadInput {
        message: String,
        channels: i64,
        multiple: u32,
    },
}

/// Serializes the checkpoint as an ONNX model. Deterministic: the same checkpoint and options
/// give the same bytes.
pub fn export(ckpt: &Checkpoint, opts: &ExportOptions) -> Result<Vec<u8>, OnnxError> {
    Ok(model_proto(ckpt, opts)?.encode_to_vec())
}

/// The `ModelProto` that [`export`] serializes.
pub fn model_proto(
    ckpt: &Checkpoint,
    opts: &ExportOptions,
) -> Result<proto::ModelProto, OnnxError> {
    let meta = &ckpt.meta;
    let graph = graph::unet_graph(ckpt, &meta.model_name)?;
    Ok(proto::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some(PRODUCER_NAME.into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: None,
        doc_string: Some(format!(
            "{} {} exported by wms from a {} checkpoint",
            meta.model_name,
            opts.version,
            if meta.source.is_empty() {
                "wms"
            } else {
                &meta.source
            }
        )),
        graph: Some(graph),
        metadata_props: metadata(ckpt, opts)
            .into_iter()
            .map(|(k, v)| proto::StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v),
            })
            .collect(),
    })
}

/// `metadata_props` in a fixed order (DESIGN §4).
pub fn metadata(ckpt: &Checkpoint, opts: &ExportOptions) -> Vec<(&'static str, String)> {
    let meta = &ckpt.meta;
    // These types always serialize (plain structs and a BTreeMap<String, f64>), except that a
    // NaN metric becomes null through serde_json::Value; to_value never fails for them.
    let json = |v: serde_json::Result<String>| v.unwrap_or_else(|_| "null".into());
    vec![
        (meta_keys::MODEL_NAME, meta.model_name.clone()),
        (meta_keys::VERSION, opts.version.clone()),
        (meta_keys::GIT_SHA, meta.git_sha.clone().unwrap_or_default()),
        (
            meta_keys::INPUT_SIZE,
            format!(
                "{}x{}",
                meta.preprocessing.input_width, meta.preprocessing.input_height
            ),
        ),
        (
            meta_keys::PREPROCESSING,
            json(serde_json::to_string(&meta.preprocessing)),
        ),
        (
            meta_keys::METRICS,
            json(serde_json::to_string(&finite_metrics(ckpt))),
        ),
        (meta_keys::SPEC, json(serde_json::to_string(&meta.spec))),
        (
            meta_keys::DATA_FINGERPRINT,
            meta.data_fingerprint.clone().unwrap_or_default(),
        ),
        (meta_keys::EPOCH, meta.epoch.to_string()),
        (meta_keys::PRECISION, PRECISION_FP32.to_string()),
    ]
}

/// JSON has no NaN/∞: such metrics are written as null rather than failing the export.
fn finite_metrics(ckpt: &Checkpoint) -> std::collections::BTreeMap<&str, Option<f64>> {
    ckpt.meta
        .metrics
        .iter()
        .map(|(k, &v)| (k.as_str(), v.is_finite().then_some(v)))
        .collect()
}

/// The checkpoint tensor `name` as f32 values, checked against the shape the spec expects. Shared
/// by the graph writer and the reference forward pass so both read weights the same way.
fn f32_weight<'c>(
    ckpt: &'c Checkpoint,
    name: &str,
    shape: &[usize],
) -> Result<&'c [f32], OnnxError> {
    let err = |message: String| OnnxError::Weight {
        name: name.to_string(),
        message,
    };
    let t = ckpt
        .tensors
        .get(name)
        .ok_or_else(|| err("missing".into()))?;
    if t.shape != shape {
        return Err(err(format!("shape {:?}, expected {shape:?}", t.shape)));
    }
    match &t.data {
        TensorData::F32(v) => Ok(v),
        TensorData::I64(_) => Err(err("is i64, expected f32".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;

    fn small() -> Checkpoint {
        fixtures::random_checkpoint(
            ModelSpec {
                base_filters: 4,
                depth: 2,
                ..ModelSpec::default()
            },
            7,
        )
    }

    fn opts() -> ExportOptions {
        ExportOptions {
            version: "3".into(),
        }
    }

    #[test]
    fn export_is_deterministic_and_decodes() {
        let c = small();
        let a = export(&c, &opts()).unwrap();
        let b = export(&c, &opts()).unwrap();
        assert_eq!(a, b);
        let m = proto::ModelProto::decode(a.as_slice()).unwrap();
        assert_eq!(m.producer_name.as_deref(), Some("wms"));
        assert_eq!(m.opset_import[0].version, Some(OPSET));
        let g = m.graph.unwrap();
        assert_eq!(g.input[0].name.as_deref(), Some(INPUT_NAME));
        assert_eq!(g.output[0].name.as_deref(), Some(OUTPUT_NAME));
        // depth 2: 5 blocks × 2 convs folded + final = 11 convs, 2 pools, 2 resizes.
        let count = |op: &str| {
            g.node
                .iter()
                .filter(|n| n.op_type.as_deref() == Some(op))
                .count()
        };
        assert_eq!(
            (count("Conv"), count("MaxPool"), count("Resize")),
            (11, 2, 2)
        );
        assert_eq!(count("BatchNormalization"), 0);
        // 11 folded weights, 11 biases, the shared Resize scales.
        assert_eq!(g.initializer.len(), 23);
        let keys: Vec<_> = m
            .metadata_props
            .iter()
            .map(|p| p.key.clone().unwrap())
            .collect();
        for k in [
            meta_keys::MODEL_NAME,
            meta_keys::VERSION,
            meta_keys::GIT_SHA,
            meta_keys::INPUT_SIZE,
            meta_keys::PREPROCESSING,
            meta_keys::METRICS,
            meta_keys::SPEC,
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn version_changes_the_bytes() {
        let c = small();
        let other = ExportOptions {
            version: "4".into(),
        };
        assert_ne!(export(&c, &opts()).unwrap(), export(&c, &other).unwrap());
    }

    #[test]
    fn a_missing_weight_is_named() {
        let mut c = small();
        c.tensors.remove("enc2.3.weight");
        let err = export(&c, &opts()).unwrap_err().to_string();
        assert!(
            err.contains("enc2.3.weight") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn nan_metric_is_written_as_null() {
        let mut c = small();
        c.meta.metrics.insert("test_iou".into(), f64::NAN);
        c.meta.metrics.insert("test_dice".into(), 0.5);
        let md = metadata(&c, &opts());
        let metrics = &md.iter().find(|(k, _)| *k == meta_keys::METRICS).unwrap().1;
        assert_eq!(metrics, r#"{"test_dice":0.5,"test_iou":null}"#);
    }
}
