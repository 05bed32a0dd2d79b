//! The stand-in's HTTP surface: authentication and the deny list, discovery, the REST verbs on
//! the object store (with server-side apply and the other patch types), status/scale/finalize
//! subresources, list and watch, pod logs and the service proxy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::controller::each_container;
use super::merge::{self, Applied};
use super::resources::{self, RESOURCES, Resource};
use super::store::{
    ApiError, EventType, FieldSelector, LabelSelector, Store, labels_of, mutable_metadata, name_of,
    now_rfc3339, suffix,
};
use super::{Seen, Shared, controller};

/// The real server's default request body limit (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

type Q = HashMap<String, String>;

fn json_response(code: u16, v: &Value) -> Response {
    let mut r = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        v.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, &self.status())
    }
}

fn not_found_path() -> Response {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
    .into_response()
}

pub async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: Q = parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (pct_decode(k), pct_decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let header = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header(header::CONTENT_TYPE);
    let accept = header(header::ACCEPT);
    let user_agent = header(header::USER_AGENT);
    let authorization = header(header::AUTHORIZATION);
    {
        let mut s = shared.lock();
        s.requests.push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            query: parts.uri.query().unwrap_or("").to_string(),
            content_type: content_type.clone(),
        });
        if let Some(token) = &s.token
            && !matches!(path.as_str(), "/healthz" | "/livez" | "/readyz")
            && authorization.strip_prefix("Bearer ") != Some(token.as_str())
        {
            return ApiError::new(401, "Unauthorized", "Unauthorized").into_response();
        }
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                413,
                "RequestEntityTooLarge",
                "Request entity too large: limit is 3145728",
            )
            .into_response();
        }
    };
    let ctx = Ctx {
        shared: shared.clone(),
        method: parts.method.clone(),
        query,
        content_type,
        accept,
        user_agent,
        headers: parts.headers.clone(),
        body: bytes,
    };
    match route(&ctx, &path).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Ctx {
    shared: Arc<Shared>,
    method: Method,
    query: Q,
    content_type: String,
    accept: String,
    user_agent: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Ctx {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    /// The manager of a non-apply write: `fieldManager`, else the user agent up to its `/`.
    fn update_manager(&self) -> String {
        match self.q("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self
                .user_agent
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_string(),
        }
    }

    fn body_value(&self) -> Result<Value, ApiError> {
        let ct = self.content_type.split(';').next().unwrap_or("").trim();
        if ct.contains("protobuf") {
            return Err(ApiError::unsupported_media(
                "application/json, application/yaml (this in-test stand-in does not decode protobuf)",
            ));
        }
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        let parsed = if ct.contains("yaml") {
            serde_yaml::from_slice::<Value>(&self.body).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice::<Value>(&self.body).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized or malformed: {e}"
            ))
        })
    }
}

/// What a resource URL names.
struct Target {
    res: usize,
    /// The namespace from the URL; empty for cluster-scoped resources and all-namespace lists.
    ns: String,
    name: Option<String>,
    sub: Option<String>,
    /// The path after `/proxy` for the service proxy.
    rest: String,
}

fn parse_target(s: &Store, group: &str, version: &str, segs: &[&str]) -> Option<Target> {
    let crd = s.servicemonitor_crd;
    if segs.len() >= 3
        && segs[0] == "namespaces"
        && let Some(res) =
            resources::find(group, version, segs[2], crd).filter(|r| RESOURCES[*r].namespaced)
    {
        return Some(Target {
            res,
            ns: segs[1].to_string(),
            name: segs.get(3).map(|s| s.to_string()),
            sub: segs.get(4).map(|s| s.to_string()),
            rest: if segs.len() > 5 {
                format!("/{}", segs[5..].join("/"))
            } else {
                String::new()
            },
        });
    }
    let res = resources::find(group, version, segs.first()?, crd)?;
    if RESOURCES[res].namespaced && segs.len() > 1 {
        return None;
    }
    Some(Target {
        res,
        ns: String::new(),
        name: segs.get(1).map(|s| s.to_string()),
        sub: segs.get(2).map(|s| s.to_string()),
        rest: String::new(),
    })
}

