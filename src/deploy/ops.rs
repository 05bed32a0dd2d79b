//! The `wms deploy` tasks as library calls: apply (and wait), scale, config, promote, rollback,
//! status, cleanup, debug. Each takes a [`Cluster`] and returns what happened, so the CLI only
//! prints and records. Mutating tasks expect the caller to hold the deploy lock ([`lock`]).
//!
//! Scale and config re-render the version from the inputs `apply` stored on its Namespace
//! (annotation [`SPEC_ANNOTATION`]) and apply everything again with the same field manager:
//! server-side apply then changes exactly the fields that differ (a config change changes the
//! ConfigMap and the pod template's checksum, so the Deployment rolls), and no second manager
//! ever owns a field `apply` also sets.
//!
//! This module must not print or read files.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use serde::Serialize;
use serde_json::{Value, json};

use super::cluster::Cluster;
use super::lease::{self, LeaseGuard};
use super::names::Names;
use super::pods::{self, PodProblem};
use super::render::{self, DeploySpec, MANAGER, keys};
use super::rollout::{self, Rollout, Waited, WatchStats};
use super::route::{self, Promotion, Route};
use super::{DeployError, apply};

/// Namespace annotation: the [`DeploySpec`] `apply` rendered, as JSON (scale/config start
/// from it).
pub const SPEC_ANNOTATION: &str = "wms.io/deploy-spec";

/// Creates the system namespace (idempotent) and takes the deploy lock in it.
pub async fn lock(
    cluster: &Cluster,
    system_namespace: &str,
    holder: &str,
    timeout: Duration,
) -> Result<LeaseGuard, DeployError> {
    let ns = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": system_namespace,
            "labels": { keys::MANAGED_BY: MANAGER, keys::PART_OF: MANAGER },
        },
    });
    apply::apply_one(cluster, &ns, false).await?;
    lease::acquire(cluster, system_namespace, holder, timeout).await
}

/// How a rollout wait ended well.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    pub namespace: String,
    pub deployment: String,
    pub seconds: f64,
    pub ready_replicas: i32,
    /// Watches opened (more than one when streams ended or a 410 came).
    pub watches: u32,
    pub gone: u32,
}

/// Waits for the version's Deployment as `kubectl rollout status` would; a failed or timed-out
/// rollout is [`DeployError::RolloutFailed`] naming each failing pod's reason and last log line.
pub async fn wait_rollout(
    cluster: &Cluster,
    names: &Names,
    timeout: Duration,
) -> Result<RolloutReport, DeployError> {
    let started = Instant::now();
    let (waited, stats): (Waited, WatchStats) =
        rollout::wait(cluster, &names.namespace, &names.model, timeout).await?;
    let (why, d) = match waited {
        Waited::Done(d) => {
            return Ok(RolloutReport {
                namespace: names.namespace.clone(),
                deployment: names.model.clone(),
                seconds: started.elapsed().as_secs_f64(),
                ready_replicas: d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
                watches: stats.watches,
                gone: stats.gone,
            });
        }
        Waited::Failed(why, d) => (why, d),
        Waited::TimedOut(msg, d) => (
            format!("not rolled out after {} s ({msg})", timeout.as_secs()),
            d,
        ),
    };
    let problems = pods::problems(
        cluster,
        &names.namespace,
        &selector_of(&d),
        render::CONTAINER,
    )
    .await?;
    Err(rollout_failed(names, why, problems))
}

fn rollout_failed(names: &Names, why: String, pods: Vec<PodProblem>) -> DeployError {
    let mut why = why;
    if !pods.is_empty() {
        let lines: Vec<String> = pods.iter().map(PodProblem::one_line).collect();
        why = format!("{why}; {}", lines.join("; "));
    }
    DeployError::RolloutFailed {
        namespace: names.namespace.clone(),
        deployment: names.model.clone(),
        version: names.version.clone(),
        why,
        pods,
    }
}

