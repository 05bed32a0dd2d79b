//! The machine's real `kubectl` (1.32) pointed at the in-test Kubernetes API server
//! (`kubeapi`): server-side apply and its conflicts, rollout status against the simulated
//! Deployment controller, pod failure reasons and logs, scale, rollout undo, and namespace
//! deletion. What kubectl accepts from the stand-in keeps it honest.
//!
//! Every `kubectl apply` here passes `--validate=false`: by default kubectl first downloads
//! `/openapi/v3` (to see whether the server validates fields itself) and then `/openapi/v2` as
//! protobuf for client-side validation; the stand-in serves no OpenAPI documents and does no
//! schema validation, so the flag says exactly that. Server-side apply itself needs no OpenAPI.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::kubeapi::{KubeApi, Options, Outcome};

const KUBECTL: &str = "kubectl";

struct Kubectl {
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(api: &KubeApi) -> Kubectl {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = api.write_kubeconfig(dir.path(), "ci");
        Kubectl { kubeconfig, dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .output()
            .expect("run kubectl (preinstalled 1.32 at /usr/bin/kubectl)")
    }

    /// Run and require success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// Run and require failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "kubectl {args:?} succeeded:\n{}",
            text(&o.stdout)
        );
        text(&o.stderr)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl -o json prints JSON")
    }

    fn file(&self, name: &str, yaml: &str) -> String {
        let p = self.dir.path().join(name);
        fs_err::write(&p, yaml).expect("write manifest");
        p.display().to_string()
    }

    fn apply(&self, manager: &str, file: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "apply",
            "--server-side",
            "--validate=false",
            "--field-manager",
            manager,
            "-f",
            file,
        ];
        args.extend(extra);
        self.run(&args)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn deployment_yaml(ns: &str, name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: serve
        image: {image}
        ports:
        - containerPort: 8080
"
    )
}

fn namespace_yaml(ns: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")
}

fn fast() -> Options {
    Options {
        ready_after: Duration::from_millis(100),
        ..Options::default()
    }
}

#[test]
fn server_side_apply_creates_objects_and_conflicts_name_the_other_manager() {
    let api = KubeApi::start(fast());
    let k = Kubectl::new(&api);
    let objects = k.file(
        "objects.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config\n  namespace: m1\ndata:\n  batch: \"4\"\n---\n{}",
            namespace_yaml("m1"),
            deployment_yaml("m1", "web", "registry.local/wms@sha256:aa", 2)
        ),
    );
    let o = k.apply("wms", &objects, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for line in [
        "namespace/m1 serverside-applied",
        "configmap/config serverside-applied",
        "deployment.apps/web serverside-applied",
    ] {
        assert!(out.contains(line), "{out}");
    }
    let cm = k.json(&[
        "get",
        "configmap",
        "config",
        "-n",
        "m1",
        "--show-managed-fields",
    ]);
    assert_eq!(cm["data"]["batch"], "4");
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "wms");
    let d = k.json(&["get", "deployment", "web", "-n", "m1"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/wms@sha256:aa"
    );

    let other = k.file(
        "other.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config\n  namespace: m1\ndata:\n  batch: \"8\"\n",
    );
    let o = k.apply("ops", &other, &[]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"wms\": .data.batch"),
        "{err}"
    );
    // kubectl's own advice after a server-side apply conflict.
    assert!(err.contains("--force-conflicts"), "{err}");
    assert_eq!(
        api.object("", "v1", "configmaps", "m1", "config").unwrap()["data"]["batch"],
        "4"
    );

    let o = k.apply("ops", &other, &["--force-conflicts"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let cm = k.json(&[
        "get",
        "configmap",
        "config",
        "-n",
        "m1",
        "--show-managed-fields",
    ]);
    assert_eq!(cm["data"]["batch"], "8");
    let managers: Vec<&str> = cm["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(
        managers,
        ["ops"],
        "wms owned only data.batch, which moved to ops"
    );
    // What kubectl sent: apply patches, with the manager and force where asked.
    let applies: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.content_type == "application/apply-patch+yaml")
        .map(|r| r.query)
        .collect();
    assert!(
        applies
            .iter()
            .any(|q| q.contains("fieldManager=ops") && q.contains("force=true")),
        "{applies:?}"
    );
}

