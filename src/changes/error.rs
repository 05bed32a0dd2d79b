//! Errors of change detection. Each names the path, ref or filter involved and ends with one
//! `; hint: …` saying what to do next, so the single `error:` line a user sees is actionable.

use std::path::PathBuf;

use super::glob::GlobError;

#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error(
        "{path} is not inside a git repository: {message}; hint: run from the checkout or pass --repo"
    )]
    OpenRepo { path: PathBuf, message: String },

    #[error("cannot resolve {what} {spec:?} to a commit: {message}; hint: {hint}")]
    BadRef {
        what: &'static str,
        spec: String,
        message: String,
        hint: String,
    },

    #[error(
        "this is a shallow clone and {what} is outside its history, and no remote is configured to fetch it from; hint: set `fetch-depth: 0` on actions/checkout"
    )]
    ShallowNoRemote { what: String },

    #[error(
        "this is a shallow clone and {what} is outside its history; fetching more history from remote {remote:?} ({url}) failed: {message}; hint: set `fetch-depth: 0` on actions/checkout"
    )]
    FetchFailed {
        what: String,
        remote: String,
        url: String,
        message: String,
    },

    #[error(
        "this is a shallow clone and {what} is still missing after fetching the full history from {remote:?}; hint: set `fetch-depth: 0` on actions/checkout"
    )]
    StillShallow { what: String, remote: String },

    #[error(
        "git operation failed ({action}): {message}; hint: check that the repository is intact (`git fsck`)"
    )]
    Git { action: String, message: String },

    #[error("cannot read the event payload {path}: {message}; hint: {hint}")]
    Event {
        path: PathBuf,
        message: String,
        hint: &'static str,
    },

    #[error(
        "cannot read filters file {path}: {message}; hint: fix the path given to --filters (or the `filters` input)"
    )]
    ReadFilters { path: PathBuf, message: String },

    #[error("filters {origin}: {message}; hint: {hint}")]
    Filters {
        origin: String,
        message: String,
        hint: String,
    },

    // Not `#[source]`: the message already shows it, and `{:#}` would print it twice.
    #[error(
        "filters {origin}: filter {filter:?}: {cause}; hint: quote patterns and check braces and classes"
    )]
    Glob {
        origin: String,
        filter: String,
        cause: GlobError,
    },
}

impl ChangesError {
    pub(crate) fn git(action: impl Into<String>, err: git2::Error) -> Self {
        ChangesError::Git {
            action: action.into(),
            message: err.message().to_string(),
        }
    }
}
