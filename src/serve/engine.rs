//! The model as the server runs it: ONNX Runtime sessions for one `model.onnx`, what its
//! `metadata_props` say about it (name, version, input size, preprocessing), and one batched
//! forward pass. Also the logits → mask rule, so the server and in-process callers (tests, the
//! CLI) threshold identically. No HTTP and no batching policy here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use super::settings::OrtMemory;
use crate::data::preprocess::PreprocessSpec;
use crate::model::ModelSpec;
use crate::onnx::meta_keys;
use crate::ort_runtime;

/// What the server knows about a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub preprocessing: PreprocessSpec,
    /// `fp32` or `int8` (metadata `precision`; models exported before it existed are fp32).
    pub precision: String,
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

/// ONNX Runtime sessions for one model (`Session::run` needs `&mut`, so one run per session).
///
/// Two shapes of work share the cores. A lone request is fastest on one session that splits
/// each operator over every thread (`wide`). Under load, that split costs: a thread preempted
/// by request decoding stalls its partner at every operator's barrier. So when requests queue
/// up, batches go to `workers` independent sessions ("lanes") of `threads / workers` threads,
/// which never wait for each other. The batcher picks (see [`super::batcher`]).
pub struct Engine {
    info: ModelInfo,
    threads: usize,
    workers: usize,
    /// All `threads` intra-op threads.
    wide: Mutex<Session>,
    /// Created on first use (a cold start never pays for them); with one worker the wide
    /// session is the only lane.
    lanes: OnceLock<Result<Vec<Mutex<Session>>, String>>,
    bytes: Vec<u8>,
    memory: OrtMemory,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("info", &self.info)
            .field("threads", &self.threads)
            .field("workers", &self.workers)
            .finish()
    }
}

/// The session options every session of the server uses.
fn session(bytes: &[u8], intra_threads: usize, mem: OrtMemory) -> Result<Session, String> {
    let env = ort_runtime::environment().map_err(|e| e.to_string())?;
    let text = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
    let mut builder = Session::builder(env).map_err(|e| e.to_string())?;
    if mem.arena && mem.shared_arena {
        ort_runtime::register_shared_cpu_arena()
            .map_err(|e| format!("cannot create the shared memory arena: {e}"))?;
        builder = builder.with_env_allocators().map_err(text)?;
    }
    builder
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(text)?
        .with_intra_threads(intra_threads)
        .map_err(text)?
        .with_inter_threads(1)
        .map_err(text)?
        .with_memory_pattern(mem.memory_pattern)
        .map_err(text)?
        .with_execution_providers([ort::ep::CPU::default()
            .with_arena_allocator(mem.arena)
            .build()])
        .map_err(text)?
        .commit_from_memory(bytes)
        .map_err(|e| e.to_string())
}

impl Engine {
    /// Loads `path` for `workers` concurrent batches over `threads` intra-op threads, with the
    /// default memory settings.
    pub fn load(
        path: &Path,
        name: Option<&str>,
        workers: usize,
        threads: usize,
    ) -> Result<Self, EngineError> {
        Self::load_with(path, name, workers, threads, OrtMemory::default())
    }

