//! Logging setup shared by the three binaries: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info` for wms, `warn` for dependencies), as text or JSON (`--log-format json`).
//! Text is coloured only on a terminal and never with `NO_COLOR` set, so a log file or a CI log
//! read through a pipe carries no ANSI escape codes.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::env_vars;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. Safe to call twice (the second call is ignored).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env(env_vars::RUST_LOG)
        .unwrap_or_else(|_| EnvFilter::new("warn,wms=info"));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os(env_vars::NO_COLOR).as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Whether log lines get ANSI colours: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (no-color.org).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