#[test]
fn rollout_status_succeeds_when_available_and_fails_past_the_progress_deadline() {
    let api = KubeApi::start(fast());
    api.set_outcome("slow", Outcome::ProgressDeadlineExceeded);
    let k = Kubectl::new(&api);
    for ns in ["good", "slow"] {
        let f = k.file(
            &format!("{ns}.yaml"),
            &format!(
                "{}---\n{}",
                namespace_yaml(ns),
                deployment_yaml(ns, "web", "registry.local/wms@sha256:bb", 2)
            ),
        );
        let o = k.apply("wms", &f, &[]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let out = k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "good",
        "--timeout=20s",
    ]);
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let err = k.fails(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "slow",
        "--timeout=20s",
    ]);
    assert!(
        err.contains("error: deployment \"web\" exceeded its progress deadline"),
        "{err}"
    );
}

#[test]
fn rollout_status_survives_watch_streams_that_end_early() {
    let api = KubeApi::start(Options {
        ready_after: Duration::from_millis(600),
        ..Options::default()
    });
    let k = Kubectl::new(&api);
    let f = k.file(
        "d.yaml",
        &format!(
            "{}---\n{}",
            namespace_yaml("m1"),
            deployment_yaml("m1", "web", "registry.local/wms@sha256:cc", 3)
        ),
    );
    assert!(k.apply("wms", &f, &[]).status.success());
    api.end_watches_after(1);
    let out = k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "m1",
        "--timeout=20s",
    ]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let watches = api
        .requests()
        .iter()
        .filter(|r| r.query.contains("watch=true") && r.path.ends_with("/deployments"))
        .count();
    assert!(
        watches >= 2,
        "kubectl re-watched after the server closed the stream: {watches} watches"
    );
}

#[test]
fn get_pods_and_logs_show_why_pods_fail() {
    let api = KubeApi::start(fast());
    let k = Kubectl::new(&api);
    let cases = [
        ("pull", Outcome::ImagePullBackOff, "ImagePullBackOff"),
        ("crash", Outcome::CrashLoopBackOff, "CrashLoopBackOff"),
        ("oom", Outcome::OOMKilled, "CrashLoopBackOff"),
    ];
    for (ns, outcome, _) in cases {
        api.set_outcome(ns, outcome);
        let f = k.file(
            &format!("{ns}.yaml"),
            &format!(
                "{}---\n{}",
                namespace_yaml(ns),
                deployment_yaml(ns, "web", "registry.local/wms@sha256:dd", 1)
            ),
        );
        assert!(k.apply("wms", &f, &[]).status.success());
    }
    api.set_outcome("sched", Outcome::Unschedulable);
    let f = k.file(
        "sched.yaml",
        &format!(
            "{}---\n{}",
            namespace_yaml("sched"),
            deployment_yaml("sched", "web", "registry.local/wms@sha256:dd", 1)
        ),
    );
    assert!(k.apply("wms", &f, &[]).status.success());
    api.set_logs("crash", &["loading model", "Error: model file missing"]);
    api.wait_until("pods settle", Duration::from_secs(10), |a| {
        a.objects("pods")
            .iter()
            .filter(|p| p["status"]["conditions"].is_array())
            .count()
            == 4
    });
    for (ns, _, reason) in cases {
        let pods = k.json(&["get", "pods", "-n", ns]);
        let st = &pods["items"][0]["status"]["containerStatuses"][0];
        assert_eq!(st["state"]["waiting"]["reason"], reason, "{ns}: {st}");
    }
    let oom = k.json(&["get", "pods", "-n", "oom"]);
    assert_eq!(
        oom["items"][0]["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"],
        "OOMKilled"
    );
    let sched = k.json(&["get", "pods", "-n", "sched"]);
    let cond = &sched["items"][0]["status"]["conditions"][0];
    assert_eq!(
        (cond["type"].as_str(), cond["reason"].as_str()),
        (Some("PodScheduled"), Some("Unschedulable"))
    );

    let pod = |ns: &str| {
        api.objects("pods")
            .into_iter()
            .find(|p| p["metadata"]["namespace"] == ns)
            .unwrap()["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let logs = k.ok(&["logs", &pod("crash"), "-n", "crash", "--tail=1"]);
    assert_eq!(logs, "Error: model file missing\n");
    let err = k.fails(&["logs", &pod("pull"), "-n", "pull"]);
    assert!(
        err.contains("is waiting to start: trying and failing to pull image"),
        "{err}"
    );
}

#[test]
fn scale_and_rollout_undo_go_through_the_controller() {
    let api = KubeApi::start(fast());
    let k = Kubectl::new(&api);
    let v1 = k.file(
        "v1.yaml",
        &format!(
            "{}---\n{}",
            namespace_yaml("m1"),
            deployment_yaml("m1", "web", "registry.local/wms@sha256:01", 1)
        ),
    );
    assert!(k.apply("wms", &v1, &[]).status.success());
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "m1",
        "--timeout=20s",
    ]);
    k.ok(&["scale", "deployment/web", "-n", "m1", "--replicas=3"]);
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "m1",
        "--timeout=20s",
    ]);
    assert_eq!(
        k.json(&["get", "deployment", "web", "-n", "m1"])["status"]["availableReplicas"],
        3
    );

    let v2 = k.file(
        "v2.yaml",
        &deployment_yaml("m1", "web", "registry.local/wms@sha256:02", 3),
    );
    assert!(k.apply("wms", &v2, &["--force-conflicts"]).status.success());
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "m1",
        "--timeout=20s",
    ]);
    let out = k.ok(&["rollout", "undo", "deployment/web", "-n", "m1"]);
    assert!(out.contains("deployment.apps/web rolled back"), "{out}");
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "m1",
        "--timeout=20s",
    ]);
    let d = k.json(&["get", "deployment", "web", "-n", "m1"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/wms@sha256:01"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let history = k.ok(&["rollout", "history", "deployment/web", "-n", "m1"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");
}

