//! `wms deploy render` (#13) against the real Kubernetes JSON schemas (PyPI
//! `kubernetes-validate --strict`, the newest Kubernetes version it ships), and the Helm chart in
//! `infra/helm/wms-model/`: regenerated and compared with the committed tree byte for byte, and
//! its templates, with `values.yaml` substituted here the way Helm would (`{{ .Values.x }}`,
//! `| quote`, the one `if`), giving exactly the objects `wms deploy render` prints.
//!
//! Regenerate the committed chart after a change to `render`:
//! `WMS_REGENERATE_CHART=1 cargo test --test it deploy_render::`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use wms::deploy::DeploySpec;
use wms::deploy::chart;
use wms::deploy::render;

use crate::util;

const DIGEST_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/helm/wms-model")
}

/// A spec, and the `wms deploy render` flags that make the same one.
struct Case {
    spec: DeploySpec,
    args: Vec<String>,
}

/// `spec`'s flags for `wms deploy render`; the config goes through a file in `dir`.
fn case(spec: DeploySpec, dir: &Path) -> Case {
    let config = dir.join(format!("config-{}.properties", spec.version));
    std::fs::write(&config, &spec.config_properties).unwrap();
    let r = &spec.resources;
    let mut args: Vec<String> = [
        "deploy",
        "render",
        "--model",
        &spec.model,
        "--version",
        &spec.version,
        "--image",
        &spec.image,
        "--replicas",
        &spec.replicas.to_string(),
        "--max-replicas",
        &spec.max_replicas.to_string(),
        "--cpu-request",
        &r.requests_cpu,
        "--memory-request",
        &r.requests_memory,
        "--cpu-limit",
        &r.limits_cpu,
        "--memory-limit",
        &r.limits_memory,
        "--namespace-prefix",
        &spec.namespace_prefix,
        "--system-namespace",
        &spec.system_namespace,
        "--monitoring-namespace",
        &spec.monitoring_namespace,
        "--git-sha",
        spec.git_sha.as_deref().expect("chart specs have a git sha"),
        "--config",
        config.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if spec.service_monitor {
        args.push("--service-monitor".into());
    }
    Case { spec, args }
}

/// The committed chart's example, and a version that differs in every value (ServiceMonitor
/// on, no replicas, other namespaces and resources).
fn cases(dir: &Path) -> Vec<Case> {
    let mut other = DeploySpec::new(
        "meters",
        "v7",
        format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/wms/meters@sha256:{DIGEST_HEX}"),
    );
    other.git_sha = Some("d".repeat(40));
    other.replicas = 0;
    other.max_replicas = 6;
    other.namespace_prefix = "ml-".into();
    other.system_namespace = "routing".into();
    other.monitoring_namespace = "prometheus".into();
    other.config_properties = "inference_address=http://0.0.0.0:8080\nbatch_size=4\nmax_batch_delay=50\n# a \"quoted\" comment: {x}\n".into();
    other.resources = render::Resources {
        requests_cpu: "250m".into(),
        requests_memory: "384Mi".into(),
        limits_cpu: "1500m".into(),
        limits_memory: "3Gi".into(),
    };
    other.service_monitor = true;
    vec![case(chart::example_spec(), dir), case(other, dir)]
}

/// The documents of a YAML stream as JSON values (empty documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

// ---- Kubernetes JSON schemas ----

/// The newest Kubernetes version kubernetes-validate ships schemas for.
fn newest_schema_version() -> String {
    let out = Command::new(util::python())
        .args([
            "-c",
            "import kubernetes_validate.utils as u; print(u.latest_version())",
        ])
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "kubernetes-validate missing from the venv? {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `kubernetes-validate --strict -k VERSION` over one file per object; (exit ok, output).
fn kubernetes_validate(objects: &[Value], dir: &Path, version: &str) -> (bool, String) {
    let mut files = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let path = dir.join(format!(
            "{i:02}-{}.yaml",
            o["kind"].as_str().unwrap().to_ascii_lowercase()
        ));
        std::fs::write(&path, serde_yaml::to_string(o).unwrap()).unwrap();
        files.push(path);
    }
    let out = Command::new(util::python().with_file_name("kubernetes-validate"))
        .args(["--strict", "-k", version])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn rendered_objects_pass_the_kubernetes_schemas_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let version = newest_schema_version();
    for case in cases(dir.path()) {
        let objects = documents(&util::wms().args(&case.args).ok().stdout());
        // ServiceMonitor is a CRD (monitoring.coreos.com) that the Kubernetes schemas do not
        // have; `service_monitor_selects_the_service_metrics_port` checks it instead.
        let (core, crds): (Vec<Value>, Vec<Value>) = objects
            .into_iter()
            .partition(|o| o["apiVersion"] != "monitoring.coreos.com/v1");
        assert_eq!(crds.len(), usize::from(case.spec.service_monitor));
        assert_eq!(core.len(), 12, "every object but the ServiceMonitor");
        let out_dir = dir.path().join(&case.spec.version);
        std::fs::create_dir_all(&out_dir).unwrap();
        let (ok, text) = kubernetes_validate(&core, &out_dir, &version);
        assert!(ok, "kubernetes-validate --strict -k {version}:\n{text}");
        // One "passed" line per object: nothing was skipped as unknown.
        let passed = text.lines().filter(|l| l.contains("passed")).count();
        assert_eq!(passed, core.len(), "{text}");
    }
}

/// The validator really checks: an unknown field (strict) and a wrong type both fail.
#[test]
fn kubernetes_validate_refuses_what_the_api_server_would() {
    let dir = tempfile::tempdir().unwrap();
    let version = newest_schema_version();
    let cases = cases(dir.path());
    let objects = documents(&util::wms().args(&cases[0].args).ok().stdout());
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap()
        .clone();
    let mut unknown = deployment.clone();
    unknown["spec"]["replicaz"] = Value::from(2);
    let mut wrong_type = deployment;
    wrong_type["spec"]["replicas"] = Value::from("two");
    for (what, bad) in [("unknown field", unknown), ("wrong type", wrong_type)] {
        let sub = dir.path().join(what.replace(' ', "-"));
        std::fs::create_dir_all(&sub).unwrap();
        let (ok, text) = kubernetes_validate(&[bad], &sub, &version);
        assert!(!ok, "{what} passed:\n{text}");
    }
}

#[test]
fn service_monitor_selects_the_service_metrics_port() {
    let dir = tempfile::tempdir().unwrap();
    let case = cases(dir.path()).pop().unwrap();
    assert!(case.spec.service_monitor);
    let objects = documents(&util::wms().args(&case.args).ok().stdout());
    let sm = objects
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .unwrap();
    let svc = objects.iter().find(|o| o["kind"] == "Service").unwrap();
    assert_eq!(sm["metadata"]["namespace"], svc["metadata"]["namespace"]);
    // The selector matches the Service's labels (Prometheus Operator selects Services).
    let labels = svc["metadata"]["labels"].as_object().unwrap();
    let selector = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(labels.get(k), Some(v), "selector {k}");
    }
    // Every endpoint names a port of the Service.
    let ports: Vec<&Value> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    for ep in sm["spec"]["endpoints"].as_array().unwrap() {
        assert!(ports.contains(&&ep["port"]), "{ep}");
        assert_eq!(ep["port"], "metrics");
    }
}

