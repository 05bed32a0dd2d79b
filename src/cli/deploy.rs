//! `wms deploy render|apply|promote|rollback|scale|config|status|cleanup|debug`: flags →
//! settings → [`crate::deploy`]. Every command (render aside) writes one timing record (task
//! deploy/promote/rollback/scale/config/cleanup/debug, its steps, outcome and errors) and the
//! step outputs `namespace`, `url`, `status`; mutating commands hold the deploy Lease.
//!
//! Data goes to stdout (the YAML of `render`, one JSON object per command, the status table);
//! progress and the failing pods' log lines to stderr and the job summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::deploy::cluster::Cluster;
use crate::deploy::names::{self, Names};
use crate::deploy::ops;
use crate::deploy::pods::PodProblem;
use crate::deploy::{DeployError, DeploySpec, Resources, render, smoke};
use crate::exit::UsageError;
use crate::github::actions::Actions;
use crate::timing::{self, Method, Outcome, Recorder, Source, Task};
use crate::untrusted::text::{for_log, md_code};

/// The model name when neither `--model` nor `--onnx` says one (the seed's).
pub const DEFAULT_MODEL: &str = "water-meters-unet";

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    #[command(subcommand)]
    pub command: DeployCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DeployCommand {
    /// Print the objects `apply` would apply, as YAML, without a cluster (GitOps).
    Render(RenderArgs),
    /// Create or update the version's namespace and objects (server-side apply), wait for the
    /// rollout like `kubectl rollout status`, and optionally smoke-test it.
    Apply(ApplyArgs),
    /// Route the model's stable entry point to a Ready version (one API write).
    Promote(PromoteArgs),
    /// Route the entry point back to the version promoted before the current one.
    Rollback(ModelArgs),
    /// Set a version's replicas (and the autoscaler's bounds) and wait.
    Scale(ScaleArgs),
    /// Set config.properties keys of a version; its pods roll, and the command waits.
    Config(ConfigArgs),
    /// Versions, readiness, image digests and which version is promoted.
    Status(StatusArgs),
    /// Delete all but the newest versions (never the promoted or previous one) and wait until
    /// their namespaces are gone.
    Cleanup(CleanupArgs),
    /// Why a version is not serving: each failing pod's reason and last log lines.
    Debug(VersionArgs),
}

/// Where the cluster is and how wms lays out namespaces there.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// kubeconfig context [default: the current context of $KUBECONFIG or ~/.kube/config;
    /// without a kubeconfig, the pod's service account].
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// An EKS cluster: endpoint and CA from DescribeCluster, a token signed with the AWS
    /// credentials of the environment (e.g. `wms aws assume-role`).
    #[arg(long, global = true, value_name = "NAME")]
    pub eks_cluster: Option<String>,
    /// AWS region of --eks-cluster [default: AWS_REGION].
    #[arg(long, global = true, requires = "eks_cluster")]
    pub region: Option<String>,
    /// Version namespaces are PREFIX<model>-<version>.
    #[arg(long, global = true, default_value = names::DEFAULT_PREFIX)]
    pub namespace_prefix: String,
    /// Namespace of the entry points, promotion history and deploy Lease.
    #[arg(long, global = true, default_value = names::DEFAULT_SYSTEM_NAMESPACE)]
    pub system_namespace: String,
    /// How long to wait for another deploy's lock (e.g. 30s, 5m).
    #[arg(long, global = true, default_value = "5m", value_parser = parse_duration)]
    pub lock_timeout: Duration,
    /// Take over fields another field manager owns (server-side apply force).
    #[arg(long, global = true)]
    pub force: bool,
}

