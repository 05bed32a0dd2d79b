//! MLflow tracking and registry over its REST API (`/api/2.0/mlflow/…`, DESIGN §8), blocking:
//! [`client`] (auth, timeouts, retries with backoff and jitter), [`tracking`] (experiments, runs,
//! `log-batch` split to the server's limits), [`artifacts`] (the `mlflow-artifacts` proxy, or S3
//! for `s3://` runs), [`registry`] (models, versions, aliases, promotion and rollback),
//! and [`tracker`] (what `wms-train` logs through, resilient to the server going away). The
//! quality gate's rules use no MLflow and live in [`crate::gate`]. Nothing here prints; callers
//! decide what users see.

pub mod artifacts;
pub mod client;
pub mod error;
pub mod registry;
pub mod tracker;
pub mod tracking;

#[cfg(test)]
mod testserver;

pub use client::{Auth, Client, ClientConfig, RetryPolicy};
pub use error::MlflowError;
pub use tracking::{Batch, BatchLimits, Metric, Param, Run, RunInfo, RunStatus, Tag};
