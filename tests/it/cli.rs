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
