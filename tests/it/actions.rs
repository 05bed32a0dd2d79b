//! The composite actions under `actions/` as a pull request could attack them: no input reaches a
//! shell script as text, and the binaries' cache key follows the action's own source (zizmor, the
//! real GitHub Actions linter, audits the actions with the workflows in `workflows.rs`). And every
//! input of every action reaches the binary: each is bound to a variable its step reads, and each
//! action's step runs here as the runner would run it (its `env:` evaluated, its script, the real
//! `wms` against the real MLflow, moto and registry servers) with the decision following every
//! input.

use std::collections::{BTreeMap, BTreeSet};
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

// ---------------------------------------------------------------------------------------------
// Every input of every action reaches the binary (#15)

/// How each action hands an input to its step: the variable whose value is exactly
/// `${{ inputs.<name> }}` in some step's `env:`.
fn input_bindings(action: &serde_yaml::Value) -> BTreeMap<String, Vec<(String, String)>> {
    let mut bound: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (n, step) in action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .enumerate()
    {
        let step_name = step["id"].as_str().map_or(n.to_string(), str::to_string);
        // The step's working directory is an input too (detect-changes).
        if let Some(input) = step["working-directory"]
            .as_str()
            .and_then(|v| v.strip_prefix("${{ inputs."))
            .and_then(|v| v.strip_suffix(" }}"))
        {
            bound
                .entry(input.to_string())
                .or_default()
                .push((step_name.clone(), "working-directory".to_string()));
        }
        for (var, value) in step["env"].as_mapping().cloned().unwrap_or_default() {
            let (Some(var), Some(value)) = (var.as_str(), value.as_str()) else {
                continue;
            };
            if let Some(input) = value
                .strip_prefix("${{ inputs.")
                .and_then(|v| v.strip_suffix(" }}"))
            {
                bound
                    .entry(input.to_string())
                    .or_default()
                    .push((step_name.clone(), var.to_string()));
            }
        }
    }
    bound
}

