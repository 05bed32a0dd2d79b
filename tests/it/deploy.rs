//! `wms deploy` end to end: the real `wms` binary against the in-test Kubernetes API server
//! (`kubeapi`, which behaves like the real one: server-side apply with field ownership, 409s,
//! watches that end and 410, a Deployment controller whose outcome each test chooses, namespace
//! finalization, the service proxy), and a real `wms-serve` behind the service proxy for the
//! smoke test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kubeapi::{KubeApi, Options, Outcome};
use crate::util::{TestCommand, wms};

const MODEL: &str = "meters";

/// `127.0.0.1:5000/meters@sha256:<n repeated>`: a distinct digest per version.
fn image(n: u8) -> String {
    format!(
        "127.0.0.1:5000/meters@sha256:{}",
        format!("{n:02x}").repeat(32)
    )
}

fn ns(version: &str) -> String {
    format!("wms-{MODEL}-{version}")
}

/// One API server, a kubeconfig for it, and where commands write records and outputs.
struct Env {
    api: KubeApi,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Env {
    fn new(opts: Options) -> Env {
        let api = KubeApi::start(opts);
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path(), "ci");
        Env {
            api,
            dir,
            kubeconfig,
        }
    }

    fn fast() -> Env {
        Env::new(Options {
            ready_after: Duration::from_millis(150),
            ..Options::default()
        })
    }

    /// Pods ready after 100 ms, and a rollout not complete after 2 s gets
    /// `ProgressDeadlineExceeded` (the real `progressDeadlineSeconds`, scaled down).
    fn failing_fast() -> Env {
        Env::new(Options {
            ready_after: Duration::from_millis(100),
            progress_deadline: Some(Duration::from_secs(2)),
            ..Options::default()
        })
    }

    /// `wms deploy <args>` against this API server; every command appends to one step-outputs
    /// file and writes its timing records under the test's own dir.
    fn command(&self, args: &[&str]) -> TestCommand {
        wms()
            .arg("deploy")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("WMS_TIMING_DIR", self.dir.path().join("records"))
            .github_output(self.dir.path().join("github_output"))
    }

    /// Runs a command that must succeed; returns its last stdout line as JSON (null if none).
    #[track_caller]
    fn ok(&self, args: &[&str]) -> Value {
        let stdout = self.command(args).ok().stdout();
        stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null)
    }

    /// Runs a command that must fail with exit 1 and print an error line holding each of
    /// `parts`; returns that line.
    #[track_caller]
    fn refused(&self, args: &[&str], parts: &[&str]) -> String {
        let stderr = self.fails(args);
        let line = error_line(&stderr).to_string();
        for part in parts {
            assert!(
                line.contains(part),
                "{part:?} not in the error line:\n{stderr}"
            );
        }
        line
    }

    /// Runs a command that must fail with exit 1; returns its stderr.
    #[track_caller]
    fn fails(&self, args: &[&str]) -> String {
        self.command(args).fails(1).stderr()
    }

    fn apply(&self, version: &str, n: u8, extra: &[&str]) -> Value {
        let img = image(n);
        let wait: &[&str] = if extra.contains(&"--wait") {
            &[]
        } else {
            &["--wait", "30s"]
        };
        self.ok(&apply_args(version, &img, &[wait, extra].concat()))
    }

    fn deployment(&self, version: &str) -> Value {
        self.api
            .object("apps", "v1", "deployments", &ns(version), MODEL)
            .unwrap_or_else(|| panic!("no Deployment in {}", ns(version)))
    }

    /// The `config.properties` wms-serve of `version` reads (its ConfigMap's data).
    fn serve_config(&self, version: &str) -> String {
        let cm = self
            .api
            .object("", "v1", "configmaps", &ns(version), "wms-serve-config")
            .unwrap_or_else(|| panic!("no wms-serve-config in {}", ns(version)));
        cm["data"]["config.properties"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn entry_point(&self) -> Value {
        self.api
            .object("", "v1", "services", "wms-system", MODEL)
            .expect("no entry point Service")
    }

    fn records(&self) -> Vec<Value> {
        let path = self.dir.path().join("records/automated.jsonl");
        fs_err::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn outputs(&self) -> Vec<(String, String)> {
        let text = fs_err::read_to_string(self.dir.path().join("github_output")).unwrap();
        wms::github::actions::parse_file_command("GITHUB_OUTPUT", &text).unwrap()
    }
}

/// `<command> --model meters --version V` and `rest`.
fn version_args<'a>(command: &'a str, version: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![command, "--model", MODEL, "--version", version];
    args.extend_from_slice(rest);
    args
}

/// `apply --model meters --version V --image I` and `rest`.
fn apply_args<'a>(version: &'a str, image: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    version_args("apply", version, &[&["--image", image][..], rest].concat())
}

