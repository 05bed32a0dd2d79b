//! The object store of the stand-in API server: objects keyed by resource/namespace/name, one
//! global resourceVersion counter, the event history that watches replay, the `Status` errors
//! the real server returns, label and field selectors, and the test knobs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::resources::{RESOURCES, Resource};
use super::{Outcome, Seen};

/// A k8s `Status` failure: what the real server sends with a non-2xx code.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// A failure about the object `name` of `res`, with the `details` the real server adds.
    fn about(res: &Resource, name: &str, code: u16, reason: &'static str, message: String) -> Self {
        let mut d = json!({"kind": res.plural});
        if !name.is_empty() {
            d["name"] = json!(name);
        }
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        ApiError {
            details: Some(d),
            ..ApiError::new(code, reason, message)
        }
    }

    pub fn not_found(res: &Resource, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", res.qualified());
        ApiError::about(res, name, 404, "NotFound", message)
    }

    pub fn already_exists(res: &Resource, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", res.qualified());
        ApiError::about(res, name, 409, "AlreadyExists", message)
    }

    pub fn modified(res: &Resource, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            res.qualified()
        );
        ApiError::about(res, name, 409, "Conflict", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn invalid(res: &Resource, name: &str, causes: &str) -> Self {
        let message = format!("{} \"{name}\" is invalid: {causes}", res.kind);
        ApiError::about(res, name, 422, "Invalid", message)
    }

    pub fn unsupported_media(accepted: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}"
            ),
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Watch event types as they appear on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub res: usize,
    pub ns: String,
    pub object: Value,
}

/// (resource id, namespace or "" for cluster-scoped, name).
pub type Key = (usize, String, String);

/// Everything the server knows, behind one mutex.
pub struct Store {
    pub rv: u64,
    pub objects: BTreeMap<Key, Value>,
    pub history: Vec<Event>,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub compacted: u64,
    pub token: Option<String>,
    pub user: String,
    pub denies: Vec<(String, String, String)>,
    pub servicemonitor_crd: bool,
    pub outcomes: Vec<(String, Outcome)>,
    pub default_outcome: Outcome,
    pub logs: Vec<(String, Vec<String>)>,
    pub end_watches_after: Option<usize>,
    pub backends: BTreeMap<(String, String, u16), SocketAddr>,
    pub requests: Vec<Seen>,
    pub ready_after: Duration,
    pub namespace_delete_delay: Duration,
    pub progress_deadline: Option<Duration>,
    /// Controller bookkeeping: when each simulated pod was created, and its settled outcome.
    pub pod_born: HashMap<String, Instant>,
    pub pod_outcome: HashMap<String, Outcome>,
    /// When each namespace's deletion was requested.
    pub ns_deleting: HashMap<String, Instant>,
    /// When each deployment's current rollout (template hash) began.
    pub rollout_began: HashMap<String, (String, Instant)>,
    pub next_ip: u32,
}

pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

pub fn rfc3339(secs: u64) -> String {
    let t = wms::calendar::utc(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// MicroTime, as Lease `renewTime` and event times use it.
pub fn now_micro() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let base = rfc3339(d.as_secs());
    format!("{}.{:06}Z", &base[..base.len() - 1], d.subsec_micros())
}

pub fn uid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Five characters from the alphabet the real server uses for `generateName` suffixes.
pub fn suffix(n: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHA[rand::random_range(0..ALPHA.len())] as char)
        .collect()
}

pub fn meta(obj: &Value) -> &Value {
    &obj["metadata"]
}

pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

