//! Raw-HTTP tests of the stand-in: the status codes, messages and streams the real API server
//! gives for the same requests.

use std::io::{BufRead as _, BufReader};
use std::time::Duration;

use serde_json::{Value, json};

use super::{KubeApi, Options, Outcome};

/// One request; returns (status, JSON body or the text as a JSON string).
pub fn call(
    api: &KubeApi,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    call_with(api, method, path, content_type, body, None)
}

fn call_with(
    api: &KubeApi,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let mut req = client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", api.url()),
        )
        .header("Content-Type", content_type)
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    let code = resp.status().as_u16();
    let text = resp.text().unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const JSON: &str = "application/json";
const APPLY: &str = "application/apply-patch+yaml";

fn namespace(api: &KubeApi, ns: &str) {
    let (code, v) = call(
        api,
        "POST",
        "/api/v1/namespaces",
        JSON,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).to_string(),
    );
    assert_eq!(code, 201, "{v}");
}

fn deployment(name: &str, image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "serve", "image": image, "ports": [{"containerPort": 8080, "name": "http"}]}]}}}
    })
}

fn apply(api: &KubeApi, path: &str, manager: &str, force: bool, obj: &Value) -> (u16, Value) {
    let q = format!(
        "{path}?fieldManager={manager}{}",
        if force { "&force=true" } else { "" }
    );
    call(api, "PATCH", &q, APPLY, &obj.to_string())
}

#[test]
fn create_get_update_conflict_and_missing_namespace() {
    let api = KubeApi::start(Options::default());
    namespace(&api, "m1");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    let (code, created) = call(
        &api,
        "POST",
        "/api/v1/namespaces/m1/configmaps",
        JSON,
        &cm.to_string(),
    );
    assert_eq!(code, 201, "{created}");
    assert!(
        created["metadata"]["uid"].is_string()
            && created["metadata"]["creationTimestamp"].is_string()
    );
    let rv1 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let (code, again) = call(
        &api,
        "POST",
        "/api/v1/namespaces/m1/configmaps",
        JSON,
        &cm.to_string(),
    );
    assert_eq!(
        (code, again["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(again["message"], "configmaps \"c\" already exists");

    let mut update = created.clone();
    update["data"]["a"] = json!("2");
    let (code, updated) = call(
        &api,
        "PUT",
        "/api/v1/namespaces/m1/configmaps/c",
        JSON,
        &update.to_string(),
    );
    assert_eq!(code, 200, "{updated}");
    assert_ne!(
        updated["metadata"]["resourceVersion"].as_str().unwrap(),
        rv1
    );
    // The same body again carries the old resourceVersion: someone else has written since.
    let (code, stale) = call(
        &api,
        "PUT",
        "/api/v1/namespaces/m1/configmaps/c",
        JSON,
        &update.to_string(),
    );
    assert_eq!(code, 409, "{stale}");
    assert_eq!(
        stale["message"],
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let (code, got) = call(&api, "GET", "/api/v1/namespaces/m1/configmaps/c", "", "");
    assert_eq!((code, &got["data"]["a"]), (200, &json!("2")));

    let (code, missing) = call(
        &api,
        "POST",
        "/api/v1/namespaces/nope/configmaps",
        JSON,
        &cm.to_string(),
    );
    assert_eq!(
        (code, missing["message"].as_str()),
        (404, Some("namespaces \"nope\" not found"))
    );
    let (code, bad) = call(
        &api,
        "POST",
        "/api/v1/namespaces",
        JSON,
        &json!({"metadata": {"name": "Bad_Name"}}).to_string(),
    );
    assert_eq!(code, 422, "{bad}");
    assert!(bad["message"].as_str().unwrap().starts_with("Namespace \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"));
}

#[test]
fn lease_update_race_has_one_winner() {
    let api = KubeApi::start(Options::default());
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "wms-deploy"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 30}});
    let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let (code, l) = call(&api, "POST", path, JSON, &lease.to_string());
    assert_eq!(code, 201, "{l}");
    let mut codes = Vec::new();
    for holder in ["b", "c"] {
        let mut take = l.clone();
        take["spec"]["holderIdentity"] = json!(holder);
        codes.push(
            call(
                &api,
                "PUT",
                &format!("{path}/wms-deploy"),
                JSON,
                &take.to_string(),
            )
            .0,
        );
    }
    assert_eq!(codes, [200, 409]);
    let l = api
        .object(
            "coordination.k8s.io",
            "v1",
            "leases",
            "default",
            "wms-deploy",
        )
        .unwrap();
    assert_eq!(l["spec"]["holderIdentity"], "b");
}

