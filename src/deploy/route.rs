//! The stable entry point of a model and its promotion history, both in ONE object: a Service
//! `<model>` of type `ExternalName` in the system namespace whose `externalName` is the promoted
//! version's Service (`<model>.<prefix><model>-<version>.svc.cluster.local`) and whose
//! annotations hold the history. Promote and rollback are one server-side apply of that Service,
//! so the switch and its record cannot disagree, and the write carries the resourceVersion read
//! (a concurrent writer gets a 409 instead of a lost update). Why this design is in
//! docs/deploy.md (cluster DNS answers the new CNAME within its cache TTL; the old version keeps
//! running, so in-flight and cached clients are still served).
//!
//! History semantics: a promote pushes a version, a rollback pops one, like an undo stack
//! replayed from the recorded entries; so `rollback` twice after promoting v1, v2, v3 lands on v1.
//! This module must not check readiness itself (callers pass what they checked).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::DeployError;
use super::apply;
use super::cluster::Cluster;
use super::names::Names;
use super::render::{MANAGER, PORT_INFERENCE, keys};

/// Annotation on the entry-point Service: the history as a JSON list, oldest first.
pub const HISTORY: &str = "wms.io/promotion-history";
/// Annotation: the promoted version (for `kubectl get` readers).
pub const PROMOTED: &str = "wms.io/promoted-version";
/// History entries kept (annotations hold at most 256 KiB in all).
pub const MAX_HISTORY: usize = 100;

/// One promote or rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// `promote` or `rollback`.
    pub action: String,
    pub version: String,
    pub namespace: String,
    /// The image the version ran when it was switched to.
    #[serde(default)]
    pub image: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// Who switched (the lock holder's identity).
    #[serde(default)]
    pub by: String,
}

/// The entry point of one model as read from the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub model: String,
    /// What `externalName` points at now.
    pub target: String,
    pub history: Vec<Promotion>,
    pub resource_version: Option<String>,
}

impl Route {
    /// The promoted versions as a stack (promote pushes, rollback pops); last = serving.
    pub fn stack(&self) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        for p in &self.history {
            if p.action == "rollback" {
                while stack.last().is_some_and(|v| *v != p.version) {
                    stack.pop();
                }
                if stack.is_empty() {
                    stack.push(p.version.clone());
                }
            } else if stack.last() != Some(&p.version) {
                stack.push(p.version.clone());
            }
        }
        stack
    }

    /// The version serving now.
    pub fn promoted(&self) -> Option<String> {
        self.stack().last().cloned()
    }

    /// The version a rollback would switch to.
    pub fn previous(&self) -> Option<String> {
        let s = self.stack();
        (s.len() >= 2).then(|| s[s.len() - 2].clone())
    }
}

/// Reads the entry point of `model` (`None`: never promoted).
pub async fn read(
    cluster: &Cluster,
    system_namespace: &str,
    model: &str,
) -> Result<Option<Route>, DeployError> {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), system_namespace);
    let svc = api.get_opt(model).await.map_err(|e| {
        cluster.error(
            "get",
            &format!("services in namespace {system_namespace}"),
            e,
        )
    })?;
    let Some(svc) = svc else {
        return Ok(None);
    };
    Ok(Some(route_of(system_namespace, model, &svc)?))
}

fn route_of(system_namespace: &str, model: &str, svc: &Service) -> Result<Route, DeployError> {
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    let history = match annotations.get(HISTORY) {
        Some(text) => serde_json::from_str(text).map_err(|e| DeployError::Unexpected {
            what: "the promotion history",
            namespace: system_namespace.into(),
            name: model.into(),
            why: format!("annotation {HISTORY} is not a JSON list of promotions: {e}"),
        })?,
        None => Vec::new(),
    };
    Ok(Route {
        model: model.into(),
        target: svc
            .spec
            .as_ref()
            .and_then(|s| s.external_name.clone())
            .unwrap_or_default(),
        history,
        resource_version: svc.metadata.resource_version.clone(),
    })
}

