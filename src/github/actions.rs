//! GitHub Actions I/O, in one place: inputs (`INPUT_*`), step outputs (`$GITHUB_OUTPUT`), the job
//! summary (`$GITHUB_STEP_SUMMARY`), exported env (`$GITHUB_ENV`), annotations, log groups and
//! secret masking. Outside Actions (`GITHUB_ACTIONS` unset) the same events are printed for a
//! person: coloured messages and progress bars. Nothing else in wms writes workflow commands.
//!
//! File-command format facts come from the runner's documentation ("Workflow commands for GitHub
//! Actions"): single-line `name=value`, multi-line `name<<DELIM` … `DELIM`.
//!
//! Every annotation and group title passes through [`crate::untrusted`] here, whoever built it:
//! URLs lose their userinfo and control characters are quoted, so a file or branch name inside a
//! message can neither start a line of its own (a `::command::` for the runner) nor show a token.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env_vars;
use crate::untrusted::redact;
use crate::untrusted::text::for_log;

/// Errors from writing runner files.
#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    #[error("cannot append to {path} (from ${var})")]
    Append {
        var: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid output name {0:?}: names must be non-empty and contain no '=', '<<' or newline"
    )]
    BadName(String),
    #[error("{path}: line {line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
}

/// Where a message points in the user's repository (`::error file=…,line=…::`).
#[derive(Debug, Default, Clone)]
pub struct Location {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub col: Option<u32>,
    pub title: Option<String>,
}

impl Location {
    pub fn file(file: impl Into<String>) -> Self {
        Location {
            file: Some(file.into()),
            ..Location::default()
        }
    }

    pub fn at_line(mut self, line: u32) -> Self {
        self.line = Some(line);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Error,
    Warning,
    Notice,
}

/// The runner (or a terminal, when not in Actions).
#[derive(Debug, Clone)]
pub struct Actions {
    in_actions: bool,
    output_file: Option<PathBuf>,
    summary_file: Option<PathBuf>,
    env_file: Option<PathBuf>,
}

impl Actions {
    /// Reads `GITHUB_ACTIONS`, `GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY`, `GITHUB_ENV`.
    pub fn from_env() -> Self {
        let path = |var| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Actions {
            in_actions: std::env::var(env_vars::GITHUB_ACTIONS).is_ok_and(|v| v == "true"),
            output_file: path(env_vars::GITHUB_OUTPUT),
            summary_file: path(env_vars::GITHUB_STEP_SUMMARY),
            env_file: path(env_vars::GITHUB_ENV),
        }
    }

    /// An explicit configuration, for tests and for callers that redirect the files.
    pub fn with_files(
        in_actions: bool,
        output: Option<PathBuf>,
        summary: Option<PathBuf>,
        env: Option<PathBuf>,
    ) -> Self {
        Actions {
            in_actions,
            output_file: output,
            summary_file: summary,
            env_file: env,
        }
    }

    pub fn in_actions(&self) -> bool {
        self.in_actions
    }

    /// The action input `name` from `INPUT_<NAME>`; empty values count as unset (as in @actions/core).
    pub fn input(&self, name: &str) -> Option<String> {
        input(name)
    }

    /// Appends a step output. Multi-line values use a random heredoc delimiter.
    pub fn set_output(&self, name: &str, value: &str) -> Result<(), ActionsError> {
        tracing::debug!(output = name, value, "step output");
        match &self.output_file {
            Some(path) => append_key_value(env_vars::GITHUB_OUTPUT, path, name, value),
            None => Ok(()),
        }
    }

    /// Exports `name=value` to the environment of later steps.
    pub fn export_env(&self, name: &str, value: &str) -> Result<(), ActionsError> {
        match &self.env_file {
            Some(path) => append_key_value(env_vars::GITHUB_ENV, path, name, value),
            None => Ok(()),
        }
    }

