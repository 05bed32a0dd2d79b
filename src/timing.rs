//! Timing records for the manual-versus-automated comparison (DESIGN §9): one JSON object per
//! task run, one object per line (JSON Lines), appended to files under a records directory. This
//! module owns the record's shape, writing one, and reading a directory of them back; it must not
//! compute figures (that is [`crate::compare`]) nor decide what a command times (the command does).
//!
//! # The record
//!
//! ```json
//! {"task":"deploy","method":"automated",
//!  "started":"2026-11-30T11:26:08.120Z","finished":"2026-11-30T11:27:41.007Z",
//!  "outcome":"success","errors":{"count":0,"messages":[]},
//!  "steps":[{"name":"apply","started":"…","finished":"…"}],
//!  "source":{"command":"wms deploy --model wm --version 3"},
//!  "context":{"model":"wm","version":"3"}}
//! ```
//!
//! - `task`: [`Task`] — `deploy`, `rollback`, `scale`, `config`, `debug` (the five standard tasks),
//!   plus `promote` and `cleanup` (which `wms deploy` also does; reports list them separately).
//! - `method`: `manual` or `automated`. `outcome`: `success`, `failure` or `aborted` (a person
//!   pressed Ctrl-C, a command was interrupted).
//! - `started`/`finished` (also per step): RFC 3339 in UTC with milliseconds
//!   (`YYYY-MM-DDTHH:MM:SS.mmmZ`). The reader also takes other offsets and precisions.
//! - `errors.count` may exceed `messages.len()` (a tool counted errors it did not describe).
//! - `source`: at least one of `command` (the command line that ran), `run_url` (the GitHub
//!   Actions run; also the key that stops `wms compare collect` from collecting a run twice) and
//!   `person`.
//! - `human_seconds` (optional): time a person spent on the task. When absent, a manual record
//!   counts its whole duration and an automated one counts 0 (see docs/COMPARISON.md).
//! - `context` (optional): free-form strings such as model, version, namespace.
//!
//! # Where records go
//!
//! [`records_dir`]: `$WMS_TIMING_DIR` when set and non-empty, else `comparison/records/` at the
//! top of the git work tree that contains the current directory, else `comparison/records/` under
//! the current directory. [`append`] writes to `<dir>/<method>.jsonl` (`manual.jsonl`,
//! `automated.jsonl`), creating the directory; [`read_dir`] reads every `*.jsonl` in the directory.
//!
//! # Writing one from a command
//!
//! ```no_run
//! use wms::timing::{Method, Outcome, Recorder, Source, Task};
//!
//! let mut rec = Recorder::start(Task::Deploy, Method::Automated, Source::command("wms deploy …"));
//! rec.context("model", "wm");
//! rec.begin_step("apply");          // a step that runs until the next begin_step/end_step
//! // … apply …
//! rec.begin_step("rollout");        // closes "apply" now, opens "rollout"
//! // … wait …
//! rec.error("rollout did not finish in 300 s");
//! let record = rec.finish(Outcome::Failure); // closes an open step
//! match wms::timing::append_default(&record) {
//!     Ok(path) => tracing::debug!(path = %path.display(), "timing record written"),
//!     // A timing record is a by-product: warn, never fail the task because of it.
//!     Err(e) => tracing::warn!("{e:#}"),
//! }
//! ```
//!
//! [`Recorder::mark`] is the other style, for checkpoints: a step that ends now and began at the
//! previous mark (or at the start). The interactive tracker uses it.
//!
//! # Appending
//!
//! Each record is serialised to one line and written with one `write` call on a file opened with
//! `O_APPEND`, so records from concurrent writers on a local file system do not interleave, and a
//! crash leaves at most one torn last line, which the reader skips and names.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::env_vars;

/// Records directory under a repository (and the default when `WMS_TIMING_DIR` is unset).
pub const DEFAULT_RELATIVE_DIR: &str = "comparison/records";
/// A line longer than this is skipped as broken rather than parsed (hostile or torn files).
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Messages kept per record; more are counted in `errors.count` but not stored.
pub const MAX_ERROR_MESSAGES: usize = 100;
/// Characters kept per error message.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// Which task a record times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Deploy,
    Rollback,
    Scale,
    Config,
    Debug,
    Promote,
    Cleanup,
}

