//! `wms-train`: training on libtorch (tch). Thin: parse, call the library, map the error.

use clap::{Parser, Subcommand};
use wms::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "wms-train",
    version,
    about = "Train the Water Meters U-Net on libtorch"
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
    /// Print the libtorch build this binary runs on and the devices it sees.
    Info,
    /// Train the U-Net: checkpoints, metrics.json, history.csv and curves.svg in --out.
    Train(wms::cli::train::TrainArgs),
    /// Convert a PyTorch `torch.save(model.state_dict())` file into a wms checkpoint.
    Import(wms::cli::train::ImportArgs),
    /// Write a checkpoint as a PyTorch state dict (`model.load_state_dict(torch.load(path))`).
    ExportPth(wms::cli::train::ExportPthArgs),
    /// Time training steps on a data set (images/s), for `make bench-train`.
    Bench(wms::cli::train::BenchArgs),
}

fn main() -> std::process::ExitCode {
    wms::train::ensure_passive_openmp();
    wms::train::keep_freed_memory();
    let cli = Cli::parse();
    wms::logging::init(cli.log_format);
    let code = wms::exit::finish(run(cli.command));
    // Stopped by a signal (a tracked run): exit as the default handler would have.
    match wms::train::stop::requested() {
        Some(signal) => std::process::ExitCode::from((128 + signal) as u8),
        None => code,
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Info => {
            println!("cuda available: {}", tch::Cuda::is_available());
            println!("cuda devices: {}", tch::Cuda::device_count());
            println!("mkldnn: {}", tch::utils::has_mkldnn());
            Ok(())
        }
        Command::Train(args) => wms::cli::train::run_train(args),
        Command::Import(args) => wms::cli::train::run_import(args),
        Command::ExportPth(args) => wms::cli::train::run_export_pth(args),
        Command::Bench(args) => wms::cli::train::run_bench(args),
    }
}
