//! `wms data synth|qa|add|push|pull`: flags → settings → [`crate::data::synth`] /
//! [`crate::data::qa`] / [`crate::dvc`] → a summary on stdout, reports as files, a job summary
//! in Actions.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::{DataError, qa, synth};
use crate::dvc::trust::EndpointPolicy;
use crate::dvc::{Repo, add, sync};
use crate::env_vars;
use crate::exit::UsageError;
use crate::github::actions::Actions;
use crate::untrusted::text::for_log;

/// Data sets (images/ + masks/ with the same stems): synthesize and check them (synth, qa), track
/// and move them in DVC's format (add, push, pull).
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Render realistic synthetic water-meter photos and counter-window masks.
    Synth(SynthArgs),
    /// Check a data set: pairs, decoding, sizes, binary and non-empty masks, duplicates.
    Qa(QaArgs),
    /// Track files or directories as `dvc add` does: cache entries, `PATH.dvc`, `.gitignore`.
    ///
    /// Links are followed only while they stay inside the repository (and out of its `.git` and
    /// `.dvc`): a link to a file elsewhere is refused, never read.
    Add(AddArgs),
    /// Upload the tracked data the DVC remote lacks (as `dvc push`).
    Push(SyncArgs),
    /// Download the tracked data the cache lacks and check it out (as `dvc pull`).
    Pull(SyncArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Files or directories inside a DVC repository.
    #[arg(required = true)]
    pub targets: Vec<PathBuf>,
}

/// Shown after `push`/`pull --help`: who may choose the endpoint.
const TRUST_HELP: &str = "\
Endpoint trust: `.dvc/config` and `.dvc/config.local` come from the repository, so an \
`endpointurl` there is not used unless the workflow allows it: --trust-endpoint \
(WMS_DVC_TRUST_ENDPOINT=1) uses it, --endpoint-url (WMS_DVC_ENDPOINT_URL) replaces it with the \
workflow's own; without either, a repository endpoint is an error. Plain http:// is refused for \
any host that is not loopback unless --allow-http (WMS_DVC_ALLOW_HTTP=1). Paths in `.dvc` files, \
`dvc.lock` and `.dir` manifests are checked: no absolute paths, no `..`, no writing through \
links. See docs/SECURITY.md.";

#[derive(Debug, clap::Args)]
#[command(after_help = TRUST_HELP)]
pub struct SyncArgs {
    /// `.dvc` files or tracked paths (default: every one in the repository).
    pub targets: Vec<PathBuf>,
    /// Remote name from `.dvc/config` (default: `[core] remote`).
    #[arg(short, long)]
    pub remote: Option<String>,
    /// Parallel transfers (default: 4 × CPU cores, as dvc).
    #[arg(short, long, env = env_vars::WMS_DATA_JOBS)]
    pub jobs: Option<usize>,
    /// Use the `endpointurl` that the repository's `.dvc/config` (or `config.local`) sets: it
    /// will receive requests signed with your AWS credentials. Only for repositories you trust.
    #[arg(long, env = env_vars::WMS_DVC_TRUST_ENDPOINT, value_parser = clap::builder::BoolishValueParser::new())]
    pub trust_endpoint: bool,
    /// The S3 endpoint to use (MinIO, moto, …), chosen by the workflow; replaces any
    /// `endpointurl` from the repository.
    #[arg(long, value_name = "URL", env = env_vars::WMS_DVC_ENDPOINT_URL)]
    pub endpoint_url: Option<String>,
    /// Allow a plain http:// endpoint on a host that is not loopback (requests and the session
    /// token then cross the network unencrypted).
    #[arg(long, env = env_vars::WMS_DVC_ALLOW_HTTP, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_http: bool,
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Output folder; images/NNNN.jpg and masks/NNNN.png are written inside.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of samples.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Image size as WIDTHxHEIGHT.
    #[arg(long, default_value = "512x512")]
    pub size: String,
    /// Random seed: the same seed writes identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct QaArgs {
    /// The data set folder (with images/ and masks/).
    pub dir: PathBuf,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the report as Markdown here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

/// Parses `WIDTHxHEIGHT` (also `X` or `×`).
pub fn parse_size(s: &str) -> Result<(u32, u32), UsageError> {
    let bad = || {
        UsageError::new(format!(
            "invalid --size `{s}`; hint: use WIDTHxHEIGHT, e.g. 512x512"
        ))
    };
    let (w, h) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}

impl SynthArgs {
    fn resolve(self) -> Result<synth::SynthConfig, UsageError> {
        let SynthArgs {
            out,
            count,
            size,
            seed,
        } = self;
        let (width, height) = parse_size(&size)?;
        Ok(synth::SynthConfig {
            out,
            count,
            width,
            height,
            seed,
        })
    }
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Synth(a) => run_synth(a),
        DataCommand::Qa(a) => run_qa(a),
        DataCommand::Add(a) => run_add(a),
        DataCommand::Push(a) => run_push(a),
        DataCommand::Pull(a) => run_pull(a),
    }
}

