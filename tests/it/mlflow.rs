//! MLflow end to end against the real tracking server (`servers::mlflow()`: sqlite backend,
//! `--serve-artifacts`): `wms-train` logging a short run, a run killed by SIGTERM, `wms gate` and
//! `wms promote` moving the `production` alias, and S3 artifact uploads against moto.
//! Runs are read back with plain HTTP requests, not through wms's own client.

use std::path::{Path, PathBuf};
use std::process::Output;

use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

use crate::servers;
use crate::util::{self, TestCommand, bin};

/// A name no other test (or earlier run of this one) uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn api_get(path: &str, query: &[(&str, &str)]) -> Value {
    api(reqwest::Method::GET, path, |r| r.query(query))
}

fn api_post(path: &str, body: &Value) -> Value {
    api(reqwest::Method::POST, path, |r| r.json(body))
}

/// `method` on the MLflow REST API `path`, the request finished by `with`; the JSON answer of a
/// success.
fn api(
    method: reqwest::Method,
    path: &str,
    with: impl FnOnce(RequestBuilder) -> RequestBuilder,
) -> Value {
    let url = format!("{}/api/2.0/mlflow/{path}", servers::mlflow().url);
    let request = with(reqwest::blocking::Client::new().request(method, &url))
        .build()
        .unwrap();
    let shown = format!("{} {}", request.method(), request.url());
    let resp = reqwest::blocking::Client::new().execute(request).unwrap();
    let status = resp.status();
    let answer: Value = resp.json().unwrap();
    assert!(status.is_success(), "{shown}: {status} {answer}");
    answer
}