/// `app.kubernetes.io/name=m,app.kubernetes.io/instance=m-v1` from the Deployment's selector.
fn selector_of(d: &Deployment) -> String {
    d.spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What `apply` did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub namespace: String,
    /// `Kind namespace/name` of every object applied, in order.
    pub objects: Vec<String>,
    pub rollout: Option<RolloutReport>,
}

/// The rendered objects with the spec stored on the Namespace.
pub fn objects_to_apply(spec: &DeploySpec) -> Result<Vec<Value>, DeployError> {
    let mut objects = render::render(spec)?;
    let stored = serde_json::to_string(spec).expect("a DeploySpec serializes");
    objects[0]["metadata"]["annotations"][SPEC_ANNOTATION] = json!(stored);
    Ok(objects)
}

/// Server-side applies the version's objects, then waits for the rollout when `wait` is set.
pub async fn apply_version(
    cluster: &Cluster,
    spec: &DeploySpec,
    force: bool,
    wait: Option<Duration>,
) -> Result<Applied, DeployError> {
    let objects = objects_to_apply(spec)?;
    apply::apply_all(cluster, &objects, force).await?;
    let names = spec.names();
    let rollout = match wait {
        Some(t) => Some(wait_rollout(cluster, &names, t).await?),
        None => None,
    };
    Ok(Applied {
        namespace: names.namespace.clone(),
        objects: objects.iter().map(apply::describe).collect(),
        rollout,
    })
}

/// The version's Namespace (`NoSuchVersion` if it is missing).
async fn version_namespace(cluster: &Cluster, names: &Names) -> Result<Namespace, DeployError> {
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    let ns = api
        .get_opt(&names.namespace)
        .await
        .map_err(|e| cluster.error("get", "namespaces", e))?
        .ok_or_else(|| DeployError::NoSuchVersion {
            model: names.model.clone(),
            version: names.version.clone(),
            namespace: names.namespace.clone(),
        })?;
    Ok(ns)
}

/// The spec `apply` stored on the version's Namespace.
pub async fn stored_spec(cluster: &Cluster, names: &Names) -> Result<DeploySpec, DeployError> {
    let ns = version_namespace(cluster, names).await?;
    let text = ns
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_ANNOTATION))
        .ok_or_else(|| DeployError::Unexpected {
            what: "the Namespace",
            namespace: names.namespace.clone(),
            name: names.namespace.clone(),
            why: format!("annotation {SPEC_ANNOTATION} is missing"),
        })?;
    serde_json::from_str(text).map_err(|e| DeployError::Unexpected {
        what: "the Namespace",
        namespace: names.namespace.clone(),
        name: names.namespace.clone(),
        why: format!("annotation {SPEC_ANNOTATION} does not parse: {e}"),
    })
}

/// `replicas` pods for the version (and at least as many as the autoscaler's maximum).
pub async fn scale(
    cluster: &Cluster,
    names: &Names,
    replicas: i32,
    force: bool,
    wait: Option<Duration>,
) -> Result<Applied, DeployError> {
    let mut spec = stored_spec(cluster, names).await?;
    spec.replicas = replicas;
    spec.max_replicas = spec.max_replicas.max(replicas);
    apply_version(cluster, &spec, force, wait).await
}

