//! The model registry: registered models, versions created from a run's artifacts, aliases
//! (`production`, `previous`; stages are deprecated since MLflow 2.9) and version search, plus
//! the promotion that moves `production` and keeps the old holder as `previous`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use super::client::Client;
use super::error::MlflowError;

/// The alias serving traffic.
pub const PRODUCTION: &str = "production";
/// The alias `production` had before the last promotion: the rollback target.
pub const PREVIOUS: &str = "previous";

#[derive(Debug, Clone, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredModel {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<AliasEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AliasEntry {
    pub alias: String,
    pub version: String,
}

#[derive(Deserialize)]
struct VersionResp {
    model_version: ModelVersion,
}

impl Client {
    /// Creates the registered model `name`; an existing one is fine.
    pub fn ensure_registered_model(&self, name: &str) -> Result<(), MlflowError> {
        match self.post::<serde_json::Value>("registered-models/create", &json!({ "name": name })) {
            Ok(_) => Ok(()),
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn get_registered_model(&self, name: &str) -> Result<RegisteredModel, MlflowError> {
        #[derive(Deserialize)]
        struct Resp {
            registered_model: RegisteredModel,
        }
        let r: Resp = self.get("registered-models/get", &[("name", name)])?;
        Ok(r.registered_model)
    }

    /// A new version of `name` from `source` (an artifact URI inside the run's artifacts),
    /// linked to `run_id`; waits until the server reports it READY.
    pub fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
    ) -> Result<ModelVersion, MlflowError> {
        let r: VersionResp = self.post(
            "model-versions/create",
            &json!({ "name": name, "source": source, "run_id": run_id }),
        )?;
        let mut mv = r.model_version;
        // File-backed stores answer READY at once; others register asynchronously.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while mv.status == "PENDING_REGISTRATION" && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_secs(1));
            mv = self.get_model_version(name, &mv.version)?;
        }
        if mv.status == "FAILED_REGISTRATION" {
            return Err(MlflowError::Registry {
                message: format!("model {name} version {} failed to register", mv.version),
                hint: "see the MLflow server's log; check that the run's artifacts exist".into(),
            });
        }
        Ok(mv)
    }

    pub fn get_model_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<ModelVersion, MlflowError> {
        let r: VersionResp = self.get(
            "model-versions/get",
            &[("name", name), ("version", version)],
        )?;
        Ok(r.model_version)
    }

    /// Points `alias` of `name` at `version` (moving it if it pointed elsewhere).
    pub fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), MlflowError> {
        self.post::<serde_json::Value>(
            "registered-models/alias",
            &json!({ "name": name, "alias": alias, "version": version }),
        )?;
        Ok(())
    }

    /// The version `alias` points at; `None` when the alias (or the model) does not exist.
    pub fn version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<Option<ModelVersion>, MlflowError> {
        match self.get::<VersionResp>(
            "registered-models/alias",
            &[("name", name), ("alias", alias)],
        ) {
            Ok(r) => Ok(Some(r.model_version)),
            Err(e) if e.is_not_found() || e.error_code() == Some("INVALID_PARAMETER_VALUE") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<(), MlflowError> {
        self.delete(
            "registered-models/alias",
            &json!({ "name": name, "alias": alias }),
        )
    }

    /// Versions matching an MLflow search filter (e.g. `name='water-meters'`), all pages.
    pub fn search_model_versions(&self, filter: &str) -> Result<Vec<ModelVersion>, MlflowError> {
        let query = [("filter", filter), ("max_results", "200")];
        self.get_all("model-versions/search", &query, "model_versions")
    }
}

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub model_name: String,
    /// The new version, now behind `production`.
    pub version: String,
    /// The version `production` pointed at before, now behind `previous`.
    pub previous: Option<String>,
    pub source: String,
}

/// Registers `<run artifact root>/<artifact_path>` as a new version of `model_name` and moves
/// `production` to it; the version that held `production` keeps the alias `previous`, so a
/// rollback is one [`rollback`] (or `set_alias`) call. `previous` is moved first: if the second
/// call fails, production is unchanged and `previous` names it.
pub fn promote(
    client: &Client,
    model_name: &str,
    run_id: &str,
    artifact_path: &str,
) -> Result<Promotion, MlflowError> {
    let run = client.get_run(run_id)?;
    let source = format!(
        "{}/{}",
        run.info.artifact_uri.trim_end_matches('/'),
        artifact_path.trim_matches('/')
    );
    client.ensure_registered_model(model_name)?;
    let current = client.version_by_alias(model_name, PRODUCTION)?;
    let mv = client.create_model_version(model_name, &source, run_id)?;
    let previous = current.map(|c| c.version);
    if let Some(prev) = &previous {
        client.set_alias(model_name, PREVIOUS, prev)?;
    }
    client.set_alias(model_name, PRODUCTION, &mv.version)?;
    Ok(Promotion {
        model_name: model_name.to_string(),
        version: mv.version,
        previous,
        source,
    })
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// The version now behind `production` (the one `previous` pointed at).
    pub version: String,
    /// The version now behind `previous` (what was production); `None` when nothing was.
    pub previous: Option<String>,
}

/// Swaps `production` and `previous`: production goes back to the version before the last
/// promotion.
pub fn rollback(client: &Client, model_name: &str) -> Result<Rollback, MlflowError> {
    let prev = client
        .version_by_alias(model_name, PREVIOUS)?
        .ok_or_else(|| MlflowError::Registry {
            message: format!("model {model_name} has no alias {PREVIOUS:?}"),
            hint: "nothing to roll back to: only a second promotion sets it".into(),
        })?;
    let current = client.version_by_alias(model_name, PRODUCTION)?;
    client.set_alias(model_name, PRODUCTION, &prev.version)?;
    match &current {
        Some(c) => client.set_alias(model_name, PREVIOUS, &c.version)?,
        None => client.delete_alias(model_name, PREVIOUS)?,
    }
    Ok(Rollback {
        version: prev.version,
        previous: current.map(|c| c.version),
    })
}

/// The version behind `alias` and the final metrics of the run that produced it; `None` when
/// the alias (or the model) does not exist yet.
pub fn alias_metrics(
    client: &Client,
    model_name: &str,
    alias: &str,
) -> Result<Option<AliasMetrics>, MlflowError> {
    let Some(mv) = client.version_by_alias(model_name, alias)? else {
        return Ok(None);
    };
    if mv.run_id.is_empty() {
        return Err(MlflowError::Registry {
            message: format!(
                "model {model_name} version {} (alias {alias:?}) has no run, so no metrics to compare with",
                mv.version
            ),
            hint: "register versions with `wms promote --run-id`, or gate with --baseline metrics.json".into(),
        });
    }
    let run = client.get_run(&mv.run_id)?;
    // Per-epoch points live under their own prefix; the gate compares final metrics.
    let metrics = run
        .metrics()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(super::tracker::EPOCH_PREFIX))
        .collect();
    Ok(Some(AliasMetrics {
        version: mv,
        metrics,
    }))
}

/// A model version and its run's final metrics.
#[derive(Debug, Clone)]
pub struct AliasMetrics {
    pub version: ModelVersion,
    pub metrics: BTreeMap<String, f64>,
}
