//! wms: Rust-native MLOps for the Water Meters U-Net. The library holds all logic; the three
//! binaries (`wms`, `wms-train`, `wms-serve`) parse arguments, call into it and map errors to exit
//! codes through [`exit`]. See `docs/architecture.md` for the map of modules.

pub mod aws;
pub mod calendar;
pub mod changes;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod data;
pub mod deploy;
pub mod dvc;
pub mod env_vars;
pub mod exit;
pub mod fsutil;
pub mod gate;
pub mod github;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod mlflow;
pub mod model;
pub mod oci;
pub mod onnx;
pub mod ort_runtime;
pub mod report;
pub mod serve;
pub mod timing;
#[cfg(feature = "train")]
pub mod train;
pub mod untrusted;
