//! `wms-serve` arguments and entry point. Flags only describe the interface: [`ServeArgs::command_line`]
//! maps each onto its configuration key, and the decisions (defaults, precedence over environment
//! and `config.properties`) are in [`crate::serve::settings`], which knows no clap.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::serve::settings::CommandLine;
use crate::serve::{self, ServeSettings, SettingsError};

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

impl ServeArgs {
    /// The flags by configuration key (destructured in full, so a new flag cannot be forgotten).
    pub fn command_line(&self) -> CommandLine {
        let ServeArgs {
            model,
            config,
            inference_address,
            management_address,
            metrics_address,
            batch_size,
            max_batch_delay,
            workers,
            threads,
        } = self;
        let values = [
            (
                "inference_address",
                "--inference-address",
                inference_address.clone(),
            ),
            (
                "management_address",
                "--management-address",
                management_address.clone(),
            ),
            (
                "metrics_address",
                "--metrics-address",
                metrics_address.clone(),
            ),
            (
                "batch_size",
                "--batch-size",
                batch_size.map(|v| v.to_string()),
            ),
            (
                "max_batch_delay",
                "--max-batch-delay",
                max_batch_delay.map(|v| v.to_string()),
            ),
            (
                "default_workers_per_model",
                "--workers",
                workers.map(|v| v.to_string()),
            ),
            (
                "number_of_threads",
                "--threads",
                threads.map(|v| v.to_string()),
            ),
        ];
        CommandLine {
            model: model.clone(),
            config: config.clone(),
            values: values
                .into_iter()
                .filter_map(|(key, flag, value)| value.map(|v| (key, flag, v)))
                .collect(),
        }
    }

    /// [`ServeSettings`] from these flags and `env` (looks a variable up).
    pub fn settings(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ServeSettings, SettingsError> {
        ServeSettings::resolve(&self.command_line(), env)
    }
}

/// Resolves settings, loads ONNX Runtime and serves until SIGTERM/Ctrl-C.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let lib = crate::ort_runtime::init()?;
    tracing::info!(onnxruntime = %lib.display(), "ONNX Runtime loaded");
    let settings = args
        .settings(|name| std::env::var(name).ok())
        .map_err(|e| match e {
            SettingsError::NoModel => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_reaches_its_key() {
        let args = ServeArgs {
            model: Some("m.onnx".into()),
            inference_address: Some("http://127.0.0.1:0".into()),
            management_address: Some("http://127.0.0.1:0".into()),
            metrics_address: Some("http://127.0.0.1:0".into()),
            batch_size: Some(3),
            max_batch_delay: Some(7),
            workers: Some(1),
            threads: Some(2),
            config: None,
        };
        let s = args.settings(|_| None).unwrap();
        assert_eq!(s.inference_address.port(), 0);
        assert_eq!(s.management_address.port(), 0);
        assert_eq!(s.metrics_address.port(), 0);
        assert_eq!(s.batch_size, 3);
        assert_eq!(s.max_batch_delay, std::time::Duration::from_millis(7));
        assert_eq!((s.workers, s.threads), (1, 2));
        assert_eq!(args.command_line().values.len(), 7);
    }
}
