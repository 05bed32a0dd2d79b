//! The resumable state of a run, saved after every epoch as ONE atomic file
//! (`OUT/resume.safetensors`): the model's tensors, Adam's moments (`optimizer.*`), the checkpoint
//! metadata (so `Checkpoint::read` accepts the file) and [`TrainState`] — epoch, step, learning
//! rate, scheduler and early-stopping counters, history — under [`STATE_KEY`]. One file means a
//! kill can never pair weights of one epoch with moments of another.
//!
//! No RNG state is saved: every random draw of epoch `e` is derived from (seed, e).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointMeta, META_KEY};

use super::TrainError;

/// safetensors `__metadata__` key of the [`TrainState`] JSON.
pub const STATE_KEY: &str = "wms.train_state";
/// File name of the resume state inside the run folder.
pub const RESUME_FILE: &str = "resume.safetensors";

/// Loss and per-image means of one split in one epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitMetrics {
    pub loss: f64,
    pub iou: f64,
    pub dice: f64,
    pub accuracy: f64,
}

impl From<crate::metrics::Summary> for SplitMetrics {
    fn from(s: crate::metrics::Summary) -> Self {
        SplitMetrics {
            loss: s.loss,
            iou: s.iou,
            dice: s.dice,
            accuracy: s.accuracy,
        }
    }
}

/// One row of `history.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u32,
    /// Learning rate used during this epoch.
    pub lr: f64,
    pub train: SplitMetrics,
    pub val: SplitMetrics,
    pub test: SplitMetrics,
    /// Share of the training phase spent waiting for data.
    pub data_share: f64,
    pub seconds: f64,
}

/// Everything besides tensors that the next epoch depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed (1-based number of the last one).
    pub epoch: u32,
    /// Optimizer steps taken.
    pub step: i64,
    pub lr: f64,
    /// ReduceLROnPlateau: best val loss seen and epochs since it improved.
    pub plateau_best: Option<f64>,
    pub plateau_bad_epochs: u32,
    /// Early stopping / best checkpoint: best val loss, its epoch, epochs since.
    pub best_val_loss: Option<f64>,
    pub best_epoch: u32,
    pub stale_epochs: u32,
    pub stopped_early: bool,
    pub history: Vec<EpochRecord>,
    /// Wall time of training so far, and images / compute seconds of the training phases.
    pub elapsed_seconds: f64,
    pub train_images: u64,
    pub train_step_seconds: f64,
}

impl TrainState {
    pub fn new(lr: f64) -> Self {
        TrainState {
            epoch: 0,
            step: 0,
            lr,
            plateau_best: None,
            plateau_bad_epochs: 0,
            best_val_loss: None,
            best_epoch: 0,
            stale_epochs: 0,
            stopped_early: false,
            history: Vec::new(),
            elapsed_seconds: 0.0,
            train_images: 0,
            train_step_seconds: 0.0,
        }
    }
}

/// Writes the resume file atomically.
pub fn write_resume(
    path: &Path,
    meta: &CheckpointMeta,
    state: &TrainState,
    tensors: &BTreeMap<String, checkpoint::Tensor>,
) -> Result<(), TrainError> {
    let mut header = HashMap::new();
    header.insert(
        META_KEY.to_string(),
        serde_json::to_string(meta).expect("metadata serializes"),
    );
    header.insert(
        STATE_KEY.to_string(),
        serde_json::to_string(state).expect("state serializes"),
    );
    checkpoint::write_safetensors(path, tensors, header)?;
    Ok(())
}

/// Reads the resume file: the checkpoint (model + optimizer tensors) and the train state.
pub fn read_resume(path: &Path) -> Result<(checkpoint::Checkpoint, TrainState), TrainError> {
    let resume_err = |message: String| TrainError::Resume {
        path: path.to_path_buf(),
        message,
        hint: "start a fresh run without --resume, or point --out at the interrupted run's folder",
    };
    if !path.is_file() {
        return Err(resume_err("no resume state (no epoch finished yet)".into()));
    }
    let ckpt = checkpoint::Checkpoint::read(path)?;
    let bytes = fs_err::read(path).map_err(|source| TrainError::Io {
        what: "read the resume state",
        path: path.to_path_buf(),
        source,
    })?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| resume_err(e.to_string()))?;
    let state_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .ok_or_else(|| resume_err(format!("no {STATE_KEY} metadata")))?;
    let state: TrainState =
        serde_json::from_str(state_json).map_err(|e| resume_err(e.to_string()))?;
    Ok((ckpt, state))
}
