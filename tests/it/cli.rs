//! Behaviour of the binaries as a user meets it: exit codes and one-line errors.

use crate::util::bin;

#[test]
fn serve_with_missing_onnxruntime_names_the_paths_tried() {
    let out = bin("wms-serve")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["--model", "model.onnx"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
    assert!(
        stderr.starts_with("error: ONNX Runtime library not found; tried:"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
}

#[test]
fn doctor_finds_the_pinned_onnxruntime_in_the_project_venv() {
    let out = bin("wms")
        .env_remove("ORT_DYLIB_PATH")
        .arg("doctor")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("libonnxruntime.so"), "{stdout}");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = bin("wms").arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let out = bin("wms")
        .env_remove("ORT_DYLIB_PATH")
        .env("RUST_LOG", "info")
        .args(["--log-format", "json", "doctor"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        !lines.is_empty(),
        "expected ONNX Runtime's load message to be logged"
    );
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}

/// Issue 17: text logs are coloured only on a terminal, and never with `NO_COLOR`. A pipe gets
/// plain text; a terminal (a pty from util-linux `script`) gets colour unless `NO_COLOR` is set.
#[test]
fn logs_are_coloured_only_on_a_terminal_without_no_color() {
    let piped = bin("wms")
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .arg("doctor")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(stderr.contains("INFO"), "expected a log line: {stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    let on_a_terminal = |no_color: Option<&str>| {
        let mut cmd = std::process::Command::new("script");
        let wms = bin("wms").get_program().to_string_lossy().into_owned();
        cmd.args(["-qec", &format!("{wms} doctor"), "/dev/null"])
            .env_remove("ORT_DYLIB_PATH")
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = on_a_terminal(None);
    assert!(tty.contains("INFO") && tty.contains('\x1b'), "{tty:?}");
    let tty = on_a_terminal(Some("1"));
    assert!(tty.contains("INFO") && !tty.contains('\x1b'), "{tty:?}");
}

/// Issue 17: `wms data --help` names every data command, not only synth and qa.
#[test]
fn data_help_names_every_subcommand() {
    let out = bin("wms").args(["data", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // The first paragraph (clap wraps it to the terminal width).
    let about = help
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .replace('\n', " ");
    for command in ["synth", "qa", "add", "push", "pull"] {
        assert!(about.contains(command), "{command} missing from: {about}");
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} not listed: {help}"
        );
    }
}

fn action(name: &str) -> serde_yaml::Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("actions/{name}/action.yml"));
    serde_yaml::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
}

/// The step of `action` that runs `command`, checked to pass every input as the `INPUT_*`
/// variable wms reads (`INPUT_` + the name upper-cased, hyphens kept, as the runner names them).
fn command_step(action: &serde_yaml::Value, command: &str) -> serde_yaml::Value {
    let step = action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["run"].as_str() == Some(command))
        .unwrap_or_else(|| panic!("no step runs `{command}`"))
        .clone();
    for (name, _) in action["inputs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let var = format!("INPUT_{}", name.to_uppercase());
        assert_eq!(
            step["env"][var.as_str()].as_str(),
            Some(format!("${{{{ inputs.{name} }}}}").as_str()),
            "{command}: {var}"
        );
    }
    step
}

/// Runs `wms <args>` with the action's inputs as the runner would set them (`values` for some,
/// each other input's default), and returns the step outputs written.
fn run_action_step(
    action: &serde_yaml::Value,
    args: &[&str],
    values: &[(&str, String)],
    dir: &std::path::Path,
) -> (std::process::Output, Vec<(String, String)>) {
    let gh_output = dir.join("github_output");
    fs_err::write(&gh_output, "").unwrap();
    let mut cmd = bin("wms");
    cmd.args(args).env("GITHUB_OUTPUT", &gh_output);
    for (name, spec) in action["inputs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| spec["default"].as_str().map(str::to_string))
            .unwrap_or_default();
        cmd.env(format!("INPUT_{}", name.to_uppercase()), value);
    }
    let out = cmd.output().unwrap();
    let text = fs_err::read_to_string(&gh_output).unwrap();
    let outputs = wms::github::actions::parse_file_command("GITHUB_OUTPUT", &text).unwrap();
    (out, outputs)
}

#[test]
fn gate_action_passes_its_inputs_and_maps_its_outputs() {
    let action = action("gate");
    command_step(&action, "wms gate");
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate.json");
    let baseline = dir.path().join("baseline.json");
    fs_err::write(&candidate, r#"{"test_iou": 0.90, "test_dice": 0.94}"#).unwrap();
    fs_err::write(&baseline, r#"{"test_iou": 0.85, "test_dice": 0.91}"#).unwrap();
    let values = [
        ("candidate", candidate.display().to_string()),
        ("baseline", baseline.display().to_string()),
        ("min", "test_iou=0.8".to_string()),
    ];
    let (out, outputs) = run_action_step(&action, &["gate"], &values, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |k: &str| outputs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("improved").as_deref(), Some("true"));
    assert!(get("table").unwrap().contains("test_iou"));
    for (name, spec) in action["outputs"].as_mapping().unwrap() {
        let value = spec["value"].as_str().unwrap();
        let key = value
            .strip_prefix("${{ steps.gate.outputs.")
            .and_then(|v| v.strip_suffix(" }}"))
            .unwrap_or_else(|| panic!("{name:?}: {value}"));
        assert!(get(key).is_some(), "output {key} not written");
    }
    // A minimum the candidate misses fails the step with the gate's exit code.
    let values = [
        ("candidate", candidate.display().to_string()),
        ("baseline", baseline.display().to_string()),
        ("min", "test_iou=0.95".to_string()),
    ];
    let (out, outputs) = run_action_step(&action, &["gate"], &values, dir.path());
    assert_eq!(out.status.code(), Some(3));
    assert!(outputs.iter().any(|(k, v)| k == "improved" && v == "false"));
}

#[test]
fn promote_and_aws_credentials_actions_pass_every_input() {
    command_step(&action("promote"), "wms promote");
    command_step(&action("aws-credentials"), "wms aws assume-role");
}
