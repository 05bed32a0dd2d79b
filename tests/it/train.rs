//! `wms-train train` end to end on synthetic data (CPU): the issue-3 acceptance run, kill and
//! resume, and the errors a user meets with a bad config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::TestCommand;

/// Metrics that depend on wall time, not on the computation.
const TIMING_KEYS: &[&str] = &["train_seconds", "images_per_second"];

fn synth(dir: &Path, count: usize, size: &str, seed: u64) -> PathBuf {
    let data = dir.join("data");
    crate::util::synth(&data, count, size, seed);
    data
}

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("train.yaml");
    fs_err::write(&p, yaml).unwrap();
    p
}

fn read_metrics(out: &Path) -> BTreeMap<String, f64> {
    let text = fs_err::read_to_string(out.join("metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn train_cmd(config: &Path, data: &Path, out: &Path) -> TestCommand {
    TestCommand::new("wms-train")
        .args(["train", "--device", "cpu", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
}

/// Issue 3 acceptance: 240 synthetic photos at 128×128, test IoU ≥ 0.80, all artifacts written.
#[test]
fn issue_3_acceptance_synthetic_240_reaches_test_iou_080() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 240, "128x128", 3);
    let config = write_config(dir.path(), &crate::util::quick_train_yaml(10, Some(4)));
    let out_dir = dir.path().join("run");
    let started = Instant::now();
    let out = train_cmd(&config, &data, &out_dir)
        .args(["--input-size", "128", "--seed", "7"])
        .step_outputs()
        .ok();
    let seconds = started.elapsed().as_secs_f64();
    let stderr = out.stderr();
    eprintln!("acceptance training took {seconds:.1} s");

    let metrics = read_metrics(&out_dir);
    eprintln!("{metrics:#?}");
    assert!(metrics["test_iou"] >= 0.80, "{metrics:#?}\n{stderr}");
    for key in [
        "test_iou",
        "test_dice",
        "test_accuracy",
        "test_hausdorff",
        "val_iou",
        "val_dice",
        "val_loss",
        "train_iou",
        "train_loss",
        "best_epoch",
        "epochs_run",
        "train_seconds",
        "images_per_second",
    ] {
        assert!(metrics.contains_key(key), "missing {key}: {metrics:#?}");
    }
    for file in [
        "metrics.json",
        "history.csv",
        "curves.svg",
        "best.safetensors",
        "last.safetensors",
        "checkpoint.json",
        "resume.safetensors",
    ] {
        assert!(out_dir.join(file).is_file(), "{file} missing");
    }
    let history = fs_err::read_to_string(out_dir.join("history.csv")).unwrap();
    assert!(history.starts_with("epoch,lr,train_loss,"), "{history}");
    assert_eq!(history.lines().count() as f64, 1.0 + metrics["epochs_run"]);
    let svg = fs_err::read_to_string(out_dir.join("curves.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("IoU"), "{svg:.200}");
    // The data pipeline keeps up: every epoch's data share is logged and under 10 %.
    for line in history.lines().skip(1) {
        let share: f64 = line.split(',').nth(14).unwrap().parse().unwrap();
        assert!(share < 0.10, "data share {share} in {line}");
    }

    // The best checkpoint is complete: spec, preprocessing and final metrics in its sidecar.
    let ckpt = wms::checkpoint::Checkpoint::read(&out_dir.join("best.safetensors")).unwrap();
    assert_eq!(ckpt.meta.spec.base_filters, 8);
    assert_eq!(ckpt.meta.preprocessing.input_width, 128);
    assert_eq!(ckpt.meta.metrics["test_iou"], metrics["test_iou"]);
    assert!(ckpt.meta.data_fingerprint.is_some());
    assert_eq!(
        ckpt.meta.optimizer_state.as_deref(),
        Some("resume.safetensors")
    );

    // Step outputs, read back as the runner reads them.
    assert!(out.output("test_iou").parse::<f64>().unwrap() >= 0.80);
    assert!(out.output("test_dice").parse::<f64>().is_ok(), "{out}");
    assert!(out.output("checkpoint").ends_with("best.safetensors"));
    let m: BTreeMap<String, f64> = serde_json::from_str(out.output("metrics")).unwrap();
    assert_eq!(m["test_iou"], metrics["test_iou"]);
    // Stdout is the metrics JSON (data), logs went to stderr.
    let stdout: BTreeMap<String, f64> = serde_json::from_slice(&out.output.stdout).unwrap();
    assert_eq!(stdout["best_epoch"], metrics["best_epoch"]);
}

/// Kill a run after its first epoch, resume it, and end exactly where an uninterrupted run ends.
#[test]
fn killed_run_resumes_to_the_same_result_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 40, "64x64", 5);
    let config = write_config(
        dir.path(),
        "model:\n  base_filters: 4\ntraining:\n  epochs: 5\n  batch_size: 4\n  learning_rate: 0.003\n",
    );
    let flags = ["--input-size", "64", "--seed", "9", "--threads", "1"];

    let straight = dir.path().join("straight");
    train_cmd(&config, &data, &straight).args(flags).ok();

    let resumed = dir.path().join("resumed");
    let mut child = train_cmd(&config, &data, &resumed)
        .args(flags)
        .into_command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !resumed.join("last.safetensors").exists() {
        assert!(Instant::now() < deadline, "no epoch finished in time");
        assert!(child.try_wait().unwrap().is_none(), "run ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !resumed.join("metrics.json").exists(),
        "the run finished before it was killed; make it longer"
    );

    let out = train_cmd(&config, &data, &resumed)
        .args(flags)
        .arg("--resume")
        .ok();
    assert!(out.stderr().contains("resuming after epoch"), "{out}");

    let strip = |mut m: BTreeMap<String, f64>| {
        for k in TIMING_KEYS {
            m.remove(*k);
        }
        m
    };
    assert_eq!(
        strip(read_metrics(&resumed)),
        strip(read_metrics(&straight))
    );
    // Same per-epoch history too (all columns but the timing ones).
    let metric_columns = |p: &Path| -> Vec<String> {
        fs_err::read_to_string(p.join("history.csv"))
            .unwrap()
            .lines()
            .map(|l| l.split(',').take(14).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(metric_columns(&resumed), metric_columns(&straight));
}

#[test]
fn unknown_config_key_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "training:\n  epochz: 3\n");
    let stderr = train_cmd(&config, dir.path(), &dir.path().join("run"))
        .fails(2)
        .stderr();
    assert!(
        stderr.contains("epochz") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_flag_values_and_missing_data_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "training:\n  epochs: 1\n");
    let stderr = train_cmd(&config, dir.path(), &dir.path().join("run"))
        .args(["--input-size", "100"])
        .fails(2)
        .stderr();
    assert!(stderr.contains("data.image_size"), "{stderr}");

    let stderr = train_cmd(&config, &dir.path().join("nope"), &dir.path().join("run"))
        .fails(1)
        .stderr();
    assert!(
        stderr.contains("nope") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