#[test]
fn delete_namespace_goes_through_terminating() {
    let api = KubeApi::start(Options {
        namespace_delete_delay: Duration::from_millis(1500),
        ..fast()
    });
    let k = Kubectl::new(&api);
    let f = k.file(
        "ns.yaml",
        &format!(
            "{}---\n{}",
            namespace_yaml("m1"),
            deployment_yaml("m1", "web", "registry.local/wms@sha256:ee", 1)
        ),
    );
    assert!(k.apply("wms", &f, &[]).status.success());
    k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "m1",
        "--timeout=20s",
    ]);
    let out = k.ok(&["delete", "namespace", "m1", "--wait=false"]);
    assert!(out.contains("namespace \"m1\" deleted"), "{out}");
    let ns = k.json(&["get", "namespace", "m1"]);
    assert_eq!(ns["status"]["phase"], "Terminating");
    k.ok(&["wait", "--for=delete", "namespace/m1", "--timeout=20s"]);
    let err = k.fails(&["get", "namespace", "m1"]);
    assert!(err.contains("namespaces \"m1\" not found"), "{err}");
    assert!(api.objects("pods").is_empty() && api.objects("deployments").is_empty());
}

/// kubectl sends no bearer token over plain HTTP, so against a token-checking stand-in it gets
/// the 401 `Status` and says what it says for a real server's 401.
#[test]
fn kubectl_reports_unauthorized_and_forbidden_as_for_a_real_server() {
    let locked = KubeApi::start(Options {
        token: Some("t0k3n".into()),
        ..fast()
    });
    let err = Kubectl::new(&locked).fails(&["get", "namespaces", "-o", "json"]);
    assert!(
        err.contains("error: You must be logged in to the server (the server has asked for the client to provide credentials)"),
        "{err}"
    );

    let api = KubeApi::start(fast());
    let k = Kubectl::new(&api);
    api.deny("get", "configmaps", "default");
    let err = k.fails(&["get", "configmap", "x", "-o", "json"]);
    assert!(
        err.contains(
            "Error from server (Forbidden): configmaps \"x\" is forbidden: User \"system:serviceaccount:ci:deployer\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\""
        ),
        "{err}"
    );
    api.deny("patch", "deployments", "m1");
    let f = k.file(
        "d.yaml",
        &format!(
            "{}---\n{}",
            namespace_yaml("m1"),
            deployment_yaml("m1", "web", "r/w@sha256:ff", 1)
        ),
    );
    let o = k.apply("wms", &f, &[]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("deployments.apps \"web\" is forbidden: User \"system:serviceaccount:ci:deployer\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"m1\""),
        "{err}"
    );
}
