//! An in-test stand-in behaving like GitHub's REST API (api.github.com, or GitHub Enterprise
//! Server under `/api/v3`), for the parts wms calls. It is not a mock that answers whatever the
//! test expects: it keeps state, validates bodies and fails the way GitHub does, so a client that
//! works here has met GitHub's rules. Facts from GitHub's REST documentation (version 2022-11-28)
//! and DELIVERY-FACTS §3.
//!
//! What it implements:
//! - **Auth**: `Authorization: Bearer|token T`. An unknown token gets 401 `Bad credentials` on
//!   every route; no token may read (public repositories) but gets 401 `Requires authentication`
//!   on writes. A [`Token::ReadOnly`] (what a pull request from a fork gets) reads, and gets 403
//!   `Resource not accessible by integration` on every write. `GET /user` answers for
//!   [`Token::User`] and 403 for installation tokens ([`Token::App`], [`Token::ReadOnly`]), as
//!   GitHub does for `GITHUB_TOKEN`.
//! - **Errors**: `{"message", "documentation_url", "status"}`; 422 adds GitHub's `errors` list
//!   (`{resource, field, code}` or `{code: "custom", message}`). Unknown repositories and routes
//!   are 404 `Not Found`.
//! - **Pagination**: `per_page` (default 30, capped at 100) and `page` (from 1) on every list;
//!   `Link` with absolute URLs and `rel="prev"`, `"next"`, `"last"`, `"first"` as GitHub writes
//!   them. Actions lists wrap the page as `{total_count, workflow_runs|jobs}`.
//! - **Secondary rate limit**: [`GitHubApi::rate_limit_next`] answers the next requests with 403
//!   or 429, `retry-after` and GitHub's secondary-rate-limit message, whatever the route.
//! - **Issue comments**: `GET|POST /repos/{o}/{r}/issues/{n}/comments` (oldest first),
//!   `GET|PATCH /repos/{o}/{r}/issues/comments/{id}`; `body` required, at most 65 536 characters.
//! - **Check runs**: `POST /repos/{o}/{r}/check-runs`, `PATCH|GET …/check-runs/{id}`: `name` and
//!   `head_sha` required; `status` and `conclusion` from GitHub's lists, `completed` needs a
//!   conclusion and a conclusion implies `completed`; `output` needs `title` and `summary`,
//!   `summary`/`text` at most 65 535 characters, at most 50 annotations per request (a PATCH
//!   appends them), each with `path`, `start_line`, `end_line`, `annotation_level`
//!   (notice|warning|failure) and `message`.
//! - **Deployments**: `POST|GET /repos/{o}/{r}/deployments`, `POST|GET …/deployments/{id}/statuses`.
//!   This server's default branch is always ahead of every ref and the commit's `ci` status is
//!   pending, so a deployment without `auto_merge: false` gets 409 "Conflict merging main into
//!   REF." and one without `required_contexts` gets 409 "Conflict: Commit status checks failed
//!   for REF." (what GitHub answers in those situations). Status `state` from GitHub's list,
//!   `description` at most 140 characters, `auto_inactive` (default true) adds an `inactive`
//!   status to earlier non-transient, non-production deployments of the same environment.
//! - **Actions**: `GET /repos/{o}/{r}/actions/workflows/{id|file}/runs` (filters `branch`, `event`,
//!   `status` — a status or a conclusion, as GitHub accepts both), `GET …/actions/runs/{id}`,
//!   `GET …/actions/runs/{id}/jobs` (`filter=latest` default: the run's latest attempt; `all`).
//!
//! Test-facing API: [`GitHubApi::start`] (or [`GitHubApi::start_enterprise`] for the `/api/v3`
//! prefix) → [`GitHubApi::url`] for `GITHUB_API_URL`; [`GitHubApi::add_repo`],
//! [`GitHubApi::add_token`]; seed with [`GitHubApi::seed_comment`], [`GitHubApi::seed_workflow`],
//! [`GitHubApi::seed_run`], [`GitHubApi::seed_job`]; inspect with [`GitHubApi::comments`],
//! [`GitHubApi::check_runs`], [`GitHubApi::deployments`], [`GitHubApi::deployment_statuses`],
//! [`GitHubApi::requests`]; knobs [`GitHubApi::rate_limit_next`]. Everything is on 127.0.0.1
//! and stops when the value drops.
//!
//! Not implemented (wms does not call them): GraphQL, reactions, minimizing comments, check
//! suites, `created` filters, conditional requests (ETag), primary-rate-limit accounting.