// ---- the Helm chart ----

#[test]
fn committed_chart_is_what_the_generator_writes() {
    let committed = chart_dir();
    if std::env::var_os("WMS_REGENERATE_CHART").is_some() {
        chart::write(&committed, &chart::example_spec()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    chart::write(dir.path(), &chart::example_spec()).unwrap();
    let generated = tree(dir.path());
    let mut on_disk = tree(&committed);
    // The README is written by hand.
    assert!(
        on_disk.remove(Path::new("README.md")).is_some(),
        "infra/helm/wms-model/README.md"
    );
    let names = |t: &BTreeMap<PathBuf, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&on_disk),
        names(&generated),
        "hint: WMS_REGENERATE_CHART=1 cargo test --test it deploy_render::"
    );
    for (path, bytes) in &generated {
        assert!(
            on_disk[path] == *bytes,
            "{} differs from the generator's; hint: WMS_REGENERATE_CHART=1 cargo test --test it deploy_render::",
            path.display()
        );
    }
}

fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Helm's `quote` (`fmt.Sprintf("%q", s)`): a Go double-quoted string, which YAML reads back
/// as the same text.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value at `.Values.a.b` as Helm prints it (`{{ }}` of a string, number or bool).
fn lookup<'a>(values: &'a Value, dotted: &str) -> &'a Value {
    dotted.split('.').fold(values, |v, k| {
        v.get(k).unwrap_or_else(|| panic!("no value {dotted}"))
    })
}