/// `KEY=VALUE` from `--set`: TorchServe property keys are letters, digits, `_` and `.`.
pub fn parse_set(text: &str) -> Result<(String, String), DeployError> {
    let bad = |why: &str| DeployError::Flag {
        flag: "--set",
        value: text.to_string(),
        why: why.to_string(),
    };
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty()
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(bad("the key must be letters, digits, '_' and '.'"));
    }
    if v.contains(['\n', '\r']) {
        return Err(bad("the value must be one line"));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// config.properties with each key set: the key's last assignment is replaced in place,
/// others are appended; comments and order are kept.
pub fn set_properties(text: &str, sets: &[(String, String)]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for (k, v) in sets {
        let at = lines.iter().rposition(|l| {
            let t = l.trim_start();
            !t.starts_with('#')
                && !t.starts_with('!')
                && t.split(['=', ':']).next().map(str::trim) == Some(k.as_str())
        });
        let line = format!("{k}={v}");
        match at {
            Some(i) => lines[i] = line,
            None => lines.push(line),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Sets config.properties keys; the pods roll because the template's checksum changes.
pub async fn config(
    cluster: &Cluster,
    names: &Names,
    sets: &[(String, String)],
    force: bool,
    wait: Option<Duration>,
) -> Result<Applied, DeployError> {
    let mut spec = stored_spec(cluster, names).await?;
    spec.config_properties = set_properties(&spec.config_properties, sets);
    apply_version(cluster, &spec, force, wait).await
}

/// One version as `status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionState {
    pub model: String,
    pub version: String,
    pub namespace: String,
    /// `Active` or `Terminating`.
    pub phase: String,
    pub created: String,
    pub image: String,
    pub git_sha: String,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    /// `done`, or kubectl's waiting message, or why it failed.
    pub rollout: String,
    /// Rolled out with at least one ready pod.
    pub ready: bool,
    pub promoted: bool,
    pub metrics: BTreeMap<String, Value>,
}

fn label(ns: &Namespace, key: &str) -> String {
    value_of(ns.metadata.labels.as_ref(), key)
}

fn annotation(ns: &Namespace, key: &str) -> String {
    value_of(ns.metadata.annotations.as_ref(), key)
}

/// `key`'s value in a label or annotation map; empty when either is missing.
fn value_of(map: Option<&BTreeMap<String, String>>, key: &str) -> String {
    map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
}

async fn state_of(cluster: &Cluster, ns: &Namespace) -> Result<VersionState, DeployError> {
    let namespace = ns.metadata.name.clone().unwrap_or_default();
    let model = label(ns, keys::MODEL);
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &namespace);
    let d = api.get_opt(&model).await.map_err(|e| {
        cluster.error(
            "get",
            &format!("deployments.apps in namespace {namespace}"),
            e,
        )
    })?;
    let status = d
        .as_ref()
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let (rollout, rolled_out) = match d.as_ref().map(rollout::decide) {
        Some(Rollout::Done) => ("done".to_string(), true),
        Some(Rollout::Waiting(m)) => (m, false),
        Some(Rollout::Failed(m)) => (format!("failed: {m}"), false),
        None => ("no Deployment".to_string(), false),
    };
    let image = d
        .as_ref()
        .and_then(|d| d.spec.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_else(|| annotation(ns, keys::IMAGE));
    let ready_replicas = status.ready_replicas.unwrap_or(0);
    Ok(VersionState {
        version: label(ns, keys::VERSION),
        namespace,
        phase: ns
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Active".into()),
        created: ns
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        image,
        git_sha: label(ns, keys::GIT_SHA),
        replicas: d.as_ref().and_then(|d| d.spec.replicas).unwrap_or(0),
        ready_replicas,
        available_replicas: status.available_replicas.unwrap_or(0),
        ready: rolled_out && ready_replicas > 0,
        rollout,
        promoted: false,
        metrics: serde_json::from_str(&annotation(ns, keys::METRICS)).unwrap_or_default(),
        model,
    })
}

/// Every version wms deployed (of `model`, when given), newest first, with `promoted` set from
/// the entry points.
pub async fn versions(
    cluster: &Cluster,
    system_namespace: &str,
    model: Option<&str>,
) -> Result<(Vec<VersionState>, Vec<Route>), DeployError> {
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    let mut selector = format!("{}={MANAGER},{}", keys::MANAGED_BY, keys::VERSION);
    if let Some(m) = model {
        selector.push_str(&format!(",{}={m}", keys::MODEL));
    }
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| cluster.error("list", "namespaces", e))?;
    let routes = route::list(cluster, system_namespace).await?;
    let mut out = Vec::new();
    for ns in &list.items {
        let mut state = state_of(cluster, ns).await?;
        state.promoted = routes.iter().any(|r| {
            r.model == state.model && r.promoted().as_deref() == Some(state.version.as_str())
        });
        out.push(state);
    }
    out.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| b.namespace.cmp(&a.namespace))
    });
    let routes = routes
        .into_iter()
        .filter(|r| model.is_none_or(|m| r.model == m))
        .collect();
    Ok((out, routes))
}