/// The error line `wms` printed (the last `error:` line of stderr).
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["manager"].as_str().unwrap_or("").to_string(),
                m["operation"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn apply_creates_every_object_server_side_applied_by_wms_with_the_pod_locked_down() {
    let env = Env::fast();
    let out = env.apply("v1", 1, &[]);
    assert_eq!(out["applied"]["namespace"], ns("v1"));
    assert!(
        out["applied"]["rollout"]["ready_replicas"]
            .as_i64()
            .unwrap()
            >= 1
    );

    let n = env
        .api
        .object("", "v1", "namespaces", "", &ns("v1"))
        .unwrap();
    assert_eq!(
        n["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "wms"
    );
    assert_eq!(
        n["metadata"]["labels"]["wms.io/image-digest"],
        "010101010101"
    );
    for (g, v, r, name) in [
        ("", "v1", "resourcequotas", "wms-quota"),
        ("", "v1", "limitranges", "wms-limits"),
        ("networking.k8s.io", "v1", "networkpolicies", "default-deny"),
        (
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "allow-from-routing",
        ),
        (
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "allow-from-monitoring",
        ),
        ("", "v1", "serviceaccounts", "wms-serve"),
        ("", "v1", "configmaps", "wms-serve-config"),
        ("", "v1", "services", MODEL),
        ("apps", "v1", "deployments", MODEL),
        ("autoscaling", "v2", "horizontalpodautoscalers", MODEL),
        ("policy", "v1", "poddisruptionbudgets", MODEL),
    ] {
        let o = env
            .api
            .object(g, v, r, &ns("v1"), name)
            .unwrap_or_else(|| panic!("no {r} {name}"));
        assert!(
            managers(&o).contains(&("wms".into(), "Apply".into())),
            "{r} {name}: {:?}",
            managers(&o)
        );
    }
    // No ServiceMonitor without the CRD.
    assert!(env.api.objects("servicemonitors").is_empty());

    let d = env.deployment("v1");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], image(1));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ping");

    // Every write was a server-side apply with field manager wms.
    let writes: Vec<_> = env
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && !r.path.contains("/leases/"))
        .collect();
    assert!(writes.len() >= 12, "{writes:?}");
    for w in &writes {
        assert_eq!(w.content_type, "application/apply-patch+yaml", "{w:?}");
        assert!(w.query.contains("fieldManager=wms"), "{w:?}");
        assert!(!w.query.contains("force=true"), "{w:?}");
    }

    let outputs = env.outputs();
    assert!(
        outputs.contains(&("namespace".into(), ns("v1"))),
        "{outputs:?}"
    );
    assert!(outputs.contains(&("status".into(), "success".into())));
    assert!(outputs.contains(&(
        "url".into(),
        format!("http://{MODEL}.{}.svc.cluster.local:8080", ns("v1"))
    )));
    let recs = env.records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["task"], "deploy");
    assert_eq!(recs[0]["outcome"], "success");
    let steps: Vec<&str> = recs[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for step in ["connect", "lock", "apply", "rollout", "unlock"] {
        assert!(steps.contains(&step), "{steps:?}");
    }

    // A second apply of the same version changes nothing and still succeeds.
    env.apply("v1", 1, &[]);
    assert_eq!(
        env.deployment("v1")["metadata"]["generation"],
        d["metadata"]["generation"]
    );
}

#[test]
fn the_service_monitor_is_applied_only_when_its_crd_exists() {
    let env = Env::fast();
    env.api.enable_servicemonitor_crd();
    env.apply("v1", 1, &["--wait", "0"]);
    assert!(
        env.api
            .object(
                "monitoring.coreos.com",
                "v1",
                "servicemonitors",
                &ns("v1"),
                MODEL
            )
            .is_some()
    );
}