pub fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn mutable_metadata(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

impl Store {
    pub fn new(opts: &super::Options) -> Store {
        let mut s = Store {
            rv: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            token: opts.token.clone(),
            user: opts.user.clone(),
            denies: Vec::new(),
            servicemonitor_crd: false,
            outcomes: Vec::new(),
            default_outcome: opts.default_outcome,
            logs: Vec::new(),
            end_watches_after: None,
            backends: BTreeMap::new(),
            requests: Vec::new(),
            ready_after: opts.ready_after,
            namespace_delete_delay: opts.namespace_delete_delay,
            progress_deadline: opts.progress_deadline,
            pod_born: HashMap::new(),
            pod_outcome: HashMap::new(),
            ns_deleting: HashMap::new(),
            rollout_began: HashMap::new(),
            next_ip: 10,
        };
        for ns in ["default", "kube-system", "kube-public"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let obj = s.prepare_new(super::resources::id("", "namespaces"), obj);
            s.insert(
                super::resources::id("", "namespaces"),
                obj,
                EventType::Added,
            );
        }
        s
    }

    /// Server-set metadata and the defaults the real API server fills in on create.
    pub fn prepare_new(&mut self, res: usize, mut obj: Value) -> Value {
        let r = &RESOURCES[res];
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        let m = mutable_metadata(&mut obj);
        m.insert("uid".into(), json!(uid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.remove("deletionTimestamp");
        if r.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        super::controller::default_object(self, r, &mut obj);
        obj
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Store `obj` (create or replace) with a new resourceVersion and record the event.
    pub fn insert(&mut self, res: usize, mut obj: Value, kind: EventType) -> Value {
        let rv = self.bump();
        mutable_metadata(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = name_of(&obj).to_string();
        self.objects.insert((res, ns.clone(), name), obj.clone());
        self.history.push(Event {
            rv,
            kind,
            res,
            ns,
            object: obj.clone(),
        });
        obj
    }

    /// Remove an object now (no finalizers left): a DELETED event carrying a new resourceVersion.
    pub fn remove(&mut self, res: usize, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(res, ns.to_string(), name.to_string()))?;
        let rv = self.bump();
        mutable_metadata(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            self.pod_born.remove(uid);
            self.pod_outcome.remove(uid);
        }
        self.history.push(Event {
            rv,
            kind: EventType::Deleted,
            res,
            ns: ns.to_string(),
            object: obj.clone(),
        });
        Some(obj)
    }

    pub fn get(&self, res: usize, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(res, ns.to_string(), name.to_string()))
    }

    /// Objects of one resource, in one namespace or all (`None`).
    pub fn list(&self, res: usize, ns: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), _)| *r == res && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .collect()
    }

    pub fn namespace(&self, ns: &str) -> Option<&Value> {
        self.get(super::resources::id("", "namespaces"), "", ns)
    }

    pub fn next_pod_ip(&mut self) -> String {
        self.next_ip += 1;
        format!("10.244.{}.{}", self.next_ip / 250, self.next_ip % 250 + 2)
    }

    /// The outcome chosen for a namespace, else for an image (exact or substring), else the default.
    pub fn outcome_for(&self, ns: &str, images: &[String]) -> Outcome {
        if let Some((_, o)) = self.outcomes.iter().rev().find(|(k, _)| k == ns) {
            return *o;
        }
        for (k, o) in self.outcomes.iter().rev() {
            if images.iter().any(|i| i == k || i.contains(k.as_str())) {
                return *o;
            }
        }
        self.default_outcome
    }

    pub fn logs_for(&self, ns: &str, images: &[String], outcome: Outcome) -> Vec<String> {
        if let Some((_, l)) = self.logs.iter().rev().find(|(k, _)| k == ns) {
            return l.clone();
        }
        for (k, l) in self.logs.iter().rev() {
            if images.iter().any(|i| i == k || i.contains(k.as_str())) {
                return l.clone();
            }
        }
        outcome.default_logs()
    }

    /// The deny list check: `Some(403)` when (verb, resource, namespace) is denied.
    pub fn denied(
        &self,
        verb: &str,
        res: &Resource,
        sub: Option<&str>,
        ns: &str,
        name: &str,
    ) -> Option<ApiError> {
        let resource = match sub {
            Some(s) => format!("{}/{s}", res.plural),
            None => res.plural.to_string(),
        };
        let hit = self.denies.iter().any(|(v, r, n)| {
            (v == verb || v == "*")
                && (*r == resource || *r == res.plural || r == "*")
                && (n == ns || n == "*")
        });
        if !hit {
            return None;
        }
        let subject = if name.is_empty() {
            format!("{} is forbidden", res.qualified())
        } else {
            format!("{} \"{name}\" is forbidden", res.qualified())
        };
        let scope = if ns.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{ns}\"")
        };
        let message = format!(
            "{subject}: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            self.user, res.group
        );
        Some(ApiError::about(res, name, 403, "Forbidden", message))
    }
}

/// One requirement of a label selector.
#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`a=b,c!=d,e in (x,y),f notin (z),g,!h`).
#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<Req>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let mut reqs = Vec::new();
        let mut depth = 0;
        let mut cur = String::new();
        let mut terms = Vec::new();
        for c in s.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        terms.push(cur);
        let bad = |t: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{t}', expected: identifier"
            ))
        };
        for t in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let set = |rest: &str| -> Option<Vec<String>> {
                let rest = rest.trim();
                let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
                Some(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            if let Some((k, v)) = t.split_once("!=") {
                reqs.push(Req::Ne(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = t.split_once("==") {
                reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = t.split_once('=') {
                reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                reqs.push(Req::NotIn(
                    k.trim().into(),
                    set(rest).ok_or_else(|| bad(t))?,
                ));
            } else if let Some((k, rest)) = t.split_once(" in ") {
                reqs.push(Req::In(k.trim().into(), set(rest).ok_or_else(|| bad(t))?));
            } else if let Some(k) = t.strip_prefix('!') {
                reqs.push(Req::NotExists(k.trim().into()));
            } else if t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                reqs.push(Req::Exists(t.into()));
            } else {
                return Err(bad(t));
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// From a `matchLabels` map (Service selectors, Deployment `selector.matchLabels`).
    pub fn from_map(m: &Map<String, Value>) -> LabelSelector {
        LabelSelector(
            m.iter()
                .map(|(k, v)| Req::Eq(k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::Ne(k, v) => labels.get(k) != Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// A parsed field selector: `metadata.name=x,metadata.namespace!=y,status.phase=Running`.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str, res: &Resource) -> Result<FieldSelector, ApiError> {
        let mut out = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = t.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = t.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = t.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{t}'"
                )));
            };
            let supported = matches!(k, "metadata.name" | "metadata.namespace")
                || (res.plural == "pods"
                    && matches!(
                        k,
                        "status.phase" | "spec.nodeName" | "spec.serviceAccountName"
                    ))
                || (res.plural == "namespaces" && k == "status.phase");
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            out.push((k.to_string(), eq, v.to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let mut cur = obj;
            for part in k.split('.') {
                cur = &cur[part];
            }
            let actual = cur.as_str().unwrap_or("");
            (actual == v) == *eq
        })
    }
}