#[test]
fn server_side_apply_ownership_conflict_and_force() {
    let api = KubeApi::start(Options::default());
    namespace(&api, "m1");
    let path = "/apis/apps/v1/namespaces/m1/deployments/web";
    let (code, v) = apply(
        &api,
        path,
        "wms",
        false,
        &deployment("web", "r/web@sha256:aa", 2),
    );
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["metadata"]["generation"], 1);
    let mf = &v["metadata"]["managedFields"][0];
    assert_eq!(
        (mf["manager"].as_str(), mf["operation"].as_str()),
        (Some("wms"), Some("Apply"))
    );
    assert!(
        mf["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"serve\"}"]
            ["f:image"]
            .is_object(),
        "{mf}"
    );

    // The same apply again is a no-op: no new resourceVersion.
    let (code, same) = apply(
        &api,
        path,
        "wms",
        false,
        &deployment("web", "r/web@sha256:aa", 2),
    );
    assert_eq!(code, 200);
    assert_eq!(
        same["metadata"]["resourceVersion"],
        v["metadata"]["resourceVersion"]
    );

    let (code, conflict) = apply(
        &api,
        path,
        "other",
        false,
        &deployment("web", "r/web@sha256:bb", 3),
    );
    assert_eq!(code, 409, "{conflict}");
    assert_eq!(conflict["reason"], "Conflict");
    assert_eq!(
        conflict["message"],
        "Apply failed with 2 conflicts: conflicts with \"wms\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"serve\"].image"
    );
    assert_eq!(conflict["details"]["causes"][0]["field"], ".spec.replicas");

    // Agreeing values are shared, not conflicts.
    let (code, shared) = apply(
        &api,
        path,
        "other",
        false,
        &deployment("web", "r/web@sha256:aa", 2),
    );
    assert_eq!(code, 200, "{shared}");

    let (code, forced) = apply(
        &api,
        path,
        "other",
        true,
        &deployment("web", "r/web@sha256:bb", 3),
    );
    assert_eq!(code, 200, "{forced}");
    assert_eq!(forced["spec"]["replicas"], 3);
    assert_eq!(forced["metadata"]["generation"], 2);
    let owners = |v: &Value, m: &str| {
        v["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == m)
            .cloned()
    };
    assert!(
        owners(&forced, "wms").unwrap()["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    assert!(owners(&forced, "other").unwrap()["fieldsV1"]["f:spec"]["f:replicas"].is_object());

    // An Update by a third manager takes the field; the applier then conflicts with it.
    let (code, scaled) = call(
        &api,
        "PATCH",
        &format!("{path}?fieldManager=kubectl-scale"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":5}}"#,
    );
    assert_eq!(code, 200, "{scaled}");
    let (code, c2) = apply(
        &api,
        path,
        "other",
        false,
        &deployment("web", "r/web@sha256:bb", 3),
    );
    assert_eq!(code, 409);
    assert_eq!(
        c2["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
    );

    // Dropping a field one owns alone removes it.
    let mut without_label = deployment("web", "r/web@sha256:bb", 5);
    without_label["metadata"]["labels"] = json!({"app": "web", "extra": "x"});
    apply(&api, path, "third", false, &without_label);
    without_label["metadata"]["labels"] = json!({"app": "web"});
    let (_, v) = apply(&api, path, "third", false, &without_label);
    assert!(v["metadata"]["labels"].get("extra").is_none(), "{v}");

    let (code, no_manager) = call(
        &api,
        "PATCH",
        path,
        APPLY,
        &deployment("web", "x", 1).to_string(),
    );
    assert_eq!(code, 422);
    assert!(
        no_manager["message"]
            .as_str()
            .unwrap()
            .contains("fieldManager: Required value")
    );
}

#[test]
fn strategic_merge_and_json_patch() {
    let api = KubeApi::start(Options::default());
    namespace(&api, "m1");
    let path = "/apis/apps/v1/namespaces/m1/deployments/web";
    let mut d = deployment("web", "img:1", 1);
    d["spec"]["template"]["spec"]["containers"] = json!([{"name": "a", "image": "img:1", "env": [{"name": "X", "value": "1"}]}, {"name": "b", "image": "side:1"}]);
    apply(&api, path, "wms", false, &d);
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}]}}}});
    let (code, v) = call(
        &api,
        "PATCH",
        path,
        "application/strategic-merge-patch+json",
        &smp.to_string(),
    );
    assert_eq!(code, 200, "{v}");
    let cs = v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 2, "containers merge by name");
    assert_eq!(
        cs[0]["env"].as_array().unwrap().len(),
        2,
        "env merges by name"
    );
    let jp = json!([{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "side:2"}, {"op": "test", "path": "/spec/replicas", "value": 1}]);
    let (code, v) = call(
        &api,
        "PATCH",
        path,
        "application/json-patch+json",
        &jp.to_string(),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][1]["image"],
        "side:2"
    );
    let (code, _) = call(&api, "PATCH", path, "text/plain", "{}");
    assert_eq!(code, 415);
}

