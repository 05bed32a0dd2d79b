//! The stand-in's controllers, run on a short tick under the store lock: the Deployment and
//! ReplicaSet controllers (with the outcome each test chooses instead of a kubelet), the
//! namespace finalizer, the garbage collector (ownerReferences), the ServiceAccount/root-CA
//! controllers, EndpointSlices/Endpoints for Services with a selector, and defaulting on write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::Outcome;
use super::resources::{self, RESOURCES, Resource};
use super::store::{
    ApiError, EventType, LabelSelector, Store, labels_of, mutable_metadata, name_of, now_rfc3339,
};

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn rid(group: &str, plural: &str) -> usize {
    resources::id(group, plural)
}

/// The defaults the real API server fills in, for the fields clients read back.
pub fn default_object(s: &mut Store, r: &Resource, obj: &mut Value) {
    match r.plural {
        "namespaces" => {
            let name = name_of(obj).to_string();
            let labels = mutable_metadata(obj)
                .entry("labels")
                .or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
            fill_missing(&mut obj["spec"], [("finalizers", json!(["kubernetes"]))]);
            fill_missing(&mut obj["status"], [("phase", json!("Active"))]);
        }
        "services" => {
            let spec = &mut obj["spec"];
            fill_missing(spec, [("type", json!("ClusterIP"))]);
            if spec["type"] != "ExternalName" && spec["clusterIP"].is_null() {
                s.next_ip += 1;
                let ip = format!("10.96.{}.{}", s.next_ip / 250, s.next_ip % 250 + 2);
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            fill_missing(spec, [("sessionAffinity", json!("None"))]);
            for p in elements_mut(spec, "ports") {
                let port = p["port"].clone();
                fill_missing(p, [("protocol", json!("TCP")), ("targetPort", port)]);
            }
        }
        "deployments" => {
            let spec = &mut obj["spec"];
            let rolling = json!({"maxUnavailable": "25%", "maxSurge": "25%"});
            fill_missing(
                spec,
                [
                    ("replicas", json!(1)),
                    (
                        "strategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": rolling}),
                    ),
                    ("revisionHistoryLimit", json!(10)),
                    ("progressDeadlineSeconds", json!(600)),
                ],
            );
            pod_spec_defaults(&mut spec["template"]["spec"]);
        }
        "replicasets" => pod_spec_defaults(&mut obj["spec"]["template"]["spec"]),
        "pods" => pod_spec_defaults(&mut obj["spec"]),
        _ => {}
    }
}

/// Sets each field of `obj` that is absent (or null) to its default, as the API server's
/// defaulting does; fields a client set stay as they are.
fn fill_missing<const N: usize>(obj: &mut Value, defaults: [(&str, Value); N]) {
    for (k, v) in defaults {
        if obj[k].is_null() {
            obj[k] = v;
        }
    }
}

/// The elements of the array `v[key]`; none when it is absent.
fn elements_mut<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn pod_spec_defaults(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    fill_missing(
        spec,
        [
            ("restartPolicy", json!("Always")),
            ("terminationGracePeriodSeconds", json!(30)),
            ("dnsPolicy", json!("ClusterFirst")),
            ("schedulerName", json!("default-scheduler")),
            ("securityContext", json!({})),
        ],
    );
    for c in elements_mut(spec, "containers") {
        for p in elements_mut(c, "ports") {
            fill_missing(p, [("protocol", json!("TCP"))]);
        }
        fill_missing(
            c,
            [
                ("terminationMessagePath", json!("/dev/termination-log")),
                ("terminationMessagePolicy", json!("File")),
            ],
        );
        if c["imagePullPolicy"].is_null() {
            let image = c["image"].as_str().unwrap_or("");
            let last = image.rsplit('/').next().unwrap_or("");
            let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
            c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
        }
    }
}

