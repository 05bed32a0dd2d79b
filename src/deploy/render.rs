//! The Kubernetes objects of one model version, as a pure function of a [`DeploySpec`]: no
//! cluster, no clock, no environment. `wms deploy render` prints them, `wms deploy apply` applies
//! them in this order, and the Helm chart in `infra/helm/wms-model/` is generated from them
//! (`deploy::chart`), so the three never disagree.
//!
//! Stable entry points (the chart generator and the tests call these):
//! - [`render`]`(&DeploySpec) -> Result<Vec<serde_json::Value>, DeployError>`: checks the spec
//!   ([`DeploySpec::check`]) and returns the objects, in apply order: Namespace, ResourceQuota,
//!   LimitRange, NetworkPolicies, ServiceAccount, ConfigMap, Deployment, Service,
//!   HorizontalPodAutoscaler, PodDisruptionBudget, and a ServiceMonitor when
//!   [`DeploySpec::service_monitor`] is set.
//! - [`render_unchecked`]: the same objects without the checks (every spec field lands verbatim
//!   in the strings of the output, so placeholder values survive for templating); the quota is
//!   computed from the resources and falls back to the limits' text when they do not parse.
//! - [`to_yaml`]: the objects as one multi-document YAML stream (`---` between objects).
//!
//! This module must not talk to a cluster or read files: whatever it needs is in the spec.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::Digest as _;

use super::DeployError;
use super::names::{self, Names};

/// Label keys wms sets besides the `app.kubernetes.io/*` recommended labels.
pub mod keys {
    pub const MODEL: &str = "wms.io/model";
    pub const VERSION: &str = "wms.io/version";
    pub const GIT_SHA: &str = "wms.io/git-sha";
    /// The first 12 hex digits of the image's sha256 (a label value holds at most 63
    /// characters; the full reference is in [`IMAGE`]).
    pub const IMAGE_DIGEST: &str = "wms.io/image-digest";
    /// Annotation: the full image reference (`name@sha256:…`).
    pub const IMAGE: &str = "wms.io/image";
    /// Annotation: the model's metrics as one JSON object (keys sorted).
    pub const METRICS: &str = "wms.io/metrics";
    /// Pod template annotation: sha256 of config.properties, so a config change rolls the pods.
    pub const CONFIG_SHA256: &str = "wms.io/config-sha256";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
}

/// `app.kubernetes.io/managed-by` and `part-of`; also the server-side apply field manager.
pub const MANAGER: &str = "wms";
/// The container's name in the Deployment.
pub const CONTAINER: &str = "wms-serve";
/// The ServiceAccount and ConfigMap names in every version namespace.
pub const SERVICE_ACCOUNT: &str = "wms-serve";
pub const CONFIG_MAP: &str = "wms-serve-config";
/// The key of the ConfigMap that holds the server configuration.
pub const CONFIG_KEY: &str = "config.properties";
/// Where the ConfigMap is mounted; `wms-serve --config` reads the file there.
pub const CONFIG_DIR: &str = "/etc/wms";
/// Inference, management and metrics ports (TorchServe's; wms-serve's defaults).
pub const PORT_INFERENCE: i32 = 8080;
pub const PORT_MANAGEMENT: i32 = 8081;
pub const PORT_METRICS: i32 = 8082;
/// The probe path (TorchServe's health endpoint).
pub const PROBE_PATH: &str = "/ping";
/// The non-root user of the image (distroless' `nonroot`; `oci::USER`).
pub const RUN_AS: i64 = 65532;

/// CPU and memory of one pod, as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    pub requests_cpu: String,
    pub requests_memory: String,
    pub limits_cpu: String,
    pub limits_memory: String,
}

impl Default for Resources {
    /// The seed's Helm values: requests 500m / 512Mi, limits 2 CPU / 2Gi.
    fn default() -> Self {
        Resources {
            requests_cpu: "500m".into(),
            requests_memory: "512Mi".into(),
            limits_cpu: "2".into(),
            limits_memory: "2Gi".into(),
        }
    }
}

