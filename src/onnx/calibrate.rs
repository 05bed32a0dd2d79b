//! Calibration and the accuracy guard of int8 export, both on real photos through THE
//! preprocessing ([`crate::data::preprocess`]) and ONNX Runtime:
//! - [`collect_ranges`] runs the fp32 model (with every activation as an extra output, see
//!   [`super::quantize::calibration_model`]) on photos of the data set's *validation* split and
//!   keeps each activation's min and max over all of them (min-max calibration: no outlier is
//!   clipped, so a rare bright reflection keeps its value; the price is resolution when a tensor
//!   has a long tail, which the guard then measures);
//! - [`compare`] runs the fp32 and the int8 model on the *test* split and measures IoU and Dice
//!   of each against the ground-truth masks (upstream conventions, [`crate::metrics`]) and how
//!   many pixels' masks agree.
//!
//! The split is the training run's (the checkpoint's `config.data.*_split`, else the default
//! 0.8/0.1/0.1; DESIGN §4), so calibration never sees a test photo. It must not write files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::Tensor;

use crate::checkpoint::CheckpointMeta;
use crate::data::preprocess::PreprocessSpec;
use crate::data::preprocess::{
    decode_image_file, preprocess_image, preprocess_mask, to_gray, to_rgb,
};
use crate::data::{Dataset, Sample, SplitRatios, split::split_samples};
use crate::metrics::Confusion;

use super::quantize::Range;
use super::{INPUT_NAME, OUTPUT_NAME, OnnxError};

/// The validation and test photos of a data set, split as the checkpoint was trained.
#[derive(Debug, Clone)]
pub struct CalibrationData {
    pub root: PathBuf,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
}

/// The split ratios the checkpoint was trained with (`config.data.{train,val,test}_split`), or
/// the default when the checkpoint has no training config (imported weights).
pub fn split_ratios(meta: &CheckpointMeta) -> SplitRatios {
    let get = |k: &str| {
        meta.config
            .pointer(&format!("/data/{k}"))
            .and_then(serde_json::Value::as_f64)
    };
    match (get("train_split"), get("val_split"), get("test_split")) {
        (Some(train), Some(val), Some(test)) => {
            let r = SplitRatios { train, val, test };
            if r.validate().is_ok() {
                r
            } else {
                SplitRatios::default()
            }
        }
        _ => SplitRatios::default(),
    }
}

impl CalibrationData {
    /// Discovers `dir` (images/ + masks/) and splits it; both splits must hold photos.
    pub fn discover(dir: &Path, ratios: &SplitRatios) -> Result<Self, OnnxError> {
        let ds = Dataset::discover(dir)?;
        let (_, val, test) = split_samples(&ds.samples, ratios);
        for (split, samples) in [("val", &val), ("test", &test)] {
            if samples.is_empty() {
                return Err(OnnxError::EmptySplit {
                    path: dir.to_path_buf(),
                    split,
                    total: ds.samples.len(),
                });
            }
        }
        Ok(CalibrationData {
            root: dir.to_path_buf(),
            val,
            test,
        })
    }
}

/// One photo preprocessed for the network: `[3, H, W]`.
fn photo(sample: &Sample, spec: &PreprocessSpec) -> Result<Vec<f32>, OnnxError> {
    let img = to_rgb(decode_image_file(&sample.image)?);
    Ok(preprocess_image(&img, spec))
}

/// A session for model bytes (`label` names the model in errors).
pub fn session(bytes: &[u8], label: &Path) -> Result<Session, OnnxError> {
    let env = crate::ort_runtime::environment()?;
    let err = |message: String| OnnxError::Runtime {
        path: label.to_path_buf(),
        message,
    };
    Session::builder(env)
        .map_err(|e| err(e.to_string()))?
        .commit_from_memory(bytes)
        .map_err(|e| err(e.to_string()))
}

/// Runs one `[1, 3, H, W]` input and returns the requested f32 outputs, in `names` order.
fn run(
    s: &mut Session,
    x: Vec<f32>,
    (w, h): (usize, usize),
    names: &[&str],
    label: &Path,
) -> Result<Vec<Vec<f32>>, OnnxError> {
    let err = |message: String| OnnxError::Runtime {
        path: label.to_path_buf(),
        message,
    };
    let tensor = Tensor::from_array(([1usize, 3, h, w], x)).map_err(|e| err(e.to_string()))?;
    let outputs = s
        .run(ort::inputs![INPUT_NAME => tensor])
        .map_err(|e| err(e.to_string()))?;
    names
        .iter()
        .map(|n| {
            let v = outputs
                .get(*n)
                .ok_or_else(|| err(format!("no output named {n}")))?;
            let (_, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| err(e.to_string()))?;
            Ok(data.to_vec())
        })
        .collect()
}

