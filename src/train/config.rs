//! The training configuration file (`configs/train.yaml`): upstream's keys and defaults (DESIGN
//! §5), plus the few wms adds (seed, device, loader depth). Unknown keys are an error that names
//! the key, so a typo never silently trains with a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::preprocess::PreprocessSpec;
use crate::data::{AugmentConfig, SplitRatios};
use crate::model::ModelSpec;

use super::TrainError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub data: DataSection,
    pub model: ModelSection,
    pub training: TrainingSection,
    pub augmentation: AugmentationSection,
    pub output: OutputSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Data set folder (`images/`, `masks/`); `--data` overrides.
    pub data_dir: Option<PathBuf>,
    /// Network input side in pixels (square, multiple of 2^depth); `--input-size` overrides.
    pub image_size: u32,
    pub train_split: f64,
    pub val_split: f64,
    pub test_split: f64,
    /// Upstream: DataLoader worker processes. Here: batches the loader keeps ready ahead.
    pub num_workers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    pub name: String,
    pub in_channels: i64,
    pub out_channels: i64,
    pub base_filters: i64,
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    pub epochs: u32,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// BCEWithLogits `pos_weight`.
    pub pos_weight: f64,
    /// Epochs without a val-loss improvement before stopping.
    pub early_stopping_patience: u32,
    pub scheduler: SchedulerSection,
    pub seed: u64,
    /// `auto` (CUDA when available), `cpu` or `cuda`.
    pub device: String,
}

/// `ReduceLROnPlateau(mode="min")` on the validation loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    pub factor: f64,
    pub patience: u32,
    pub min_lr: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentationSection {
    pub horizontal_flip_p: f64,
    pub vertical_flip_p: f64,
    pub rotation_degrees: f64,
    pub rotation_p: f64,
    pub brightness_low: f64,
    pub brightness_high: f64,
    pub brightness_p: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// Run folder; `--out` overrides.
    pub dir: Option<PathBuf>,
}

impl Default for DataSection {
    fn default() -> Self {
        let r = SplitRatios::default();
        DataSection {
            data_dir: None,
            image_size: PreprocessSpec::default().input_width,
            train_split: r.train,
            val_split: r.val,
            test_split: r.test,
            num_workers: 4,
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        let s = ModelSpec::default();
        ModelSection {
            name: "water-meters-unet".into(),
            in_channels: s.in_channels,
            out_channels: s.out_channels,
            base_filters: s.base_filters,
            depth: s.depth,
        }
    }
}

impl Default for TrainingSection {
    /// Upstream `configs/train.yaml` (DESIGN §5).
    fn default() -> Self {
        TrainingSection {
            epochs: 50,
            batch_size: 4,
            learning_rate: 1e-4,
            weight_decay: 1e-4,
            pos_weight: 1.0,
            early_stopping_patience: 5,
            scheduler: SchedulerSection::default(),
            seed: 42,
            device: "auto".into(),
        }
    }
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            factor: 0.5,
            patience: 3,
            min_lr: 1e-6,
        }
    }
}

impl Default for AugmentationSection {
    fn default() -> Self {
        let a = AugmentConfig::default();
        AugmentationSection {
            horizontal_flip_p: a.hflip_p,
            vertical_flip_p: a.vflip_p,
            rotation_degrees: a.rotation_degrees,
            rotation_p: a.rotation_p,
            brightness_low: a.brightness_low,
            brightness_high: a.brightness_high,
            brightness_p: a.brightness_p,
        }
    }
}

