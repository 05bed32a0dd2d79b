//! An in-test stand-in for the Kubernetes API server (no real one can be installed here), for
//! the `wms deploy` tests. It speaks the real wire protocol over plain HTTP on 127.0.0.1 and is
//! kept honest by pointing the real `kubectl` 1.32 at it (`tests/it/kubeapi_kubectl.rs`).
//!
//! # Usage
//!
//! ```ignore
//! let api = KubeApi::start(Options { token: Some("t0k3n".into()), ..Options::default() });
//! let kubeconfig = api.write_kubeconfig(dir.path(), "ci");   // server = api.url(), token, current-context
//! api.set_outcome("model-v2", Outcome::CrashLoopBackOff);    // a namespace, or (a part of) an image
//! api.set_logs("model-v2", &["loading model", "Error: model.onnx: no such file"]);
//! api.set_proxy_backend("model-v1", "wms-serve", 8080, serve_addr); // service port → a real server
//! // … run `wms deploy …` with KUBECONFIG=kubeconfig …
//! let dep = api.object("apps", "v1", "deployments", "model-v1", "wms-serve").unwrap();
//! assert!(api.requests().iter().any(|r| r.content_type == "application/apply-patch+yaml"));
//! ```
//! The server stops when the `KubeApi` is dropped. Everything is `&self` and works from sync
//! and async tests alike (the server runs on its own thread and runtime).
//!
//! # What it implements (like the real server, for the fields clients read)
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{g}`, `/apis/{g}/{v}`, legacy
//!   JSON and aggregated discovery (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`),
//!   for core v1 namespaces/configmaps/secrets/services/serviceaccounts/pods (+log)/
//!   resourcequotas/limitranges/endpoints/events, apps/v1 deployments/replicasets (+status,
//!   +scale), networking.k8s.io/v1 networkpolicies, autoscaling/v2 horizontalpodautoscalers,
//!   policy/v1 poddisruptionbudgets, coordination.k8s.io/v1 leases, discovery.k8s.io/v1
//!   endpointslices, gateway.networking.k8s.io/v1 httproutes, and monitoring.coreos.com/v1
//!   servicemonitors only after [`KubeApi::enable_servicemonitor_crd`].
//! - One object store with a global resourceVersion: GET, LIST (labelSelector, fieldSelector
//!   `metadata.name`/`metadata.namespace`, limit/continue), POST (409 AlreadyExists), PUT (409
//!   Conflict on a stale resourceVersion; none = unconditional), DELETE (and deletecollection,
//!   preconditions), `dryRun=All`; uid, creationTimestamp, generation (bumped on spec changes),
//!   status kept apart where it is a subresource; 404 for a missing namespace, 403 for new
//!   content in a terminating one; name validation (RFC 1123) with the real 422 message.
//! - PATCH: server-side apply (`application/apply-patch+yaml`, JSON or YAML body,
//!   `fieldManager` required, `force`), with managedFields per manager and the real 409
//!   message and causes (see `merge.rs` for the ownership rules); merge patch; a strategic
//!   merge patch subset (lists with a patch merge key merge by it); JSON patch.
//! - Watch: `?watch=1` with resourceVersion, allowWatchBookmarks, timeoutSeconds,
//!   sendInitialEvents, label/field selectors, as JSON lines; 410 Gone (an `ERROR` event with
//!   a `Status` code 410) from before [`KubeApi::compact`]; [`KubeApi::end_watches_after`]
//!   closes streams early so clients must re-watch.
//! - Controllers on a 50 ms tick: Deployment → ReplicaSet (pod-template-hash, revision
//!   annotation, rollback reuses the old ReplicaSet) → Pods whose fate is the [`Outcome`] the
//!   test chose, after [`Options::ready_after`]; Deployment status and conditions as the real
//!   controller writes them (old pods go once the new ReplicaSet is available); namespace
//!   finalization (Terminating, content deleted, objects with finalizers hold it with the real
//!   NamespaceContentRemaining/NamespaceFinalizersRemaining conditions); garbage collection by
//!   ownerReferences; `default` ServiceAccount and `kube-root-ca.crt` per namespace;
//!   EndpointSlices and Endpoints for Services with a selector.
//! - Pod logs (`tailLines`, `previous`, `container`, `limitBytes`) with the kubelet's errors for
//!   containers that never started; the service proxy (`{svc}`, `{svc}:{port}`,
//!   `http:{svc}:{port}`) to a backend registered by the test, with 503 `no endpoints
//!   available for service` while no pod is ready.
//! - Bearer-token authentication (401 `Unauthorized`) and a deny list giving the real 403 text.
//!
//! # What it does not implement
//! Protobuf request bodies (415; `kubectl create` sends protobuf, so use `kubectl apply`),
//! Table output (`kubectl get` without `-o json|yaml` prints less than a real server gives it),
//! OpenAPI documents (`/openapi/v2`, `/openapi/v3` are 404; kubectl needs `--validate=false`),
//! admission, RBAC beyond the deny list, TLS, schemas (unknown fields are stored as sent),
//! defaulting beyond the fields clients read, `follow` on logs, exec/port-forward, most
//! field-selector labels, Foreground/Orphan deletion (all deletion is Background), HPA and PDB
//! controllers, events.