/// What `push`/`pull` run with, from flags and the environment.
#[derive(Debug)]
struct SyncSettings {
    repo: Repo,
    options: sync::SyncOptions,
}

impl SyncSettings {
    fn resolve(args: SyncArgs, what: &str) -> anyhow::Result<SyncSettings> {
        let SyncArgs {
            targets,
            remote,
            jobs,
            trust_endpoint,
            endpoint_url,
            allow_http,
        } = args;
        let jobs = match jobs {
            Some(0) => {
                return Err(
                    UsageError::new("--jobs must be at least 1; hint: try --jobs 8").into(),
                );
            }
            Some(n) => n,
            None => 4 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let stop_after = match std::env::var(env_vars::WMS_DATA_PULL_STOP_AFTER) {
            Ok(v) if !v.is_empty() => Some(v.parse::<usize>().map_err(|_| {
                UsageError::new(format!(
                    "{}={v:?} is not a number; hint: unset it",
                    env_vars::WMS_DATA_PULL_STOP_AFTER
                ))
            })?),
            _ => None,
        };
        let repo = Repo::discover(Path::new("."))?;
        Ok(SyncSettings {
            repo,
            options: sync::SyncOptions {
                remote,
                jobs,
                targets,
                endpoint: EndpointPolicy {
                    // An empty variable (`WMS_DVC_ENDPOINT_URL=`) means none.
                    endpoint_url: endpoint_url.filter(|u| !u.is_empty()),
                    trust_repository: trust_endpoint,
                    allow_http,
                },
                stop_after,
                progress: Actions::from_env().progress(0, what),
            },
        })
    }
}

fn run_add(args: AddArgs) -> anyhow::Result<()> {
    let AddArgs { targets } = args;
    let repo = Repo::discover(Path::new("."))?;
    for target in &targets {
        let s = add::add(&repo, target)?;
        println!(
            "added {} ({} file(s), {} bytes) → {}",
            for_log(&target.to_string_lossy()),
            s.files,
            s.out.size.unwrap_or(0),
            for_log(&s.metafile.to_string_lossy())
        );
    }
    Ok(())
}

fn run_push(args: SyncArgs) -> anyhow::Result<()> {
    let settings = SyncSettings::resolve(args, "push")?;
    let s = sync::push(&settings.repo, &settings.options)?;
    println!(
        "pushed {} of {} object(s) ({} bytes, {} already in the remote) in {:.2} s",
        s.uploaded, s.objects, s.bytes, s.already_in_remote, s.seconds
    );
    Ok(())
}

fn run_pull(args: SyncArgs) -> anyhow::Result<()> {
    let settings = SyncSettings::resolve(args, "pull")?;
    let s = sync::pull(&settings.repo, &settings.options)?;
    println!(
        "pulled {} of {} object(s) ({} bytes, {} already cached); {} file(s) written, {} unchanged, in {:.2} s",
        s.downloaded,
        s.objects,
        s.bytes,
        s.already_cached,
        s.files_written,
        s.files_unchanged,
        s.seconds
    );
    Ok(())
}

fn run_synth(args: SynthArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    let s = synth::synthesize(&cfg)?;
    println!(
        "synthesized {} images ({}x{}) into {} in {:.2} s ({:.1} images/s); window coverage min {:.1} %, mean {:.1} %, max {:.1} %",
        s.count,
        s.width,
        s.height,
        cfg.out.display(),
        s.seconds,
        s.images_per_second,
        s.coverage_min * 100.0,
        s.coverage_mean * 100.0,
        s.coverage_max * 100.0,
    );
    Ok(())
}

fn run_qa(args: QaArgs) -> anyhow::Result<()> {
    let QaArgs {
        dir,
        json,
        markdown,
    } = args;
    let report = qa::run_qa(&dir)?;
    if let Some(p) = &json {
        crate::fsutil::write_atomic(p, report.to_json().as_bytes())
            .context("writing the JSON report")?;
    }
    let md = report.to_markdown();
    if let Some(p) = &markdown {
        crate::fsutil::write_atomic(p, md.as_bytes()).context("writing the Markdown report")?;
    }
    let gh = Actions::from_env();
    if gh.in_actions() {
        gh.append_summary(&md)?;
    }
    println!(
        "data QA of {}: {} images, {} masks, {} valid pairs, {} error(s)",
        dir.display(),
        report.images,
        report.masks,
        report.valid_pairs,
        report.errors.len()
    );
    if report.ok {
        return Ok(());
    }
    for line in report.first_lines() {
        eprintln!("  {line}");
    }
    let first = report
        .errors
        .first()
        .map(|e| format!("{} ({})", e.files.join(", "), e.kind.as_str()))
        .unwrap_or_default();
    Err(DataError::QaFailed {
        root: dir,
        count: report.errors.len(),
        first,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512x384").unwrap(), (512, 384));
        assert_eq!(parse_size("64X64").unwrap(), (64, 64));
        assert!(parse_size("512").is_err());
        assert!(parse_size("0x5").is_err());
    }
}