    /// Appends Markdown to the job summary; outside Actions there is nowhere to put it (callers
    /// print their own human report), so it is dropped.
    pub fn append_summary(&self, markdown: &str) -> Result<(), ActionsError> {
        let Some(path) = &self.summary_file else {
            return Ok(());
        };
        let mut text = markdown.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        append(env_vars::GITHUB_STEP_SUMMARY, path, &text)
    }

    /// Tells the runner to hide `secret` in every later log line. Call it for every secret wms
    /// handles (tokens, credentials) before anything could print it.
    pub fn add_mask(&self, secret: &str) {
        if self.in_actions && !secret.is_empty() {
            for line in secret.lines().filter(|l| !l.is_empty()) {
                println!("::add-mask::{}", escape_data(line));
            }
        }
    }

    pub fn error(&self, message: &str, at: &Location) {
        self.annotate(Level::Error, message, at);
    }

    pub fn warning(&self, message: &str, at: &Location) {
        self.annotate(Level::Warning, message, at);
    }

    pub fn notice(&self, message: &str, at: &Location) {
        self.annotate(Level::Notice, message, at);
    }

    fn annotate(&self, level: Level, message: &str, at: &Location) {
        let message = shown(message);
        if self.in_actions {
            println!("{}", workflow_command(level, &message, at));
            return;
        }
        let (word, style) = match level {
            Level::Error => ("error", console::Style::new().red().bold()),
            Level::Warning => ("warning", console::Style::new().yellow().bold()),
            Level::Notice => ("note", console::Style::new().cyan().bold()),
        };
        let place = match (at.file.as_deref().map(shown), at.line) {
            (Some(f), Some(l)) => format!("{f}:{l}: "),
            (Some(f), None) => format!("{f}: "),
            _ => String::new(),
        };
        eprintln!(
            "{}: {place}{message}",
            console::Term::stderr()
                .style()
                .apply_to(style.apply_to(word))
        );
    }

    /// Opens a collapsible log group; it closes when the guard drops.
    pub fn group(&self, title: &str) -> Group {
        let title = shown(title);
        if self.in_actions {
            println!("::group::{}", escape_data(&title));
        } else {
            eprintln!("{}", console::style(format!("── {title}")).bold());
        }
        Group {
            in_actions: self.in_actions,
        }
    }

    /// A progress bar for work longer than a couple of seconds. In Actions the bar is hidden
    /// (the log is not a terminal); callers log milestones instead.
    pub fn progress(&self, len: u64, message: &str) -> indicatif::ProgressBar {
        if self.in_actions || !console::Term::stderr().is_term() {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len);
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// Guard returned by [`Actions::group`].
#[must_use = "the group ends when this guard drops"]
pub struct Group {
    in_actions: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.in_actions {
            println!("::endgroup::");
        }
    }
}

/// The action input `name` from `INPUT_<NAME>` (upper-cased, spaces → `_`); empty is unset.
pub fn input(name: &str) -> Option<String> {
    let var = format!(
        "{}{}",
        env_vars::INPUT_PREFIX,
        name.replace(' ', "_").to_uppercase()
    );
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The one reading of a boolean action input (`name` is the input, for the error): `true`,
/// `false` (what a `type: boolean` input passes), also `1`/`0` and `yes`/`no`, in any case.
/// Anything else is a usage error rather than a silent `false`.
pub fn bool_input(name: &str, value: &str) -> Result<bool, crate::exit::UsageError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(crate::exit::UsageError::new(format!(
            "action input `{name}` is {:?}; hint: use true or false",
            for_log(value)
        ))),
    }
}

/// A boolean flag, else its action input `name` (unset = false): a flag can only turn it on.
pub fn flag_or_input(
    flag: bool,
    name: &str,
    input: impl Fn(&str) -> Option<String>,
) -> Result<bool, crate::exit::UsageError> {
    match input(name) {
        _ if flag => Ok(true),
        None => Ok(false),
        Some(v) => bool_input(name, &v),
    }
}

/// `s` as a log line may show it: credentials out of URLs, control characters quoted.
fn shown(s: &str) -> String {
    for_log(&redact::text(s)).into_owned()
}

/// Escapes a workflow-command message (`%`, CR, LF), as the runner unescapes them.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow-command property value (additionally `:` and `,`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn workflow_command(level: Level, message: &str, at: &Location) -> String {
    let name = match level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Notice => "notice",
    };
    let mut props = Vec::new();
    if let Some(t) = &at.title {
        props.push(format!("title={}", escape_property(t)));
    }
    if let Some(f) = &at.file {
        props.push(format!("file={}", escape_property(f)));
    }
    if let Some(l) = at.line {
        props.push(format!("line={l}"));
    }
    if let Some(c) = at.col {
        props.push(format!("col={c}"));
    }
    let props = if props.is_empty() {
        String::new()
    } else {
        format!(" {}", props.join(","))
    };
    format!("::{name}{props}::{}", escape_data(message))
}

