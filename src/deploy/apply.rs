//! Server-side apply of rendered objects with field manager `wms`: one `PATCH` with
//! `application/apply-patch+yaml` per object, in the order given (the Namespace first). A 409 is
//! a conflict with another field manager; its message (the API server's, naming the fields and
//! the other manager) becomes [`DeployError::Conflict`] unless `force` takes the fields over.
//!
//! Kinds map to resources through a fixed table of what `render` and `route` produce (no
//! discovery round trips); an object of another kind is a bug, reported as such. This module must
//! not decide what to apply.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::DeployError;
use super::cluster::{Cluster, status_code};
use super::render::MANAGER;

/// The resources `wms deploy` writes: (apiVersion, kind, plural, namespaced).
const RESOURCES: &[(&str, &str, &str, bool)] = &[
    ("v1", "Namespace", "namespaces", false),
    ("v1", "ResourceQuota", "resourcequotas", true),
    ("v1", "LimitRange", "limitranges", true),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Service", "services", true),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    ("apps/v1", "Deployment", "deployments", true),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        "servicemonitors",
        true,
    ),
    ("coordination.k8s.io/v1", "Lease", "leases", true),
];

/// The API resource of `apiVersion`/`kind`, and whether it is namespaced.
pub fn resource_of(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let &(_, _, plural, namespaced) = RESOURCES
        .iter()
        .find(|(v, k, _, _)| *v == api_version && *k == kind)?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

/// `deployments.apps` / `services`: how RBAC rules and 403 messages name a resource.
pub fn rbac_name(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

/// `Deployment wms-m-v3/m`: how messages name one object.
pub fn describe(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or("object");
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Applies one object; returns the object as the server holds it afterwards.
pub async fn apply_one(
    cluster: &Cluster,
    obj: &Value,
    force: bool,
) -> Result<DynamicObject, DeployError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let Some((ar, namespaced)) = resource_of(api_version, kind) else {
        return Err(DeployError::Unexpected {
            what: "an object to apply",
            namespace: String::new(),
            name: name.to_string(),
            why: format!("wms has no resource for {api_version} {kind}"),
        });
    };
    let namespace = obj["metadata"]["namespace"].as_str();
    let api: Api<DynamicObject> = match (namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
        _ => Api::all_with(cluster.client.clone(), &ar),
    };
    let mut params = PatchParams::apply(MANAGER);
    if force {
        params = params.force();
    }
    api.patch(name, &params, &Patch::Apply(obj))
        .await
        .map_err(|err| {
            if status_code(&err) == Some(409) {
                let message = match &err {
                    kube::Error::Api(s) => s.message.clone(),
                    _ => String::new(),
                };
                return DeployError::Conflict {
                    resource: describe(obj),
                    message,
                };
            }
            let where_ = namespace
                .map(|ns| format!(" in namespace {ns}"))
                .unwrap_or_default();
            cluster.error("patch", &format!("{}{where_}", rbac_name(&ar)), err)
        })
}

/// Applies the objects in order, stopping at the first failure.
pub async fn apply_all(
    cluster: &Cluster,
    objects: &[Value],
    force: bool,
) -> Result<Vec<DynamicObject>, DeployError> {
    let mut out = Vec::with_capacity(objects.len());
    for obj in objects {
        tracing::debug!(object = %describe(obj), "server-side apply");
        out.push(apply_one(cluster, obj, force).await?);
    }
    Ok(out)
}

/// Whether the cluster serves `monitoring.coreos.com/v1` ServiceMonitors (the Prometheus
/// Operator's CRD is installed).
pub async fn has_service_monitor_crd(cluster: &Cluster) -> Result<bool, DeployError> {
    match cluster
        .client
        .list_api_group_resources("monitoring.coreos.com/v1")
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "servicemonitors")),
        Err(err) if status_code(&err) == Some(404) => Ok(false),
        Err(err) => Err(cluster.error("get", "the API group monitoring.coreos.com/v1", err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rendered_kind_has_a_resource() {
        let mut spec =
            super::super::DeploySpec::new("m", "v1", format!("r/m@sha256:{}", "0".repeat(64)));
        spec.service_monitor = true;
        for o in super::super::render::render(&spec).unwrap() {
            let (ar, namespaced) = resource_of(
                o["apiVersion"].as_str().unwrap(),
                o["kind"].as_str().unwrap(),
            )
            .unwrap_or_else(|| panic!("{}", describe(&o)));
            assert_eq!(
                namespaced,
                o["metadata"]["namespace"].is_string(),
                "{}",
                describe(&o)
            );
            assert!(!ar.plural.is_empty());
        }
        let (ar, _) = resource_of("apps/v1", "Deployment").unwrap();
        assert_eq!(rbac_name(&ar), "deployments.apps");
    }
}
