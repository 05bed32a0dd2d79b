//! Real servers the tracking and data tests talk to, started once per test binary on loopback
//! ports picked here: an MLflow tracking server (sqlite backend, `--serve-artifacts`) and a moto
//! server (S3 + STS), both from the project venv (`requirements.lock`), and an OCI registry
//! (Debian `docker-registry`, installed by `make test-deps`).
//!
//! Each server runs under a small Python watchdog whose stdin is a pipe held by this process.
//! When the test binary exits, for whatever reason, the pipe closes, and the watchdog kills the
//! server's process group and removes its data directory. Nothing outlives `cargo test`.
//!
//! Per-test servers: git's own `git daemon` and `git http-backend` (smart HTTP) serving a
//! directory of repositories, stopped when the test drops them.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::util;

/// A started server: its base URL (`http://127.0.0.1:PORT`).
pub struct Server {
    pub url: String,
    /// Held for the life of the process; dropping it (process exit) stops the server.
    _stdin: Mutex<ChildStdin>,
}

/// The watchdog: start argv[2:] in a new session, wait for EOF on stdin, then kill the session
/// and remove the data directory argv[1].
const WATCHDOG: &str = r#"
import os, shutil, signal, subprocess, sys
data_dir, argv = sys.argv[1], sys.argv[2:]
log = open(os.path.join(data_dir, "server.log"), "ab")
child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
try:
    sys.stdin.buffer.read()
finally:
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=10)
    except Exception:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except Exception:
            pass
    shutil.rmtree(data_dir, ignore_errors=True)
"#;

/// How long a server may take to answer its readiness URL.
const READY_TIMEOUT_S: u64 = 240;

/// The MLflow tracking server with the artifact proxy; first call starts it (a few seconds).
pub fn mlflow() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        start("mlflow", "/health", |port, dir| {
            let store = format!("sqlite:///{}/mlflow.db", dir.display());
            let artifacts = dir.join("artifacts").display().to_string();
            venv_argv(
                "mlflow",
                &[
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    &store,
                    "--serve-artifacts",
                    "--artifacts-destination",
                    &artifacts,
                ],
            )
        })
    })
}

/// The moto server (S3, STS and the other AWS APIs moto mocks) on one port.
pub fn moto() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        start("moto", "/moto-api/", |port, _dir| {
            venv_argv("moto_server", &["-H", "127.0.0.1", "-p", &port.to_string()])
        })
    })
}

/// The command line of `tool`, a console script of the project venv, with `args`.
fn venv_argv(tool: &str, args: &[&str]) -> Vec<String> {
    let bin = util::python().with_file_name(tool);
    std::iter::once(bin.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

/// User and password of the test registry (htpasswd auth, bcrypt, as production registries).
pub const REGISTRY_USER: &str = "wms";
pub const REGISTRY_PASSWORD: &str = "registry-test-pw-4f9c";

/// The CNCF distribution registry (Debian `docker-registry`) with htpasswd auth, filesystem
/// storage in the server's temp dir, plain HTTP on loopback.
pub fn registry() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        start("registry", "/", |port, dir| {
            let htpasswd = Command::new("htpasswd")
                .args(["-Bbn", REGISTRY_USER, REGISTRY_PASSWORD])
                .output()
                .expect("htpasswd (apache2-utils; `make test-deps` installs it)");
            registry_argv(port, dir, &htpasswd.stdout)
        })
    })
}

/// Writes the registry's htpasswd file and config (filesystem storage under `dir`, plain HTTP on
/// loopback `port`) and returns its command line.
fn registry_argv(port: u16, dir: &std::path::Path, htpasswd: &[u8]) -> Vec<String> {
    std::fs::write(dir.join("htpasswd"), htpasswd).expect("write htpasswd");
    let auth = format!(
        "{{htpasswd: {{realm: wms-test, path: {}}}}}",
        dir.join("htpasswd").display()
    );
    registry_argv_auth(port, dir, &auth)
}

