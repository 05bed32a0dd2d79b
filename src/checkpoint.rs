//! Checkpoint files: `*.safetensors` whose tensor names are the upstream PyTorch `state_dict`
//! keys, with the sidecar metadata ([`CheckpointMeta`]) embedded in the safetensors header under
//! [`META_KEY`] so one file is complete on its own; training also writes the same JSON as
//! `checkpoint.json` for people. No libtorch here: `wms export-onnx` and `wms-serve` read
//! checkpoints through this module; `train` converts to and from tch tensors. PyTorch's own
//! `torch.save(state_dict)` format, which training interop imports and exports, is [`pth`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::preprocess::PreprocessSpec;
use crate::fsutil;
use crate::model::ModelSpec;

pub mod pth;

/// safetensors `__metadata__` key that holds the JSON sidecar.
pub const META_KEY: &str = "wms.checkpoint";
/// Sidecar format version; bump on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest channel count (input, output, base filters) a spec read from a file may declare.
pub const MAX_SPEC_CHANNELS: i64 = 1 << 12;
/// Largest depth a spec read from a file may declare.
pub const MAX_SPEC_DEPTH: usize = 12;

/// Refuses a [`ModelSpec`] read from a file (a checkpoint's sidecar, an imported state dict) that
/// is out of range. The bounds are far above the upstream model (3 → 1 channels, base 16, depth 4)
/// and keep every shape the spec implies (channels up to base · 2^(depth+1)), every weight's element
/// count and `1 << depth` inside their integer types, so nothing downstream overflows on them.
pub fn check_spec(spec: &ModelSpec) -> Result<(), String> {
    let channels = |c: i64| (1..=MAX_SPEC_CHANNELS).contains(&c);
    if channels(spec.in_channels)
        && channels(spec.out_channels)
        && channels(spec.base_filters)
        && spec.depth <= MAX_SPEC_DEPTH
    {
        return Ok(());
    }
    Err(format!(
        "model spec (in_channels {}, out_channels {}, base_filters {}, depth {}) is out of range: channels must be 1..={MAX_SPEC_CHANNELS} and depth at most {MAX_SPEC_DEPTH}",
        spec.in_channels, spec.out_channels, spec.base_filters, spec.depth
    ))
}

/// Everything a consumer needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format_version: u32,
    pub model_name: String,
    pub spec: ModelSpec,
    pub preprocessing: PreprocessSpec,
    /// Training configuration as run (all config keys), or null for imported checkpoints.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Epoch (1-based) these weights come from; 0 when unknown (imported).
    #[serde(default)]
    pub epoch: u32,
    /// Flat metrics (DESIGN §4 keys) known for these weights.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub data_fingerprint: Option<String>,
    #[serde(default)]
    pub git_sha: Option<String>,
    /// Where the optimizer state for resuming lives (relative to the checkpoint), if saved.
    #[serde(default)]
    pub optimizer_state: Option<String>,
    /// Where the weights came from: "wms-train", "import:<file>", ….
    #[serde(default)]
    pub source: String,
    /// The last int8 export's accuracy guard (`wms export-onnx --precision int8`); written to
    /// the `checkpoint.json` sidecar next to the checkpoint, never into the weights file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationRecord>,
}

/// What an int8 export measured (the figures `metadata_props`, the sidecar and reports carry):
/// test IoU and Dice of the fp32 and the int8 model against the ground truth of the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationRecord {
    /// `int8`.
    pub precision: String,
    /// How it was quantized, e.g. `qdq-u8s8-minmax` (uint8 activations, int8 weights, min-max).
    pub method: String,
    pub calibration_images: usize,
    pub test_images: usize,
    pub fp32_test_iou: f64,
    pub fp32_test_dice: f64,
    pub int8_test_iou: f64,
    pub int8_test_dice: f64,
    /// fp32 − int8 (positive: int8 is worse).
    pub iou_drop: f64,
    pub dice_drop: f64,
    /// Fraction of test pixels whose mask is the same in both models.
    pub pixel_agreement: f64,
    /// The guard's limit on `iou_drop`.
    pub max_iou_drop: f64,
    /// Convolutions (graph node names) kept fp32.
    pub fp32_convs: Vec<String>,
}

impl CheckpointMeta {
    pub fn new(
        model_name: impl Into<String>,
        spec: ModelSpec,
        preprocessing: PreprocessSpec,
    ) -> Self {
        CheckpointMeta {
            format_version: FORMAT_VERSION,
            model_name: model_name.into(),
            spec,
            preprocessing,
            config: serde_json::Value::Null,
            epoch: 0,
            metrics: BTreeMap::new(),
            data_fingerprint: None,
            git_sha: None,
            optimizer_state: None,
            source: String::new(),
            quantization: None,
        }
    }
}

/// One tensor's data: f32 for weights and running stats, i64 for `num_batches_tracked`.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Tensor {
            shape,
            data: TensorData::F32(data),
        }
    }

    /// The values as f32 (i64 counters are converted), for graph export.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: BTreeMap<String, Tensor>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    // `source` comes from `fs_err`, whose message names the path.
    #[error(
        "cannot read the checkpoint; hint: pass a checkpoint written by `wms-train` (best.safetensors)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a safetensors file ({message}); hint: pass a checkpoint written by `wms-train` or `wms-train import`"
    )]
    Format { path: PathBuf, message: String },
    #[error(
        "{path} has no wms metadata; hint: it was not written by wms — convert a PyTorch state dict with `wms-train import --from FILE.pth`"
    )]
    NoMeta { path: PathBuf },
    #[error("{path}: invalid wms metadata: {message}")]
    BadMeta { path: PathBuf, message: String },
    #[error(
        "{path}: tensor {name}: {message}; hint: the weights do not match the model spec in the checkpoint"
    )]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
}

