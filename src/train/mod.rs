//! Training on libtorch through tch (only built with the `train` feature, only linked into
//! `wms-train`): the U-Net module ([`unet`]), Adam with exportable moments ([`adam`]), the config
//! file ([`config`]), the training loop with resumable state ([`trainer`], [`state`]), its reports
//! ([`report`]), PyTorch `.pth` interop ([`interop`]) and a throughput benchmark ([`bench`]).
//!
//! Data comes only from [`crate::data`] (one preprocessing for training and serving); metrics only
//! from [`crate::metrics`]; checkpoints only through [`crate::checkpoint`].

use std::path::PathBuf;

pub mod adam;
pub mod bench;
pub mod config;
pub mod interop;
pub mod report;
pub mod state;
pub mod stop;
pub mod trainer;
pub mod unet;

pub use config::TrainConfig;
pub use trainer::{TrainOutcome, TrainPlan, train, train_tracked};
pub use unet::UNet;

/// Everything training can fail with; each names the file, key or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    // `source` comes from `fs_err`, whose message names the path and the operation.
    #[error("cannot {what}; hint: check the path and its permissions")]
    Io {
        /// What training was doing, e.g. "read the config file".
        what: &'static str,
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
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(
        "the {split} split of {path} is empty; hint: add photos or change data.{split}_split (the split is by a hash of the file stem)"
    )]
    EmptySplit { split: &'static str, path: PathBuf },
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Pth(#[from] crate::checkpoint::pth::PthError),
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
    #[error(
        "stopped by {}; hint: continue with --resume (the last finished epoch is saved)",
        stop::signal_name(*signal)
    )]
    Stopped { signal: i32 },
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Write(#[from] crate::fsutil::WriteError),
    #[error(transparent)]
    Actions(#[from] crate::github::actions::ActionsError),
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

/// Keeps freed memory in the process for reuse instead of returning it to the kernel: glibc serves
/// every allocation above 32 MB (most activations of a 512×512 batch) with a fresh `mmap` and
/// unmaps it on free, so each training step page-faults its whole working set in again (zeroed by
/// the kernel). With mmap off and trimming off, the heap grows to the peak once and is reused.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator parameters; valid at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

/// Makes libtorch's OpenMP workers sleep instead of spin while they wait (see
/// [`crate::env_vars::OMP_WAIT_POLICY`]): when the variable is unset, re-executes the current
/// program with `OMP_WAIT_POLICY=PASSIVE` (libgomp reads it only at load, before `main`). An
/// explicit value is respected; if the exec fails the program simply continues as it is.
pub fn ensure_passive_openmp() {
    use std::os::unix::process::CommandExt as _;
    let var = crate::env_vars::OMP_WAIT_POLICY;
    if std::env::var_os(var).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` only returns on failure.
    let _ = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(var, "PASSIVE")
        .exec();
}
