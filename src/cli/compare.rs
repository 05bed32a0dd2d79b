//! `wms compare record|collect|report`: flags → settings → [`crate::compare`]. The tracker's
//! prompts go to stderr; data (the record file written, the report's path) to stdout.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::compare::collect::{self, CollectSettings, WorkflowSpec};
use crate::compare::instructions;
use crate::compare::report::{self, ReportSettings};
use crate::compare::tracker::{self, TrackerSettings};
use crate::env_vars;
use crate::exit::UsageError;
use crate::github::client::GitHubConfig;
use crate::timing::{self, Method, Task, Timestamp};
use crate::untrusted::text::for_log;

/// The manual-versus-automated deployment comparison.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    #[command(subcommand)]
    pub command: CompareCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CompareCommand {
    /// Time a task done by hand: shows the steps of comparison/manual/instructions.md, Enter
    /// marks a step, `e TEXT` notes an error, `q` finishes (`f` = gave up); appends a record.
    /// Ctrl-C keeps the steps marked so far (outcome `aborted`). Reads the same commands from a
    /// pipe.
    Record(RecordArgs),
    /// Gather automated runs: records `wms deploy` wrote (here and in --from directories) and
    /// GitHub Actions runs of the named workflows (with a token), without duplicates.
    Collect(CollectArgs),
    /// Write the comparison report (Markdown + SVG charts) from the records.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Only `manual`: automated runs are timed by the commands themselves.
    #[arg(long, value_parser = str::parse::<Method>)]
    pub method: Method,
    /// deploy, rollback, scale, config or debug.
    #[arg(long, value_parser = str::parse::<Task>)]
    pub task: Task,
    /// Who does the task [default: $USER].
    #[arg(long, value_name = "NAME")]
    pub person: Option<String>,
    /// Records directory [default: $WMS_TIMING_DIR, else comparison/records/ of this work tree].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Instructions file [default: comparison/manual/instructions.md of this work tree, else the
    /// copy built into wms].
    #[arg(long, value_name = "FILE")]
    pub instructions: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    /// Records directory [default: $WMS_TIMING_DIR, else comparison/records/ of this work tree].
    #[arg(long, value_name = "DIR")]
    pub records: Option<PathBuf>,
    /// Another directory of timing records to import (e.g. `wms deploy`'s from a CI artifact);
    /// repeatable.
    #[arg(long, value_name = "DIR")]
    pub from: Vec<PathBuf>,
    /// Repository whose workflow runs to collect [default: $GITHUB_REPOSITORY].
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// A workflow file (e.g. deploy.yml), optionally `=TASK` (deploy.yml=deploy); repeatable.
    /// Without `=TASK` the task is read from the file name (rollback.yml → rollback), else deploy.
    #[arg(long, value_name = "FILE[=TASK]")]
    pub workflow: Vec<String>,
    /// Only runs created on or after this day (YYYY-MM-DD) or time (RFC 3339).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Records directory [default: $WMS_TIMING_DIR, else comparison/records/ of this work tree].
    #[arg(long, value_name = "DIR")]
    pub records: Option<PathBuf>,
    /// The Markdown report [default: comparison/reports/<today, UTC>.md of this work tree]; the
    /// charts go next to it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also replace the generated section of this document (e.g. docs/COMPARISON.md).
    #[arg(long, value_name = "FILE")]
    pub update_docs: Option<PathBuf>,
}

pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    match args.command {
        CompareCommand::Record(a) => record(a),
        CompareCommand::Collect(a) => collect_cmd(a),
        CompareCommand::Report(a) => report_cmd(a),
    }
}

fn records_or_default(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(timing::records_dir)
}

