//! The model as the server runs it: ONNX Runtime sessions for one `model.onnx`, what its
//! `metadata_props` say about it (name, version, input size, preprocessing), and one batched
//! forward pass. Also the logits → mask rule, so the server and in-process callers (tests, the
//! CLI) threshold identically. No HTTP and no batching policy here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::checkpoint::PreprocessSpec;
use crate::onnx::meta_keys;
use crate::ort_runtime;

/// What the server knows about a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub preprocessing: PreprocessSpec,
    /// All `metadata_props`, as stored.
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    pub fn input_size(&self) -> (u32, u32) {
        (
            self.preprocessing.input_width,
            self.preprocessing.input_height,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Runtime(#[from] ort_runtime::OrtRuntimeError),
    #[error("cannot load model {path}: {message}; hint: pass a model written by `wms export-onnx`")]
    Load { path: PathBuf, message: String },
    #[error("model {path}: metadata {key} is invalid: {message}")]
    Metadata {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    #[error("inference failed: {message}")]
    Run { message: String },
}

/// ONNX Runtime sessions for one model (one per worker; `Session::run` needs `&mut`).
pub struct Engine {
    info: ModelInfo,
    sessions: Vec<Mutex<Session>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("info", &self.info)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl Engine {
    /// Loads `path` into `workers` sessions sharing `threads` intra-op threads between them.
    pub fn load(
        path: &Path,
        name: Option<&str>,
        workers: usize,
        threads: usize,
    ) -> Result<Self, EngineError> {
        let env = ort_runtime::environment()?;
        let load_err = |message: String| EngineError::Load {
            path: path.to_path_buf(),
            message,
        };
        let bytes = fs_err::read(path).map_err(|e| load_err(e.to_string()))?;
        let workers = workers.max(1);
        let per_session = (threads / workers).max(1);
        let mut sessions = Vec::with_capacity(workers);
        for _ in 0..workers {
            let session = Session::builder(env)
                .map_err(|e| load_err(e.to_string()))?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| load_err(e.to_string()))?
                .with_intra_threads(per_session)
                .map_err(|e| load_err(e.to_string()))?
                .with_inter_threads(1)
                .map_err(|e| load_err(e.to_string()))?
                .commit_from_memory(&bytes)
                .map_err(|e| load_err(e.to_string()))?;
            sessions.push(Mutex::new(session));
        }
        let metadata = read_metadata(&sessions[0]).map_err(load_err)?;
        let info = model_info(path, name, metadata)?;
        Ok(Engine { info, sessions })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn workers(&self) -> usize {
        self.sessions.len()
    }

    /// One forward pass over preprocessed CHW inputs (each `3·H·W` at the model's input size);
    /// returns each input's logits `[H·W]`.
    pub fn run(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut session = self.free_session();
        self.run_on(&mut session, inputs)
    }

    fn run_on(
        &self,
        session: &mut Session,
        inputs: &[&[f32]],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let (w, h) = self.info.input_size();
        let plane = w as usize * h as usize;
        let n = inputs.len();
        let run_err = |message: String| EngineError::Run { message };
        if let Some(bad) = inputs.iter().find(|i| i.len() != 3 * plane) {
            return Err(run_err(format!(
                "input has {} values, expected 3x{h}x{w}",
                bad.len()
            )));
        }
        let mut batch = Vec::with_capacity(n * 3 * plane);
        for i in inputs {
            batch.extend_from_slice(i);
        }
        // [N, 3, H, W]
        let tensor = Tensor::from_array(([n, 3, h as usize, w as usize], batch))
            .map_err(|e| run_err(e.to_string()))?;
        let outputs = session
            .run(ort::inputs!["input" => tensor])
            .map_err(|e| run_err(e.to_string()))?;
        let (shape, logits) = outputs["logits"]
            .try_extract_tensor::<f32>()
            .map_err(|e| run_err(e.to_string()))?;
        // [N, 1, H, W]
        if logits.len() != n * plane {
            return Err(run_err(format!(
                "output shape {shape:?}, expected [{n}, 1, {h}, {w}]"
            )));
        }
        Ok(logits.chunks_exact(plane).map(<[f32]>::to_vec).collect())
    }

    /// A session nobody holds, else the first (callers never run more batches than workers).
    fn free_session(&self) -> std::sync::MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(guard) = s.try_lock() {
                return guard;
            }
        }
        lock(&self.sessions[0])
    }

    /// Runs a zero input through every session, so the first request pays no lazy init.
    pub fn warm_up(&self) -> Result<(), EngineError> {
        let (w, h) = self.info.input_size();
        let zeros = vec![0.0f32; 3 * w as usize * h as usize];
        for s in &self.sessions {
            self.run_on(&mut lock(s), &[&zeros])?;
        }
        Ok(())
    }
}

/// A poisoned session lock only means another run panicked; the session itself is fine.
fn lock(s: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_metadata(session: &Mutex<Session>) -> Result<BTreeMap<String, String>, String> {
    let session = lock(session);
    let meta = session.metadata().map_err(|e| e.to_string())?;
    let keys = meta.custom_keys().map_err(|e| e.to_string())?;
    Ok(keys
        .into_iter()
        .filter_map(|k| meta.custom(&k).map(|v| (k, v)))
        .collect())
}

/// Name: explicit, else metadata, else file stem. Preprocessing: metadata, else the default.
fn model_info(
    path: &Path,
    name: Option<&str>,
    metadata: BTreeMap<String, String>,
) -> Result<ModelInfo, EngineError> {
    let meta_err = |key: &'static str, message: String| EngineError::Metadata {
        path: path.to_path_buf(),
        key,
        message,
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let name = name
        .map(str::to_string)
        .or_else(|| metadata.get(meta_keys::MODEL_NAME).cloned())
        .filter(|n| !n.is_empty())
        .unwrap_or(stem);
    let version = metadata
        .get(meta_keys::VERSION)
        .cloned()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "1.0".into());
    let mut preprocessing = match metadata.get(meta_keys::PREPROCESSING) {
        Some(json) => serde_json::from_str::<PreprocessSpec>(json)
            .map_err(|e| meta_err(meta_keys::PREPROCESSING, e.to_string()))?,
        None => {
            tracing::warn!(model = %path.display(), "no preprocessing metadata; using the upstream defaults");
            PreprocessSpec::default()
        }
    };
    if let Some(size) = metadata.get(meta_keys::INPUT_SIZE) {
        let (w, h) = parse_size(size).ok_or_else(|| {
            meta_err(
                meta_keys::INPUT_SIZE,
                format!("{size:?} is not [W, H] or WxH"),
            )
        })?;
        preprocessing.input_width = w;
        preprocessing.input_height = h;
    }
    Ok(ModelInfo {
        name,
        version,
        path: path.to_path_buf(),
        preprocessing,
        metadata,
    })
}

/// `[512, 512]`, `{"width":..,"height":..}` or `512x512`.
fn parse_size(s: &str) -> Option<(u32, u32)> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(s) {
        if let Some([w, h]) = v.as_array().map(Vec::as_slice) {
            return Some((w.as_u64()? as u32, h.as_u64()? as u32));
        }
        if let (Some(w), Some(h)) = (v.get("width"), v.get("height")) {
            return Some((w.as_u64()? as u32, h.as_u64()? as u32));
        }
    }
    let (w, h) = s.split_once(['x', 'X'])?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

/// The served mask: foreground where sigmoid(logit) > 0.5, i.e. logit > 0; 255/0 grayscale.
pub fn mask_from_logits(logits: &[f32], width: u32, height: u32) -> image::GrayImage {
    let pixels = logits
        .iter()
        .map(|&l| if l > 0.0 { 255u8 } else { 0 })
        .collect();
    image::GrayImage::from_raw(width, height, pixels).unwrap_or_else(|| {
        // Callers pass logits of the model's own output size; a mismatch is a bug, not input.
        image::GrayImage::new(width, height)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("[512, 384]"), Some((512, 384)));
        assert_eq!(parse_size("256x128"), Some((256, 128)));
        assert_eq!(parse_size(r#"{"width": 64, "height": 32}"#), Some((64, 32)));
        assert_eq!(parse_size("big"), None);
    }

    #[test]
    fn info_falls_back_to_stem_and_defaults() {
        let info = model_info(Path::new("/m/meters.onnx"), None, BTreeMap::new()).unwrap();
        assert_eq!(info.name, "meters");
        assert_eq!(info.preprocessing, PreprocessSpec::default());
    }

    #[test]
    fn threshold_is_logit_zero() {
        let m = mask_from_logits(&[-1.0, 0.0, 0.1, 5.0], 2, 2);
        assert_eq!(m.into_raw(), vec![0, 0, 255, 255]);
    }
}
