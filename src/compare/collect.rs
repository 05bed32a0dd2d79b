//! `wms compare collect`: gathers automated runs into the records directory. Two sources:
//!
//! 1. Timing records that `wms deploy` wrote elsewhere (`--from DIR`, e.g. a CI artifact): each
//!    record not already in the records directory is appended. The records directory's own
//!    records (what `wms deploy` wrote there) are read and checked too, broken lines named.
//! 2. The GitHub Actions API, through [`crate::github::client`]: every completed run of each
//!    named workflow (all pages of `GET /repos/{o}/{r}/actions/workflows/{file}/runs`), its jobs
//!    and their steps (`GET …/actions/runs/{id}/jobs?filter=latest`, all pages), turned into one
//!    record per run attempt: method `automated`, `source.run_url` = the run's page plus
//!    `/attempts/N`, steps = `job / step` with GitHub's start and completion times, errors = the
//!    failed steps, `context.collector = github-actions`.
//!
//! Idempotent: a run attempt whose URL is already in the records is not collected again, and a
//! record is imported from `--from` only if an identical one is not there yet. Without a token the
//! API part is skipped (and the summary says why); the local part still runs.
//!
//! It must not compute figures (that is [`super::stats`]) or print (the CLI shows the summary).

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::CompareError;
use super::stats::{COLLECTOR_ACTIONS, COLLECTOR_KEY};
use crate::github::client::{GitHub, GitHubConfig, Permission};
use crate::timing::{self, Errors, Method, Outcome, Source, Step, Task, Timestamp, TimingRecord};
use crate::untrusted::text::for_log;

/// A workflow to collect and the task its runs do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSpec {
    /// The workflow's file name (`deploy.yml`) or numeric id.
    pub workflow: String,
    pub task: Task,
}

impl WorkflowSpec {
    /// `FILE` or `FILE=TASK`. Without `=TASK`, the task is the first task name found in the
    /// file name (`rollback.yml` → rollback), else `deploy`.
    pub fn parse(s: &str) -> Result<WorkflowSpec, String> {
        let (workflow, task) = match s.split_once('=') {
            Some((w, t)) => (w, Some(t.parse::<Task>()?)),
            None => (s, None),
        };
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if workflow.is_empty() || !workflow.chars().all(ok_char) || workflow.starts_with('.') {
            return Err(format!(
                "{:?} is not a workflow file name or id; hint: pass the file name under .github/workflows, e.g. deploy.yml or deploy.yml=deploy",
                for_log(workflow)
            ));
        }
        let task = task.unwrap_or_else(|| {
            let lower = workflow.to_ascii_lowercase();
            Task::ALL
                .into_iter()
                .find(|t| lower.contains(t.as_str()))
                .unwrap_or(Task::Deploy)
        });
        Ok(WorkflowSpec {
            workflow: workflow.to_string(),
            task,
        })
    }
}

/// `owner/name`, checked (it goes into a URL path).
pub fn check_repo(s: &str) -> Result<(), String> {
    let ok = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    match s.split_once('/') {
        Some((o, r)) if ok(o) && ok(r) => Ok(()),
        _ => Err(format!(
            "{:?} is not owner/name; hint: e.g. --repo my-org/water-meters",
            for_log(s)
        )),
    }
}

/// What to collect.
#[derive(Debug, Clone)]
pub struct CollectSettings {
    /// The records directory (read, and appended to).
    pub records: PathBuf,
    /// Other directories of records to import.
    pub from: Vec<PathBuf>,
    /// `owner/name`; `None` skips the API part.
    pub repo: Option<String>,
    pub workflows: Vec<WorkflowSpec>,
    /// Only runs created at or after this time.
    pub since: Option<Timestamp>,
    /// `None`: skip the API part (and say so).
    pub github: Option<GitHubConfig>,
}

