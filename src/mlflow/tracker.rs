//! What `wms-train` talks to: one MLflow run per training process. The trainer only calls
//! `log_params`, `set_tags` and `log_epoch`; the CLI starts the tracker, logs the final metrics
//! and artifacts and finishes the run.
//!
//! Training never waits on MLflow for long and never fails because of it once the run exists:
//! in-loop calls make one short attempt; whatever does not get through stays in a bounded buffer
//! (oldest metric points dropped first, and counted) and goes out with the next call that
//! reaches the server. [`Tracker::finish`] reports what could not be logged.
//!
//! Starting is different: an unreachable server or bad credentials at start fail the command
//! before any compute is spent, since the user asked for tracking.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::client::{Client, ClientConfig, RetryPolicy};
use super::error::MlflowError;
use super::tracking::{
    Batch, BatchLimits, Metric, Param, RunInfo, RunStatus, Tag, now_millis, split_batch,
};
use crate::env_vars;
use crate::untrusted::text::for_log;

/// Per-epoch metrics go under this prefix (`epoch/val_loss`, step = epoch), so their histories
/// never mix with the final metrics, which keep the `metrics.json` keys the gate reads.
pub const EPOCH_PREFIX: &str = "epoch/";
/// Metric points the tracker keeps while the server is unreachable.
pub const DEFAULT_BUFFER_POINTS: usize = 20_000;
/// Timeout of in-loop calls (start and finish use the configured one).
const IN_LOOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Standard MLflow run tags (mlflow/utils/mlflow_tags.py).
pub const TAG_GIT_COMMIT: &str = "mlflow.source.git.commit";
pub const TAG_GIT_BRANCH: &str = "mlflow.source.git.branch";
pub const TAG_SOURCE_NAME: &str = "mlflow.source.name";
pub const TAG_SOURCE_TYPE: &str = "mlflow.source.type";
/// wms tags.
pub const TAG_GITHUB_RUN_URL: &str = "github.run_url";
pub const TAG_DATA_FINGERPRINT: &str = "wms.data_fingerprint";

#[derive(Debug, Clone)]
pub struct TrackerOptions {
    pub experiment: String,
    pub run_name: Option<String>,
    pub buffer_points: usize,
}

/// What a finished tracker reports for the step outputs and the log.
#[derive(Debug, Clone, Default)]
pub struct TrackerReport {
    pub run_id: String,
    pub experiment_id: String,
    pub run_url: String,
    /// One line per thing that did not reach the server; empty when all did.
    pub unlogged: Vec<String>,
}

pub struct Tracker {
    /// One short attempt, short timeout: used inside the training loop.
    quick: Client,
    /// The configured retries and timeout: start, artifacts, final flush and status.
    patient: Client,
    run: RunInfo,
    pending: Batch,
    capacity: usize,
    dropped: usize,
    failed_artifacts: Vec<String>,
    last_error: Option<String>,
    offline: bool,
}

impl Tracker {
    /// Gets or creates the experiment and starts a run with `tags`.
    pub fn start(
        cfg: &ClientConfig,
        opts: &TrackerOptions,
        tags: Vec<Tag>,
    ) -> Result<Tracker, MlflowError> {
        let patient = Client::new(cfg.clone())?;
        let experiment_id = patient.get_or_create_experiment(&opts.experiment)?;
        let run = patient.create_run(&experiment_id, opts.run_name.as_deref(), &tags)?;
        let mut quick_cfg = cfg.clone();
        quick_cfg.timeout = cfg.timeout.min(IN_LOOP_TIMEOUT);
        quick_cfg.retry = RetryPolicy::once();
        let quick = Client::new(quick_cfg)?;
        let tracker = Tracker::attach(quick, patient, run, opts.buffer_points);
        tracing::info!(
            run_id = tracker.run.run_id,
            experiment = opts.experiment,
            "MLflow run started: {}",
            tracker.run_url()
        );
        Ok(tracker)
    }

    /// A tracker for an existing run (no request is made).
    pub fn attach(quick: Client, patient: Client, run: RunInfo, capacity: usize) -> Tracker {
        Tracker {
            quick,
            patient,
            run,
            pending: Batch::default(),
            capacity: capacity.max(1),
            dropped: 0,
            failed_artifacts: Vec::new(),
            last_error: None,
            offline: false,
        }
    }

    pub fn run(&self) -> &RunInfo {
        &self.run
    }

    pub fn run_url(&self) -> String {
        format!(
            "{}/#/experiments/{}/runs/{}",
            self.patient.base_url(),
            self.run.experiment_id,
            self.run.run_id
        )
    }