async fn route(ctx: &Ctx, path: &str) -> Result<Response, ApiError> {
    let crd = ctx.shared.lock().servicemonitor_crd;
    let aggregated =
        ctx.accept.contains("as=APIGroupDiscoveryList") && ctx.accept.contains("v=v2;");
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = ctx.method == Method::GET;
    match segs.as_slice() {
        ["version"] if get => return Ok(json_response(200, &resources::version())),
        ["healthz" | "livez" | "readyz"] if get => return Ok("ok".into_response()),
        ["api"] if get => {
            if aggregated {
                return Ok(aggregated_response(resources::aggregated(true, crd)));
            }
            return Ok(json_response(
                200,
                &resources::api_versions(&ctx.shared.host),
            ));
        }
        ["apis"] if get => {
            if aggregated {
                return Ok(aggregated_response(resources::aggregated(false, crd)));
            }
            return Ok(json_response(200, &resources::api_group_list(crd)));
        }
        ["api", "v1"] if get => {
            return Ok(json_response(
                200,
                &resources::api_resource_list("", "v1", crd),
            ));
        }
        ["apis", g] if get => {
            return resources::api_group_doc(g, crd)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| {
                    ApiError::new(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                });
        }
        ["apis", g, v] if get => {
            if !resources::group_served(g, v, crd) {
                return Ok(not_found_path());
            }
            return Ok(json_response(200, &resources::api_resource_list(g, v, crd)));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(not_found_path()),
    };
    let target = {
        let s = ctx.shared.lock();
        parse_target(&s, group, version, rest)
    };
    let Some(t) = target else {
        return Ok(not_found_path());
    };
    let r = &RESOURCES[t.res];
    let verb = match (&ctx.method, &t.name, t.sub.as_deref()) {
        (_, Some(_), Some("proxy")) => match ctx.method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "get",
        },
        (&Method::GET, None, _) if matches!(ctx.q("watch"), Some("1" | "true")) => "watch",
        (&Method::GET, None, _) => "list",
        (&Method::GET, Some(_), _) => "get",
        (&Method::POST, None, _) => "create",
        (&Method::PUT, Some(_), _) => "update",
        (&Method::PATCH, Some(_), _) => "patch",
        (&Method::DELETE, Some(_), _) => "delete",
        (&Method::DELETE, None, _) => "deletecollection",
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".to_string(),
            ));
        }
    };
    {
        let s = ctx.shared.lock();
        let name = t.name.as_deref().unwrap_or("");
        if let Some(e) = s.denied(verb, r, t.sub.as_deref(), &t.ns, name) {
            return Err(e);
        }
    }
    if r.namespaced && t.ns.is_empty() && !matches!(verb, "list" | "watch") {
        return Ok(not_found_path());
    }
    let name = t.name.clone().unwrap_or_default();
    match (verb, t.sub.as_deref()) {
        ("watch", _) => Ok(watch(ctx, &t)?),
        ("list", _) => Ok(json_response(200, &list(ctx, &t)?)),
        ("get", None | Some("status")) => {
            let s = ctx.shared.lock();
            let obj = s
                .get(t.res, &t.ns, &name)
                .ok_or_else(|| ApiError::not_found(r, &name))?;
            Ok(json_response(200, obj))
        }
        ("get", Some("scale")) if r.scale => {
            let s = ctx.shared.lock();
            let obj = s
                .get(t.res, &t.ns, &name)
                .ok_or_else(|| ApiError::not_found(r, &name))?;
            Ok(json_response(200, &scale_view(obj)))
        }
        ("get", Some("log")) if r.plural == "pods" => logs(ctx, &t.ns, &name),
        (_, Some("proxy")) if r.plural == "services" => proxy(ctx, &t.ns, &name, &t.rest).await,
        ("create", None) => write_response(ctx, create(ctx, &t)),
        ("update", None | Some("status") | Some("finalize")) => {
            write_response(ctx, update(ctx, &t, &name))
        }
        ("update", Some("scale")) if r.scale => write_response(ctx, scale_write(ctx, &t, &name)),
        ("patch", None | Some("status")) => write_response(ctx, patch(ctx, &t, &name)),
        ("patch", Some("scale")) if r.scale => write_response(ctx, scale_write(ctx, &t, &name)),
        ("delete", None) => {
            let v = delete(ctx, &t, &name)?;
            ctx.shared.notify();
            Ok(json_response(200, &v))
        }
        ("deletecollection", None) => {
            let v = delete_collection(ctx, &t)?;
            ctx.shared.notify();
            Ok(json_response(200, &v))
        }
        _ => Ok(not_found_path()),
    }
}