/// The registry's config with `auth` (a YAML flow mapping) and its command line.
fn registry_argv_auth(port: u16, dir: &std::path::Path, auth: &str) -> Vec<String> {
    let config = format!(
        "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {data}}}}}\n\
         http: {{addr: \"127.0.0.1:{port}\"}}\n\
         auth: {auth}\n",
        data = dir.join("data").display(),
    );
    std::fs::write(dir.join("config.yml"), config).expect("write registry config");
    vec![
        "docker-registry".into(),
        "serve".into(),
        dir.join("config.yml").display().to_string(),
    ]
}

fn start(
    name: &str,
    ready_path: &str,
    argv: impl Fn(u16, &std::path::Path) -> Vec<String>,
) -> Server {
    let dir = tempfile::Builder::new()
        .prefix(&format!("wms-test-{name}-"))
        .tempdir()
        .expect("temp dir for a test server")
        .keep();
    let port = free_port();
    let mut child = Command::new(util::python())
        .arg("-c")
        .arg(WATCHDOG)
        .arg(&dir)
        .args(argv(port, &dir))
        // Tests never reach the internet: MLflow (and anything honouring the convention) sends
        // telemetry unless told not to.
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "1")
        .env("DVC_NO_ANALYTICS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the {name} test server: {e}"));
    let stdin = child.stdin.take().expect("watchdog stdin");
    let url = format!("http://127.0.0.1:{port}");
    // MLflow alone takes about 45 s to start on 2 busy cores (imports, sqlite migrations).
    let deadline = Instant::now() + Duration::from_secs(READY_TIMEOUT_S);
    loop {
        if http_get_ok(port, ready_path) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} test server exited early ({status}); log: {}",
                log_of(&dir)
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{name} test server not ready on {url} after {READY_TIMEOUT_S} s; log: {}",
                log_of(&dir)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Server {
        url,
        _stdin: Mutex::new(stdin),
    }
}

