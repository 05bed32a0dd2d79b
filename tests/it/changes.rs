//! `wms detect-changes` against real repositories built with the git CLI, one per kind of
//! event. For every scenario the changed-file list must equal `git diff --name-only -M` over
//! the same base and head, and the filters must decide as documented (issue 5).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wms::changes::Filters;
use wms::changes::glob::Glob;

use crate::servers::{GitDaemon, GitSmartHttp};
use crate::util::{self, TestCommand, TestOutput};

const ZERO: &str = "0000000000000000000000000000000000000000";

/// A git command isolated from the machine's configuration, with a fixed identity and clock.
fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .args([
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
            "-c",
            "core.autocrlf=false",
        ]);
    cmd
}

fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = git_command(dir).args(args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository in a temp dir.
struct Repo {
    _tmp: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("repo");
        std::fs::create_dir_all(&path).unwrap();
        run_git(&path, &["init", "-q", "-b", "main"]);
        Repo {
            _tmp: Some(tmp),
            path,
        }
    }

    fn at(path: PathBuf) -> Repo {
        Repo { _tmp: None, path }
    }

    fn git(&self, args: &[&str]) -> String {
        run_git(&self.path, args)
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
        let p = self.path.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.path.join(rel)).unwrap();
        self
    }

    /// `git add -A && git commit`, returning the new sha.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.rev("HEAD")
    }

    fn rev(&self, spec: &str) -> String {
        self.git(&["rev-parse", &format!("{spec}^{{commit}}")])
    }

    /// What git itself reports as changed, with rename detection.
    fn git_diff(&self, base: &str, head: &str) -> BTreeSet<String> {
        self.git(&["diff", "--name-only", "-M", base, head])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The usual starting point: a model repository on `main` with two commits.
    fn model_repo() -> Repo {
        let r = Repo::new();
        r.write("README.md", "# model\n")
            .write("configs/train.yaml", "epochs: 50\n")
            .write(
                "torchserve/config.properties",
                "inference_address=http://0.0.0.0:8080\n",
            )
            .write("src/app.py", "print('hi')\n");
        r.commit("initial");
        r.write("docs/intro.md", "intro\n");
        r.commit("docs");
        r
    }
}

/// The result of one `wms detect-changes` run.
struct Run {
    out: TestOutput,
    json: Value,
}

