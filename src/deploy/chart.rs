//! The Helm chart `infra/helm/wms-model/`, generated from [`render`](super::render) so that
//! `helm install` and `wms deploy apply` create the same objects. The templates only substitute
//! values (`{{ .Values.x }}`, `{{ .Values.x | quote }}`); the one piece of Helm logic is the
//! `if` around the ServiceMonitor. Everything `render` computes from the flags (the quota, the
//! config checksum, the digest label, the thread count, the metrics JSON, the autoscaler bounds)
//! is a value of its own in `values.yaml`, read off `render`'s objects, so no formula exists twice.
//!
//! How the templates are found: `render_unchecked` of a spec whose string fields are unique
//! markers shows where each flag lands (verbatim, possibly inside a longer string such as the
//! namespace); the computed values are addressed by JSON pointer. Two probe specs that differ in
//! every field then show which leaves depend on the spec at all; one that no value covers, or a
//! spec field that changes the objects' shape, stops the generator instead of being frozen into
//! the chart as a constant.
//!
//! This module must not read or write files except in [`write`], and must not know the objects
//! beyond the pointers below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::render::{self, DeploySpec};

/// The chart's name (`Chart.yaml`) and its directory under `infra/helm/`.
pub const CHART_NAME: &str = "wms-model";
/// The ServiceMonitor template is wrapped in `if` on this value.
pub const SERVICE_MONITOR_VALUE: &str = "serviceMonitor.enabled";

/// Errors of the generator: a change to `render` the chart cannot express.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error(
        "{kind} {pointer} depends on the deploy flags but no chart value covers it; hint: add a value for it in src/deploy/chart.rs (VALUES)"
    )]
    Uncovered { kind: String, pointer: String },
    #[error(
        "the objects' shape depends on the deploy flags at {kind} {pointer} ({what}); hint: a substitution-only chart cannot express that: render the same shape for every spec or leave the flag out of the chart"
    )]
    Shape {
        kind: String,
        pointer: String,
        what: String,
    },
    #[error(
        "chart value {value} points at {kind} {pointer}, which render does not produce; hint: update the pointer in src/deploy/chart.rs (VALUES)"
    )]
    Pointer {
        value: &'static str,
        kind: &'static str,
        pointer: &'static str,
    },
    #[error(
        "{kind} {pointer} holds `{{{{`, which Helm would read as a template; hint: avoid `{{{{` in rendered constants"
    )]
    Braces { kind: String, pointer: String },
    #[error("cannot write the chart file {path}; hint: check that the directory is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a chart value comes from.
enum Source {
    /// A string field of the spec: it appears verbatim in the objects (as a whole string or
    /// inside one, like the namespace `<prefix><model>-<version>`).
    Field {
        get: fn(&DeploySpec) -> &str,
        set: fn(&mut DeploySpec, String),
    },
    /// A value `render` computes: read at a JSON pointer of the first object of `kind`.
    Computed {
        kind: &'static str,
        pointer: &'static str,
    },
}

/// One chart value: its dotted path under `.Values` and where it comes from.
struct ValueDef {
    path: &'static str,
    source: Source,
}

macro_rules! field {
    ($path:literal, $($f:ident).+) => {
        ValueDef {
            path: $path,
            source: Source::Field {
                get: |s| s.$($f).+.as_str(),
                set: |s, v| s.$($f).+ = v,
            },
        }
    };
}

const fn computed(path: &'static str, kind: &'static str, pointer: &'static str) -> ValueDef {
    ValueDef {
        path,
        source: Source::Computed { kind, pointer },
    }
}