/// Read watch lines until the server closes the stream (or `max` lines).
fn watch_lines(api: &KubeApi, path: &str, max: usize) -> Vec<Value> {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let resp = client.get(format!("{}{path}", api.url())).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut out = Vec::new();
    for line in BufReader::new(resp).lines() {
        let Ok(line) = line else { break };
        out.push(serde_json::from_str(&line).unwrap());
        if out.len() >= max {
            break;
        }
    }
    out
}

#[test]
fn watch_replays_from_resource_version_ends_on_request_and_expires_after_compaction() {
    let api = KubeApi::start(Options::default());
    namespace(&api, "w");
    let (_, list) = call(&api, "GET", "/api/v1/namespaces/w/configmaps", "", "");
    let rv0 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..3 {
        let cm = json!({"metadata": {"name": format!("c{i}")}, "data": {"i": i.to_string()}});
        call(
            &api,
            "POST",
            "/api/v1/namespaces/w/configmaps",
            JSON,
            &cm.to_string(),
        );
    }
    call(&api, "DELETE", "/api/v1/namespaces/w/configmaps/c0", "", "");
    api.end_watches_after(4);
    let events = watch_lines(
        &api,
        &format!("/api/v1/namespaces/w/configmaps?watch=1&resourceVersion={rv0}&labelSelector="),
        100,
    );
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    // kube-root-ca.crt comes from the root-CA controller; the stream closed after 4 events.
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(
        kinds.contains(&"ADDED c2".to_string()) && kinds.contains(&"DELETED c0".to_string()),
        "{kinds:?}"
    );
    let last_rv = events[3]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap();
    api.keep_watches_open();
    // Re-watching from the last seen resourceVersion gives nothing twice.
    let next = watch_lines(
        &api,
        &format!(
            "/api/v1/namespaces/w/configmaps?watch=1&resourceVersion={last_rv}&timeoutSeconds=1"
        ),
        100,
    );
    assert!(
        next.iter().all(|e| !kinds.contains(&format!(
            "{} {}",
            e["type"].as_str().unwrap(),
            e["object"]["metadata"]["name"].as_str().unwrap()
        ))),
        "{next:?}"
    );

    api.compact();
    let gone = watch_lines(
        &api,
        &format!("/api/v1/namespaces/w/configmaps?watch=1&resourceVersion={rv0}"),
        100,
    );
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["type"], "ERROR");
    assert_eq!(gone[0]["object"]["code"], 410);
    assert_eq!(gone[0]["object"]["reason"], "Expired");
    assert!(
        gone[0]["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {rv0} ("))
    );

    let bm = watch_lines(
        &api,
        &format!(
            "/api/v1/namespaces/w/configmaps?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=3",
            api.resource_version()
        ),
        1,
    );
    assert_eq!(bm[0]["type"], "BOOKMARK", "{bm:?}");
    assert!(bm[0]["object"]["metadata"]["resourceVersion"].is_string());
}

