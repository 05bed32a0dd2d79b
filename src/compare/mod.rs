//! The manual-versus-automated deployment comparison (`wms compare`, the seed's phase 7): the
//! manual instructions' steps ([`instructions`]), the terminal time tracker for manual runs
//! ([`tracker`]), collecting automated runs from `wms deploy`'s records and the GitHub Actions API
//! ([`collect`]), and the report with its figures and charts ([`report`], figures in [`stats`]).
//!
//! Every figure comes from [`crate::timing`] records and carries the number of records behind
//! it; this module never invents a figure for a task without records. It does not time commands
//! itself (commands use [`crate::timing::Recorder`]) and, apart from the tracker's prompts and its
//! interrupt message, does not print: the CLI (`cli::compare`) shows what these functions return.

pub mod collect;
pub mod instructions;
pub mod report;
pub mod stats;
pub mod tracker;

use std::path::PathBuf;

use crate::timing::TimingError;

/// Everything `wms compare` can fail with; each names the file, line, flag or request.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(
        "{path}:{line}: {message}; hint: see the format described at the top of comparison/manual/instructions.md"
    )]
    Instructions {
        path: String,
        line: usize,
        message: String,
    },
    #[error(
        "{path} has no task {task:?}; hint: add a \"## Task `{task}`: …\" section with at least one \"### Step N: …\""
    )]
    NoSuchTask { path: String, task: String },
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error(transparent)]
    Write(#[from] crate::fsutil::WriteError),
    #[error("cannot read {path}; hint: check that it exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}")]
    GitHub {
        context: String,
        #[source]
        source: crate::github::client::GitHubError,
    },
    #[error("{path}: {message}; hint: {hint}")]
    Docs {
        path: PathBuf,
        message: String,
        hint: &'static str,
    },
    #[error("cannot draw the chart {path}: {message}; hint: this is a wms bug, please report it")]
    Plot { path: PathBuf, message: String },
    #[error("cannot watch for Ctrl-C: {message}; hint: run the tracker in a normal terminal")]
    Signals { message: String },
}