/// Every chart value. Computed ones take precedence over fields at the same place (the quota
/// mentions the resources but is computed from them).
fn values_table() -> Vec<ValueDef> {
    vec![
        field!("model", model),
        field!("version", version),
        field!("image", image),
        field!("namespacePrefix", namespace_prefix),
        field!("systemNamespace", system_namespace),
        field!("monitoringNamespace", monitoring_namespace),
        ValueDef {
            path: "gitSha",
            source: Source::Field {
                get: |s| s.git_sha.as_deref().unwrap_or(""),
                set: |s, v| s.git_sha = Some(v),
            },
        },
        field!("config", config_properties),
        field!("resources.requests.cpu", resources.requests_cpu),
        field!("resources.requests.memory", resources.requests_memory),
        field!("resources.limits.cpu", resources.limits_cpu),
        field!("resources.limits.memory", resources.limits_memory),
        computed("replicas", "Deployment", "/spec/replicas"),
        computed(
            "autoscaling.minReplicas",
            "HorizontalPodAutoscaler",
            "/spec/minReplicas",
        ),
        computed(
            "autoscaling.maxReplicas",
            "HorizontalPodAutoscaler",
            "/spec/maxReplicas",
        ),
        computed("quota.pods", "ResourceQuota", "/spec/hard/pods"),
        computed(
            "quota.requestsCpu",
            "ResourceQuota",
            "/spec/hard/requests.cpu",
        ),
        computed(
            "quota.requestsMemory",
            "ResourceQuota",
            "/spec/hard/requests.memory",
        ),
        computed("quota.limitsCpu", "ResourceQuota", "/spec/hard/limits.cpu"),
        computed(
            "quota.limitsMemory",
            "ResourceQuota",
            "/spec/hard/limits.memory",
        ),
        computed(
            "imageDigestLabel",
            "Namespace",
            "/metadata/labels/wms.io~1image-digest",
        ),
        computed(
            "metricsJson",
            "Namespace",
            "/metadata/annotations/wms.io~1metrics",
        ),
        computed(
            "configChecksum",
            "Deployment",
            "/spec/template/metadata/annotations/wms.io~1config-sha256",
        ),
        computed(
            "serveThreads",
            "Deployment",
            "/spec/template/spec/containers/0/env/1/value",
        ),
    ]
}

/// The spec the committed chart's `values.yaml` is made from: the defaults of
/// `wms deploy apply`, the demo's model name, and an all-zero digest that must be replaced.
pub fn example_spec() -> DeploySpec {
    let mut spec = DeploySpec::new(
        "water-meters",
        "v1",
        format!(
            "registry.example.com/wms/water-meters@sha256:{}",
            "0".repeat(64)
        ),
    );
    spec.git_sha = Some("0".repeat(40));
    spec
}

/// The `.Values` tree for `spec`: its fields and what `render` computes from them.
pub fn values(spec: &DeploySpec) -> Result<Value, ChartError> {
    let objects = render::render_unchecked(&chart_shape(spec));
    let mut tree = json!({});
    for def in values_table() {
        let v = match &def.source {
            Source::Field { get, .. } => Value::String(get(spec).to_string()),
            Source::Computed { kind, pointer } => find(&objects, kind)
                .and_then(|o| o.pointer(pointer))
                .cloned()
                .ok_or(ChartError::Pointer {
                    value: def.path,
                    kind,
                    pointer,
                })?,
        };
        insert(&mut tree, def.path, v);
    }
    insert(
        &mut tree,
        SERVICE_MONITOR_VALUE,
        Value::Bool(spec.service_monitor),
    );
    Ok(tree)
}

/// The shape every chart spec has: a git sha, a ServiceMonitor in the templates (the value
/// decides), no `--allow-from` list (its length would change the NetworkPolicy's shape).
fn chart_shape(spec: &DeploySpec) -> DeploySpec {
    let mut s = spec.clone();
    s.service_monitor = true;
    s.allow_from.clear();
    if s.git_sha.is_none() {
        s.git_sha = Some(String::new());
    }
    s
}

fn insert(tree: &mut Value, dotted: &str, v: Value) {
    let mut node = tree;
    let mut parts = dotted.split('.').peekable();
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            node[p] = v;
            return;
        }
        if node.get(p).is_none() {
            node[p] = json!({});
        }
        node = &mut node[p];
    }
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind)
}

/// A marker for field `i`: letters only, so YAML never quotes it and no flag text contains it.
fn marker(i: usize) -> String {
    format!("wmschartfield{}x", char::from(b'a' + i as u8))
}

/// A placeholder for templated leaf `i` of one object.
fn leaf_placeholder(i: usize) -> String {
    format!("wmschartleaf{i:04}x")
}