fn aggregated_response(v: Value) -> Response {
    let mut r = json_response(200, &v);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    r
}

fn write_response(ctx: &Ctx, r: Result<(u16, Value), ApiError>) -> Result<Response, ApiError> {
    let (code, v) = r?;
    ctx.shared.notify();
    Ok(json_response(code, &v))
}

fn strip_for_list(r: &Resource, obj: &Value) -> Value {
    let mut o = obj.clone();
    if !r.crd
        && let Some(m) = o.as_object_mut()
    {
        m.remove("kind");
        m.remove("apiVersion");
    }
    o
}

fn selectors(ctx: &Ctx, r: &Resource) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let ls = LabelSelector::parse(ctx.q("labelSelector").unwrap_or(""))?;
    let fs = FieldSelector::parse(ctx.q("fieldSelector").unwrap_or(""), r)?;
    Ok((ls, fs))
}

fn list(ctx: &Ctx, t: &Target) -> Result<Value, ApiError> {
    let r = &RESOURCES[t.res];
    let (ls, fs) = selectors(ctx, r)?;
    let s = ctx.shared.lock();
    let ns = (!t.ns.is_empty()).then_some(t.ns.as_str());
    let mut start_after = String::new();
    if let Some(c) = ctx.q("continue").filter(|c| !c.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or_else(|| {
                ApiError::bad_request("continue key is not valid: illegal base64 data")
            })?;
        if raw["rv"].as_u64().unwrap_or(0) < s.compacted {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        start_after = raw["start"].as_str().unwrap_or("").to_string();
    }
    let limit: usize = ctx
        .q("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let matching: Vec<&Value> = s
        .list(t.res, ns)
        .into_iter()
        .filter(|o| ls.matches(&labels_of(o)) && fs.matches(o))
        .filter(|o| start_after.is_empty() || key_of(o) > start_after)
        .collect();
    let mut meta = json!({"resourceVersion": s.rv.to_string()});
    if matching.len() > limit {
        let last = key_of(matching[limit - 1]);
        let token = json!({"rv": s.rv, "start": last}).to_string();
        meta["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(token));
        meta["remainingItemCount"] = json!(matching.len() - limit);
    }
    let items: Vec<Value> = matching
        .into_iter()
        .take(limit)
        .map(|o| strip_for_list(r, o))
        .collect();
    Ok(
        json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": meta, "items": items}),
    )
}

fn key_of(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        name_of(o)
    )
}

/// Stream watch events as JSON lines until `timeoutSeconds`, the end-after knob, or the client
/// goes away.
fn watch(ctx: &Ctx, t: &Target) -> Result<Response, ApiError> {
    let r = &RESOURCES[t.res];
    let (ls, fs) = selectors(ctx, r)?;
    let bookmarks = matches!(ctx.q("allowWatchBookmarks"), Some("true" | "1"));
    let initial_events = matches!(ctx.q("sendInitialEvents"), Some("true" | "1"));
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1800);
    let rv_param = ctx
        .q("resourceVersion")
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let shared = ctx.shared.clone();
    let res = t.res;
    let ns = (!t.ns.is_empty()).then(|| t.ns.clone());
    let kind = r.kind;
    let api_version = r.api_version();
    tokio::spawn(async move {
        let line = |v: Value| Ok(Bytes::from(format!("{v}\n")));
        let matches = |o: &Value| ls.matches(&labels_of(o)) && fs.matches(o);
        let mut rv_rx = shared.notify_tx.subscribe();
        let opened: Result<(u64, Vec<Value>, Option<usize>), ApiError> = (|| {
            let s = shared.lock();
            let start: Option<u64> = match rv_param.as_deref() {
                None | Some("0") => None,
                Some(v) => Some(v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {v}"))
                })?),
            };
            if let Some(n) = start
                && n < s.compacted
            {
                return Err(ApiError::gone(format!(
                    "too old resource version: {n} ({})",
                    s.compacted
                )));
            }
            let initial: Vec<Value> = if start.is_none() || initial_events {
                s.list(res, ns.as_deref())
                    .into_iter()
                    .filter(|o| matches(o))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            let cursor = match start {
                Some(n) if !initial_events => n.min(s.rv),
                _ => s.rv,
            };
            Ok((cursor, initial, s.end_watches_after))
        })();
        let (mut cursor, initial, end_after) = match opened {
            Ok(v) => v,
            Err(e) => {
                let _ = tx
                    .send(line(json!({"type": "ERROR", "object": e.status()})))
                    .await;
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let interval = shared.bookmark_interval;
        let mut sent = 0usize;
        for o in initial {
            if tx
                .send(line(json!({"type": "ADDED", "object": o})))
                .await
                .is_err()
            {
                return;
            }
            sent += 1;
            if end_after.is_some_and(|k| sent >= k) {
                return;
            }
        }
        if initial_events && bookmarks {
            let b = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": cursor.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
            if tx.send(line(b)).await.is_err() {
                return;
            }
        }
        let mut next_bookmark = tokio::time::Instant::now() + interval;
        loop {
            let events: Vec<Value> = {
                let s = shared.lock();
                let from = s.history.partition_point(|e| e.rv <= cursor);
                let out = s.history[from..]
                    .iter()
                    .filter(|e| {
                        e.res == res
                            && ns.as_deref().is_none_or(|n| n == e.ns)
                            && matches(&e.object)
                    })
                    .map(|e| json!({"type": e.kind.as_str(), "object": e.object}))
                    .collect();
                cursor = s.rv;
                out
            };
            for e in events {
                if tx.send(line(e)).await.is_err() {
                    return;
                }
                sent += 1;
                if end_after.is_some_and(|k| sent >= k) {
                    return;
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            if bookmarks && now >= next_bookmark {
                let b = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": cursor.to_string()}}});
                if tx.send(line(b)).await.is_err() {
                    return;
                }
                next_bookmark = now + interval;
            }
            let wake = if bookmarks {
                next_bookmark.min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                _ = rv_rx.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn check_body_type(r: &Resource, body: &Value) -> Result<(), ApiError> {
    if let Some(av) = body["apiVersion"].as_str()
        && av != r.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            r.api_version()
        )));
    }
    if let Some(k) = body["kind"].as_str()
        && k != r.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            r.kind
        )));
    }
    Ok(())
}

/// RFC 1123 subdomain (most names) or label (namespaces, services).
fn validate_name(r: &Resource, name: &str) -> Result<(), ApiError> {
    let label = matches!(r.plural, "namespaces" | "services");
    let ok_chars = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let ok = if label {
        name.len() <= 63 && ok_chars(name)
    } else {
        name.len() <= 253 && name.split('.').all(ok_chars)
    };
    if ok {
        return Ok(());
    }
    let what = if label {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    } else {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    };
    Err(ApiError::invalid(
        r,
        name,
        &format!("metadata.name: Invalid value: \"{name}\": {what}"),
    ))
}

/// The namespace must exist and not be terminating for a new object in it.
fn check_namespace(s: &Store, r: &Resource, ns: &str, name: &str) -> Result<(), ApiError> {
    if !r.namespaced {
        return Ok(());
    }
    let nsr = &RESOURCES[resources::id("", "namespaces")];
    let n = s
        .namespace(ns)
        .ok_or_else(|| ApiError::not_found(nsr, ns))?;
    if n["metadata"]["deletionTimestamp"].is_string() {
        let mut e = ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                r.qualified()
            ),
        );
        e.details = Some(json!({"name": name, "group": r.group, "kind": r.plural,
            "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}));
        return Err(e);
    }
    Ok(())
}

/// Server-owned metadata that clients may send back but never set.
fn strip_server_fields(obj: &mut Value) {
    let m = mutable_metadata(obj);
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
        "deletionTimestamp",
        "selfLink",
    ] {
        m.remove(k);
    }
}

fn check_name_ns(r: &Resource, body: &Value, ns: &str, name: &str) -> Result<(), ApiError> {
    if let Some(n) = body["metadata"]["name"].as_str()
        && !name.is_empty()
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(n) = body["metadata"]["namespace"].as_str()
        && r.namespaced
        && !n.is_empty()
        && n != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// The object `name` of `t` as stored; the real server's NotFound when there is none.
fn stored(s: &Store, t: &Target, name: &str) -> Result<Value, ApiError> {
    s.get(t.res, &t.ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&RESOURCES[t.res], name))
}

/// The body of a create (`name` empty) or update of `t`: a JSON object of the resource's kind
/// whose name and namespace agree with the URL's.
fn object_body(ctx: &Ctx, t: &Target, name: &str) -> Result<Value, ApiError> {
    let r = &RESOURCES[t.res];
    let body = ctx.body_value()?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is unrecognized or malformed: not a JSON object",
        ));
    }
    check_body_type(r, &body)?;
    check_name_ns(r, &body, &t.ns, name)?;
    Ok(body)
}

