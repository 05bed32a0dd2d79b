//! `wms export-onnx`: checkpoint → `model.onnx` (fp32, or int8 with `--precision int8`), with an
//! optional parity check and TorchServe archive. Flags, or the `export-onnx` action's `INPUT_*`
//! when a flag is absent; step outputs `model_path`, `sha256`, `size`, `precision` (and
//! `mar_path` with `--mar`, `int8_test_iou`/`iou_drop` for int8). Stdout gets the same as one
//! JSON object; what happened goes to stderr. The pipeline itself is
//! [`onnx::pipeline`](crate::onnx::pipeline); this module only resolves settings and prints.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::exit::{GateNotMet, UsageError};
use crate::github::actions::{Actions, flag_or_input};
use crate::onnx::pipeline::{
    self, DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_IOU_DROP, ExportOutcome, ExportSettings,
    Int8Settings, Precision,
};
use crate::onnx::quantize::Plan;
use crate::onnx::{self, OnnxError};
use crate::untrusted::text::for_log;

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
    /// `fp32` or `int8` [default: fp32]. int8 is static quantization (QDQ: uint8 activations,
    /// int8 per-channel weights) calibrated on --calibrate and refused when its test IoU drops
    /// more than --max-iou-drop below fp32's (exit 3). Action input: `precision`.
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<String>,
    /// int8: data set (images/ + masks/) whose val split calibrates and whose test split
    /// guards the accuracy. Action input: `calibrate`.
    #[arg(long, value_name = "DATA_DIR")]
    pub calibrate: Option<PathBuf>,
    /// int8: how many val photos calibrate [default: 64]. Action input: `calibration-images`.
    #[arg(long, value_name = "N")]
    pub calibration_images: Option<String>,
    /// int8: largest accepted drop of test IoU from fp32 to int8 [default: 0.005]. Action
    /// input: `max-iou-drop`.
    #[arg(long, value_name = "DROP")]
    pub max_iou_drop: Option<String>,
    /// int8: convolutions to keep fp32, comma-separated graph node names (`enc1/conv0`,
    /// `dec1/conv3`, `logits` for the final 1×1) [default: none]. Action input: `keep-fp32`.
    #[arg(long, value_name = "NODES")]
    pub keep_fp32: Option<String>,
}

/// Flags win; an absent flag falls back to the action input of the same name (`input`).
pub fn resolve(
    args: ExportArgs,
    input: impl Fn(&str) -> Option<String>,
) -> Result<ExportSettings, UsageError> {
    let ExportArgs {
        checkpoint,
        out,
        version,
        check,
        mar,
        precision,
        calibrate,
        calibration_images,
        max_iou_drop,
        keep_fp32,
    } = args;
    let checkpoint = checkpoint
            .or_else(|| input("checkpoint").map(PathBuf::from))
            .ok_or_else(|| {
                UsageError::new(
                    "no checkpoint given; hint: pass --checkpoint best.safetensors (or the action input `checkpoint`)",
                )
            })?;
    let check = flag_or_input(check, "check", &input)?;
    let version = version
        .or_else(|| input("version"))
        .unwrap_or_else(|| DEFAULT_VERSION.into());
    if version.trim().is_empty() || version.contains(['\n', '\r']) {
        return Err(UsageError::new(format!(
            "version {version:?} is empty or spans lines; hint: pass one line such as 1.0 or a git tag"
        )));
    }
    let precision = resolve_precision(
        precision.or_else(|| input("precision")),
        calibrate.or_else(|| input("calibrate").map(PathBuf::from)),
        calibration_images.or_else(|| input("calibration-images")),
        max_iou_drop.or_else(|| input("max-iou-drop")),
        keep_fp32.or_else(|| input("keep-fp32")),
    )?;
    Ok(ExportSettings {
        checkpoint,
        out: out
            .or_else(|| input("out").map(PathBuf::from))
            .unwrap_or_else(|| DEFAULT_OUT.into()),
        version,
        check,
        mar: mar.or_else(|| input("mar").map(PathBuf::from)),
        precision,
    })
}

