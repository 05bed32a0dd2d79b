//! Behaviour of the binaries as a user meets it: exit codes and one-line errors.

use crate::util::{TestCommand, action, bin_path, command_step, wms};

#[test]
fn serve_with_missing_onnxruntime_names_the_paths_tried() {
    let stderr = TestCommand::new("wms-serve")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["--model", "model.onnx"])
        .fails(1)
        .stderr();
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
    let out = wms().env_remove("ORT_DYLIB_PATH").arg("doctor").ok();
    assert!(out.stdout().contains("libonnxruntime.so"), "{out}");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = wms().arg("--no-such-flag").fails(2);
    assert!(out.stderr().contains("--no-such-flag"), "{out}");
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let stderr = wms()
        .env_remove("ORT_DYLIB_PATH")
        .env("RUST_LOG", "info")
        .args(["--log-format", "json", "doctor"])
        .ok()
        .stderr();
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
    let stderr = wms()
        .env_remove("ORT_DYLIB_PATH")
        .env("RUST_LOG", "info")
        .arg("doctor")
        .ok()
        .stderr();
    assert!(stderr.contains("INFO"), "expected a log line: {stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    let on_a_terminal = |no_color: Option<&str>| {
        let wms = bin_path("wms");
        let mut cmd = TestCommand::external("script")
            .args(["-qec", &format!("{} doctor", wms.display()), "/dev/null"])
            .env_remove("ORT_DYLIB_PATH")
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd = cmd.env("NO_COLOR", v);
        }
        cmd.ok().stdout()
    };
    let tty = on_a_terminal(None);
    assert!(tty.contains("INFO") && tty.contains('\x1b'), "{tty:?}");
    let tty = on_a_terminal(Some("1"));
    assert!(tty.contains("INFO") && !tty.contains('\x1b'), "{tty:?}");
}

/// Issue 17: `wms data --help` names every data command, not only synth and qa.
#[test]
fn data_help_names_every_subcommand() {
    let help = wms().args(["data", "--help"]).ok().stdout();
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

/// `wms <args>` with the action's inputs as the runner would set them (`values` for some, each
/// other input's default), writing step outputs.
fn action_step(
    action: &serde_yaml::Value,
    args: &[&str],
    values: &[(&str, String)],
) -> TestCommand {
    let mut cmd = wms().args(args).step_outputs();
    for (name, spec) in action["inputs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| spec["default"].as_str().map(str::to_string))
            .unwrap_or_default();
        cmd = cmd.env(format!("INPUT_{}", name.to_uppercase()), value);
    }
    cmd
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
    let out = action_step(&action, &["gate"], &values).ok();
    assert_eq!(out.output("improved"), "true");
    assert!(out.output("table").contains("test_iou"), "{out}");
    for (name, spec) in action["outputs"].as_mapping().unwrap() {
        let value = spec["value"].as_str().unwrap();
        let key = value
            .strip_prefix("${{ steps.gate.outputs.")
            .and_then(|v| v.strip_suffix(" }}"))
            .unwrap_or_else(|| panic!("{name:?}: {value}"));
        out.output(key);
    }
    // A minimum the candidate misses fails the step with the gate's exit code.
    let values = [
        ("candidate", candidate.display().to_string()),
        ("baseline", baseline.display().to_string()),
        ("min", "test_iou=0.95".to_string()),
    ];
    let out = action_step(&action, &["gate"], &values).fails(3);
    assert_eq!(out.output("improved"), "false");
}

#[test]
fn promote_and_aws_credentials_actions_pass_every_input() {
    command_step(&action("promote"), "wms promote");
    command_step(&action("aws-credentials"), "wms aws assume-role");
}
