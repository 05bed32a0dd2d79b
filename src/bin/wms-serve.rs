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
    #[command(flatten)]
    serve: wms::cli::serve::ServeArgs,
}

fn main() -> std::process::ExitCode {
    // Before any thread exists; measured in docs/PERFORMANCE.md (issue 18).
    wms::memory::limit_malloc_arenas(2);
    let cli = Cli::parse();
    wms::logging::init(cli.log_format);
    wms::exit::finish(wms::cli::serve::run(cli.serve))
}