/// Everything the objects of one version are made of (stored as JSON on the Namespace by
/// `apply`, so scale and config re-render from it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeploySpec {
    /// The model's name (`--model`): a DNS-1123 label; names the Deployment and Service.
    pub model: String,
    /// The version (`--version`): a DNS-1123 label.
    pub version: String,
    /// `name@sha256:<64 hex>` (or `name:tag` with `allow_tag`).
    pub image: String,
    /// Accept a tag-only image reference (`--allow-tag`).
    pub allow_tag: bool,
    /// Replicas of the Deployment and the autoscaler's minimum.
    pub replicas: i32,
    /// The autoscaler's maximum (at least `replicas`).
    pub max_replicas: i32,
    pub resources: Resources,
    /// Version namespaces are `<prefix><model>-<version>`.
    pub namespace_prefix: String,
    /// Where the stable entry point, the promotion history and the Lease live; its pods (the
    /// router) may reach the inference and management ports.
    pub system_namespace: String,
    /// Namespace of Prometheus; its pods may reach the metrics port.
    pub monitoring_namespace: String,
    /// More namespaces whose pods may reach the inference port (an ingress controller's).
    pub allow_from: Vec<String>,
    /// Git commit the model was trained from.
    pub git_sha: Option<String>,
    /// The model's metrics (from the ONNX metadata), e.g. `test_iou` → `0.91`.
    pub metrics: BTreeMap<String, Value>,
    /// wms-serve's `config.properties`, mounted from the ConfigMap.
    pub config_properties: String,
    /// Render a ServiceMonitor (set when the cluster has the `monitoring.coreos.com` CRD).
    pub service_monitor: bool,
}

impl DeploySpec {
    /// A spec with the defaults of `wms deploy apply` for everything but the three required
    /// values.
    pub fn new(
        model: impl Into<String>,
        version: impl Into<String>,
        image: impl Into<String>,
    ) -> Self {
        DeploySpec {
            model: model.into(),
            version: version.into(),
            image: image.into(),
            allow_tag: false,
            replicas: 1,
            max_replicas: 3,
            resources: Resources::default(),
            namespace_prefix: names::DEFAULT_PREFIX.into(),
            system_namespace: names::DEFAULT_SYSTEM_NAMESPACE.into(),
            monitoring_namespace: names::DEFAULT_MONITORING_NAMESPACE.into(),
            allow_from: Vec::new(),
            git_sha: None,
            metrics: BTreeMap::new(),
            config_properties: crate::oci::DEFAULT_CONFIG.into(),
            service_monitor: false,
        }
    }

    /// The names this spec deploys under.
    pub fn names(&self) -> Names {
        Names::new(&self.namespace_prefix, &self.model, &self.version)
    }

    /// Every check `render` makes, each failing with the flag it comes from.
    pub fn check(&self) -> Result<(), DeployError> {
        names::check_label("--model", &self.model)?;
        names::check_label("--version", &self.version)?;
        names::check_prefix("--namespace-prefix", &self.namespace_prefix)?;
        names::check_label("--system-namespace", &self.system_namespace)?;
        names::check_label("--monitoring-namespace", &self.monitoring_namespace)?;
        for ns in &self.allow_from {
            names::check_label("--allow-from", ns)?;
        }
        names::check_label("--version", &self.names().namespace).map_err(|_| {
            DeployError::NotDnsSafe {
                flag: "--version",
                value: self.version.clone(),
                why: format!(
                    "the namespace {} would be longer than 63 characters",
                    self.names().namespace
                ),
            }
        })?;
        names::ImageRef::parse(&self.image, self.allow_tag)?;
        if self.replicas < 0 {
            return Err(DeployError::Flag {
                flag: "--replicas",
                value: self.replicas.to_string(),
                why: "must be 0 or more".into(),
            });
        }
        if self.max_replicas < self.replicas.max(1) {
            return Err(DeployError::Flag {
                flag: "--max-replicas",
                value: self.max_replicas.to_string(),
                why: format!("must be at least --replicas ({}) and 1", self.replicas),
            });
        }
        let r = &self.resources;
        let req_cpu = quantity::cpu_millis("--cpu-request", &r.requests_cpu)?;
        let lim_cpu = quantity::cpu_millis("--cpu-limit", &r.limits_cpu)?;
        let req_mem = quantity::bytes("--memory-request", &r.requests_memory)?;
        let lim_mem = quantity::bytes("--memory-limit", &r.limits_memory)?;
        if req_cpu > lim_cpu {
            return Err(DeployError::Flag {
                flag: "--cpu-request",
                value: r.requests_cpu.clone(),
                why: format!("exceeds --cpu-limit {}", r.limits_cpu),
            });
        }
        if req_mem > lim_mem {
            return Err(DeployError::Flag {
                flag: "--memory-request",
                value: r.requests_memory.clone(),
                why: format!("exceeds --memory-limit {}", r.limits_memory),
            });
        }
        if let Some(sha) = &self.git_sha
            && !(sha.len() <= 63 && !sha.is_empty() && sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(DeployError::Flag {
                flag: "--git-sha",
                value: sha.clone(),
                why: "must be 1-63 hex digits".into(),
            });
        }
        Ok(())
    }
}