/// `--precision` and the int8 flags, each checked here so a wrong value is one line and exit 2.
fn resolve_precision(
    precision: Option<String>,
    calibrate: Option<PathBuf>,
    images: Option<String>,
    max_iou_drop: Option<String>,
    keep_fp32: Option<String>,
) -> Result<Precision, UsageError> {
    let int8_only = [
        ("--calibrate", calibrate.is_some()),
        ("--calibration-images", images.is_some()),
        ("--max-iou-drop", max_iou_drop.is_some()),
        ("--keep-fp32", keep_fp32.is_some()),
    ];
    match precision.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("fp32") => {
            if let Some((flag, _)) = int8_only.iter().find(|(_, given)| *given) {
                return Err(UsageError::new(format!(
                    "{flag} applies to int8 export only; hint: add --precision int8, or drop {flag}"
                )));
            }
            Ok(Precision::Fp32)
        }
        Some("int8") => {
            let calibrate = calibrate.ok_or_else(|| {
                UsageError::new(
                    "--precision int8 needs calibration photos; hint: pass --calibrate DATA_DIR (a data set with images/ and masks/, e.g. from `wms data synth`)",
                )
            })?;
            if !calibrate.is_dir() {
                return Err(UsageError::new(format!(
                    "--calibrate {}: no such directory; hint: pass a data set folder with images/ and masks/",
                    calibrate.display()
                )));
            }
            let calibration_images = match images {
                None => DEFAULT_CALIBRATION_IMAGES,
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(UsageError::new(format!(
                            "--calibration-images {v:?} is not a positive whole number; hint: e.g. --calibration-images 64"
                        )));
                    }
                },
            };
            let max_iou_drop = match max_iou_drop {
                None => DEFAULT_MAX_IOU_DROP,
                Some(v) => match v.trim().parse::<f64>() {
                    Ok(d) if d.is_finite() && (0.0..=1.0).contains(&d) => d,
                    _ => {
                        return Err(UsageError::new(format!(
                            "--max-iou-drop {v:?} is not a number between 0 and 1; hint: e.g. --max-iou-drop 0.005"
                        )));
                    }
                },
            };
            let plan = match keep_fp32 {
                None => Plan::default(),
                Some(list) => Plan {
                    fp32_convs: list
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect::<BTreeSet<_>>(),
                },
            };
            Ok(Precision::Int8(Int8Settings {
                calibrate,
                calibration_images,
                max_iou_drop,
                plan,
            }))
        }
        Some(_) => Err(UsageError::new(format!(
            "--precision {:?} is not a precision; hint: use fp32 or int8",
            precision.unwrap_or_default()
        ))),
    }
}

/// A path as a log line may show it: the paths come from flags or action inputs, so control
/// characters in them are quoted rather than written to the terminal or the runner's log.
fn shown(path: &std::path::Path) -> String {
    for_log(&path.to_string_lossy()).into_owned()
}

/// What the user reads on stderr about an export.
fn report(settings: &ExportSettings, outcome: &ExportOutcome) {
    eprintln!(
        "wrote {} ({} bytes, {}, opset {}) from {}",
        shown(&outcome.model_path),
        outcome.size,
        outcome.precision,
        onnx::OPSET,
        shown(&settings.checkpoint)
    );
    for c in &outcome.parity {
        eprintln!(
            "check {:?}: max |ONNX Runtime − reference| = {:.2e} (logits up to {:.2}, tolerance {:e})",
            c.shape,
            c.max_abs_diff,
            c.max_abs_logit,
            onnx::check::TOLERANCE
        );
    }
    if let Some(q) = &outcome.quantization {
        eprintln!(
            "int8 accuracy guard on {} test photos (calibrated on {}): IoU {:.4} vs fp32 {:.4} (drop {:.4}, limit {}), Dice {:.4} vs {:.4}, {:.2} % of pixels agree",
            q.test_images,
            q.calibration_images,
            q.int8_test_iou,
            q.fp32_test_iou,
            q.iou_drop,
            q.max_iou_drop,
            q.int8_test_dice,
            q.fp32_test_dice,
            100.0 * q.pixel_agreement
        );
    }
    if let Some(p) = &outcome.sidecar_path {
        eprintln!("recorded the guard's figures in {}", shown(p));
    }
    if let (Some(archive), Some(dir)) = (&outcome.mar_path, &outcome.mar_dir) {
        eprintln!(
            "wrote TorchServe archive {} (unpacked: {})",
            shown(archive),
            shown(dir)
        );
    }
}