impl Task {
    pub const ALL: [Task; 7] = [
        Task::Deploy,
        Task::Rollback,
        Task::Scale,
        Task::Config,
        Task::Debug,
        Task::Promote,
        Task::Cleanup,
    ];
    /// The five standard tasks of the comparison (the seed's phase 7).
    pub const STANDARD: [Task; 5] = [
        Task::Deploy,
        Task::Rollback,
        Task::Scale,
        Task::Config,
        Task::Debug,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Deploy => "deploy",
            Task::Rollback => "rollback",
            Task::Scale => "scale",
            Task::Config => "config",
            Task::Debug => "debug",
            Task::Promote => "promote",
            Task::Cleanup => "cleanup",
        }
    }
}

/// Who did the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Manual,
    Automated,
}

impl Method {
    pub const ALL: [Method; 2] = [Method::Manual, Method::Automated];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Manual => "manual",
            Method::Automated => "automated",
        }
    }
}

/// How the task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Aborted,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Success, Outcome::Failure, Outcome::Aborted];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Aborted => "aborted",
        }
    }
}

macro_rules! str_enum {
    ($ty:ty, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$ty>::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        let names: Vec<&str> = <$ty>::ALL.iter().map(|v| v.as_str()).collect();
                        format!(
                            "unknown {} {:?}; hint: use one of {}",
                            $what,
                            s,
                            names.join(", ")
                        )
                    })
            }
        }
    };
}

str_enum!(Task, "task");
str_enum!(Method, "method");
str_enum!(Outcome, "outcome");