fn wait_deployment(api: &KubeApi, ns: &str, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    api.wait_until(
        &format!("deployment {ns}/{name}"),
        Duration::from_secs(10),
        |a| {
            a.object("apps", "v1", "deployments", ns, name)
                .is_some_and(|d| pred(&d))
        },
    );
    api.object("apps", "v1", "deployments", ns, name).unwrap()
}

fn condition<'a>(obj: &'a Value, t: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

#[test]
fn deployment_controller_available_scale_rollout_and_rollback() {
    let api = KubeApi::start(Options {
        ready_after: Duration::from_millis(100),
        ..Options::default()
    });
    namespace(&api, "m1");
    let path = "/apis/apps/v1/namespaces/m1/deployments/web";
    apply(
        &api,
        path,
        "wms",
        false,
        &deployment("web", "r/web@sha256:aa", 2),
    );
    let d = wait_deployment(&api, "m1", "web", |d| {
        condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
    });
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    for k in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        assert_eq!(d["status"][k], 2, "{k}: {}", d["status"]);
    }
    assert_eq!(condition(&d, "Available")["status"], "True");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let pods = api.objects("pods");
    assert_eq!(pods.len(), 2);
    let rs = api.objects("replicasets");
    assert_eq!(rs.len(), 1);
    let rs_name = rs[0]["metadata"]["name"].as_str().unwrap();
    for p in &pods {
        assert_eq!(p["metadata"]["labels"]["app"], "web");
        assert_eq!(p["metadata"]["ownerReferences"][0]["name"], rs_name);
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    }
    // EndpointSlices follow a Service's selector.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
    apply(
        &api,
        "/api/v1/namespaces/m1/services/web",
        "wms",
        false,
        &svc,
    );
    api.wait_until("endpointslice", Duration::from_secs(5), |a| {
        a.objects("endpointslices").iter().any(|s| {
            s["endpoints"].as_array().is_some_and(|e| e.len() == 2) && s["ports"][0]["port"] == 8080
        })
    });

    // Scale.
    let (code, scale) = call(
        &api,
        "PATCH",
        &format!("{path}/scale"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":3}}"#,
    );
    assert_eq!(code, 200, "{scale}");
    assert_eq!(scale["kind"], "Scale");
    let d = wait_deployment(&api, "m1", "web", |d| {
        d["status"]["availableReplicas"] == 3
            && d["status"]["observedGeneration"] == d["metadata"]["generation"]
    });
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    // A template change: a new ReplicaSet with revision 2; the old one goes to 0.
    apply(
        &api,
        path,
        "wms",
        true,
        &deployment("web", "r/web@sha256:bb", 3),
    );
    let d = wait_deployment(&api, "m1", "web", |d| {
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
            && condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
            && d["status"]["replicas"] == 3
    });
    assert_eq!(d["status"]["updatedReplicas"], 3);
    let rss = api.objects("replicasets");
    assert_eq!(rss.len(), 2);
    assert!(
        rss.iter()
            .any(|r| r["spec"]["replicas"] == 0 && r["metadata"]["name"] == rs_name)
    );
    assert_eq!(api.objects("pods").len(), 3);

    // Rollback the kubectl way: the old template back → the old ReplicaSet, revision 3.
    let old_template = rss
        .iter()
        .find(|r| r["metadata"]["name"] == rs_name)
        .unwrap()["spec"]["template"]
        .clone();
    let mut t = old_template.clone();
    t["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("pod-template-hash");
    let jp = json!([{"op": "replace", "path": "/spec/template", "value": t}]);
    let (code, v) = call(
        &api,
        "PATCH",
        path,
        "application/json-patch+json",
        &jp.to_string(),
    );
    assert_eq!(code, 200, "{v}");
    wait_deployment(&api, "m1", "web", |d| {
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
            && condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
    });
    let back = api
        .object("apps", "v1", "replicasets", "m1", rs_name)
        .unwrap();
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(back["spec"]["replicas"], 3);
}

#[test]
fn failing_outcomes_show_in_pods_and_logs() {
    let api = KubeApi::start(Options {
        ready_after: Duration::from_millis(50),
        ..Options::default()
    });
    let cases = [
        ("pull", Outcome::ImagePullBackOff),
        ("crash", Outcome::CrashLoopBackOff),
        ("oom", Outcome::OOMKilled),
        ("sched", Outcome::Unschedulable),
        ("slow", Outcome::ProgressDeadlineExceeded),
    ];
    for (ns, outcome) in cases {
        namespace(&api, ns);
        api.set_outcome(ns, outcome);
        apply(
            &api,
            &format!("/apis/apps/v1/namespaces/{ns}/deployments/web"),
            "wms",
            false,
            &deployment("web", "r/web@sha256:cc", 1),
        );
    }
    api.set_logs("crash", &["one", "two", "boom"]);
    api.wait_until("pods settle", Duration::from_secs(10), |a| {
        a.objects("pods")
            .iter()
            .filter(|p| p["status"]["conditions"].is_array())
            .count()
            == cases.len()
    });
    let pod = |ns: &str| {
        api.objects("pods")
            .into_iter()
            .find(|p| p["metadata"]["namespace"] == ns)
            .unwrap()
    };
    let waiting =
        |ns: &str| pod(ns)["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone();
    assert_eq!(waiting("pull"), "ImagePullBackOff");
    assert_eq!(waiting("crash"), "CrashLoopBackOff");
    assert_eq!(
        pod("crash")["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        1
    );
    assert_eq!(
        pod("oom")["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"],
        "OOMKilled"
    );
    assert_eq!(
        pod("oom")["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );
    let sched = condition(&pod("sched"), "PodScheduled").clone();
    assert_eq!(
        (sched["status"].as_str(), sched["reason"].as_str()),
        (Some("False"), Some("Unschedulable"))
    );
    let d = wait_deployment(&api, "slow", "web", |d| {
        condition(d, "Progressing")["status"] == "False"
    });
    assert_eq!(
        condition(&d, "Progressing")["reason"],
        "ProgressDeadlineExceeded"
    );
    let d = api
        .object("apps", "v1", "deployments", "crash", "web")
        .unwrap();
    assert_eq!(
        condition(&d, "Progressing")["status"],
        "True",
        "no deadline set: still progressing"
    );
    assert_eq!(condition(&d, "Available")["status"], "False");

    let name = |ns: &str| pod(ns)["metadata"]["name"].as_str().unwrap().to_string();
    let (code, logs) = call(
        &api,
        "GET",
        &format!(
            "/api/v1/namespaces/crash/pods/{}/log?tailLines=2",
            name("crash")
        ),
        "",
        "",
    );
    assert_eq!((code, logs.as_str()), (200, Some("two\nboom\n")));
    let (code, e) = call(
        &api,
        "GET",
        &format!("/api/v1/namespaces/pull/pods/{}/log", name("pull")),
        "",
        "",
    );
    assert_eq!(code, 400);
    assert_eq!(
        e["message"],
        format!(
            "container \"serve\" in pod \"{}\" is waiting to start: trying and failing to pull image",
            name("pull")
        )
    );
    let (code, e) = call(
        &api,
        "GET",
        &format!("/api/v1/namespaces/sched/pods/{}/log", name("sched")),
        "",
        "",
    );
    assert_eq!(
        (code, e["message"].as_str()),
        (
            400,
            Some(format!("pod {} does not have a host assigned", name("sched")).as_str())
        )
    );
}

#[test]
fn namespace_deletion_terminates_and_a_finalizer_holds_it() {
    let api = KubeApi::start(Options {
        namespace_delete_delay: Duration::from_millis(100),
        ..Options::default()
    });
    for ns in ["gone", "stuck"] {
        namespace(&api, ns);
        call(
            &api,
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            JSON,
            &json!({"metadata": {"name": "c"}}).to_string(),
        );
    }
    api.stuck_terminating("stuck");
    for ns in ["gone", "stuck"] {
        let (code, v) = call(&api, "DELETE", &format!("/api/v1/namespaces/{ns}"), "", "");
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["status"]["phase"], "Terminating");
        assert!(v["metadata"]["deletionTimestamp"].is_string());
    }
    let (code, refused) = call(
        &api,
        "POST",
        "/api/v1/namespaces/stuck/configmaps",
        JSON,
        &json!({"metadata": {"name": "d"}}).to_string(),
    );
    assert_eq!(code, 403);
    assert_eq!(
        refused["message"],
        "configmaps \"d\" is forbidden: unable to create new content in namespace stuck because it is being terminated"
    );
    api.wait_until("namespace gone", Duration::from_secs(5), |a| {
        a.object("", "v1", "namespaces", "", "gone").is_none()
    });
    api.wait_until("stuck conditions", Duration::from_secs(5), |a| {
        a.object("", "v1", "namespaces", "", "stuck")
            .is_some_and(|n| condition(&n, "NamespaceFinalizersRemaining")["status"] == "True")
    });
    let n = api.object("", "v1", "namespaces", "", "stuck").unwrap();
    assert_eq!(
        condition(&n, "NamespaceContentRemaining")["message"],
        "Some resources are remaining: configmaps. has 1 resource instances"
    );
    assert_eq!(
        condition(&n, "NamespaceFinalizersRemaining")["message"],
        "Some content in the namespace has finalizers remaining: example.com/block in 1 resource instances"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(api.object("", "v1", "namespaces", "", "stuck").is_some());
    api.release_terminating("stuck");
    api.wait_until("stuck namespace gone", Duration::from_secs(5), |a| {
        a.object("", "v1", "namespaces", "", "stuck").is_none()
    });
}

#[test]
fn token_and_deny_list() {
    let api = KubeApi::start(Options {
        token: Some("s3cret".into()),
        ..Options::default()
    });
    let (code, v) = call(&api, "GET", "/api/v1/namespaces", "", "");
    assert_eq!(
        (code, v["reason"].as_str(), v["kind"].as_str()),
        (401, Some("Unauthorized"), Some("Status"))
    );
    let (code, _) = call_with(&api, "GET", "/api/v1/namespaces", "", "", Some("wrong"));
    assert_eq!(code, 401);
    let (code, _) = call_with(&api, "GET", "/api/v1/namespaces", "", "", Some("s3cret"));
    assert_eq!(code, 200);
    api.deny("patch", "deployments", "y");
    let (code, v) = call_with(
        &api,
        "PATCH",
        "/apis/apps/v1/namespaces/y/deployments/x?fieldManager=wms",
        APPLY,
        "{}",
        Some("s3cret"),
    );
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "deployments.apps \"x\" is forbidden: User \"system:serviceaccount:ci:deployer\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"y\""
    );
    api.deny("create", "namespaces", "");
    let (code, v) = call_with(
        &api,
        "POST",
        "/api/v1/namespaces",
        JSON,
        r#"{"metadata":{"name":"z"}}"#,
        Some("s3cret"),
    );
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "namespaces is forbidden: User \"system:serviceaccount:ci:deployer\" cannot create resource \"namespaces\" in API group \"\" at the cluster scope"
    );
}

#[test]
fn discovery_lists_the_crd_only_when_enabled() {
    let api = KubeApi::start(Options::default());
    let (_, groups) = call(&api, "GET", "/apis", "", "");
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"apps")
            && names.contains(&"coordination.k8s.io")
            && !names.contains(&"monitoring.coreos.com"),
        "{names:?}"
    );
    let (code, _) = call(&api, "GET", "/apis/monitoring.coreos.com/v1", "", "");
    assert_eq!(code, 404);
    api.enable_servicemonitor_crd();
    let (code, rl) = call(&api, "GET", "/apis/monitoring.coreos.com/v1", "", "");
    assert_eq!(code, 200);
    assert_eq!(rl["resources"][0]["kind"], "ServiceMonitor");
    let (_, core) = call(&api, "GET", "/api/v1", "", "");
    let core_names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(core_names.contains(&"pods/log") && core_names.contains(&"services/proxy"));
}

/// A one-route HTTP server standing in for a model server behind the proxy.
fn backend() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for stream in listener.incoming().take(1) {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let first = req.lines().next().unwrap_or("").to_string();
            let body = format!("{{\"seen\":\"{first}\"}}");
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        }
    });
    (addr, t)
}