/// Records `new`'s managed fields as the request's manager's (`subresource` as the real server
/// names it) and commits it over `old`.
fn record_and_commit(
    ctx: &Ctx,
    s: &mut Store,
    t: &Target,
    old: &Value,
    mut new: Value,
    subresource: Option<&str>,
) -> Value {
    let r = &RESOURCES[t.res];
    merge::record_update(
        Some(old),
        &mut new,
        &ctx.update_manager(),
        &r.api_version(),
        r.status,
        subresource,
        &now_rfc3339(),
    );
    commit(s, t.res, old, new, subresource, ctx.dry_run())
}

fn create(ctx: &Ctx, t: &Target) -> Result<(u16, Value), ApiError> {
    let r = &RESOURCES[t.res];
    let mut body = object_body(ctx, t, "")?;
    let mut s = ctx.shared.lock();
    let name = match body["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => match body["metadata"]["generateName"].as_str() {
            Some(g) => format!("{g}{}", suffix(5)),
            None => {
                return Err(ApiError::invalid(
                    r,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        },
    };
    validate_name(r, &name)?;
    check_namespace(&s, r, &t.ns, &name)?;
    if s.get(t.res, &t.ns, &name).is_some() {
        return Err(ApiError::already_exists(r, &name));
    }
    strip_server_fields(&mut body);
    let m = mutable_metadata(&mut body);
    m.insert("name".into(), json!(name));
    if r.namespaced {
        m.insert("namespace".into(), json!(t.ns));
    }
    if r.status && r.plural != "namespaces" {
        body.as_object_mut().expect("object").remove("status");
    }
    let mut obj = s.prepare_new(t.res, body);
    merge::record_update(
        None,
        &mut obj,
        &ctx.update_manager(),
        &r.api_version(),
        r.status,
        None,
        &now_rfc3339(),
    );
    if ctx.dry_run() {
        return Ok((201, obj));
    }
    let obj = s.insert(t.res, obj, EventType::Added);
    Ok((201, obj))
}

/// Write `new` over `old`: server-owned metadata and (on the main resource) the status stay,
/// generation follows the spec, a no-op writes nothing, and an object whose last finalizer
/// went away while it was being deleted is removed.
fn commit(
    s: &mut Store,
    res: usize,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
    dry_run: bool,
) -> Value {
    let r = &RESOURCES[res];
    let ns = old["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = name_of(old).to_string();
    new["apiVersion"] = json!(r.api_version());
    new["kind"] = json!(r.kind);
    {
        let om = old["metadata"].as_object().cloned().unwrap_or_default();
        let m = mutable_metadata(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "name",
            "namespace",
            "generation",
            "resourceVersion",
        ] {
            match om.get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
    }
    match sub {
        Some("status") => {
            let status = new.get("status").cloned();
            let managed = new["metadata"]["managedFields"].clone();
            new = old.clone();
            match status {
                Some(st) => new["status"] = st,
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
            new["metadata"]["managedFields"] = managed;
        }
        _ if r.status => match old.get("status") {
            Some(st) => new["status"] = st.clone(),
            None => {
                new.as_object_mut().expect("object").remove("status");
            }
        },
        _ => {}
    }
    controller::default_object(s, r, &mut new);
    // Writes of the spec (the object, or its scale) move the generation; status writes do not.
    if r.generation && sub != Some("status") {
        let spec_of = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            v
        };
        if spec_of(old) != spec_of(&new) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(g);
        }
    }
    if new["metadata"]["managedFields"].is_null() {
        mutable_metadata(&mut new).remove("managedFields");
    }
    let without_times = |v: &Value| {
        let mut v = v.clone();
        if let Some(mf) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in mf {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
        v
    };
    if without_times(old) == without_times(&new) || dry_run {
        return if dry_run { new } else { old.clone() };
    }
    let deleting = new["metadata"]["deletionTimestamp"].is_string();
    let no_finalizers = new["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty());
    if deleting && no_finalizers && r.plural != "namespaces" {
        s.objects.insert((res, ns.clone(), name.clone()), new);
        return s.remove(res, &ns, &name).unwrap_or_default();
    }
    s.insert(res, new, EventType::Modified)
}

fn update(ctx: &Ctx, t: &Target, name: &str) -> Result<(u16, Value), ApiError> {
    let r = &RESOURCES[t.res];
    let mut body = object_body(ctx, t, name)?;
    let mut s = ctx.shared.lock();
    let old = stored(&s, t, name)?;
    let want_rv = body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if !want_rv.is_empty() && want_rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") {
        return Err(ApiError::modified(r, name));
    }
    let sub = t.sub.as_deref();
    if sub == Some("finalize") {
        let fins = body["spec"]["finalizers"].clone();
        let mut new = old.clone();
        new["spec"]["finalizers"] = if fins.is_null() { json!([]) } else { fins };
        let v = commit(&mut s, t.res, &old, new, None, ctx.dry_run());
        return Ok((200, v));
    }
    // Clients send back the managedFields they read; a PUT that omits them keeps the old ones.
    if body["metadata"]["managedFields"].is_null() {
        body["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
    }
    let v = record_and_commit(ctx, &mut s, t, &old, body, sub);
    Ok((200, v))
}

fn patch(ctx: &Ctx, t: &Target, name: &str) -> Result<(u16, Value), ApiError> {
    let r = &RESOURCES[t.res];
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if ct == "application/apply-patch+yaml" {
        return apply(ctx, t, name);
    }
    if ctx.q("force").is_some() {
        return Err(ApiError::invalid(
            r,
            name,
            "force: Forbidden: may not be specified for non-apply patch",
        ));
    }
    let body = ctx.body_value()?;
    let mut s = ctx.shared.lock();
    let old = stored(&s, t, name)?;
    let mut new = old.clone();
    match ct.as_str() {
        "application/merge-patch+json" => merge::merge_patch(&mut new, &body),
        "application/strategic-merge-patch+json" if !r.crd => {
            merge::strategic_patch(&mut new, &body)
        }
        "application/json-patch+json" => {
            merge::json_patch(&mut new, &body).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        _ => {
            let accepted = if r.crd {
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            } else {
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
            };
            return Err(ApiError::unsupported_media(accepted));
        }
    }
    if new["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]
        && !new["metadata"]["resourceVersion"].is_null()
    {
        return Err(ApiError::modified(r, name));
    }
    if name_of(&new) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&new)
        )));
    }
    let sub = t.sub.as_deref();
    let v = record_and_commit(ctx, &mut s, t, &old, new, sub);
    Ok((200, v))
}

fn apply(ctx: &Ctx, t: &Target, name: &str) -> Result<(u16, Value), ApiError> {
    let r = &RESOURCES[t.res];
    let manager = ctx.q("fieldManager").unwrap_or("").to_string();
    if manager.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    if manager.len() > 128 || manager.chars().any(|c| c.is_control()) {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Invalid value: \"{manager}\": must be less than 128 printable characters"
            ),
        ));
    }
    let force = matches!(ctx.q("force"), Some("true" | "1"));
    let body = serde_yaml::from_slice::<Value>(&ctx.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is unrecognized or malformed: not a JSON or YAML object",
        ));
    }
    if body["apiVersion"].as_str().is_none_or(str::is_empty)
        || body["kind"].as_str().is_none_or(str::is_empty)
    {
        return Err(ApiError::bad_request(format!(
            "invalid object type: {}, Kind={}",
            body["apiVersion"].as_str().unwrap_or(""),
            body["kind"].as_str().unwrap_or("")
        )));
    }
    check_body_type(r, &body)?;
    if body["metadata"]["name"].as_str().is_none_or(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            body["metadata"]["name"].as_str().unwrap_or("")
        )));
    }
    check_name_ns(r, &body, &t.ns, name)?;
    let want_rv = body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut applied = body;
    strip_server_fields(&mut applied);
    if r.status
        && let Some(m) = applied.as_object_mut()
    {
        m.remove("status");
    }
    let mut s = ctx.shared.lock();
    let live = s.get(t.res, &t.ns, name).cloned();
    if let Some(l) = &live
        && !want_rv.is_empty()
        && want_rv != l["metadata"]["resourceVersion"].as_str().unwrap_or("")
    {
        return Err(ApiError::modified(r, name));
    }
    if live.is_none() {
        if !want_rv.is_empty() {
            return Err(ApiError::not_found(r, name));
        }
        validate_name(r, name)?;
        check_namespace(&s, r, &t.ns, name)?;
    }
    let result = merge::apply(
        live.as_ref(),
        &applied,
        &manager,
        &r.api_version(),
        force,
        r.status,
        &now_rfc3339(),
    )
    .map_err(|e| ApiError::invalid(r, name, &e))?;
    let new = match result {
        Applied::Ok(v) => v,
        Applied::Conflict(message, causes) => {
            let mut e = ApiError::new(409, "Conflict", message);
            e.details = Some(json!({"causes": causes}));
            return Err(e);
        }
    };
    match live {
        None => {
            let mut new = new;
            let m = mutable_metadata(&mut new);
            m.insert("name".into(), json!(name));
            if r.namespaced {
                m.insert("namespace".into(), json!(t.ns));
            }
            let obj = s.prepare_new(t.res, new);
            if ctx.dry_run() {
                return Ok((201, obj));
            }
            Ok((201, s.insert(t.res, obj, EventType::Added)))
        }
        Some(old) => Ok((200, commit(&mut s, t.res, &old, new, None, ctx.dry_run()))),
    }
}