    /// Metric points, params and tags waiting for the server.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    pub fn log_params(&mut self, params: &BTreeMap<String, String>) {
        self.pending
            .params
            .extend(params.iter().map(|(k, v)| Param {
                key: k.clone(),
                value: v.clone(),
            }));
        self.flush_quick();
    }

    pub fn set_tags(&mut self, tags: &[(&str, String)]) {
        self.pending.tags.extend(tags.iter().map(|(k, v)| Tag {
            key: k.to_string(),
            value: v.clone(),
        }));
        self.flush_quick();
    }

    /// One point per metric at step `epoch`, under [`EPOCH_PREFIX`].
    pub fn log_epoch(&mut self, epoch: u32, metrics: &BTreeMap<String, f64>) {
        self.push_metrics(EPOCH_PREFIX, i64::from(epoch), metrics);
        self.flush_quick();
    }

    /// The final metrics under their own keys (the `metrics.json` keys), step 0.
    pub fn log_final_metrics(&mut self, metrics: &BTreeMap<String, f64>) {
        self.push_metrics("", 0, metrics);
        self.flush_patient();
    }

    /// Uploads `local` as `artifact_path`; a failure is remembered for the report.
    pub fn log_artifact(&mut self, local: &Path, artifact_path: &str) {
        if let Err(e) = self
            .patient
            .upload_artifact(&self.run, local, artifact_path)
        {
            tracing::warn!(
                "MLflow: artifact {} not uploaded: {}",
                for_log(artifact_path),
                for_log(&e.to_string())
            );
            self.failed_artifacts
                .push(format!("artifact {artifact_path}: {e}"));
        }
    }

    /// Sends what is buffered with the patient client; returns true when nothing is left.
    pub fn flush(&mut self) -> bool {
        self.flush_patient();
        self.pending.is_empty()
    }

    /// Flushes with retries, sets the run's status and says what could not be logged.
    pub fn finish(mut self, status: RunStatus) -> TrackerReport {
        self.flush_patient();
        let mut unlogged = Vec::new();
        if !self.pending.is_empty() {
            unlogged.push(format!(
                "{} metric points, {} params and {} tags not logged ({})",
                self.pending.metrics.len(),
                self.pending.params.len(),
                self.pending.tags.len(),
                self.last_error.as_deref().unwrap_or("server unreachable")
            ));
        }
        if self.dropped > 0 {
            unlogged.push(format!(
                "{} metric points dropped (buffer of {} full while the server was unreachable)",
                self.dropped, self.capacity
            ));
        }
        unlogged.append(&mut self.failed_artifacts);
        if let Err(e) = self.patient.set_run_status(&self.run.run_id, status) {
            unlogged.push(format!("run status {}: {e}", status.as_str()));
        }
        TrackerReport {
            run_id: self.run.run_id.clone(),
            experiment_id: self.run.experiment_id.clone(),
            run_url: self.run_url(),
            unlogged,
        }
    }

    fn push_metrics(&mut self, prefix: &str, step: i64, metrics: &BTreeMap<String, f64>) {
        let timestamp = now_millis();
        self.pending
            .metrics
            .extend(metrics.iter().map(|(k, v)| Metric {
                key: format!("{prefix}{k}"),
                value: *v,
                timestamp,
                step,
            }));
        let excess = self.pending.metrics.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.pending.metrics.drain(..excess);
            self.dropped += excess;
        }
    }

    fn flush_quick(&mut self) {
        let client = self.quick.clone();
        self.flush_with(&client);
    }

    fn flush_patient(&mut self) {
        let client = self.patient.clone();
        self.flush_with(&client);
    }

    /// Sends the buffer request by request; what a failed request (and everything after it)
    /// carried goes back into the buffer, so nothing is sent twice.
    fn flush_with(&mut self, client: &Client) {
        if self.pending.is_empty() {
            return;
        }
        let waiting = self.pending.len();
        let mut parts =
            split_batch(std::mem::take(&mut self.pending), &BatchLimits::default()).into_iter();
        for part in parts.by_ref() {
            if let Err(e) = client.log_batch_request(&self.run.run_id, &part) {
                if !self.offline {
                    tracing::warn!(
                        "MLflow: could not log to {} ({}); training goes on and the metrics are kept for later",
                        client.base_url(),
                        for_log(&e.to_string())
                    );
                }
                self.offline = true;
                self.last_error = Some(e.to_string());
                let mut back = part;
                for rest in parts {
                    back.metrics.extend(rest.metrics);
                    back.params.extend(rest.params);
                    back.tags.extend(rest.tags);
                }
                self.pending = back;
                return;
            }
        }
        if self.offline {
            tracing::info!("MLflow: reachable again; sent {waiting} buffered entries");
            self.offline = false;
        }
    }
}

/// Run tags known before training starts: source, branch and the GitHub run URL (in Actions).
pub fn context_tags(source_name: &str) -> Vec<Tag> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut tags = vec![
        tag(TAG_SOURCE_NAME, source_name),
        tag(TAG_SOURCE_TYPE, "JOB"),
    ];
    let branch = env(env_vars::GITHUB_HEAD_REF)
        .or_else(|| env(env_vars::GITHUB_REF_NAME))
        .or_else(local_branch);
    if let Some(b) = branch {
        tags.push(tag(TAG_GIT_BRANCH, &b));
    }
    if let (Some(server), Some(repo), Some(id)) = (
        env(env_vars::GITHUB_SERVER_URL),
        env(env_vars::GITHUB_REPOSITORY),
        env(env_vars::GITHUB_RUN_ID),
    ) {
        tags.push(tag(
            TAG_GITHUB_RUN_URL,
            &format!("{server}/{repo}/actions/runs/{id}"),
        ));
    }
    tags
}

fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.into(),
        value: value.into(),
    }
}

/// The branch checked out around the working directory (`.git/HEAD`), if any.
fn local_branch() -> Option<String> {
    let cwd = std::env::current_dir().ok()?;
    let git = cwd
        .ancestors()
        .map(|d| d.join(".git"))
        .find(|g| g.is_dir())?;
    let head = fs_err::read_to_string(git.join("HEAD")).ok()?;
    head.trim()
        .strip_prefix("ref: refs/heads/")
        .map(str::to_string)
}

/// Flattens a JSON document (the training config) into MLflow params: nested keys joined
/// with `.`, strings unquoted, `null` as `None` (as Python's MLflow client logs it).
pub fn flatten_params(value: &serde_json::Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, child, out);
                }
            }
            serde_json::Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            serde_json::Value::Null => {
                out.insert(prefix.to_string(), "None".into());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::testserver::ScriptedServer;

    fn run_info() -> RunInfo {
        RunInfo {
            run_id: "run1".into(),
            experiment_id: "1".into(),
            run_name: String::new(),
            status: RunStatus::Running,
            artifact_uri: "mlflow-artifacts:/1/run1/artifacts".into(),
            lifecycle_stage: "active".into(),
        }
    }

    fn tracker(url: &str, capacity: usize) -> Tracker {
        let quick = Client::for_uri(url)
            .unwrap()
            .with_retry(RetryPolicy::once());
        let patient = quick.with_retry(RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        });
        Tracker::attach(quick, patient, run_info(), capacity)
    }

    fn epoch_metrics(e: u32) -> BTreeMap<String, f64> {
        [
            ("val_loss".to_string(), 1.0 / f64::from(e)),
            ("val_iou".to_string(), 0.1 * f64::from(e)),
        ]
        .into_iter()
        .collect()
    }

    /// Logged metric points (key, step) across all `log-batch` requests the server received.
    fn logged(server: &ScriptedServer) -> Vec<(String, i64)> {
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/api/2.0/mlflow/runs/log-batch")
            .flat_map(|r| {
                let v = r.json();
                v["metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        (
                            m["key"].as_str().unwrap().to_string(),
                            m["step"].as_i64().unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The server goes away after epoch 1 (connections closed unanswered), comes back before
    /// epoch 4: epochs 2 and 3 are buffered, then sent once, in order, with epoch 4.
    #[test]
    fn metrics_are_buffered_while_the_server_is_away_and_flushed_when_it_returns() {
        let server = ScriptedServer::start(vec![]);
        let mut t = tracker(&server.url, 100);
        t.log_epoch(1, &epoch_metrics(1));
        assert_eq!(t.buffered(), 0);
        server.set_down(true);
        t.log_epoch(2, &epoch_metrics(2));
        t.log_epoch(3, &epoch_metrics(3));
        assert_eq!(t.buffered(), 4);
        server.set_down(false);
        t.log_epoch(4, &epoch_metrics(4));
        assert_eq!(t.buffered(), 0);
        let steps: Vec<i64> = logged(&server)
            .iter()
            .filter(|(k, _)| k == "epoch/val_loss")
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        let report = t.finish(RunStatus::Finished);
        assert!(report.unlogged.is_empty(), "{:?}", report.unlogged);
        let last = server.requests().pop().unwrap();
        assert_eq!(last.path, "/api/2.0/mlflow/runs/update");
        assert_eq!(last.json()["status"], "FINISHED");
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_points_and_the_report_says_so() {
        // Nothing listens on this port: every call fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut t = tracker(&format!("http://127.0.0.1:{port}"), 5);
        for e in 1..=4 {
            t.log_epoch(e, &epoch_metrics(e));
        }
        // 8 points into a buffer of 5: the 3 oldest are gone.
        assert_eq!(t.buffered(), 5);
        assert_eq!(t.pending.metrics[0].step, 2);
        t.log_artifact(
            Path::new("/nonexistent/best.safetensors"),
            "model/best.safetensors",
        );
        let report = t.finish(RunStatus::Finished);
        let text = report.unlogged.join("\n");
        assert!(
            text.contains("5 metric points, 0 params and 0 tags not logged"),
            "{text}"
        );
        assert!(text.contains("3 metric points dropped"), "{text}");
        assert!(text.contains("artifact model/best.safetensors"), "{text}");
        assert!(text.contains("run status FINISHED"), "{text}");
    }

    #[test]
    fn config_flattens_to_dotted_params() {
        let v = serde_json::json!({
            "training": {"learning_rate": 0.001, "scheduler": {"factor": 0.5}, "device": "cpu"},
            "data": {"data_dir": null, "image_size": 64},
        });
        let p = flatten_params(&v);
        assert_eq!(p["training.learning_rate"], "0.001");
        assert_eq!(p["training.scheduler.factor"], "0.5");
        assert_eq!(p["training.device"], "cpu");
        assert_eq!(p["data.data_dir"], "None");
        assert_eq!(p["data.image_size"], "64");
        assert_eq!(p.len(), 5);
    }
}