/// Two valid specs that differ in every field, for finding what depends on the spec.
fn probes() -> [DeploySpec; 2] {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let mut a = DeploySpec::new("alpha", "v1", format!("reg.one/a@{}", digest('1')));
    a.git_sha = Some("1".repeat(40));
    a.replicas = 1;
    a.max_replicas = 3;
    a.metrics.insert("test_iou".into(), json!(0.5));
    let mut b = DeploySpec::new("beta", "v22", format!("reg.two/b@{}", digest('2')));
    b.git_sha = Some("2".repeat(40));
    b.replicas = 0;
    b.max_replicas = 5;
    b.namespace_prefix = "p-".into();
    b.system_namespace = "sys".into();
    b.monitoring_namespace = "mon".into();
    b.config_properties = "inference_address=http://0.0.0.0:8080\n".into();
    b.metrics.insert("test_dice".into(), json!(0.7));
    b.resources = render::Resources {
        requests_cpu: "250m".into(),
        requests_memory: "256Mi".into(),
        limits_cpu: "4".into(),
        limits_memory: "4Gi".into(),
    };
    [chart_shape(&a), chart_shape(&b)]
}

/// Template text for the leaf `s` of the marker render, or None when it holds no marker.
fn template_for_string(s: &str, markers: &[(String, &'static str)]) -> Option<String> {
    if let Some((_, path)) = markers.iter().find(|(m, _)| m == s) {
        return Some(format!("{{{{ .Values.{path} | quote }}}}"));
    }
    if !markers.iter().any(|(m, _)| s.contains(m.as_str())) {
        return None;
    }
    // A composite such as the namespace: names are DNS labels, so plain substitution inside
    // double quotes is safe for every value `render` accepts.
    let mut out = String::from("\"");
    let mut rest = s;
    'outer: while !rest.is_empty() {
        for (m, path) in markers {
            if let Some(after) = rest.strip_prefix(m.as_str()) {
                out.push_str(&format!("{{{{ .Values.{path} }}}}"));
                rest = after;
                continue 'outer;
            }
        }
        let c = rest.chars().next().expect("rest is not empty");
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push('"');
    Some(out)
}

/// Walks the marker render `m` and the probes `a`, `b` together and replaces every leaf that
/// depends on the spec with a placeholder, collecting placeholder → template text.
struct Templater<'a> {
    kind: String,
    markers: &'a [(String, &'static str)],
    computed: BTreeMap<String, &'static str>,
    subs: Vec<(String, String)>,
}

impl Templater<'_> {
    fn walk(&mut self, m: &mut Value, a: &Value, b: &Value, ptr: &str) -> Result<(), ChartError> {
        if let Some(path) = self.computed.get(ptr).copied() {
            let expr = if m.is_string() {
                format!("{{{{ .Values.{path} | quote }}}}")
            } else {
                format!("{{{{ .Values.{path} }}}}")
            };
            return self.substitute(m, expr);
        }
        let shape = |what: &str| ChartError::Shape {
            kind: self.kind.clone(),
            pointer: ptr.to_string(),
            what: what.to_string(),
        };
        match m {
            Value::Object(map) => {
                let (Some(ao), Some(bo)) = (a.as_object(), b.as_object()) else {
                    return Err(shape("an object in one spec only"));
                };
                let keys: Vec<&String> = map.keys().collect();
                if keys != ao.keys().collect::<Vec<_>>() || keys != bo.keys().collect::<Vec<_>>() {
                    return Err(shape("different keys"));
                }
                if let Some(k) = keys
                    .iter()
                    .find(|k| self.markers.iter().any(|(mk, _)| k.contains(mk.as_str())))
                {
                    return Err(shape(&format!("a flag lands in the key {k}")));
                }
                for (k, v) in map.iter_mut() {
                    let child = format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1"));
                    self.walk(v, &ao[k], &bo[k], &child)?;
                }
                Ok(())
            }
            Value::Array(items) => {
                let (Some(aa), Some(ba)) = (a.as_array(), b.as_array()) else {
                    return Err(shape("a list in one spec only"));
                };
                if items.len() != aa.len() || items.len() != ba.len() {
                    return Err(shape("lists of different lengths"));
                }
                for (i, v) in items.iter_mut().enumerate() {
                    self.walk(v, &aa[i], &ba[i], &format!("{ptr}/{i}"))?;
                }
                Ok(())
            }
            Value::String(s) => {
                if let Some(expr) = template_for_string(s, self.markers) {
                    return self.substitute(m, expr);
                }
                if s.contains("{{") {
                    return Err(ChartError::Braces {
                        kind: self.kind.clone(),
                        pointer: ptr.to_string(),
                    });
                }
                self.constant(m, a, b, ptr)
            }
            _ => self.constant(m, a, b, ptr),
        }
    }

    /// A leaf without a marker must be the same for every spec.
    fn constant(&self, m: &Value, a: &Value, b: &Value, ptr: &str) -> Result<(), ChartError> {
        if m == a && a == b {
            Ok(())
        } else {
            Err(ChartError::Uncovered {
                kind: self.kind.clone(),
                pointer: ptr.to_string(),
            })
        }
    }

    fn substitute(&mut self, leaf: &mut Value, expr: String) -> Result<(), ChartError> {
        let placeholder = leaf_placeholder(self.subs.len());
        *leaf = Value::String(placeholder.clone());
        self.subs.push((placeholder, expr));
        Ok(())
    }
}