/// What a version is made of (`render` and `apply`).
#[derive(Debug, Clone, clap::Args)]
pub struct SpecArgs {
    /// The image, pinned: REGISTRY/REPO@sha256:… (the `image` output of build-image).
    #[arg(long)]
    pub image: String,
    /// The version: a DNS-1123 label such as v3 (names the namespace).
    #[arg(long)]
    pub version: String,
    /// The model's name [default: the ONNX metadata's model_name, else water-meters-unet].
    #[arg(long)]
    pub model: Option<String>,
    /// The model file: its metadata gives the model name, git sha and the metrics annotated
    /// on the namespace.
    #[arg(long, value_name = "FILE")]
    pub onnx: Option<PathBuf>,
    /// config.properties for wms-serve [default: the one in torchserve/].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub replicas: i32,
    /// The autoscaler's maximum [default: max(3, --replicas)].
    #[arg(long)]
    pub max_replicas: Option<i32>,
    #[arg(long, default_value = "500m")]
    pub cpu_request: String,
    #[arg(long, default_value = "512Mi")]
    pub memory_request: String,
    #[arg(long, default_value = "2")]
    pub cpu_limit: String,
    #[arg(long, default_value = "2Gi")]
    pub memory_limit: String,
    /// Accept a tag-only image reference (it can move after the deploy).
    #[arg(long)]
    pub allow_tag: bool,
    /// Git commit of the model [default: the ONNX metadata's, else $GITHUB_SHA].
    #[arg(long)]
    pub git_sha: Option<String>,
    /// Namespace of Prometheus (may scrape port 8082).
    #[arg(long, default_value = names::DEFAULT_MONITORING_NAMESPACE)]
    pub monitoring_namespace: String,
    /// Another namespace whose pods may reach the inference port (an ingress controller's);
    /// repeatable.
    #[arg(long, value_name = "NAMESPACE")]
    pub allow_from: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Include the ServiceMonitor (apply decides from the cluster's CRDs).
    #[arg(long)]
    pub service_monitor: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How long to wait for the rollout (e.g. 90s, 5m; 0 = do not wait).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub wait: Duration,
    /// After the rollout, GET /ping through the API server's service proxy and, with this
    /// photo, one prediction whose mask must have the photo's size.
    #[arg(long, value_name = "PHOTO")]
    pub smoke_test: Option<PathBuf>,
    /// Only /ping as the smoke test (no photo).
    #[arg(long, conflicts_with = "smoke_test")]
    pub smoke_ping: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VersionArgs {
    #[arg(long)]
    pub version: String,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub version: VersionArgs,
}

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub version: VersionArgs,
    #[arg(long)]
    pub replicas: i32,
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub wait: Duration,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub version: VersionArgs,
    /// KEY=VALUE for config.properties (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
    pub sets: Vec<String>,
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this model [default: every model].
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Versions to keep besides the promoted and the previous one (newest first).
    #[arg(long)]
    pub keep: usize,
    /// How long to wait for deleted namespaces to disappear.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub wait: Duration,
}

/// `90s`, `5m`, `1h`, `1m30s` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; write e.g. 90s, 5m, 1h30m or 300");
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map(Duration::from_secs).map_err(|_| bad());
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || t.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The model's metadata_props, for name, git sha and metrics.
fn onnx_metadata(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    use prost::Message as _;
    let bytes = fs_err::read(path)?;
    let model = crate::onnx::proto::ModelProto::decode(bytes.as_slice()).map_err(|e| {
        UsageError::new(format!(
            "--onnx {}: not an ONNX model ({e}); hint: pass the model.onnx from `wms export-onnx`",
            path.display()
        ))
    })?;
    Ok(model
        .metadata_props
        .into_iter()
        .filter_map(|e| Some((e.key?, e.value.unwrap_or_default())))
        .collect())
}

impl SpecArgs {
    /// The spec, after flags, the ONNX metadata and the environment are merged.
    pub fn resolve(self, cluster: &ClusterArgs) -> anyhow::Result<DeploySpec> {
        let SpecArgs {
            image,
            version,
            model,
            onnx,
            config,
            replicas,
            max_replicas,
            cpu_request,
            memory_request,
            cpu_limit,
            memory_limit,
            allow_tag,
            git_sha,
            monitoring_namespace,
            allow_from,
        } = self;
        let meta = match &onnx {
            Some(p) => onnx_metadata(p)?,
            None => BTreeMap::new(),
        };
        let meta_value = |k: &str| meta.get(k).filter(|v| !v.is_empty()).cloned();
        let model = model
            .or_else(|| meta_value(crate::onnx::meta_keys::MODEL_NAME))
            .unwrap_or_else(|| DEFAULT_MODEL.into());
        let config_properties = match &config {
            Some(p) => fs_err::read_to_string(p)?,
            None => crate::oci::DEFAULT_CONFIG.to_string(),
        };
        let metrics: BTreeMap<String, Value> = match meta_value(crate::onnx::meta_keys::METRICS) {
            Some(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "--onnx {}: metadata `metrics` is not a JSON object",
                    onnx.as_deref()
                        .unwrap_or_else(|| std::path::Path::new(""))
                        .display()
                )
            })?,
            None => BTreeMap::new(),
        };
        let git_sha = git_sha
            .or_else(|| meta_value(crate::onnx::meta_keys::GIT_SHA))
            .or_else(|| std::env::var(crate::env_vars::GITHUB_SHA).ok())
            .filter(|s| !s.is_empty());
        let spec = DeploySpec {
            model,
            version,
            image,
            allow_tag,
            replicas,
            max_replicas: max_replicas.unwrap_or(replicas.max(3)),
            resources: Resources {
                requests_cpu: cpu_request,
                requests_memory: memory_request,
                limits_cpu: cpu_limit,
                limits_memory: memory_limit,
            },
            namespace_prefix: cluster.namespace_prefix.clone(),
            system_namespace: cluster.system_namespace.clone(),
            monitoring_namespace,
            allow_from,
            git_sha,
            metrics,
            config_properties,
            service_monitor: false,
        };
        // The issue's contract: a bad name is a failed deploy (exit 1), like the cluster's own
        // refusals, not a usage error.
        spec.check()?;
        Ok(spec)
    }
}

pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    if let DeployCommand::Render(a) = args.command {
        return run_render(a);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args.command))
}

fn run_render(args: RenderArgs) -> anyhow::Result<()> {
    let RenderArgs {
        spec,
        cluster,
        service_monitor,
    } = args;
    let mut spec = spec.resolve(&cluster)?;
    spec.service_monitor = service_monitor;
    let objects = render::render(&spec)?;
    print!("{}", render::to_yaml(&objects));
    Ok(())
}

/// Who holds the lock: the command, the host and process, and the Actions run.
fn holder(command: &str) -> String {
    let host = fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    let mut s = format!(
        "wms deploy {command} on {host} pid {} ({:08x})",
        std::process::id(),
        rand::random::<u32>()
    );
    if let Some(url) = timing::actions_run_url() {
        s.push_str(&format!(" in {url}"));
    }
    s
}

async fn connect(args: &ClusterArgs) -> anyhow::Result<Cluster> {
    crate::deploy::eks::install_tls_provider();
    if let Some(name) = &args.eks_cluster {
        let target = crate::aws::Target {
            region: args.region.clone(),
            endpoint_url: None,
        };
        let auth = crate::deploy::eks::EksAuth::connect(&target, name).await?;
        let config = auth.kube_config()?;
        let server = config.cluster_url.to_string();
        let client = auth.client_for(Cluster::with_timeouts(config))?;
        return Ok(Cluster::from_client(
            client,
            server,
            format!("EKS cluster {name}"),
        ));
    }
    Ok(Cluster::connect(args.context.as_deref()).await?)
}

/// What one command reports when it ends.
struct Report {
    namespace: String,
    url: String,
    json: Value,
}