/// The state of one version (`NoSuchVersion` if its namespace is missing).
pub async fn version_state(cluster: &Cluster, names: &Names) -> Result<VersionState, DeployError> {
    let ns = version_namespace(cluster, names).await?;
    let mut s = state_of(cluster, &ns).await?;
    // Labels may be missing on a namespace someone else made; the names are what was asked.
    s.model = names.model.clone();
    s.version = names.version.clone();
    Ok(s)
}

fn refuse_unless_ready(state: &VersionState) -> Result<(), DeployError> {
    if state.phase == "Terminating" {
        return Err(DeployError::NotReady {
            version: state.version.clone(),
            why: format!("its namespace {} is Terminating", state.namespace),
        });
    }
    if !state.ready {
        let why = if state.rollout == "done" {
            format!("{} ready replicas", state.ready_replicas)
        } else {
            state.rollout.clone()
        };
        return Err(DeployError::NotReady {
            version: state.version.clone(),
            why,
        });
    }
    Ok(())
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Routes the model's entry point to `names` (refused unless that version is Ready).
pub async fn promote(
    cluster: &Cluster,
    system_namespace: &str,
    names: &Names,
    by: &str,
    force: bool,
) -> Result<Promotion, DeployError> {
    let state = version_state(cluster, names).await?;
    refuse_unless_ready(&state)?;
    let current = route::read(cluster, system_namespace, &names.model).await?;
    let entry = Promotion {
        action: "promote".into(),
        version: names.version.clone(),
        namespace: names.namespace.clone(),
        image: state.image.clone(),
        at: now_rfc3339(),
        by: by.into(),
    };
    if let Some(r) = &current
        && r.promoted().as_deref() == Some(names.version.as_str())
        && r.target == names.service_host()
    {
        tracing::info!("{} is already promoted", names.version);
        return Ok(entry);
    }
    route::switch(
        cluster,
        system_namespace,
        names,
        current.as_ref(),
        entry.clone(),
        force,
    )
    .await?;
    Ok(entry)
}

/// Routes the model's entry point back to the version promoted before the current one.
pub async fn rollback(
    cluster: &Cluster,
    system_namespace: &str,
    prefix: &str,
    model: &str,
    by: &str,
    force: bool,
) -> Result<Promotion, DeployError> {
    let current = route::read(cluster, system_namespace, model)
        .await?
        .ok_or_else(|| DeployError::NothingToRollBack {
            why: format!("model {model} was never promoted"),
        })?;
    let previous = current
        .previous()
        .ok_or_else(|| DeployError::NothingToRollBack {
            why: format!(
                "{} is the only version of {model} ever promoted (or left after earlier rollbacks)",
                current.promoted().unwrap_or_default()
            ),
        })?;
    let names = Names::new(prefix, model, &previous);
    let state = version_state(cluster, &names).await?;
    refuse_unless_ready(&state)?;
    let entry = Promotion {
        action: "rollback".into(),
        version: previous,
        namespace: names.namespace.clone(),
        image: state.image.clone(),
        at: now_rfc3339(),
        by: by.into(),
    };
    route::switch(
        cluster,
        system_namespace,
        &names,
        Some(&current),
        entry.clone(),
        force,
    )
    .await?;
    Ok(entry)
}

/// What `cleanup` did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Cleaned {
    pub deleted: Vec<String>,
    pub kept: Vec<String>,
}

