//! Change detection, the first stage of every pipeline: which commits the event brings
//! ([`range`]), which files they change ([`git`], git2 with rename detection), which named
//! filters those files match ([`filters`], [`glob`]), what changed in DVC-tracked data
//! ([`dvc_delta`]), and the resulting decisions (`should_train`, `should_deploy`,
//! `data_changed`) with one sentence of reasoning each. [`report`] renders the result for the
//! runner and for people.
//!
//! This module decides; it must not train, deploy or call GitHub's API (git is the source of
//! truth, so there is no REST file limit), and it never writes to the repository except refs and
//! objects a shallow-clone fetch brings.
//!
//! Everything it reads is untrusted (file names, `.dvc` contents, refs, filters, the remote's
//! URL): the lists in a [`Detection`] keep exact names for scripts, and its sentences
//! (`reasons`, `warnings`) are made safe to print where they are made; [`report`] escapes the
//! rest for each place it writes to.

pub mod dvc_delta;
pub mod error;
pub mod event;
pub mod filters;
pub mod git;
pub mod glob;
pub mod http;
pub mod range;
pub mod report;

use std::path::PathBuf;

use serde::Serialize;

use crate::untrusted::{redact, text};

pub use dvc_delta::DataDelta;
pub use error::ChangesError;
pub use filters::Filters;
pub use range::{ManualMode, RangeRequest};

/// How a file changed, as paths-filter and `git diff --name-status` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
    Renamed,
    Copied,
}

impl ChangeKind {
    pub fn parse(s: &str) -> Option<ChangeKind> {
        Some(match s {
            "added" => ChangeKind::Added,
            "modified" => ChangeKind::Modified,
            "deleted" => ChangeKind::Deleted,
            "renamed" => ChangeKind::Renamed,
            "copied" => ChangeKind::Copied,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Renamed => "renamed",
            ChangeKind::Copied => "copied",
        }
    }
}

/// One changed path (the new path of a rename, the old path of a deletion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    #[serde(rename = "status")]
    pub kind: ChangeKind,
}

/// Where the filters come from.
#[derive(Debug, Clone)]
pub enum FilterSource {
    /// `--filters FILE`: must exist.
    File(PathBuf),
    /// Inline YAML (the action's `filters` input may hold the rules themselves).
    Inline(String),
    /// `.github/wms-filters.yaml` in the repository when present, else the embedded defaults.
    Default,
}

/// The default filters file, relative to the repository root.
pub const DEFAULT_FILTERS_FILE: &str = ".github/wms-filters.yaml";

#[derive(Debug, Clone)]
pub struct DetectRequest {
    /// A directory inside the repository.
    pub repo: PathBuf,
    pub filters: FilterSource,
    pub range: RangeRequest,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilterResult {
    pub name: String,
    pub matched: bool,
    pub count: usize,
    pub files: Vec<String>,
}

/// Everything `detect-changes` decided, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    pub event: String,
    /// A commit sha, or git's empty tree when everything at head is new.
    pub base: String,
    pub head: String,
    /// A manual run in `always` mode.
    pub always: bool,
    pub filters_origin: String,
    pub files: Vec<FileChange>,
    pub filters: Vec<FilterResult>,
    /// Names of the filters that matched.
    pub changes: Vec<String>,
    pub data: Vec<DataDelta>,
    pub should_train: bool,
    pub should_deploy: bool,
    pub data_changed: bool,
    pub reasons: Vec<String>,
    pub warnings: Vec<String>,
}

pub const TRAIN_FILTER: &str = "train";
pub const DEPLOY_FILTER: &str = "deploy";

/// Runs the whole detection: resolve commits, diff, filter, DVC deltas, decide.
pub fn detect(req: &DetectRequest) -> Result<Detection, ChangesError> {
    let mut git = git::Git::open(&req.repo)?;
    detect_in(&mut git, req)
}

/// [`detect`] in an already opened repository (`req.repo` is then only used for messages).
pub fn detect_in(git: &mut git::Git, req: &DetectRequest) -> Result<Detection, ChangesError> {
    let root = git.workdir().unwrap_or_else(|| req.repo.clone());
    let filters = load_filters(&req.filters, &root)?;
    let range = range::resolve(git, &req.range)?;
    let files = if range.always {
        Vec::new()
    } else {
        git.diff(range.base, range.head)?
    };
    let mut warnings = range.warnings.clone();
    let data = data_deltas(git, range.base, range.head, &files, &mut warnings);
    let event = req
        .range
        .event
        .as_ref()
        .map_or_else(|| "local".to_string(), |e| e.name.clone());
    let mut reasons = vec![range.reason.clone()];
    reasons.extend(git.notes.iter().cloned());
    Ok(decide(Decide {
        event,
        range: &range,
        filters: &filters,
        files,
        data,
        reasons,
        warnings,
    }))
}

fn load_filters(source: &FilterSource, root: &std::path::Path) -> Result<Filters, ChangesError> {
    let read = |path: &PathBuf| {
        fs_err::read_to_string(path).map_err(|e| ChangesError::ReadFilters {
            path: path.clone(),
            message: e.to_string(),
        })
    };
    match source {
        FilterSource::File(path) => {
            let text = read(path)?;
            Filters::parse(&path.display().to_string(), &text)
        }
        FilterSource::Inline(yaml) => Filters::parse("(inline)", yaml),
        FilterSource::Default => {
            let path = root.join(DEFAULT_FILTERS_FILE);
            if path.is_file() {
                Filters::parse(DEFAULT_FILTERS_FILE, &read(&path)?)
            } else {
                Ok(Filters::defaults())
            }
        }
    }
}