/// Every model's entry point in the system namespace.
pub async fn list(cluster: &Cluster, system_namespace: &str) -> Result<Vec<Route>, DeployError> {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), system_namespace);
    let selector = format!("{}={MANAGER},{}", keys::MANAGED_BY, keys::MODEL);
    let list = api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            cluster.error(
                "list",
                &format!("services in namespace {system_namespace}"),
                e,
            )
        })?;
    list.items
        .iter()
        .map(|svc| {
            let model = svc.metadata.name.clone().unwrap_or_default();
            route_of(system_namespace, &model, svc)
        })
        .collect()
}

/// The entry-point Service that routes to `to` with `history`; `resource_version` (of the
/// Service read) makes the apply fail with 409 if anyone changed it since.
pub fn entry_point(
    system_namespace: &str,
    to: &Names,
    history: &[Promotion],
    resource_version: Option<&str>,
) -> Value {
    let start = history.len().saturating_sub(MAX_HISTORY);
    let history = &history[start..];
    let mut metadata = json!({
        "name": to.model,
        "namespace": system_namespace,
        "labels": BTreeMap::from([
            (keys::MANAGED_BY, MANAGER),
            (keys::PART_OF, MANAGER),
            (keys::MODEL, to.model.as_str()),
            ("app.kubernetes.io/component", "entry-point"),
        ]),
        "annotations": {
            HISTORY: serde_json::to_string(history).expect("promotions serialize"),
            PROMOTED: to.version,
        },
    });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ExternalName",
            "externalName": to.service_host(),
            "ports": [{ "name": "http", "port": PORT_INFERENCE, "protocol": "TCP" }],
        },
    })
}

/// Switches the entry point of `to.model` to `to` and records `entry`: one apply.
pub async fn switch(
    cluster: &Cluster,
    system_namespace: &str,
    to: &Names,
    current: Option<&Route>,
    entry: Promotion,
    force: bool,
) -> Result<(), DeployError> {
    let mut history = current.map(|r| r.history.clone()).unwrap_or_default();
    history.push(entry);
    let obj = entry_point(
        system_namespace,
        to,
        &history,
        current.and_then(|r| r.resource_version.as_deref()),
    );
    apply::apply_one(cluster, &obj, force).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(action: &str, v: &str) -> Promotion {
        Promotion {
            action: action.into(),
            version: v.into(),
            namespace: format!("wms-m-{v}"),
            image: String::new(),
            at: String::new(),
            by: String::new(),
        }
    }

    #[test]
    fn rollback_pops_like_undo() {
        let mut r = Route {
            history: vec![p("promote", "v1"), p("promote", "v2"), p("promote", "v3")],
            ..Route::default()
        };
        assert_eq!(r.promoted().as_deref(), Some("v3"));
        assert_eq!(r.previous().as_deref(), Some("v2"));
        r.history.push(p("rollback", "v2"));
        assert_eq!(r.promoted().as_deref(), Some("v2"));
        assert_eq!(r.previous().as_deref(), Some("v1"));
        r.history.push(p("rollback", "v1"));
        assert_eq!(r.stack(), ["v1"]);
        assert_eq!(r.previous(), None);
        r.history.push(p("promote", "v4"));
        assert_eq!(r.stack(), ["v1", "v4"]);
    }

    #[test]
    fn the_entry_point_points_at_the_version_service_and_carries_the_history() {
        let to = Names::new("wms-", "m", "v2");
        let o = entry_point("wms-system", &to, &[p("promote", "v2")], Some("42"));
        assert_eq!(o["spec"]["externalName"], "m.wms-m-v2.svc.cluster.local");
        assert_eq!(o["metadata"]["resourceVersion"], "42");
        let h: Vec<Promotion> =
            serde_json::from_str(o["metadata"]["annotations"][HISTORY].as_str().unwrap()).unwrap();
        assert_eq!(h, [p("promote", "v2")]);
        let long: Vec<Promotion> = (0..150).map(|i| p("promote", &format!("v{i}"))).collect();
        let o = entry_point("wms-system", &to, &long, None);
        let h: Vec<Promotion> =
            serde_json::from_str(o["metadata"]["annotations"][HISTORY].as_str().unwrap()).unwrap();
        assert_eq!(h.len(), MAX_HISTORY);
        assert_eq!(h.last().unwrap().version, "v149");
    }
}
