//! `wms report pr` and `wms report deployment`: flags, else the action's `INPUT_*`, else the
//! runner's environment (`GITHUB_REPOSITORY`, `GITHUB_EVENT_PATH`, `GITHUB_SHA`), resolved into
//! settings; the content lives in [`crate::report`], the GitHub calls in
//! [`crate::report::publish`]. The Markdown goes to stdout and the job summary.
//!
//! A report never fails a workflow for a token that may not write (no token, or a fork pull
//! request's read-only one): it writes the summary, names the missing permission in a
//! `::warning::` and exits 0. Bad inputs and other API errors (401, 404, 422) exit 1.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::changes::event::{Event, Trigger};
use crate::env_vars;
use crate::exit::UsageError;
use crate::gate::{self, Baseline, GateRules};
use crate::github::actions::{Actions, Location};
use crate::github::client::{GitHub, GitHubConfig, GitHubError, Permission};
use crate::mlflow::registry::{self, PRODUCTION};
use crate::report::curves::{self, History};
use crate::report::markdown::{self, Report};
use crate::report::publish::{self, CheckRequest, DeploymentRequest};
use crate::report::{self as rep, inputs};
use crate::untrusted::text::{for_log, md_code, md_text};

/// Post what a pull request or a release should show on GitHub.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: ReportCommand,
}

// Parsed once per process; boxing the bigger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// The model report of a pull request: a sticky comment per model, the `wms / model
    /// quality` check run and the job summary.
    Pr(PrArgs),
    /// Record a GitHub deployment and its status (in_progress → success/failure).
    Deployment(DeploymentArgs),
}

#[derive(Debug, clap::Args)]
pub struct PrArgs {
    /// The candidate's metrics.json (wms-train). Input: `metrics`.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// `production` (the MLflow production version of --model; needs MLFLOW_TRACKING_URI) or a
    /// metrics.json to compare with. Input: `baseline`.
    #[arg(long, value_name = "production|FILE")]
    pub baseline: Option<String>,
    /// history.csv (wms-train) for the training curves. Input: `history`.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// `wms detect-changes --format json` output: changed files and DVC deltas. Input: `changes`.
    #[arg(long, value_name = "FILE")]
    pub changes: Option<PathBuf>,
    /// build-image's JSON output file, or an image reference. Input: `image`.
    #[arg(long, value_name = "FILE|REF")]
    pub image: Option<String>,
    /// Where the PR's model is deployed (a preview). Input: `deployment-url`.
    #[arg(long, value_name = "URL")]
    pub deployment_url: Option<String>,
    /// Model name: one comment per model [default: water-meters-unet]. Input: `model`.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Pull request number [default: from GITHUB_EVENT_PATH]. Input: `pr`.
    #[arg(long, value_name = "N")]
    pub pr: Option<u64>,
    /// owner/name [default: GITHUB_REPOSITORY]. Input: `repo`.
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// Commit for the check run [default: the PR's head, else GITHUB_SHA]. Input: `sha`.
    #[arg(long, value_name = "SHA")]
    pub sha: Option<String>,
    /// A metric that must beat the baseline (repeatable) [default: test_dice and test_iou], as
    /// in `wms gate`. Input: `improve`.
    #[arg(long, value_name = "METRIC")]
    pub improve: Vec<String>,
    /// An absolute minimum, e.g. `--min test_iou=0.85`. Input: `min`.
    #[arg(long, value_name = "METRIC=VALUE")]
    pub min: Vec<String>,
    /// An absolute maximum. Input: `max`.
    #[arg(long, value_name = "METRIC=VALUE")]
    pub max: Vec<String>,
    /// Also write the Markdown to this file. Input: `markdown`.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Where to write the curves as SVG [default: curves.svg next to --metrics]. Input: `svg`.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BaselineSource {
    Production,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrSettings {
    pub metrics: PathBuf,
    pub baseline: Option<BaselineSource>,
    pub history: Option<PathBuf>,
    pub changes: Option<PathBuf>,
    pub image: Option<String>,
    pub deployment_url: Option<String>,
    pub model: String,
    pub pr: Option<u64>,
    pub repo: Option<String>,
    pub sha: Option<String>,
    pub rules: GateRules,
    pub markdown: Option<PathBuf>,
    pub svg: Option<PathBuf>,
}

/// The runner's view of the event: what `--pr`/`--sha`/`--repo` default to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunnerContext {
    pub repository: Option<String>,
    pub pr: Option<u64>,
    /// The PR's head commit (the check run belongs there, not on the merge commit).
    pub pr_head: Option<String>,
    pub sha: Option<String>,
    pub run_url: Option<String>,
}