/// A point in time, kept as milliseconds since the Unix epoch and written as RFC 3339 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }

    pub fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// Seconds from `self` to `later` (negative when `later` is earlier).
    pub fn seconds_until(self, later: Timestamp) -> f64 {
        (later.0 - self.0) as f64 / 1000.0
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`. Times before 1970 are written as the epoch (records never
    /// hold them; the reader refuses them).
    pub fn rfc3339(self) -> String {
        crate::calendar::rfc3339_millis(self.0.max(0) as u64)
    }

    /// Parses RFC 3339 (`2026-11-30T11:26:08Z`, `…08.5+01:00`, lower-case `t`/`z` too); digits
    /// beyond milliseconds are truncated. Years 1970..=9999 only.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?} is not an RFC 3339 time ({why})");
        let b = s.as_bytes();
        if b.len() < 20 || !s.is_ascii() {
            return Err(bad("expected YYYY-MM-DDTHH:MM:SSZ"));
        }
        let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
            let part = &s[range];
            if part.bytes().all(|c| c.is_ascii_digit()) {
                Ok(part.parse::<i64>().unwrap_or(0))
            } else {
                Err(bad("expected digits"))
            }
        };
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
        }
        if b[13] != b':' || b[16] != b':' {
            return Err(bad("expected HH:MM:SS"));
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if year < 1970 || !(1..=12).contains(&month) || day < 1 || day > days_in(year, month) {
            return Err(bad("no such date"));
        }
        // 60 is a leap second; Unix time folds it into the next minute's first second.
        if hour > 23 || minute > 59 || second > 60 {
            return Err(bad("no such time of day"));
        }
        let mut i = 19;
        let mut millis = 0i64;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    millis = millis * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return Err(bad("empty fraction"));
            }
            for _ in (i - start)..3 {
                millis *= 10;
            }
        }
        let offset_minutes = match &s[i..] {
            "Z" | "z" => 0,
            tz if tz.len() == 6 && matches!(tz.as_bytes()[0], b'+' | b'-') && &tz[3..4] == ":" => {
                let h = num(i + 1..i + 3)?;
                let m = num(i + 4..i + 6)?;
                if h > 23 || m > 59 {
                    return Err(bad("bad offset"));
                }
                let sign = if tz.starts_with('-') { -1 } else { 1 };
                sign * (h * 60 + m)
            }
            _ => return Err(bad("expected Z or ±HH:MM at the end")),
        };
        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
        if seconds < 0 {
            return Err(bad("before 1970"));
        }
        Ok(Timestamp(seconds * 1000 + millis))
    }
}

fn days_in(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Proleptic Gregorian (year, month, day) → days since 1970-01-01; the inverse of
/// [`crate::calendar::civil_from_days`] (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Errors met while doing the task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    pub count: u32,
    #[serde(default)]
    pub messages: Vec<String>,
}

/// One timed step of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub started: Timestamp,
    pub finished: Timestamp,
}

impl Step {
    pub fn seconds(&self) -> f64 {
        self.started.seconds_until(self.finished)
    }
}

/// Where a record came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The command line that did (or recorded) the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The GitHub Actions run (`<server>/<owner>/<repo>/actions/runs/<id>[/attempts/<n>]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
    /// The person who did a manual task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

impl Source {
    pub fn command(command: impl Into<String>) -> Self {
        Source {
            command: Some(command.into()),
            ..Source::default()
        }
    }

    pub fn run_url(url: impl Into<String>) -> Self {
        Source {
            run_url: Some(url.into()),
            ..Source::default()
        }
    }

    pub fn person(person: impl Into<String>) -> Self {
        Source {
            person: Some(person.into()),
            ..Source::default()
        }
    }

    /// The source of the current process: its command line, plus the Actions run URL when the
    /// runner's variables are set.
    pub fn this_process() -> Self {
        let command = std::env::args()
            .map(|a| {
                if a.is_empty() || a.contains(char::is_whitespace) {
                    format!("{a:?}")
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        Source {
            command: Some(crate::untrusted::redact::text(&command).into_owned()),
            run_url: actions_run_url(),
            person: None,
        }
    }
}

/// `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID` when all three are set.
pub fn actions_run_url() -> Option<String> {
    let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
    let server = var(env_vars::GITHUB_SERVER_URL)?;
    let repo = var(env_vars::GITHUB_REPOSITORY)?;
    let id = var(env_vars::GITHUB_RUN_ID)?;
    Some(format!(
        "{}/{repo}/actions/runs/{id}",
        server.trim_end_matches('/')
    ))
}

/// One task run (DESIGN §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingRecord {
    pub task: Task,
    pub method: Method,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub outcome: Outcome,
    #[serde(default)]
    pub errors: Errors,
    #[serde(default)]
    pub steps: Vec<Step>,
    pub source: Source,
    /// Seconds a person spent; absent: see [`TimingRecord::human_seconds`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "human_seconds"
    )]
    pub human_seconds_recorded: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
}

impl TimingRecord {
    /// Wall-clock seconds from start to finish.
    pub fn seconds(&self) -> f64 {
        self.started.seconds_until(self.finished)
    }

    /// Time a person spent: the recorded `human_seconds`, else the whole duration for a manual
    /// record and 0 for an automated one.
    pub fn human_seconds(&self) -> f64 {
        match (self.human_seconds_recorded, self.method) {
            (Some(s), _) => s,
            (None, Method::Manual) => self.seconds(),
            (None, Method::Automated) => 0.0,
        }
    }

    /// What makes a record unusable for figures; the reader skips such lines and names them.
    pub fn check(&self) -> Result<(), String> {
        if self.finished < self.started {
            return Err(format!(
                "finished ({}) is before started ({})",
                self.finished, self.started
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            if step.finished < step.started {
                return Err(format!(
                    "step {} ({:?}) finishes before it starts",
                    i + 1,
                    step.name
                ));
            }
        }
        if (self.errors.count as usize) < self.errors.messages.len() {
            return Err(format!(
                "errors.count is {} but {} messages are listed",
                self.errors.count,
                self.errors.messages.len()
            ));
        }
        if let Some(h) = self.human_seconds_recorded
            && !(h.is_finite() && h >= 0.0)
        {
            return Err(format!("human_seconds must be ≥ 0, not {h}"));
        }
        if self.source.command.is_none()
            && self.source.run_url.is_none()
            && self.source.person.is_none()
        {
            return Err("source names no command, run_url or person".into());
        }
        Ok(())
    }

    /// The record as one JSON line (with the trailing newline).
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a timing record serialises");
        line.push('\n');
        line
    }
}

/// Builds a [`TimingRecord`] while a task runs. See the module docs for an example.
#[derive(Debug, Clone)]
pub struct Recorder {
    record: TimingRecord,
    open_step: Option<(String, Timestamp)>,
    last_mark: Timestamp,
}

impl Recorder {
    /// Starts timing now.
    pub fn start(task: Task, method: Method, source: Source) -> Self {
        Self::start_at(task, method, source, Timestamp::now())
    }

    /// Starts timing at a given time (tests, records rebuilt from elsewhere).
    pub fn start_at(task: Task, method: Method, source: Source, at: Timestamp) -> Self {
        Recorder {
            record: TimingRecord {
                task,
                method,
                started: at,
                finished: at,
                outcome: Outcome::Aborted,
                errors: Errors::default(),
                steps: Vec::new(),
                source,
                human_seconds_recorded: None,
                context: BTreeMap::new(),
            },
            open_step: None,
            last_mark: at,
        }
    }

    pub fn task(&self) -> Task {
        self.record.task
    }

    pub fn started(&self) -> Timestamp {
        self.record.started
    }

    /// The steps closed so far.
    pub fn steps(&self) -> &[Step] {
        &self.record.steps
    }

    /// Adds a `context` entry (model, version, namespace, …).
    pub fn context(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.record.context.insert(key.into(), value.into());
    }

    /// Sets the time a person spent (overrides the default of [`TimingRecord::human_seconds`]).
    pub fn human_seconds(&mut self, seconds: f64) {
        self.record.human_seconds_recorded = Some(seconds.max(0.0));
    }

    /// Opens a step now, closing the open one (if any) now.
    pub fn begin_step(&mut self, name: impl Into<String>) {
        self.begin_step_at(name, Timestamp::now());
    }

    pub fn begin_step_at(&mut self, name: impl Into<String>, at: Timestamp) {
        self.end_step_at(at);
        self.open_step = Some((name.into(), at));
    }

    /// Closes the open step now (no-op when none is open).
    pub fn end_step(&mut self) {
        self.end_step_at(Timestamp::now());
    }

    pub fn end_step_at(&mut self, at: Timestamp) {
        if let Some((name, started)) = self.open_step.take() {
            self.push_step(name, started, at);
        }
    }

    /// A checkpoint: a step named `name` that began at the previous mark (or the start, or the
    /// end of the last closed step, whichever is latest) and ends now.
    pub fn mark(&mut self, name: impl Into<String>) {
        self.mark_at(name, Timestamp::now());
    }

    pub fn mark_at(&mut self, name: impl Into<String>, at: Timestamp) {
        self.end_step_at(at);
        let started = self.last_mark.min(at);
        self.push_step(name.into(), started, at);
    }

    fn push_step(&mut self, name: String, started: Timestamp, finished: Timestamp) {
        let finished = finished.max(started);
        self.record.steps.push(Step {
            name,
            started,
            finished,
        });
        self.last_mark = self.last_mark.max(finished);
    }

    /// Counts an error and keeps its message (bounded, see [`MAX_ERROR_MESSAGES`]).
    pub fn error(&mut self, message: impl Into<String>) {
        self.record.errors.count = self.record.errors.count.saturating_add(1);
        if self.record.errors.messages.len() < MAX_ERROR_MESSAGES {
            let message: String = message.into();
            self.record
                .errors
                .messages
                .push(message.chars().take(MAX_MESSAGE_CHARS).collect());
        }
    }

    /// Counts errors that have no message.
    pub fn count_errors(&mut self, n: u32) {
        self.record.errors.count = self.record.errors.count.saturating_add(n);
    }

    /// The record as it would be if the task ended now with `outcome` (the recorder stays usable;
    /// the interactive tracker uses this to save on Ctrl-C).
    pub fn snapshot(&self, outcome: Outcome) -> TimingRecord {
        self.clone().finish(outcome)
    }

    /// Ends the task now: closes an open step and returns the record.
    pub fn finish(self, outcome: Outcome) -> TimingRecord {
        self.finish_at(outcome, Timestamp::now())
    }

    pub fn finish_at(mut self, outcome: Outcome, at: Timestamp) -> TimingRecord {
        let at = at.max(self.record.started);
        self.end_step_at(at);
        self.record.finished = at.max(self.last_mark);
        self.record.outcome = outcome;
        self.record
    }
}

/// Errors writing or reading records; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    #[error(
        "cannot create the timing records directory {path}; hint: set {var} to a writable directory",
        var = env_vars::WMS_TIMING_DIR
    )]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot append a timing record to {path}; hint: check that the file is writable, or set {var} to another directory",
        var = env_vars::WMS_TIMING_DIR
    )]
    Append {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to write an inconsistent timing record: {message}; hint: this is a bug in the command that timed the task"
    )]
    Invalid { message: String },
    #[error("cannot read timing records from {path}; hint: check that it exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The records directory: see the module docs.
