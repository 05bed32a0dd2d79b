//! `wms`: every command that runs without libtorch. Thin: parse, call the library, map the error.

use clap::{Parser, Subcommand};
use wms::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "wms",
    version,
    about = "Rust-native MLOps for the Water Meters U-Net"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t, env = wms::env_vars::WMS_LOG_FORMAT)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// AWS credentials: assume a role with GitHub's OIDC token, print the caller identity.
    Aws(wms::cli::aws::AwsArgs),
    /// Manual versus automated deployment: time a manual run, collect automated runs, report.
    Compare(wms::cli::compare::CompareArgs),
    /// Data sets: synthesize and check them (synth, qa), track and move them in DVC's format
    /// (add, push, pull).
    Data(wms::cli::data::DataArgs),
    /// Deploy a model version to Kubernetes (one namespace per version) and promote, roll back,
    /// scale, configure, inspect and clean up versions.
    Deploy(wms::cli::deploy::DeployArgs),
    /// Decide from the event's commits whether to train and/or deploy: named path filters over
    /// a git diff, DVC data deltas, step outputs and a job summary.
    DetectChanges(wms::cli::detect::DetectArgs),
    /// Build a daemonless, reproducible OCI image of wms-serve + ONNX Runtime + one model.
    BuildImage(wms::cli::image::BuildImageArgs),
    /// Show which native runtimes this installation finds (ONNX Runtime) and where.
    Doctor,
    /// Export a checkpoint to ONNX (BatchNorm folded), optionally check it in ONNX Runtime and
    /// write a TorchServe archive.
    ExportOnnx(wms::cli::export::ExportArgs),
    /// Quality gate: compare a candidate's metrics with the production model's.
    Gate(wms::cli::gate::GateArgs),
    /// Register a run's model in MLflow and move the `production` alias to it.
    Promote(wms::cli::promote::PromoteArgs),
    /// Show a model PR's results on GitHub (sticky comment, check run, job summary) and record
    /// deployments.
    Report(wms::cli::report::ReportArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    wms::logging::init(cli.log_format);
    wms::exit::finish(run(cli.command))
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Aws(args) => wms::cli::aws::run(args),
        Command::BuildImage(args) => wms::cli::image::run(args),
        Command::Compare(args) => wms::cli::compare::run(args),
        Command::Data(args) => wms::cli::data::run(args),
        Command::Deploy(args) => wms::cli::deploy::run(args),
        Command::DetectChanges(args) => wms::cli::detect::run(args),
        Command::Doctor => {
            let path = wms::ort_runtime::init()?;
            println!("onnxruntime: {}", path.display());
            Ok(())
        }
        Command::ExportOnnx(args) => wms::cli::export::run(args),
        Command::Gate(args) => wms::cli::gate::run_gate(args),
        Command::Promote(args) => wms::cli::promote::run_promote(args),
        Command::Report(args) => wms::cli::report::run(args),
    }
}
