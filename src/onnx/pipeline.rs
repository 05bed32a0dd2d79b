//! The export pipeline behind `wms export-onnx`: read the checkpoint, build the fp32 graph, for
//! int8 calibrate, quantize and run the accuracy guard (refusing with
//! [`OnnxError::AccuracyGuard`] before anything is written), write the model atomically, then
//! run the parity check, record the guard's figures in the checkpoint sidecar and pack the
//! TorchServe archive as asked. It returns what happened
//! ([`ExportOutcome`]) and prints nothing: the CLI decides what the user sees (stderr lines, step
//! outputs, the JSON on stdout); progress goes through `tracing`.
//!
//! It must not read flags, action inputs or environment variables: [`ExportSettings`] arrives
//! resolved (see `cli::export`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use prost::Message as _;
use sha2::Digest as _;

use crate::checkpoint::{Checkpoint, QuantizationRecord};
use crate::fsutil;

use super::calibrate::{self, CalibrationData};
use super::check::ParityCase;
use super::quantize::{self, Plan};
use super::{ExportOptions, OnnxError, meta_keys};

/// Default `--calibration-images`.
pub const DEFAULT_CALIBRATION_IMAGES: usize = 64;
/// Default `--max-iou-drop` (issue 18).
pub const DEFAULT_MAX_IOU_DROP: f64 = 0.005;
/// [`QuantizationRecord::method`] of this exporter.
pub const METHOD: &str = "qdq-u8s8-minmax";
/// The sidecar next to a checkpoint (as `wms-train` writes it).
pub const SIDECAR_FILE: &str = "checkpoint.json";

/// Numeric precision of the written model.
#[derive(Debug, Clone, PartialEq)]
pub enum Precision {
    Fp32,
    Int8(Int8Settings),
}

/// How an int8 model is calibrated and guarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Settings {
    /// Data set (images/ + masks/): calibration on its val split, the guard on its test split.
    pub calibrate: PathBuf,
    /// How many val photos calibrate (the first N by stem).
    pub calibration_images: usize,
    /// Refuse when fp32 test IoU − int8 test IoU exceeds this.
    pub max_iou_drop: f64,
    pub plan: Plan,
}

/// What an export does, after flags and action inputs are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    pub version: String,
    pub check: bool,
    pub mar: Option<PathBuf>,
    pub precision: Precision,
}

/// What an export produced. Serialized (without the per-shape details) as the command's stdout.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExportOutcome {
    pub model_path: PathBuf,
    pub sha256: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs_diff: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mar_path: Option<PathBuf>,
    /// Each parity-checked input (empty without `check`).
    #[serde(skip)]
    pub parity: Vec<ParityCase>,
    /// The unpacked archive next to `mar_path`.
    #[serde(skip)]
    pub mar_dir: Option<PathBuf>,
    /// `fp32` or `int8`.
    pub precision: &'static str,
    /// int8: what the accuracy guard measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationRecord>,
    /// int8: the checkpoint sidecar the figures were written to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_path: Option<PathBuf>,
}

/// Reads the checkpoint, builds (and for int8 quantizes and guards) the model, writes it
/// atomically, then checks, records and archives as asked.
pub fn export(settings: &ExportSettings) -> Result<ExportOutcome, OnnxError> {
    let ckpt = read_checkpoint(&settings.checkpoint)?;
    let opts = ExportOptions {
        version: settings.version.clone(),
    };
    let fp32 = super::model_proto(&ckpt, &opts)?;
    let (bytes, quantization) = match &settings.precision {
        Precision::Fp32 => (fp32.encode_to_vec(), None),
        Precision::Int8(int8) => {
            let (model, record) = quantize_guarded(&ckpt, &fp32, int8, &settings.out)?;
            (model.encode_to_vec(), Some(record))
        }
    };
    write_model(&settings.out, &bytes)?;
    tracing::info!(
        model = %settings.out.display(),
        bytes = bytes.len(),
        opset = super::OPSET,
        checkpoint = %settings.checkpoint.display(),
        "model written"
    );
    // The parity check compares with the fp32 reference at 1e-4: it only means something for
    // the fp32 graph (int8 is held to the accuracy guard instead).
    let parity = if settings.check && quantization.is_none() {
        super::check::parity(
            &settings.out,
            &ckpt,
            &super::check::default_shapes(&ckpt),
            0,
        )?
        .cases
    } else {
        Vec::new()
    };
    let sidecar_path = match &quantization {
        Some(record) => Some(write_sidecar(&settings.checkpoint, &ckpt, record)?),
        None => None,
    };
    let (mar_path, mar_dir) = match &settings.mar {
        Some(dir) => {
            let paths = super::mar::write(
                dir,
                &ckpt.meta.model_name,
                &settings.version,
                &bytes,
                SystemTime::now(),
            )?;
            (Some(paths.archive), Some(paths.dir))
        }
        None => (None, None),
    };
    Ok(ExportOutcome {
        model_path: settings.out.clone(),
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        max_abs_diff: (!parity.is_empty())
            .then(|| parity.iter().map(|c| c.max_abs_diff).fold(0.0, f32::max)),
        mar_path,
        parity,
        mar_dir,
        precision: if quantization.is_some() {
            super::PRECISION_INT8
        } else {
            super::PRECISION_FP32
        },
        quantization,
        sidecar_path,
    })
}