/// Structurally, for every action: each input is bound to a variable of a step, and that
/// variable is one the step's program reads: `INPUT_<NAME>` (what `wms` reads, hyphens kept, as
/// the runner names them for JavaScript actions) or a variable its script names. The
/// behaviour tests below then run the real binaries with those variables.
#[test]
fn every_action_input_is_bound_to_a_variable_its_step_reads() {
    let mut problems = Vec::new();
    for file in action_files() {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&fs_err::read_to_string(&file).unwrap()).unwrap();
        let dir = file.parent().unwrap();
        let bindings = input_bindings(&doc);
        let steps = steps(&file);
        for (input, _) in doc["inputs"].as_mapping().unwrap() {
            let input = input.as_str().unwrap();
            let Some(vars) = bindings.get(input) else {
                problems.push(format!("{}: input {input} reaches no step", file.display()));
                continue;
            };
            for (step_name, var) in vars {
                let step = steps
                    .iter()
                    .enumerate()
                    .find(|(n, s)| {
                        s["id"].as_str() == Some(step_name.as_str()) || n.to_string() == *step_name
                    })
                    .map(|(_, s)| s)
                    .unwrap();
                let run = step["run"].as_str().unwrap_or_default();
                // The script a step runs, when it runs one of the action's files.
                let script = run
                    .split('"')
                    .find_map(|part| {
                        part.strip_prefix("$GITHUB_ACTION_PATH/")
                            .map(|p| dir.join(p))
                            .filter(|p| p.is_file())
                    })
                    .map(|p| fs_err::read_to_string(p).unwrap())
                    .unwrap_or_default();
                let expected_input_var = format!("INPUT_{}", input.to_uppercase());
                // Variables wms itself reads (src/env_vars.rs), and the step's directory.
                let read_by_wms = ["GITHUB_TOKEN", "working-directory"].contains(&var.as_str());
                let read = *var == expected_input_var
                    || read_by_wms
                    || run.contains(&format!("${var}"))
                    || run.contains(&format!("${{{var}"))
                    || script.contains(&format!("${var}"))
                    || script.contains(&format!("${{{var}"));
                if !read {
                    problems.push(format!(
                        "{}: input {input} is bound to {var}, which step {step_name} never reads",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The outputs one step wrote, the job summary, and how it ended.
struct StepRun {
    out: std::process::Output,
    outputs: BTreeMap<String, String>,
    summary: String,
}

impl StepRun {
    fn text(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&self.out.stdout),
            String::from_utf8_lossy(&self.out.stderr)
        )
    }
}

/// A folder with `wms` (and `wms-serve`) as setup installs them: first on PATH.
fn bin_on_path() -> String {
    let dir = Path::new(env!("CARGO_BIN_EXE_wms")).parent().unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs step `step_id` of action `name` as the runner would: its `env:` with `${{ inputs.x }}`
/// replaced by `inputs` (each other input's declared default), `GITHUB_ACTION_PATH` the action's
/// folder, its `working-directory` (relative to `cwd`), bash with `set -eo pipefail` like
/// `shell: bash`, and `wms` on PATH. Any other expression in a value (`github.token`, another
/// step's output) is given as empty: the steps under test use none that matter.
fn run_step(
    name: &str,
    step_id: &str,
    inputs: &[(&str, &str)],
    extra_env: &[(&str, &str)],
    cwd: &Path,
) -> StepRun {
    let file = root().join(format!("actions/{name}/action.yml"));
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&fs_err::read_to_string(&file).unwrap()).unwrap();
    let declared = doc["inputs"].as_mapping().unwrap();
    for (n, _) in inputs {
        assert!(
            declared.contains_key(serde_yaml::Value::from(*n)),
            "{name} has no input {n}"
        );
    }
    let value_of = |input: &str| -> String {
        inputs
            .iter()
            .find(|(n, _)| *n == input)
            .map(|(_, v)| v.to_string())
            .or_else(|| declared[input]["default"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let eval = |text: &str| -> String {
        match text
            .strip_prefix("${{ inputs.")
            .and_then(|v| v.strip_suffix(" }}"))
        {
            Some(input) => value_of(input),
            None if text.contains("${{") => String::new(),
            None => text.to_string(),
        }
    };
    let step = steps(&file)
        .into_iter()
        .find(|s| s["id"].as_str() == Some(step_id))
        .unwrap_or_else(|| panic!("{name}: no step {step_id}"));
    let tmp = tempfile::tempdir().unwrap();
    let (gh_output, summary) = (tmp.path().join("output"), tmp.path().join("summary"));
    fs_err::write(&gh_output, "").unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c"])
        .arg(step["run"].as_str().unwrap())
        .current_dir(match step["working-directory"].as_str() {
            Some(w) => cwd.join(eval(w)),
            None => cwd.to_path_buf(),
        })
        .env("PATH", bin_on_path())
        .env("GITHUB_ACTION_PATH", file.parent().unwrap())
        .env("GITHUB_OUTPUT", &gh_output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("RUNNER_TEMP", tmp.path())
        .env("HOME", tmp.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("WMS_CACHE_DIR", tmp.path().join("cache"))
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_REPOSITORY")
        .env_remove("GITHUB_EVENT_NAME")
        .env_remove("GITHUB_EVENT_PATH")
        .env_remove("GITHUB_SHA")
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("INPUT_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    for (var, value) in step["env"].as_mapping().cloned().unwrap_or_default() {
        cmd.env(
            var.as_str().unwrap(),
            eval(value.as_str().unwrap_or_default()),
        );
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let outputs = wms::github::actions::parse_file_command(
        "GITHUB_OUTPUT",
        &fs_err::read_to_string(&gh_output).unwrap(),
    )
    .unwrap()
    .into_iter()
    .collect();
    let summary = fs_err::read_to_string(&summary).unwrap_or_default();
    StepRun {
        out,
        outputs,
        summary,
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// detect-changes with every input: filters (YAML text), base, head, manual-base and
/// working-directory, then its `result` step; the decision follows each of them.
#[test]
fn detect_changes_action_inputs_decide_the_outputs() {
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q", "-b", "main"]);
    fs_err::create_dir_all(r.join("data")).unwrap();
    fs_err::create_dir_all(r.join("docs")).unwrap();
    fs_err::create_dir_all(r.join("sub")).unwrap();
    fs_err::write(r.join("data/a.txt"), "a").unwrap();
    fs_err::write(r.join("docs/x.md"), "x").unwrap();
    fs_err::write(r.join("sub/keep"), "").unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "one"]);
    let c1 = git(r, &["rev-parse", "HEAD"]);
    fs_err::write(r.join("data/b.txt"), "b").unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "two"]);
    let c2 = git(r, &["rev-parse", "HEAD"]);
    let filters = "train:\n  - 'data/**'\ndeploy:\n  - 'k8s/**'\ndocs:\n  - 'docs/**'\n";

    let run = |inputs: &[(&str, &str)], env: &[(&str, &str)]| {
        let step = run_step("detect-changes", "detect", inputs, env, r);
        assert!(step.out.status.success(), "{}", step.text());
        step
    };
    // base..head from the inputs, run from a subfolder (working-directory).
    let s = run(
        &[
            ("filters", filters),
            ("base", &c1),
            ("head", &c2),
            ("working-directory", "sub"),
        ],
        &[],
    );
    assert_eq!(s.outputs["should_train"], "true", "{:?}", s.outputs);
    assert_eq!(s.outputs["docs"], "false");
    assert_eq!(s.outputs["train_files"], r#"["data/b.txt"]"#);
    assert_eq!(
        (s.outputs["base"].as_str(), s.outputs["head"].as_str()),
        (c1.as_str(), c2.as_str())
    );
    // head = base: nothing changed.
    let s = run(&[("filters", filters), ("base", &c2), ("head", &c2)], &[]);
    assert_eq!(s.outputs["should_train"], "false", "{:?}", s.outputs);

    // manual-base on workflow_dispatch: `always` trains, a ref compares with it.
    let event = tempfile::NamedTempFile::new().unwrap();
    fs_err::write(event.path(), "{}").unwrap();
    let ev = event.path().to_str().unwrap();
    let dispatch = [
        ("GITHUB_EVENT_NAME", "workflow_dispatch"),
        ("GITHUB_EVENT_PATH", ev),
    ];
    let s = run(
        &[("filters", filters), ("manual-base", "always")],
        &dispatch,
    );
    assert_eq!(
        (
            s.outputs["should_train"].as_str(),
            s.outputs["docs"].as_str()
        ),
        ("true", "true")
    );
    let s = run(&[("filters", filters), ("manual-base", &c2)], &dispatch);
    assert_eq!(s.outputs["should_train"], "false", "{:?}", s.outputs);
    let s = run(&[("filters", filters), ("manual-base", &c1)], &dispatch);
    assert_eq!(s.outputs["should_train"], "true", "{:?}", s.outputs);

    // The `result` step hands the whole decision on as JSON.
    let detect_then_result = {
        let tmp_runner = tempfile::tempdir().unwrap();
        let rt = tmp_runner.path().to_str().unwrap().to_string();
        let inputs = [
            ("filters", filters),
            ("base", c1.as_str()),
            ("head", c2.as_str()),
        ];
        let d = run_step(
            "detect-changes",
            "detect",
            &inputs,
            &[("RUNNER_TEMP", &rt)],
            r,
        );
        assert!(d.out.status.success(), "{}", d.text());
        run_step("detect-changes", "result", &[], &[("RUNNER_TEMP", &rt)], r)
    };
    let result: serde_json::Value =
        serde_json::from_str(&detect_then_result.outputs["result"]).unwrap();
    assert_eq!(result["should_train"], serde_json::json!(true), "{result}");
}

/// report-metrics with every `pr` input (no token: the job summary and the Markdown file), then
/// `command: deployment` with its inputs, through report.sh.
#[test]
fn report_metrics_action_inputs_shape_the_report_and_the_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let metrics = d.join("metrics.json");
    fs_err::write(
        &metrics,
        r#"{"test_iou": 0.91, "test_dice": 0.90, "test_hausdorff": 5.0}"#,
    )
    .unwrap();
    let baseline = d.join("baseline.json");
    fs_err::write(
        &baseline,
        r#"{"test_iou": 0.85, "test_dice": 0.95, "test_hausdorff": 6.0}"#,
    )
    .unwrap();
    let history = d.join("history.csv");
    fs_err::write(
        &history,
        "epoch,train_loss,val_loss,val_iou\n1,0.9,0.8,0.5\n2,0.6,0.5,0.7\n",
    )
    .unwrap();
    let changes = d.join("changes.json");
    // What the detect-changes step wrote for a commit that added data.
    let repo = d.join("repo");
    fs_err::create_dir_all(repo.join("data")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    fs_err::write(repo.join("README.md"), "x").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "one"]);
    fs_err::write(repo.join("data/new-photo.jpg"), "jpg").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "two"]);
    let out = util::bin("wms")
        .args([
            "detect-changes",
            "--format",
            "json",
            "--base",
            "HEAD~1",
            "--head",
            "HEAD",
        ])
        .current_dir(&repo)
        .env("HOME", d)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GITHUB_EVENT_NAME")
        .env_remove("GITHUB_EVENT_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("::"))
        .collect::<Vec<_>>()
        .join("\n");
    fs_err::write(&changes, &json).unwrap();
    let markdown = d.join("report.md");
    let image = format!("registry.example/meters@sha256:{}", "ab".repeat(32));
    let (m, b, h, c, md) = (
        metrics.to_str().unwrap(),
        baseline.to_str().unwrap(),
        history.to_str().unwrap(),
        changes.to_str().unwrap(),
        markdown.to_str().unwrap(),
    );
    let pr = |improve: &str, min: &str, max: &str| {
        let s = run_step(
            "report-metrics",
            "report",
            &[
                ("command", "pr"),
                ("metrics", m),
                ("baseline", b),
                ("history", h),
                ("changes", c),
                ("image", &image),
                ("deployment-url", "https://preview.example/meters"),
                ("model", "meters-x"),
                ("improve", improve),
                ("min", min),
                ("max", max),
                ("markdown", md),
                ("token", ""),
            ],
            &[],
            d,
        );
        assert!(s.out.status.success(), "{}", s.text());
        s
    };
    // test_dice is worse than the baseline: only `improve: test_iou` lets it pass.
    let s = pr("test_iou", "test_iou=0.9", "test_hausdorff=10");
    assert_eq!(s.outputs["passed"], "true", "{}", s.summary);
    let report = fs_err::read_to_string(&markdown).unwrap();
    assert_eq!(report.trim(), s.summary.trim());
    for expected in [
        "meters-x",
        "https://preview.example/meters",
        &"ab".repeat(32)[..12],
        "baseline.json",
        "new-photo.jpg",
    ] {
        assert!(report.contains(expected), "{expected} not in:\n{report}");
    }
    assert!(d.join("curves.svg").is_file(), "history gave no curves");
    assert_eq!(
        pr("", "", "").outputs["passed"],
        "false",
        "default improve includes test_dice"
    );
    assert_eq!(
        pr("test_iou", "test_iou=0.95", "").outputs["passed"],
        "false",
        "min"
    );
    assert_eq!(
        pr("test_iou", "", "test_hausdorff=4").outputs["passed"],
        "false",
        "max"
    );

    // command: deployment, no token: recorded in the job summary with its inputs.
    let s = run_step(
        "report-metrics",
        "report",
        &[
            ("command", "deployment"),
            ("environment", "staging-eu"),
            ("state", "in_progress"),
            ("url", "https://meters.example"),
            ("ref", "model-v1.2.3"),
            ("deployment-id", ""),
            ("description", "meters v3"),
            ("token", ""),
        ],
        &[("GITHUB_REPOSITORY", "octo/meters")],
        d,
    );
    assert!(s.out.status.success(), "{}", s.text());
    for expected in [
        "staging-eu",
        "in_progress",
        "model-v1.2.3",
        "https://meters.example",
    ] {
        assert!(
            s.summary.contains(expected),
            "{expected} not in {}",
            s.summary
        );
    }
    // A state GitHub does not know is refused by wms, naming the flag.
    let s = run_step(
        "report-metrics",
        "report",
        &[
            ("command", "deployment"),
            ("environment", "prod"),
            ("state", "done"),
        ],
        &[("GITHUB_REPOSITORY", "octo/meters")],
        d,
    );
    assert_eq!(s.out.status.code(), Some(2), "{}", s.text());
    assert!(s.text().contains("--state"), "{}", s.text());
}

/// The real MLflow server of the tests, driven through its REST API: a registered-model name no
/// other test uses, with an experiment of its own for the runs.
struct Mlflow {
    server: String,
    client: reqwest::blocking::Client,
    model: String,
    experiment: String,
}

impl Mlflow {
    fn new(prefix: &str) -> Mlflow {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut m = Mlflow {
            server: crate::servers::mlflow().url.clone(),
            client: reqwest::blocking::Client::new(),
            model: format!("{prefix}-{}-{nanos}", std::process::id()),
            experiment: String::new(),
        };
        let name = format!("{}-exp", m.model);
        m.experiment =
            m.post("experiments/create", serde_json::json!({"name": name}))["experiment_id"]
                .as_str()
                .unwrap()
                .to_string();
        m
    }

    fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let resp = self
            .client
            .post(format!("{}/api/2.0/mlflow/{path}", self.server))
            .json(&body)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().unwrap()
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        self.client
            .get(format!("{}/api/2.0/mlflow/{path}", self.server))
            .query(query)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn new_run(&self) -> String {
        let body = serde_json::json!({"experiment_id": self.experiment, "start_time": 1});
        self.post("runs/create", body)["run"]["info"]["run_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// promote with every input against the real MLflow server: a run's artifact folder
/// (`artifact-path`) becomes a version behind `production`, a second one moves it and keeps
/// `previous`, and `rollback: true` swaps them back.
#[test]
fn promote_action_inputs_reach_mlflow() {
    let m = Mlflow::new("promote-action");
    let model = m.model.as_str();
    let dir = tempfile::tempdir().unwrap();
    let env = [("MLFLOW_TRACKING_URI", m.server.as_str())];
    let promote = |inputs: &[(&str, &str)]| {
        let s = run_step("promote", "promote", inputs, &env, dir.path());
        assert!(s.out.status.success(), "{}", s.text());
        s
    };
    let (r1, r2) = (m.new_run(), m.new_run());
    let s = promote(&[
        ("model-name", model),
        ("run-id", &r1),
        ("artifact-path", "weights"),
    ]);
    assert_eq!(s.outputs["version"], "1");
    let v1 = m.get("model-versions/get", &[("name", model), ("version", "1")]);
    let source = v1["model_version"]["source"].as_str().unwrap();
    assert!(source.ends_with("/weights"), "{source}");
    assert_eq!(v1["model_version"]["run_id"], serde_json::json!(r1));
    let s = promote(&[("model-name", model), ("run-id", &r2)]);
    assert_eq!(
        (
            s.outputs["version"].as_str(),
            s.outputs["previous"].as_str()
        ),
        ("2", "1")
    );
    let s = promote(&[("model-name", model), ("rollback", "true")]);
    // Both outputs the action declares, and the registry agrees.
    assert_eq!(
        (
            s.outputs["version"].as_str(),
            s.outputs["previous"].as_str()
        ),
        ("1", "2")
    );
    let previous = m.get(
        "registered-models/alias",
        &[("name", model), ("alias", "previous")],
    );
    assert_eq!(previous["model_version"]["version"], serde_json::json!("2"));
}

/// gate with its MLflow inputs: `model-name` and `alias` pick the baseline version's metrics
/// (a version behind `champion` that the candidate does not beat), and `max` caps a metric.
#[test]
fn gate_action_model_name_and_alias_pick_the_baseline_in_mlflow() {
    let m = Mlflow::new("gate-action");
    let model = m.model.as_str();
    let run = m.new_run();
    m.post(
        "runs/log-batch",
        serde_json::json!({"run_id": run, "metrics": [
            {"key": "test_iou", "value": 0.95, "timestamp": 1, "step": 0},
            {"key": "test_dice", "value": 0.95, "timestamp": 1, "step": 0},
        ]}),
    );
    m.post(
        "registered-models/create",
        serde_json::json!({"name": model}),
    );
    m.post(
        "model-versions/create",
        serde_json::json!({"name": model, "source": format!("runs:/{run}/model"), "run_id": run}),
    );
    m.post(
        "registered-models/alias",
        serde_json::json!({"name": model, "alias": "champion", "version": "1"}),
    );

    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate.json");
    fs_err::write(&candidate, r#"{"test_iou": 0.9, "test_dice": 0.9}"#).unwrap();
    let c = candidate.to_str().unwrap();
    let env = [("MLFLOW_TRACKING_URI", m.server.as_str())];
    let gate = |inputs: &[(&str, &str)]| run_step("gate", "gate", inputs, &env, dir.path());
    // Behind `champion`: 0.95 > 0.9, the candidate does not improve.
    let s = gate(&[
        ("candidate", c),
        ("model-name", model),
        ("alias", "champion"),
        ("improve", "test_iou"),
        ("min", "test_dice=0.5"),
    ]);
    assert_eq!(s.out.status.code(), Some(3), "{}", s.text());
    assert_eq!(s.outputs["improved"], "false");
    assert!(
        s.outputs["table"].contains("0.95"),
        "{}",
        s.outputs["table"]
    );
    // Nothing behind the default alias `production` yet: nothing to beat.
    let s = gate(&[
        ("candidate", c),
        ("model-name", model),
        ("improve", "test_iou"),
    ]);
    assert!(s.out.status.success(), "{}", s.text());
    assert_eq!(s.outputs["improved"], "true");
    // `max` below the candidate's value fails the gate.
    let s = gate(&[
        ("candidate", c),
        ("model-name", model),
        ("max", "test_dice=0.5"),
    ]);
    assert_eq!(s.out.status.code(), Some(3), "{}", s.text());
}

/// deploy-namespace: each input becomes the flag of the subcommand it belongs to (a recording
/// `wms` shows the argument vector), and the real `wms` parses every such vector (a usage error
/// would exit 2 before any connection; here each one gets as far as looking for a cluster).
#[test]
fn deploy_namespace_inputs_become_flags_the_real_cli_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rec_bin = d.join("recording-bin");
    fs_err::create_dir_all(&rec_bin).unwrap();
    let rec = rec_bin.join("wms");
    fs_err::write(
        &rec,
        "#!/usr/bin/env bash\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$WMS_ARGV\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&rec, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let every: Vec<(&str, &str)> = vec![
        (
            "image",
            "registry.example/m@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("version", "v3"),
        ("model", "meters"),
        ("onnx", "model.onnx"),
        ("replicas", "2"),
        ("wait", "0"),
        ("smoke-test", "photo.jpg"),
        ("config", "config.properties"),
        ("set", "batch_size=8\nmax_batch_delay=50"),
        ("keep", "4"),
        ("context", "ctx"),
        ("region", "eu-west-1"),
        ("namespace-prefix", "p-"),
        ("system-namespace", "sys"),
        ("lock-timeout", "1s"),
        ("force", "true"),
        ("allow-tag", "true"),
    ];
    let argv = d.join("argv");
    let argv_s = argv.to_str().unwrap();
    let kubeconfig = d.join("no-kubeconfig");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut passes: Vec<(&str, Vec<(&str, &str)>)> = [
        "apply", "promote", "rollback", "scale", "config", "status", "cleanup", "debug",
    ]
    .iter()
    .map(|c| (*c, every.clone()))
    .collect();
    // `smoke-ping` is for an apply without a photo.
    let mut ping = every.clone();
    ping.retain(|(n, _)| *n != "smoke-test");
    ping.push(("smoke-ping", "true"));
    passes.push(("apply", ping));
    // `region` goes with `eks-cluster` (deploy.sh drops it otherwise: wms refuses it alone).
    let mut eks = every.clone();
    eks.retain(|(n, _)| *n != "context");
    eks.push(("eks-cluster", "meters-eks"));
    passes.push(("status", eks));
    for (command, mut inputs) in passes {
        inputs.push(("command", command));
        let path = format!(
            "{}:{}",
            rec_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let s = run_step(
            "deploy-namespace",
            "deploy",
            &inputs,
            &[("PATH", &path), ("WMS_ARGV", argv_s)],
            d,
        );
        assert!(s.out.status.success(), "{command}: {}", s.text());
        let args: Vec<String> = fs_err::read_to_string(&argv)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(args[..2], ["deploy".to_string(), command.to_string()]);
        for a in &args {
            if let Some(flag) = a.strip_prefix("--") {
                seen.insert(flag.to_string());
            }
        }
        // The same arguments to the real wms: parsed, then it looks for a cluster (EKS through
        // a loopback port where nothing listens: refused, never AWS).
        let out = util::bin("wms")
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", d)
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(2), "{command} {args:?}: {stderr}");
        assert!(
            !out.status.success(),
            "{command}: no cluster, yet it succeeded"
        );
    }
    // Every input except `command` reached some subcommand as its flag (`set` as --set lines).
    let mut missing = Vec::new();
    for flag in every
        .iter()
        .map(|(n, _)| *n)
        .chain(["smoke-ping", "eks-cluster"])
    {
        if !seen.contains(flag) {
            missing.push(flag);
        }
    }
    assert!(
        missing.is_empty(),
        "inputs that never became a flag: {missing:?}"
    );
}

/// aws-credentials with every input: the OIDC token is requested for `audience`, STS (moto)
/// assumes `role-to-assume` as `role-session-name`, the credentials and `aws-region` are
/// exported; a `role-duration-seconds` that is not a number is refused naming the input.
#[test]
fn aws_credentials_action_inputs_reach_sts() {
    const REQUEST_TOKEN: &str = "action-request-token";
    // A JWT-shaped token: moto does not verify the signature, as STS would.
    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOm8vcjpyZWY6cmVmcy9oZWFkcy9tYWluIiwiYXVkIjoid21zLWF1ZCJ9.c2ln";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    // The runner's OIDC token endpoint: `GET <ACTIONS_ID_TOKEN_REQUEST_URL>&audience=…` with
    // the request token as bearer, answering {"value": "<jwt>"}.
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut authorized = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                authorized |= h.to_ascii_lowercase().starts_with("authorization:")
                    && h.trim_end().ends_with(REQUEST_TOKEN);
            }
            log.lock().unwrap().push(line.trim().to_string());
            let (status, body) = if authorized {
                ("200 OK", format!("{{\"value\":\"{JWT}\"}}"))
            } else {
                ("401 Unauthorized", "{}".to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let token_url = format!("http://127.0.0.1:{port}/token?api-version=2.0");
    let dir = tempfile::tempdir().unwrap();
    let github_env = dir.path().join("github_env");
    fs_err::write(&github_env, "").unwrap();
    let moto = &crate::servers::moto().url;
    let env = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_ENV", github_env.to_str().unwrap()),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", token_url.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN),
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ];
    let role = "arn:aws:iam::123456789012:role/wms-action-role";
    let s = run_step(
        "aws-credentials",
        "aws",
        &[
            ("role-to-assume", role),
            ("aws-region", "ap-southeast-2"),
            ("role-session-name", "action-run-7"),
            ("role-duration-seconds", "900"),
            ("audience", "wms-aud"),
        ],
        &env,
        dir.path(),
    );
    assert!(s.out.status.success(), "{}", s.text());
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["GET /token?api-version=2.0&audience=wms-aud HTTP/1.1".to_string()]
    );
    assert!(
        s.text()
            .contains("assumed-role/wms-action-role/action-run-7"),
        "{}",
        s.text()
    );
    let exported = wms::github::actions::parse_file_command(
        "GITHUB_ENV",
        &fs_err::read_to_string(&github_env).unwrap(),
    )
    .unwrap();
    assert!(
        exported.contains(&("AWS_REGION".to_string(), "ap-southeast-2".to_string())),
        "{exported:?}"
    );
    let s = run_step(
        "aws-credentials",
        "aws",
        &[
            ("role-to-assume", role),
            ("aws-region", "ap-southeast-2"),
            ("role-duration-seconds", "an hour"),
        ],
        &env,
        dir.path(),
    );
    assert!(!s.out.status.success());
    assert!(s.text().contains("role-duration-seconds"), "{}", s.text());
}

/// actions/README.md documents every action with every input (and its default) and every output,
/// in the action's own section, with an example that uses it.
#[test]
fn readme_documents_every_input_output_and_default() {
    let readme = fs_err::read_to_string(root().join("actions/README.md")).unwrap();
    let mut problems = Vec::new();
    for file in action_files() {
        let name = file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&fs_err::read_to_string(&file).unwrap()).unwrap();
        let Some(start) = readme.find(&format!("\n## {name}\n")) else {
            problems.push(format!("no section ## {name}"));
            continue;
        };
        let rest = &readme[start + 1..];
        let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3)];
        if !section.contains(&format!("uses: wms/{name}@v1")) {
            problems.push(format!("{name}: no example `uses: wms/{name}@v1`"));
        }
        for (input, spec) in doc["inputs"].as_mapping().unwrap() {
            let input = input.as_str().unwrap();
            // The row whose first cell names the input (`a` / `b` rows name two).
            let row = section.lines().find(|l| {
                l.split('|')
                    .nth(1)
                    .is_some_and(|cell| cell.contains(&format!("`{input}`")))
            });
            match (row, spec["default"].as_str()) {
                (None, _) => problems.push(format!("{name}: input {input} undocumented")),
                (Some(row), Some(default)) if !default.is_empty() && !row.contains(default) => {
                    problems.push(format!(
                        "{name}: input {input}: default {default:?} not in {row:?}"
                    ))
                }
                _ => {}
            }
        }
        for (output, _) in doc["outputs"].as_mapping().cloned().unwrap_or_default() {
            let output = output.as_str().unwrap();
            if !section.contains(&format!("`{output}`")) {
                problems.push(format!("{name}: output {output} undocumented"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The train action's step run as the runner would, with the real `wms-train`: every input
/// changes what it does. `data`, `config` and `out` decide what it reads and where it writes (the
/// outputs name the run folder's files, the checkpoint records the config), `seed` lands in the
/// checkpoint's config, `device` is parsed by wms-train (an unknown one is refused, named), and
/// `resume` makes it continue a run folder (an empty one is refused: nothing to resume).
#[cfg(feature = "train")]
#[test]
fn train_action_inputs_reach_wms_train() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    util::wms()
        .args(["data", "synth", "--out", "photos", "--count", "40"])
        .args(["--size", "64x64", "--seed", "4"])
        .current_dir(d)
        .ok();
    fs_err::write(
        d.join("tiny.yaml"),
        "data:\n  image_size: 64\nmodel:\n  base_filters: 4\ntraining:\n  epochs: 1\n  batch_size: 4\n",
    )
    .unwrap();
    let train = |device: &str, out: &str, resume: &str| {
        run_step(
            "train",
            "train",
            &[
                ("config", "tiny.yaml"),
                ("data", "photos"),
                ("seed", "7"),
                ("device", device),
                ("out", out),
                ("resume", resume),
            ],
            &[],
            d,
        )
    };

    let a = train("cpu", "run-a", "false");
    assert!(a.out.status.success(), "{}", a.text());
    let checkpoint = PathBuf::from(&a.outputs["checkpoint"]);
    assert!(
        checkpoint.ends_with("run-a/best.safetensors"),
        "{checkpoint:?}"
    );
    let on_disk: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(d.join("run-a/metrics.json")).unwrap())
            .unwrap();
    let reported: serde_json::Value = serde_json::from_str(&a.outputs["metrics"]).unwrap();
    assert_eq!(reported, on_disk);
    let iou: f64 = a.outputs["test_iou"].parse().unwrap();
    assert!((0.0..=1.0).contains(&iou), "{iou}");
    let meta: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(d.join("run-a/checkpoint.json")).unwrap())
            .unwrap();
    let config = &meta["config"];
    assert_eq!(config["training"]["seed"], 7, "{config}");
    assert_eq!(config["data"]["image_size"], 64, "{config}");
    assert_eq!(config["model"]["base_filters"], 4, "{config}");

    let bad = train("tpu", "run-b", "false");
    assert!(!bad.out.status.success());
    assert!(
        String::from_utf8_lossy(&bad.out.stderr).contains("tpu"),
        "{}",
        bad.text()
    );

    fs_err::create_dir_all(d.join("run-c")).unwrap();
    let resumed = train("cpu", "run-c", "true");
    assert!(!resumed.out.status.success(), "{}", resumed.text());
    assert!(
        String::from_utf8_lossy(&resumed.out.stderr).contains("cannot resume from"),
        "{}",
        resumed.text()
    );
}