/// Min and max of every tensor in `observed` over the first `images` validation photos, running
/// `calibration_bytes` (the fp32 model with those tensors as outputs). Returns the ranges and
/// how many photos were used.
pub fn collect_ranges(
    calibration_bytes: &[u8],
    observed: &[String],
    data: &CalibrationData,
    images: usize,
    spec: &PreprocessSpec,
    label: &Path,
) -> Result<(BTreeMap<String, Range>, usize), OnnxError> {
    let mut s = session(calibration_bytes, label)?;
    let names: Vec<&str> = observed.iter().map(String::as_str).collect();
    let mut ranges: BTreeMap<String, Range> =
        observed.iter().map(|n| (n.clone(), Range::EMPTY)).collect();
    let size = (spec.input_width as usize, spec.input_height as usize);
    let used = data.val.iter().take(images).collect::<Vec<_>>();
    for (i, sample) in used.iter().enumerate() {
        let x = photo(sample, spec)?;
        let outs = run(&mut s, x, size, &names, label)?;
        for (name, values) in names.iter().zip(&outs) {
            if let Some(r) = ranges.get_mut(*name) {
                r.observe(values);
            }
        }
        tracing::info!(image = %sample.image.display(), done = i + 1, of = used.len(), "calibration");
    }
    Ok((ranges, used.len()))
}

/// IoU and Dice against the ground truth, averaged over images.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Accuracy {
    pub iou: f64,
    pub dice: f64,
}

/// What the accuracy guard measured on the test split.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub fp32: Accuracy,
    pub int8: Accuracy,
    /// fp32 IoU − int8 IoU (positive: int8 is worse).
    pub iou_drop: f64,
    pub dice_drop: f64,
    /// Fraction of test pixels whose mask (logit > 0) is the same in both models.
    pub pixel_agreement: f64,
    pub test_images: usize,
}

/// Runs both models on every test photo and compares them (see [`Comparison`]).
pub fn compare(
    fp32_bytes: &[u8],
    int8_bytes: &[u8],
    data: &CalibrationData,
    spec: &PreprocessSpec,
    label: &Path,
) -> Result<Comparison, OnnxError> {
    let mut a = session(fp32_bytes, label)?;
    let mut b = session(int8_bytes, label)?;
    let size = (spec.input_width as usize, spec.input_height as usize);
    let (mut sum_a, mut sum_b) = ([0f64; 2], [0f64; 2]);
    let (mut agree, mut pixels) = (0u64, 0u64);
    for sample in &data.test {
        let x = photo(sample, spec)?;
        let target = preprocess_mask(&to_gray(decode_image_file(&sample.mask)?), spec);
        let la = run(&mut a, x.clone(), size, &[OUTPUT_NAME], label)?.remove(0);
        let lb = run(&mut b, x, size, &[OUTPUT_NAME], label)?.remove(0);
        for (sum, l) in [(&mut sum_a, &la), (&mut sum_b, &lb)] {
            let c = Confusion::of_logits(l, &target);
            sum[0] += c.iou();
            sum[1] += c.dice();
        }
        agree += la
            .iter()
            .zip(&lb)
            .filter(|(p, q)| (**p > 0.0) == (**q > 0.0))
            .count() as u64;
        pixels += la.len() as u64;
    }
    let n = data.test.len().max(1) as f64;
    let fp32 = Accuracy {
        iou: sum_a[0] / n,
        dice: sum_a[1] / n,
    };
    let int8 = Accuracy {
        iou: sum_b[0] / n,
        dice: sum_b[1] / n,
    };
    Ok(Comparison {
        fp32,
        int8,
        iou_drop: fp32.iou - int8.iou,
        dice_drop: fp32.dice - int8.dice,
        pixel_agreement: agree as f64 / pixels.max(1) as f64,
        test_images: data.test.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;

    #[test]
    fn split_ratios_come_from_the_training_config() {
        let mut meta = CheckpointMeta::new("m", ModelSpec::default(), PreprocessSpec::default());
        assert_eq!(split_ratios(&meta), SplitRatios::default());
        meta.config = serde_json::json!({"data": {"train_split": 0.5, "val_split": 0.25, "test_split": 0.25}});
        assert_eq!(
            split_ratios(&meta),
            SplitRatios {
                train: 0.5,
                val: 0.25,
                test: 0.25
            }
        );
    }
}