pub fn records_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(env_vars::WMS_TIMING_DIR).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    work_tree_root().join(DEFAULT_RELATIVE_DIR)
}

/// The top of the git work tree containing the current directory (the nearest ancestor with a
/// `.git`), else the current directory.
pub fn work_tree_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
        .unwrap_or(cwd)
}

/// The file [`append`] writes a record of `method` to.
pub fn file_for(dir: &Path, method: Method) -> PathBuf {
    dir.join(format!("{}.jsonl", method.as_str()))
}

/// Appends `record` to `<dir>/<method>.jsonl` (see the module docs) and returns that path.
pub fn append(dir: &Path, record: &TimingRecord) -> Result<PathBuf, TimingError> {
    record
        .check()
        .map_err(|message| TimingError::Invalid { message })?;
    let path = file_for(dir, record.method);
    append_lines(&path, &record.to_line())?;
    Ok(path)
}

/// [`append`] to [`records_dir`].
pub fn append_default(record: &TimingRecord) -> Result<PathBuf, TimingError> {
    append(&records_dir(), record)
}

/// Appends already-serialised lines with one `write` (O_APPEND). If the file does not end in a
/// newline (a torn last line), a newline goes first so the new record starts a line of its own.
pub fn append_lines(path: &Path, lines: &str) -> Result<(), TimingError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir).map_err(|e| TimingError::CreateDir {
            path: dir.to_path_buf(),
            source: strip_path(e),
        })?;
    }
    let err = |e: std::io::Error| TimingError::Append {
        path: path.to_path_buf(),
        source: strip_path(e),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(err)?;
    let mut buf = String::with_capacity(lines.len() + 1);
    if !ends_with_newline(&mut file).map_err(err)? {
        buf.push('\n');
    }
    buf.push_str(lines);
    file.write_all(buf.as_bytes()).map_err(err)?;
    file.sync_data().map_err(err)
}