/// What collect did, for the CLI to show.
#[derive(Debug, Clone, Default)]
pub struct CollectSummary {
    /// Records already in the records directory.
    pub existing: usize,
    /// Of those, automated records written by a command (`wms deploy`).
    pub existing_from_commands: usize,
    pub imported: usize,
    pub import_duplicates: usize,
    pub runs_seen: usize,
    pub runs_collected: usize,
    pub runs_already_collected: usize,
    /// Runs that are not finished, skipped or neutral: not a task run (yet).
    pub runs_not_counted: usize,
    /// Why the API part did not run.
    pub api_skipped: Option<String>,
    /// Broken lines and unusable runs, one line each.
    pub warnings: Vec<String>,
    /// Files appended to.
    pub written: Vec<PathBuf>,
}

/// The identity a record is deduplicated by when imported: its whole content.
fn identity(r: &TimingRecord) -> String {
    r.to_line()
}

pub fn collect(settings: &CollectSettings) -> Result<CollectSummary, CompareError> {
    let mut summary = CollectSummary::default();
    let existing = timing::read_dir(&settings.records)?;
    summary
        .warnings
        .extend(existing.warnings.iter().map(ToString::to_string));
    summary.existing = existing.records.len();
    summary.existing_from_commands = existing
        .iter()
        .filter(|r| r.method == Method::Automated && r.source.command.is_some())
        .count();
    let mut identities: HashSet<String> = existing.iter().map(identity).collect();
    let mut run_urls: HashSet<String> = existing
        .iter()
        .filter_map(|r| r.source.run_url.clone())
        .filter(|u| u.contains("/attempts/"))
        .collect();

    let mut new: Vec<TimingRecord> = Vec::new();
    for dir in &settings.from {
        let other = timing::read_dir(dir)?;
        summary
            .warnings
            .extend(other.warnings.iter().map(ToString::to_string));
        for r in other.iter() {
            if identities.insert(identity(r)) {
                new.push(r.clone());
                summary.imported += 1;
            } else {
                summary.import_duplicates += 1;
            }
        }
    }

    // Imports are written before the API is asked, so a failing API call does not lose them.
    write_new(&settings.records, &mut new, &mut summary)?;

    match (&settings.repo, &settings.github) {
        (None, _) => {
            summary.api_skipped = Some(
                "no --repo (or GITHUB_REPOSITORY) and --workflow given: only local records were collected".into(),
            );
        }
        (Some(_), _) if settings.workflows.is_empty() => {
            summary.api_skipped =
                Some("no --workflow given: only local records were collected".into());
        }
        (Some(_), None) => {
            summary.api_skipped = Some(
                "no token (GITHUB_TOKEN or --token): the GitHub Actions API part was skipped; hint: pass a token that can read Actions (`permissions: actions: read`)".into(),
            );
        }
        (Some(repo), Some(config)) => {
            let gh = GitHub::new(config.clone()).map_err(|source| CompareError::GitHub {
                context: "cannot collect workflow runs".into(),
                source,
            })?;
            for spec in &settings.workflows {
                let result = collect_workflow(
                    &gh,
                    repo,
                    spec,
                    settings.since,
                    &mut run_urls,
                    &mut new,
                    &mut summary,
                );
                // What was collected before a failing request is kept.
                write_new(&settings.records, &mut new, &mut summary)?;
                result?;
            }
        }
    }

    write_new(&settings.records, &mut new, &mut summary)?;
    Ok(summary)
}

