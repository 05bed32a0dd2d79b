//! `wms gate`: flags, else the action's `INPUT_*`, resolved into settings; the decision lives in
//! [`crate::gate`], metrics files are read by [`crate::report::inputs::read_metrics`] (the one
//! strict reader of `metrics.json`), the baseline from MLflow by [`crate::mlflow::registry`].
//! Data (the Markdown table) goes to stdout.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::exit::{GateNotMet, UsageError};
use crate::gate::{self, Baseline, GateRules};
use crate::github::actions::Actions;
use crate::mlflow::registry::{self, PRODUCTION};
use crate::mlflow::{Client, ClientConfig};
use crate::report::inputs::read_metrics;

/// Compare a candidate's metrics with production's.
#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// The candidate's metrics.json (flat keys such as test_iou). Input: `candidate`.
    #[arg(long, value_name = "FILE")]
    pub candidate: Option<PathBuf>,
    /// Registered model whose `production` version is the baseline; needs
    /// MLFLOW_TRACKING_URI. Input: `model-name`.
    #[arg(long, value_name = "NAME")]
    pub model_name: Option<String>,
    /// A baseline metrics.json instead of MLflow. Input: `baseline`.
    #[arg(long, value_name = "FILE", conflicts_with = "model_name")]
    pub baseline: Option<PathBuf>,
    /// Alias of the baseline version [default: production]. Input: `alias`.
    #[arg(long)]
    pub alias: Option<String>,
    /// A metric that must beat the baseline (repeatable) [default: test_dice and test_iou].
    /// Input: `improve` (comma- or newline-separated).
    #[arg(long, value_name = "METRIC")]
    pub improve: Vec<String>,
    /// An absolute minimum, e.g. `--min test_iou=0.85` (repeatable). Input: `min`.
    #[arg(long, value_name = "METRIC=VALUE")]
    pub min: Vec<String>,
    /// An absolute maximum, e.g. `--max test_hausdorff=12` (repeatable). Input: `max`.
    #[arg(long, value_name = "METRIC=VALUE")]
    pub max: Vec<String>,
}

/// Where the baseline comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum BaselineSource {
    File(PathBuf),
    Registry { model_name: String, alias: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    pub candidate: PathBuf,
    pub baseline: BaselineSource,
    pub rules: GateRules,
}

impl GateSettings {
    /// Flags win over action inputs (`input(name)`); list inputs are comma/newline-separated.
    pub fn resolve(
        args: GateArgs,
        input: impl Fn(&str) -> Option<String>,
    ) -> Result<GateSettings, UsageError> {
        let GateArgs {
            candidate,
            model_name,
            baseline,
            alias,
            improve,
            min,
            max,
        } = args;
        let candidate = candidate
            .or_else(|| input("candidate").map(PathBuf::from))
            .ok_or_else(|| {
                UsageError::new(
                    "no candidate metrics; hint: pass --candidate runs/train/metrics.json (written by wms-train train)",
                )
            })?;
        let model_name = model_name.or_else(|| input("model-name"));
        let baseline_file = baseline.or_else(|| input("baseline").map(PathBuf::from));
        let baseline = match (baseline_file, model_name) {
            (Some(_), Some(_)) => {
                return Err(UsageError::new(
                    "both a baseline file and a model name; hint: pass --baseline FILE or --model-name NAME, not both",
                ));
            }
            (Some(f), None) => BaselineSource::File(f),
            (None, Some(model_name)) => BaselineSource::Registry {
                model_name,
                alias: alias
                    .or_else(|| input("alias"))
                    .unwrap_or_else(|| PRODUCTION.into()),
            },
            (None, None) => {
                return Err(UsageError::new(
                    "nothing to compare with; hint: pass --model-name NAME (its `production` version in MLflow) or --baseline metrics.json",
                ));
            }
        };
        let rules = resolve_rules(improve, min, max, &input)?;
        Ok(GateSettings {
            candidate,
            baseline,
            rules,
        })
    }
}

/// The gate's rules from `--improve/--min/--max`, else the action inputs of the same names
/// (comma- or newline-separated); `wms gate` and `wms report pr` decide with the same rules.
pub(crate) fn resolve_rules(
    improve: Vec<String>,
    min: Vec<String>,
    max: Vec<String>,
    input: &dyn Fn(&str) -> Option<String>,
) -> Result<GateRules, UsageError> {
    let thresholds = |items: Vec<String>, flag: &str| {
        items
            .iter()
            .map(|t| gate::parse_threshold(t).map_err(|e| UsageError::new(format!("--{flag} {e}"))))
            .collect::<Result<Vec<_>, _>>()
    };
    let improve = list_input(improve, input, "improve");
    Ok(GateRules {
        improve: if improve.is_empty() {
            GateRules::default().improve
        } else {
            improve
        },
        min: thresholds(list_input(min, input, "min"), "min")?,
        max: thresholds(list_input(max, input, "max"), "max")?,
    })
}

