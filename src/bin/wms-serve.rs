//! `wms-serve`: the inference server that goes into the serving image. Thin: parse, call the
//! library, map the error.

use clap::Parser;
use wms::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "wms-serve",
    version,
    about = "Serve a wms ONNX model over a TorchServe-compatible API"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t, env = wms::env_vars::WMS_LOG_FORMAT)]
    log_format: LogFormat,
    /// ONNX model to serve.
    #[arg(long)]
    model: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    wms::logging::init(cli.log_format);
    wms::exit::finish(run(cli))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let lib = wms::ort_runtime::init()?;
    tracing::info!(onnxruntime = %lib.display(), "ONNX Runtime loaded");
    let Some(model) = cli.model else {
        return Err(
            wms::exit::UsageError::new("no model given; hint: pass --model model.onnx").into(),
        );
    };
    anyhow::bail!("serving {} is not built yet (issue 4)", model.display())
}