async fn run_async(command: DeployCommand) -> anyhow::Result<()> {
    let (task, cluster_args) = match &command {
        DeployCommand::Render(_) => unreachable!("render runs without a cluster"),
        DeployCommand::Apply(a) => (Task::Deploy, a.cluster.clone()),
        DeployCommand::Promote(a) => (Task::Promote, a.version.model.cluster.clone()),
        DeployCommand::Rollback(a) => (Task::Rollback, a.cluster.clone()),
        DeployCommand::Scale(a) => (Task::Scale, a.version.model.cluster.clone()),
        DeployCommand::Config(a) => (Task::Config, a.version.model.cluster.clone()),
        DeployCommand::Status(a) => (Task::Debug, a.cluster.clone()),
        DeployCommand::Cleanup(a) => (Task::Cleanup, a.model.cluster.clone()),
        DeployCommand::Debug(a) => (Task::Debug, a.model.cluster.clone()),
    };
    let is_status = matches!(command, DeployCommand::Status(_));
    let gh = Actions::from_env();
    let mut rec = Recorder::start(task, Method::Automated, Source::this_process());
    let result = run_task(command, &cluster_args, &gh, &mut rec).await;
    let outcome = if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    if let Err(e) = &result {
        rec.error(format!("{e:#}"));
    }
    // `status` only reads; it is no task of the comparison.
    if !is_status {
        let record = rec.finish(outcome);
        match timing::append_default(&record) {
            Ok(path) => tracing::debug!(path = %path.display(), "timing record written"),
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
    let status = if result.is_ok() { "success" } else { "failure" };
    let (namespace, url) = match &result {
        Ok(r) => (r.namespace.clone(), r.url.clone()),
        Err(_) => (String::new(), String::new()),
    };
    gh.set_output("namespace", &namespace)?;
    gh.set_output("url", &url)?;
    gh.set_output("status", status)?;
    let report = result?;
    if !report.json.is_null() {
        println!("{}", report.json);
    }
    Ok(())
}

fn version_url(names: &Names) -> String {
    format!("http://{}:{}", names.service_host(), render::PORT_INFERENCE)
}

fn entry_url(model: &str, system_namespace: &str) -> String {
    format!(
        "http://{model}.{system_namespace}.svc.cluster.local:{}",
        render::PORT_INFERENCE
    )
}

/// Prints each failing pod's reason and last log lines (stderr and the job summary).
fn print_pods(gh: &Actions, title: &str, pods: &[PodProblem]) {
    if pods.is_empty() {
        return;
    }
    let _g = gh.group(title);
    let mut md = format!("### {}\n\n", crate::untrusted::text::md_text(title));
    for p in pods {
        eprintln!(
            "{}",
            for_log(&format!("pod {}: {} {}", p.pod, p.reason, p.detail))
        );
        md.push_str(&format!(
            "- pod {}: **{}** {}\n",
            md_code(&p.pod),
            crate::untrusted::text::md_text(&p.reason),
            crate::untrusted::text::md_text(&p.detail)
        ));
        if !p.logs.is_empty() {
            md.push_str("\n```text\n");
            for line in &p.logs {
                eprintln!("    | {}", for_log(line));
                md.push_str(&for_log(line).replace("```", "'''"));
                md.push('\n');
            }
            md.push_str("```\n");
        }
    }
    if let Err(e) = gh.append_summary(&md) {
        tracing::warn!("{e}");
    }
}

/// Runs `body` (a `Result<T, DeployError>`) while holding the deploy lock, which is released
/// whatever happens; evaluates to the body's result (or the release's error).
macro_rules! locked {
    ($cluster:expr, $args:expr, $command:expr, $rec:expr, $body:expr) => {{
        $rec.begin_step("lock");
        let guard = ops::lock(
            $cluster,
            &$args.system_namespace,
            &holder($command),
            $args.lock_timeout,
        )
        .await?;
        let result = $body;
        $rec.begin_step("unlock");
        let released = guard.release().await;
        $rec.end_step();
        result.and_then(|value| released.map(|()| value))
    }};
}

async fn run_task(
    command: DeployCommand,
    cargs: &ClusterArgs,
    gh: &Actions,
    rec: &mut Recorder,
) -> anyhow::Result<Report> {
    rec.begin_step("connect");
    let cluster = connect(cargs).await?;
    let system = cargs.system_namespace.clone();
    match command {
        DeployCommand::Render(_) => unreachable!("render runs without a cluster"),
        DeployCommand::Apply(a) => {
            let ApplyArgs {
                spec,
                cluster: _,
                wait,
                smoke_test,
                smoke_ping,
            } = a;
            let photo = match &smoke_test {
                Some(p) => Some(fs_err::read(p)?),
                None => None,
            };
            let mut spec = spec.resolve(cargs)?;
            let names = spec.names();
            rec.context("model", &spec.model);
            rec.context("version", &spec.version);
            rec.context("namespace", &names.namespace);
            spec.service_monitor = crate::deploy::apply::has_service_monitor_crd(&cluster).await?;
            let applied = locked!(&cluster, cargs, "apply", rec, {
                rec.begin_step("apply");
                let r = ops::apply_version(&cluster, &spec, cargs.force, None).await;
                match r {
                    Ok(mut applied) => {
                        if !wait.is_zero() {
                            rec.begin_step("rollout");
                            match ops::wait_rollout(&cluster, &names, wait).await {
                                Ok(r) => {
                                    applied.rollout = Some(r);
                                    Ok(applied)
                                }
                                Err(e) => Err(e),
                            }
                        } else {
                            Ok(applied)
                        }
                    }
                    Err(e) => Err(e),
                }
            });
            let applied = applied_or_report(gh, applied)?;
            let mut smoke_report = None;
            if smoke_test.is_some() || smoke_ping {
                rec.begin_step("smoke-test");
                smoke_report =
                    Some(smoke::smoke(&cluster, &names, &spec.model, photo.as_deref()).await?);
            }
            rec.end_step();
            eprintln!(
                "deployed {} to namespace {}{}",
                for_log(&spec.image),
                names.namespace,
                applied
                    .rollout
                    .as_ref()
                    .map(|r| format!(
                        " ({} ready replicas after {:.1} s)",
                        r.ready_replicas, r.seconds
                    ))
                    .unwrap_or_default()
            );
            Ok(Report {
                namespace: names.namespace.clone(),
                url: version_url(&names),
                json: json!({ "applied": applied, "smoke_test": smoke_report }),
            })
        }
        DeployCommand::Promote(a) => {
            let names = version_names(&a.version, cargs)?;
            rec.context("model", &names.model);
            rec.context("version", &names.version);
            let p = locked!(&cluster, cargs, "promote", rec, {
                rec.begin_step("switch");
                ops::promote(&cluster, &system, &names, &holder("promote"), cargs.force).await
            })?;
            eprintln!(
                "promoted {} ({}) as {}",
                p.version,
                p.namespace,
                entry_url(&names.model, &system)
            );
            Ok(Report {
                namespace: names.namespace.clone(),
                url: entry_url(&names.model, &system),
                json: json!({ "promoted": p }),
            })
        }
        DeployCommand::Rollback(a) => {
            let model = model_name(&a)?;
            rec.context("model", &model);
            let p = locked!(&cluster, cargs, "rollback", rec, {
                rec.begin_step("switch");
                ops::rollback(
                    &cluster,
                    &system,
                    &cargs.namespace_prefix,
                    &model,
                    &holder("rollback"),
                    cargs.force,
                )
                .await
            })?;
            rec.context("version", &p.version);
            eprintln!("rolled {model} back to {} ({})", p.version, p.namespace);
            Ok(Report {
                namespace: p.namespace.clone(),
                url: entry_url(&model, &system),
                json: json!({ "promoted": p }),
            })
        }
        DeployCommand::Scale(a) => {
            let names = version_names(&a.version, cargs)?;
            if a.replicas < 0 {
                return Err(UsageError::new(format!(
                    "--replicas {}: must be 0 or more; hint: 0 stops the version's pods",
                    a.replicas
                ))
                .into());
            }
            rec.context("model", &names.model);
            rec.context("version", &names.version);
            rec.context("replicas", a.replicas.to_string());
            let wait = (!a.wait.is_zero()).then_some(a.wait);
            let applied = locked!(&cluster, cargs, "scale", rec, {
                rec.begin_step("scale");
                ops::scale(&cluster, &names, a.replicas, cargs.force, wait).await
            });
            let applied = applied_or_report(gh, applied)?;
            eprintln!("scaled {} to {} replicas", names.namespace, a.replicas);
            Ok(Report {
                namespace: names.namespace.clone(),
                url: version_url(&names),
                json: json!({ "applied": applied }),
            })
        }
        DeployCommand::Config(a) => {
            let names = version_names(&a.version, cargs)?;
            let sets = a
                .sets
                .iter()
                .map(|s| ops::parse_set(s))
                .collect::<Result<Vec<_>, _>>()?;
            rec.context("model", &names.model);
            rec.context("version", &names.version);
            let wait = (!a.wait.is_zero()).then_some(a.wait);
            let applied = locked!(&cluster, cargs, "config", rec, {
                rec.begin_step("config");
                ops::config(&cluster, &names, &sets, cargs.force, wait).await
            });
            let applied = applied_or_report(gh, applied)?;
            eprintln!("configured {}: {}", names.namespace, a.sets.join(", "));
            Ok(Report {
                namespace: names.namespace.clone(),
                url: version_url(&names),
                json: json!({ "applied": applied, "set": sets.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>() }),
            })
        }
        DeployCommand::Status(a) => {
            rec.begin_step("read");
            let (versions, routes) = ops::versions(&cluster, &system, a.model.as_deref()).await?;
            let routes: Vec<Value> = routes
                .iter()
                .map(|r| {
                    json!({
                        "model": r.model,
                        "promoted": r.promoted(),
                        "previous": r.previous(),
                        "target": r.target,
                        "url": entry_url(&r.model, &system),
                        "history": r.history,
                    })
                })
                .collect();
            let json = json!({ "versions": versions, "entry_points": routes });
            match a.output {
                OutputFormat::Json => Ok(Report {
                    namespace: String::new(),
                    url: String::new(),
                    json,
                }),
                OutputFormat::Table => {
                    println!(
                        "{:<40} {:<12} {:<8} {:<9} {:<12} IMAGE",
                        "NAMESPACE", "VERSION", "READY", "PROMOTED", "PHASE"
                    );
                    for v in &versions {
                        println!(
                            "{:<40} {:<12} {:<8} {:<9} {:<12} {}",
                            for_log(&v.namespace),
                            for_log(&v.version),
                            format!("{}/{}", v.ready_replicas, v.replicas),
                            if v.promoted { "yes" } else { "" },
                            for_log(&v.phase),
                            for_log(&v.image)
                        );
                    }
                    Ok(Report {
                        namespace: String::new(),
                        url: String::new(),
                        json: Value::Null,
                    })
                }
            }
        }
        DeployCommand::Cleanup(a) => {
            let model = model_name(&a.model)?;
            rec.context("model", &model);
            let cleaned = locked!(&cluster, cargs, "cleanup", rec, {
                rec.begin_step("delete");
                ops::cleanup(&cluster, &system, &model, a.keep, a.wait).await
            })?;
            eprintln!(
                "deleted {} namespace(s), kept {}",
                cleaned.deleted.len(),
                cleaned.kept.join(", ")
            );
            Ok(Report {
                namespace: String::new(),
                url: String::new(),
                json: json!({ "cleanup": cleaned }),
            })
        }
        DeployCommand::Debug(a) => {
            let names = version_names(&a, cargs)?;
            rec.context("model", &names.model);
            rec.context("version", &names.version);
            rec.begin_step("diagnose");
            let (state, problems) = ops::debug(&cluster, &names).await?;
            rec.end_step();
            eprintln!(
                "{}: rollout {}; {}/{} ready",
                names.namespace,
                for_log(&state.rollout),
                state.ready_replicas,
                state.replicas
            );
            print_pods(gh, &format!("pods of {}", names.namespace), &problems);
            Ok(Report {
                namespace: names.namespace.clone(),
                url: version_url(&names),
                json: json!({ "version": state, "pods": problems }),
            })
        }
    }
}

fn model_name(args: &ModelArgs) -> anyhow::Result<String> {
    names::check_label("--model", &args.model)?;
    Ok(args.model.clone())
}

fn version_names(args: &VersionArgs, cargs: &ClusterArgs) -> anyhow::Result<Names> {
    let model = model_name(&args.model)?;
    names::check_label("--version", &args.version)?;
    names::check_prefix("--namespace-prefix", &cargs.namespace_prefix)?;
    Ok(Names::new(&cargs.namespace_prefix, &model, &args.version))
}

/// A failed rollout prints its pods' reasons and log lines before the one-line error.
fn report_rollout_failure(gh: &Actions, e: DeployError) -> anyhow::Error {
    if let DeployError::RolloutFailed {
        namespace, pods, ..
    } = &e
    {
        print_pods(gh, &format!("failing pods in {namespace}"), pods);
    }
    e.into()
}

fn applied_or_report(
    gh: &Actions,
    r: Result<ops::Applied, DeployError>,
) -> anyhow::Result<ops::Applied> {
    r.map_err(|e| report_rollout_failure(gh, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "m", "5x", "1.5m", "-1s", "5m3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