#[test]
fn service_proxy_needs_a_ready_endpoint() {
    let api = KubeApi::start(Options {
        ready_after: Duration::from_millis(100),
        ..Options::default()
    });
    namespace(&api, "m1");
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 8082}]}});
    apply(
        &api,
        "/api/v1/namespaces/m1/services/web",
        "wms",
        false,
        &svc,
    );
    let (code, v) = call(
        &api,
        "GET",
        "/api/v1/namespaces/m1/services/web:8080/proxy/ping",
        "",
        "",
    );
    assert_eq!(code, 503);
    assert_eq!(v["message"], "no endpoints available for service \"web\"");
    let (addr, server) = backend();
    api.set_proxy_backend("m1", "web", 8080, addr);
    apply(
        &api,
        "/apis/apps/v1/namespaces/m1/deployments/web",
        "wms",
        false,
        &deployment("web", "img@sha256:dd", 1),
    );
    wait_deployment(&api, "m1", "web", |d| d["status"]["readyReplicas"] == 1);
    let (code, v) = call(
        &api,
        "GET",
        "/api/v1/namespaces/m1/services/http:web:http/proxy/ping?x=1",
        "",
        "",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["seen"], "GET /ping?x=1 HTTP/1.1");
    server.join().unwrap();
    let (code, v) = call(
        &api,
        "GET",
        "/api/v1/namespaces/m1/services/web:metrics/proxy/metrics",
        "",
        "",
    );
    assert_eq!(code, 503);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("error trying to reach service: dial tcp 10.244."),
        "{v}"
    );
}