/// The objects of one version, checked first; see the module documentation.
pub fn render(spec: &DeploySpec) -> Result<Vec<Value>, DeployError> {
    spec.check()?;
    Ok(render_unchecked(spec))
}

/// sha256 (hex) of a config.properties text: the pod template annotation that rolls the pods.
pub fn config_checksum(config_properties: &str) -> String {
    hex::encode(sha2::Sha256::digest(config_properties.as_bytes()))
}

/// The labels every object of a version carries.
pub fn common_labels(spec: &DeploySpec) -> BTreeMap<String, String> {
    let mut l = selector_labels(spec);
    l.insert("app.kubernetes.io/version".into(), spec.version.clone());
    l.insert("app.kubernetes.io/component".into(), "inference".into());
    l.insert(keys::PART_OF.into(), MANAGER.into());
    l.insert(keys::MANAGED_BY.into(), MANAGER.into());
    l.insert(keys::MODEL.into(), spec.model.clone());
    l.insert(keys::VERSION.into(), spec.version.clone());
    l
}

/// The labels the Deployment selects its pods by (never changed after the first apply: a
/// Deployment's selector is immutable).
pub fn selector_labels(spec: &DeploySpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::NAME.into(), spec.model.clone()),
        (keys::INSTANCE.into(), spec.names().instance),
    ])
}