fn append_key_value(
    var: &'static str,
    path: &Path,
    name: &str,
    value: &str,
) -> Result<(), ActionsError> {
    if name.is_empty() || name.contains('=') || name.contains("<<") || name.contains('\n') {
        return Err(ActionsError::BadName(name.to_string()));
    }
    let text = if value.contains('\n') || value.contains('\r') {
        let delimiter = loop {
            let d = format!("ghadelimiter_{:032x}", rand::random::<u128>());
            if !value.contains(&d) {
                break d;
            }
        };
        format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
    } else {
        format!("{name}={value}\n")
    };
    append(var, path, &text)
}

fn append(var: &'static str, path: &Path, text: &str) -> Result<(), ActionsError> {
    let err = |source| ActionsError::Append {
        var,
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// Parses a `$GITHUB_OUTPUT` / `$GITHUB_ENV` file the way the Actions runner does: per line,
/// `key=value` when `=` comes before any `<<`, otherwise a heredoc `key<<DELIM` whose value is the
/// following lines up to a line equal to `DELIM`. Used by tests (and `wms` self-checks) to read
/// back what we wrote exactly as the runner would.
pub fn parse_file_command(
    path_label: &str,
    text: &str,
) -> Result<Vec<(String, String)>, ActionsError> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    let parse_err = |line: usize, message: String| ActionsError::Parse {
        path: path_label.to_string(),
        line,
        message,
    };
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let key = &line[..e];
                if key.is_empty() {
                    return Err(parse_err(i, "empty key".into()));
                }
                out.push((key.to_string(), line[e + 1..].to_string()));
            }
            (_, Some(h)) => {
                let key = &line[..h];
                let delimiter = &line[h + 2..];
                if key.is_empty() || delimiter.is_empty() {
                    return Err(parse_err(i, "heredoc needs a key and a delimiter".into()));
                }
                let start = i;
                let mut value = Vec::new();
                loop {
                    if i >= lines.len() {
                        return Err(parse_err(
                            start,
                            format!("no closing delimiter {delimiter:?}"),
                        ));
                    }
                    let l = lines[i];
                    i += 1;
                    if l == delimiter {
                        break;
                    }
                    value.push(l);
                }
                out.push((key.to_string(), value.join("\n")));
            }
            _ => {
                return Err(parse_err(
                    i,
                    format!("not key=value or key<<DELIM: {line:?}"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reading_of_boolean_inputs() {
        for (v, want) in [("true", true), ("TRUE", true), ("1", true), ("yes", true)] {
            assert_eq!(bool_input("push", v).unwrap(), want, "{v}");
        }
        for v in ["false", "False", "0", "no", " no "] {
            assert!(!bool_input("push", v).unwrap(), "{v}");
        }
        let e = bool_input("push", "ture").unwrap_err();
        assert!(
            e.message.contains("`push`") && e.message.contains("hint:"),
            "{e}"
        );
        let none = |_: &str| None;
        let off = |_: &str| Some("false".to_string());
        assert!(!flag_or_input(false, "push", none).unwrap());
        assert!(flag_or_input(true, "push", off).unwrap());
        assert!(!flag_or_input(false, "push", off).unwrap());
    }

    fn actions_with_output(dir: &Path) -> (Actions, PathBuf) {
        let out = dir.join("github_output");
        let summary = dir.join("summary.md");
        (
            Actions::with_files(true, Some(out.clone()), Some(summary), None),
            out,
        )
    }

    #[test]
    fn outputs_round_trip_through_the_runner_parser() {
        let dir = tempfile::tempdir().unwrap();
        let (gh, out) = actions_with_output(dir.path());
        let table = "| metric | value |\n|---|---|\n| test_iou | 0.91 |";
        gh.set_output("should_train", "true").unwrap();
        gh.set_output("table", table).unwrap();
        gh.set_output("tricky", "a=b<<c").unwrap();
        gh.set_output("empty", "").unwrap();
        gh.set_output("trailing", "line one\n").unwrap();
        let text = fs_err::read_to_string(&out).unwrap();
        let parsed = parse_file_command("GITHUB_OUTPUT", &text).unwrap();
        let expect = [
            ("should_train", "true"),
            ("table", table),
            ("tricky", "a=b<<c"),
            ("empty", ""),
            ("trailing", "line one\n"),
        ];
        assert_eq!(parsed.len(), expect.len(), "{text}");
        for ((k, v), (ek, ev)) in parsed.iter().zip(expect) {
            assert_eq!((k.as_str(), v.as_str()), (ek, ev));
        }
        // The heredoc delimiter is random, not a fixed word a value could contain.
        assert!(text.contains("table<<ghadelimiter_"), "{text}");
    }

    #[test]
    fn a_value_containing_a_delimiter_like_line_cannot_end_the_block_early() {
        let dir = tempfile::tempdir().unwrap();
        let (gh, out) = actions_with_output(dir.path());
        let value = "EOF\nghadelimiter_\nx=y";
        gh.set_output("v", value).unwrap();
        let parsed = parse_file_command("o", &fs_err::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(parsed, vec![("v".to_string(), value.to_string())]);
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (gh, _) = actions_with_output(dir.path());
        assert!(matches!(
            gh.set_output("a=b", "1"),
            Err(ActionsError::BadName(_))
        ));
        assert!(matches!(
            gh.set_output("", "1"),
            Err(ActionsError::BadName(_))
        ));
    }

    #[test]
    fn unterminated_heredoc_is_a_parse_error() {
        let err = parse_file_command("o", "k<<EOF\nvalue\n").unwrap_err();
        assert!(err.to_string().contains("no closing delimiter"), "{err}");
    }

    #[test]
    fn summary_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join("s.md");
        let gh = Actions::with_files(true, None, Some(summary.clone()), None);
        gh.append_summary("# one").unwrap();
        gh.append_summary("two\n").unwrap();
        assert_eq!(fs_err::read_to_string(summary).unwrap(), "# one\ntwo\n");
    }

    #[test]
    fn messages_lose_credentials_and_control_characters() {
        assert_eq!(
            shown("fetch https://x-access-token:ghs_1@github.com/o/r failed\n::warning::pwned"),
            "fetch https://***@github.com/o/r failed\\n::warning::pwned"
        );
        assert_eq!(shown("::add-mask::x"), "\\u{3a}:add-mask::x");
    }

    #[test]
    fn annotations_escape_properties_and_data() {
        let at = Location {
            file: Some("configs/a,b:c.yaml".into()),
            line: Some(7),
            col: None,
            title: None,
        };
        let cmd = workflow_command(Level::Error, "bad 100%\nvalue", &at);
        assert_eq!(
            cmd,
            "::error file=configs/a%2Cb%3Ac.yaml,line=7::bad 100%25%0Avalue"
        );
        assert_eq!(
            workflow_command(Level::Warning, "w", &Location::default()),
            "::warning::w"
        );
    }
}
