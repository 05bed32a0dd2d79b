//! The model-repository template (`workflows/template/`) run for real: copied into a fresh git
//! repository with synthetic data, `dvc repro` (the project venv's dvc) runs its `prepare`
//! (`wms data qa`) and `train` (`wms-train train`) stages with the binaries of this build, then
//! `dvc metrics show`, `dvc metrics diff` and `wms detect-changes` read what the stages wrote.
//!
//! Nothing reaches the network: DVC's analytics are off, its global/system config and site cache
//! live in the test's temp dir, no remote is pushed to or pulled from, and MLflow is not set.
//! Training is shrunk through the template's own config file (a few epochs of a narrow network on
//! 64×64 photos) so the whole run takes seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::dvc::Sandbox;
use crate::util;

fn template_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows/template")
}

fn copy_tree(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for e in fs_err::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs_err::copy(e.path(), &target).unwrap();
        }
    }
}

/// PATH with this build's `wms` and `wms-train` (what the stages' `cmd` call) and the venv's dvc.
fn path_with_binaries() -> String {
    let bins = [
        PathBuf::from(env!("CARGO_BIN_EXE_wms")),
        PathBuf::from(env!("CARGO_BIN_EXE_wms-train")),
    ];
    let mut dirs: Vec<PathBuf> = bins.iter().map(|b| b.parent().unwrap().into()).collect();
    dirs.push(util::python().parent().unwrap().into());
    let mut path = std::env::join_paths(dirs).unwrap().into_string().unwrap();
    if let Some(old) = std::env::var_os("PATH") {
        path.push(':');
        path.push_str(&old.to_string_lossy());
    }
    path
}

struct ModelRepo {
    sb: Sandbox,
    dir: PathBuf,
    path: String,
}

impl ModelRepo {
    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("PATH", &self.path)
            .env_remove("MLFLOW_TRACKING_URI")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env("WMS_LOG_FORMAT", "text");
        cmd
    }

    fn ok(&self, program: &str, args: &[&str]) -> String {
        self.sb.ok(self.cmd(program, args), &self.dir)
    }

    fn dvc_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok("dvc", args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("dvc {args:?}: {e}\n{out}"))
    }

    fn commit(&self, message: &str) {
        self.ok("git", &["add", "-A"]);
        self.ok("git", &["commit", "-q", "-m", message]);
    }

    fn write_config(&self, epochs: u32) {
        // The template's config keys, shrunk: wms-train rejects unknown keys, so this also checks
        // that the template's config file is one wms-train takes.
        let template = fs_err::read_to_string(template_dir().join("configs/train.yaml")).unwrap();
        let mut cfg: serde_yaml::Value = serde_yaml::from_str(&template).unwrap();
        cfg["data"]["image_size"] = 64.into();
        cfg["data"]["num_workers"] = 1.into();
        cfg["model"]["base_filters"] = 4.into();
        cfg["training"]["epochs"] = epochs.into();
        cfg["training"]["batch_size"] = 4.into();
        cfg["training"]["learning_rate"] = 0.003.into();
        cfg["training"]["device"] = "cpu".into();
        cfg["training"]["seed"] = 7.into();
        fs_err::write(
            self.dir.join("configs/train.yaml"),
            serde_yaml::to_string(&cfg).unwrap(),
        )
        .unwrap();
    }
}

fn read_metrics(path: &Path) -> BTreeMap<String, f64> {
    serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
}

/// `dvc metrics show --json` → the metrics of one file in the workspace.
fn shown(show: &serde_json::Value, file: &str) -> serde_json::Value {
    // DVC 3 keys the workspace as "" (older releases: "workspace").
    let ws = show.get("").unwrap_or(&show["workspace"]);
    let ws = &ws["data"][file];
    assert!(ws["error"].is_null(), "{file}: {ws}");
    ws["data"].clone()
}