fn scale_view(obj: &Value) -> Value {
    let sel = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let m = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": sel},
    })
}

fn scale_write(ctx: &Ctx, t: &Target, name: &str) -> Result<(u16, Value), ApiError> {
    let r = &RESOURCES[t.res];
    let body = ctx.body_value()?;
    let mut s = ctx.shared.lock();
    let old = stored(&s, t, name)?;
    let mut view = scale_view(&old);
    if ctx.method == Method::PUT {
        let want = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !want.is_empty() && want != view["metadata"]["resourceVersion"].as_str().unwrap_or("") {
            return Err(ApiError::modified(r, name));
        }
        view = body;
    } else {
        let ct = ctx.content_type.split(';').next().unwrap_or("").trim();
        match ct {
            "application/json-patch+json" => {
                merge::json_patch(&mut view, &body).map_err(|e| ApiError::new(422, "Invalid", e))?
            }
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                merge::merge_patch(&mut view, &body)
            }
            _ => {
                return Err(ApiError::unsupported_media(
                    "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json",
                ));
            }
        }
    }
    let replicas = view["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| ApiError::invalid(r, name, "spec.replicas: Required value"))?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            r,
            name,
            &format!(
                "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            ),
        ));
    }
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    let v = record_and_commit(ctx, &mut s, t, &old, new, Some("scale"));
    Ok((200, scale_view(&v)))
}