/// As [`render`], without the checks.
pub fn render_unchecked(spec: &DeploySpec) -> Vec<Value> {
    let n = spec.names();
    let ns = n.namespace.as_str();
    let labels = common_labels(spec);
    let selector = selector_labels(spec);
    let meta = |name: &str| {
        json!({
            "name": name,
            "namespace": ns,
            "labels": labels,
        })
    };

    let mut ns_labels = labels.clone();
    // The pod security standard the Deployment meets; the API server refuses pods that don't.
    ns_labels.insert(
        "pod-security.kubernetes.io/enforce".into(),
        "restricted".into(),
    );
    if let Some(sha) = &spec.git_sha {
        ns_labels.insert(keys::GIT_SHA.into(), sha.clone());
    }
    let digest_hex = names::ImageRef::parse(&spec.image, true)
        .ok()
        .and_then(|r| r.digest_hex)
        .unwrap_or_default();
    if !digest_hex.is_empty() {
        ns_labels.insert(
            keys::IMAGE_DIGEST.into(),
            digest_hex.chars().take(12).collect(),
        );
    }
    let mut ns_annotations = BTreeMap::from([(keys::IMAGE.to_string(), spec.image.clone())]);
    ns_annotations.insert(
        keys::METRICS.into(),
        serde_json::to_string(&spec.metrics).expect("a map of JSON values serializes"),
    );
    if let Some(sha) = &spec.git_sha {
        ns_annotations.insert(keys::GIT_SHA.into(), sha.clone());
    }

    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": ns, "labels": ns_labels, "annotations": ns_annotations },
    });

    let r = &spec.resources;
    // Room for every replica the autoscaler may run plus the one extra pod of a rolling update.
    let pods = i64::from(spec.max_replicas.max(1)) + 1;
    let scaled_cpu = |flag, q: &str| {
        quantity::cpu_millis(flag, q)
            .map(|m| format!("{}m", m * pods))
            .unwrap_or_else(|_| q.to_string())
    };
    let scaled_mem = |flag, q: &str| {
        quantity::bytes(flag, q)
            .map(|b| quantity::format_bytes(b * pods as u128))
            .unwrap_or_else(|_| q.to_string())
    };
    let quota = json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": meta("wms-quota"),
        "spec": { "hard": {
            "pods": pods.to_string(),
            "requests.cpu": scaled_cpu("--cpu-request", &r.requests_cpu),
            "requests.memory": scaled_mem("--memory-request", &r.requests_memory),
            "limits.cpu": scaled_cpu("--cpu-limit", &r.limits_cpu),
            "limits.memory": scaled_mem("--memory-limit", &r.limits_memory),
            "services.loadbalancers": "0",
            "services.nodeports": "0",
        }},
    });
    let limits = json!({ "cpu": r.limits_cpu, "memory": r.limits_memory });
    let requests = json!({ "cpu": r.requests_cpu, "memory": r.requests_memory });
    let limit_range = json!({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": meta("wms-limits"),
        "spec": { "limits": [{
            "type": "Container",
            "default": limits,
            "defaultRequest": requests,
            "max": limits,
        }]},
    });

    let from_namespace = |name: &str| json!({ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": name } } });
    let deny = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta("default-deny"),
        // wms-serve opens no connections (the model is in the image), so egress is denied too.
        "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"] },
    });
    // Ingress to the model's pods from `namespaces` on `ports` only.
    let allow = |name: &str, namespaces: Vec<serde_json::Value>, ports: &[i32]| {
        let ports: Vec<_> = ports
            .iter()
            .map(|p| json!({ "protocol": "TCP", "port": p }))
            .collect();
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(name),
            "spec": {
                "podSelector": { "matchLabels": selector },
                "policyTypes": ["Ingress"],
                "ingress": [{ "from": namespaces, "ports": ports }],
            },
        })
    };
    let mut routers = vec![from_namespace(&spec.system_namespace)];
    routers.extend(spec.allow_from.iter().map(|ns| from_namespace(ns)));
    let allow_routing = allow(
        "allow-from-routing",
        routers,
        &[PORT_INFERENCE, PORT_MANAGEMENT],
    );
    let allow_monitoring = allow(
        "allow-from-monitoring",
        vec![from_namespace(&spec.monitoring_namespace)],
        &[PORT_METRICS],
    );

    let service_account = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(SERVICE_ACCOUNT),
        "automountServiceAccountToken": false,
    });
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(CONFIG_MAP),
        "data": { CONFIG_KEY: spec.config_properties },
    });

    let mut pod_labels = labels.clone();
    pod_labels.extend(selector.clone());
    let threads = quantity::cpu_millis("--cpu-limit", &r.limits_cpu)
        .map(|m| (m / 1000).max(1))
        .unwrap_or(1);
    let probe = |period: i32, failures: i32| {
        json!({
            "httpGet": { "path": PROBE_PATH, "port": "http" },
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        })
    };
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(&spec.model),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 300,
            "selector": { "matchLabels": selector },
            // The old pods keep serving until a new one is Ready.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 },
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": PORT_METRICS.to_string(),
                        "prometheus.io/path": "/metrics",
                        keys::CONFIG_SHA256: config_checksum(&spec.config_properties),
                    },
                },
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": CONTAINER,
                        "image": spec.image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": [
                            crate::oci::paths::SERVE,
                            "--config",
                            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
                        ],
                        "env": [
                            // Prometheus scrapes the pod IP; the image's default is loopback.
                            {
                                "name": crate::env_vars::WMS_SERVE_METRICS_ADDRESS,
                                "value": format!("http://0.0.0.0:{PORT_METRICS}"),
                            },
                            // ONNX Runtime would start one thread per node core, far past the
                            // CPU limit, and be throttled.
                            {
                                "name": crate::env_vars::WMS_SERVE_THREADS,
                                "value": threads.to_string(),
                            },
                        ],
                        "ports": [
                            { "name": "http", "containerPort": PORT_INFERENCE, "protocol": "TCP" },
                            { "name": "management", "containerPort": PORT_MANAGEMENT, "protocol": "TCP" },
                            { "name": "metrics", "containerPort": PORT_METRICS, "protocol": "TCP" },
                        ],
                        "resources": { "requests": requests, "limits": limits },
                        "startupProbe": probe(2, 60),
                        "readinessProbe": probe(5, 3),
                        "livenessProbe": probe(10, 3),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "runAsUser": RUN_AS,
                            "capabilities": { "drop": ["ALL"] },
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "volumeMounts": [
                            { "name": "config", "mountPath": CONFIG_DIR, "readOnly": true },
                            { "name": "tmp", "mountPath": "/tmp" },
                        ],
                    }],
                    "volumes": [
                        { "name": "config", "configMap": { "name": CONFIG_MAP } },
                        // The root filesystem is read-only; the image's /tmp is the one place
                        // meant for writing.
                        { "name": "tmp", "emptyDir": { "sizeLimit": "64Mi" } },
                    ],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(&spec.model),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                { "name": "http", "port": PORT_INFERENCE, "targetPort": "http", "protocol": "TCP" },
                { "name": "management", "port": PORT_MANAGEMENT, "targetPort": "management", "protocol": "TCP" },
                { "name": "metrics", "port": PORT_METRICS, "targetPort": "metrics", "protocol": "TCP" },
            ],
        },
    });
    let hpa = json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(&spec.model),
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": spec.model },
            "minReplicas": spec.replicas.max(1),
            "maxReplicas": spec.max_replicas.max(1),
            "metrics": [{
                "type": "Resource",
                "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 70 } },
            }],
        },
    });
    let pdb = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(&spec.model),
        // maxUnavailable rather than minAvailable: a single replica must not block node drains.
        "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector } },
    });
    let mut objects = vec![
        namespace,
        quota,
        limit_range,
        deny,
        allow_routing,
        allow_monitoring,
        service_account,
        config_map,
        deployment,
        service,
        hpa,
        pdb,
    ];
    if spec.service_monitor {
        objects.push(json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": meta(&spec.model),
            "spec": {
                "selector": { "matchLabels": selector },
                "endpoints": [{ "port": "metrics", "path": "/metrics", "interval": "30s" }],
            },
        }));
    }
    objects
}