#[test]
fn template_dvc_repro_trains_and_dvc_reads_the_metrics_wms_train_wrote() {
    let sb = Sandbox::offline("template");
    let dir = sb.path("model-repo");
    copy_tree(&template_dir(), &dir);
    let repo = ModelRepo {
        sb,
        dir: dir.clone(),
        path: path_with_binaries(),
    };
    repo.ok("git", &["init", "-q", "-b", "main"]);
    repo.write_config(2);
    repo.ok(
        env!("CARGO_BIN_EXE_wms"),
        &[
            "data", "synth", "--out", "data", "--count", "24", "--size", "64x64", "--seed", "3",
        ],
    );
    // The data set goes under DVC like a user's (real dvc), the template's remote untouched.
    repo.ok("dvc", &["add", "-q", "data"]);
    assert!(dir.join("data.dvc").is_file());
    repo.commit("template + data");

    let out = repo.ok("dvc", &["repro"]);
    assert!(
        out.contains("Running stage 'prepare'") && out.contains("Running stage 'train'"),
        "{out}"
    );
    let written = read_metrics(&dir.join("runs/train/metrics.json"));
    for key in [
        "test_iou",
        "test_dice",
        "test_accuracy",
        "best_epoch",
        "epochs_run",
    ] {
        assert!(
            written.contains_key(key),
            "metrics.json lacks {key}: {written:?}"
        );
    }
    assert_eq!(written["epochs_run"], 2.0);
    // The history plot's axes are columns wms-train writes.
    let dvc_yaml: serde_yaml::Value =
        serde_yaml::from_str(&fs_err::read_to_string(dir.join("dvc.yaml")).unwrap()).unwrap();
    let plot = &dvc_yaml["stages"]["train"]["plots"][0]["runs/train/history.csv"];
    for axis in ["x", "y"] {
        let column = plot[axis].as_str().unwrap();
        assert!(
            wms::report::curves::HISTORY_COLUMNS.contains(&column),
            "{axis}: {column}"
        );
    }
    for f in [
        "best.safetensors",
        "checkpoint.json",
        "history.csv",
        "curves.svg",
    ] {
        assert!(dir.join("runs/train").join(f).is_file(), "{f} missing");
    }

    // `dvc metrics show` reports exactly what wms-train wrote, and the QA counts.
    let show = repo.dvc_json(&["metrics", "show", "--json"]);
    let train = shown(&show, "runs/train/metrics.json");
    let train: BTreeMap<String, f64> = serde_json::from_value(train).unwrap();
    assert_eq!(train, written);
    let qa = shown(&show, "reports/data-qa.json");
    assert_eq!(qa["images"], 24, "{qa}");
    assert_eq!(qa["valid_pairs"], 24, "{qa}");

    // dvc.lock records each output the way detect-changes reads it (DESIGN §8).
    let lock: serde_yaml::Value =
        serde_yaml::from_str(&fs_err::read_to_string(dir.join("dvc.lock")).unwrap()).unwrap();
    assert_eq!(lock["schema"].as_str(), Some("2.0"));
    let outs = lock["stages"]["train"]["outs"].as_sequence().unwrap();
    let best = outs
        .iter()
        .find(|o| o["path"].as_str() == Some("runs/train/best.safetensors"))
        .unwrap_or_else(|| panic!("{outs:?}"));
    assert_eq!(best["hash"].as_str(), Some("md5"));
    assert_eq!(best["md5"].as_str().map(str::len), Some(32));
    assert!(lock["stages"]["train"]["params"]["configs/train.yaml"]["training"]["epochs"] == 2);

    // Nothing changed: the pipeline is up to date and a second repro trains nothing.
    let again = repo.ok("dvc", &["repro"]);
    assert!(!again.contains("Running stage"), "{again}");
    repo.commit("first model");

    // A config change retrains (and only trains): dvc metrics diff and params diff see it.
    repo.write_config(3);
    let out = repo.ok("dvc", &["repro"]);
    assert!(
        out.contains("Running stage 'train'") && !out.contains("Running stage 'prepare'"),
        "{out}"
    );
    let params = repo.dvc_json(&["params", "diff", "--json"]);
    let epochs = &params["configs/train.yaml"]["training.epochs"];
    assert_eq!(
        (epochs["old"].clone(), epochs["new"].clone()),
        (2.into(), 3.into()),
        "{params}"
    );
    let diff = repo.dvc_json(&["metrics", "diff", "--json", "HEAD"]);
    let run = &diff["runs/train/metrics.json"]["epochs_run"];
    assert_eq!(run["old"], 2.0, "{diff}");
    assert_eq!(run["new"], 3.0, "{diff}");
    // Every metric the diff lists (it lists only changed ones) is the new metrics.json's value.
    let after = read_metrics(&dir.join("runs/train/metrics.json"));
    let changed = diff["runs/train/metrics.json"].as_object().unwrap();
    for (key, d) in changed {
        assert_eq!(d["new"], after[key], "{key}: {diff}");
    }
    assert!(changed.contains_key("train_loss"), "{diff}");
    repo.commit("three epochs");

    // detect-changes on that commit: train filter matched, and dvc.lock's new model is a delta.
    let json = repo.ok(
        env!("CARGO_BIN_EXE_wms"),
        &[
            "detect-changes",
            "--base",
            "HEAD~1",
            "--head",
            "HEAD",
            "--format",
            "json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["should_train"], true, "{report:#}");
    assert_eq!(report["data_changed"], true, "{report:#}");
    let deltas = report["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no DVC deltas in {report:#}"));
    assert!(
        deltas
            .iter()
            .any(|d| d["output"] == "runs/train/best.safetensors"
                && d["stage"] == "train"
                && d["kind"] == "modified"),
        "{report:#}"
    );
}