/// `wms export-onnx`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let gh = Actions::from_env();
    let settings = resolve(args, |name| gh.input(name))?;
    let outcome = match pipeline::export(&settings) {
        Ok(o) => o,
        // Exit 3 like the quality gate: a worse model, not a broken run.
        Err(e @ OnnxError::AccuracyGuard { .. }) => {
            return Err(GateNotMet {
                reason: e.to_string(),
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    report(&settings, &outcome);
    let path = outcome.model_path.display().to_string();
    let mut outputs = vec![
        ("model_path", path),
        ("sha256", outcome.sha256.clone()),
        ("size", outcome.size.to_string()),
        ("precision", outcome.precision.to_string()),
    ];
    if let Some(p) = &outcome.mar_path {
        outputs.push(("mar_path", p.display().to_string()));
    }
    if let Some(q) = &outcome.quantization {
        outputs.push(("int8_test_iou", q.int8_test_iou.to_string()));
        outputs.push(("iou_drop", q.iou_drop.to_string()));
    }
    outputs
        .iter()
        .try_for_each(|(k, v)| gh.set_output(k, v))
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
            precision: None,
            calibrate: None,
            calibration_images: None,
            max_iou_drop: None,
            keep_fp32: None,
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
        let s = resolve(
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
        let err = resolve(args(), |_| None).unwrap_err();
        assert!(err.to_string().contains("--checkpoint"), "{err}");
        let err = resolve(
            ExportArgs {
                checkpoint: Some("c".into()),
                ..args()
            },
            |n| (n == "check").then(|| "maybe".to_string()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
    }

    #[test]
    fn printed_paths_cannot_start_a_workflow_command() {
        let shown = shown(std::path::Path::new("out\n::error::forged.mar"));
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.contains("forged.mar"), "{shown}");
    }

    #[test]
    fn int8_settings_resolve_from_flags_and_inputs_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_string_lossy().into_owned();
        let s = resolve(
            ExportArgs {
                checkpoint: Some("c".into()),
                precision: Some("INT8".into()),
                ..args()
            },
            |n| match n {
                "calibrate" => Some(data.clone()),
                "max-iou-drop" => Some("0.01".into()),
                _ => None,
            },
        )
        .unwrap();
        let Precision::Int8(q) = s.precision else {
            panic!("{:?}", s.precision)
        };
        assert_eq!(q.calibrate, dir.path());
        assert_eq!(q.calibration_images, DEFAULT_CALIBRATION_IMAGES);
        assert_eq!(q.max_iou_drop, 0.01);
        assert_eq!(q.plan, Plan::default());
        let s = resolve(
            ExportArgs {
                checkpoint: Some("c".into()),
                ..args()
            },
            |_| None,
        )
        .unwrap();
        assert_eq!(s.precision, Precision::Fp32);
    }

    #[test]
    fn bad_int8_values_are_usage_errors_with_hints() {
        let dir = tempfile::tempdir().unwrap();
        let with = |precision: &str, images: Option<&str>, drop: Option<&str>| {
            resolve(
                ExportArgs {
                    checkpoint: Some("c".into()),
                    precision: Some(precision.into()),
                    calibrate: Some(dir.path().to_path_buf()),
                    calibration_images: images.map(str::to_string),
                    max_iou_drop: drop.map(str::to_string),
                    ..args()
                },
                |_| None,
            )
            .unwrap_err()
            .to_string()
        };
        for (err, needle) in [
            (with("int8", Some("0"), None), "--calibration-images"),
            (with("int8", Some("many"), None), "--calibration-images"),
            (with("int8", None, Some("-1")), "--max-iou-drop"),
            (with("int8", None, Some("NaN")), "--max-iou-drop"),
            (with("fp16", None, None), "fp32 or int8"),
            (with("fp32", None, None), "--calibrate applies to int8"),
        ] {
            assert!(err.contains(needle) && err.contains("hint:"), "{err}");
        }
    }
}