/// Appends `new` (and empties it): one write per file, records of one method to one file.
fn write_new(
    dir: &std::path::Path,
    new: &mut Vec<TimingRecord>,
    summary: &mut CollectSummary,
) -> Result<(), CompareError> {
    for method in Method::ALL {
        let lines: String = new
            .iter()
            .filter(|r| r.method == method)
            .map(TimingRecord::to_line)
            .collect();
        if lines.is_empty() {
            continue;
        }
        let path = timing::file_for(dir, method);
        timing::append_lines(&path, &lines)?;
        if !summary.written.contains(&path) {
            summary.written.push(path);
        }
    }
    new.clear();
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Run {
    id: u64,
    html_url: String,
    #[serde(default)]
    run_attempt: Option<u64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    run_started_at: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    head_sha: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

/// A job or a step: GitHub gives both these fields.
#[derive(Debug, Deserialize)]
struct Timed {
    name: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    completed_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Job {
    #[serde(flatten)]
    job: Timed,
    #[serde(default)]
    steps: Vec<Timed>,
}

fn collect_workflow(
    gh: &GitHub,
    repo: &str,
    spec: &WorkflowSpec,
    since: Option<Timestamp>,
    run_urls: &mut HashSet<String>,
    new: &mut Vec<TimingRecord>,
    summary: &mut CollectSummary,
) -> Result<(), CompareError> {
    let mut path = format!(
        "/repos/{repo}/actions/workflows/{}/runs?status=completed",
        spec.workflow
    );
    if let Some(since) = since {
        // GitHub's search syntax; also filtered below, whatever the server does with it.
        let day = &since.rfc3339()[..10];
        path.push_str(&format!("&created=%3E%3D{day}"));
    }
    let runs: Vec<Run> = gh
        .get_all(&path, Some("workflow_runs"), Permission::ActionsRead, None)
        .map_err(|source| CompareError::GitHub {
            context: format!(
                "cannot list the runs of workflow {} in {repo}",
                spec.workflow
            ),
            source,
        })?;
    for run in runs {
        summary.runs_seen += 1;
        let created = run
            .created_at
            .as_deref()
            .and_then(|s| Timestamp::parse(s).ok());
        if let (Some(since), Some(created)) = (since, created)
            && created < since
        {
            continue;
        }
        let outcome = match (run.status.as_deref(), run.conclusion.as_deref()) {
            (Some("completed"), Some("success")) => Outcome::Success,
            (Some("completed"), Some("failure" | "timed_out" | "startup_failure")) => {
                Outcome::Failure
            }
            (Some("completed"), Some("cancelled")) => Outcome::Aborted,
            _ => {
                summary.runs_not_counted += 1;
                continue;
            }
        };
        let attempt = run.run_attempt.unwrap_or(1);
        let run_url = format!("{}/attempts/{attempt}", run.html_url.trim_end_matches('/'));
        if run_urls.contains(&run_url) {
            summary.runs_already_collected += 1;
            continue;
        }
        let jobs: Vec<Job> = gh
            .get_all(
                &format!("/repos/{repo}/actions/runs/{}/jobs?filter=latest", run.id),
                Some("jobs"),
                Permission::ActionsRead,
                None,
            )
            .map_err(|source| CompareError::GitHub {
                context: format!("cannot list the jobs of run {} in {repo}", run.id),
                source,
            })?;
        match run_record(spec.task, &run, &run_url, outcome, &jobs) {
            Ok(record) => {
                run_urls.insert(run_url);
                new.push(record);
                summary.runs_collected += 1;
            }
            Err(why) => summary.warnings.push(format!(
                "{}: not collected: {}",
                for_log(&run_url),
                for_log(&why)
            )),
        }
    }
    Ok(())
}

fn time(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, String> {
    value
        .map(|v| Timestamp::parse(v).map_err(|e| format!("{field}: {e}")))
        .transpose()
}

/// One run attempt as a timing record.
fn run_record(
    task: Task,
    run: &Run,
    run_url: &str,
    outcome: Outcome,
    jobs: &[Job],
) -> Result<TimingRecord, String> {
    let run_started = time("run_started_at", run.run_started_at.as_deref())?
        .or(time("created_at", run.created_at.as_deref())?)
        .ok_or("the run has no start time")?;
    let mut steps = Vec::new();
    let mut errors = Errors::default();
    let mut finished = time("updated_at", run.updated_at.as_deref())?.unwrap_or(run_started);
    let mut last_job_end = None::<Timestamp>;
    let mut jobs: Vec<&Job> = jobs.iter().collect();
    jobs.sort_by_key(|j| j.job.started_at.clone());
    for Job {
        job,
        steps: job_steps,
    } in jobs
    {
        let job_start = time("job started_at", job.started_at.as_deref())?;
        let job_end = time("job completed_at", job.completed_at.as_deref())?;
        if let Some(end) = job_end {
            last_job_end = Some(last_job_end.map_or(end, |l| l.max(end)));
        }
        let mut failed_step = false;
        for s in job_steps {
            let (Some(a), Some(b)) = (
                time("step started_at", s.started_at.as_deref())?,
                time("step completed_at", s.completed_at.as_deref())?,
            ) else {
                continue; // skipped steps have no times
            };
            steps.push(Step {
                name: format!("{} / {}", job.name, s.name),
                started: a,
                finished: b.max(a),
            });
            if s.conclusion.as_deref() == Some("failure") {
                failed_step = true;
                push_error(&mut errors, format!("{} / {}: failure", job.name, s.name));
            }
        }
        if job_steps.is_empty()
            && let (Some(a), Some(b)) = (job_start, job_end)
        {
            steps.push(Step {
                name: job.name.clone(),
                started: a,
                finished: b.max(a),
            });
        }
        if !failed_step && matches!(job.conclusion.as_deref(), Some("failure" | "timed_out")) {
            push_error(
                &mut errors,
                format!("{}: {}", job.name, job.conclusion.as_deref().unwrap_or("")),
            );
        }
    }
    if let Some(end) = last_job_end {
        finished = end;
    }
    if outcome == Outcome::Failure && errors.count == 0 {
        push_error(
            &mut errors,
            format!(
                "run concluded {}",
                run.conclusion.as_deref().unwrap_or("failure")
            ),
        );
    }
    let started = steps
        .iter()
        .map(|s| s.started)
        .min()
        .map_or(run_started, |s| s.min(run_started));
    let finished = finished.max(started);
    let mut context = std::collections::BTreeMap::new();
    context.insert(COLLECTOR_KEY.to_string(), COLLECTOR_ACTIONS.to_string());
    context.insert("run_id".into(), run.id.to_string());
    for (k, v) in [
        ("workflow", &run.path),
        ("event", &run.event),
        ("head_sha", &run.head_sha),
    ] {
        if let Some(v) = v {
            context.insert(k.to_string(), v.clone());
        }
    }
    let record = TimingRecord {
        task,
        method: Method::Automated,
        started,
        finished,
        outcome,
        errors,
        steps,
        source: Source::run_url(run_url),
        human_seconds_recorded: None,
        context,
    };
    record.check()?;
    Ok(record)
}

fn push_error(errors: &mut Errors, message: String) {
    errors.count += 1;
    if errors.messages.len() < timing::MAX_ERROR_MESSAGES {
        errors.messages.push(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_specs() {
        let w = WorkflowSpec::parse("deploy.yml").unwrap();
        assert_eq!((w.workflow.as_str(), w.task), ("deploy.yml", Task::Deploy));
        assert_eq!(
            WorkflowSpec::parse("model-rollback.yml").unwrap().task,
            Task::Rollback
        );
        assert_eq!(
            WorkflowSpec::parse("release.yml").unwrap().task,
            Task::Deploy
        );
        assert_eq!(
            WorkflowSpec::parse("ops.yml=scale").unwrap().task,
            Task::Scale
        );
        assert!(WorkflowSpec::parse("../x.yml").is_err());
        assert!(WorkflowSpec::parse("a.yml=ship").is_err());
        assert!(check_repo("o/r").is_ok());
        for bad in ["o", "o/r/x", "../r", "o/..", "o r/x"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
    }
}