/// DELETE of one object: namespaces go Terminating, objects with finalizers get a
/// deletionTimestamp, others go now. Dependents follow through the garbage collector.
pub fn delete_object(s: &mut Store, res: usize, ns: &str, name: &str) -> Value {
    let r = &RESOURCES[res];
    let Some(mut obj) = s.get(res, ns, name).cloned() else {
        return Value::Null;
    };
    let has_finalizers = obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if r.plural == "namespaces" {
        if obj["metadata"]["deletionTimestamp"].is_null() {
            mutable_metadata(&mut obj).insert("deletionTimestamp".into(), json!(now_rfc3339()));
            obj["status"]["phase"] = json!("Terminating");
            s.ns_deleting.insert(name.to_string(), Instant::now());
            return s.insert(res, obj, EventType::Modified);
        }
        return obj;
    }
    if has_finalizers {
        if obj["metadata"]["deletionTimestamp"].is_null() {
            let m = mutable_metadata(&mut obj);
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            return s.insert(res, obj, EventType::Modified);
        }
        return obj;
    }
    let removed = s.remove(res, ns, name).unwrap_or_default();
    if matches!(r.plural, "pods" | "services") {
        return removed;
    }
    let mut details = json!({"name": name, "kind": r.plural, "uid": removed["metadata"]["uid"]});
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// One controller pass.
pub fn tick(s: &mut Store) {
    finalize_namespaces(s);
    collect_garbage(s);
    namespace_defaults(s);
    let deployments: Vec<Value> = s
        .list(rid("apps", "deployments"), None)
        .into_iter()
        .cloned()
        .collect();
    for d in deployments {
        reconcile_deployment(s, &d);
    }
    endpoints(s);
}

fn terminating(s: &Store, ns: &str) -> bool {
    s.namespace(ns)
        .is_none_or(|n| n["metadata"]["deletionTimestamp"].is_string())
}

fn finalize_namespaces(s: &mut Store) {
    let ns_id = rid("", "namespaces");
    let deleting: Vec<Value> = s
        .list(ns_id, None)
        .into_iter()
        .filter(|n| n["metadata"]["deletionTimestamp"].is_string())
        .cloned()
        .collect();
    for n in deleting {
        let name = name_of(&n).to_string();
        let began = *s
            .ns_deleting
            .entry(name.clone())
            .or_insert_with(Instant::now);
        let content: Vec<(usize, String)> = s
            .objects
            .keys()
            .filter(|(_, ns, _)| *ns == name)
            .map(|(r, _, n)| (*r, n.clone()))
            .collect();
        for (res, obj_name) in content {
            delete_object(s, res, &name, &obj_name);
        }
        let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
        let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
        for ((res, ns, _), obj) in &s.objects {
            if *ns != name {
                continue;
            }
            let r = &RESOURCES[*res];
            *remaining
                .entry(format!("{}.{}", r.plural, r.group))
                .or_default() += 1;
            for f in obj["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                *finalizers
                    .entry(f.as_str().unwrap_or("").to_string())
                    .or_default() += 1;
            }
        }
        if remaining.is_empty() {
            if began.elapsed() >= s.namespace_delete_delay {
                s.ns_deleting.remove(&name);
                s.remove(ns_id, "", &name);
            }
            continue;
        }
        let now = now_rfc3339();
        let cond = |t: &str, st: &str, reason: &str, msg: String| json!({"type": t, "status": st, "lastTransitionTime": now, "reason": reason, "message": msg});
        let content_msg = remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ");
        let fin_msg = finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut conditions = vec![
            cond(
                "NamespaceDeletionDiscoveryFailure",
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            ),
            cond(
                "NamespaceDeletionGroupVersionParsingFailure",
                "False",
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed".into(),
            ),
            cond(
                "NamespaceDeletionContentFailure",
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            ),
            cond(
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {content_msg}"),
            ),
        ];
        if !finalizers.is_empty() {
            conditions.push(cond(
                "NamespaceFinalizersRemaining",
                "True",
                "SomeFinalizersRemain",
                format!("Some content in the namespace has finalizers remaining: {fin_msg}"),
            ));
        }
        let Some(mut live) = s.get(ns_id, "", &name).cloned() else {
            continue;
        };
        let same = |a: &Value, b: &Value| {
            let strip = |v: &Value| -> Vec<(Value, Value, Value)> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| (c["type"].clone(), c["status"].clone(), c["message"].clone()))
                    .collect()
            };
            strip(a) == strip(b)
        };
        if !same(&live["status"]["conditions"], &json!(conditions)) {
            live["status"]["conditions"] = json!(conditions);
            s.insert(ns_id, live, EventType::Modified);
        }
    }
}

fn collect_garbage(s: &mut Store) {
    let uids: std::collections::HashSet<String> = s
        .objects
        .values()
        .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_string))
        .collect();
    let orphans: Vec<(usize, String, String)> = s
        .objects
        .iter()
        .filter(|(_, o)| {
            let owners = o["metadata"]["ownerReferences"].as_array();
            owners.is_some_and(|os| {
                !os.is_empty()
                    && os
                        .iter()
                        .all(|r| !uids.contains(r["uid"].as_str().unwrap_or("")))
            })
        })
        .map(|(k, _)| k.clone())
        .collect();
    for (res, ns, name) in orphans {
        delete_object(s, res, &ns, &name);
    }
}

