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
            .env_remove("WMS_SETUP_REF")
            .status()
            .unwrap();
        assert!(status.success());
        let text = fs_err::read_to_string(&out_file).unwrap();
        let outputs = wms::github::actions::parse_file_command("GITHUB_OUTPUT", &text).unwrap();
        assert_eq!(outputs.len(), 1, "{text}");
        assert_eq!(outputs[0].0, "key");
        let hash = outputs[0]
            .1
            .strip_prefix(concat!(env!("CARGO_PKG_VERSION"), "-src-"))
            .unwrap_or_else(|| panic!("not <version>-src-<hash>: {text}"));
        assert_eq!(hash.len(), 32, "{text}");
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

/// The build-image action's script as the runner would run it: every input through `INPUT_*`,
/// the password through stdin (never argv), outputs in `$GITHUB_OUTPUT`, the image in the real
/// test registry.
#[test]
fn build_image_action_pushes_with_the_password_from_stdin_and_sets_its_outputs() {
    let action = root().join("actions/build-image/action.yml");
    let build = steps(&action)
        .into_iter()
        .find(|s| s["id"].as_str() == Some("build"))
        .expect("a step with id build");
    let script = build["run"].as_str().unwrap();
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&fs_err::read_to_string(&action).unwrap()).unwrap();
    let env = build["env"].as_mapping().unwrap();
    for (name, _) in doc["inputs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let var = match name {
            "username" => "WMS_REGISTRY_USERNAME".to_string(),
            "password" => "WMS_REGISTRY_PASSWORD".to_string(),
            other => format!("INPUT_{}", other.to_uppercase()),
        };
        assert!(
            env.contains_key(serde_yaml::Value::from(var.clone())),
            "input {name} is not passed as {var}"
        );
    }

    // `wms` as installed by setup: wms-serve (without libtorch) next to it.
    let bin = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    fs_err::hard_link(env!("CARGO_BIN_EXE_wms"), bin.path().join("wms"))
        .or_else(|_| fs_err::copy(env!("CARGO_BIN_EXE_wms"), bin.path().join("wms")).map(|_| ()))
        .unwrap();
    fs_err::copy(crate::oci::serve_binary(), bin.path().join("wms-serve")).unwrap();

    let work = tempfile::tempdir().unwrap();
    let model = crate::oci::model(work.path(), "7");
    let registry = crate::servers::registry();
    let host = registry.url.trim_start_matches("http://");
    let output = work.path().join("github_output");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(work.path())
        .env("PATH", path)
        .env("GITHUB_OUTPUT", &output)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("INPUT_MODEL", &model)
        .env("INPUT_TAGS", format!("{host}/meters-action:v7\n"))
        .env("INPUT_BASE", "scratch")
        .env("INPUT_CONFIG", "")
        .env("INPUT_PUSH", "true")
        .env("INPUT_OCI-LAYOUT", "")
        .env("INPUT_INSECURE", "true")
        .env("INPUT_ECR", "false")
        .env("WMS_REGISTRY_USERNAME", crate::servers::REGISTRY_USER)
        .env("WMS_REGISTRY_PASSWORD", crate::servers::REGISTRY_PASSWORD)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains(crate::servers::REGISTRY_PASSWORD));
    assert!(!stderr.contains(crate::servers::REGISTRY_PASSWORD));
    let text = fs_err::read_to_string(&output).unwrap();
    let outputs: std::collections::BTreeMap<_, _> =
        wms::github::actions::parse_file_command("GITHUB_OUTPUT", &text)
            .unwrap()
            .into_iter()
            .collect();
    let digest = &outputs["digest"];
    assert!(digest.starts_with("sha256:"), "{text}");
    assert_eq!(outputs["image"], format!("{host}/meters-action@{digest}"));
    assert_eq!(outputs["tags"], format!("{host}/meters-action:v7"));
    assert!(outputs["compressed_size"].parse::<u64>().unwrap() > 1_000_000);
    // Every output the action declares is one wms writes.
    for (name, spec) in doc["outputs"].as_mapping().unwrap() {
        let value = spec["value"].as_str().unwrap();
        let key = value
            .trim_start_matches("${{ steps.build.outputs.")
            .trim_end_matches(" }}");
        assert!(
            outputs.contains_key(key),
            "output {name:?} reads {key}, not written"
        );
    }
}