impl TrainConfig {
    /// Reads a YAML config; missing keys take upstream defaults, unknown keys are errors.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let text = fs_err::read_to_string(path).map_err(|source| TrainError::Io {
            what: "read the training config",
            path: path.to_path_buf(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|e| TrainError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks every value is usable; the error names the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad =
            |field: &'static str, message: String| Err(TrainError::Invalid { field, message });
        let t = &self.training;
        let spec = self.model_spec();
        if self.model.depth == 0 || self.model.depth > 8 {
            return bad(
                "model.depth",
                format!("{} (use 1..=8; upstream 4)", self.model.depth),
            );
        }
        for (field, v) in [
            ("model.in_channels", self.model.in_channels),
            ("model.out_channels", self.model.out_channels),
            ("model.base_filters", self.model.base_filters),
        ] {
            if v <= 0 {
                return bad(field, format!("{v} (must be positive)"));
            }
        }
        let m = spec.size_multiple();
        let size = self.data.image_size;
        if size == 0 || !size.is_multiple_of(m) {
            return bad(
                "data.image_size",
                format!(
                    "{size} (must be a positive multiple of {m} for depth {})",
                    spec.depth
                ),
            );
        }
        if t.epochs == 0 {
            return bad("training.epochs", "0 (must be at least 1)".into());
        }
        if t.batch_size == 0 {
            return bad("training.batch_size", "0 (must be at least 1)".into());
        }
        for (field, v) in [
            ("training.learning_rate", t.learning_rate),
            ("training.pos_weight", t.pos_weight),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(field, format!("{v} (must be a positive number)"));
            }
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return bad(
                "training.weight_decay",
                format!("{} (must be ≥ 0)", t.weight_decay),
            );
        }
        let s = &t.scheduler;
        if !(s.factor > 0.0 && s.factor < 1.0) {
            return bad(
                "training.scheduler.factor",
                format!("{} (must be in (0, 1))", s.factor),
            );
        }
        if !(s.min_lr.is_finite() && s.min_lr >= 0.0) {
            return bad(
                "training.scheduler.min_lr",
                format!("{} (must be ≥ 0)", s.min_lr),
            );
        }
        if !matches!(t.device.as_str(), "auto" | "cpu" | "cuda") {
            return bad(
                "training.device",
                format!("{:?} (use auto, cpu or cuda)", t.device),
            );
        }
        let a = &self.augmentation;
        for (field, p) in [
            ("augmentation.horizontal_flip_p", a.horizontal_flip_p),
            ("augmentation.vertical_flip_p", a.vertical_flip_p),
            ("augmentation.rotation_p", a.rotation_p),
            ("augmentation.brightness_p", a.brightness_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, format!("{p} (a probability in [0, 1])"));
            }
        }
        if !(a.brightness_low > 0.0 && a.brightness_low <= a.brightness_high) {
            return bad(
                "augmentation.brightness_low",
                format!(
                    "{}..{} (need 0 < low ≤ high)",
                    a.brightness_low, a.brightness_high
                ),
            );
        }
        self.split_ratios()
            .validate()
            .map_err(|e| TrainError::Invalid {
                field: "data.train_split",
                message: e.to_string(),
            })
    }

    pub fn model_spec(&self) -> ModelSpec {
        ModelSpec {
            in_channels: self.model.in_channels,
            out_channels: self.model.out_channels,
            base_filters: self.model.base_filters,
            depth: self.model.depth,
        }
    }

    pub fn preprocess_spec(&self) -> PreprocessSpec {
        PreprocessSpec {
            input_width: self.data.image_size,
            input_height: self.data.image_size,
            ..PreprocessSpec::default()
        }
    }

    pub fn split_ratios(&self) -> SplitRatios {
        SplitRatios {
            train: self.data.train_split,
            val: self.data.val_split,
            test: self.data.test_split,
        }
    }

    pub fn augment(&self) -> AugmentConfig {
        let a = &self.augmentation;
        AugmentConfig {
            hflip_p: a.horizontal_flip_p,
            vflip_p: a.vertical_flip_p,
            rotation_degrees: a.rotation_degrees,
            rotation_p: a.rotation_p,
            brightness_low: a.brightness_low,
            brightness_high: a.brightness_high,
            brightness_p: a.brightness_p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_the_upstream_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/train.yaml");
        let c = TrainConfig::read(&path).unwrap();
        assert_eq!(c, TrainConfig::default());
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        fs_err::write(&p, "training:\n  epochs: 3\n  learning_rat: 0.1\n").unwrap();
        let err = TrainConfig::read(&p).unwrap_err().to_string();
        assert!(
            err.contains("learning_rat") && err.contains("hint:"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut c = TrainConfig::default();
        c.data.image_size = 100;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("data.image_size") && err.contains("16"),
            "{err}"
        );
    }
}