/// The ServiceAccount and root-CA controllers: `default` and `kube-root-ca.crt` in each namespace.
fn namespace_defaults(s: &mut Store) {
    let names: Vec<String> = s
        .list(rid("", "namespaces"), None)
        .into_iter()
        .filter(|n| n["metadata"]["deletionTimestamp"].is_null())
        .map(|n| name_of(n).to_string())
        .collect();
    for ns in names {
        let sa = rid("", "serviceaccounts");
        if s.get(sa, &ns, "default").is_none() {
            let obj = json!({"metadata": {"name": "default", "namespace": ns}});
            let obj = s.prepare_new(sa, obj);
            s.insert(sa, obj, EventType::Added);
        }
        let cm = rid("", "configmaps");
        if s.get(cm, &ns, "kube-root-ca.crt").is_none() {
            let obj = json!({"metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n"}});
            let obj = s.prepare_new(cm, obj);
            s.insert(cm, obj, EventType::Added);
        }
    }
}

fn template_hash(template: &Value) -> String {
    let digest = Sha256::digest(template.to_string().as_bytes());
    digest
        .iter()
        .take(10)
        .map(|b| SAFE[*b as usize % SAFE.len()] as char)
        .collect()
}

fn owned_by<'a>(s: &'a Store, res: usize, ns: &str, uid: &str) -> Vec<&'a Value> {
    s.list(res, Some(ns))
        .into_iter()
        .filter(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|rs| {
                    rs.iter()
                        .any(|r| r["uid"].as_str() == Some(uid) && r["controller"] == json!(true))
                })
        })
        .collect()
}

