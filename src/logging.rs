//! Logging setup shared by the three binaries: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info` for wms, `warn` for dependencies), as text or JSON (`--log-format json`).

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