/// The version number behind `alias`, `None` when the alias is unset.
fn alias_version(model: &str, alias: &str) -> Option<String> {
    let url = format!(
        "{}/api/2.0/mlflow/registered-models/alias",
        servers::mlflow().url
    );
    let resp = reqwest::blocking::Client::new()
        .get(&url)
        .query(&[("name", model), ("alias", alias)])
        .send()
        .unwrap();
    if !resp.status().is_success() {
        return None;
    }
    let body: Value = resp.json().unwrap();
    Some(
        body["model_version"]["version"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// Artifact names directly under `path` of a run, through the artifact proxy.
fn list_artifacts(experiment_id: &str, run_id: &str, path: &str) -> Vec<String> {
    let full = format!("{experiment_id}/{run_id}/artifacts/{path}");
    let url = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts",
        servers::mlflow().url
    );
    let body: Value = reqwest::blocking::Client::new()
        .get(&url)
        .query(&[("path", full.trim_end_matches('/'))])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut names: Vec<String> = body["files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            f["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[cfg(feature = "train")]
fn outputs(file: &Path) -> std::collections::BTreeMap<String, String> {
    let text = fs_err::read_to_string(file).unwrap();
    wms::github::actions::parse_file_command("GITHUB_OUTPUT", &text)
        .unwrap()
        .into_iter()
        .collect()
}

/// `wms ARGS` as a step against the tracking server, with a `$GITHUB_OUTPUT` of its own.
fn wms(args: &[&str]) -> TestCommand {
    util::wms()
        .args(args)
        .env("MLFLOW_TRACKING_URI", &servers::mlflow().url)
        .step_outputs()
}

/// A run made through the REST API: final metrics and a `model/` artifact, like wms-train's.
fn make_run(experiment: &str, test_iou: f64, test_dice: f64) -> String {
    let exp = match reqwest::blocking::Client::new()
        .get(format!(
            "{}/api/2.0/mlflow/experiments/get-by-name",
            servers::mlflow().url
        ))
        .query(&[("experiment_name", experiment)])
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["experiment"]["experiment_id"]
        .as_str()
    {
        Some(id) => id.to_string(),
        None => api_post("experiments/create", &json!({"name": experiment}))["experiment_id"]
            .as_str()
            .unwrap()
            .to_string(),
    };
    let run = api_post(
        "runs/create",
        &json!({"experiment_id": exp, "start_time": 1}),
    );
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    api_post(
        "runs/log-batch",
        &json!({"run_id": run_id, "metrics": [
            {"key": "test_iou", "value": test_iou, "timestamp": 1, "step": 0},
            {"key": "test_dice", "value": test_dice, "timestamp": 1, "step": 0},
        ]}),
    );
    let url = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{exp}/{run_id}/artifacts/model/best.safetensors",
        servers::mlflow().url
    );
    let resp = reqwest::blocking::Client::new()
        .put(url)
        .body(b"weights".to_vec())
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    run_id
}

fn write_metrics(dir: &Path, name: &str, test_iou: f64, test_dice: f64) -> PathBuf {
    let p = dir.join(name);
    fs_err::write(
        &p,
        json!({"test_iou": test_iou, "test_dice": test_dice, "best_epoch": 3.0}).to_string(),
    )
    .unwrap();
    p
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issue 6 acceptance (registry part): the first gate passes with a note (no production yet);
/// promote moves `production`; a worse candidate is refused with exit 3 and `production` stays;
/// a better one passes, and its promotion leaves the old holder as `previous`; rollback swaps.
#[test]
fn gate_and_promote_move_production_and_a_worse_candidate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = unique("meters");
    let experiment = unique("gate");
    let gate = |candidate: &Path, extra: &[&str]| {
        wms(&["gate", "--model-name", &model])
            .arg("--candidate")
            .arg(candidate)
            .args(extra)
    };

    // No production model yet: the gate passes and says why.
    let first = write_metrics(dir.path(), "first.json", 0.80, 0.88);
    let out = gate(&first, &[]).ok();
    assert!(out.stdout().contains("no baseline"), "{out}");
    assert_eq!(out.output("improved"), "true");

    let run1 = make_run(&experiment, 0.80, 0.88);
    let out = wms(&["promote", "--run-id", &run1, "--model-name", &model]).ok();
    assert_eq!(out.stdout().trim(), "1");
    assert_eq!(alias_version(&model, "production").as_deref(), Some("1"));
    assert_eq!(alias_version(&model, "previous"), None);
    assert_eq!(out.output("version"), "1");

    // Worse IoU (better Dice): refused with exit 3, production untouched.
    let worse = write_metrics(dir.path(), "worse.json", 0.75, 0.90);
    let out = gate(&worse, &[]).fails(3);
    let table = out.stdout();
    assert!(
        table.contains("| `test_iou` | 0.7500 | 0.8000 | -0.0500 |"),
        "{table}"
    );
    assert!(table.contains("| production \\(v1\\) |"), "{table}");
    let not_met = out.error_line().replace(&model, "[MODEL]");
    assert_eq!(out.output("improved"), "false");
    assert!(
        out.output("table").contains("**fail**"),
        "{}",
        out.output("table")
    );
    assert_eq!(alias_version(&model, "production").as_deref(), Some("1"));

    // An absolute minimum fails even a better model.
    let better = write_metrics(dir.path(), "better.json", 0.85, 0.91);
    let below_min = gate(&better, &["--min", "test_iou=0.9"])
        .fails(3)
        .error_line()
        .replace(&model, "[MODEL]");
    {
        let _redacted = util::redactions().bind_to_scope();
        insta::assert_snapshot!("gate_not_met", format!("{not_met}\n{below_min}"));
    }

    // Better on both: passes; promoting it keeps version 1 as `previous`.
    gate(&better, &[]).ok();
    let run2 = make_run(&experiment, 0.85, 0.91);
    let out = wms(&["promote", "--run-id", &run2, "--model-name", &model]).ok();
    assert_eq!(out.stdout().trim(), "2");
    assert_eq!(alias_version(&model, "production").as_deref(), Some("2"));
    assert_eq!(alias_version(&model, "previous").as_deref(), Some("1"));
    let v2 = api_get("model-versions/get", &[("name", &model), ("version", "2")]);
    assert_eq!(v2["model_version"]["run_id"], run2.as_str());
    assert!(
        v2["model_version"]["source"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{run2}/artifacts/model")),
        "{v2}"
    );

    // Rollback is one call.
    wms(&["promote", "--rollback", "--model-name", &model]).ok();
    assert_eq!(alias_version(&model, "production").as_deref(), Some("1"));
    assert_eq!(alias_version(&model, "previous").as_deref(), Some("2"));
}

#[test]
fn gate_against_a_baseline_file_needs_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_metrics(dir.path(), "base.json", 0.80, 0.88);
    let cand = write_metrics(dir.path(), "cand.json", 0.81, 0.87);
    let out = util::wms()
        .args(["gate", "--candidate"])
        .arg(&cand)
        .arg("--baseline")
        .arg(&base)
        .step_outputs()
        .fails(3);
    assert!(
        out.stdout()
            .contains("| `test_dice` | 0.8700 | 0.8800 | -0.0100 |"),
        "{out}"
    );
    assert_eq!(out.output("improved"), "false");
    // --model-name without a server is a usage error that says what to set.
    let out = util::wms()
        .args(["gate", "--candidate"])
        .arg(&cand)
        .args(["--model-name", "m"])
        .fails(2);
    let _redacted = util::redactions().bind_to_scope();
    insta::assert_snapshot!("gate_model_name_without_server", out.error_line());
}

/// The library's registry calls against the real server: aliases set / get / delete, search.
#[test]
fn registry_aliases_and_search_round_trip() {
    use wms::mlflow::Client;
    let client = Client::for_uri(&servers::mlflow().url).unwrap();
    let model = unique("reg");
    let run = make_run(&unique("reg-exp"), 0.5, 0.6);
    let p = wms::mlflow::registry::promote(&client, &model, &run, "model").unwrap();
    assert_eq!((p.version.as_str(), p.previous.as_deref()), ("1", None));
    client.set_alias(&model, "staging", "1").unwrap();
    assert_eq!(
        client
            .version_by_alias(&model, "staging")
            .unwrap()
            .unwrap()
            .version,
        "1"
    );
    client.delete_alias(&model, "staging").unwrap();
    assert!(
        client
            .version_by_alias(&model, "staging")
            .unwrap()
            .is_none()
    );
    assert!(
        client
            .version_by_alias(&unique("none"), "production")
            .unwrap()
            .is_none()
    );
    let found = client
        .search_model_versions(&format!("name='{model}'"))
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].run_id, run);
    let base = wms::mlflow::registry::alias_metrics(&client, &model, "production")
        .unwrap()
        .unwrap();
    assert_eq!(base.metrics["test_iou"], 0.5);
    // Artifacts through the proxy: list, download, upload (names needing percent-encoding).
    let info = client.get_run(&run).unwrap().info;
    let listed = client.list_artifacts(&info, "model").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, "model/best.safetensors");
    assert_eq!(listed[0].file_size, Some(7));
    assert_eq!(
        client
            .download_artifact(&info, "model/best.safetensors")
            .unwrap(),
        b"weights"
    );
    client
        .upload_artifact_bytes(&info, b"note", "notes/a b.txt")
        .unwrap();
    assert_eq!(
        list_artifacts(&info.experiment_id, &run, "notes"),
        vec!["a b.txt"]
    );
    // Errors name the endpoint and carry the server's error code and a hint.
    let err = client.get_run("0123456789abcdef").unwrap_err().to_string();
    assert!(err.contains("/api/2.0/mlflow/runs/get"), "{err}");
    assert!(err.contains("RESOURCE_DOES_NOT_EXIST"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

/// A run whose artifact URI is `s3://…` uploads straight to the bucket (moto here).
#[test]
fn s3_uploads_land_in_the_bucket() {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let moto = servers::moto();
    let bucket = unique("mlflow-artifacts").to_lowercase();
    let resp = reqwest::blocking::Client::new()
        .put(format!("{}/{bucket}", moto.url))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(&moto.url)
        .force_path_style(true)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    let up = wms::mlflow::artifacts::S3Uploader::with_client(s3.clone()).unwrap();
    up.put(
        &bucket,
        "1/run/artifacts/metrics.json",
        b"{\"test_iou\": 1}".to_vec(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let obj = s3
            .get_object()
            .bucket(&bucket)
            .key("1/run/artifacts/metrics.json")
            .send()
            .await
            .unwrap();
        obj.body.collect().await.unwrap().into_bytes()
    });
    assert_eq!(&got[..], b"{\"test_iou\": 1}");
    let err = up
        .put("no-such-bucket-wms", "k", vec![1])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("s3://no-such-bucket-wms/k") && err.contains("hint:"),
        "{err}"
    );
}

/// A loopback port nothing listens on: connections to it are refused at once.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A password in `MLFLOW_TRACKING_URI`'s userinfo and a tracking token.
const URI_PASSWORD: &str = "issue11-uRiPa55word";
const TRACKING_TOKEN: &str = "issue11-tRaCkInGtOkEn";

/// `command` run as a workflow step (`GITHUB_ACTIONS=true`) against a tracking URI whose server
/// refuses connections, so the error path prints the URL.
fn with_credentials_in_the_uri(mut command: std::process::Command, token: bool) -> Output {
    let uri = format!("http://alice:{URI_PASSWORD}@127.0.0.1:{}", refused_port());
    command
        .env("GITHUB_ACTIONS", "true")
        .env("MLFLOW_TRACKING_URI", uri)
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD");
    if token {
        command.env("MLFLOW_TRACKING_TOKEN", TRACKING_TOKEN);
    } else {
        command.env_remove("MLFLOW_TRACKING_TOKEN");
    }
    command.output().unwrap()
}

/// The first lines of stdout mask exactly `secrets`, and no secret appears after them.
fn assert_masked_first_and_never_shown(out: &Output, secrets: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = stderr(out);
    let lines: Vec<&str> = stdout.lines().collect();
    let masks: Vec<String> = secrets.iter().map(|s| format!("::add-mask::{s}")).collect();
    assert!(
        lines.len() >= masks.len() && lines[..masks.len()] == masks[..],
        "the masks come first:\n{stdout}"
    );
    let rest = lines[masks.len()..].join("\n");
    for secret in [URI_PASSWORD, TRACKING_TOKEN] {
        assert!(
            !rest.contains(secret) && !stderr.contains(secret),
            "{secret} shown:\n{stdout}\n{stderr}"
        );
    }
    format!("{rest}\n{stderr}")
}

/// Issue 11, part 6: `wms gate` and `wms promote` mask the tracking credentials before anything
/// else, and their errors name the server without the userinfo.
#[test]
fn issue11_credentials_in_the_tracking_uri_are_masked_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let cand = write_metrics(dir.path(), "cand.json", 0.81, 0.87);
    let gate = || {
        let mut c = bin("wms");
        c.args(["gate", "--model-name", "m", "--candidate"])
            .arg(&cand);
        c
    };
    let promote = || {
        let mut c = bin("wms");
        c.args(["promote", "--model-name", "m", "--run-id", "r1"]);
        c
    };
    let rollback = || {
        let mut c = bin("wms");
        c.args(["promote", "--model-name", "m", "--rollback"]);
        c
    };
    for (name, command) in [
        ("gate", gate()),
        ("promote", promote()),
        ("rollback", rollback()),
    ] {
        let out = with_credentials_in_the_uri(command, false);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let shown = assert_masked_first_and_never_shown(&out, &[URI_PASSWORD]);
        assert!(shown.contains("http://127.0.0.1:"), "{name}: {shown}");
        assert!(shown.contains("hint:"), "{name}: {shown}");
    }
    // Both: the URI's password is masked even though the token is what authenticates.
    let out = with_credentials_in_the_uri(gate(), true);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_masked_first_and_never_shown(&out, &[URI_PASSWORD, TRACKING_TOKEN]);
}

#[cfg(feature = "train")]
mod training {
    use std::collections::BTreeMap;

    use super::*;

    fn synth(dir: &Path) -> PathBuf {
        let data = dir.join("data");
        util::synth(&data, 32, "64x64", 11);
        data
    }

    fn train_cmd(dir: &Path, data: &Path, out: &Path, epochs: u32) -> std::process::Command {
        let config = dir.join("train.yaml");
        fs_err::write(
            &config,
            "model:\n  base_filters: 4\ntraining:\n  batch_size: 4\n  learning_rate: 0.003\n",
        )
        .unwrap();
        let mut cmd = bin("wms-train");
        cmd.args([
            "train",
            "--device",
            "cpu",
            "--input-size",
            "64",
            "--seed",
            "3",
        ])
        .args(["--epochs", &epochs.to_string(), "--patience", "100"])
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .env("MLFLOW_TRACKING_URI", &servers::mlflow().url);
        cmd
    }

    /// Issue 11, part 6: `wms-train train` masks the tracking credentials before anything else
    /// and names the unreachable server without them.
    #[test]
    fn issue11_training_masks_the_tracking_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let data = synth(dir.path());
        let cmd = train_cmd(dir.path(), &data, &dir.path().join("run"), 1);
        let out = with_credentials_in_the_uri(cmd, true);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let shown = assert_masked_first_and_never_shown(&out, &[URI_PASSWORD, TRACKING_TOKEN]);
        assert!(shown.contains("http://127.0.0.1:"), "{shown}");
    }

    /// Issue 6 acceptance (tracking part): params, one point per epoch, final metrics, tags and
    /// the run's files, all read back through the REST API.
    #[test]
    fn training_logs_params_epoch_history_metrics_and_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let data = synth(dir.path());
        let out_dir = dir.path().join("run");
        let gh = dir.path().join("github_output");
        fs_err::write(&gh, "").unwrap();
        let experiment = unique("train");
        let out = train_cmd(dir.path(), &data, &out_dir, 3)
            .env("MLFLOW_EXPERIMENT_NAME", &experiment)
            .env("GITHUB_OUTPUT", &gh)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let o = outputs(&gh);
        let run_id = o["mlflow_run_id"].clone();
        assert_eq!(o["mlflow_unlogged"], "", "{}", stderr(&out));
        assert!(o["mlflow_run_url"].contains(&run_id));

        let run = api_get("runs/get", &[("run_id", &run_id)])["run"].clone();
        let info = &run["info"];
        assert_eq!(info["status"], "FINISHED");
        let exp_id = info["experiment_id"].as_str().unwrap().to_string();
        let exp = api_get("experiments/get", &[("experiment_id", &exp_id)]);
        assert_eq!(exp["experiment"]["name"], experiment.as_str());

        let kv = |list: &Value| -> BTreeMap<String, String> {
            list.as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let v = &p["value"];
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (p["key"].as_str().unwrap().to_string(), v)
                })
                .collect()
        };
        let params = kv(&run["data"]["params"]);
        assert_eq!(params["training.epochs"], "3");
        assert_eq!(params["model.base_filters"], "4");
        assert_eq!(params["data.image_size"], "64");
        assert_eq!(params["training.learning_rate"], "0.003");
        assert!(
            params.contains_key("augmentation.rotation_degrees"),
            "{params:?}"
        );
        let tags = kv(&run["data"]["tags"]);
        assert_eq!(tags["mlflow.source.name"], "wms-train");
        assert_eq!(tags["wms.data_fingerprint"].len(), 64, "{tags:?}");

        // Final metrics under the metrics.json keys, equal to the file's.
        let metrics: BTreeMap<String, f64> =
            serde_json::from_str(&fs_err::read_to_string(out_dir.join("metrics.json")).unwrap())
                .unwrap();
        let logged = kv(&run["data"]["metrics"]);
        for key in [
            "test_iou",
            "test_dice",
            "test_hausdorff",
            "best_epoch",
            "epochs_run",
        ] {
            let v: f64 = logged[key].parse().unwrap();
            assert!(
                (v - metrics[key]).abs() < 1e-9,
                "{key}: {v} vs {}",
                metrics[key]
            );
        }

        // One point per epoch, steps 1..=3, matching history.csv.
        let history = fs_err::read_to_string(out_dir.join("history.csv")).unwrap();
        let val_loss_col = history
            .lines()
            .next()
            .unwrap()
            .split(',')
            .position(|c| c == "val_loss")
            .unwrap();
        for key in [
            "epoch/val_loss",
            "epoch/train_loss",
            "epoch/test_iou",
            "epoch/lr",
        ] {
            let h = api_get(
                "metrics/get-history",
                &[("run_id", &run_id), ("metric_key", key)],
            );
            let mut points: Vec<(i64, f64)> = h["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["step"].as_i64().unwrap(), m["value"].as_f64().unwrap()))
                .collect();
            points.sort_by_key(|p| p.0);
            assert_eq!(
                points.iter().map(|p| p.0).collect::<Vec<_>>(),
                vec![1, 2, 3],
                "{key}: {h}"
            );
            if key == "epoch/val_loss" {
                for (line, (_, v)) in history.lines().skip(1).zip(&points) {
                    let csv: f64 = line.split(',').nth(val_loss_col).unwrap().parse().unwrap();
                    assert!((csv - v).abs() < 1e-6 * csv.abs().max(1.0), "{csv} vs {v}");
                }
            }
        }

        // The files, through the artifact proxy.
        assert_eq!(
            list_artifacts(&exp_id, &run_id, ""),
            vec!["curves.svg", "history.csv", "metrics.json", "model"]
        );
        assert_eq!(
            list_artifacts(&exp_id, &run_id, "model"),
            vec!["best.safetensors", "checkpoint.json"]
        );
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{run_id}/artifacts/model/best.safetensors",
            servers::mlflow().url
        );
        let bytes = reqwest::blocking::get(url).unwrap().bytes().unwrap();
        assert_eq!(
            &bytes[..],
            &fs_err::read(out_dir.join("best.safetensors")).unwrap()[..]
        );

        // The trained run goes through the gate (no production yet) and becomes production.
        let model = unique("trained");
        let metrics_file = out_dir.join("metrics.json");
        wms(&["gate", "--model-name", &model])
            .arg("--candidate")
            .arg(&metrics_file)
            .ok();
        wms(&["promote", "--run-id", &run_id, "--model-name", &model]).ok();
        assert_eq!(alias_version(&model, "production").as_deref(), Some("1"));
        // Production's metrics are what the next gate compares with: the same run cannot beat it.
        wms(&["gate", "--model-name", &model])
            .arg("--candidate")
            .arg(&metrics_file)
            .fails(3);
    }

    /// SIGTERM during training: the run ends KILLED (not RUNNING forever) and the process exits
    /// as a terminated one would (143).
    #[test]
    fn sigterm_marks_the_run_killed() {
        let dir = tempfile::tempdir().unwrap();
        let data = synth(dir.path());
        let out_dir = dir.path().join("run");
        let gh = dir.path().join("github_output");
        fs_err::write(&gh, "").unwrap();
        let mut child = train_cmd(dir.path(), &data, &out_dir, 500)
            .env("MLFLOW_EXPERIMENT_NAME", unique("killed"))
            .env("GITHUB_OUTPUT", &gh)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !out_dir.join("last.safetensors").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "no epoch finished in time"
            );
            assert!(child.try_wait().unwrap().is_none(), "run ended early");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
        assert!(
            !out_dir.join("metrics.json").exists(),
            "finished before the signal"
        );
        let run_id = outputs(&gh)["mlflow_run_id"].clone();
        let run = api_get("runs/get", &[("run_id", &run_id)]);
        assert_eq!(run["run"]["info"]["status"], "KILLED", "{}", stderr(&out));
        assert!(
            stderr(&out).contains("stopped by SIGTERM; hint: continue with --resume"),
            "{}",
            stderr(&out)
        );
    }
}