fn owner_ref(owner: &Value) -> Value {
    json!([{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
}

fn revision(o: &Value) -> i64 {
    o["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    }) && p["metadata"]["deletionTimestamp"].is_null()
}

fn set_if_changed(s: &mut Store, res: usize, old: &Value, new: Value) {
    if *old != new {
        s.insert(res, new, EventType::Modified);
    }
}

/// maxSurge/maxUnavailable of `replicas`: an int, or a percentage rounded up (surge) or down
/// (unavailable), 25% when unset, as the API server defaults them.
fn scaled(v: &Value, replicas: i64, round_up: bool) -> i64 {
    let pct = match v {
        Value::Number(n) => return n.as_i64().unwrap_or(0),
        Value::String(p) => p.trim_end_matches('%').parse::<i64>().unwrap_or(25),
        _ => 25,
    };
    if round_up {
        (pct * replicas + 99) / 100
    } else {
        pct * replicas / 100
    }
}

fn reconcile_deployment(s: &mut Store, d: &Value) {
    let dep_id = rid("apps", "deployments");
    let rs_id = rid("apps", "replicasets");
    let pod_id = rid("", "pods");
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = name_of(d).to_string();
    let uid = d["metadata"]["uid"].as_str().unwrap_or("").to_string();
    if d["metadata"]["deletionTimestamp"].is_string() || terminating(s, &ns) {
        return;
    }
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let template = d["spec"]["template"].clone();
    let hash = template_hash(&template);
    let rss: Vec<Value> = owned_by(s, rs_id, &ns, &uid).into_iter().cloned().collect();
    let max_rev = rss.iter().map(revision).max().unwrap_or(0);
    let current = rss
        .iter()
        .find(|rs| rs["metadata"]["labels"][HASH_LABEL].as_str() == Some(hash.as_str()))
        .cloned();
    let mut just_created = false;
    let new_rs = match current {
        None => {
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels[HASH_LABEL] = json!(hash);
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let mut tmpl = template.clone();
            tmpl["metadata"]["labels"] = labels.clone();
            let surge = scaled(
                &d["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
                replicas,
                true,
            );
            let rs = json!({
                "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": labels,
                    "annotations": {REVISION: (max_rev + 1).to_string(), "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                        "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string()},
                    "ownerReferences": owner_ref(d)},
                "spec": {"replicas": 0, "selector": selector, "template": tmpl},
            });
            let rs = s.prepare_new(rs_id, rs);
            just_created = true;
            s.rollout_began
                .insert(uid.clone(), (hash.clone(), Instant::now()));
            s.insert(rs_id, rs, EventType::Added)
        }
        Some(rs) => {
            let mut new = rs.clone();
            if revision(&rs) < max_rev {
                new["metadata"]["annotations"][REVISION] = json!((max_rev + 1).to_string());
                s.rollout_began
                    .insert(uid.clone(), (hash.clone(), Instant::now()));
            }
            if new["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"]
                != json!(replicas.to_string())
            {
                new["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
                    json!(replicas.to_string());
            }
            if s.rollout_began.get(&uid).is_none_or(|(h, _)| *h != hash) {
                s.rollout_began
                    .insert(uid.clone(), (hash.clone(), Instant::now()));
            }
            if new != rs {
                s.insert(rs_id, new, EventType::Modified)
            } else {
                rs
            }
        }
    };
    let new_rs_name = name_of(&new_rs).to_string();
    let new_rev = revision(&new_rs).to_string();
    if d["metadata"]["annotations"][REVISION].as_str() != Some(new_rev.as_str())
        && let Some(live) = s.get(dep_id, &ns, &name).cloned()
    {
        let mut next = live.clone();
        next["metadata"]["annotations"][REVISION] = json!(new_rev);
        s.insert(dep_id, next, EventType::Modified);
    }

    // The rollout, stepped as the real controller steps it: the new ReplicaSet grows within
    // maxSurge, old ones shrink only while availability stays at replicas - maxUnavailable, so a
    // new version whose pods never become ready leaves the old one serving.
    let strategy = &d["spec"]["strategy"];
    let mut max_surge = scaled(&strategy["rollingUpdate"]["maxSurge"], replicas, true);
    let max_unavailable = scaled(
        &strategy["rollingUpdate"]["maxUnavailable"],
        replicas,
        false,
    );
    let max_unavailable = if max_surge == 0 && max_unavailable == 0 {
        1
    } else {
        max_unavailable
    };
    let recreate = strategy["type"] == "Recreate";
    if recreate {
        max_surge = 0;
    }
    let rss: Vec<Value> = owned_by(s, rs_id, &ns, &uid).into_iter().cloned().collect();
    let size = |rs: &Value| rs["spec"]["replicas"].as_i64().unwrap_or(0);
    let ready_of = |s: &Store, rs: &Value| {
        let rs_uid = rs["metadata"]["uid"].as_str().unwrap_or("");
        owned_by(s, pod_id, &ns, rs_uid)
            .into_iter()
            .filter(|p| pod_ready(p))
            .count() as i64
    };
    let pods_of = |s: &Store, rs: &Value| {
        let rs_uid = rs["metadata"]["uid"].as_str().unwrap_or("");
        owned_by(s, pod_id, &ns, rs_uid).len() as i64
    };
    let Some(new_live) = rss.iter().find(|r| name_of(r) == new_rs_name).cloned() else {
        return;
    };
    let mut olds: Vec<Value> = rss
        .iter()
        .filter(|r| name_of(r) != new_rs_name)
        .cloned()
        .collect();
    olds.sort_by_key(revision);
    let old_total: i64 = olds.iter().map(size).sum();
    let available: i64 = rss.iter().map(|r| ready_of(s, r)).sum();
    let new_ready = ready_of(s, &new_live);
    let mut new_size = size(&new_live);
    let mut old_sizes: Vec<i64> = olds.iter().map(size).collect();
    if recreate {
        old_sizes.iter_mut().for_each(|o| *o = 0);
        let old_pods: i64 = olds.iter().map(|r| pods_of(s, r)).sum();
        if old_pods == 0 {
            new_size = replicas;
        }
    } else {
        if new_size > replicas {
            new_size = replicas;
        } else if new_size < replicas {
            let allowed = replicas + max_surge - (new_size + old_total);
            if allowed > 0 {
                new_size += allowed.min(replicas - new_size);
            }
        }
        let mut can_remove = (available - (replicas - max_unavailable)).max(0);
        for (i, old) in olds.iter().enumerate() {
            // Old pods that are not ready cost no availability (cleanupUnhealthyReplicas).
            let unhealthy = pods_of(s, old) - ready_of(s, old);
            let remove = if new_ready >= replicas {
                old_sizes[i]
            } else {
                (can_remove + unhealthy).min(old_sizes[i])
            };
            can_remove = (can_remove - (remove - unhealthy.min(remove))).max(0);
            old_sizes[i] -= remove;
        }
    }
    let resize = |s: &mut Store, rs: &Value, to: i64| -> Value {
        if size(rs) == to {
            return rs.clone();
        }
        let mut next = rs.clone();
        next["spec"]["replicas"] = json!(to);
        next["metadata"]["generation"] =
            json!(rs["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
        s.insert(rs_id, next, EventType::Modified)
    };
    let new_rs = resize(s, &new_live, new_size);
    sync_pods(s, &new_rs, new_size);
    for (old, to) in olds.iter().zip(old_sizes) {
        let next = resize(s, old, to);
        sync_pods(s, &next, to);
    }
    let new_uid = new_rs["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let new_pods: Vec<Value> = owned_by(s, pod_id, &ns, &new_uid)
        .into_iter()
        .cloned()
        .collect();
    // ReplicaSet status, then Deployment status from all of its pods.
    let rss: Vec<Value> = owned_by(s, rs_id, &ns, &uid).into_iter().cloned().collect();
    let mut total = 0i64;
    let mut ready = 0i64;
    for rs in &rss {
        let rs_uid = rs["metadata"]["uid"].as_str().unwrap_or("");
        let pods: Vec<&Value> = owned_by(s, pod_id, &ns, rs_uid)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let n = pods.len() as i64;
        let r = pods.iter().filter(|p| pod_ready(p)).count() as i64;
        total += n;
        ready += r;
        let mut status = json!({"replicas": n, "observedGeneration": rs["metadata"]["generation"]});
        if n > 0 {
            status["fullyLabeledReplicas"] = json!(n);
        }
        if r > 0 {
            status["readyReplicas"] = json!(r);
            status["availableReplicas"] = json!(r);
        }
        let mut next = rs.clone();
        next["status"] = status;
        set_if_changed(s, rs_id, rs, next);
    }
    let Some(live) = s.get(dep_id, &ns, &name).cloned() else {
        return;
    };
    let updated = new_pods.len() as i64;
    let available = ready;
    let max_unavailable = scaled(
        &live["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        replicas,
        false,
    );
    let complete = updated == replicas && available >= replicas && total == replicas;
    let pde_pod = new_pods.iter().any(|p| {
        s.pod_outcome
            .get(p["metadata"]["uid"].as_str().unwrap_or(""))
            == Some(&Outcome::ProgressDeadlineExceeded)
    });
    let deadline = s.progress_deadline.is_some_and(|dl| {
        s.rollout_began
            .get(&uid)
            .is_some_and(|(_, t)| t.elapsed() >= dl)
    });
    let now = now_rfc3339();
    let old_conds: Vec<Value> = live["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let cond = |t: &str, st: &str, reason: &str, msg: String| {
        let old = old_conds.iter().find(|c| c["type"] == t);
        if let Some(o) = old
            && o["status"] == st
            && o["reason"] == reason
            && o["message"] == msg.as_str()
        {
            return o.clone();
        }
        let transition = match old {
            Some(o) if o["status"] == st => o["lastTransitionTime"].clone(),
            _ => json!(now),
        };
        json!({"type": t, "status": st, "lastUpdateTime": now, "lastTransitionTime": transition, "reason": reason, "message": msg})
    };
    let available_cond = if available >= replicas - max_unavailable {
        cond(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        cond(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let progressing = if complete {
        cond(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_rs_name}\" has successfully progressed."),
        )
    } else if pde_pod || deadline {
        cond(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_rs_name}\" has timed out progressing."),
        )
    } else if just_created {
        cond(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_rs_name}\""),
        )
    } else {
        cond(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_rs_name}\" is progressing."),
        )
    };
    let mut status = json!({"observedGeneration": live["metadata"]["generation"], "conditions": [available_cond, progressing]});
    for (k, v) in [
        ("replicas", total),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("unavailableReplicas", (replicas - available).max(0)),
    ] {
        if v > 0 {
            status[k] = json!(v);
        }
    }
    let mut next = live.clone();
    next["status"] = status;
    set_if_changed(s, dep_id, &live, next);
}

/// Make the ReplicaSet's pod count `want`, and move pods past `ready_after` to their outcome.
fn sync_pods(s: &mut Store, rs: &Value, want: i64) {
    let pod_id = rid("", "pods");
    let ns = rs["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let rs_uid = rs["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let mut pods: Vec<Value> = owned_by(s, pod_id, &ns, &rs_uid)
        .into_iter()
        .cloned()
        .collect();
    pods.retain(|p| p["metadata"]["deletionTimestamp"].is_null());
    let have = pods.len() as i64;
    if have > want {
        // The newest (least ready) go first, as the real controller prefers.
        pods.sort_by_key(|p| {
            (
                pod_ready(p),
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        });
        for p in pods.iter().take((have - want) as usize) {
            delete_object(s, pod_id, &ns, name_of(p));
        }
    }
    for _ in have..want {
        let rs_name = name_of(rs);
        let tmpl = &rs["spec"]["template"];
        let containers = containers_of(&tmpl["spec"]);
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false, "restartCount": 0, "started": false,
                "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}}))
            .collect();
        let pod = json!({
            "metadata": {"name": format!("{rs_name}-{}", super::store::suffix(5)), "generateName": format!("{rs_name}-"),
                "namespace": ns, "labels": tmpl["metadata"]["labels"], "annotations": tmpl["metadata"]["annotations"],
                "ownerReferences": owner_ref(rs)},
            "spec": tmpl["spec"],
            "status": {"phase": "Pending", "qosClass": "Burstable", "containerStatuses": statuses},
        });
        let mut pod = s.prepare_new(pod_id, pod);
        if pod["metadata"]["annotations"].is_null() {
            mutable_metadata(&mut pod).remove("annotations");
        }
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        s.pod_born.insert(uid, Instant::now());
        s.insert(pod_id, pod, EventType::Added);
    }
    let pods: Vec<Value> = owned_by(s, pod_id, &ns, &rs_uid)
        .into_iter()
        .cloned()
        .collect();
    for p in pods {
        let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
        if s.pod_outcome.contains_key(&uid) || p["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let born = *s.pod_born.entry(uid.clone()).or_insert_with(Instant::now);
        if born.elapsed() < s.ready_after {
            continue;
        }
        let images = each_container(&p, "image");
        let outcome = s.outcome_for(&ns, &images);
        s.pod_outcome.insert(uid, outcome);
        let ip = s.next_pod_ip();
        let next = settle_pod(&p, outcome, &ip);
        s.insert(pod_id, next, EventType::Modified);
    }
}

fn fake_hex(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))
}

/// A pod as the kubelet reports it once the chosen outcome has happened.
fn settle_pod(p: &Value, outcome: Outcome, ip: &str) -> Value {
    let mut pod = p.clone();
    let now = now_rfc3339();
    let name = name_of(p).to_string();
    let ns = p["metadata"]["namespace"].as_str().unwrap_or("");
    let uid = p["metadata"]["uid"].as_str().unwrap_or("");
    let cond = |t: &str, st: bool, reason: Option<&str>, msg: Option<String>| {
        let mut c = json!({"type": t, "status": if st { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = msg {
            c["message"] = json!(m);
        }
        c
    };
    let containers = containers_of(&p["spec"]);
    let names = each_container(p, "name");
    if outcome == Outcome::Unschedulable {
        pod["status"] = json!({"phase": "Pending", "qosClass": "Burstable", "conditions": [cond(
            "PodScheduled", false, Some("Unschedulable"),
            Some("0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.".into()),
        )]});
        return pod;
    }
    pod["spec"]["nodeName"] = json!("stand-in-node-1");
    let ready = outcome == Outcome::Available;
    let unready = Some(format!(
        "containers with unready status: [{}]",
        names.join(" ")
    ));
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let cname = c["name"].as_str().unwrap_or("");
            let image = c["image"].as_str().unwrap_or("");
            let image_id = if image.contains("@sha256:") { image.to_string() } else { format!("{image}@sha256:{}", fake_hex(image)) };
            let cid = format!("containerd://{}", fake_hex(&format!("{uid}/{cname}")));
            let terminated = |code: i64, reason: &str| {
                json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": now, "finishedAt": now, "containerID": cid}})
            };
            let backoff = json!({"waiting": {"reason": "CrashLoopBackOff",
                "message": format!("back-off 40s restarting failed container={cname} pod={name}_{ns}({uid})")}});
            let (state, last, ready_c, started, restarts, id) = match outcome {
                Outcome::Available => (json!({"running": {"startedAt": now}}), json!({}), true, true, 0, image_id),
                Outcome::ProgressDeadlineExceeded => (json!({"running": {"startedAt": now}}), json!({}), false, true, 0, image_id),
                Outcome::ImagePullBackOff => (
                    json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\": ErrImagePull: failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found")}}),
                    json!({}), false, false, 0, String::new(),
                ),
                Outcome::CrashLoopBackOff => (backoff, terminated(1, "Error"), false, false, 3, image_id),
                Outcome::OOMKilled => (backoff, terminated(137, "OOMKilled"), false, false, 3, image_id),
                Outcome::Unschedulable => unreachable!("handled above"),
            };
            let mut st = json!({"name": cname, "image": image, "imageID": id, "ready": ready_c, "restartCount": restarts,
                "started": started, "state": state, "lastState": last});
            if started || restarts > 0 {
                st["containerID"] = json!(cid);
            }
            st
        })
        .collect();
    let phase = match outcome {
        Outcome::ImagePullBackOff => "Pending",
        _ => "Running",
    };
    pod["status"] = json!({
        "phase": phase, "hostIP": "172.18.0.2", "hostIPs": [{"ip": "172.18.0.2"}], "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now, "qosClass": "Burstable",
        "conditions": [
            cond("PodReadyToStartContainers", true, None, None),
            cond("Initialized", true, None, None),
            if ready { cond("Ready", true, None, None) } else { cond("Ready", false, Some("ContainersNotReady"), unready.clone()) },
            if ready { cond("ContainersReady", true, None, None) } else { cond("ContainersReady", false, Some("ContainersNotReady"), unready) },
            cond("PodScheduled", true, None, None),
        ],
        "containerStatuses": statuses,
    });
    pod
}

fn pods_selected<'a>(s: &'a Store, ns: &str, selector: &LabelSelector) -> Vec<&'a Value> {
    s.list(rid("", "pods"), Some(ns))
        .into_iter()
        .filter(|p| {
            !selector.is_empty()
                && selector.matches(&labels_of(p))
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .collect()
}

/// A Service port's target on a pod: a number, or a named container port.
fn target_port(port: &Value, pod: Option<&Value>) -> Option<i64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => pod.and_then(|p| {
            p["spec"]["containers"]
                .as_array()?
                .iter()
                .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                .find(|cp| cp["name"] == name.as_str())?["containerPort"]
                .as_i64()
        }),
        _ => port["port"].as_i64(),
    }
}