/// Deletes all but the `keep` newest versions of `model`, never the promoted or the previous
/// one, and waits until their namespaces are gone; a namespace still Terminating after `wait`
/// is [`DeployError::StuckTerminating`] naming what its conditions say is left.
pub async fn cleanup(
    cluster: &Cluster,
    system_namespace: &str,
    model: &str,
    keep: usize,
    wait: Duration,
) -> Result<Cleaned, DeployError> {
    let (versions, routes) = versions(cluster, system_namespace, Some(model)).await?;
    let route = routes.iter().find(|r| r.model == model);
    let protected: BTreeSet<String> = route
        .map(|r| [r.promoted(), r.previous()].into_iter().flatten().collect())
        .unwrap_or_default();
    let mut out = Cleaned::default();
    let mut doomed = Vec::new();
    let mut kept_new = 0;
    for v in &versions {
        if protected.contains(&v.version) {
            out.kept.push(v.namespace.clone());
        } else if kept_new < keep && v.phase != "Terminating" {
            kept_new += 1;
            out.kept.push(v.namespace.clone());
        } else {
            doomed.push(v.namespace.clone());
        }
    }
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    for ns in &doomed {
        match api.delete(ns, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(cluster.error("delete", "namespaces", e)),
        }
    }
    let started = Instant::now();
    let mut left: Vec<String> = doomed.clone();
    while !left.is_empty() {
        let mut still = Vec::new();
        for ns in &left {
            match api.get_opt(ns).await {
                Ok(None) => {}
                Ok(Some(n)) => still.push((ns.clone(), n)),
                Err(e) => return Err(cluster.error("get", "namespaces", e)),
            }
        }
        if still.is_empty() {
            break;
        }
        if started.elapsed() >= wait {
            let (ns, n) = &still[0];
            return Err(DeployError::StuckTerminating {
                namespace: ns.clone(),
                waited_s: started.elapsed().as_secs(),
                leftovers: leftovers(n),
            });
        }
        left = still.into_iter().map(|(ns, _)| ns).collect();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out.deleted = doomed;
    Ok(out)
}

/// What a Terminating namespace's conditions say still holds it.
pub fn leftovers(ns: &Namespace) -> String {
    let msgs: Vec<String> = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.status == "True")
        .map(|c| {
            format!(
                "{}: {}",
                c.type_,
                c.message.unwrap_or_else(|| c.reason.unwrap_or_default())
            )
        })
        .collect();
    if msgs.is_empty() {
        "no condition says why (the namespace controller has not reported yet)".into()
    } else {
        msgs.join("; ")
    }
}

/// Why a version is not serving: its state and each failing pod with its last log lines.
pub async fn debug(
    cluster: &Cluster,
    names: &Names,
) -> Result<(VersionState, Vec<PodProblem>), DeployError> {
    let state = version_state(cluster, names).await?;
    let selector = format!(
        "{}={},{}={}",
        keys::NAME,
        names.model,
        keys::INSTANCE,
        names.instance
    );
    let problems = pods::problems(cluster, &names.namespace, &selector, render::CONTAINER).await?;
    Ok((state, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_the_last_assignment_and_appends_new_keys() {
        let text = "# batch\nbatch_size=4\nmax_batch_delay = 20\nbatch_size=2\n";
        let sets = vec![
            parse_set("batch_size=8").unwrap(),
            parse_set("max_batch_delay=50").unwrap(),
            parse_set("job_queue_size=10").unwrap(),
        ];
        assert_eq!(
            set_properties(text, &sets),
            "# batch\nbatch_size=4\nmax_batch_delay=50\nbatch_size=8\njob_queue_size=10\n"
        );
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("a b=1").is_err());
        assert!(parse_set("k=1\nx=2").is_err());
        let e = parse_set("=1").unwrap_err().to_string();
        assert!(e.starts_with("--set "), "{e}");
    }
}