/// Calibrates on the val split, quantizes, and measures both models on the test split; refuses
/// ([`OnnxError::AccuracyGuard`]) when the IoU drop is above the limit (or not a number).
/// `label` names the model in runtime errors.
pub fn quantize_guarded(
    ckpt: &Checkpoint,
    fp32: &super::proto::ModelProto,
    s: &Int8Settings,
    label: &Path,
) -> Result<(super::proto::ModelProto, QuantizationRecord), OnnxError> {
    let pre = &ckpt.meta.preprocessing;
    let data = CalibrationData::discover(&s.calibrate, &calibrate::split_ratios(&ckpt.meta))?;
    let observed = fp32
        .graph
        .as_ref()
        .map(quantize::observed_tensors)
        .unwrap_or_default();
    let calibration = quantize::calibration_model(fp32).encode_to_vec();
    let (ranges, used) = calibrate::collect_ranges(
        &calibration,
        &observed,
        &data,
        s.calibration_images,
        pre,
        label,
    )?;
    let mut model = quantize::quantize(fp32, &ranges, &s.plan)?;
    let cmp = calibrate::compare(
        &fp32.encode_to_vec(),
        &model.encode_to_vec(),
        &data,
        pre,
        label,
    )?;
    let record = QuantizationRecord {
        precision: super::PRECISION_INT8.into(),
        method: METHOD.into(),
        calibration_images: used,
        test_images: cmp.test_images,
        fp32_test_iou: cmp.fp32.iou,
        fp32_test_dice: cmp.fp32.dice,
        int8_test_iou: cmp.int8.iou,
        int8_test_dice: cmp.int8.dice,
        iou_drop: cmp.iou_drop,
        dice_drop: cmp.dice_drop,
        pixel_agreement: cmp.pixel_agreement,
        max_iou_drop: s.max_iou_drop,
        fp32_convs: s.plan.fp32_convs.iter().cloned().collect(),
    };
    tracing::info!(?record, "accuracy guard");
    // A NaN drop is refused too.
    if cmp.iou_drop.is_nan() || cmp.iou_drop > s.max_iou_drop {
        return Err(OnnxError::AccuracyGuard {
            fp32_iou: cmp.fp32.iou,
            int8_iou: cmp.int8.iou,
            fp32_dice: cmp.fp32.dice,
            int8_dice: cmp.int8.dice,
            drop: cmp.iou_drop,
            max_drop: s.max_iou_drop,
            agreement: 100.0 * cmp.pixel_agreement,
            test_images: cmp.test_images,
        });
    }
    let json = serde_json::to_string(&record).unwrap_or_else(|_| "null".into());
    for p in &mut model.metadata_props {
        if p.key.as_deref() == Some(meta_keys::PRECISION) {
            p.value = Some(super::PRECISION_INT8.into());
        }
    }
    model
        .metadata_props
        .push(super::proto::StringStringEntryProto {
            key: Some(meta_keys::QUANTIZATION.into()),
            value: Some(json),
        });
    Ok((model, record))
}

/// Puts `record` into the `checkpoint.json` next to the checkpoint: into the existing file
/// (keeping every other field as it is), else into a new one made from the checkpoint's own
/// metadata. Returns its path.
fn write_sidecar(
    checkpoint: &Path,
    ckpt: &Checkpoint,
    record: &QuantizationRecord,
) -> Result<PathBuf, OnnxError> {
    let path = checkpoint.with_file_name(SIDECAR_FILE);
    let write_err = |cause: String| OnnxError::Write {
        path: path.clone(),
        cause,
    };
    let mut doc = match fs_err::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| write_err("it is not a JSON object".into()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            serde_json::to_value(&ckpt.meta).map_err(|e| write_err(e.to_string()))?
        }
        Err(e) => return Err(write_err(e.to_string())),
    };
    doc["quantization"] = serde_json::to_value(record).map_err(|e| write_err(e.to_string()))?;
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| write_err(e.to_string()))?;
    text.push('\n');
    fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| write_err(e.to_string()))?;
    Ok(path)
}

/// The checkpoint at `path`, or [`OnnxError::CheckpointMissing`] when there is no file.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, OnnxError> {
    if !path.exists() {
        return Err(OnnxError::CheckpointMissing {
            path: path.to_path_buf(),
        });
    }
    Ok(Checkpoint::read(path)?)
}

/// Temp file + rename, so a failed export never leaves a half-written model.
fn write_model(path: &Path, bytes: &[u8]) -> Result<(), OnnxError> {
    fsutil::write_atomic(path, bytes).map_err(|e| OnnxError::Write {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })
}