/// The chart's files (relative path → contents) with `values.yaml` made from `spec`. The
/// templates do not depend on `spec`.
pub fn generate(spec: &DeploySpec) -> Result<BTreeMap<PathBuf, String>, ChartError> {
    let table = values_table();
    let mut marked = chart_shape(spec);
    let mut markers = Vec::new();
    for (i, def) in table.iter().enumerate() {
        if let Source::Field { set, .. } = &def.source {
            let m = marker(i);
            set(&mut marked, m.clone());
            markers.push((m, def.path));
        }
    }
    // The image must still parse as a digest reference, or the digest label disappears.
    let image_marker = format!("wmschartimage.invalid/x@sha256:{}", "ab".repeat(32));
    for (m, path) in &mut markers {
        if *path == "image" {
            *m = image_marker.clone();
        }
    }
    marked.image = image_marker;
    // Longest first, so a marker that contains another is matched whole.
    markers.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));

    let mut objects = render::render_unchecked(&marked);
    let [pa, pb] = probes();
    let (oa, ob) = (render::render_unchecked(&pa), render::render_unchecked(&pb));
    if objects.len() != oa.len() || objects.len() != ob.len() {
        return Err(ChartError::Shape {
            kind: "objects".into(),
            pointer: "/".into(),
            what: "a different number of objects".into(),
        });
    }

    let mut files = BTreeMap::new();
    for (i, obj) in objects.iter_mut().enumerate() {
        let kind = obj["kind"].as_str().unwrap_or("Object").to_string();
        let computed = table
            .iter()
            .filter_map(|d| match d.source {
                Source::Computed { kind: k, pointer } if k == kind && i == first_index(&oa, k) => {
                    Some((pointer.to_string(), d.path))
                }
                _ => None,
            })
            .collect();
        let mut t = Templater {
            kind: kind.clone(),
            markers: &markers,
            computed,
            subs: Vec::new(),
        };
        t.walk(obj, &oa[i], &ob[i], "")?;
        let mut text = serde_yaml::to_string(obj).expect("JSON values serialize as YAML");
        // Longest placeholder first is not needed: they all have the same length.
        for (placeholder, expr) in &t.subs {
            text = text.replace(placeholder.as_str(), expr);
        }
        if kind == "ServiceMonitor" {
            text = format!("{{{{- if .Values.{SERVICE_MONITOR_VALUE} }}}}\n{text}{{{{- end }}}}\n");
        }
        let name = oa[i]["metadata"]["name"].as_str().unwrap_or_default();
        let constant_name = name == ob[i]["metadata"]["name"].as_str().unwrap_or_default();
        let file = if constant_name {
            format!("{i:02}-{}-{name}.yaml", kind.to_ascii_lowercase())
        } else {
            format!("{i:02}-{}.yaml", kind.to_ascii_lowercase())
        };
        files.insert(Path::new("templates").join(file), text);
    }

    files.insert(PathBuf::from("Chart.yaml"), chart_yaml(spec));
    files.insert(PathBuf::from("values.yaml"), values_yaml(spec)?);
    Ok(files)
}