impl RunnerContext {
    /// `GITHUB_REPOSITORY`, `GITHUB_SHA`, the event payload at `GITHUB_EVENT_PATH`.
    pub fn from_env() -> anyhow::Result<RunnerContext> {
        let var = |k| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut ctx = RunnerContext {
            repository: var(env_vars::GITHUB_REPOSITORY),
            sha: var(env_vars::GITHUB_SHA),
            ..RunnerContext::default()
        };
        if let (Some(server), Some(repo), Some(run)) = (
            var(env_vars::GITHUB_SERVER_URL),
            ctx.repository.clone(),
            var(env_vars::GITHUB_RUN_ID),
        ) {
            ctx.run_url = Some(format!("{server}/{repo}/actions/runs/{run}"));
        }
        if let Some(name) = var(env_vars::GITHUB_EVENT_NAME) {
            let path = var(env_vars::GITHUB_EVENT_PATH).map(PathBuf::from);
            let event = Event::load(&name, path.as_deref())
                .context("reading the workflow event for the pull request number")?;
            if let Trigger::PullRequest {
                number, head_sha, ..
            } = event.trigger
            {
                ctx.pr = number;
                ctx.pr_head = Some(head_sha);
            }
        }
        Ok(ctx)
    }
}

impl PrSettings {
    pub fn resolve(
        args: PrArgs,
        input: impl Fn(&str) -> Option<String>,
        ctx: &RunnerContext,
    ) -> Result<PrSettings, UsageError> {
        let PrArgs {
            metrics,
            baseline,
            history,
            changes,
            image,
            deployment_url,
            model,
            pr,
            repo,
            sha,
            improve,
            min,
            max,
            markdown,
            svg,
        } = args;
        let path =
            |flag: Option<PathBuf>, name: &str| flag.or_else(|| input(name).map(PathBuf::from));
        let metrics = path(metrics, "metrics").ok_or_else(|| {
            UsageError::new("no metrics; hint: pass --metrics runs/train/metrics.json (written by wms-train train)")
        })?;
        let baseline = baseline.or_else(|| input("baseline")).map(|b| {
            if b == PRODUCTION {
                BaselineSource::Production
            } else {
                BaselineSource::File(PathBuf::from(b))
            }
        });
        let model = model
            .or_else(|| input("model"))
            .unwrap_or_else(|| rep::DEFAULT_MODEL.to_string());
        rep::check_model_name(&model).map_err(|e| UsageError::new(e.to_string()))?;
        let pr = match pr {
            Some(n) => Some(n),
            None => match input("pr") {
                Some(v) => Some(v.parse::<u64>().map_err(|_| {
                    UsageError::new(format!(
                        "input pr {:?} is not a number; hint: pass the pull request number",
                        for_log(&v)
                    ))
                })?),
                None => ctx.pr,
            },
        };
        let repo = repo
            .or_else(|| input("repo"))
            .or_else(|| ctx.repository.clone());
        if let Some(r) = &repo {
            check_repo(r)?;
        }
        let sha = sha
            .or_else(|| input("sha"))
            .or_else(|| ctx.pr_head.clone())
            .or_else(|| ctx.sha.clone());
        if let Some(s) = &sha
            && !(s.len() >= 7 && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(UsageError::new(format!(
                "--sha {}: not a commit sha; hint: pass the full hex sha",
                for_log(s)
            )));
        }
        let rules = super::gate::resolve_rules(improve, min, max, &input)?;
        Ok(PrSettings {
            metrics,
            baseline,
            history: path(history, "history"),
            changes: path(changes, "changes"),
            image: image.or_else(|| input("image")),
            deployment_url: deployment_url.or_else(|| input("deployment-url")),
            model,
            pr,
            repo,
            sha,
            rules,
            markdown: path(markdown, "markdown"),
            svg: path(svg, "svg"),
        })
    }
}