fn ends_with_newline(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// fs_err wraps the io::Error with the path in its message; our variants name the path already.
fn strip_path(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.kind().to_string())
}

/// Where a record was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadWarning {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ReadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: skipped a broken timing record: {}",
            self.path.display(),
            self.line,
            crate::untrusted::text::for_log(&self.message)
        )
    }
}

/// Records read from files, with the lines that were skipped.
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub records: Vec<(Origin, TimingRecord)>,
    pub warnings: Vec<ReadWarning>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

impl Records {
    /// Only the records.
    pub fn iter(&self) -> impl Iterator<Item = &TimingRecord> {
        self.records.iter().map(|(_, r)| r)
    }
}

/// Reads every `*.jsonl` file in `dir` (sorted by name; not recursive). A missing directory is
/// no records, not an error: a fresh repository has none yet.
pub fn read_dir(dir: &Path) -> Result<Records, TimingError> {
    let mut out = Records::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(TimingError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| TimingError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && path.extension().is_some_and(|e| e == "jsonl") {
            files.push(path);
        }
    }
    files.sort();
    for path in files {
        read_file_into(&path, &mut out)?;
    }
    Ok(out)
}

/// Reads one JSON Lines file.
pub fn read_file(path: &Path) -> Result<Records, TimingError> {
    let mut out = Records::default();
    read_file_into(path, &mut out)?;
    Ok(out)
}