/// Flags win; otherwise the action input `name`, split on commas and newlines.
fn list_input(
    flags: Vec<String>,
    input: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Vec<String> {
    if !flags.is_empty() {
        return flags;
    }
    input(name)
        .map(|v| {
            v.split([',', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub fn run_gate(args: GateArgs) -> anyhow::Result<()> {
    let actions = Actions::from_env();
    mask_tracking_secrets(&actions);
    let settings = GateSettings::resolve(args, |name| actions.input(name))?;
    let candidate = read_metrics(&settings.candidate)?;
    let baseline = match &settings.baseline {
        BaselineSource::File(path) => Some(Baseline {
            label: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
            metrics: read_metrics(path)?,
        }),
        BaselineSource::Registry { model_name, alias } => {
            let client = client_from_env("--model-name")?;
            registry::alias_metrics(&client, model_name, alias)
                .with_context(|| format!("reading the metrics of {model_name}@{alias}"))?
                .map(|found| Baseline {
                    label: format!("{alias} (v{})", found.version.version),
                    metrics: found.metrics,
                })
        }
    };
    let decision = gate::decide(&candidate, baseline.as_ref(), &settings.rules);
    let table = gate::markdown(&decision);
    print!("{table}");
    actions.set_output("improved", if decision.passed { "true" } else { "false" })?;
    actions.set_output("table", &table)?;
    actions.append_summary(&table)?;
    if !decision.passed {
        return Err(GateNotMet {
            reason: decision.failure_reason(),
        }
        .into());
    }
    Ok(())
}

/// Masks the MLflow credentials of the environment first thing, before a message could show
/// one (the URI's password too: it is in the environment of later steps).
pub(crate) fn mask_tracking_secrets(actions: &Actions) {
    for secret in ClientConfig::secrets_from_env() {
        actions.add_mask(&secret);
    }
}

/// The MLflow client of the environment; `needed_by` names the flag or command that needs it.
pub(crate) fn client_from_env(needed_by: &str) -> anyhow::Result<Client> {
    let cfg = ClientConfig::from_env()?.ok_or_else(|| {
        UsageError::new(format!(
            "{needed_by} needs an MLflow server; hint: set MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_TOKEN if it needs auth), or gate with --baseline metrics.json"
        ))
    })?;
    Ok(Client::new(cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> GateArgs {
        GateArgs {
            candidate: None,
            model_name: None,
            baseline: None,
            alias: None,
            improve: vec![],
            min: vec![],
            max: vec![],
        }
    }

    #[test]
    fn gate_settings_come_from_flags_else_inputs() {
        let inputs = |name: &str| match name {
            "candidate" => Some("m.json".to_string()),
            "model-name" => Some("meters".to_string()),
            "min" => Some("test_iou=0.85, test_dice=0.9".to_string()),
            _ => None,
        };
        let s = GateSettings::resolve(args(), inputs).unwrap();
        assert_eq!(s.candidate, PathBuf::from("m.json"));
        assert_eq!(
            s.baseline,
            BaselineSource::Registry {
                model_name: "meters".into(),
                alias: "production".into()
            }
        );
        assert_eq!(s.rules.improve, vec!["test_dice", "test_iou"]);
        assert_eq!(
            s.rules.min,
            vec![("test_iou".into(), 0.85), ("test_dice".into(), 0.9)]
        );
        let flags = GateArgs {
            baseline: Some("base.json".into()),
            candidate: Some("c.json".into()),
            improve: vec!["test_iou".into()],
            ..args()
        };
        let s = GateSettings::resolve(flags, |_| None).unwrap();
        assert_eq!(s.baseline, BaselineSource::File("base.json".into()));
        assert_eq!(s.rules.improve, vec!["test_iou"]);
    }

    /// `wms gate` reads metrics.json with the report's strict reader: a value that is not a
    /// number is an error naming the file and key, not a metric silently left out.
    #[test]
    fn gate_rejects_a_non_numeric_metric() {
        let dir = tempfile::tempdir().unwrap();
        let cand = dir.path().join("cand.json");
        let base = dir.path().join("base.json");
        fs_err::write(&cand, r#"{"test_iou": "0.9", "test_dice": 0.9}"#).unwrap();
        fs_err::write(&base, r#"{"test_iou": 0.8, "test_dice": 0.8}"#).unwrap();
        let args = GateArgs {
            candidate: Some(cand.clone()),
            baseline: Some(base),
            ..args()
        };
        let err = run_gate(args).unwrap_err();
        let line = crate::exit::render(err.as_ref());
        assert!(
            line.contains(&cand.display().to_string())
                && line.contains("test_iou")
                && line.contains("not a finite number"),
            "{line}"
        );
        assert_eq!(crate::exit::code_for(&err), crate::exit::FAILURE);
    }

    #[test]
    fn gate_usage_errors_have_hints() {
        let e = GateSettings::resolve(args(), |_| None).unwrap_err();
        assert!(e.message.contains("hint:"), "{e}");
        let e = GateSettings::resolve(
            GateArgs {
                candidate: Some("c.json".into()),
                ..args()
            },
            |_| None,
        )
        .unwrap_err();
        assert!(e.message.contains("--model-name"), "{e}");
        let e = GateSettings::resolve(
            GateArgs {
                candidate: Some("c.json".into()),
                baseline: Some("b.json".into()),
                min: vec!["iou".into()],
                ..args()
            },
            |_| None,
        )
        .unwrap_err();
        assert!(e.message.starts_with("--min"), "{e}");
    }
}