    /// [`Engine::load`] with the given memory settings.
    pub fn load_with(
        path: &Path,
        name: Option<&str>,
        workers: usize,
        threads: usize,
        memory: OrtMemory,
    ) -> Result<Self, EngineError> {
        // Up front for its typed error (no runtime found); sessions only keep its message.
        ort_runtime::environment()?;
        let load_err = |message: String| EngineError::Load {
            path: path.to_path_buf(),
            message,
        };
        let bytes = fs_err::read(path).map_err(|e| load_err(e.to_string()))?;
        let threads = threads.max(1);
        let workers = workers.clamp(1, threads);
        let wide = Mutex::new(session(&bytes, threads, memory).map_err(load_err)?);
        let metadata = read_metadata(&wide).map_err(load_err)?;
        let info = model_info(path, name, metadata)?;
        Ok(Engine {
            info,
            threads,
            workers,
            wide,
            lanes: OnceLock::new(),
            bytes,
            memory,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// How many batches may run at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// One forward pass over preprocessed CHW inputs (each `3·H·W` at the model's input size)
    /// on the session that uses every thread; returns each input's logits `[H·W]`.
    pub fn run(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.run_on(&mut lock(&self.wide), inputs)
    }

    /// The same forward pass on a free lane (`threads / workers` threads), for batches that
    /// run next to others. The first call creates the lanes.
    pub fn run_lane(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, EngineError> {
        if self.workers == 1 {
            return self.run(inputs);
        }
        let lanes = self
            .lanes
            .get_or_init(|| {
                let per_lane = (self.threads / self.workers).max(1);
                (0..self.workers)
                    .map(|_| session(&self.bytes, per_lane, self.memory).map(Mutex::new))
                    .collect()
            })
            .as_ref()
            .map_err(|message| EngineError::Run {
                message: format!("cannot create a worker session: {message}"),
            })?;
        // Callers never run more lane batches than lanes, so one is free; `lock` is a fallback.
        let mut session = lanes
            .iter()
            .find_map(|s| s.try_lock().ok())
            .unwrap_or_else(|| lock(&lanes[0]));
        self.run_on(&mut session, inputs)
    }

    /// Runs `inputs` in chunks of at most [`OrtMemory::run_images`] on `session`.
    fn run_on(
        &self,
        session: &mut Session,
        inputs: &[&[f32]],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let (w, h) = self.info.input_size();
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(self.memory.run_images.max(1)) {
            out.extend(self.run_sized(session, chunk, w as usize, h as usize)?);
        }
        Ok(out)
    }

    fn run_sized(
        &self,
        session: &mut Session,
        inputs: &[&[f32]],
        w: usize,
        h: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let plane = w * h;
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
        let tensor =
            Tensor::from_array(([n, 3, h, w], batch)).map_err(|e| run_err(e.to_string()))?;
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

    /// Runs a small zero input through the wide session, so the first request pays no lazy
    /// initialisation. Small because what is lazy (kernel selection, weight prepacking, thread
    /// pool start) does not depend on the image size: a first 512×512 run after a 32×32
    /// warm-up is as fast as the second, and a full-size warm-up would cost a whole forward
    /// pass of cold start.
    pub fn warm_up(&self) -> Result<(), EngineError> {
        let side = WARM_UP_SIDE;
        let zeros = vec![0.0f32; 3 * side * side];
        self.run_sized(&mut lock(&self.wide), &[&zeros], side, side)?;
        Ok(())
    }
}

/// Warm-up input side: halves evenly through up to five 2×2 poolings (upstream has four).
const WARM_UP_SIDE: usize = 32;

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
    // Every encoder level halves the input, so its sides must divide evenly (DESIGN §4).
    let spec = match metadata.get(meta_keys::SPEC) {
        Some(json) => serde_json::from_str::<ModelSpec>(json)
            .map_err(|e| meta_err(meta_keys::SPEC, e.to_string()))?,
        None => ModelSpec::default(),
    };
    let m = spec.size_multiple();
    let (w, h) = (preprocessing.input_width, preprocessing.input_height);
    if w == 0 || h == 0 || w % m != 0 || h % m != 0 {
        return Err(meta_err(
            meta_keys::INPUT_SIZE,
            format!(
                "{w}x{h}: width and height must be positive multiples of {m} (the U-Net halves them {} times); hint: re-export from a checkpoint trained at such a size",
                spec.depth
            ),
        ));
    }
    let precision = metadata
        .get(meta_keys::PRECISION)
        .cloned()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| crate::onnx::PRECISION_FP32.into());
    Ok(ModelInfo {
        name,
        version,
        path: path.to_path_buf(),
        preprocessing,
        precision,
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
        assert_eq!(info.precision, "fp32");
        let meta = BTreeMap::from([(meta_keys::PRECISION.to_string(), "int8".to_string())]);
        let info = model_info(Path::new("/m/meters.onnx"), None, meta).unwrap();
        assert_eq!(info.precision, "int8");
    }

    #[test]
    fn an_input_size_the_unet_cannot_halve_is_refused_with_a_hint() {
        let meta = BTreeMap::from([(meta_keys::INPUT_SIZE.to_string(), "100x96".to_string())]);
        let err = model_info(Path::new("/m/meters.onnx"), None, meta)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("100x96") && err.contains("multiples of 16"),
            "{err}"
        );
        assert!(err.contains("hint:"), "{err}");
    }

    #[test]
    fn threshold_is_logit_zero() {
        let m = mask_from_logits(&[-1.0, 0.0, 0.1, 5.0], 2, 2);
        assert_eq!(m.into_raw(), vec![0, 0, 255, 255]);
    }
}