fn first_index(objects: &[Value], kind: &str) -> usize {
    objects
        .iter()
        .position(|o| o["kind"] == kind)
        .unwrap_or(usize::MAX)
}

fn chart_yaml(spec: &DeploySpec) -> String {
    let chart = json!({
        "apiVersion": "v2",
        "name": CHART_NAME,
        "description": "One Water Meters model version in its own namespace, as `wms deploy apply` creates it (generated from `wms deploy render`; do not edit)",
        "type": "application",
        "version": env!("CARGO_PKG_VERSION"),
        "appVersion": spec.version,
    });
    format!(
        "# Generated by wms (src/deploy/chart.rs); do not edit. See README.md.\n{}",
        serde_yaml::to_string(&chart).expect("JSON values serialize as YAML")
    )
}

/// `values.yaml` for `spec`, with a header saying which values are computed.
pub fn values_yaml(spec: &DeploySpec) -> Result<String, ChartError> {
    let tree = values(spec)?;
    Ok(format!(
        "# Generated by wms (src/deploy/chart.rs) from `wms deploy render`; see README.md.\n\
         # model, version, image, gitSha, config, resources and the namespaces are the deploy flags.\n\
         # autoscaling, quota, replicas, imageDigestLabel, metricsJson, configChecksum and serveThreads\n\
         # are what `wms deploy render` computes from those flags: keep them in step with the flags.\n{}",
        serde_yaml::to_string(&tree).expect("JSON values serialize as YAML")
    ))
}

/// Writes the chart into `dir` (each file through a temporary file and a rename), removing
/// templates that are no longer generated. Files other than the generated ones and
/// `templates/*.yaml` (the README) are left alone.
pub fn write(dir: &Path, spec: &DeploySpec) -> Result<(), ChartError> {
    let files = generate(spec)?;
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ChartError::Write { path, source }
    };
    let templates = dir.join("templates");
    fs_err::create_dir_all(&templates).map_err(err(&templates))?;
    if let Ok(entries) = fs_err::read_dir(&templates) {
        for entry in entries.flatten() {
            let rel = Path::new("templates").join(entry.file_name());
            if rel.extension().is_some_and(|e| e == "yaml") && !files.contains_key(&rel) {
                fs_err::remove_file(entry.path()).map_err(err(&entry.path()))?;
            }
        }
    }
    for (rel, text) in &files {
        let path = dir.join(rel);
        let parent = path.parent().unwrap_or(dir);
        let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(err(&path))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(err(&path))?;
        tmp.persist(&path).map_err(|e| ChartError::Write {
            path: path.clone(),
            source: e.error,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_do_not_depend_on_the_spec() {
        let a = generate(&example_spec()).unwrap();
        let [_, b_spec] = probes();
        let b = generate(&b_spec).unwrap();
        for (path, text) in &a {
            if path.starts_with("templates") {
                assert_eq!(Some(text), b.get(path), "{}", path.display());
            }
        }
        assert_ne!(a[Path::new("values.yaml")], b[Path::new("values.yaml")]);
    }

    #[test]
    fn templates_only_substitute_values() {
        let files = generate(&example_spec()).unwrap();
        for (path, text) in files.iter().filter(|(p, _)| p.starts_with("templates")) {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("{{") {
                let end = rest[start..].find("}}").expect("closed") + start;
                let action = rest[start + 2..end].trim();
                let ok = action.strip_prefix(".Values.").is_some_and(|p| {
                    let p = p.strip_suffix(" | quote").unwrap_or(p);
                    p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
                }) || action == format!("- if .Values.{SERVICE_MONITOR_VALUE}")
                    || action == "- end";
                assert!(ok, "{}: {{{{{action}}}}}", path.display());
                rest = &rest[end + 2..];
            }
        }
    }

    #[test]
    fn every_value_of_the_table_is_in_values_yaml() {
        let v = values(&example_spec()).unwrap();
        for def in values_table() {
            let ptr = format!("/{}", def.path.replace('.', "/"));
            assert!(v.pointer(&ptr).is_some(), "{}", def.path);
        }
        assert_eq!(v["quota"]["pods"], "4");
        assert_eq!(v["serviceMonitor"]["enabled"], false);
    }
}
