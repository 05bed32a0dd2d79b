//! `kube-standin`: a LOCAL STAND-IN for a Kubernetes API server, NOT a cluster. It is the
//! in-test API server of `tests/it/kubeapi/` (the same code, included by path) run as a
//! process, so `make demo` can drive `wms deploy` for real without a cluster.
//!
//! What is real: `wms deploy` and its HTTP traffic (server-side apply, watches, the Lease, pod
//! logs, the service proxy), the object store with resourceVersions and 409s, and — with
//! `--proxy` — the smoke test's requests, which reach a real `wms-serve`. What is simulated:
//! everything a cluster would do behind the API (controllers on a 50 ms tick turn Deployments
//! into ReplicaSets and pods whose fate `--outcome` chooses; no container runs, no image is
//! pulled, nothing is scheduled). Durations measured against it are those of wms and this
//! process, not of a cluster; whoever shows them must say so.
//!
//! ```text
//! kube-standin --kubeconfig DIR/kubeconfig [--outcome NAMESPACE=crashloopbackoff]
//!              [--proxy NAMESPACE/SERVICE:PORT=127.0.0.1:PORT] [--ready-after 300ms]
//! ```
//! It listens on 127.0.0.1 (a free port), writes a kubeconfig whose current context points
//! at it, prints `server=http://127.0.0.1:PORT` on stdout once it serves, and stops on SIGTERM
//! or SIGINT. It only listens on loopback and accepts every request (no token): never expose it.

#[path = "../tests/it/kubeapi/mod.rs"]
mod kubeapi;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

use kubeapi::{KubeApi, Options, Outcome};

#[derive(Debug, Parser)]
#[command(
    name = "kube-standin",
    about = "A local stand-in for a Kubernetes API server on 127.0.0.1 (simulated controllers; not a cluster)"
)]
struct Args {
    /// Where to write the kubeconfig (one context `standin`, current, server = this process).
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// NAMESPACE=OUTCOME: the pods of Deployments in NAMESPACE (or whose image contains it)
    /// end as available, imagepullbackoff, crashloopbackoff, oomkilled, unschedulable or
    /// progressdeadlineexceeded. Repeatable; the default is available.
    #[arg(long, value_name = "KEY=OUTCOME")]
    outcome: Vec<String>,
    /// NAMESPACE/SERVICE:PORT=ADDR: the API server's service proxy for that Service port
    /// forwards to ADDR (a real server on 127.0.0.1). Repeatable.
    #[arg(long, value_name = "NS/SVC:PORT=ADDR")]
    proxy: Vec<String>,
    /// How long simulated pods take to reach their outcome, in milliseconds.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    ready_after_ms: u64,
    /// A rollout not complete after this many seconds gets ProgressDeadlineExceeded (the real
    /// progressDeadlineSeconds, scaled down), so failing versions fail fast.
    #[arg(long, default_value_t = 3, value_name = "SECONDS")]
    progress_deadline_s: u64,
}

fn parse_outcome(text: &str) -> anyhow::Result<(String, Outcome)> {
    let (key, name) = text.split_once('=').with_context(|| {
        format!("--outcome {text:?}: expected KEY=OUTCOME; hint: e.g. --outcome wms-model-v3=crashloopbackoff")
    })?;
    let outcome = match name.to_ascii_lowercase().as_str() {
        "available" => Outcome::Available,
        "imagepullbackoff" => Outcome::ImagePullBackOff,
        "crashloopbackoff" => Outcome::CrashLoopBackOff,
        "oomkilled" => Outcome::OOMKilled,
        "unschedulable" => Outcome::Unschedulable,
        "progressdeadlineexceeded" => Outcome::ProgressDeadlineExceeded,
        other => bail!(
            "--outcome {text:?}: unknown outcome {other:?}; hint: one of available, imagepullbackoff, crashloopbackoff, oomkilled, unschedulable, progressdeadlineexceeded"
        ),
    };
    Ok((key.to_string(), outcome))
}

fn parse_proxy(text: &str) -> anyhow::Result<(String, String, u16, SocketAddr)> {
    let hint = "hint: e.g. --proxy wms-model-v1/model:8080=127.0.0.1:41234";
    let parsed = (|| {
        let (target, addr) = text.split_once('=')?;
        let (ns, svc_port) = target.split_once('/')?;
        let (svc, port) = svc_port.rsplit_once(':')?;
        Some((
            ns.to_string(),
            svc.to_string(),
            port.parse::<u16>().ok()?,
            addr.parse::<SocketAddr>().ok()?,
        ))
    })();
    let parsed =
        parsed.with_context(|| format!("--proxy {text:?}: expected NS/SVC:PORT=ADDR; {hint}"))?;
    if !parsed.3.ip().is_loopback() {
        bail!("--proxy {text:?}: the backend must be on 127.0.0.1 (loopback only); {hint}");
    }
    Ok(parsed)
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-standin: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let outcomes = args
        .outcome
        .iter()
        .map(|o| parse_outcome(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let proxies = args
        .proxy
        .iter()
        .map(|p| parse_proxy(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = args
        .kubeconfig
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    if args.kubeconfig.file_name() != Some(std::ffi::OsStr::new("kubeconfig")) {
        bail!(
            "--kubeconfig {}: the file must be named `kubeconfig`; hint: pass DIR/kubeconfig",
            args.kubeconfig.display()
        );
    }
    fs_err::create_dir_all(&dir)?;

    let api = KubeApi::start(Options {
        ready_after: Duration::from_millis(args.ready_after_ms),
        progress_deadline: Some(Duration::from_secs(args.progress_deadline_s)),
        ..Options::default()
    });
    for (key, outcome) in outcomes {
        api.set_outcome(&key, outcome);
    }
    for (ns, svc, port, addr) in proxies {
        api.set_proxy_backend(&ns, &svc, port, addr);
    }
    api.write_kubeconfig(&dir, "standin");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "server={}", api.url())?;
        out.flush()?;
    }
    eprintln!(
        "kube-standin: a local stand-in for the Kubernetes API on {} (simulated controllers, no containers run); SIGTERM stops it",
        api.url()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    let served = api.requests().len();
    drop(api);
    eprintln!("kube-standin: stopped after {served} requests");
    Ok(())
}