fn delete(ctx: &Ctx, t: &Target, name: &str) -> Result<Value, ApiError> {
    let opts = ctx.body_value().unwrap_or(Value::Null);
    let mut s = ctx.shared.lock();
    let old = stored(&s, t, name)?;
    // DeleteOptions.preconditions, each compared with the stored object's metadata.
    for (field, shown) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let have = old["metadata"][field].as_str();
        if let Some(want) = opts["preconditions"][field].as_str()
            && Some(want) != have
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: {shown} in precondition: {want}, {shown} in object meta: {}",
                    have.unwrap_or("")
                ),
            ));
        }
    }
    if ctx.dry_run() {
        return Ok(old);
    }
    Ok(controller::delete_object(&mut s, t.res, &t.ns, name))
}

fn delete_collection(ctx: &Ctx, t: &Target) -> Result<Value, ApiError> {
    let r = &RESOURCES[t.res];
    let (ls, fs) = selectors(ctx, r)?;
    let mut s = ctx.shared.lock();
    let names: Vec<String> = s
        .list(t.res, Some(&t.ns))
        .into_iter()
        .filter(|o| ls.matches(&labels_of(o)) && fs.matches(o))
        .map(|o| name_of(o).to_string())
        .collect();
    let mut items = Vec::new();
    for n in names {
        items.push(controller::delete_object(&mut s, t.res, &t.ns, &n));
    }
    Ok(
        json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
    )
}