#![allow(dead_code)] // Not every test module uses every seed/inspect helper.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const DOCS: &str = "https://docs.github.com/rest";
/// GitHub's comment body limit (characters).
pub const COMMENT_MAX: usize = 65_536;
/// GitHub's check run `output.summary` / `output.text` limit (characters).
pub const CHECK_TEXT_MAX: usize = 65_535;
/// GitHub's per-request annotation limit.
pub const ANNOTATIONS_PER_REQUEST: usize = 50;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A personal access token of `login`: reads, writes, `GET /user` answers.
    User(String),
    /// An installation token (`GITHUB_TOKEN` with write permissions): acts as
    /// `github-actions[bot]`; `GET /user` is 403.
    App,
    /// `GITHUB_TOKEN` on a pull request from a fork: reads only; writes are 403.
    ReadOnly,
}

impl Token {
    fn author(&self) -> Value {
        match self {
            Token::User(login) => json!({"login": login, "id": id_of(login), "type": "User"}),
            Token::App | Token::ReadOnly => {
                json!({"login": "github-actions[bot]", "id": 41898282, "type": "Bot"})
            }
        }
    }
}

fn id_of(login: &str) -> u64 {
    login
        .bytes()
        .fold(1000u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64))
        % 100_000_000
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Without the Enterprise prefix, e.g. `/repos/o/r/check-runs`.
    pub path: String,
    pub query: String,
    pub status: u16,
    /// The token sent, if any.
    pub token: Option<String>,
    pub body: Option<Value>,
}