#![allow(dead_code)]

mod controller;
mod http;
#[cfg(test)]
mod kube_client;
mod merge;
mod resources;
mod store;
#[cfg(test)]
mod tests;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use store::Store;

/// What happens to the pods of a Deployment (chosen per namespace or image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Pods Ready; the Deployment completes (`NewReplicaSetAvailable`).
    Available,
    /// `state.waiting.reason = ImagePullBackOff`, phase Pending.
    ImagePullBackOff,
    /// `CrashLoopBackOff`, restartCount 3, `lastState.terminated` exit code 1 (`Error`).
    CrashLoopBackOff,
    /// `CrashLoopBackOff` with `lastState.terminated.reason = OOMKilled`, exit code 137.
    OOMKilled,
    /// No node: `PodScheduled=False`, reason `Unschedulable`, the scheduler's message.
    Unschedulable,
    /// Containers run but never become ready; `Progressing=False ProgressDeadlineExceeded`.
    ProgressDeadlineExceeded,
}

impl Outcome {
    /// The log lines pods with this outcome print unless the test set others.
    pub fn default_logs(self) -> Vec<String> {
        let lines: &[&str] = match self {
            Outcome::Available => &[
                "wms-serve: model loaded",
                "wms-serve: listening on 0.0.0.0:8080",
            ],
            Outcome::CrashLoopBackOff => &[
                "wms-serve: loading model",
                "Error: model file /models/model.onnx: No such file or directory",
            ],
            Outcome::OOMKilled => &[
                "wms-serve: loading model",
                "wms-serve: allocating inference arena",
            ],
            Outcome::ProgressDeadlineExceeded => &[
                "wms-serve: model loaded",
                "wms-serve: readiness: warming up",
            ],
            Outcome::ImagePullBackOff | Outcome::Unschedulable => &[],
        };
        lines.iter().map(|s| s.to_string()).collect()
    }
}

/// Settings of one server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Required bearer token; `None` accepts every request (what `kubectl` over plain HTTP needs).
    pub token: Option<String>,
    /// The user named in 403 messages.
    pub user: String,
    /// How long simulated pods take to reach their outcome.
    pub ready_after: Duration,
    /// How long an emptied namespace stays Terminating before it disappears.
    pub namespace_delete_delay: Duration,
    /// If set, a rollout not complete after this long gets `ProgressDeadlineExceeded` whatever
    /// the outcome (the real `progressDeadlineSeconds`, scaled down).
    pub progress_deadline: Option<Duration>,
    pub default_outcome: Outcome,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            user: "system:serviceaccount:ci:deployer".into(),
            ready_after: Duration::from_millis(300),
            namespace_delete_delay: Duration::from_millis(200),
            progress_deadline: None,
            default_outcome: Outcome::Available,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The raw query string (`fieldManager=wms&force=true`).
    pub query: String,
    pub content_type: String,
}