/// EndpointSlices and Endpoints for every Service with a selector, from its pods.
fn endpoints(s: &mut Store) {
    let svc_id = rid("", "services");
    let eps_id = rid("discovery.k8s.io", "endpointslices");
    let ep_id = rid("", "endpoints");
    let services: Vec<Value> = s.list(svc_id, None).into_iter().cloned().collect();
    for svc in services {
        let Some(sel) = svc["spec"]["selector"]
            .as_object()
            .filter(|m| !m.is_empty())
        else {
            continue;
        };
        let ns = svc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if terminating(s, &ns) {
            continue;
        }
        let name = name_of(&svc).to_string();
        let selector = LabelSelector::from_map(sel);
        let pods: Vec<Value> = pods_selected(s, &ns, &selector)
            .into_iter()
            .filter(|p| p["status"]["podIP"].is_string())
            .cloned()
            .collect();
        let svc_ports: Vec<Value> = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
        let ports: Vec<Value> = svc_ports
            .iter()
            .map(|p| json!({"name": p["name"].as_str().unwrap_or(""), "port": target_port(p, pods.first()), "protocol": p["protocol"]}))
            .collect();
        let eps: Vec<Value> = pods
            .iter()
            .map(|p| {
                let ready = pod_ready(p);
                json!({"addresses": [p["status"]["podIP"]], "conditions": {"ready": ready, "serving": ready, "terminating": false},
                    "nodeName": p["spec"]["nodeName"], "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}})
            })
            .collect();
        let slice_name = format!("{name}-{}", &template_hash(&json!([ns, name]))[..5]);
        let live = s.get(eps_id, &ns, &slice_name).cloned();
        let desired_body = json!({"endpoints": eps, "ports": ports});
        let unchanged = live.as_ref().is_some_and(|l| {
            l["endpoints"] == desired_body["endpoints"] && l["ports"] == desired_body["ports"]
        });
        if !unchanged {
            let obj = match live {
                Some(l) => {
                    let mut n = l.clone();
                    n["endpoints"] = desired_body["endpoints"].clone();
                    n["ports"] = desired_body["ports"].clone();
                    n
                }
                None => {
                    let o = json!({"metadata": {"name": slice_name, "generateName": format!("{name}-"), "namespace": ns,
                        "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                        "ownerReferences": owner_ref(&svc)},
                        "addressType": "IPv4", "endpoints": eps, "ports": ports});
                    s.prepare_new(eps_id, o)
                }
            };
            let kind = if s.get(eps_id, &ns, &slice_name).is_some() {
                EventType::Modified
            } else {
                EventType::Added
            };
            s.insert(eps_id, obj, kind);
        }
        // The legacy Endpoints object.
        let addr = |p: &Value| {
            json!({"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
            "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}})
        };
        let ready: Vec<Value> = pods.iter().filter(|p| pod_ready(p)).map(addr).collect();
        let not_ready: Vec<Value> = pods.iter().filter(|p| !pod_ready(p)).map(addr).collect();
        let ep_ports: Vec<Value> = ports
            .iter()
            .map(|p| json!({"name": p["name"], "port": p["port"], "protocol": p["protocol"]}))
            .collect();
        let mut subset = json!({"ports": ep_ports});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        let subsets = if pods.is_empty() {
            json!([])
        } else {
            json!([subset])
        };
        let live = s.get(ep_id, &ns, &name).cloned();
        match live {
            Some(l) if l["subsets"] == subsets => {}
            Some(l) => {
                let mut n = l.clone();
                n["subsets"] = subsets;
                s.insert(ep_id, n, EventType::Modified);
            }
            None => {
                let o = json!({"metadata": {"name": name, "namespace": ns, "labels": svc["metadata"]["labels"]}, "subsets": subsets});
                let mut o = s.prepare_new(ep_id, o);
                if o["metadata"]["labels"].is_null() {
                    mutable_metadata(&mut o).remove("labels");
                }
                s.insert(ep_id, o, EventType::Added);
            }
        }
    }
}

fn no_endpoints(name: &str) -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        format!("no endpoints available for service \"{name}\""),
    )
}

/// `field` (e.g. `name`, `image`) of each of a pod's containers, in order.
pub(super) fn each_container(pod: &Value, field: &str) -> Vec<String> {
    containers_of(&pod["spec"])
        .iter()
        .filter_map(|c| c[field].as_str().map(str::to_string))
        .collect()
}

/// A pod spec's containers (none when it has none).
fn containers_of(pod_spec: &Value) -> Vec<Value> {
    pod_spec["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The port number of the entry named `name` (`""` for an unnamed one) in an EndpointSlice's or
/// Endpoints subset's `ports`.
fn named_port(ports: &Value, name: &str) -> Option<i64> {
    ports
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str().unwrap_or("") == name)
        .and_then(|p| p["port"].as_i64())
}

/// Where the service proxy sends a request for `ns/name:port`: the backend the test registered
/// for a ready endpoint of the service (its own pods, or pods its EndpointSlices name).
pub fn proxy_backend(s: &Store, ns: &str, name: &str, port: &str) -> Result<SocketAddr, ApiError> {
    let svc_id = rid("", "services");
    let svc = s
        .get(svc_id, ns, name)
        .ok_or_else(|| ApiError::not_found(&RESOURCES[svc_id], name))?;
    let ports: Vec<Value> = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let sp = if port.is_empty() {
        ports.first().cloned()
    } else {
        ports
            .iter()
            .find(|p| {
                p["name"].as_str() == Some(port)
                    || p["port"].as_i64().map(|n| n.to_string()).as_deref() == Some(port)
            })
            .cloned()
    }
    .ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no service port \"{port}\" found for service \"{name}\""),
        )
    })?;
    let svc_port = sp["port"].as_i64().unwrap_or(0) as u16;
    let refused = |ip: &str, p: i64| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!(
                "error trying to reach service: dial tcp {ip}:{p}: connect: connection refused"
            ),
        )
    };
    if let Some(sel) = svc["spec"]["selector"]
        .as_object()
        .filter(|m| !m.is_empty())
    {
        let ready: Vec<&Value> = pods_selected(s, ns, &LabelSelector::from_map(sel))
            .into_iter()
            .filter(|p| pod_ready(p))
            .collect();
        let Some(pod) = ready.first() else {
            return Err(no_endpoints(name));
        };
        return s
            .backends
            .get(&(ns.to_string(), name.to_string(), svc_port))
            .copied()
            .ok_or_else(|| {
                refused(
                    pod["status"]["podIP"].as_str().unwrap_or(""),
                    target_port(&sp, Some(pod)).unwrap_or(0),
                )
            });
    }
    // A selector-less Service: its EndpointSlices (and Endpoints) name the addresses.
    let port_name = sp["name"].as_str().unwrap_or("");
    let mut addrs: Vec<(String, i64)> = Vec::new();
    for slice in s.list(rid("discovery.k8s.io", "endpointslices"), Some(ns)) {
        if slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str() != Some(name) {
            continue;
        }
        let Some(p) = named_port(&slice["ports"], port_name) else {
            continue;
        };
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            if ep["conditions"]["ready"] == json!(false) {
                continue;
            }
            for a in ep["addresses"].as_array().into_iter().flatten() {
                addrs.push((a.as_str().unwrap_or("").to_string(), p));
            }
        }
    }
    if let Some(ep) = s.get(rid("", "endpoints"), ns, name) {
        for subset in ep["subsets"].as_array().into_iter().flatten() {
            let Some(p) = named_port(&subset["ports"], port_name) else {
                continue;
            };
            for a in subset["addresses"].as_array().into_iter().flatten() {
                addrs.push((a["ip"].as_str().unwrap_or("").to_string(), p));
            }
        }
    }
    let Some(first) = addrs.first().cloned() else {
        return Err(no_endpoints(name));
    };
    for (ip, p) in &addrs {
        // A pod IP: the backend registered for a Service in the pod's namespace selecting it.
        if let Some(pod) = s
            .list(rid("", "pods"), None)
            .into_iter()
            .find(|pod| pod["status"]["podIP"].as_str() == Some(ip) && pod_ready(pod))
        {
            let pns = pod["metadata"]["namespace"].as_str().unwrap_or("");
            for other in s.list(svc_id, Some(pns)) {
                let Some(sel) = other["spec"]["selector"]
                    .as_object()
                    .filter(|m| !m.is_empty())
                else {
                    continue;
                };
                if !LabelSelector::from_map(sel).matches(&labels_of(pod)) {
                    continue;
                }
                for op in other["spec"]["ports"].as_array().into_iter().flatten() {
                    if target_port(op, Some(pod)) == Some(*p)
                        && let Some(b) = s.backends.get(&(
                            pns.to_string(),
                            name_of(other).to_string(),
                            op["port"].as_i64().unwrap_or(0) as u16,
                        ))
                    {
                        return Ok(*b);
                    }
                }
            }
        }
        // A Service cluster IP: that Service's backend.
        if let Some(other) = s
            .list(svc_id, None)
            .into_iter()
            .find(|o| o["spec"]["clusterIP"].as_str() == Some(ip))
        {
            let ons = other["metadata"]["namespace"].as_str().unwrap_or("");
            if let Ok(b) = proxy_backend(s, ons, name_of(other), &p.to_string()) {
                return Ok(b);
            }
        }
    }
    Err(refused(&first.0, first.1))
}