fn data_deltas(
    git: &git::Git,
    base: Option<git2::Oid>,
    head: git2::Oid,
    files: &[FileChange],
    warnings: &mut Vec<String>,
) -> Vec<DataDelta> {
    let mut out = Vec::new();
    for f in files {
        let old_path = f.old_path.as_deref().unwrap_or(&f.path);
        if !dvc_delta::is_dvc_metafile(&f.path) && !dvc_delta::is_dvc_metafile(old_path) {
            continue;
        }
        let before = match f.kind {
            ChangeKind::Added | ChangeKind::Copied => None,
            _ => git.read_at(base, old_path),
        };
        let after = match f.kind {
            ChangeKind::Deleted => None,
            _ => git.read_at(Some(head), &f.path),
        };
        match dvc_delta::deltas(old_path, before.as_deref(), &f.path, after.as_deref()) {
            Ok(d) => out.extend(d),
            Err(e) => {
                // An unreadable metafile still changed: assume its data did, and say so.
                warnings.push(format!("{e}; assuming its data changed"));
                out.push(DataDelta {
                    source: f.path.clone(),
                    stage: None,
                    output: f.path.clone(),
                    kind: dvc_delta::DeltaKind::Modified,
                    before: None,
                    after: None,
                    description: format!("{}: could not be parsed ({})", f.path, e.message),
                });
            }
        }
    }
    out
}

struct Decide<'a> {
    event: String,
    range: &'a range::Range,
    filters: &'a Filters,
    files: Vec<FileChange>,
    data: Vec<DataDelta>,
    reasons: Vec<String>,
    warnings: Vec<String>,
}

fn decide(d: Decide<'_>) -> Detection {
    let Decide {
        event,
        range,
        filters,
        files,
        data,
        mut reasons,
        warnings,
    } = d;
    let results: Vec<FilterResult> = filters
        .evaluate(&files)
        .into_iter()
        .map(|(f, hits)| FilterResult {
            name: f.name.clone(),
            matched: range.always || !hits.is_empty(),
            count: hits.len(),
            files: hits.iter().map(|&i| files[i].path.clone()).collect(),
        })
        .collect();
    let find = |name: &str| results.iter().find(|r| r.name == name);
    let changes: Vec<String> = results
        .iter()
        .filter(|r| r.matched)
        .map(|r| r.name.clone())
        .collect();
    reasons.push(format!(
        "{} changed file(s); filters from {}.",
        files.len(),
        filters.origin
    ));

    let train = find(TRAIN_FILTER);
    let should_train = range.always || train.is_some_and(|r| r.matched);
    reasons.push(match train {
        _ if range.always => {
            "should_train is true: this manual run is configured as `always`.".into()
        }
        None => format!("should_train is false: the filters define no `{TRAIN_FILTER}` filter."),
        Some(r) if r.matched => format!(
            "should_train is true: filter `{TRAIN_FILTER}` matched {}.",
            examples(&r.files)
        ),
        Some(_) => {
            format!("should_train is false: no changed file matches filter `{TRAIN_FILTER}`.")
        }
    });

    let deploy = find(DEPLOY_FILTER);
    let deploy_matched = deploy.is_some_and(|r| r.matched);
    let should_deploy = deploy_matched || should_train;
    reasons.push(match deploy {
        _ if range.always => "should_deploy is true: this manual run is configured as `always`.".into(),
        Some(r) if r.matched => format!(
            "should_deploy is true: filter `{DEPLOY_FILTER}` matched {}.",
            examples(&r.files)
        ),
        _ if should_train => "should_deploy is true: a newly trained model is deployed (should_train is true).".into(),
        None => format!("should_deploy is false: the filters define no `{DEPLOY_FILTER}` filter and nothing is trained."),
        Some(_) => format!(
            "should_deploy is false: no changed file matches filter `{DEPLOY_FILTER}` and nothing is trained."
        ),
    });

    let data_changed = !data.is_empty();
    let metafiles = files
        .iter()
        .filter(|f| {
            dvc_delta::is_dvc_metafile(&f.path)
                || f.old_path
                    .as_deref()
                    .is_some_and(dvc_delta::is_dvc_metafile)
        })
        .count();
    reasons.push(if data_changed {
        let list: Vec<&str> = data.iter().map(|d| d.description.as_str()).collect();
        format!("data_changed is true: {}.", list.join("; "))
    } else if metafiles > 0 {
        format!(
            "data_changed is false: {metafiles} DVC metafile(s) changed but no tracked output did."
        )
    } else {
        "data_changed is false: no .dvc file or dvc.lock changed.".to_string()
    });

    Detection {
        event,
        reasons: reasons.iter().map(|r| sentence(r)).collect(),
        warnings: warnings.iter().map(|w| sentence(w)).collect(),
        base: range
            .base
            .map_or_else(|| git::EMPTY_TREE.to_string(), |b| b.to_string()),
        head: range.head.to_string(),
        always: range.always,
        filters_origin: filters.origin.clone(),
        files,
        filters: results,
        changes,
        data,
        should_train,
        should_deploy,
        data_changed,
    }
}

/// A reason or warning as every sink may show it: it names files, refs, filters and remote URLs
/// from the repository and the event, so credentials are removed and control characters quoted
/// once here (stdout, annotations, the `reasons` output and the JSON report all carry it).
fn sentence(s: &str) -> String {
    text::for_log(&redact::text(s)).into_owned()
}

/// `a, b, c and 4 more`.
fn examples(files: &[String]) -> String {
    const SHOWN: usize = 3;
    let shown: Vec<&str> = files.iter().take(SHOWN).map(String::as_str).collect();
    let mut s = shown.join(", ");
    if files.len() > SHOWN {
        s.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    s
}
