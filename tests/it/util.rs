//! Shared helpers for integration tests: paths of the built binaries, temp dirs, commands.

use std::path::PathBuf;
use std::process::Command;

/// A command for one of the package's binaries, built by cargo for this test run.
pub fn bin(name: &str) -> Command {
    let path = match name {
        "wms" => PathBuf::from(env!("CARGO_BIN_EXE_wms")),
        "wms-serve" => PathBuf::from(env!("CARGO_BIN_EXE_wms-serve")),
        other => panic!("unknown binary {other}"),
    };
    let mut cmd = Command::new(path);
    cmd.env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("RUST_LOG");
    cmd
}
