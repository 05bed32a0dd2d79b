//! Parity check of a written `model.onnx`: run it in ONNX Runtime (the engine `wms-serve` uses)
//! on deterministic random inputs and compare with the [`reference`](super::reference) forward
//! pass computed from the checkpoint. The tolerance is on logits, max absolute difference.

use std::path::{Path, PathBuf};

use ndarray::{Array4, ArrayView4, Ix4};

use crate::checkpoint::Checkpoint;

use super::{INPUT_NAME, OUTPUT_NAME, OnnxError, fixtures, reference};

/// Max absolute logit difference accepted between ONNX Runtime and the reference (issue 4).
pub const TOLERANCE: f32 = 1e-4;

/// One compared input.
#[derive(Debug, Clone, PartialEq)]
pub struct ParityCase {
    pub shape: [usize; 4],
    pub max_abs_diff: f32,
    /// Largest |logit| of the reference, to show the difference is not small by accident.
    pub max_abs_logit: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParityReport {
    pub cases: Vec<ParityCase>,
}

impl ParityReport {
    pub fn max_abs_diff(&self) -> f32 {
        self.cases
            .iter()
            .map(|c| c.max_abs_diff)
            .fold(0.0, f32::max)
    }
}

/// The input shapes `wms export-onnx --check` uses: one image at the checkpoint's input size
/// (what serving runs), and a batch of two at a small non-square size (dynamic N, H, W).
pub fn default_shapes(ckpt: &Checkpoint) -> Vec<[usize; 4]> {
    let spec = ckpt.meta.spec;
    let c = spec.in_channels as usize;
    let m = spec.size_multiple() as usize;
    let p = &ckpt.meta.preprocessing;
    let round = |v: u32| (v as usize).div_ceil(m).max(1) * m;
    vec![
        [1, c, round(p.input_height), round(p.input_width)],
        [2, c, 4 * m, 6 * m],
    ]
}

/// A loaded model, ready to run.
pub struct OrtModel {
    path: PathBuf,
    session: ort::session::Session,
}

impl OrtModel {
    /// Loads `path` in ONNX Runtime (loading the runtime library first).
    pub fn load(path: &Path) -> Result<Self, OnnxError> {
        let env = crate::ort_runtime::environment()?;
        let err = |e: ort::Error| OnnxError::Runtime {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let session = ort::session::Session::builder(env)
            .map_err(err)?
            .commit_from_file(path)
            .map_err(err)?;
        Ok(OrtModel {
            path: path.to_path_buf(),
            session,
        })
    }

    /// Logits `[N, 1, H, W]` for `[N, 3, H, W]`.
    pub fn run(&mut self, input: ArrayView4<f32>) -> Result<Array4<f32>, OnnxError> {
        let path = &self.path;
        let err = |message: String| OnnxError::Runtime {
            path: path.clone(),
            message,
        };
        let contiguous = input.as_standard_layout();
        let tensor = ort::value::TensorRef::from_array_view(contiguous.view())
            .map_err(|e| err(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![INPUT_NAME => tensor])
            .map_err(|e| err(e.to_string()))?;
        let value = outputs
            .get(OUTPUT_NAME)
            .ok_or_else(|| err(format!("no output named {OUTPUT_NAME}")))?;
        let view = value
            .try_extract_array::<f32>()
            .map_err(|e| err(e.to_string()))?;
        let out = view
            .into_dimensionality::<Ix4>()
            .map_err(|e| err(format!("output {OUTPUT_NAME} is not 4-D: {e}")))?;
        Ok(out.to_owned())
    }
}

/// Max |a − b| over two same-shaped arrays (∞ when shapes differ or a value is NaN).
pub fn max_abs_diff(a: ArrayView4<f32>, b: ArrayView4<f32>) -> f32 {
    if a.dim() != b.dim() {
        return f32::INFINITY;
    }
    a.iter().zip(b.iter()).fold(0.0, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() { f32::INFINITY } else { m.max(d) }
    })
}

/// Runs the model at `path` and the reference forward pass of `ckpt` on random inputs of each
/// shape (seeded by `seed`), and fails with [`OnnxError::Parity`] above [`TOLERANCE`].
pub fn parity(
    path: &Path,
    ckpt: &Checkpoint,
    shapes: &[[usize; 4]],
    seed: u64,
) -> Result<ParityReport, OnnxError> {
    let mut model = OrtModel::load(path)?;
    let mut cases = Vec::with_capacity(shapes.len());
    for (i, &shape) in shapes.iter().enumerate() {
        let x = fixtures::random_input(shape, seed.wrapping_add(i as u64));
        let got = model.run(x.view())?;
        let want = reference::forward(ckpt, x.view())?;
        let case = ParityCase {
            shape,
            max_abs_diff: max_abs_diff(got.view(), want.view()),
            max_abs_logit: want.iter().fold(0.0, |m, v| m.max(v.abs())),
        };
        tracing::info!(
            ?shape,
            max_abs_diff = case.max_abs_diff,
            max_abs_logit = case.max_abs_logit,
            "ONNX Runtime vs reference"
        );
        if case.max_abs_diff.is_nan() || case.max_abs_diff > TOLERANCE {
            return Err(OnnxError::Parity {
                path: path.to_path_buf(),
                shape,
                max_abs_diff: case.max_abs_diff,
                tolerance: TOLERANCE,
            });
        }
        cases.push(case);
    }
    Ok(ParityReport { cases })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use crate::onnx::{ExportOptions, export};

    /// A small random checkpoint and its export, written to `m.onnx` in the returned temp dir.
    fn small_export() -> (Checkpoint, tempfile::TempDir, PathBuf) {
        let spec = ModelSpec {
            base_filters: 4,
            depth: 2,
            ..ModelSpec::default()
        };
        let ckpt = fixtures::random_checkpoint(spec, 11);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let options = ExportOptions {
            version: "1".into(),
        };
        fs_err::write(&path, export(&ckpt, &options).unwrap()).unwrap();
        (ckpt, dir, path)
    }

    #[test]
    fn small_export_matches_the_reference_in_onnx_runtime() {
        let (ckpt, _dir, path) = small_export();
        let report = parity(&path, &ckpt, &[[1, 3, 8, 12], [3, 3, 16, 4]], 1).unwrap();
        assert!(report.max_abs_diff() <= TOLERANCE, "{report:?}");
        assert!(
            report.cases.iter().all(|c| c.max_abs_logit > 0.1),
            "{report:?}"
        );
    }

    #[test]
    fn a_model_that_does_not_match_its_checkpoint_fails_the_check() {
        let (ckpt, _dir, path) = small_export();
        // Same architecture, different BatchNorm statistics: what a wrong fold would look like.
        let mut other = ckpt.clone();
        if let Some(crate::checkpoint::TensorData::F32(v)) = other
            .tensors
            .get_mut("dec1.4.running_var")
            .map(|t| &mut t.data)
        {
            v.iter_mut().for_each(|x| *x *= 4.0);
        }
        let err = parity(&path, &other, &[[1, 3, 8, 8]], 1).unwrap_err();
        assert!(matches!(err, OnnxError::Parity { .. }), "{err}");
        assert!(err.to_string().contains("above the tolerance"), "{err}");
    }

    #[test]
    fn max_abs_diff_flags_nan_and_shape_mismatch() {
        let a = Array4::<f32>::zeros((1, 1, 2, 2));
        let mut b = a.clone();
        b[[0, 0, 1, 1]] = f32::NAN;
        assert_eq!(max_abs_diff(a.view(), b.view()), f32::INFINITY);
        let c = Array4::<f32>::zeros((1, 1, 2, 3));
        assert_eq!(max_abs_diff(a.view(), c.view()), f32::INFINITY);
    }
}