fn check_repo(repo: &str) -> Result<(), UsageError> {
    let ok = repo.split_once('/').is_some_and(|(o, n)| {
        let part = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.len() <= 100
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        part(o) && part(n)
    });
    if ok {
        Ok(())
    } else {
        Err(UsageError::new(format!(
            "--repo {}: not OWNER/NAME; hint: e.g. --repo octo-org/water-meters",
            for_log(repo)
        )))
    }
}

/// The token: `INPUT_TOKEN`, else `GITHUB_TOKEN`; masked before anything could print it.
fn token(actions: &Actions) -> Option<String> {
    let t = actions
        .input("token")
        .or_else(|| std::env::var(env_vars::GITHUB_TOKEN).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    if let Some(t) = &t {
        actions.add_mask(t);
    }
    t
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    match args.command {
        ReportCommand::Pr(a) => run_pr(a),
        ReportCommand::Deployment(a) => run_deployment(a),
    }
}

fn run_pr(args: PrArgs) -> anyhow::Result<()> {
    let actions = Actions::from_env();
    let token = token(&actions);
    let ctx = RunnerContext::from_env()?;
    let s = PrSettings::resolve(args, |n| actions.input(n), &ctx)?;

    let candidate = inputs::read_metrics(&s.metrics)?;
    let baseline = match &s.baseline {
        None => None,
        Some(BaselineSource::File(path)) => Some(Baseline {
            label: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            metrics: inputs::read_metrics(path)?,
        }),
        Some(BaselineSource::Production) => production_baseline(&s.model)?,
    };
    let history = s.history.as_deref().map(History::read).transpose()?;
    let changes = s.changes.as_deref().map(inputs::read_changes).transpose()?;
    let image = s.image.as_deref().map(inputs::read_image).transpose()?;
    let decision = gate::decide(&candidate, baseline.as_ref(), &s.rules);
    let report = Report {
        model: s.model.clone(),
        sha: s.sha.clone(),
        candidate,
        baseline,
        decision,
        history,
        changes,
        image,
        deployment_url: s.deployment_url.clone(),
        run_url: ctx.run_url.clone(),
        quantization: inputs::read_quantization(&s.metrics)?,
    };

    if let Some(h) = &report.history {
        let svg_path = s
            .svg
            .clone()
            .unwrap_or_else(|| s.metrics.with_file_name("curves.svg"));
        let svg = curves::svg(&h.panels())?;
        crate::fsutil::write_atomic(&svg_path, svg.as_bytes())?;
        tracing::info!("curves: {}", for_log(&svg_path.display().to_string()));
    }
    let marker = rep::marker(&s.model);
    let body = markdown::fit(&report, &marker, rep::COMMENT_LIMIT);
    if let Some(path) = &s.markdown {
        crate::fsutil::write_atomic(path, body.as_bytes())?;
    }
    actions.append_summary(&body)?;
    print!("{body}");
    actions.set_output(
        "passed",
        if report.decision.passed {
            "true"
        } else {
            "false"
        },
    )?;

    let Some(repo) = s.repo.as_deref() else {
        warn(
            &actions,
            "no repository (GITHUB_REPOSITORY or --repo): the report went to the job summary only",
        );
        return Ok(());
    };
    let Some(token) = token else {
        warn(
            &actions,
            "no GITHUB_TOKEN: the report went to the job summary only; to post the comment and the check run, pass GITHUB_TOKEN and give the job `pull-requests: write` and `checks: write`",
        );
        return Ok(());
    };
    let gh = GitHub::new(GitHubConfig::from_env(Some(token)))?;
    let mut missing: Vec<Permission> = Vec::new();

    match s.pr {
        Some(pr) => {
            let author = publish::viewer_login(&gh);
            match publish::upsert_comment(&gh, repo, pr, &marker, author.as_deref(), &body) {
                Ok(c) => {
                    tracing::info!(
                        "{} the report comment on #{pr}: {}",
                        if c.created { "created" } else { "updated" },
                        for_log(&c.url)
                    );
                    if !c.others.is_empty() {
                        warn(
                            &actions,
                            &format!(
                                "{} other comment(s) on #{pr} carry the marker {}; updated the newest ({}) and left the others",
                                c.others.len(),
                                marker.trim_start_matches("<!-- ").trim_end_matches(" -->"),
                                c.id
                            ),
                        );
                    }
                    actions.set_output("comment-id", &c.id.to_string())?;
                    actions.set_output("comment-url", &c.url)?;
                }
                Err(e) => tolerate(e, &mut missing)
                    .with_context(|| format!("posting the report on #{pr}"))?,
            }
        }
        None => tracing::info!("not a pull request (no --pr, no pull_request event): no comment"),
    }

    match s.sha.as_deref() {
        Some(sha) => {
            let metrics_text = fs_err::read_to_string(&s.metrics).unwrap_or_default();
            let anns =
                markdown::annotations(&report, &workspace_relative(&s.metrics), &metrics_text);
            let summary = markdown::fit(&report, "", rep::CHECK_SUMMARY_LIMIT);
            let title = if report.decision.passed {
                format!("{}: the quality gate passed", s.model)
            } else {
                format!("{}: the quality gate failed", s.model)
            };
            let req = CheckRequest {
                repo,
                name: rep::CHECK_NAME,
                head_sha: sha,
                conclusion: if report.decision.passed {
                    "success"
                } else {
                    "failure"
                },
                title: &title,
                summary: &summary,
                annotations: &anns,
            };
            match publish::check_run(&gh, &req) {
                Ok(c) => {
                    tracing::info!(
                        "check run {:?}: {} annotation(s) in {} request(s)",
                        rep::CHECK_NAME,
                        anns.len(),
                        c.requests
                    );
                    actions.set_output("check-run-id", &c.id.to_string())?;
                }
                Err(e) => tolerate(e, &mut missing).context("creating the check run")?,
            }
        }
        None => tracing::info!("no commit (GITHUB_SHA or --sha): no check run"),
    }
    permissions_warning(&actions, &missing);
    Ok(())
}

/// Records a missing permission (the fork / read-only case) and lets the run go on; any other
/// error stops it.
fn tolerate(e: GitHubError, missing: &mut Vec<Permission>) -> Result<(), GitHubError> {
    match e.missing_permission() {
        Some(p) => {
            missing.push(p);
            Ok(())
        }
        None => Err(e),
    }
}

fn permissions_warning(actions: &Actions, missing: &[Permission]) {
    if missing.is_empty() {
        return;
    }
    let names: Vec<String> = missing.iter().map(|p| format!("`{p}`")).collect();
    warn(
        actions,
        &format!(
            "the token lacks {}: the report went to the job summary only (a pull request from a fork gets a read-only token); grant it in the job's `permissions:` for same-repository pull requests",
            names.join(" and ")
        ),
    );
}

fn warn(actions: &Actions, message: &str) {
    actions.warning(message, &Location::default());
}

/// `--baseline production`: the metrics of the model's production version in MLflow (`None`
/// when there is none yet: the gate then notes it and its improvement rules pass).
fn production_baseline(model: &str) -> anyhow::Result<Option<Baseline>> {
    let cfg = crate::mlflow::ClientConfig::from_env()?.ok_or_else(|| {
        UsageError::new(
            "--baseline production needs an MLflow server; hint: set MLFLOW_TRACKING_URI, or pass --baseline metrics.json",
        )
    })?;
    let client = crate::mlflow::Client::new(cfg)?;
    let found = registry::alias_metrics(&client, model, PRODUCTION)
        .with_context(|| format!("reading the metrics of {model}@{PRODUCTION}"))?;
    Ok(found.map(|f| Baseline {
        label: format!("{PRODUCTION} (v{})", f.version.version),
        metrics: f.metrics,
    }))
}

/// The metrics file as the repository names it (relative to GITHUB_WORKSPACE or the current
/// directory), for annotations.
fn workspace_relative(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let roots = [
        std::env::var_os(env_vars::GITHUB_WORKSPACE).map(PathBuf::from),
        std::env::current_dir().ok(),
    ];
    for root in roots.into_iter().flatten() {
        if let Ok(rel) = abs.strip_prefix(&root) {
            return rel.to_string_lossy().into_owned();
        }
    }
    path.to_string_lossy().into_owned()
}

/// The deployment states GitHub accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeploymentState {
    Queued,
    Pending,
    #[value(name = "in_progress")]
    InProgress,
    Success,
    Failure,
    Error,
    Inactive,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Queued => "queued",
            DeploymentState::Pending => "pending",
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Success => "success",
            DeploymentState::Failure => "failure",
            DeploymentState::Error => "error",
            DeploymentState::Inactive => "inactive",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DeploymentArgs {
    /// The GitHub environment, e.g. production or staging.
    #[arg(long, value_name = "ENV")]
    pub environment: String,
    /// in_progress when the rollout starts, success or failure when it ends.
    #[arg(long, value_enum)]
    pub state: DeploymentState,
    /// Where the deployed model answers (the environment URL).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The commit, branch or tag deployed [default: GITHUB_SHA].
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// owner/name [default: GITHUB_REPOSITORY].
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// Add the status to this deployment [default: the newest unfinished one of this ref and
    /// environment, else a new one].
    #[arg(long, value_name = "ID")]
    pub deployment_id: Option<u64>,
    /// Shown next to the status (at most 140 characters).
    #[arg(long, default_value = "wms deploy")]
    pub description: String,
}

fn run_deployment(args: DeploymentArgs) -> anyhow::Result<()> {
    let DeploymentArgs {
        environment,
        state,
        url,
        git_ref,
        repo,
        deployment_id,
        description,
    } = args;
    let actions = Actions::from_env();
    let token = token(&actions);
    let ctx = RunnerContext {
        repository: std::env::var(env_vars::GITHUB_REPOSITORY)
            .ok()
            .filter(|v| !v.is_empty()),
        sha: std::env::var(env_vars::GITHUB_SHA)
            .ok()
            .filter(|v| !v.is_empty()),
        ..RunnerContext::default()
    };
    if environment.is_empty()
        || environment.len() > 255
        || environment.chars().any(char::is_control)
    {
        return Err(UsageError::new("--environment: empty, too long or with control characters; hint: e.g. --environment production").into());
    }
    let repo = repo.or(ctx.repository).ok_or_else(|| {
        UsageError::new(
            "no repository; hint: pass --repo OWNER/NAME (GITHUB_REPOSITORY in Actions)",
        )
    })?;
    check_repo(&repo)?;
    let git_ref = git_ref.or(ctx.sha).ok_or_else(|| {
        UsageError::new("no ref to deploy; hint: pass --ref SHA|BRANCH|TAG (GITHUB_SHA in Actions)")
    })?;
    let mut line = format!(
        "Deployment to {}: **{}** at {}",
        md_code(&environment),
        state.as_str(),
        md_code(&git_ref)
    );
    if let Some(u) = &url {
        line.push_str(&format!(" — {}", md_text(u)));
    }
    actions.append_summary(&line)?;
    let Some(token) = token else {
        warn(
            &actions,
            "no GITHUB_TOKEN: the deployment is in the job summary only; pass GITHUB_TOKEN and give the job `deployments: write`",
        );
        return Ok(());
    };
    let run_url = std::env::var(env_vars::GITHUB_SERVER_URL)
        .ok()
        .zip(std::env::var(env_vars::GITHUB_RUN_ID).ok())
        .map(|(server, run)| format!("{server}/{repo}/actions/runs/{run}"));
    let gh = GitHub::new(GitHubConfig::from_env(Some(token)))?;
    let req = DeploymentRequest {
        repo: &repo,
        environment: &environment,
        git_ref: &git_ref,
        state: state.as_str(),
        environment_url: url.as_deref(),
        log_url: run_url.as_deref(),
        description: &description,
        deployment_id,
    };
    match publish::deployment_status(&gh, &req) {
        Ok(d) => {
            tracing::info!(
                "deployment {} ({}): {}",
                d.deployment_id,
                if d.created { "new" } else { "existing" },
                state.as_str()
            );
            actions.set_output("deployment-id", &d.deployment_id.to_string())?;
            println!("{}", d.deployment_id);
            Ok(())
        }
        Err(e) => {
            let mut missing = Vec::new();
            tolerate(e, &mut missing)
                .with_context(|| format!("recording the {} deployment status", state.as_str()))?;
            permissions_warning(&actions, &missing);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PrArgs {
        PrArgs {
            metrics: None,
            baseline: None,
            history: None,
            changes: None,
            image: None,
            deployment_url: None,
            model: None,
            pr: None,
            repo: None,
            sha: None,
            improve: vec![],
            min: vec![],
            max: vec![],
            markdown: None,
            svg: None,
        }
    }

    #[test]
    fn flags_win_over_inputs_over_the_runner() {
        let ctx = RunnerContext {
            repository: Some("o/r".into()),
            pr: Some(7),
            pr_head: Some("a".repeat(40)),
            sha: Some("b".repeat(40)),
            run_url: None,
        };
        let inputs = |n: &str| match n {
            "metrics" => Some("m.json".to_string()),
            "baseline" => Some("production".to_string()),
            _ => None,
        };
        let s = PrSettings::resolve(args(), inputs, &ctx).unwrap();
        assert_eq!(s.metrics, PathBuf::from("m.json"));
        assert_eq!(s.baseline, Some(BaselineSource::Production));
        assert_eq!((s.pr, s.repo.as_deref()), (Some(7), Some("o/r")));
        assert_eq!(
            s.sha,
            Some("a".repeat(40)),
            "the PR head, not the merge commit"
        );
        assert_eq!(s.model, "water-meters-unet");
        let s = PrSettings::resolve(
            PrArgs {
                pr: Some(9),
                baseline: Some("base.json".into()),
                ..args()
            },
            inputs,
            &ctx,
        )
        .unwrap();
        assert_eq!(s.pr, Some(9));
        assert_eq!(s.baseline, Some(BaselineSource::File("base.json".into())));
    }

    #[test]
    fn bad_flags_are_usage_errors_with_hints() {
        let ctx = RunnerContext::default();
        let e = PrSettings::resolve(args(), |_| None, &ctx).unwrap_err();
        assert!(e.message.contains("hint:"), "{e}");
        for bad in [
            PrArgs {
                metrics: Some("m".into()),
                repo: Some("o/r/x".into()),
                ..args()
            },
            PrArgs {
                metrics: Some("m".into()),
                model: Some("a -->".into()),
                ..args()
            },
            PrArgs {
                metrics: Some("m".into()),
                sha: Some("xyz".into()),
                ..args()
            },
            PrArgs {
                metrics: Some("m".into()),
                min: vec!["iou".into()],
                ..args()
            },
        ] {
            let e = PrSettings::resolve(bad, |_| None, &ctx).unwrap_err();
            assert!(e.message.contains("hint:"), "{e}");
        }
    }
}