fn read_file_into(path: &Path, out: &mut Records) -> Result<(), TimingError> {
    let bytes = std::fs::read(path).map_err(|source| TimingError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    out.files.push(path.to_path_buf());
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let warn = |message: String| ReadWarning {
            path: path.to_path_buf(),
            line,
            message,
        };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if raw.len() > MAX_LINE_BYTES {
            out.warnings.push(warn(format!(
                "line is {} bytes, more than the {MAX_LINE_BYTES} a record may have",
                raw.len()
            )));
            continue;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            out.warnings.push(warn("not UTF-8".into()));
            continue;
        };
        match serde_json::from_str::<TimingRecord>(text) {
            Ok(record) => match record.check() {
                Ok(()) => out.records.push((
                    Origin {
                        path: path.to_path_buf(),
                        line,
                    },
                    record,
                )),
                Err(message) => out.warnings.push(warn(message)),
            },
            Err(e) => out.warnings.push(warn(e.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn rfc3339_round_trips_and_takes_offsets() {
        let a = t("2026-11-30T11:26:08.120Z");
        assert_eq!(a.rfc3339(), "2026-11-30T11:26:08.120Z");
        assert_eq!(t("2026-11-30T12:26:08.12+01:00"), a);
        assert_eq!(t("2026-11-30t11:26:08.1209z"), a);
        assert_eq!(t("1970-01-01T00:00:00Z").unix_millis(), 0);
        assert_eq!(
            t("2024-02-29T00:00:00Z").rfc3339(),
            "2024-02-29T00:00:00.000Z"
        );
        for bad in [
            "2026-11-30",
            "2026-02-30T00:00:00Z",
            "2026-11-30T24:00:00Z",
            "2026-11-30T11:26:08",
            "2026-11-30T11:26:08.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-30T11:26:08+1:00",
            "２０２６-11-30T11:26:08Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_calendar_inverse_agrees_with_civil_from_days() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = crate::calendar::civil_from_days(days);
            assert_eq!(days_from_civil(y, m as i64, d as i64), days);
        }
    }

    #[test]
    fn recorder_marks_and_steps() {
        let t0 = Timestamp::from_unix_millis(1_000_000);
        let at = |s: i64| Timestamp::from_unix_millis(1_000_000 + s * 1000);
        let mut rec = Recorder::start_at(Task::Deploy, Method::Manual, Source::person("ann"), t0);
        rec.mark_at("build", at(5));
        rec.mark_at("push", at(9));
        rec.begin_step_at("wait", at(10));
        rec.error("timeout");
        let r = rec.finish_at(Outcome::Failure, at(15));
        let spans: Vec<_> = r
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.seconds()))
            .collect();
        assert_eq!(spans, [("build", 5.0), ("push", 4.0), ("wait", 5.0)]);
        assert_eq!(r.seconds(), 15.0);
        assert_eq!(r.human_seconds(), 15.0);
        assert_eq!(r.errors.count, 1);
        r.check().unwrap();
    }

    #[test]
    fn append_then_read_skips_and_names_broken_lines() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::start(Task::Scale, Method::Automated, Source::command("wms x"))
            .finish(Outcome::Success);
        let path = append(dir.path(), &rec).unwrap();
        // A torn line without its newline: the next append must start a fresh line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"task\":\"sca").unwrap();
        append(dir.path(), &rec).unwrap();
        let read = read_dir(dir.path()).unwrap();
        assert_eq!(read.records.len(), 2);
        assert_eq!(read.records[1].0.line, 3);
        assert_eq!(read.warnings.len(), 1);
        assert_eq!(read.warnings[0].line, 2);
        assert_eq!(read.records[0].1, rec);
        assert_eq!(read.iter().next().unwrap().human_seconds(), 0.0);
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let mut rec = Recorder::start(Task::Debug, Method::Manual, Source::person("bo"))
            .finish(Outcome::Success);
        rec.finished = Timestamp::from_unix_millis(rec.started.unix_millis() - 1);
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            append(dir.path(), &rec),
            Err(TimingError::Invalid { .. })
        ));
        assert!(!file_for(dir.path(), Method::Manual).exists());
    }
}