fn log_of(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A loopback port free a moment ago (the OS's pick for an ephemeral bind).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local addr").port()
}

/// A bare HTTP/1.0 GET: true on a 200 answer.
fn http_get_ok(port: u16, path: &str) -> bool {
    use std::io::Write;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

#[test]
fn mlflow_and_moto_test_servers_answer_on_loopback() {
    assert!(http_get_ok(port_of(&mlflow().url), "/health"));
    assert!(http_get_ok(port_of(&moto().url), "/moto-api/"));
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in url")
}

/// Another registry like [`registry`], started for one test, that accepts exactly the users of
/// `htpasswd` (lines of `htpasswd -Bbn USER PASSWORD`). Stops when the returned server drops.
pub fn start_registry_with(htpasswd: &[u8]) -> Server {
    start("registry-own", "/", |port, dir| {
        registry_argv(port, dir, htpasswd)
    })
}

/// Another registry like [`registry`], started for one test, with the `auth` section given (a
/// YAML flow mapping, e.g. `{token: {realm: …, service: …, issuer: …, rootcertbundle: …}}`).
pub fn start_registry_with_auth(auth: &str) -> Server {
    start("registry-auth", "/", |port, dir| {
        registry_argv_auth(port, dir, auth)
    })
}

/// A Prometheus server (Debian `prometheus`, installed by `make test-deps`) for one test, on a
/// loopback port: `config` is its prometheus.yml, `files` (name, text) are written next to it
/// first (relative `rule_files` resolve there), the TSDB lives in the server's temp dir. Stops
/// when the returned server drops.
pub fn start_prometheus(config: &str, files: &[(&str, &str)]) -> Server {
    start("prometheus", "/-/ready", |port, dir| {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write a Prometheus file");
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        vec![
            "prometheus".into(),
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ]
    })
}

/// `git daemon` serving a directory on 127.0.0.1 (git:// is a smart protocol, so libgit2 can
/// fetch shallow history from it; its local-path transport cannot).
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The `git-daemon` program itself, not `git daemon`: the `git` wrapper runs it as a
        // child, so killing the wrapper would leave the daemon running (and holding the test
        // binary's stdout open) after the test.
        let exec_path = String::from_utf8(
            Command::new("git")
                .arg("--exec-path")
                .output()
                .expect("git --exec-path")
                .stdout,
        )
        .unwrap();
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .current_dir(base)
            .args([
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                base.to_str().unwrap(),
            ])
            // It logs an expected hang-up when libgit2 closes the connection after a fetch.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// git's smart HTTP protocol served on 127.0.0.1 by git's own `git http-backend`, run as a
/// CGI program per request by this small HTTP/1.1 server (one request per connection). With a
/// token set, requests without `Authorization: <token>` get 401, like a private repository.
/// It records each request line and user agent.
pub struct GitSmartHttp {
    pub port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl GitSmartHttp {
    pub fn start(root: &Path, token: Option<&str>) -> GitSmartHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (root, token, seen) = (root.to_path_buf(), token.map(str::to_string), log.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                if let Err(e) = Self::serve(conn, &root, token.as_deref(), &seen) {
                    eprintln!("smart http test server: {e}");
                }
            }
        });
        GitSmartHttp { port, log }
    }

    fn serve(
        mut conn: TcpStream,
        root: &Path,
        token: Option<&str>,
        log: &std::sync::Mutex<Vec<(String, String)>>,
    ) -> std::io::Result<()> {
        use std::io::Write;
        let request = HttpRequest::read(&conn)?;
        let header = |name: &str| request.header(name).map(str::to_string);
        let body = &request.body;
        let request_line = request.line.clone();
        log.lock().unwrap().push((
            request_line.clone(),
            header("user-agent").unwrap_or_default(),
        ));
        if token.is_some() && header("authorization").as_deref() != token {
            return conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut cgi = Command::new("git")
            .current_dir(root)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        cgi.stdin.take().unwrap().write_all(body)?;
        let out = cgi.wait_with_output()?;
        // CGI output: header lines, a blank line, the body; `Status:` sets the status.
        let split = out
            .stdout
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, i + 4))
            .or_else(|| {
                out.stdout
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|i| (i, i + 2))
            })
            .unwrap_or((out.stdout.len(), out.stdout.len()));
        let head = String::from_utf8_lossy(&out.stdout[..split.0]).to_string();
        let mut status = "200 OK".to_string();
        let mut response = String::new();
        for line in head.lines() {
            match line.split_once(':') {
                Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
                Some(_) => response.push_str(&format!("{}\r\n", line.trim_end())),
                None => {}
            }
        }
        let payload = &out.stdout[split.1..];
        conn.write_all(
            format!(
                "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            )
            .as_bytes(),
        )?;
        conn.write_all(payload)
    }

    /// Each request's line and user agent, in order.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 request as the test servers here read it.
pub struct HttpRequest {
    /// `GET /path?query HTTP/1.1`, without the line end.
    pub line: String,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// Reads one request from `conn`: its line, headers and a `Content-Length` body.
    pub fn read(conn: &TcpStream) -> std::io::Result<HttpRequest> {
        use std::io::{BufRead, BufReader};
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut request = HttpRequest {
            line: line.trim().to_string(),
            headers,
            body: Vec::new(),
        };
        let length = request
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap_or(0));
        request.body = vec![0; length];
        reader.read_exact(&mut request.body)?;
        Ok(request)
    }

    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The request target: path and query.
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("/")
    }
}

/// A one-endpoint HTTP server on a loopback port, for a service the tests do not run (GitHub's
/// OIDC token endpoint, release downloads): `answer` gives each request's status line
/// (`"200 OK"`), content type and body; every answer closes its connection. It serves on a thread
/// until the test process exits. Returns `http://127.0.0.1:PORT`.
pub fn http_stub(
    answer: impl Fn(&HttpRequest) -> (&'static str, &'static str, Vec<u8>) + Send + 'static,
) -> String {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Ok(request) = HttpRequest::read(&conn) else {
                continue;
            };
            let (status, content_type, body) = answer(&request);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn
                .write_all(head.as_bytes())
                .and_then(|()| conn.write_all(&body));
        }
    });
    format!("http://127.0.0.1:{port}")
}