#[test]
fn rollout_failures_name_each_pods_reason_and_last_log_lines() {
    let env = Env::failing_fast();
    let cases = [
        ("v1", Outcome::ImagePullBackOff, "ImagePullBackOff", None),
        (
            "v2",
            Outcome::CrashLoopBackOff,
            "CrashLoopBackOff",
            Some("Error: model file /models/model.onnx"),
        ),
        (
            "v3",
            Outcome::OOMKilled,
            "OOMKilled",
            Some("allocating inference arena"),
        ),
        ("v4", Outcome::Unschedulable, "Unschedulable", None),
        (
            "v5",
            Outcome::ProgressDeadlineExceeded,
            "NotReady",
            Some("readiness: warming up"),
        ),
    ];
    for (i, (version, outcome, reason, log)) in cases.into_iter().enumerate() {
        env.api.set_outcome(&ns(version), outcome);
        let img = image(10 + i as u8);
        let started = Instant::now();
        let stderr = env.fails(&apply_args(version, &img, &["--wait", "20s"]));
        let line = error_line(&stderr);
        assert!(
            line.contains(&format!("the rollout of {}/{MODEL} failed", ns(version))),
            "{line}"
        );
        assert!(line.contains("progress deadline"), "{line}");
        assert!(line.contains(reason), "{version}: {line}");
        assert!(line.contains("hint:"), "{line}");
        if let Some(log) = log {
            // The last log line is in the error; all of them are above it.
            assert!(line.contains(log), "{version}: {line}");
            assert!(
                stderr
                    .lines()
                    .any(|l| l.starts_with("    | ") && l.contains(log)),
                "{stderr}"
            );
        }
        // Decided by the deadline, not by --wait running out.
        assert!(started.elapsed() < Duration::from_secs(15), "{version}");
        // `wms deploy debug` says the same without touching anything.
        let out = env.ok(&version_args("debug", version, &[]));
        let pods = out["pods"].as_array().unwrap();
        assert!(!pods.is_empty(), "{out}");
        assert!(
            pods[0]["reason"].as_str().unwrap().contains(reason),
            "{out}"
        );
    }
    let recs = env.records();
    let failed = recs
        .iter()
        .filter(|r| r["task"] == "deploy" && r["outcome"] == "failure")
        .count();
    assert_eq!(failed, 5);
    assert_eq!(recs.iter().filter(|r| r["task"] == "debug").count(), 5);
    assert!(
        recs.iter()
            .filter(|r| r["task"] == "deploy")
            .all(|r| r["errors"]["count"] == 1)
    );
    assert!(env.outputs().contains(&("status".into(), "failure".into())));
}

#[test]
fn a_rollout_that_does_not_finish_in_time_fails_naming_the_wait_and_the_pods() {
    let env = Env::fast();
    // No progress deadline on this server: only --wait can end the wait.
    env.api.set_outcome(&ns("v1"), Outcome::ImagePullBackOff);
    let img = image(1);
    env.refused(
        &apply_args("v1", &img, &["--wait", "2s"]),
        &["not rolled out after 2 s", "ImagePullBackOff"],
    );
}

#[test]
fn a_conflict_with_another_field_manager_is_an_error_unless_forced() {
    let env = Env::fast();
    env.apply("v1", 1, &[]);
    // Another manager takes spec.replicas, as `kubectl apply --server-side --force-conflicts`
    // or `kubectl scale` would.
    let url = format!(
        "{}/apis/apps/v1/namespaces/{}/deployments/{MODEL}?fieldManager=kubectl&force=true",
        env.api.url(),
        ns("v1")
    );
    let body = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": MODEL, "namespace": ns("v1")}, "spec": {"replicas": 2}});
    let resp = reqwest::blocking_patch(&url, &body);
    assert_eq!(resp, 200);

    let img = image(1);
    let args = apply_args("v1", &img, &["--wait", "30s"]);
    env.refused(
        &args,
        &[
            "server-side apply conflict on Deployment",
            ".spec.replicas",
            "kubectl",
            "--force",
        ],
    );
    assert_eq!(env.deployment("v1")["spec"]["replicas"], 2);

    let mut forced = args.to_vec();
    forced.push("--force");
    env.ok(&forced);
    let d = env.deployment("v1");
    assert_eq!(d["spec"]["replicas"], 1);
    let force_writes = env
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.query.contains("force=true"))
        .filter(|r| !r.query.contains("fieldManager=kubectl"))
        .count();
    assert!(force_writes >= 12, "{force_writes}");
}

/// A tiny blocking PATCH helper (server-side apply by another manager).
mod reqwest {
    pub fn blocking_patch(url: &str, body: &serde_json::Value) -> u16 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            ::reqwest::Client::new()
                .patch(url)
                .header("content-type", "application/apply-patch+yaml")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    }
}

