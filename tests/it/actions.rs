//! The composite actions under `actions/` as a pull request could attack them: no input reaches a
//! shell script as text, the binaries' cache key follows the action's own source, and zizmor (the
//! real GitHub Actions linter, from the lock file) finds nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn action_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs_err::read_dir(root().join("actions"))
        .unwrap()
        .map(|e| e.unwrap().path().join("action.yml"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 7, "actions found: {files:?}");
    files
}

fn steps(file: &Path) -> Vec<serde_yaml::Value> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&fs_err::read_to_string(file).unwrap()).unwrap();
    doc["runs"]["steps"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

/// `${{ inputs.x }}` inside `run:` is pasted into the script before bash sees it, so an input
/// value like `"; curl … | sh; "` runs as code. Inputs must arrive through `env:`.
#[test]
fn issue11_no_action_splices_an_expression_into_a_script() {
    let mut offenders = Vec::new();
    for file in action_files() {
        for step in steps(&file) {
            if let Some(script) = step["run"].as_str()
                && script.contains("${{")
            {
                offenders.push(format!("{}: {script}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// `hashFiles()` reads only inside the workspace and rejects `..`; the action's source is outside
/// it, so a key built that way never changed and stale binaries were restored.
#[test]
fn issue11_cache_key_follows_the_action_source() {
    for file in action_files() {
        let text = fs_err::read_to_string(&file).unwrap();
        assert!(
            !text.contains("hashFiles"),
            "{} uses hashFiles",
            file.display()
        );
        if text.contains("actions/cache@") {
            assert!(
                text.contains("${{ steps.wms-source.outputs.key }}"),
                "{} caches without the source key",
                file.display()
            );
        }
    }

    // The script on a copy of the tree: the key changes with a source file and only then.
    let tree = tempfile::tempdir().unwrap();
    let copy = |rel: &str| {
        let to = tree.path().join(rel);
        fs_err::create_dir_all(to.parent().unwrap()).unwrap();
        fs_err::copy(root().join(rel), &to).unwrap();
    };
    for rel in [
        "actions/setup/cache-key.sh",
        "Cargo.toml",
        "Cargo.lock",
        "requirements.lock",
        "src/lib.rs",
    ] {
        copy(rel);
    }
    let key = || {
        let out_file = tree.path().join("github_output");
        let _ = fs_err::remove_file(&out_file);
        let status = Command::new("bash")
            .arg(tree.path().join("actions/setup/cache-key.sh"))
            .env("GITHUB_OUTPUT", &out_file)
            .status()
            .unwrap();
        assert!(status.success());
        let text = fs_err::read_to_string(&out_file).unwrap();
        let outputs = wms::github::actions::parse_file_command("GITHUB_OUTPUT", &text).unwrap();
        assert_eq!(outputs.len(), 1, "{text}");
        assert_eq!(outputs[0].0, "key");
        assert_eq!(outputs[0].1.len(), 32, "{text}");
        outputs[0].1.clone()
    };
    let first = key();
    assert_eq!(key(), first, "the key must be stable for the same source");
    fs_err::write(tree.path().join("src/lib.rs"), "// changed\n").unwrap();
    assert_ne!(key(), first, "a source change must change the key");
}

/// zizmor audits template injection, unpinned `uses:`, `$GITHUB_ENV` writes and more, offline.
#[test]
fn zizmor_finds_nothing_in_the_actions() {
    let zizmor = util::python().with_file_name("zizmor");
    let out = Command::new(&zizmor)
        .args(["--offline", "--no-progress"])
        .arg(root().join("actions"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; hint: `make bootstrap` installs zizmor from requirements.lock",
                zizmor.display()
            )
        });
    assert!(
        out.status.success(),
        "zizmor findings:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