/// The values stored under `key` (a repository, a deployment id), in the order stored.
fn values_of<K, Q>(items: &[(K, Value)], key: &Q) -> Vec<Value>
where
    K: PartialEq<Q>,
    Q: ?Sized,
{
    items
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Comments on issue/PR `number` of `repo`, oldest first.
fn comments_on(comments: &[(String, u64, Value)], repo: &str, number: u64) -> Vec<Value> {
    comments
        .iter()
        .filter(|(r, n, _)| r == repo && *n == number)
        .map(|(_, _, c)| c.clone())
        .collect()
}

#[derive(Default)]
struct Store {
    prefix: String,
    base: String,
    tokens: HashMap<String, Token>,
    repos: BTreeSet<String>,
    next_id: u64,
    /// (repo, issue, comment)
    comments: Vec<(String, u64, Value)>,
    /// (repo, check run with every annotation in `annotations`)
    check_runs: Vec<(String, Value)>,
    deployments: Vec<(String, Value)>,
    /// (deployment id, status), oldest first
    statuses: Vec<(u64, Value)>,
    /// (repo, workflow)
    workflows: Vec<(String, Value)>,
    runs: Vec<(String, Value)>,
    jobs: Vec<(String, Value)>,
    requests: Vec<Logged>,
    rate_limits: VecDeque<(u16, u64)>,
    clock: u64,
}

impl Store {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A fresh timestamp, one second after the previous one (so "newest" is well defined).
    fn now(&mut self) -> String {
        self.clock += 1;
        let t = 1_767_225_600 + self.clock; // 2026-01-01T00:00:00Z + n s
        let (d, s) = (t / 86_400, t % 86_400);
        // Days since 1970-01-01 → civil date (Howard Hinnant's algorithm).
        let z = d as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// The running server. Drop stops it.
pub struct GitHubApi {
    store: Arc<Mutex<Store>>,
    url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GitHubApi {
    /// Serves the API at the root, like api.github.com.
    pub fn start() -> GitHubApi {
        GitHubApi::serve("")
    }

    /// Serves the API under `/api/v3`, like GitHub Enterprise Server.
    pub fn start_enterprise() -> GitHubApi {
        GitHubApi::serve("/api/v3")
    }

    fn serve(prefix: &str) -> GitHubApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let base = format!("http://{addr}");
        let store = Arc::new(Mutex::new(Store {
            prefix: prefix.to_string(),
            base: base.clone(),
            ..Store::default()
        }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(store.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        GitHubApi {
            store,
            url: format!("{base}{prefix}"),
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The value for `GITHUB_API_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `owner/name` exist (every issue number in it exists too).
    pub fn add_repo(&self, repo: &str) {
        self.store().repos.insert(repo.to_string());
    }

    pub fn add_token(&self, token: &str, kind: Token) {
        self.store().tokens.insert(token.to_string(), kind);
    }

    /// Adds a comment by `login` (a `…[bot]` login is a Bot) to issue/PR `number`; returns its id.
    pub fn seed_comment(&self, repo: &str, number: u64, login: &str, body: &str) -> u64 {
        let mut s = self.store();
        let author = if login.ends_with("[bot]") {
            json!({"login": login, "id": id_of(login), "type": "Bot"})
        } else {
            json!({"login": login, "id": id_of(login), "type": "User"})
        };
        let c = new_comment(&mut s, repo, number, author, body);
        let id = c["id"].as_u64().unwrap_or_default();
        s.comments.push((repo.to_string(), number, c));
        id
    }

    /// Adds a workflow (`{"id", "name", "path"}`; `path` like `.github/workflows/deploy.yml`).
    pub fn seed_workflow(&self, repo: &str, id: u64, name: &str, path: &str) {
        let mut s = self.store();
        let html = format!("https://github.com/{repo}/blob/main/{path}");
        s.workflows.push((
            repo.to_string(),
            json!({"id": id, "node_id": format!("W_{id}"), "name": name, "path": path,
                   "state": "active", "html_url": html}),
        ));
    }

    /// Adds a workflow run of workflow `workflow_id`. `run` holds GitHub's run fields
    /// (`id`, `head_branch`, `head_sha`, `event`, `status`, `conclusion`, `run_attempt`,
    /// `created_at`, `updated_at`, `run_started_at`, …); `workflow_id`, `path`, `name`,
    /// `html_url` and missing defaults are filled in. Returns the run id.
    pub fn seed_run(&self, repo: &str, workflow_id: u64, mut run: Value) -> u64 {
        let mut s = self.store();
        let id = run["id"].as_u64().unwrap_or_else(|| s.id());
        let wf = s
            .workflows
            .iter()
            .find(|(r, w)| r == repo && w["id"].as_u64() == Some(workflow_id))
            .map(|(_, w)| w.clone())
            .expect("seed_workflow first");
        let defaults = json!({
            "id": id, "node_id": format!("WFR_{id}"), "name": wf["name"], "path": wf["path"],
            "workflow_id": workflow_id, "run_number": id, "run_attempt": 1, "event": "push",
            "status": "completed", "conclusion": "success", "head_branch": "main",
            "head_sha": "0000000000000000000000000000000000000000",
            "html_url": format!("https://github.com/{repo}/actions/runs/{id}"),
            "jobs_url": format!("{}{}/repos/{repo}/actions/runs/{id}/jobs", s.base, s.prefix),
        });
        merge_defaults(&mut run, defaults);
        s.runs.push((repo.to_string(), run));
        id
    }

    /// Adds a job to run `run_id`. `job` holds GitHub's job fields (`name`, `status`,
    /// `conclusion`, `started_at`, `completed_at`, `run_attempt`, `steps: [{name, status,
    /// conclusion, number, started_at, completed_at}]`, …); ids and defaults are filled in.
    pub fn seed_job(&self, repo: &str, run_id: u64, mut job: Value) -> u64 {
        let mut s = self.store();
        let id = job["id"].as_u64().unwrap_or_else(|| s.id());
        let defaults = json!({
            "id": id, "run_id": run_id, "node_id": format!("CR_{id}"), "run_attempt": 1,
            "status": "completed", "conclusion": "success", "steps": [],
            "html_url": format!("https://github.com/{repo}/actions/runs/{run_id}/job/{id}"),
            "run_url": format!("{}{}/repos/{repo}/actions/runs/{run_id}", s.base, s.prefix),
        });
        merge_defaults(&mut job, defaults);
        s.jobs.push((repo.to_string(), job));
        id
    }

    /// Comments on issue/PR `number`, oldest first (GitHub's JSON).
    pub fn comments(&self, repo: &str, number: u64) -> Vec<Value> {
        comments_on(&self.store().comments, repo, number)
    }

    /// Check runs of `repo` in creation order; each has every annotation under `annotations`.
    pub fn check_runs(&self, repo: &str) -> Vec<Value> {
        values_of(&self.store().check_runs, repo)
    }

    pub fn deployments(&self, repo: &str) -> Vec<Value> {
        values_of(&self.store().deployments, repo)
    }

    /// Statuses of deployment `id`, oldest first.
    pub fn deployment_statuses(&self, id: u64) -> Vec<Value> {
        values_of(&self.store().statuses, &id)
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Logged> {
        self.store().requests.clone()
    }

    /// The next `count` requests (any route) get `status` (403 or 429) with `retry-after:
    /// retry_after_s` and GitHub's secondary-rate-limit message.
    pub fn rate_limit_next(&self, count: usize, status: u16, retry_after_s: u64) {
        let mut s = self.store();
        for _ in 0..count {
            s.rate_limits.push_back((status, retry_after_s));
        }
    }
}

impl Drop for GitHubApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn merge_defaults(v: &mut Value, defaults: Value) {
    if let (Some(obj), Value::Object(d)) = (v.as_object_mut(), defaults) {
        for (k, dv) in d {
            obj.entry(k).or_insert(dv);
        }
    }
}

fn new_comment(s: &mut Store, repo: &str, number: u64, author: Value, body: &str) -> Value {
    let id = s.id();
    let now = s.now();
    json!({
        "id": id,
        "node_id": format!("IC_{id}"),
        "url": format!("{}{}/repos/{repo}/issues/comments/{id}", s.base, s.prefix),
        "html_url": format!("https://github.com/{repo}/pull/{number}#issuecomment-{id}"),
        "issue_url": format!("{}{}/repos/{repo}/issues/{number}", s.base, s.prefix),
        "body": body,
        "user": author,
        "author_association": "CONTRIBUTOR",
        "created_at": now,
        "updated_at": now,
    })
}

// ---- responses -------------------------------------------------------------------------------

struct Answer {
    status: StatusCode,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

fn ok(status: u16, body: Value) -> Answer {
    Answer {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        body,
        headers: Vec::new(),
    }
}

fn error(status: u16, message: &str) -> Answer {
    ok(
        status,
        json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

fn not_found() -> Answer {
    error(404, "Not Found")
}

fn invalid(errors: Value) -> Answer {
    ok(
        422,
        json!({"message": "Validation Failed", "errors": errors, "documentation_url": DOCS, "status": "422"}),
    )
}

fn missing(resource: &str, field: &str) -> Answer {
    invalid(json!([{"resource": resource, "field": field, "code": "missing_field"}]))
}

fn custom(resource: &str, field: &str, message: &str) -> Answer {
    invalid(json!([{"resource": resource, "field": field, "code": "custom", "message": message}]))
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }
}

/// One page of `items` and its `Link` header (absolute URLs, GitHub's rel order).
fn paginate(
    s: &Store,
    path: &str,
    query: &HashMap<String, String>,
    items: Vec<Value>,
) -> (Vec<Value>, Option<String>) {
    let per_page = query
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = query
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let url = |p: usize| {
        let mut q: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| k.as_str() != "page")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        q.sort();
        q.push(("page".into(), p.to_string()));
        let q: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("<{}{}{path}?{}>", s.base, s.prefix, q.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", url((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
    }
    (slice, (!links.is_empty()).then(|| links.join(", ")))
}

fn list(
    s: &Store,
    path: &str,
    query: &HashMap<String, String>,
    items: Vec<Value>,
    key: Option<&str>,
) -> Answer {
    let total = items.len();
    let (page, link) = paginate(s, path, query, items);
    let body = match key {
        None => Value::Array(page),
        Some(k) => json!({"total_count": total, k: page}),
    };
    let mut a = ok(200, body);
    if let Some(l) = link {
        a.headers.push(("link", l));
    }
    a
}

// ---- routing ---------------------------------------------------------------------------------

async fn handle(
    State(store): State<Arc<Mutex<Store>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
    let full = uri.path().to_string();
    let query_string = uri.query().unwrap_or("").to_string();
    let query: HashMap<String, String> = query_string
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
                .map(str::to_string)
        });
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let path = full
        .strip_prefix(s.prefix.as_str())
        .filter(|_| !s.prefix.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| full.clone());
    let answer = if !s.prefix.is_empty() && !full.starts_with(&s.prefix) {
        not_found()
    } else if let Some((status, after)) = s.rate_limits.pop_front() {
        let mut a = error(
            status,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
        a.headers.push(("retry-after", after.to_string()));
        a
    } else if !body.is_empty() && json_body.is_none() {
        error(400, "Problems parsing JSON")
    } else {
        route(
            &mut s,
            &method,
            &path,
            &query,
            token.as_deref(),
            json_body.clone(),
        )
    };
    s.requests.push(Logged {
        method: method.to_string(),
        path,
        query: query_string,
        status: answer.status.as_u16(),
        token,
        body: json_body,
    });
    answer.into_response()
}

/// `%XX` and `+` in a query component, as GitHub's front end decodes them.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(
    s: &mut Store,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let write = method != Method::GET && method != Method::HEAD;
    let who = match token {
        Some(t) => match s.tokens.get(t) {
            Some(k) => Some(k.clone()),
            None => return error(401, "Bad credentials"),
        },
        None if write => return error(401, "Requires authentication"),
        None => None,
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs == ["user"] {
        return match who {
            Some(Token::User(login)) => ok(200, Token::User(login).author()),
            Some(_) => error(403, "Resource not accessible by integration"),
            None => error(401, "Requires authentication"),
        };
    }
    let ["repos", owner, name, rest @ ..] = segs.as_slice() else {
        return not_found();
    };
    let repo = format!("{owner}/{name}");
    if !s.repos.contains(&repo) {
        return not_found();
    }
    if write && who == Some(Token::ReadOnly) {
        return error(403, "Resource not accessible by integration");
    }
    let author = who.as_ref().map_or(Value::Null, Token::author);
    let body = body.unwrap_or(Value::Null);
    let m = method.as_str();
    match (m, rest) {
        ("GET", ["issues", n, "comments"]) => {
            let Ok(n) = n.parse::<u64>() else {
                return not_found();
            };
            let items = comments_on(&s.comments, &repo, n);
            list(s, path, query, items, None)
        }
        ("POST", ["issues", n, "comments"]) => {
            let Ok(n) = n.parse::<u64>() else {
                return not_found();
            };
            match comment_body(&body) {
                Ok(text) => {
                    let c = new_comment(s, &repo, n, author, &text);
                    s.comments.push((repo, n, c.clone()));
                    ok(201, c)
                }
                Err(a) => a,
            }
        }
        ("GET" | "PATCH", ["issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let now = s.now();
            let Some((_, _, c)) = s
                .comments
                .iter_mut()
                .find(|(r, _, c)| *r == repo && c["id"].as_u64() == Some(id))
            else {
                return not_found();
            };
            if m == "PATCH" {
                match comment_body(&body) {
                    Ok(text) => {
                        c["body"] = json!(text);
                        c["updated_at"] = json!(now);
                    }
                    Err(a) => return a,
                }
            }
            ok(200, c.clone())
        }
        ("POST", ["check-runs"]) => create_check_run(s, &repo, body),
        ("PATCH", ["check-runs", id]) => update_check_run(s, &repo, id, body),
        ("GET", ["check-runs", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match s
                .check_runs
                .iter()
                .find(|(r, c)| *r == repo && c["id"].as_u64() == Some(id))
            {
                Some((_, c)) => ok(200, public_check_run(c)),
                None => not_found(),
            }
        }
        ("POST", ["deployments"]) => create_deployment(s, &repo, author, body),
        ("GET", ["deployments"]) => {
            let items: Vec<Value> = s
                .deployments
                .iter()
                .rev() // newest first, as GitHub lists them
                .filter(|(r, d)| {
                    *r == repo
                        && query
                            .get("environment")
                            .is_none_or(|e| d["environment"].as_str() == Some(e))
                        && query
                            .get("ref")
                            .is_none_or(|e| d["ref"].as_str() == Some(e))
                })
                .map(|(_, d)| d.clone())
                .collect();
            list(s, path, query, items, None)
        }
        ("POST", ["deployments", id, "statuses"]) => create_status(s, &repo, id, author, body),
        ("GET", ["deployments", id, "statuses"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            if !s
                .deployments
                .iter()
                .any(|(r, d)| *r == repo && d["id"].as_u64() == Some(id))
            {
                return not_found();
            }
            // Newest first, as GitHub lists them.
            let mut items = values_of(&s.statuses, &id);
            items.reverse();
            list(s, path, query, items, None)
        }
        ("GET", ["actions", "workflows", wf, "runs"]) => {
            let Some(workflow) = s
                .workflows
                .iter()
                .find(|(r, w)| {
                    *r == repo
                        && (w["id"].as_u64().is_some_and(|i| i.to_string() == *wf)
                            || w["path"]
                                .as_str()
                                .is_some_and(|p| p.rsplit('/').next() == Some(*wf)))
                })
                .map(|(_, w)| w.clone())
            else {
                return not_found();
            };
            let wid = workflow["id"].as_u64();
            let matches = |run: &Value, key: &str, field: &str| {
                query
                    .get(key)
                    .is_none_or(|want| run[field].as_str() == Some(want.as_str()))
            };
            let mut items: Vec<Value> = s
                .runs
                .iter()
                .filter(|(r, run)| {
                    *r == repo
                        && run["workflow_id"].as_u64() == wid
                        && matches(run, "branch", "head_branch")
                        && matches(run, "event", "event")
                        && query.get("status").is_none_or(|want| {
                            run["status"].as_str() == Some(want.as_str())
                                || run["conclusion"].as_str() == Some(want.as_str())
                        })
                })
                .map(|(_, run)| run.clone())
                .collect();
            // Newest first, as GitHub lists runs.
            items.reverse();
            list(s, path, query, items, Some("workflow_runs"))
        }
        ("GET", ["actions", "runs", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match s
                .runs
                .iter()
                .find(|(r, run)| *r == repo && run["id"].as_u64() == Some(id))
            {
                Some((_, run)) => ok(200, run.clone()),
                None => not_found(),
            }
        }
        ("GET", ["actions", "runs", id, "jobs"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some(run) = s
                .runs
                .iter()
                .find(|(r, run)| *r == repo && run["id"].as_u64() == Some(id))
                .map(|(_, run)| run.clone())
            else {
                return not_found();
            };
            let filter = query.get("filter").map_or("latest", String::as_str);
            if filter != "latest" && filter != "all" {
                return custom("Job", "filter", "filter must be one of: latest, all");
            }
            let latest = s
                .jobs
                .iter()
                .filter(|(r, j)| *r == repo && j["run_id"].as_u64() == Some(id))
                .filter_map(|(_, j)| j["run_attempt"].as_u64())
                .max()
                .or(run["run_attempt"].as_u64());
            let items = s
                .jobs
                .iter()
                .filter(|(r, j)| {
                    *r == repo
                        && j["run_id"].as_u64() == Some(id)
                        && (filter == "all" || j["run_attempt"].as_u64() == latest)
                })
                .map(|(_, j)| j.clone())
                .collect();
            list(s, path, query, items, Some("jobs"))
        }
        _ => not_found(),
    }
}

fn comment_body(body: &Value) -> Result<String, Answer> {
    let Some(text) = body.get("body").and_then(Value::as_str) else {
        return Err(missing("IssueComment", "body"));
    };
    if text.chars().count() > COMMENT_MAX {
        return Err(custom(
            "IssueComment",
            "body",
            "body is too long (maximum is 65536 characters)",
        ));
    }
    Ok(text.to_string())
}

const CHECK_STATUSES: &[&str] = &[
    "queued",
    "in_progress",
    "completed",
    "waiting",
    "requested",
    "pending",
];
const CHECK_CONCLUSIONS: &[&str] = &[
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
];

/// Validates and applies `body` to `run` (create or update); returns the new annotations.
fn apply_check_fields(s: &mut Store, run: &mut Value, body: &Value) -> Result<(), Answer> {
    for key in ["name", "details_url", "external_id", "started_at"] {
        if let Some(v) = body.get(key) {
            run[key] = v.clone();
        }
    }
    if let Some(st) = body.get("status") {
        if !st.as_str().is_some_and(|v| CHECK_STATUSES.contains(&v)) {
            return Err(custom(
                "CheckRun",
                "status",
                "status is not included in the list",
            ));
        }
        run["status"] = st.clone();
    }
    if let Some(c) = body.get("conclusion") {
        if !c.as_str().is_some_and(|v| CHECK_CONCLUSIONS.contains(&v)) {
            return Err(custom(
                "CheckRun",
                "conclusion",
                "conclusion is not included in the list",
            ));
        }
        run["conclusion"] = c.clone();
        run["status"] = json!("completed");
    }
    if run["status"] == "completed" && run["conclusion"].is_null() {
        return Err(missing("CheckRun", "conclusion"));
    }
    if run["status"] == "completed" && run["completed_at"].is_null() {
        run["completed_at"] = json!(
            body.get("completed_at")
                .cloned()
                .unwrap_or_else(|| json!(s.now()))
        );
    }
    if let Some(out) = body.get("output") {
        let (Some(title), Some(summary)) = (
            out.get("title").and_then(Value::as_str),
            out.get("summary").and_then(Value::as_str),
        ) else {
            return Err(missing("CheckRun", "output.title/output.summary"));
        };
        for (field, text) in [
            ("summary", Some(summary)),
            ("text", out.get("text").and_then(Value::as_str)),
        ] {
            if text.is_some_and(|t| t.chars().count() > CHECK_TEXT_MAX) {
                return Err(custom(
                    "CheckRun",
                    &format!("output.{field}"),
                    &format!("output.{field} is too long (maximum is {CHECK_TEXT_MAX} characters)"),
                ));
            }
        }
        let anns = out
            .get("annotations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if anns.len() > ANNOTATIONS_PER_REQUEST {
            return Err(custom(
                "CheckRun",
                "output.annotations",
                "Only 50 annotations are allowed per request",
            ));
        }
        for a in &anns {
            for field in [
                "path",
                "start_line",
                "end_line",
                "annotation_level",
                "message",
            ] {
                if a.get(field).is_none_or(Value::is_null) {
                    return Err(missing("CheckRun", &format!("output.annotations.{field}")));
                }
            }
            if !a["annotation_level"]
                .as_str()
                .is_some_and(|l| ["notice", "warning", "failure"].contains(&l))
            {
                return Err(custom(
                    "CheckRun",
                    "output.annotations.annotation_level",
                    "annotation_level is not included in the list",
                ));
            }
        }
        run["output"]["title"] = json!(title);
        run["output"]["summary"] = json!(summary);
        if let Some(t) = out.get("text") {
            run["output"]["text"] = t.clone();
        }
        let all = run["annotations"]
            .as_array_mut()
            .expect("annotations array");
        all.extend(anns);
        let count = all.len();
        run["output"]["annotations_count"] = json!(count);
    }
    Ok(())
}

fn public_check_run(run: &Value) -> Value {
    let mut v = run.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("annotations");
    }
    v
}

fn create_check_run(s: &mut Store, repo: &str, body: Value) -> Answer {
    for field in ["name", "head_sha"] {
        if !body.get(field).is_some_and(Value::is_string) {
            return missing("CheckRun", field);
        }
    }
    let id = s.id();
    let now = s.now();
    let mut run = json!({
        "id": id,
        "node_id": format!("CR_{id}"),
        "head_sha": body["head_sha"],
        "name": body["name"],
        "status": "queued",
        "conclusion": null,
        "started_at": now,
        "completed_at": null,
        "url": format!("{}{}/repos/{repo}/check-runs/{id}", s.base, s.prefix),
        "html_url": format!("https://github.com/{repo}/runs/{id}"),
        "output": {"title": null, "summary": null, "text": null, "annotations_count": 0,
                   "annotations_url": format!("{}{}/repos/{repo}/check-runs/{id}/annotations", s.base, s.prefix)},
        "app": {"slug": "github-actions"},
        "annotations": [],
    });
    if let Err(a) = apply_check_fields(s, &mut run, &body) {
        return a;
    }
    s.check_runs.push((repo.to_string(), run.clone()));
    ok(201, public_check_run(&run))
}

fn update_check_run(s: &mut Store, repo: &str, id: &str, body: Value) -> Answer {
    let id: u64 = id.parse().unwrap_or(0);
    let Some(pos) = s
        .check_runs
        .iter()
        .position(|(r, c)| r == repo && c["id"].as_u64() == Some(id))
    else {
        return not_found();
    };
    let mut run = s.check_runs[pos].1.clone();
    if let Err(a) = apply_check_fields(s, &mut run, &body) {
        return a;
    }
    s.check_runs[pos].1 = run.clone();
    ok(200, public_check_run(&run))
}

fn create_deployment(s: &mut Store, repo: &str, author: Value, body: Value) -> Answer {
    let Some(git_ref) = body.get("ref").and_then(Value::as_str).map(str::to_string) else {
        return missing("Deployment", "ref");
    };
    if body.get("auto_merge") != Some(&json!(false)) {
        return error(409, &format!("Conflict merging main into {git_ref}."));
    }
    match body.get("required_contexts") {
        Some(Value::Array(c)) if c.is_empty() => {}
        Some(Value::Array(_)) | None => {
            return error(
                409,
                &format!("Conflict: Commit status checks failed for {git_ref}."),
            );
        }
        Some(_) => {
            return custom(
                "Deployment",
                "required_contexts",
                "required_contexts must be an array",
            );
        }
    }
    let id = s.id();
    let now = s.now();
    let environment = body
        .get("environment")
        .and_then(Value::as_str)
        .unwrap_or("production");
    let d = json!({
        "id": id,
        "node_id": format!("DE_{id}"),
        "url": format!("{}{}/repos/{repo}/deployments/{id}", s.base, s.prefix),
        "statuses_url": format!("{}{}/repos/{repo}/deployments/{id}/statuses", s.base, s.prefix),
        "sha": if git_ref.len() == 40 { git_ref.clone() } else { "1111111111111111111111111111111111111111".into() },
        "ref": git_ref,
        "task": body.get("task").cloned().unwrap_or(json!("deploy")),
        "payload": body.get("payload").cloned().unwrap_or(json!({})),
        "environment": environment,
        "original_environment": environment,
        "description": body.get("description").cloned().unwrap_or(Value::Null),
        "transient_environment": body.get("transient_environment").cloned().unwrap_or(json!(false)),
        "production_environment": body.get("production_environment").cloned().unwrap_or(json!(environment == "production")),
        "creator": author,
        "created_at": now,
        "updated_at": now,
        "request": body,
    });
    s.deployments.push((repo.to_string(), d.clone()));
    ok(201, d)
}

const DEPLOYMENT_STATES: &[&str] = &[
    "error",
    "failure",
    "inactive",
    "in_progress",
    "queued",
    "pending",
    "success",
];

fn create_status(s: &mut Store, repo: &str, id: &str, author: Value, body: Value) -> Answer {
    let id: u64 = id.parse().unwrap_or(0);
    let Some(deployment) = s
        .deployments
        .iter()
        .find(|(r, d)| r == repo && d["id"].as_u64() == Some(id))
        .map(|(_, d)| d.clone())
    else {
        return not_found();
    };
    let Some(state) = body
        .get("state")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return missing("DeploymentStatus", "state");
    };
    if !DEPLOYMENT_STATES.contains(&state.as_str()) {
        return custom(
            "DeploymentStatus",
            "state",
            "state is not included in the list",
        );
    }
    if body
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.chars().count() > 140)
    {
        return custom(
            "DeploymentStatus",
            "description",
            "description is too long (maximum is 140 characters)",
        );
    }
    let status_id = s.id();
    let now = s.now();
    let environment = body
        .get("environment")
        .cloned()
        .unwrap_or_else(|| deployment["environment"].clone());
    let st = json!({
        "id": status_id,
        "node_id": format!("DES_{status_id}"),
        "state": state,
        "description": body.get("description").cloned().unwrap_or(json!("")),
        "environment": environment,
        "environment_url": body.get("environment_url").cloned().unwrap_or(json!("")),
        "log_url": body.get("log_url").cloned().unwrap_or(json!("")),
        "target_url": body.get("log_url").cloned().unwrap_or(json!("")),
        "creator": author,
        "created_at": now,
        "updated_at": now,
        "deployment_url": deployment["url"],
        "auto_inactive": body.get("auto_inactive").cloned().unwrap_or(json!(true)),
    });
    s.statuses.push((id, st.clone()));
    let auto_inactive = body
        .get("auto_inactive")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if state == "success" && auto_inactive {
        let env = st["environment"].clone();
        let earlier: Vec<u64> = s
            .deployments
            .iter()
            .filter(|(r, d)| {
                r == repo
                    && d["environment"] == env
                    && d["id"].as_u64() != Some(id)
                    && d["id"].as_u64() < Some(id)
                    && d["transient_environment"] != json!(true)
                    && d["production_environment"] != json!(true)
            })
            .filter_map(|(_, d)| d["id"].as_u64())
            .collect();
        for d in earlier {
            let last = s
                .statuses
                .iter()
                .rev()
                .find(|(x, _)| *x == d)
                .map(|(_, st)| st["state"].clone());
            if last.is_some_and(|l| l != "inactive") {
                let sid = s.id();
                let now = s.now();
                s.statuses.push((
                    d,
                    json!({"id": sid, "state": "inactive", "environment": env, "description": "",
                           "created_at": now, "updated_at": now, "creator": author}),
                ));
            }
        }
    }
    ok(201, st)
}

// ---- the client against the stand-in -----------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use wms::github::client::{GitHub, GitHubConfig, GitHubError, Permission, RetryPolicy};

    fn client(api: &GitHubApi, token: Option<&str>) -> GitHub {
        GitHub::new(GitHubConfig {
            api_url: api.url().to_string(),
            token: token.map(str::to_string),
            retry: RetryPolicy {
                max_retries: 3,
                max_wait: Duration::from_secs(5),
            },
            timeout: Duration::from_secs(10),
        })
        .expect("client")
    }

    #[test]
    fn pages_are_followed_through_link_headers_on_enterprise_paths() {
        let api = GitHubApi::start_enterprise();
        api.add_repo("o/r");
        api.add_token("t", Token::App);
        for i in 0..250 {
            api.seed_comment("o/r", 7, "someone", &format!("c{i}"));
        }
        let gh = client(&api, Some("t"));
        let all: Vec<Value> = gh
            .get_all(
                "/repos/o/r/issues/7/comments",
                None,
                Permission::PullRequestsRead,
                None,
            )
            .unwrap();
        assert_eq!(all.len(), 250);
        assert_eq!(all[249]["body"], "c249");
        let pages: Vec<Logged> = api.requests();
        assert_eq!(pages.len(), 3, "{pages:?}");
        assert!(
            pages
                .iter()
                .all(|r| r.token.as_deref() == Some("t") && r.status == 200)
        );
        assert!(pages[2].query.contains("page=3"), "{:?}", pages[2]);
    }

    #[test]
    fn errors_are_typed_and_name_the_permission() {
        let api = GitHubApi::start();
        api.add_repo("o/r");
        api.add_token("ro", Token::ReadOnly);
        let body = json!({"body": "x"});
        let e = client(&api, Some("wrong"))
            .get::<Value>("/repos/o/r/issues/1/comments", Permission::PullRequestsRead)
            .unwrap_err();
        assert!(matches!(e, GitHubError::Unauthorized { .. }), "{e}");
        assert!(e.to_string().contains("Bad credentials"), "{e}");
        let e = client(&api, Some("ro"))
            .post::<_, Value>(
                "/repos/o/r/issues/1/comments",
                &body,
                Permission::PullRequestsWrite,
            )
            .unwrap_err();
        assert_eq!(
            e.missing_permission(),
            Some(Permission::PullRequestsWrite),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("Resource not accessible by integration"),
            "{e}"
        );
        let e = client(&api, Some("ro"))
            .get::<Value>(
                "/repos/o/missing/issues/1/comments",
                Permission::PullRequestsRead,
            )
            .unwrap_err();
        assert!(matches!(e, GitHubError::NotFound { .. }), "{e}");
        api.add_token("w", Token::App);
        let e = client(&api, Some("w"))
            .post::<_, Value>(
                "/repos/o/r/check-runs",
                &json!({"name": "x"}),
                Permission::ChecksWrite,
            )
            .unwrap_err();
        assert!(matches!(e, GitHubError::Validation { .. }), "{e}");
        assert!(
            e.to_string().contains("CheckRun.head_sha missing_field"),
            "{e}"
        );
    }

    #[test]
    fn secondary_rate_limits_are_waited_out_then_given_up() {
        let api = GitHubApi::start();
        api.add_repo("o/r");
        api.add_token("t", Token::App);
        api.rate_limit_next(1, 403, 1);
        api.rate_limit_next(1, 429, 1);
        let gh = client(&api, Some("t"));
        let started = Instant::now();
        let c: Value = gh
            .post(
                "/repos/o/r/issues/1/comments",
                &json!({"body": "hi"}),
                Permission::PullRequestsWrite,
            )
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(c["body"], "hi");
        let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [403, 429, 201]);
        // Exactly one comment: the retried POST was not counted twice.
        assert_eq!(api.comments("o/r", 1).len(), 1);
        // A wait longer than the policy allows fails at once, naming the wait.
        api.rate_limit_next(1, 429, 3600);
        let e = gh
            .get::<Value>("/repos/o/r/issues/1/comments", Permission::PullRequestsRead)
            .unwrap_err();
        assert!(
            matches!(e, GitHubError::RateLimited { wait_s: 3600, .. }),
            "{e}"
        );
    }
}