#[test]
fn a_watch_that_ends_mid_rollout_is_watched_again_and_a_410_reads_again() {
    let env = Env::new(Options {
        ready_after: Duration::from_millis(1500),
        ..Options::default()
    });
    env.api.end_watches_after(1);
    env.apply("v1", 1, &[]);
    let watches = |env: &Env| {
        env.api
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/deployments") && r.query.contains("watch=true"))
            .count()
    };
    let first = watches(&env);
    assert!(first >= 2, "the wait never watched again: {first} watches");

    // A compacted history: the watch from the old resourceVersion gets 410 Gone; the wait
    // reads the Deployment again and still finishes.
    env.api.keep_watches_open();
    let api = &env.api;
    std::thread::scope(|s| {
        let h = s.spawn(|| env.apply("v2", 2, &[]));
        api.wait_until("the v2 Deployment", Duration::from_secs(20), |a| {
            a.object("apps", "v1", "deployments", &ns("v2"), MODEL)
                .is_some()
        });
        api.compact();
        h.join().unwrap();
    });
    assert_eq!(
        env.deployment("v2")["status"]["availableReplicas"],
        1,
        "{}",
        env.deployment("v2")
    );
}

#[test]
fn promote_and_rollback_switch_the_entry_point_in_one_write_and_refuse_versions_not_ready() {
    let env = Env::failing_fast();
    env.apply("v1", 1, &[]);
    env.apply("v2", 2, &[]);
    env.api.set_outcome(&ns("v3"), Outcome::CrashLoopBackOff);
    let img = image(3);
    env.fails(&apply_args("v3", &img, &[]));

    let target = |env: &Env| env.entry_point()["spec"]["externalName"].clone();
    env.ok(&version_args("promote", "v1", &[]));
    assert_eq!(
        target(&env),
        format!("{MODEL}.{}.svc.cluster.local", ns("v1"))
    );

    let before = env.api.requests().len();
    let started = Instant::now();
    let out = env.ok(&version_args("promote", "v2", &[]));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(out["promoted"]["version"], "v2");
    assert_eq!(out["promoted"]["image"], image(2));
    assert_eq!(
        target(&env),
        format!("{MODEL}.{}.svc.cluster.local", ns("v2"))
    );
    let switch_writes: Vec<_> = env.api.requests()[before..]
        .iter()
        .filter(|r| r.path.contains("/namespaces/wms-system/services"))
        .filter(|r| r.method != "GET")
        .cloned()
        .collect();
    assert_eq!(switch_writes.len(), 1, "{switch_writes:?}");
    assert_eq!(
        switch_writes[0].content_type,
        "application/apply-patch+yaml"
    );

    // v3 crashes: refused, and v2 keeps serving.
    env.refused(
        &version_args("promote", "v3", &[]),
        &[
            "version v3 is not Ready",
            "the promoted version keeps serving",
        ],
    );
    assert_eq!(
        target(&env),
        format!("{MODEL}.{}.svc.cluster.local", ns("v2"))
    );
    // A version never deployed.
    env.refused(&version_args("promote", "v9", &[]), &["no version v9"]);

    let out = env.ok(&["rollback", "--model", MODEL]);
    assert_eq!(out["promoted"]["version"], "v1");
    assert_eq!(
        target(&env),
        format!("{MODEL}.{}.svc.cluster.local", ns("v1"))
    );
    let history: Vec<Value> = serde_json::from_str(
        env.entry_point()["metadata"]["annotations"]["wms.io/promotion-history"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let actions: Vec<(String, String)> = history
        .iter()
        .map(|h| {
            (
                h["action"].as_str().unwrap().into(),
                h["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("promote".into(), "v1".into()),
            ("promote".into(), "v2".into()),
            ("rollback".into(), "v1".into())
        ]
    );
    // Nothing before v1.
    env.refused(
        &["rollback", "--model", MODEL],
        &["nothing to roll back to"],
    );
    let recs = env.records();
    assert_eq!(
        recs.iter()
            .filter(|r| r["task"] == "rollback" && r["outcome"] == "success")
            .count(),
        1
    );
    assert!(env.outputs().contains(&(
        "url".into(),
        format!("http://{MODEL}.wms-system.svc.cluster.local:8080")
    )));
}

#[test]
fn scale_and_config_re_apply_and_wait_and_config_rolls_the_pods() {
    let env = Env::fast();
    env.apply("v1", 1, &[]);
    env.ok(&version_args("scale", "v1", &["--replicas", "3"]));
    let d = env.deployment("v1");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["status"]["readyReplicas"], 3);
    let hpa = env
        .api
        .object(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            &ns("v1"),
            MODEL,
        )
        .unwrap();
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert!(hpa["spec"]["maxReplicas"].as_i64().unwrap() >= 3);

    let hash = |d: &Value| {
        d["spec"]["template"]["metadata"]["annotations"]["wms.io/config-sha256"].clone()
    };
    let before = hash(&d);
    let pods_before: Vec<String> = pod_names(&env, "v1");
    env.ok(&version_args(
        "config",
        "v1",
        &["--set", "batch_size=8", "--set", "max_batch_delay=50"],
    ));
    let text = env.serve_config("v1");
    assert!(text.contains("\nbatch_size=8\n"), "{text}");
    assert!(text.contains("\nmax_batch_delay=50\n"), "{text}");
    assert!(!text.contains("batch_size=4"), "{text}");
    let d = env.deployment("v1");
    assert_ne!(hash(&d), before);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 3);
    // New pods: none of the old ones serve any more.
    let pods_after = pod_names(&env, "v1");
    assert_eq!(pods_after.len(), 3, "{pods_after:?}");
    assert!(
        pods_after.iter().all(|p| !pods_before.contains(p)),
        "{pods_before:?} {pods_after:?}"
    );
    let tasks: Vec<String> = env
        .records()
        .iter()
        .map(|r| r["task"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tasks, ["deploy", "scale", "config"]);

    env.refused(
        &version_args("config", "v1", &["--set", "nokey"]),
        &["--set \"nokey\""],
    );
    env.refused(
        &version_args("scale", "v7", &["--replicas", "2"]),
        &["no version v7"],
    );
}

fn pod_names(env: &Env, version: &str) -> Vec<String> {
    let namespace = ns(version);
    env.api
        .objects("pods")
        .into_iter()
        .filter(|p| p["metadata"]["namespace"] == namespace.as_str())
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn cleanup_keeps_the_promoted_and_previous_versions_and_reports_a_stuck_namespace() {
    let env = Env::fast();
    for (i, v) in ["v1", "v2", "v3", "v4", "v5"].into_iter().enumerate() {
        env.apply(v, i as u8 + 1, &[]);
        // Distinct creation times (the server stamps seconds).
        std::thread::sleep(Duration::from_millis(1050));
    }
    env.ok(&version_args("promote", "v1", &[]));
    env.ok(&version_args("promote", "v2", &[]));
    env.api.stuck_terminating(&ns("v3"));
    env.refused(
        &["cleanup", "--model", MODEL, "--keep", "1", "--wait", "2s"],
        &[
            format!("namespace {} is stuck Terminating", ns("v3")).as_str(),
            "example.com/block",
        ],
    );

    env.api.release_terminating(&ns("v3"));
    let out = env.ok(&["cleanup", "--model", MODEL, "--keep", "1", "--wait", "20s"]);
    let deleted: Vec<&str> = out["cleanup"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // v3 may already be gone once its finalizer went; nothing else is deleted now.
    assert!(deleted.iter().all(|d| *d == ns("v3")), "{out}");
    for v in ["v1", "v2", "v5"] {
        assert!(
            env.api.object("", "v1", "namespaces", "", &ns(v)).is_some(),
            "{v}"
        );
    }
    for v in ["v3", "v4"] {
        assert!(
            env.api.object("", "v1", "namespaces", "", &ns(v)).is_none(),
            "{v}"
        );
    }
    // v4 went in the first (failed) run already; both runs are cleanup records.
    let recs = env.records();
    assert_eq!(recs.iter().filter(|r| r["task"] == "cleanup").count(), 2);
}

#[test]
fn status_json_lists_versions_readiness_digests_and_the_promoted_one() {
    let env = Env::failing_fast();
    env.apply("v1", 1, &[]);
    env.api.set_outcome(&ns("v2"), Outcome::ImagePullBackOff);
    let img = image(2);
    env.fails(&apply_args("v2", &img, &[]));
    env.ok(&version_args("promote", "v1", &[]));
    let out = env.ok(&["status", "--output", "json"]);
    let versions = out["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{out}");
    let v1 = versions.iter().find(|v| v["version"] == "v1").unwrap();
    let v2 = versions.iter().find(|v| v["version"] == "v2").unwrap();
    assert_eq!(v1["ready"], true);
    assert_eq!(v1["promoted"], true);
    assert_eq!(v1["image"], image(1));
    assert_eq!(v1["namespace"], ns("v1"));
    assert_eq!(v2["ready"], false);
    assert_eq!(v2["promoted"], false);
    assert!(v2["rollout"].as_str().unwrap().contains("failed"), "{v2}");
    let ep = &out["entry_points"][0];
    assert_eq!(ep["model"], MODEL);
    assert_eq!(ep["promoted"], "v1");
    // status only reads: no record, no lock.
    assert!(
        env.records()
            .iter()
            .all(|r| r["task"] != "debug" || r["outcome"] == "success")
    );
    let text = env.command(&["status"]).ok().stdout();
    assert!(text.contains("NAMESPACE"), "{text}");
    assert!(text.contains(&ns("v1")), "{text}");
}

#[test]
fn a_second_deploy_waits_for_the_lease_and_fails_naming_its_holder() {
    let env = Env::new(Options {
        ready_after: Duration::from_millis(2500),
        ..Options::default()
    });
    let img1 = image(1);
    let mut first: Child = env
        .command(&apply_args("v1", &img1, &["--wait", "30s"]))
        .into_command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.api.wait_until(
        "the first deploy to hold the lease",
        Duration::from_secs(20),
        |a| lease(a).is_some_and(|l| l["spec"]["holderIdentity"].is_string()),
    );
    let img2 = image(2);
    let started = Instant::now();
    let stderr = env.fails(&apply_args("v2", &img2, &["--lock-timeout", "1s"]));
    assert!(started.elapsed() >= Duration::from_secs(1));
    let line = error_line(&stderr);
    assert!(
        line.contains("the deploy lock wms-system/wms-deploy is held by wms deploy apply on"),
        "{line}"
    );
    assert!(line.contains("--lock-timeout"), "{line}");
    assert!(
        env.api
            .object("", "v1", "namespaces", "", &ns("v2"))
            .is_none(),
        "the second deploy wrote before it had the lock"
    );
    // With time to wait, the second runs once the first is done.
    env.ok(&apply_args("v2", &img2, &["--lock-timeout", "60s"]));
    assert!(first.wait().unwrap().success());
    let lease = lease(&env.api).expect("the deploy Lease");
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    assert!(
        lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 1,
        "{lease}"
    );
}

/// The deploy lock: Lease `wms-system/wms-deploy`.
fn lease(api: &KubeApi) -> Option<Value> {
    api.object(
        "coordination.k8s.io",
        "v1",
        "leases",
        "wms-system",
        "wms-deploy",
    )
}

/// The deploy lock held by `holder` for `seconds` from `renewed` (RFC 3339), as another deploy
/// would leave it.
fn hold_lease(api: &KubeApi, holder: &str, seconds: u64, renewed: &str) {
    api.create(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "wms-system"}}));
    api.create(
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "wms-deploy", "namespace": "wms-system"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                 "renewTime": renewed}}),
    );
}