/// State shared by the HTTP handlers, the controllers and the test.
pub(crate) struct Shared {
    store: Mutex<Store>,
    notify_tx: tokio::sync::watch::Sender<u64>,
    host: String,
    bookmark_interval: Duration,
    http: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake the watches after a write.
    fn notify(&self) {
        let rv = self.lock().rv;
        self.notify_tx.send_replace(rv);
    }
}

/// A running stand-in API server; dropped = stopped.
pub struct KubeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The controllers' tick.
const TICK: Duration = Duration::from_millis(50);

impl KubeApi {
    /// Start a server on 127.0.0.1 on a free port.
    pub fn start(opts: Options) -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let (notify_tx, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(&opts)),
            notify_tx,
            host: addr.to_string(),
            bookmark_interval: opts.bookmark_interval,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("reqwest client"),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kubeapi".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("kubeapi runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = axum::Router::new()
                        .fallback(http::handle)
                        .with_state(state.clone());
                    tokio::spawn(async move {
                        let _ = axum::serve(listener, app).await;
                    });
                    let ctl = state.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(TICK).await;
                            let changed = {
                                let mut s = ctl.lock();
                                let before = s.rv;
                                controller::tick(&mut s);
                                s.rv != before
                            };
                            if changed {
                                ctl.notify();
                            }
                        }
                    });
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn kubeapi thread");
        KubeApi {
            shared,
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Write `dir/kubeconfig` with one cluster (server = [`Self::url`]), one user (the token, if
    /// any) and one context named `context`, which is current. Returns its path.
    pub fn write_kubeconfig(&self, dir: &Path, context: &str) -> PathBuf {
        let token = self.shared.lock().token.clone();
        let mut user = json!({});
        if let Some(t) = token {
            user["token"] = json!(t);
        }
        let cfg = json!({
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": format!("{context}-cluster"), "cluster": {"server": self.url()}}],
            "users": [{"name": format!("{context}-user"), "user": user}],
            "contexts": [{"name": context, "context": {"cluster": format!("{context}-cluster"), "user": format!("{context}-user"), "namespace": "default"}}],
            "current-context": context,
        });
        let path = dir.join("kubeconfig");
        fs_err::write(&path, serde_yaml::to_string(&cfg).expect("kubeconfig yaml"))
            .expect("write kubeconfig");
        path
    }

    /// Pods of Deployments in namespace `key`, or whose image equals or contains `key`, meet
    /// `outcome` (from now on; pods that already settled keep theirs).
    pub fn set_outcome(&self, key: &str, outcome: Outcome) {
        self.shared.lock().outcomes.push((key.to_string(), outcome));
    }

    /// Log lines of pods in namespace `key`, or whose image equals or contains `key`.
    pub fn set_logs(&self, key: &str, lines: &[&str]) {
        self.shared.lock().logs.push((
            key.to_string(),
            lines.iter().map(|s| s.to_string()).collect(),
        ));
    }

    /// The service proxy sends requests for Service `ns/service`, service port `port`, to `addr`
    /// (while the Service has a ready endpoint). A selector-less Service whose EndpointSlices
    /// name such pods (or such a Service's cluster IP) reaches the same backend.
    pub fn set_proxy_backend(&self, ns: &str, service: &str, port: u16, addr: SocketAddr) {
        self.shared
            .lock()
            .backends
            .insert((ns.to_string(), service.to_string(), port), addr);
    }

    /// One object as the server holds it. `version` must be the served one.
    pub fn object(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> Option<Value> {
        let s = self.shared.lock();
        let res = resources::find(group, version, resource, true)?;
        let ns = if resources::RESOURCES[res].namespaced {
            ns
        } else {
            ""
        };
        s.get(res, ns, name).cloned()
    }

    /// All objects of a resource (plural, e.g. `deployments`, or `deployments.apps`) in every namespace.
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        let plural = resource.split('.').next().unwrap_or(resource);
        let s = self.shared.lock();
        let Some(res) = resources::RESOURCES.iter().position(|r| r.plural == plural) else {
            return Vec::new();
        };
        s.list(res, None).into_iter().cloned().collect()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.lock().requests.clone()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Watch streams opened from now on close after `k` events (0 = right after opening).
    pub fn end_watches_after(&self, k: usize) {
        self.shared.lock().end_watches_after = Some(k);
    }

    /// Watch streams stay open until their timeout again.
    pub fn keep_watches_open(&self) {
        self.shared.lock().end_watches_after = None;
    }

    /// Forget the event history: a watch from any resourceVersion before now gets 410 Gone.
    pub fn compact(&self) {
        let mut s = self.shared.lock();
        s.compacted = s.rv;
        s.history.clear();
    }

    /// Make namespace `ns` (which must exist) stay Terminating once deleted: a ConfigMap
    /// `stuck` with finalizer `example.com/block` holds it, as a real controller that never
    /// finishes would. [`Self::release_terminating`] lets it go.
    pub fn stuck_terminating(&self, ns: &str) {
        let mut s = self.shared.lock();
        assert!(
            s.namespace(ns).is_some(),
            "stuck_terminating: namespace {ns} does not exist"
        );
        let cm = resources::id("", "configmaps");
        let obj = json!({"metadata": {"name": "stuck", "namespace": ns, "finalizers": ["example.com/block"]}});
        let obj = s.prepare_new(cm, obj);
        s.insert(cm, obj, store::EventType::Added);
        drop(s);
        self.shared.notify();
    }

    /// Remove the blocking finalizer that [`Self::stuck_terminating`] put in `ns`.
    pub fn release_terminating(&self, ns: &str) {
        let mut s = self.shared.lock();
        let cm = resources::id("", "configmaps");
        if let Some(mut obj) = s.get(cm, ns, "stuck").cloned() {
            obj["metadata"]["finalizers"] = json!([]);
            if obj["metadata"]["deletionTimestamp"].is_string() {
                s.remove(cm, ns, "stuck");
            } else {
                s.insert(cm, obj, store::EventType::Modified);
            }
        }
        drop(s);
        self.shared.notify();
    }

    /// Serve monitoring.coreos.com/v1 servicemonitors (as if the CRD were installed).
    pub fn enable_servicemonitor_crd(&self) {
        self.shared.lock().servicemonitor_crd = true;
    }

    /// Refuse `verb` (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, or `*`) on
    /// `resource` (plural, or `pods/log`, `services/proxy`, or `*`) in namespace `ns` (`""` for
    /// cluster scope, `*` for all) with the real 403.
    pub fn deny(&self, verb: &str, resource: &str, ns: &str) {
        self.shared
            .lock()
            .denies
            .push((verb.to_string(), resource.to_string(), ns.to_string()));
    }

    pub fn allow_all(&self) {
        self.shared.lock().denies.clear();
    }

    /// Create an object directly (as `test-seed` with an Update operation, like `kubectl
    /// create`), e.g. to give a field a second manager. The namespace must exist.
    pub fn create(&self, obj: Value) -> Value {
        let mut s = self.shared.lock();
        let av = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let (group, version) = av.split_once('/').unwrap_or(("", &av));
        let kind = obj["kind"].as_str().unwrap_or("");
        let res = resources::RESOURCES
            .iter()
            .position(|r| r.group == group && r.version == version && r.kind == kind)
            .unwrap_or_else(|| panic!("create: {av} {kind} is not served"));
        let mut obj = s.prepare_new(res, obj);
        merge::record_update(
            None,
            &mut obj,
            "test-seed",
            &av,
            resources::RESOURCES[res].status,
            None,
            &store::now_rfc3339(),
        );
        let out = s.insert(res, obj, store::EventType::Added);
        drop(s);
        self.shared.notify();
        out
    }

    /// Wait (polling) until `check` holds for the server's objects, or panic after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, check: impl Fn(&KubeApi) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        while !check(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