impl Checkpoint {
    /// Reads weights and metadata, and checks every tensor the spec needs is present with its shape.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = fs_err::read(path).map_err(|source| CheckpointError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let format = |message: String| CheckpointError::Format {
            path: path.to_path_buf(),
            message,
        };
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| CheckpointError::NoMeta {
                path: path.to_path_buf(),
            })?;
        let meta: CheckpointMeta =
            serde_json::from_str(meta_json).map_err(|e| CheckpointError::BadMeta {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let tensor_err = |message: String| CheckpointError::Tensor {
                path: path.to_path_buf(),
                name: name.clone(),
                message,
            };
            let raw = view.data();
            let data = match view.dtype() {
                safetensors::Dtype::F32 => TensorData::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                safetensors::Dtype::I64 => TensorData::I64(
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")))
                        .collect(),
                ),
                other => {
                    return Err(tensor_err(format!(
                        "unsupported dtype {other:?} (expected F32 or I64)"
                    )));
                }
            };
            tensors.insert(
                name.clone(),
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        let ckpt = Checkpoint { meta, tensors };
        ckpt.validate(path)?;
        Ok(ckpt)
    }

    /// The spec is in range and every tensor of its state dict is present with the right shape.
    pub fn validate(&self, path: &Path) -> Result<(), CheckpointError> {
        check_spec(&self.meta.spec).map_err(|message| CheckpointError::BadMeta {
            path: path.to_path_buf(),
            message,
        })?;
        for t in self.meta.spec.state_dict() {
            let err = |message: String| CheckpointError::Tensor {
                path: path.to_path_buf(),
                name: t.name.clone(),
                message,
            };
            let got = self
                .tensors
                .get(&t.name)
                .ok_or_else(|| err("missing".into()))?;
            let want: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            if got.shape != want {
                return Err(err(format!("shape {:?}, expected {:?}", got.shape, want)));
            }
        }
        Ok(())
    }

    /// Writes the checkpoint atomically (temp file + rename), metadata embedded.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        let mut header = HashMap::new();
        header.insert(
            META_KEY.to_string(),
            serde_json::to_string(&self.meta).expect("metadata serializes"),
        );
        write_safetensors(path, &self.tensors, header)
    }
}

/// Writes `tensors` as a safetensors file whose `__metadata__` is `header`, atomically. Shared by
/// checkpoints and the trainer's resume file, which adds its own header entries.
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    header: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let raw: Vec<(&String, safetensors::Dtype, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, bytes) = match &t.data {
                TensorData::F32(v) => (
                    safetensors::Dtype::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                TensorData::I64(v) => (
                    safetensors::Dtype::I64,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            };
            (name, dtype, t.shape.as_slice(), bytes)
        })
        .collect();
    let mut views = Vec::with_capacity(raw.len());
    for (name, dtype, shape, bytes) in &raw {
        let view =
            safetensors::tensor::TensorView::new(*dtype, shape.to_vec(), bytes).map_err(|e| {
                CheckpointError::Tensor {
                    path: path.to_path_buf(),
                    name: (*name).clone(),
                    message: e.to_string(),
                }
            })?;
        views.push(((*name).clone(), view));
    }
    let out = safetensors::serialize(views, Some(header)).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    fsutil::write_atomic(path, &out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_checkpoint(spec: ModelSpec) -> Checkpoint {
        let mut tensors = BTreeMap::new();
        for (i, t) in spec.state_dict().into_iter().enumerate() {
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            let n: usize = shape.iter().product();
            let data = if t.name.ends_with("num_batches_tracked") {
                TensorData::I64(vec![i as i64; n])
            } else {
                TensorData::F32((0..n).map(|j| (i * 31 + j) as f32 * 1e-3).collect())
            };
            tensors.insert(t.name, Tensor { shape, data });
        }
        Checkpoint {
            meta: CheckpointMeta::new("water-meters-unet", spec, PreprocessSpec::default()),
            tensors,
        }
    }

    #[test]
    fn round_trip_keeps_weights_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("best.safetensors");
        let spec = ModelSpec {
            base_filters: 4,
            ..ModelSpec::default()
        };
        let mut c = random_checkpoint(spec);
        c.meta.metrics.insert("test_iou".into(), 0.9);
        c.write(&p).unwrap();
        let back = Checkpoint::read(&p).unwrap();
        assert_eq!(back.meta, c.meta);
        assert_eq!(back.tensors, c.tensors);
    }

    #[test]
    fn wrong_shape_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut c = random_checkpoint(ModelSpec {
            base_filters: 4,
            ..ModelSpec::default()
        });
        c.tensors
            .insert("final.bias".into(), Tensor::f32(vec![2], vec![0.0, 0.0]));
        c.write(&p).unwrap();
        let err = Checkpoint::read(&p).unwrap_err().to_string();
        assert!(err.contains("final.bias") && err.contains("shape"), "{err}");
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        fs_err::write(&p, b"not a checkpoint").unwrap();
        let err = Checkpoint::read(&p).unwrap_err().to_string();
        assert!(err.contains("is not a safetensors file"), "{err}");
    }
}
