//! Training on libtorch through tch (only built with the `train` feature, only linked into
//! `wms-train`): the U-Net module ([`unet`]), Adam with exportable moments ([`adam`]), the config
//! file ([`config`]), the training loop with resumable state ([`trainer`], [`state`]), its reports
//! ([`report`]) and PyTorch `.pth` interop ([`interop`]).
//!
//! Data comes only from [`crate::data`] (one preprocessing for training and serving); metrics only
//! from [`crate::metrics`]; checkpoints only through [`crate::checkpoint`].

use std::path::PathBuf;

pub mod adam;
pub mod config;
pub mod interop;
pub mod report;
pub mod state;
pub mod trainer;
pub mod unet;

pub use config::TrainConfig;
pub use trainer::{TrainOutcome, TrainPlan, train};
pub use unet::UNet;

/// Everything training can fail with; each names the file, key or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "config {path}: {message}; hint: see configs/train.yaml for the accepted keys and their defaults"
    )]
    Config { path: PathBuf, message: String },
    #[error(
        "invalid {field}: {message}; hint: fix it in the config file or with the matching flag"
    )]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Data(#[from] crate::data::DataError),
    #[error(
        "the {split} split of {path} is empty; hint: add photos or change data.{split}_split (the split is by a hash of the file stem)"
    )]
    EmptySplit { split: &'static str, path: PathBuf },
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Pth(#[from] crate::pth::PthError),
    #[error("tensor {name}: {message}; hint: the weights were saved for a different model spec")]
    Weights { name: String, message: String },
    #[error("cannot resume from {path}: {message}; hint: {hint}")]
    Resume {
        path: PathBuf,
        message: String,
        hint: &'static str,
    },
    #[error("{path}: {message}; hint: pass a state dict of the upstream WaterMetersUNet")]
    Import { path: PathBuf, message: String },
    #[error("CUDA was requested but libtorch sees no CUDA device; hint: use --device cpu or auto")]
    NoCuda,
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Write(#[from] crate::fsutil::WriteError),
    #[error(transparent)]
    Actions(#[from] crate::github::actions::ActionsError),
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
}