impl Run {
    fn files(&self) -> BTreeSet<String> {
        self.json["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect()
    }

    fn flag(&self, key: &str) -> bool {
        self.json[key]
            .as_bool()
            .unwrap_or_else(|| panic!("{key} in {}", self.json))
    }

    fn filter(&self, name: &str) -> bool {
        self.json["filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("filter {name}"))["matched"]
            .as_bool()
            .unwrap()
    }

    #[track_caller]
    fn output(&self, key: &str) -> &str {
        self.out.output(key)
    }

    fn base(&self) -> &str {
        self.json["base"].as_str().unwrap()
    }

    fn stderr(&self) -> String {
        self.out.stderr()
    }

    fn reasons(&self) -> String {
        self.json["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `wms detect-changes --format json` in `repo`, optionally as the runner would call it for
/// `event` (name, payload); asserts success and parses stdout.
#[track_caller]
fn detect(repo: &Path, event: Option<(&str, Value)>, extra: &[&str]) -> Run {
    let out = detect_raw(repo, event, extra).ok();
    let json: Value = serde_json::from_slice(&out.output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{out}"));
    Run { out, json }
}

fn detect_raw(repo: &Path, event: Option<(&str, Value)>, extra: &[&str]) -> TestCommand {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    detect_with(repo, event, &args, &[])
}

/// `wms detect-changes ARGS` with extra environment variables (`GITHUB_ACTIONS`, …), with step
/// outputs and a job summary of its own.
fn detect_with(
    repo: &Path,
    event: Option<(&str, Value)>,
    args: &[&str],
    env: &[(&str, &str)],
) -> TestCommand {
    let mut cmd = util::wms()
        .current_dir(repo)
        .arg("detect-changes")
        .args(args)
        .envs(env.iter().copied())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .step_outputs()
        .step_summary();
    let home = cmd.scratch("home");
    cmd = cmd.env("HOME", home);
    match event {
        Some((name, payload)) => cmd.github_event(name, &payload),
        None => cmd,
    }
}

fn push_event(git_ref: &str, before: &str, after: &str) -> Value {
    serde_json::json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "created": before == ZERO,
        "deleted": false,
        "forced": false,
        "repository": {"default_branch": "main"},
    })
}

fn pr_event(number: u64, base: &str, head: &str) -> Value {
    serde_json::json!({
        "number": number,
        "pull_request": {"number": number, "base": {"sha": base, "ref": "main"}, "head": {"sha": head}},
        "repository": {"default_branch": "main"},
    })
}

#[test]
fn push_on_a_branch_compares_before_with_after() {
    let r = Repo::model_repo();
    let before = r.rev("HEAD");
    r.write("configs/train.yaml", "epochs: 60\n")
        .write("docs/intro.md", "more\n");
    r.commit("tune");
    r.write("src/app.py", "print('bye')\n");
    let after = r.commit("code");
    let run = detect(
        &r.path,
        Some(("push", push_event("refs/heads/main", &before, &after))),
        &[],
    );
    assert_eq!(run.files(), r.git_diff(&before, &after));
    assert_eq!(run.base(), before);
    assert!(run.flag("should_train") && run.flag("should_deploy"));
    assert!(run.filter("docs"));
    assert!(!run.flag("data_changed"));
    assert_eq!(run.output("should_train"), "true");
    assert_eq!(run.output("train_count"), "1");
    assert_eq!(run.output("train_files"), r#"["configs/train.yaml"]"#);
    assert_eq!(run.output("changes"), r#"["train","docs"]"#);
    assert_eq!(run.output("base"), before);
    assert_eq!(run.output("head"), after);
    let reasons = run.output("reasons");
    assert!(
        reasons.contains("should_train is true: filter `train` matched configs/train.yaml"),
        "{reasons}"
    );
    assert!(reasons.contains("should_deploy is true"), "{reasons}");
    assert!(
        run.out.summary.contains("| `train` | true | 1 |"),
        "{}",
        run.out.summary
    );
    assert!(
        run.out.summary.contains("| `should_train` | true |"),
        "{}",
        run.out.summary
    );
}

#[test]
fn first_push_of_a_new_branch_uses_the_merge_base_with_the_default_branch() {
    let r = Repo::model_repo();
    let fork_point = r.rev("HEAD");
    r.git(&["checkout", "-q", "-b", "feature"]);
    r.write(
        "torchserve/config.properties",
        "inference_address=http://0.0.0.0:9090\n",
    );
    r.commit("serve on 9090");
    r.write("docs/serve.md", "serving\n");
    let after = r.commit("docs");
    // main moves on: its new files must not show up in the branch's changes.
    r.git(&["checkout", "-q", "main"]);
    r.write("configs/train.yaml", "epochs: 70\n");
    r.commit("main moves");
    r.git(&["checkout", "-q", "feature"]);

    let run = detect(
        &r.path,
        Some(("push", push_event("refs/heads/feature", ZERO, &after))),
        &[],
    );
    assert_eq!(run.base(), fork_point);
    assert_eq!(run.files(), r.git_diff(&fork_point, &after));
    assert!(!run.flag("should_train"), "{}", run.reasons());
    assert!(run.flag("should_deploy"));
    assert!(run.reasons().contains("new branch"), "{}", run.reasons());
}

#[test]
fn force_push_with_a_vanished_before_falls_back_to_the_merge_base_with_a_warning() {
    let r = Repo::model_repo();
    let fork_point = r.rev("HEAD");
    r.git(&["checkout", "-q", "-b", "feature"]);
    r.write("configs/train.yaml", "epochs: 5\n");
    let after = r.commit("rewritten history");
    let vanished = "1234567890abcdef1234567890abcdef12345678";
    let mut event = push_event("refs/heads/feature", vanished, &after);
    event["forced"] = Value::Bool(true);
    let run = detect(&r.path, Some(("push", event)), &[]);
    assert_eq!(run.base(), fork_point);
    assert_eq!(run.files(), r.git_diff(&fork_point, &after));
    assert!(run.flag("should_train"));
    let stderr = run.stderr();
    assert!(
        stderr.contains("warning") && stderr.contains("1234567") && stderr.contains("force-push"),
        "{stderr}"
    );
}

#[test]
fn pull_request_from_a_fork_like_second_branch() {
    let r = Repo::model_repo();
    // The contributor works in their own clone, from the current main.
    let fork_dir = r.path.parent().unwrap().join("fork");
    run_git(
        r.path.parent().unwrap(),
        &[
            "clone",
            "-q",
            r.path.to_str().unwrap(),
            fork_dir.to_str().unwrap(),
        ],
    );
    let fork = Repo::at(fork_dir);
    fork.write("data/training/images.dvc", dvc_file(1244, 80_123_456, "aa"));
    fork.commit("track images");
    fork.write("data/training/images.dvc", dvc_file(1489, 96_300_000, "bb"))
        .write("docs/data.md", "data\n");
    let head = fork.commit("more images");
    // Upstream main moves on meanwhile.
    r.write("torchserve/config.properties", "x=1\n");
    let base = r.commit("upstream change");
    // GitHub exposes the fork's head as refs/pull/<n>/head in the base repository.
    r.git(&[
        "fetch",
        "-q",
        fork.path.to_str().unwrap(),
        "main:refs/pull/7/head",
    ]);

    let run = detect(
        &r.path,
        Some(("pull_request", pr_event(7, &base, &head))),
        &[],
    );
    let merge_base = r.git(&["merge-base", &base, &head]);
    assert_eq!(run.base(), merge_base);
    assert_eq!(run.files(), r.git_diff(&merge_base, &head));
    let three_dots: BTreeSet<String> = r
        .git(&["diff", "--name-only", "-M", &format!("{base}...{head}")])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(run.files(), three_dots);
    assert!(!run.files().contains("torchserve/config.properties"));
    assert!(run.flag("should_train") && run.flag("data_changed"));
    assert!(
        run.reasons()
            .contains("data/training/images: newly tracked (1489 files, 96.3 MB)"),
        "{}",
        run.reasons()
    );
    // pull_request_target carries the same shas.
    let target = detect(
        &r.path,
        Some(("pull_request_target", pr_event(7, &base, &head))),
        &[],
    );
    assert_eq!(target.files(), run.files());
}

fn dvc_file(nfiles: u64, size: u64, md5_prefix: &str) -> String {
    format!(
        "outs:\n- md5: {md5_prefix}{}.dir\n  size: {size}\n  nfiles: {nfiles}\n  hash: md5\n  path: images\n",
        "0".repeat(32 - md5_prefix.len())
    )
}

#[test]
fn dvc_deltas_report_how_tracked_outputs_changed() {
    let r = Repo::model_repo();
    r.write("data/training/images.dvc", dvc_file(1244, 80_123_456, "aa"))
        .write(
            "dvc.lock",
            "schema: '2.0'\nstages:\n  train:\n    cmd: wms-train train\n    outs:\n    - path: models/best.safetensors\n      hash: md5\n      md5: 11112222333344445555666677778888\n      size: 7864320\n",
        );
    let before = r.commit("data v1");
    r.write("data/training/images.dvc", dvc_file(1489, 96_300_000, "bb"))
        .write(
            "dvc.lock",
            "schema: '2.0'\nstages:\n  train:\n    cmd: wms-train train\n    outs:\n    - path: models/best.safetensors\n      hash: md5\n      md5: 99990000333344445555666677778888\n      size: 7864320\n",
        );
    let after = r.commit("data v2");
    let run = detect(&r.path, None, &["--base", &before, "--head", &after]);
    assert_eq!(run.files(), r.git_diff(&before, &after));
    assert!(run.flag("data_changed") && run.flag("should_train"));
    let reasons = run.reasons();
    assert!(
        reasons.contains("data/training/images: 1244 → 1489 files (+245), 80.1 MB → 96.3 MB"),
        "{reasons}"
    );
    assert!(
        reasons.contains("models/best.safetensors: content changed"),
        "{reasons}"
    );
    assert_eq!(run.json["data"].as_array().unwrap().len(), 2);
    assert!(
        run.out.summary.contains("Data changes (DVC)"),
        "{}",
        run.out.summary
    );

    // Reformatting a .dvc file without changing the data is not a data change.
    r.write(
        "data/training/images.dvc",
        "outs:\n- path: images\n  hash: md5\n  nfiles: 1489\n  size: 96300000\n  md5: bb000000000000000000000000000000.dir\n",
    );
    let reformatted = r.commit("reorder keys");
    let run = detect(&r.path, None, &["--base", &after, "--head", &reformatted]);
    assert!(!run.flag("data_changed"));
    assert!(
        run.flag("should_train"),
        "the train filter still sees the .dvc file"
    );
    assert!(
        run.reasons().contains("no tracked output did"),
        "{}",
        run.reasons()
    );
}

#[test]
fn merge_commit_compares_against_its_first_parent() {
    let r = Repo::model_repo();
    r.git(&["checkout", "-q", "-b", "feature"]);
    r.write("torchserve/handler.py", "handler\n");
    r.commit("handler");
    r.git(&["checkout", "-q", "main"]);
    r.write("docs/other.md", "other\n");
    let before = r.commit("main work");
    r.git(&["merge", "-q", "--no-ff", "-m", "merge feature", "feature"]);
    let merge = r.rev("HEAD");

    let run = detect(
        &r.path,
        Some(("push", push_event("refs/heads/main", &before, &merge))),
        &[],
    );
    assert_eq!(run.files(), r.git_diff(&before, &merge));
    assert_eq!(
        run.files(),
        BTreeSet::from(["torchserve/handler.py".to_string()])
    );
    assert!(run.flag("should_deploy") && !run.flag("should_train"));

    // With only a head, a merge commit is compared with its first parent too.
    let run = detect(&r.path, None, &["--head", &merge]);
    assert_eq!(run.base(), before);
    assert_eq!(run.files(), r.git_diff(&format!("{merge}^1"), &merge));
    assert!(run.reasons().contains("merge commit"), "{}", run.reasons());
    // And locally, without event or flags, HEAD is that merge commit.
    let local = detect(&r.path, None, &[]);
    assert_eq!(local.files(), run.files());
}

#[test]
fn rename_is_detected_like_git_diff_m() {
    let r = Repo::model_repo();
    let body: String = (0..40).map(|i| format!("key{i}: {i}\n")).collect();
    r.write("configs/old_name.yaml", &body);
    let before = r.commit("config");
    r.remove("configs/old_name.yaml");
    r.write("archive/new_name.yaml", format!("{body}extra: 1\n"));
    let after = r.commit("move config");
    let run = detect(&r.path, None, &["--base", &before, "--head", &after]);
    assert_eq!(run.files(), r.git_diff(&before, &after));
    let file = &run.json["files"][0];
    assert_eq!(file["status"], "renamed");
    assert_eq!(file["old_path"], "configs/old_name.yaml");
    assert_eq!(file["path"], "archive/new_name.yaml");
    // Moving a file out of configs/ changes the training configuration.
    assert!(run.flag("should_train"), "{}", run.reasons());
}

#[test]
fn delete_is_reported_with_its_old_path() {
    let r = Repo::model_repo();
    let before = r.rev("HEAD");
    r.remove("torchserve/config.properties");
    let after = r.commit("drop torchserve config");
    let filters = r.path.join("filters.yaml");
    std::fs::write(
        &filters,
        "deploy:\n  - 'torchserve/**'\ndeleted_only:\n  - deleted: '**'\nadded_only:\n  - added: '**'\n",
    )
    .unwrap();
    let run = detect(
        &r.path,
        None,
        &[
            "--base",
            &before,
            "--head",
            &after,
            "--filters",
            filters.to_str().unwrap(),
        ],
    );
    assert_eq!(run.files(), r.git_diff(&before, &after));
    assert_eq!(run.json["files"][0]["status"], "deleted");
    assert!(run.filter("deploy") && run.filter("deleted_only") && !run.filter("added_only"));
    // No `train` filter in this file: nothing is trained, deploy still decides.
    assert!(!run.flag("should_train") && run.flag("should_deploy"));
}

#[test]
fn binary_files_are_listed_by_name() {
    let r = Repo::model_repo();
    let before = r.rev("HEAD");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    r.write("models/weights.bin", &bytes);
    r.commit("weights");
    let mut changed = bytes.clone();
    changed[5000] ^= 0xff;
    r.write("models/weights.bin", &changed);
    let after = r.commit("new weights");
    let run = detect(&r.path, None, &["--base", &before, "--head", &after]);
    assert_eq!(run.files(), r.git_diff(&before, &after));
    assert_eq!(run.files().len(), 1);
}

#[test]
fn submodule_pointer_change_is_one_changed_path() {
    let r = Repo::model_repo();
    let sub = Repo::new();
    sub.write("lib.txt", "v1\n");
    sub.commit("sub v1");
    r.git(&[
        "submodule",
        "add",
        "-q",
        sub.path.to_str().unwrap(),
        "vendor/sub",
    ]);
    let before = r.commit("add submodule");
    sub.write("lib.txt", "v2\n");
    let sub_v2 = sub.commit("sub v2");
    let inner = Repo::at(r.path.join("vendor/sub"));
    inner.git(&["fetch", "-q", "origin"]);
    inner.git(&["checkout", "-q", &sub_v2]);
    let after = r.commit("bump submodule");
    let run = detect(&r.path, None, &["--base", &before, "--head", &after]);
    assert_eq!(run.files(), r.git_diff(&before, &after));
    assert_eq!(run.files(), BTreeSet::from(["vendor/sub".to_string()]));
    assert_eq!(run.json["files"][0]["status"], "modified");
}

#[test]
fn tag_push_compares_with_the_previous_tag_of_the_same_pattern() {
    let r = Repo::model_repo();
    r.git(&["tag", "v1.9.0"]);
    r.write("configs/train.yaml", "epochs: 1\n");
    let v1_10 = r.commit("one");
    r.git(&["tag", "-a", "-m", "release", "v1.10.0"]);
    r.write("docs/a.md", "a\n");
    r.commit("two");
    // Tags of other patterns in between must not be picked.
    r.git(&["tag", "v1.11.0-rc1"]);
    r.git(&["tag", "model-7"]);
    r.write("torchserve/config.properties", "y=2\n");
    let head = r.commit("three");
    r.git(&["tag", "v1.11.0"]);
    let run = detect(
        &r.path,
        Some(("push", push_event("refs/tags/v1.11.0", ZERO, &head))),
        &[],
    );
    assert_eq!(run.base(), v1_10);
    assert_eq!(run.files(), r.git_diff("v1.10.0", "v1.11.0"));
    assert!(
        run.reasons().contains("previous tag v1.10.0"),
        "{}",
        run.reasons()
    );

    // The first tag of a pattern compares against the empty tree: everything is new.
    let run = detect(
        &r.path,
        Some(("push", push_event("refs/tags/model-7", ZERO, &head))),
        &[],
    );
    assert_eq!(run.base(), "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
    assert_eq!(run.files(), r.git_diff(run.base(), &head));
}

#[test]
fn manual_runs_are_always_or_since_a_ref() {
    let r = Repo::model_repo();
    let first = r.rev("HEAD~1");
    let run = detect(
        &r.path,
        Some(("workflow_dispatch", serde_json::json!({}))),
        &[],
    );
    assert!(run.flag("always") && run.flag("should_train") && run.flag("should_deploy"));
    assert!(run.filter("docs"));
    assert!(run.files().is_empty());
    let run = detect(
        &r.path,
        Some(("schedule", serde_json::json!({"schedule": "0 3 * * *"}))),
        &["--manual-base", &first],
    );
    assert!(!run.flag("always"));
    assert_eq!(run.files(), r.git_diff(&first, "HEAD"));
    assert!(run.filter("docs") && !run.flag("should_train"));
}

#[test]
fn a_pull_request_touching_5000_files_is_handled() {
    let r = Repo::model_repo();
    let base = r.rev("HEAD");
    r.git(&["checkout", "-q", "-b", "big"]);
    for i in 0..5000 {
        r.write(
            &format!("data/raw/{:02}/sample_{i:04}.txt", i % 50),
            format!("sample {i}\n"),
        );
    }
    let head = r.commit("5000 files");
    let started = Instant::now();
    let run = detect(
        &r.path,
        Some(("pull_request", pr_event(1, &base, &head))),
        &[],
    );
    let took = started.elapsed();
    assert_eq!(run.files().len(), 5000);
    assert_eq!(run.files(), r.git_diff(&base, &head));
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// An origin with history and a `--depth 1` clone of it, as actions/checkout makes by default.
fn origin_and_shallow_clone() -> (Repo, Repo, String, String) {
    let origin = Repo::model_repo();
    let before = origin.rev("HEAD");
    origin.write("configs/train.yaml", "epochs: 80\n");
    origin.commit("tune");
    origin.write("docs/more.md", "more\n");
    let after = origin.commit("docs");
    let clone_dir = origin.path.parent().unwrap().join("shallow");
    run_git(
        origin.path.parent().unwrap(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &format!("file://{}", origin.path.display()),
            clone_dir.to_str().unwrap(),
        ],
    );
    let clone = Repo::at(clone_dir);
    assert_eq!(clone.git(&["rev-parse", "--is-shallow-repository"]), "true");
    (origin, clone, before, after)
}

#[test]
fn shallow_clone_without_a_remote_exits_1_with_the_fetch_depth_hint() {
    let (_origin, clone, before, after) = origin_and_shallow_clone();
    clone.git(&["remote", "remove", "origin"]);
    let out = detect_raw(
        &clone.path,
        Some(("push", push_event("refs/heads/main", &before, &after))),
        &[],
    )
    .fails(1);
    let stderr = out.stderr();
    assert_eq!(stderr.trim().lines().count(), 1, "{out}");
    assert!(stderr.contains("fetch-depth: 0"), "{out}");
    // A pull request needs the merge-base, which is outside the clone too.
    let out = detect_raw(
        &clone.path,
        Some(("pull_request", pr_event(3, &before, &after))),
        &[],
    )
    .fails(1);
    assert!(out.stderr().contains("fetch-depth: 0"), "{out}");
}

#[test]
fn shallow_clone_with_a_remote_fetches_the_missing_history() {
    let (origin, clone, before, after) = origin_and_shallow_clone();
    let daemon = GitDaemon::start(origin.path.parent().unwrap());
    clone.git(&[
        "remote",
        "set-url",
        "origin",
        &format!("git://127.0.0.1:{}/repo", daemon.port),
    ]);
    let run = detect(
        &clone.path,
        Some(("push", push_event("refs/heads/main", &before, &after))),
        &[],
    );
    assert_eq!(run.base(), before);
    assert_eq!(run.files(), origin.git_diff(&before, &after));
    assert!(run.flag("should_train"));
    assert!(run.reasons().contains("shallow"), "{}", run.reasons());
    assert_eq!(
        clone.git(&["rev-parse", "--is-shallow-repository"]),
        "false"
    );
}

/// A shallow clone whose remote speaks smart HTTP (as github.com does) fetches through wms's
/// own HTTP transport (libgit2 is built without TLS), sending the `extraheader` credentials
/// actions/checkout stores; without them the fetch fails with one line naming the 401.
#[test]
fn shallow_clone_with_an_http_remote_fetches_with_the_checkout_credentials() {
    let (origin, clone, before, after) = origin_and_shallow_clone();
    let auth = "basic eC1hY2Nlc3MtdG9rZW46dGVzdA==";
    let server = GitSmartHttp::start(origin.path.parent().unwrap(), Some(auth));
    let host = format!("http://127.0.0.1:{}/", server.port);
    clone.git(&["remote", "set-url", "origin", &format!("{host}repo")]);
    let event = || Some(("push", push_event("refs/heads/main", &before, &after)));

    let out = detect_raw(&clone.path, event(), &[]).fails(1);
    let stderr = out.stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("401 Unauthorized"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    clone.git(&[
        "config",
        &format!("http.{host}.extraheader"),
        &format!("AUTHORIZATION: {auth}"),
    ]);
    let run = detect(&clone.path, event(), &[]);
    assert_eq!(run.base(), before);
    assert_eq!(run.files(), origin.git_diff(&before, &after));
    assert!(run.reasons().contains("shallow"), "{}", run.reasons());
    assert_eq!(
        clone.git(&["rev-parse", "--is-shallow-repository"]),
        "false"
    );
    let requests = server.requests();
    let lines: Vec<&str> = requests.iter().map(|r| r.0.as_str()).collect();
    assert!(
        lines.contains(&"GET /repo/info/refs?service=git-upload-pack HTTP/1.1"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"POST /repo/git-upload-pack HTTP/1.1"),
        "{lines:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.1.starts_with("git/") && r.1.contains("(wms/")),
        "{requests:?}"
    );
}

#[test]
fn bad_payloads_and_filters_fail_with_a_hint_not_a_panic() {
    let r = Repo::model_repo();
    let mut errors = Vec::new();
    for (name, payload) in [
        (
            "pull_request",
            serde_json::json!({"pull_request": {"base": {}}}),
        ),
        ("push", serde_json::json!([1, 2, 3])),
        ("push", serde_json::json!({"before": 7})),
    ] {
        let out = detect_raw(&r.path, Some((name, payload.clone())), &[]).fails(1);
        assert!(!out.stderr().contains("panicked"), "{out}");
        errors.push(out.error_line());
    }
    for extra in [
        &["--filters", "train: ['{a,b']\nx: [1]\n"][..],
        &["--base", "no-such-ref"],
    ] {
        errors.push(detect_raw(&r.path, None, extra).fails(1).error_line());
    }
    let _redacted = util::redactions().bind_to_scope();
    insta::assert_snapshot!("detect_changes_bad_input", errors.join("\n"));
}

#[test]
fn repository_filters_file_replaces_the_defaults() {
    let r = Repo::model_repo();
    r.write(".github/wms-filters.yaml", "train:\n  - 'src/**'\n");
    r.commit("filters");
    r.write("src/app.py", "changed\n");
    let after = r.commit("code");
    let run = detect(&r.path, None, &["--head", &after]);
    assert!(run.flag("should_train"));
    assert_eq!(run.json["filters_origin"], ".github/wms-filters.yaml");
    assert_eq!(run.json["filters"].as_array().unwrap().len(), 1);
}

/// Glob cases from dorny/paths-filter's README and picomatch's documented behaviour with
/// `dot: true`.
#[test]
fn globs_match_like_paths_filter_picomatch_with_dot() {
    let cases: &[(&str, &str, bool)] = &[
        // "Match all files" / dotfiles are matched because `dot: true`.
        ("**", "src/main.rs", true),
        ("**", ".github/workflows/ci.yml", true),
        ("**", ".gitignore", true),
        ("*", ".env", true),
        (".github/workflows/**", ".github/workflows/build.yml", true),
        ("**/*.yml", ".github/workflows/build.yml", true),
        // Directory filters from the README: `backend/**`, `frontend/**`.
        ("backend/**", "backend/src/app.ts", true),
        ("backend/**", "backend", true),
        ("backend/**", "frontend/src/app.ts", false),
        ("backend/**", "mybackend/app.ts", false),
        // `*` stays inside one directory level; `**/` may match zero directories.
        ("*.md", "README.md", true),
        ("*.md", "docs/README.md", false),
        ("**/*.md", "README.md", true),
        ("**/*.md", "docs/deep/README.md", true),
        ("src/*.js", "src/a/b.js", false),
        ("src/**/*.js", "src/b.js", true),
        ("src/**/*.js", "src/a/b/c.js", true),
        // `pkg/a/b/c/**` with `!**/*.jpeg` (README's predicate-quantifier example).
        ("pkg/a/b/c/**", "pkg/a/b/c/d.jpeg", true),
        ("**/*.jpeg", "pkg/a/b/c/d.jpeg", true),
        // Braces, classes, `?`.
        ("**/*.{js,ts}", "web/app.ts", true),
        ("**/*.{js,ts}", "web/app.tsx", false),
        ("file?.txt", "file1.txt", true),
        ("file?.txt", "file/.txt", false),
        ("[a-c]*.txt", "b.txt", true),
        ("[!a-c]*.txt", "b.txt", false),
        // Case-sensitive.
        ("*.MD", "README.md", false),
    ];
    for &(pattern, path, expect) in cases {
        assert_eq!(
            Glob::new(pattern).unwrap().is_match(path),
            expect,
            "{pattern:?} vs {path:?}"
        );
    }
    // Negation is applied in order (README: exclude Markdown and images from a package).
    let filters = Filters::parse(
        "readme",
        "backend:\n  - 'pkg/a/b/c/**'\n  - '!**/*.jpeg'\n  - '!**/*.md'\ndocs_but_not_drafts:\n  - 'docs/**'\n  - '!docs/drafts/**'\n  - 'docs/drafts/published.md'\n",
    )
    .unwrap();
    let decide = |filter: &str, path: &str| {
        let f = filters.filters.iter().find(|f| f.name == filter).unwrap();
        f.matches(&wms::changes::FileChange {
            path: path.into(),
            old_path: None,
            kind: wms::changes::ChangeKind::Modified,
        })
    };
    let ordered: &[(&str, &str, bool)] = &[
        ("backend", "pkg/a/b/c/main.go", true),
        ("backend", "pkg/a/b/c/photo.jpeg", false),
        ("backend", "pkg/a/b/c/README.md", false),
        ("backend", "pkg/other/main.go", false),
        ("docs_but_not_drafts", "docs/guide.md", true),
        ("docs_but_not_drafts", "docs/drafts/wip.md", false),
        ("docs_but_not_drafts", "docs/drafts/published.md", true),
    ];
    for &(filter, path, expect) in ordered {
        assert_eq!(decide(filter, path), expect, "{filter} vs {path}");
    }
}

#[test]
fn a_file_turning_into_a_directory_is_listed_like_git() {
    let r = Repo::model_repo();
    r.write("models/current", "a file first\n")
        .write("models/keep/x.txt", "x\n");
    let before = r.commit("file");
    r.remove("models/current");
    r.write("models/current/weights.txt", "now a directory\n")
        .write("models/keep/x.txt", "x2\n");
    let after = r.commit("directory");
    let run = detect(&r.path, None, &["--base", &before, "--head", &after]);
    assert_eq!(run.files(), r.git_diff(&before, &after));
    assert_eq!(run.files().len(), 3, "{:?}", run.files());
}

/// File names a pull request can commit to attack the log, the step outputs and the job summary:
/// a newline or carriage return followed by a workflow command, a name that is one, Markdown
/// that would start a heading or break a table or code span, a terminal escape.
const HOSTILE_NAMES: &[&str] = &[
    "a\n::warning::pwned",
    "b\r::error::carriage",
    "::add-mask::x",
    "# heading",
    "tick`s|pipe",
    "esc\u{1b}[31mred",
];

/// Lines the Actions runner would run as workflow commands: it splits on `\n` and on `\r`, and
/// trims leading whitespace before looking for `::`.
fn workflow_commands(text: &str) -> Vec<&str> {
    text.split(['\n', '\r'])
        .map(str::trim_start)
        .filter(|l| l.starts_with("::"))
        .collect()
}

/// The number of cell separators of a Markdown table row (`|` not escaped as `\|`).
fn table_separators(row: &str) -> usize {
    let mut n = 0;
    let mut escaped = false;
    for c in row.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '|' if !escaped => n += 1,
            _ => escaped = false,
        }
    }
    n
}

/// A repository whose head commit adds [`HOSTILE_NAMES`] and a `.dvc` file whose output path
/// is hostile too; returns it with the base commit, a branch whose name is Markdown.
fn hostile_repo() -> (Repo, String) {
    let r = Repo::model_repo();
    let base = r.rev("HEAD");
    r.git(&["branch", "base`|<b>x"]);
    for name in HOSTILE_NAMES {
        r.write(name, "x\n");
    }
    r.write(
        "data/evil.dvc",
        "outs:\n- md5: aa000000000000000000000000000000.dir\n  size: 1\n  nfiles: 1\n  hash: md5\n  path: \"o\\n::notice::dvc\"\n",
    );
    r.commit("hostile names");
    (r, base)
}

/// Issue 11, part 5: changed file names reach stdout, the step outputs and the job summary
/// escaped, so none of them runs as a workflow command or injects Markdown.
#[test]
fn issue11_newline_in_file_name_cannot_inject_workflow_commands() {
    let (r, _) = hostile_repo();
    let filters = "train:\n  - '**'\ndeploy:\n  - 'b*'\n  - 'tick*'\n";
    let out = detect_with(
        &r.path,
        None,
        &[
            "--format",
            "text",
            "--base",
            "base`|<b>x",
            "--filters",
            filters,
        ],
        &[("GITHUB_ACTIONS", "true")],
    )
    .ok();
    let (stdout, stderr, summary) = (out.stdout(), out.stderr(), &out.summary);
    // What a person reads, with the commits' short shas filtered.
    let (base, head) = (r.rev("HEAD~1"), r.rev("HEAD"));
    let filtered = |text: &str| {
        text.replace(&base[..7], "<base>")
            .replace(&head[..7], "<head>")
    };
    assert_eq!(
        filtered(&stdout),
        r"base <base>  head <head>  (local, 7 changed file(s))
  train            true  7
  deploy           true  2
should_train=true should_deploy=true data_changed=true
  data: data/o\n::notice::dvc: newly tracked (1 files, 1 B)
- Compared <base> (base`|<b>x) with <head> (HEAD) as given.
- 7 changed file(s); filters from (inline).
- should_train is true: filter `train` matched # heading, ::add-mask::x, a\n::warning::pwned and 4 more.
- should_deploy is true: filter `deploy` matched b\r::error::carriage, tick`s|pipe.
- data_changed is true: data/o\n::notice::dvc: newly tracked (1 files, 1 B).
"
    );
    {
        let _redacted = util::redactions().bind_to_scope();
        insta::assert_snapshot!("detect_changes_hostile_step_summary", filtered(summary));
    }
    assert_eq!(workflow_commands(&stdout), Vec::<&str>::new(), "{stdout}");
    assert_eq!(workflow_commands(&stderr), Vec::<&str>::new(), "{stderr}");
    for text in [&*stdout, &*stderr, &**summary] {
        assert!(!text.contains(['\r', '\u{1b}']), "{text:?}");
    }

    // Step outputs: the lists are JSON (names exact, on one line); `reasons` is escaped.
    let files: Vec<String> = serde_json::from_str(out.output("train_files")).unwrap();
    for name in HOSTILE_NAMES {
        assert!(files.iter().any(|f| f == name), "{name:?} in {files:?}");
    }
    let reasons = out.output("reasons");
    assert_eq!(workflow_commands(reasons), Vec::<&str>::new(), "{reasons}");
    assert!(!reasons.contains(['\r', '\u{1b}']), "{reasons:?}");
    for line in reasons.lines() {
        assert!(
            ["Compared", "should_", "data_changed", "7 changed"]
                .iter()
                .any(|start| line.starts_with(start)),
            "a reason line starts with something wms did not write: {line:?}"
        );
    }

    // The summary: one heading (wms's), every table row as many cells as its header, no HTML.
    let headings: Vec<&str> = summary
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(headings, ["### wms detect-changes"], "{summary}");
    let mut header = None;
    for line in summary.lines() {
        if line.starts_with('|') {
            let n = table_separators(line);
            let expected = *header.get_or_insert(n);
            assert_eq!(n, expected, "row {line:?} in\n{summary}");
        } else {
            header = None;
        }
    }
    assert!(!summary.contains("<b>"), "{summary}");
    assert_eq!(workflow_commands(summary), Vec::<&str>::new(), "{summary}");
}

/// The same repository in JSON: the data keeps the exact names (JSON escapes them), the
/// sentences are escaped like the log.
#[test]
fn issue11_json_report_keeps_exact_names_and_escapes_the_reasons() {
    let (r, base) = hostile_repo();
    let run = detect(
        &r.path,
        None,
        &["--base", &base, "--filters", "train: ['**']"],
    );
    let files = run.files();
    for name in HOSTILE_NAMES {
        assert!(files.contains(*name), "{name:?} in {files:?}");
    }
    let reasons = run.reasons();
    assert_eq!(workflow_commands(&reasons), Vec::<&str>::new(), "{reasons}");
    assert!(!reasons.contains(['\r', '\u{1b}']), "{reasons:?}");
    assert_eq!(
        run.json["data"][0]["output"], "data/o\n::notice::dvc",
        "{}",
        run.json
    );
}

/// Asserts that under `GITHUB_ACTIONS=true` the first line of stdout masks `secret` and that it
/// appears nowhere else (stdout, stderr, step outputs, summary); returns stdout and stderr.
fn assert_masked_first_and_never_shown(secret: &str, out: &TestOutput) -> String {
    let (stdout, stderr) = (out.stdout(), out.stderr());
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("::add-mask::{secret}").as_str()),
        "the mask comes first:\n{stdout}"
    );
    let rest: Vec<&str> = lines.collect();
    for (what, text) in [
        ("stdout", rest.join("\n")),
        ("stderr", stderr.to_string()),
        ("outputs", format!("{:?}", out.outputs)),
        ("summary", out.summary.clone()),
    ] {
        assert!(!text.contains(secret), "{what} shows the secret:\n{text}");
    }
    format!("{stdout}{stderr}")
}

/// A GitHub token in the origin URL (`http://x-access-token:TOKEN@…`, as some checkouts and
/// scripts set it) is what the fetch authenticates with, and appears nowhere: not in the reasons
/// that name the fetched URL, not in the error of a refused fetch. In Actions it is masked first.
#[test]
fn issue11_token_in_the_remote_url_is_masked_and_never_printed() {
    use base64::Engine as _;
    const TOKEN: &str = "ghs_issue11SeCrEtToKeN";
    let (origin, clone, before, after) = origin_and_shallow_clone();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"));
    let server = GitSmartHttp::start(
        origin.path.parent().unwrap(),
        Some(&format!("Basic {basic}")),
    );
    let event = || Some(("push", push_event("refs/heads/main", &before, &after)));
    let env = [("GITHUB_ACTIONS", "true")];
    let set_url = |token: &str| {
        let url = format!(
            "http://x-access-token:{token}@127.0.0.1:{}/repo",
            server.port
        );
        clone.git(&["remote", "set-url", "origin", &url]);
    };

    // A token the server refuses: the one error names the URL without it.
    let old = format!("{TOKEN}old");
    set_url(&old);
    let refused = detect_with(&clone.path, event(), &["--format", "text"], &env).fails(1);
    let all = assert_masked_first_and_never_shown(&old, &refused);
    assert!(all.contains("401 Unauthorized"), "{all}");
    assert!(
        all.contains("http://***@127.0.0.1:"),
        "the URL is still named: {all}"
    );

    // The right token: the fetch works, and the reasons name the URL without it.
    set_url(TOKEN);
    let fetched = detect_with(&clone.path, event(), &["--format", "text"], &env).ok();
    let all = assert_masked_first_and_never_shown(TOKEN, &fetched);
    assert!(all.contains("shallow"), "{all}");
    assert!(all.contains("http://***@127.0.0.1:"), "{all}");
}
