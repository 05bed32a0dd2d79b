//! `wms promote`: flags, else the action's `INPUT_*`, resolved into [`PromoteSettings`]; the
//! registry calls (new version, alias moves, rollback) live in [`crate::mlflow::registry`].
//! Data (the new version) goes to stdout.

use anyhow::Context as _;

use super::gate::{client_from_env, mask_tracking_secrets};
use crate::exit::UsageError;
use crate::github::actions::Actions;
use crate::mlflow::registry;
use crate::untrusted::redact;
use crate::untrusted::text::for_log;

/// Register a run's model as a new version and move the `production` alias to it.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The MLflow run whose artifacts become the new version. Input: `run-id`.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Registered model name (created when missing). Input: `model-name`.
    #[arg(long, value_name = "NAME")]
    pub model_name: Option<String>,
    /// Artifact folder of the run to register [default: model]. Input: `artifact-path`.
    #[arg(long, value_name = "PATH")]
    pub artifact_path: Option<String>,
    /// Instead of promoting: move `production` back to `previous` (and `previous` to what was
    /// production). Input: `rollback`.
    #[arg(long, conflicts_with_all = ["run_id", "artifact_path"])]
    pub rollback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoteSettings {
    Promote {
        run_id: String,
        model_name: String,
        artifact_path: String,
    },
    Rollback {
        model_name: String,
    },
}

impl PromoteSettings {
    pub fn resolve(
        args: PromoteArgs,
        input: impl Fn(&str) -> Option<String>,
    ) -> Result<PromoteSettings, UsageError> {
        let PromoteArgs {
            run_id,
            model_name,
            artifact_path,
            rollback,
        } = args;
        let model_name = model_name.or_else(|| input("model-name")).ok_or_else(|| {
            UsageError::new("no model name; hint: pass --model-name NAME (the registered model)")
        })?;
        let rollback = crate::github::actions::flag_or_input(rollback, "rollback", &input)?;
        if rollback {
            return Ok(PromoteSettings::Rollback { model_name });
        }
        let run_id = run_id.or_else(|| input("run-id")).ok_or_else(|| {
            UsageError::new("no run id; hint: pass --run-id ID (wms-train's output mlflow_run_id)")
        })?;
        let artifact_path = artifact_path
            .or_else(|| input("artifact-path"))
            .unwrap_or_else(|| "model".into());
        Ok(PromoteSettings::Promote {
            run_id,
            model_name,
            artifact_path,
        })
    }
}

pub fn run_promote(args: PromoteArgs) -> anyhow::Result<()> {
    let actions = Actions::from_env();
    mask_tracking_secrets(&actions);
    let settings = PromoteSettings::resolve(args, |name| actions.input(name))?;
    let client = client_from_env("wms promote")?;
    let (version, previous) = match settings {
        PromoteSettings::Promote {
            run_id,
            model_name,
            artifact_path,
        } => {
            let p = registry::promote(&client, &model_name, &run_id, &artifact_path)
                .with_context(|| format!("promoting run {run_id} as {model_name}"))?;
            tracing::info!(
                source = %for_log(&redact::url(&p.source)),
                "{} version {} is now production",
                for_log(&model_name),
                p.version
            );
            (p.version, p.previous)
        }
        PromoteSettings::Rollback { model_name } => {
            let r = registry::rollback(&client, &model_name)
                .with_context(|| format!("rolling back {model_name}"))?;
            tracing::info!(
                "{} version {} is production again",
                for_log(&model_name),
                r.version
            );
            (r.version, r.previous)
        }
    };
    let previous = previous.unwrap_or_default();
    tracing::info!(
        "previous: {}",
        if previous.is_empty() {
            "none"
        } else {
            &previous
        }
    );
    // Both outputs the action declares, in either mode.
    actions.set_output("version", &version)?;
    actions.set_output("previous", &previous)?;
    println!("{version}");
    Ok(())
}
