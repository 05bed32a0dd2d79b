//! `wms report`: what a model pull request and a release show people on GitHub. One Markdown
//! body (metrics against production with the gate's verdict, training curves as Mermaid, what
//! data changed, the image, the deployment) goes to three places: the job summary (always), one
//! sticky PR comment per model (found by a hidden marker across every page of comments and
//! updated in place), and the `wms / model quality` check run whose conclusion is the gate's
//! verdict. Release workflows record GitHub deployments and their statuses.
//!
//! - [`inputs`] reads the stage files strictly; [`curves`] draws the curves (SVG and Mermaid);
//!   [`markdown`] renders the body within GitHub's size limits; [`publish`] talks to GitHub
//!   through [`crate::github::client`].
//!
//! This module decides nothing about the model (the gate does, [`crate::gate`]); it never
//! fails a workflow because a token may not write (fork pull requests): callers turn
//! [`crate::github::client::GitHubError::missing_permission`] into a warning.

pub mod curves;
pub mod inputs;
pub mod markdown;
pub mod publish;

use std::path::{Path, PathBuf};

/// GitHub's limit on an issue comment body (characters).
pub const COMMENT_LIMIT: usize = 65_536;
/// GitHub's limit on a check run's `output.summary` (characters).
pub const CHECK_SUMMARY_LIMIT: usize = 65_535;
/// The check run's name, as it shows in the PR's checks list.
pub const CHECK_NAME: &str = "wms / model quality";
/// The model name when `--model` is not given (the name wms-serve serves by default).
pub const DEFAULT_MODEL: &str = "water-meters-unet";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    // `source` comes from `fs_err`, whose message names the path: the cause prints once.
    #[error("cannot read the {what} file; hint: check the path (an earlier step writes it)")]
    Read {
        /// Which input, e.g. "metrics".
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: not valid {what} JSON (line {line}, column {column}); hint: pass the file that stage wrote"
    )]
    Json {
        path: PathBuf,
        what: &'static str,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: field `{field}` {message}; hint: {hint}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
        hint: &'static str,
    },
    #[error("{flag}: {message}; hint: {hint}")]
    Flag {
        flag: &'static str,
        message: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Curves(#[from] curves::CurvesError),
    #[error(transparent)]
    Write(#[from] crate::fsutil::WriteError),
    #[error("{context}")]
    GitHub {
        context: String,
        #[source]
        source: Box<crate::github::client::GitHubError>,
    },
}

impl ReportError {
    pub fn json(path: &Path, what: &'static str, source: serde_json::Error) -> ReportError {
        ReportError::Json {
            path: path.to_path_buf(),
            what,
            line: source.line(),
            column: source.column(),
            source,
        }
    }

    pub fn github(context: impl Into<String>, source: crate::github::client::GitHubError) -> Self {
        ReportError::GitHub {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

/// The hidden line that marks a model's sticky comment. Model names are checked by
/// [`check_model_name`], so the name cannot close the HTML comment.
pub fn marker(model: &str) -> String {
    format!("<!-- wms-report:{model} -->")
}

/// Model names go into an HTML comment and a check-run title: letters, digits, `.`, `_`, `-`,
/// `/`, at most 100 characters (MLflow registry names are wider, but a report marker must not be).
pub fn check_model_name(model: &str) -> Result<(), ReportError> {
    let ok = !model.is_empty()
        && model.len() <= 100
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && model.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ReportError::Flag {
            flag: "--model",
            message: format!(
                "{} is not a usable model name",
                crate::untrusted::text::for_log(&model.chars().take(120).collect::<String>())
            ),
            hint: "use letters, digits, '.', '_', '-', '/' (at most 100), starting with a letter or digit",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_cannot_break_the_marker() {
        assert_eq!(
            marker("water-meters-unet"),
            "<!-- wms-report:water-meters-unet -->"
        );
        check_model_name("water-meters-unet").unwrap();
        check_model_name("org/model_v2.1").unwrap();
        for bad in ["", "a -->", "x\ny", "-a", &"a".repeat(101), "a<b"] {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
    }
}