#[test]
fn an_expired_lease_is_taken_over() {
    let env = Env::fast();
    hold_lease(
        &env.api,
        "a crashed deploy",
        5,
        "2020-01-01T00:00:00.000000Z",
    );
    env.apply("v1", 1, &["--lock-timeout", "1s"]);
    let lease = lease(&env.api).expect("the deploy Lease");
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

#[test]
fn a_live_lease_of_someone_else_is_waited_for_then_named() {
    let env = Env::fast();
    let now = wms::timing::Timestamp::now().rfc3339();
    hold_lease(&env.api, "a person's laptop", 600, &now);
    let img = image(1);
    env.refused(
        &apply_args("v1", &img, &["--lock-timeout", "1s"]),
        &["held by a person's laptop (waited 1 s)"],
    );
}

#[test]
fn unreachable_unauthorized_and_forbidden_are_one_line_naming_context_and_permission() {
    let env = Env::new(Options {
        token: Some("right".into()),
        ready_after: Duration::from_millis(100),
        ..Options::default()
    });
    let img = image(1);
    let args = apply_args("v1", &img, &[]);

    // Forbidden: the real RBAC text, and the verb and resource to grant.
    env.api.deny("patch", "deployments", "*");
    env.refused(
        &args,
        &[
            "context ci may not patch deployments.apps",
            "403 Forbidden",
            "grant that identity the RBAC verb `patch`",
        ],
    );
    env.api.allow_all();

    // Unauthorized: a wrong token.
    let text = fs_err::read_to_string(&env.kubeconfig)
        .unwrap()
        .replace("right", "wrong");
    let bad = env.dir.path().join("bad-kubeconfig");
    fs_err::write(&bad, text).unwrap();
    let stderr = env.command(&args).env("KUBECONFIG", &bad).fails(1).stderr();
    let line = error_line(&stderr);
    assert!(
        line.contains("refused the credentials of context ci (401"),
        "{line}"
    );

    // Unreachable: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = fs_err::read_to_string(&env.kubeconfig)
        .unwrap()
        .replace(&env.api.url(), &format!("http://127.0.0.1:{port}"));
    let gone = env.dir.path().join("gone-kubeconfig");
    fs_err::write(&gone, text).unwrap();
    let stderr = env
        .command(&args)
        .env("KUBECONFIG", &gone)
        .fails(1)
        .stderr();
    let line = error_line(&stderr);
    assert!(
        line.contains(&format!(
            "cannot reach the Kubernetes API server http://127.0.0.1:{port}/ (context ci)"
        )),
        "{line}"
    );

    // A context that does not exist.
    env.refused(
        &[&args[..], &["--context", "nope"]].concat(),
        &["kubeconfig context \"nope\""],
    );
}

#[test]
fn names_that_are_not_dns_safe_and_tags_are_refused_before_any_request() {
    let env = Env::fast();
    let img = image(1);
    env.refused(
        &apply_args("V1.2", &img, &[]),
        &["--version \"V1.2\" is not a DNS-1123 label"],
    );
    env.refused(
        &apply_args("v1", "127.0.0.1:5000/meters:v1", &[]),
        &["--allow-tag"],
    );
    assert!(
        env.api.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        env.api.requests()
    );
    env.apply("v1", 0, &["--wait", "0"]);
    env.command(&version_args(
        "render",
        "v2",
        &["--image", "r/m:v2", "--allow-tag"],
    ))
    .ok();
}

#[test]
fn render_prints_the_objects_apply_applies() {
    let env = Env::fast();
    let img = image(1);
    let yaml = env
        .command(&version_args("render", "v1", &["--image", &img]))
        .ok()
        .stdout();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 12);
    env.apply("v1", 1, &["--wait", "0"]);
    for doc in &docs {
        let (g, v) = doc["apiVersion"]
            .as_str()
            .unwrap()
            .split_once('/')
            .unwrap_or(("", doc["apiVersion"].as_str().unwrap()));
        let plural = match doc["kind"].as_str().unwrap() {
            "Namespace" => "namespaces",
            "ResourceQuota" => "resourcequotas",
            "LimitRange" => "limitranges",
            "NetworkPolicy" => "networkpolicies",
            "ServiceAccount" => "serviceaccounts",
            "ConfigMap" => "configmaps",
            "Deployment" => "deployments",
            "Service" => "services",
            "HorizontalPodAutoscaler" => "horizontalpodautoscalers",
            "PodDisruptionBudget" => "poddisruptionbudgets",
            k => panic!("{k}"),
        };
        let live = env
            .api
            .object(
                g,
                v,
                plural,
                doc["metadata"]["namespace"].as_str().unwrap_or(""),
                doc["metadata"]["name"].as_str().unwrap(),
            )
            .unwrap();
        // What render printed is what the server holds (it may add defaults).
        for key in ["spec", "data", "automountServiceAccountToken"] {
            if let Some(want) = doc.get(key) {
                assert!(
                    contains(&live[key], want),
                    "{} {key}: {} vs {}",
                    doc["kind"],
                    live[key],
                    want
                );
            }
        }
    }
}

