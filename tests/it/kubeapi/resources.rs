//! The resource table of the stand-in API server (what `wms deploy` touches, nothing more) and
//! the discovery documents built from it: legacy (`APIVersions`, `APIGroupList`,
//! `APIResourceList`) and aggregated (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`).

use serde_json::{Value, json};

/// One REST resource: a plural name in one group/version.
#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    /// Has a `status` subresource: writes to the main resource keep the old status, and
    /// `.status` is not a field that managers own there.
    pub status: bool,
    /// `metadata.generation` is set and bumped on spec changes.
    pub generation: bool,
    /// Has a `scale` subresource (`autoscaling/v1` `Scale`).
    pub scale: bool,
    /// Served only after `KubeApi::enable_servicemonitor_crd`.
    pub crd: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, `configmaps`: how the API server names the resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// One table row (the table reads better as rows than as struct literals).
#[allow(clippy::too_many_arguments)]
const fn r(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    generation: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short,
        status,
        generation,
        scale: false,
        crd: false,
    }
}

/// Every resource the stand-in serves. Indexes into this table are the store's resource ids.
pub static RESOURCES: &[Resource] = &[
    r(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        true,
        false,
    ),
    r(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        false,
        false,
    ),
    r(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        &[],
        false,
        false,
    ),
    r(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        true,
        false,
    ),
    r(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        false,
    ),
    r("", "v1", "pods", "pod", "Pod", true, &["po"], true, false),
    r(
        "",
        "v1",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        &["quota"],
        true,
        false,
    ),
    r(
        "",
        "v1",
        "limitranges",
        "limitrange",
        "LimitRange",
        true,
        &["limits"],
        false,
        false,
    ),
    r(
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        false,
        false,
    ),
    r(
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        false,
        false,
    ),
    Resource {
        scale: true,
        ..r(
            "apps",
            "v1",
            "deployments",
            "deployment",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
        )
    },
    Resource {
        scale: true,
        ..r(
            "apps",
            "v1",
            "replicasets",
            "replicaset",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            true,
        )
    },
    r(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        &["netpol"],
        false,
        true,
    ),
    r(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        true,
        false,
    ),
    r(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        true,
        true,
    ),
    r(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        false,
        false,
    ),
    r(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        &[],
        false,
        false,
    ),
    r(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "httproute",
        "HTTPRoute",
        true,
        &[],
        true,
        true,
    ),
    Resource {
        crd: true,
        ..r(
            "monitoring.coreos.com",
            "v1",
            "servicemonitors",
            "servicemonitor",
            "ServiceMonitor",
            true,
            &["smon"],
            false,
            true,
        )
    },
];

/// The id of a resource by group and plural (every group here has one version).
pub fn id(group: &str, plural: &str) -> usize {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.plural == plural)
        .unwrap_or_else(|| panic!("no resource {plural}.{group} in the stand-in's table"))
}

/// The resource served at group/version/plural, if it is served now.
pub fn find(group: &str, version: &str, plural: &str, crd_enabled: bool) -> Option<usize> {
    RESOURCES.iter().position(|r| {
        r.group == group && r.version == version && r.plural == plural && (!r.crd || crd_enabled)
    })
}

fn served(crd_enabled: bool) -> impl Iterator<Item = &'static Resource> {
    RESOURCES.iter().filter(move |r| !r.crd || crd_enabled)
}

/// Group names in discovery order (core first, then as in the table).
fn groups(crd_enabled: bool) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in served(crd_enabled) {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

pub fn group_served(group: &str, version: &str, crd_enabled: bool) -> bool {
    served(crd_enabled).any(|r| r.group == group && r.version == version)
}

fn verbs(r: &Resource) -> Vec<&'static str> {
    let mut v = vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    if r.plural == "namespaces" {
        v.retain(|x| *x != "deletecollection");
    }
    v
}

const SUB_VERBS: &[&str] = &["get", "patch", "update"];

/// Subresources as (name, group, version, kind, verbs).
fn subresources(
    r: &Resource,
) -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<&'static str>,
)> {
    let mut out = Vec::new();
    if r.status {
        out.push(("status", r.group, r.version, r.kind, SUB_VERBS.to_vec()));
    }
    if r.scale {
        out.push(("scale", "autoscaling", "v1", "Scale", SUB_VERBS.to_vec()));
    }
    match r.plural {
        "pods" => out.push(("log", "", "v1", "Pod", vec!["get"])),
        "services" => out.push((
            "proxy",
            "",
            "v1",
            "ServiceProxyOptions",
            vec!["create", "delete", "get", "patch", "update"],
        )),
        "namespaces" => out.push(("finalize", "", "v1", "Namespace", vec!["update"])),
        _ => {}
    }
    out
}

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.6",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

pub fn api_versions(host: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]
    })
}

fn api_group(group: &str, crd_enabled: bool) -> Value {
    let versions: Vec<Value> = {
        let mut vs: Vec<&str> = Vec::new();
        for r in served(crd_enabled).filter(|r| r.group == group) {
            if !vs.contains(&r.version) {
                vs.push(r.version);
            }
        }
        vs.iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect()
    };
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

pub fn api_group_doc(group: &str, crd_enabled: bool) -> Option<Value> {
    if !groups(crd_enabled).contains(&group) {
        return None;
    }
    let mut g = api_group(group, crd_enabled);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

pub fn api_group_list(crd_enabled: bool) -> Value {
    let groups: Vec<Value> = groups(crd_enabled)
        .into_iter()
        .map(|g| api_group(g, crd_enabled))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_resource_list(group: &str, version: &str, crd_enabled: bool) -> Value {
    let mut resources = Vec::new();
    for r in served(crd_enabled).filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": verbs(r),
        });
        if !r.short.is_empty() {
            entry["shortNames"] = json!(r.short);
        }
        if matches!(
            r.plural,
            "deployments" | "replicasets" | "pods" | "services"
        ) {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        for (sub, g, v, kind, verbs) in subresources(r) {
            let mut e = json!({
                "name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": kind, "verbs": verbs,
            });
            if g != r.group || v != r.version {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            resources.push(e);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2`): `core` is the document for `/api`, else
/// for `/apis`.
pub fn aggregated(core: bool, crd_enabled: bool) -> Value {
    let group_names: Vec<&str> = if core { vec![""] } else { groups(crd_enabled) };
    let items: Vec<Value> = group_names
        .into_iter()
        .map(|group| {
            let mut versions: Vec<&str> = Vec::new();
            for r in served(crd_enabled).filter(|r| r.group == group) {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|version| {
                    let resources: Vec<Value> = served(crd_enabled)
                        .filter(|r| r.group == group && r.version == version)
                        .map(|r| {
                            let subs: Vec<Value> = subresources(r)
                                .into_iter()
                                .map(|(sub, g, v, kind, verbs)| {
                                    json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
                                })
                                .collect();
                            let mut e = json!({
                                "resource": r.plural,
                                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular,
                                "verbs": verbs(r),
                            });
                            if !r.short.is_empty() {
                                e["shortNames"] = json!(r.short);
                            }
                            if !subs.is_empty() {
                                e["subresources"] = json!(subs);
                            }
                            e
                        })
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut item = json!({"metadata": {"creationTimestamp": null}, "versions": versions});
            if !group.is_empty() {
                item["metadata"]["name"] = json!(group);
            }
            item
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
