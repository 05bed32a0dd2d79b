//! Real servers the tracking and data tests talk to, started once per test binary on loopback
//! ports picked here: an MLflow tracking server (sqlite backend, `--serve-artifacts`) and a moto
//! server (S3 + STS), both from the project venv (`requirements.lock`), and an OCI registry
//! (Debian `docker-registry`, installed by `make test-deps`).
//!
//! Each server runs under a small Python watchdog whose stdin is a pipe held by this process.
//! When the test binary exits, for whatever reason, the pipe closes, and the watchdog kills the
//! server's process group and removes its data directory. Nothing outlives `cargo test`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{ChildStdin, Command, Stdio};
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
            let bin = util::python().with_file_name("mlflow");
            vec![
                bin.display().to_string(),
                "server".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--workers".into(),
                "1".into(),
                "--backend-store-uri".into(),
                format!("sqlite:///{}/mlflow.db", dir.display()),
                "--serve-artifacts".into(),
                "--artifacts-destination".into(),
                dir.join("artifacts").display().to_string(),
            ]
        })
    })
}

/// The moto server (S3, STS and the other AWS APIs moto mocks) on one port.
pub fn moto() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        start("moto", "/moto-api/", |port, _dir| {
            let bin = util::python().with_file_name("moto_server");
            vec![
                bin.display().to_string(),
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ]
        })
    })
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

fn free_port() -> u16 {
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
