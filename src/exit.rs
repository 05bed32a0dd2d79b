//! The one place that turns a command's result into a process exit code and a printed error.
//! 0 ok, 1 failure, 2 usage error, 3 quality gate not met.
//!
//! # How an error reads
//! [`render`] prints the chain once, outermost first, joined by `: `, and moves every `hint:` to
//! the end, so a user reads what failed, why, and then what to do:
//! "cannot read the checkpoint: failed to open file \`x\`: No such file or directory (os error 2);
//! hint: …".
//! For that to hold, every library error follows one rule:
//! - a variant's message says what failed and names the path, field or URL (unless its source is an
//!   `fs_err` error, whose message already names the path: then it names the path's role only) and
//!   ends with `; hint: …` when the user can act;
//! - its cause is a `#[source]` or `#[from]` field (`#[from]` implies `#[source]`) and never appears
//!   in the message: no `{0}` or `{source}`, or the cause prints twice;
//! - a variant that only forwards another error is `#[error(transparent)]`;
//! - a cause kept only as text (a `String` field, e.g. from a thread or a foreign error type that is
//!   not `'static`) is part of the message and has no `#[source]`.
//!
//! Unit tests check a rendered chain with `assert_renders_once` (each cause and each hint exactly
//! once).

use std::process::ExitCode;

use crate::github::actions::{Actions, Location};

/// The command was called wrongly (bad flag value, missing input): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
}

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        UsageError {
            message: message.into(),
        }
    }
}

/// A quality gate did not pass: exit 3, so workflows can tell "worse model" from "broken run".
#[derive(Debug, thiserror::Error)]
#[error("quality gate not met: {reason}")]
pub struct GateNotMet {
    pub reason: String,
}

pub const OK: u8 = 0;
pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const GATE_NOT_MET: u8 = 3;

/// The exit code for an error: walks the chain so context layers don't hide the kind.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return USAGE;
        }
        if cause.is::<GateNotMet>() {
            return GATE_NOT_MET;
        }
    }
    FAILURE
}

/// Prints the error (one `error:` line with its causes, or an `::error::` annotation in Actions)
/// and returns the exit code. Binaries end `main` with `wms::exit::finish(run(args))`.
pub fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(OK),
        Err(err) => {
            let message = render(err.as_ref());
            Actions::from_env().error(&message, &Location::default());
            ExitCode::from(code_for(&err))
        }
    }
}

/// Separates a hint from the message it ends: `"what failed; hint: what to do"`.
const HINT: &str = "; hint: ";

/// A message and the hint it ends with, if any.
fn split_hint(text: String) -> (String, Option<String>) {
    match text.split_once(HINT) {
        Some((what, hint)) => (what.to_string(), Some(hint.to_string())),
        None => (text, None),
    }
}

/// The one line a user reads for an error: each message of the chain once, outermost first,
/// joined by `: `, then the hints in the same order (`; hint: …`).
pub fn render(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut hints = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let (what, hint) = split_hint(e.to_string());
        if !what.is_empty() {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&what);
        }
        hints.extend(hint);
        next = e.source();
    }
    for hint in hints {
        line.push_str(HINT);
        line.push_str(&hint);
    }
    line
}

/// Asserts that [`render`] shows every message of `err`'s chain exactly once (a cause in a
/// message and in `#[source]` shows twice) and carries `hints` hints, each exactly once.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_renders_once(err: &(dyn std::error::Error + 'static), hints: usize) {
    let line = render(err);
    let mut seen = 0;
    let mut next = Some(err);
    while let Some(e) = next {
        let (what, hint) = split_hint(e.to_string());
        if !what.is_empty() {
            assert_eq!(
                line.matches(what.as_str()).count(),
                1,
                "{what:?} should appear once in: {line}"
            );
        }
        if let Some(hint) = hint {
            seen += 1;
            assert_eq!(
                line.matches(hint.as_str()).count(),
                1,
                "hint {hint:?} should appear once in: {line}"
            );
        }
        next = e.source();
    }
    assert_eq!(seen, hints, "hints in: {line}");
    assert_eq!(line.matches("hint:").count(), hints, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn render_shows_causes_once_and_hints_last() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(UsageError::new("bad --config; hint: pass a file"))
            .context("loading settings");
        assert_eq!(
            render(err.as_ref()),
            "loading settings: bad --config; hint: pass a file"
        );
        let err = anyhow::Error::new(io).context("cannot read x; hint: check x");
        assert_eq!(
            render(err.as_ref()),
            "cannot read x: no such file; hint: check x"
        );
        assert_renders_once(err.as_ref(), 1);
    }

    /// Representative library errors: io causes from `fs_err`, from a socket, from a `#[from]`.
    #[test]
    fn library_errors_render_each_cause_once() {
        let missing = std::path::Path::new("/nonexistent/wms-exit-test/x");
        let err = crate::checkpoint::Checkpoint::read(missing).unwrap_err();
        assert_renders_once(&err, 1);
        assert_eq!(
            render(&err).matches("/nonexistent/wms-exit-test/x").count(),
            1
        );

        let args = crate::cli::serve::ServeArgs {
            model: Some("m.onnx".into()),
            config: Some(missing.to_path_buf()),
            ..Default::default()
        };
        let err = args.settings(|_| None).unwrap_err();
        assert_renders_once(&err, 1);
        assert!(render(&err).contains("No such file"), "{}", render(&err));

        let err = crate::serve::ServeError::Bind {
            key: "inference_address",
            flag: "inference-address",
            address: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_renders_once(&err, 1);
        let err = crate::serve::ServeError::from(std::io::Error::other("accept failed"));
        assert_renders_once(&err, 0);

        let err = crate::data::DataError::io(missing, fs_err::read(missing).unwrap_err());
        assert_renders_once(&err, 1);
        let err = anyhow::Error::new(err).context("wms data qa");
        assert_renders_once(err.as_ref(), 1);
        assert!(
            render(err.as_ref()).ends_with("; hint: check that the path exists and is readable")
        );
    }

    #[test]
    #[should_panic(expected = "should appear once")]
    fn a_cause_in_the_message_is_caught() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read: {0}")]
        struct Twice(#[source] std::io::Error);
        let io = std::io::Error::other("disk on fire");
        assert_renders_once(&Twice(io), 0);
    }

    #[test]
    fn codes_survive_context() {
        let e = anyhow::Error::new(GateNotMet {
            reason: "iou".into(),
        })
        .context("gate");
        assert_eq!(code_for(&e), GATE_NOT_MET);
        let e: anyhow::Result<()> = Err(UsageError::new("--epochs must be > 0").into());
        assert_eq!(code_for(&e.context("train").unwrap_err()), USAGE);
        assert_eq!(code_for(&anyhow::anyhow!("io")), FAILURE);
    }
}