fn record(args: RecordArgs) -> anyhow::Result<()> {
    let RecordArgs {
        method,
        task,
        person,
        out,
        instructions: instructions_file,
    } = args;
    if method != Method::Manual {
        return Err(UsageError::new(
            "--method automated: automated runs are timed by the commands themselves (wms deploy) and by `wms compare collect`; hint: use --method manual",
        )
        .into());
    }
    let person = person
        .or_else(|| std::env::var(env_vars::USER).ok())
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            UsageError::new("no --person and $USER is unset; hint: pass --person NAME")
        })?;
    let file = instructions_file.or_else(|| {
        let p = timing::work_tree_root().join(instructions::RELATIVE_PATH);
        p.is_file().then_some(p)
    });
    let steps = instructions::load(file.as_deref(), task)?;
    let dir = records_or_default(out);
    let settings = TrackerSettings { steps, person, dir };
    let stdin = std::io::stdin();
    let mut stderr = std::io::stderr();
    let (rec, path) = tracker::run(&settings, stdin.lock(), &mut stderr)?;
    eprintln!(
        "{} record: {} step(s), {} error(s), {:.1} s",
        rec.outcome,
        rec.steps.len(),
        rec.errors.count,
        rec.seconds()
    );
    println!("{}", path.display());
    Ok(())
}

/// `YYYY-MM-DD` (midnight UTC) or RFC 3339.
fn parse_since(s: &str) -> Result<Timestamp, UsageError> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    Timestamp::parse(&full).map_err(|e| {
        UsageError::new(format!(
            "--since: {}; hint: write a day as YYYY-MM-DD or a time as RFC 3339",
            for_log(&e)
        ))
    })
}

fn collect_cmd(args: CollectArgs) -> anyhow::Result<()> {
    let CollectArgs {
        records,
        from,
        repo,
        workflow,
        since,
    } = args;
    let workflows = workflow
        .iter()
        .map(|w| WorkflowSpec::parse(w).map_err(|e| UsageError::new(format!("--workflow {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let repo = repo.or_else(|| {
        std::env::var(env_vars::GITHUB_REPOSITORY)
            .ok()
            .filter(|r| !r.is_empty() && !workflows.is_empty())
    });
    if let Some(r) = &repo {
        collect::check_repo(r).map_err(|e| UsageError::new(format!("--repo {e}")))?;
    }
    let since = since.as_deref().map(parse_since).transpose()?;
    let config = GitHubConfig::from_env(None);
    let github = config.token.is_some().then_some(config);
    let settings = CollectSettings {
        records: records_or_default(records),
        from,
        repo,
        workflows,
        since,
        github,
    };
    let summary = collect::collect(&settings).context("wms compare collect")?;
    for w in &summary.warnings {
        tracing::warn!("{w}");
    }
    if let Some(why) = &summary.api_skipped {
        tracing::warn!("{why}");
    }
    eprintln!(
        "records in {}: {} before ({} automated from commands such as wms deploy); imported {} (duplicates skipped: {}); workflow runs: {} seen, {} collected, {} already collected, {} not finished/successful/failed/cancelled",
        settings.records.display(),
        summary.existing,
        summary.existing_from_commands,
        summary.imported,
        summary.import_duplicates,
        summary.runs_seen,
        summary.runs_collected,
        summary.runs_already_collected,
        summary.runs_not_counted
    );
    for p in &summary.written {
        println!("{}", p.display());
    }
    Ok(())
}

fn report_cmd(args: ReportArgs) -> anyhow::Result<()> {
    let ReportArgs {
        records,
        out,
        update_docs,
    } = args;
    let now = Timestamp::now();
    let out = out.unwrap_or_else(|| {
        report::default_out(&timing::work_tree_root().join("comparison/reports"), now)
    });
    let settings = ReportSettings {
        records: records_or_default(records),
        out,
        update_docs,
        generated: now,
    };
    let output = report::report(&settings).context("wms compare report")?;
    for w in &output.warnings {
        tracing::warn!("{w}");
    }
    eprintln!(
        "report from {} records ({} used, {} covered by collected runs)",
        output.records, output.figures.used, output.figures.covered
    );
    for f in &output.files {
        println!("{}", f.display());
    }
    Ok(())
}
