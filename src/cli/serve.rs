//! `wms-serve` arguments and entry point. Flags only describe the interface; decisions (defaults,
//! precedence over environment and `config.properties`) are in [`crate::serve::settings`].

use std::path::PathBuf;

use anyhow::Context as _;

use crate::serve::{self, ServeSettings};

/// Flags of `wms-serve`. Each has a `WMS_SERVE_*` environment variable (see
/// [`crate::env_vars`]), resolved in [`ServeSettings::resolve`] so precedence lives in one place.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// ONNX model to serve (written by `wms export-onnx`). Default: `load_models` from
    /// `model_store` in the config file.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// TorchServe-style config.properties (e.g. torchserve/config.properties).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Inference API address, e.g. http://127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, value_name = "URL")]
    pub inference_address: Option<String>,
    /// Management API address, e.g. http://127.0.0.1:8081.
    #[arg(long, value_name = "URL")]
    pub management_address: Option<String>,
    /// Metrics API address, e.g. http://127.0.0.1:8082.
    #[arg(long, value_name = "URL")]
    pub metrics_address: Option<String>,
    /// Requests per ONNX Runtime run (config key batch_size).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Milliseconds to wait for a batch to fill (config key max_batch_delay).
    #[arg(long, value_name = "MS")]
    pub max_batch_delay: Option<u64>,
    /// Batches that may run at once when requests queue up (config key
    /// default_workers_per_model; default: one per thread).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// ONNX Runtime threads in all (config key number_of_threads; default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Resolves settings, loads ONNX Runtime and serves until SIGTERM/Ctrl-C.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let lib = crate::ort_runtime::init()?;
    tracing::info!(onnxruntime = %lib.display(), "ONNX Runtime loaded");
    let settings =
        ServeSettings::resolve(&args, |name| std::env::var(name).ok()).map_err(|e| match e {
            serve::SettingsError::NoModel => {
                anyhow::Error::new(crate::exit::UsageError::new(e.to_string()))
            }
            other => anyhow::Error::new(other),
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wms-serve")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve::serve(settings, serve::shutdown_signal()))?;
    Ok(())
}