/// The objects as one YAML stream, `---` before each document.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o).expect("JSON values serialize as YAML"));
    }
    out
}

/// Kubernetes quantities, as far as the quota needs them.
pub mod quantity {
    use super::DeployError;

    fn bad(flag: &'static str, value: &str, why: &str) -> DeployError {
        DeployError::Flag {
            flag,
            value: value.to_string(),
            why: why.to_string(),
        }
    }

    /// `500m`, `2`, `1.5` → millicores.
    pub fn cpu_millis(flag: &'static str, q: &str) -> Result<i64, DeployError> {
        let why = "not a CPU quantity (e.g. 500m, 2, 1.5)";
        if let Some(m) = q.strip_suffix('m') {
            return m
                .parse::<i64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad(flag, q, why));
        }
        let (int, frac) = q.split_once('.').unwrap_or((q, ""));
        if int.is_empty() && frac.is_empty()
            || frac.len() > 3
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(bad(flag, q, why));
        }
        let whole: i64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad(flag, q, why))?
        };
        let frac_m: i64 = format!("{frac:0<3}")
            .parse()
            .map_err(|_| bad(flag, q, why))?;
        let m = whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(frac_m))
            .filter(|v| *v > 0)
            .ok_or_else(|| bad(flag, q, why))?;
        Ok(m)
    }

    /// `512Mi`, `2Gi`, `1G`, `1000000` → bytes.
    pub fn bytes(flag: &'static str, q: &str) -> Result<u128, DeployError> {
        let why = "not a memory quantity (e.g. 512Mi, 2Gi)";
        const UNITS: [(&str, u128); 10] = [
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("Ti", 1 << 40),
            ("Pi", 1 << 50),
            ("k", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
            ("T", 1_000_000_000_000),
            ("P", 1_000_000_000_000_000),
        ];
        let (digits, unit) = UNITS
            .iter()
            .find_map(|(s, u)| q.strip_suffix(s).map(|d| (d, *u)))
            .unwrap_or((q, 1));
        if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(flag, q, why));
        }
        let n: u128 = digits.parse().map_err(|_| bad(flag, q, why))?;
        n.checked_mul(unit)
            .filter(|b| *b > 0)
            .ok_or_else(|| bad(flag, q, why))
    }

    /// Bytes in the largest binary unit that divides them exactly.
    pub fn format_bytes(b: u128) -> String {
        for (s, u) in [
            ("Ti", 1u128 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if b.is_multiple_of(u) {
                return format!("{}{s}", b / u);
            }
        }
        b.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn spec() -> DeploySpec {
        let mut s = DeploySpec::new(
            "water-meters",
            "v3",
            format!("registry.example/wms/meters@{DIGEST}"),
        );
        s.git_sha = Some("a".repeat(40));
        s.metrics.insert("test_iou".into(), json!(0.91));
        s
    }

    fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objs.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    #[test]
    fn objects_come_in_apply_order_and_all_in_the_version_namespace() {
        let objs = render(&spec()).unwrap();
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ResourceQuota",
                "LimitRange",
                "NetworkPolicy",
                "NetworkPolicy",
                "NetworkPolicy",
                "ServiceAccount",
                "ConfigMap",
                "Deployment",
                "Service",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget",
            ]
        );
        for o in &objs[1..] {
            assert_eq!(o["metadata"]["namespace"], "wms-water-meters-v3", "{o}");
            assert_eq!(o["metadata"]["labels"][keys::MANAGED_BY], "wms");
        }
        let mut with_monitor = spec();
        with_monitor.service_monitor = true;
        let objs = render(&with_monitor).unwrap();
        assert_eq!(objs.last().unwrap()["kind"], "ServiceMonitor");
    }

    #[test]
    fn the_pod_runs_locked_down() {
        let objs = render(&spec()).unwrap();
        let d = find(&objs, "Deployment", "water-meters");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(pod["automountServiceAccountToken"], false);
        let c = &pod["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["httpGet"]["path"], "/ping", "{probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
        }
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "500m", "memory": "512Mi"})
        );
        assert_eq!(
            c["resources"]["limits"],
            json!({"cpu": "2", "memory": "2Gi"})
        );
        assert_eq!(c["image"], format!("registry.example/wms/meters@{DIGEST}"));
        let sa = find(&objs, "ServiceAccount", SERVICE_ACCOUNT);
        assert_eq!(sa["automountServiceAccountToken"], false);
        let ann = &d["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true");
        assert_eq!(ann["prometheus.io/port"], "8082");
    }

    #[test]
    fn a_config_change_changes_only_the_checksum_of_the_pod_template() {
        let a = render(&spec()).unwrap();
        let mut s = spec();
        s.config_properties.push_str("\nbatch_size=8\n");
        let b = render(&s).unwrap();
        let tmpl = |o: &[Value]| find(o, "Deployment", "water-meters")["spec"]["template"].clone();
        let (ta, tb) = (tmpl(&a), tmpl(&b));
        assert_ne!(ta, tb);
        let sum = |t: &Value| t["metadata"]["annotations"][keys::CONFIG_SHA256].clone();
        assert_eq!(sum(&tb), json!(config_checksum(&s.config_properties)));
        let mut tb2 = tb.clone();
        tb2["metadata"]["annotations"][keys::CONFIG_SHA256] = sum(&ta);
        assert_eq!(ta, tb2);
    }

    #[test]
    fn namespace_carries_version_sha_digest_and_metrics() {
        let objs = render(&spec()).unwrap();
        let ns = &objs[0];
        assert_eq!(ns["metadata"]["name"], "wms-water-meters-v3");
        let l = &ns["metadata"]["labels"];
        assert_eq!(l["app.kubernetes.io/version"], "v3");
        assert_eq!(l[keys::GIT_SHA], "a".repeat(40));
        assert_eq!(l[keys::IMAGE_DIGEST], "0123456789ab");
        let a = &ns["metadata"]["annotations"];
        assert_eq!(a[keys::METRICS], r#"{"test_iou":0.91}"#);
        assert_eq!(a[keys::IMAGE], spec().image);
    }

    #[test]
    fn quota_scales_with_the_autoscaler_maximum() {
        let objs = render(&spec()).unwrap();
        let hard = &find(&objs, "ResourceQuota", "wms-quota")["spec"]["hard"];
        // max_replicas 3 + one surge pod.
        assert_eq!(hard["pods"], "4");
        assert_eq!(hard["requests.cpu"], "2000m");
        assert_eq!(hard["limits.memory"], "8Gi");
        assert_eq!(hard["requests.memory"], "2Gi");
    }

    #[test]
    fn names_that_are_not_dns_safe_are_refused_naming_the_flag() {
        for (version, needle) in [
            ("V3", "--version"),
            ("v1.2", "--version"),
            ("-v3", "--version"),
            ("", "--version"),
            ("v3\n::error::x", "--version"),
        ] {
            let mut s = spec();
            s.version = version.into();
            let e = render(&s).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{needle} ")), "{e}");
            assert!(e.contains("hint:"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let mut s = spec();
        s.model = "Water_Meters".into();
        assert!(render(&s).unwrap_err().to_string().starts_with("--model "));
        let mut s = spec();
        s.version = "v".repeat(50);
        let e = render(&s).unwrap_err().to_string();
        assert!(e.contains("longer than 63"), "{e}");
    }

    #[test]
    fn tag_only_images_need_allow_tag() {
        let mut s = spec();
        s.image = "registry.example/wms/meters:v3".into();
        let e = render(&s).unwrap_err().to_string();
        assert!(e.contains("--allow-tag"), "{e}");
        assert!(e.starts_with("--image "), "{e}");
        s.allow_tag = true;
        let objs = render(&s).unwrap();
        assert!(
            objs[0]["metadata"]["labels"]
                .get(keys::IMAGE_DIGEST)
                .is_none()
        );
        s.image = "registry.example/wms/meters@sha256:abc".into();
        assert!(render(&s).unwrap_err().to_string().contains("64 hex"));
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity::cpu_millis("f", "500m").unwrap(), 500);
        assert_eq!(quantity::cpu_millis("f", "2").unwrap(), 2000);
        assert_eq!(quantity::cpu_millis("f", "1.5").unwrap(), 1500);
        assert!(quantity::cpu_millis("f", "abc").is_err());
        assert!(quantity::cpu_millis("f", "0").is_err());
        assert_eq!(quantity::bytes("f", "512Mi").unwrap(), 512 << 20);
        assert_eq!(quantity::bytes("f", "1G").unwrap(), 1_000_000_000);
        assert!(quantity::bytes("f", "12XB").is_err());
        assert_eq!(quantity::format_bytes(3 << 30), "3Gi");
        let mut s = spec();
        s.resources.requests_cpu = "3".into();
        assert!(
            render(&s)
                .unwrap_err()
                .to_string()
                .contains("exceeds --cpu-limit")
        );
    }

    #[test]
    fn yaml_stream_has_one_document_per_object() {
        let objs = render(&spec()).unwrap();
        let y = to_yaml(&objs);
        assert_eq!(y.matches("---\n").count(), objs.len());
        let back: Vec<Value> = serde_yaml::Deserializer::from_str(&y)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(back, objs);
    }
}
