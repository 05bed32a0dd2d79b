//! The one place that turns a command's result into a process exit code and a printed error.
//! 0 ok, 1 failure, 2 usage error, 3 quality gate not met.

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
            let message = format!("{err:#}");
            Actions::from_env().error(&message, &Location::default());
            ExitCode::from(code_for(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

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