/// Whether `have` holds every field of `want` (objects recursively; other values equal).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        _ => have == want,
    }
}

/// A small ONNX model named `meters`, exported by wms itself.
fn model_file(dir: &Path) -> PathBuf {
    crate::util::small_model(&dir.join("meters.onnx"), 3, (64, 48), "1")
}

/// A real wms-serve on loopback; killed on drop.
struct Serve {
    _process: crate::util::ServeProcess,
    addr: SocketAddr,
}

fn start_serve(model: &Path) -> Serve {
    let process = crate::util::ServeProcess::start(model, &[]);
    let addr: SocketAddr = process
        .inference
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // Wait until the model is loaded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read as _, Write as _};
            let _ = s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "wms-serve not healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve {
        _process: process,
        addr,
    }
}

#[test]
fn the_smoke_test_reaches_a_real_wms_serve_through_the_service_proxy() {
    let env = Env::fast();
    let model = model_file(env.dir.path());
    let serve = start_serve(&model);
    env.api
        .set_proxy_backend(&ns("v1"), MODEL, 8080, serve.addr);
    let photo_path = env.dir.path().join("photo.png");
    image::RgbImage::from_fn(90, 70, |x, y| image::Rgb([x as u8 * 2, y as u8 * 3, 128]))
        .save(&photo_path)
        .unwrap();
    let out = env.apply(
        "v1",
        1,
        &[
            "--onnx",
            model.to_str().unwrap(),
            "--smoke-test",
            photo_path.to_str().unwrap(),
        ],
    );
    assert_eq!(out["smoke_test"]["ping"], "Healthy", "{out}");
    assert_eq!(out["smoke_test"]["mask_size"], json!([90, 70]), "{out}");
    let proxied = || -> Vec<(String, String)> {
        env.api
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/services/http:meters:8080/proxy/"))
            .map(|r| (r.method, r.path))
            .collect()
    };
    assert_eq!(
        proxied(),
        [
            (
                "GET".to_string(),
                format!(
                    "/api/v1/namespaces/{}/services/http:meters:8080/proxy/ping",
                    ns("v1")
                )
            ),
            (
                "POST".to_string(),
                format!(
                    "/api/v1/namespaces/{}/services/http:meters:8080/proxy/predictions/meters",
                    ns("v1")
                )
            ),
        ]
    );
    // The metrics of the model's metadata are annotated on the namespace.
    let n = env
        .api
        .object("", "v1", "namespaces", "", &ns("v1"))
        .unwrap();
    assert!(
        n["metadata"]["annotations"]["wms.io/metrics"].is_string(),
        "{n}"
    );

    // A server that is down: the proxy answers 503 and the smoke test fails at once naming the
    // proxy path, after one request (the client's default retry of 503s took about 5 minutes).
    drop(serve);
    let before = proxied().len();
    let img = image(1);
    let ping = "/api/v1/namespaces/wms-meters-v1/services/http:meters:8080/proxy/ping";
    env.refused(
        &apply_args("v1", &img, &["--smoke-ping"]),
        &[format!("smoke test of {ping} failed").as_str(), "503"],
    );
    assert_eq!(
        proxied()[before..],
        [(
            "GET".to_string(),
            format!(
                "/api/v1/namespaces/{}/services/http:meters:8080/proxy/ping",
                ns("v1")
            )
        )],
        "the smoke test must not retry"
    );
}

