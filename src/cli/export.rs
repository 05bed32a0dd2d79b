//! `wms export-onnx`: checkpoint → `model.onnx` (+ optional parity check and TorchServe archive).
//! Flags, or the `export-onnx` action's `INPUT_*` when a flag is absent; step outputs
//! `model_path`, `sha256`, `size` (and `mar_path` with `--mar`). Stdout gets the same as one JSON
//! object; progress goes to stderr.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use sha2::Digest as _;

use crate::checkpoint::Checkpoint;
use crate::exit::UsageError;
use crate::fsutil;
use crate::github::actions::Actions;
use crate::onnx::{self, ExportOptions, OnnxError};

/// Default output path.
pub const DEFAULT_OUT: &str = "model.onnx";
/// Default model version (TorchServe's default `modelVersion`).
pub const DEFAULT_VERSION: &str = "1.0";

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Checkpoint to export (`best.safetensors` from `wms-train`). Action input: `checkpoint`.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Where to write the ONNX model [default: model.onnx]. Action input: `out`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Version recorded in the model metadata and the archive manifest [default: 1.0].
    /// Action input: `version`.
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Load the written model in ONNX Runtime and compare its logits with a reference forward pass
    /// of the checkpoint; fail above 1e-4. Action input: `check` (true/false).
    #[arg(long)]
    pub check: bool,
    /// Also write a TorchServe model archive: DIR/<model name>/ and DIR/<model name>.mar.
    /// Action input: `mar`.
    #[arg(long, value_name = "DIR")]
    pub mar: Option<PathBuf>,
}

/// What the command does, after flags and action inputs are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    pub version: String,
    pub check: bool,
    pub mar: Option<PathBuf>,
}

impl ExportSettings {
    /// Flags win; an absent flag falls back to the action input of the same name (`input`).
    pub fn resolve(
        args: ExportArgs,
        input: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, UsageError> {
        let ExportArgs {
            checkpoint,
            out,
            version,
            check,
            mar,
        } = args;
        let checkpoint = checkpoint
            .or_else(|| input("checkpoint").map(PathBuf::from))
            .ok_or_else(|| {
                UsageError::new(
                    "no checkpoint given; hint: pass --checkpoint best.safetensors (or the action input `checkpoint`)",
                )
            })?;
        let check = match (check, input("check")) {
            (true, _) | (false, None) => check,
            (false, Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(UsageError::new(format!(
                        "action input `check` is {v:?}; hint: use true or false"
                    )));
                }
            },
        };
        let version = version
            .or_else(|| input("version"))
            .unwrap_or_else(|| DEFAULT_VERSION.into());
        if version.trim().is_empty() || version.contains(['\n', '\r']) {
            return Err(UsageError::new(format!(
                "version {version:?} is empty or spans lines; hint: pass one line such as 1.0 or a git tag"
            )));
        }
        Ok(ExportSettings {
            checkpoint,
            out: out
                .or_else(|| input("out").map(PathBuf::from))
                .unwrap_or_else(|| DEFAULT_OUT.into()),
            version,
            check,
            mar: mar.or_else(|| input("mar").map(PathBuf::from)),
        })
    }
}

/// What an export produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExportOutcome {
    pub model_path: PathBuf,
    pub sha256: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs_diff: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mar_path: Option<PathBuf>,
}

/// Reads the checkpoint, writes the model (atomically), then checks and archives as asked.
pub fn export(settings: &ExportSettings) -> Result<ExportOutcome, OnnxError> {
    let ckpt = read_checkpoint(&settings.checkpoint)?;
    let opts = ExportOptions {
        version: settings.version.clone(),
    };
    let bytes = onnx::export(&ckpt, &opts)?;
    fsutil::write_atomic(&settings.out, &bytes).map_err(|e| OnnxError::Write {
        path: settings.out.clone(),
        cause: e.to_string(),
    })?;
    eprintln!(
        "wrote {} ({} bytes, opset {}) from {}",
        settings.out.display(),
        bytes.len(),
        onnx::OPSET,
        settings.checkpoint.display()
    );
    let max_abs_diff = if settings.check {
        let report =
            onnx::check::parity(&settings.out, &ckpt, &onnx::check::default_shapes(&ckpt), 0)?;
        for c in &report.cases {
            eprintln!(
                "check {:?}: max |ONNX Runtime − reference| = {:.2e} (logits up to {:.2}, tolerance {:e})",
                c.shape,
                c.max_abs_diff,
                c.max_abs_logit,
                onnx::check::TOLERANCE
            );
        }
        Some(report.max_abs_diff())
    } else {
        None
    };
    let mar_path = match &settings.mar {
        Some(dir) => {
            let paths = onnx::mar::write(
                dir,
                &ckpt.meta.model_name,
                &settings.version,
                &bytes,
                SystemTime::now(),
            )?;
            eprintln!(
                "wrote TorchServe archive {} (unpacked: {})",
                paths.archive.display(),
                paths.dir.display()
            );
            Some(paths.archive)
        }
        None => None,
    };
    Ok(ExportOutcome {
        model_path: settings.out.clone(),
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        max_abs_diff,
        mar_path,
    })
}

fn read_checkpoint(path: &Path) -> Result<Checkpoint, OnnxError> {
    if !path.exists() {
        return Err(OnnxError::CheckpointMissing {
            path: path.to_path_buf(),
        });
    }
    Ok(Checkpoint::read(path)?)
}

/// `wms export-onnx`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let gh = Actions::from_env();
    let settings = ExportSettings::resolve(args, |name| gh.input(name))?;
    let outcome = export(&settings)?;
    let path = outcome.model_path.display().to_string();
    gh.set_output("model_path", &path)
        .and_then(|()| gh.set_output("sha256", &outcome.sha256))
        .and_then(|()| gh.set_output("size", &outcome.size.to_string()))
        .and_then(|()| match &outcome.mar_path {
            Some(p) => gh.set_output("mar_path", &p.display().to_string()),
            None => Ok(()),
        })
        .context("cannot set the step outputs")?;
    println!(
        "{}",
        serde_json::to_string(&outcome).context("cannot print the outcome")?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ExportArgs {
        ExportArgs {
            checkpoint: None,
            out: None,
            version: None,
            check: false,
            mar: None,
        }
    }

    #[test]
    fn flags_win_over_action_inputs_which_win_over_defaults() {
        let inputs = |n: &str| match n {
            "checkpoint" => Some("in.safetensors".to_string()),
            "version" => Some("9".to_string()),
            "check" => Some("true".to_string()),
            _ => None,
        };
        let s = ExportSettings::resolve(
            ExportArgs {
                checkpoint: Some("flag.safetensors".into()),
                ..args()
            },
            inputs,
        )
        .unwrap();
        assert_eq!(s.checkpoint, PathBuf::from("flag.safetensors"));
        assert_eq!(s.version, "9");
        assert!(s.check);
        assert_eq!(s.out, PathBuf::from(DEFAULT_OUT));
        assert_eq!(s.mar, None);
    }

    #[test]
    fn missing_checkpoint_and_bad_check_are_usage_errors() {
        let err = ExportSettings::resolve(args(), |_| None).unwrap_err();
        assert!(err.to_string().contains("--checkpoint"), "{err}");
        let err = ExportSettings::resolve(
            ExportArgs {
                checkpoint: Some("c".into()),
                ..args()
            },
            |n| (n == "check").then(|| "maybe".to_string()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
    }
}