fn text(code: u16, body: String) -> Response {
    let mut r = (StatusCode::from_u16(code).unwrap_or(StatusCode::OK), body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Pod logs with the kubelet's rules for containers that never started.
fn logs(ctx: &Ctx, ns: &str, name: &str) -> Result<Response, ApiError> {
    let s = ctx.shared.lock();
    let pods = &RESOURCES[resources::id("", "pods")];
    let pod = s
        .get(resources::id("", "pods"), ns, name)
        .ok_or_else(|| ApiError::not_found(pods, name))?;
    let containers = each_container(pod, "name");
    let container = match ctx.q("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if !containers.iter().any(|x| x == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let status = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == Some(&container))
        .cloned()
        .unwrap_or(Value::Null);
    let previous = matches!(ctx.q("previous"), Some("true" | "1"));
    let last_terminated = status["lastState"]["terminated"].is_object();
    let waiting = status["state"]["waiting"]["reason"].as_str();
    let running = status["state"]["running"].is_object();
    if previous && !last_terminated {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    if !previous && !running && !last_terminated {
        let msg = match waiting {
            Some("ErrImagePull") => format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: image can't be pulled"
            ),
            Some("ImagePullBackOff") => format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: trying and failing to pull image"
            ),
            Some(reason) => {
                format!("container \"{container}\" in pod \"{name}\" is waiting to start: {reason}")
            }
            None => format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            ),
        };
        return Err(ApiError::bad_request(msg));
    }
    let images = each_container(pod, "image");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let outcome = s.pod_outcome.get(uid).copied().unwrap_or(s.default_outcome);
    let mut lines = s.logs_for(ns, &images, outcome);
    if let Some(n) = ctx.q("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if let Some(limit) = ctx.q("limitBytes").and_then(|n| n.parse::<usize>().ok()) {
        body.truncate(limit);
    }
    Ok(text(200, body))
}

/// `/api/v1/namespaces/{ns}/services/[scheme:]{name}[:{port}]/proxy/{path}`: forwarded to the
/// backend the test registered for a ready endpoint of the service.
async fn proxy(ctx: &Ctx, ns: &str, raw: &str, rest: &str) -> Result<Response, ApiError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, port) = match parts.as_slice() {
        [n] => (*n, ""),
        [n, p] => (*n, *p),
        [scheme, n, p] if matches!(*scheme, "http" | "https") => (*n, *p),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid service request {raw}"
            )));
        }
    };
    let backend = {
        let s = ctx.shared.lock();
        controller::proxy_backend(&s, ns, name, port)?
    };
    let path_q = match ctx.query.is_empty() {
        true => rest.to_string(),
        false => {
            let q: Vec<String> = ctx.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{rest}?{}", q.join("&"))
        }
    };
    let url = format!(
        "http://{backend}{}",
        if path_q.is_empty() {
            "/".to_string()
        } else {
            path_q
        }
    );
    let method =
        reqwest::Method::from_bytes(ctx.method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = ctx
        .shared
        .http
        .request(method, &url)
        .body(ctx.body.to_vec());
    for (k, v) in &ctx.headers {
        if matches!(
            k.as_str(),
            "authorization"
                | "host"
                | "connection"
                | "content-length"
                | "transfer-encoding"
                | "accept-encoding"
        ) {
            continue;
        }
        req = req.header(k.as_str(), v.as_bytes());
    }
    let resp = req.send().await.map_err(|e| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!(
                "error trying to reach service: dial tcp {backend}: {}",
                e.without_url()
            ),
        )
    })?;
    let status = resp.status().as_u16();
    let headers: Vec<(String, Vec<u8>)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let body = resp.bytes().await.map_err(|e| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {e}"),
        )
    })?;
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in headers {
        if matches!(
            k.as_str(),
            "connection" | "transfer-encoding" | "content-length"
        ) {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(&v),
        ) {
            out.headers_mut().append(k, v);
        }
    }
    Ok(out)
}