#[test]
fn the_action_script_passes_inputs_as_arguments_never_as_shell() {
    let env = Env::fast();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("actions/deploy-namespace/deploy.sh");
    let wms_dir = Path::new(env!("CARGO_BIN_EXE_wms")).parent().unwrap();
    let path = format!(
        "{}:{}",
        wms_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pwned = env.dir.path().join("pwned");
    let run = |vars: &[(&str, String)]| {
        TestCommand::external("bash")
            .arg(&script)
            .env("PATH", &path)
            .env("KUBECONFIG", &env.kubeconfig)
            .env("WMS_TIMING_DIR", env.dir.path().join("records"))
            .env("GITHUB_OUTPUT", env.dir.path().join("github_output"))
            .env_remove("GITHUB_ACTIONS")
            .envs(vars.iter().map(|(k, v)| (k, v)))
    };
    run(&[
        ("IN_COMMAND", "apply".into()),
        ("IN_IMAGE", image(1)),
        ("IN_VERSION", "v1".into()),
        ("IN_MODEL", MODEL.into()),
        ("IN_WAIT", "30s".into()),
        ("IN_NAMESPACE_PREFIX", "wms-".into()),
        ("IN_SYSTEM_NAMESPACE", "wms-system".into()),
        ("IN_FORCE", "false".into()),
    ])
    .ok();
    let hostile = format!(
        "job_queue_size=$(touch {})`touch {}`",
        pwned.display(),
        pwned.display()
    );
    run(&[
        ("IN_COMMAND", "config".into()),
        ("IN_VERSION", "v1".into()),
        ("IN_MODEL", MODEL.into()),
        ("IN_SET", format!("batch_size=8\r\n\n{hostile}\n")),
    ])
    .ok();
    assert!(!pwned.exists(), "an input ran as shell");
    let text = env.serve_config("v1");
    assert!(text.contains("\nbatch_size=8\n"), "{text}");
    assert!(text.contains(&format!("\n{hostile}\n")), "{text}");
    run(&[("IN_COMMAND", "delete-everything".into())]).fails(2);
    let outputs = env.outputs();
    assert!(
        outputs.contains(&("namespace".into(), ns("v1"))),
        "{outputs:?}"
    );
}