#[test]
fn a_failing_new_version_leaves_the_old_one_serving() {
    let api = KubeApi::start(Options {
        ready_after: Duration::from_millis(50),
        ..Options::default()
    });
    namespace(&api, "m1");
    let path = "/apis/apps/v1/namespaces/m1/deployments/web";
    apply(
        &api,
        path,
        "wms",
        false,
        &deployment("web", "r/web@sha256:good", 2),
    );
    wait_deployment(&api, "m1", "web", |d| {
        condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
    });
    api.set_outcome("sha256:bad", Outcome::CrashLoopBackOff);
    apply(
        &api,
        path,
        "wms",
        false,
        &deployment("web", "r/web@sha256:bad", 2),
    );
    let d = wait_deployment(&api, "m1", "web", |d| {
        d["status"]["observedGeneration"] == 2
            && d["status"]["updatedReplicas"] == 1
            && d["status"]["replicas"] == 3
            && condition(d, "Progressing")["reason"] == "ReplicaSetUpdated"
    });
    // maxSurge 25% of 2 rounds up to 1, maxUnavailable rounds down to 0: one new pod, old ones stay.
    std::thread::sleep(Duration::from_millis(300));
    let d2 = api
        .object("apps", "v1", "deployments", "m1", "web")
        .unwrap();
    assert_eq!(
        d2["status"], d["status"],
        "the rollout is stuck, not progressing"
    );
    assert_eq!(d["status"]["availableReplicas"], 2);
    assert_eq!(condition(&d, "Available")["status"], "True");
    assert_eq!(condition(&d, "Progressing")["reason"], "ReplicaSetUpdated");
    let ready: Vec<Value> = api
        .objects("pods")
        .into_iter()
        .filter(|p| p["status"]["containerStatuses"][0]["ready"] == true)
        .collect();
    assert_eq!(ready.len(), 2);
    assert!(
        ready
            .iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "r/web@sha256:good")
    );
}