fn print_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("a template prints {other}, which Helm would print as Go's map syntax"),
    }
}

/// Helm's rendering of one of our templates, for the subset the chart may use (anything else
/// fails the test): `{{ .Values.x }}`, `{{ .Values.x | quote }}`, and a whole file wrapped in
/// `{{- if .Values.x }}` … `{{- end }}`.
fn helm_substitute(template: &str, values: &Value) -> String {
    let mut body = template;
    if let Some(rest) = template.strip_prefix("{{- if .Values.") {
        let (cond, inner) = rest.split_once(" }}\n").expect("the if line");
        let inner = inner.strip_suffix("{{- end }}\n").expect("the end line");
        let truthy = match lookup(values, cond) {
            Value::Bool(b) => *b,
            Value::Null => false,
            other => panic!("if on {other}"),
        };
        if !truthy {
            return String::new();
        }
        body = inner;
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("closed action") + start;
        let action = rest[start + 2..end].trim();
        let path = action
            .strip_prefix(".Values.")
            .unwrap_or_else(|| panic!("not a substitution: {{{{{action}}}}}"));
        let (path, quote) = match path.strip_suffix(" | quote") {
            Some(p) => (p, true),
            None => (path, false),
        };
        assert!(
            path.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'),
            "not a plain value path: {{{{{action}}}}}"
        );
        let printed = print_value(lookup(values, path));
        out.push_str(&if quote { go_quote(&printed) } else { printed });
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

#[test]
fn chart_with_its_values_gives_what_render_prints() {
    let dir = tempfile::tempdir().unwrap();
    let committed = tree(&chart_dir());
    let templates: Vec<(&PathBuf, String)> = committed
        .iter()
        .filter(|(p, _)| p.starts_with("templates"))
        .map(|(p, b)| (p, String::from_utf8(b.clone()).unwrap()))
        .collect();
    assert!(templates.len() >= 13, "{} templates", templates.len());
    for case in cases(dir.path()) {
        // values.yaml for this spec, read back as Helm reads it.
        let values_text = chart::values_yaml(&case.spec).unwrap();
        let values: Value = serde_yaml::from_str(&values_text).unwrap();
        let mut stream = String::new();
        for (_, t) in &templates {
            let text = helm_substitute(t, &values);
            if !text.trim().is_empty() {
                stream.push_str("---\n");
                stream.push_str(&text);
            }
        }
        let from_chart = documents(&stream);
        let printed = documents(&util::wms().args(&case.args).ok().stdout());
        assert_eq!(
            from_chart.len(),
            printed.len(),
            "{}: object count",
            case.spec.version
        );
        for (a, b) in from_chart.iter().zip(&printed) {
            assert_eq!(
                a, b,
                "{} {}: the chart and `wms deploy render` differ",
                case.spec.version, b["kind"]
            );
        }
    }
    // The committed values.yaml is the example spec's.
    assert_eq!(
        committed[Path::new("values.yaml")],
        chart::values_yaml(&chart::example_spec())
            .unwrap()
            .into_bytes()
    );
}
