//! Every environment variable wms reads or writes, named once. Code elsewhere refers to these
//! constants, never to string literals, so `grep` over this file answers "what does wms look at?".

/// Set to `true` by the GitHub Actions runner; switches output to workflow commands.
pub const GITHUB_ACTIONS: &str = "GITHUB_ACTIONS";
/// File the runner reads step outputs from (`name=value` or heredoc blocks).
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";
/// File whose Markdown becomes the job summary.
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
/// File of `NAME=value` lines exported as environment variables to later steps.
pub const GITHUB_ENV: &str = "GITHUB_ENV";
/// Action inputs arrive as `INPUT_<NAME>` (upper-cased, spaces to `_`).
pub const INPUT_PREFIX: &str = "INPUT_";
/// Name of the triggering event (`push`, `pull_request`, …).
pub const GITHUB_EVENT_NAME: &str = "GITHUB_EVENT_NAME";
/// Path of the event payload JSON.
pub const GITHUB_EVENT_PATH: &str = "GITHUB_EVENT_PATH";
/// Commit SHA that triggered the workflow.
pub const GITHUB_SHA: &str = "GITHUB_SHA";

/// `tracing` filter, e.g. `wms=debug`.
pub const RUST_LOG: &str = "RUST_LOG";
/// Log format for every binary: `text` (default) or `json`.
pub const WMS_LOG_FORMAT: &str = "WMS_LOG_FORMAT";

/// Explicit path of the ONNX Runtime shared library (ort's own variable).
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
/// An activated Python virtualenv; its onnxruntime wheel is one place we look for the library.
pub const VIRTUAL_ENV: &str = "VIRTUAL_ENV";

/// MLflow tracking server URL; when set, training logs to it.
pub const MLFLOW_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";
