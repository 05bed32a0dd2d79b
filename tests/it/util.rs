//! Shared helpers for integration tests: paths of the built binaries, temp dirs, commands.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A command for one of the package's binaries, built by cargo for this test run.
pub fn bin(name: &str) -> Command {
    let path = match name {
        "wms" => PathBuf::from(env!("CARGO_BIN_EXE_wms")),
        "wms-serve" => PathBuf::from(env!("CARGO_BIN_EXE_wms-serve")),
        #[cfg(feature = "train")]
        "wms-train" => PathBuf::from(env!("CARGO_BIN_EXE_wms-train")),
        other => panic!("unknown binary {other}"),
    };
    let mut cmd = Command::new(path);
    // Image layers cached by `wms build-image` stay out of the user's ~/.cache.
    cmd.env("WMS_CACHE_DIR", std::env::temp_dir().join("wms-test-cache"))
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("RUST_LOG");
    cmd
}

/// The project venv's Python (pinned torch, onnxruntime, onnx). `make` exports `WMS_VENV`
/// (CI keeps the venv outside the clone); a plain `cargo test` falls back to `./.venv`.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("WMS_VENV")
        .or_else(|| std::env::var_os("VIRTUAL_ENV"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    venv.join("bin/python")
}

/// The Mermaid renderer (`tools/mermaid`, installed by `make test-deps`) and its puppeteer
/// settings (Debian's Chromium, no sandbox). Missing: a failure in CI, else `None` after saying
/// the test is skipped.
#[track_caller]
pub fn mmdc() -> Option<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mermaid");
    let bin = root.join("node_modules/.bin/mmdc");
    if bin.is_file() && Path::new("/usr/bin/chromium").is_file() {
        return Some((bin, root.join("puppeteer.json")));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "mmdc not found; hint: make test-deps installs tools/mermaid/node_modules and chromium"
    );
    eprintln!("skipped: tools/mermaid/node_modules or chromium missing (make test-deps)");
    None
}
