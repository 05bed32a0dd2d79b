//! Experiments and runs: get-or-create an experiment by name, create a run with its tags,
//! `log-batch` params / metrics / tags (split to the server's per-request limits), set the run's
//! status, read a run and a metric's history back.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use super::client::Client;
use super::error::MlflowError;

/// A run's lifecycle state as MLflow names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// One metric point. `value` may be NaN or infinite (sent as protobuf JSON's `"NaN"` strings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    #[serde(serialize_with = "ser_f64", deserialize_with = "de_f64")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[serde(deserialize_with = "de_i64", default)]
    pub timestamp: i64,
    #[serde(deserialize_with = "de_i64", default)]
    pub step: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// Run and experiment tags have the same shape as params.
pub type Tag = Param;

#[derive(Debug, Clone, Deserialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    #[serde(default)]
    pub artifact_location: String,
    #[serde(default)]
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    #[serde(default)]
    pub run_name: String,
    pub status: RunStatus,
    #[serde(default)]
    pub artifact_uri: String,
    #[serde(default)]
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunData {
    /// The latest value of each metric.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub params: Vec<Param>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub info: RunInfo,
    #[serde(default)]
    pub data: RunData,
}

impl Run {
    /// The latest value of each metric, by key.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        self.data
            .metrics
            .iter()
            .map(|m| (m.key.clone(), m.value))
            .collect()
    }

    pub fn params(&self) -> BTreeMap<String, String> {
        self.data
            .params
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect()
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.data
            .tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// What one `log-batch` call carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Batch {
    pub metrics: Vec<Metric>,
    pub params: Vec<Param>,
    pub tags: Vec<Tag>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.params.is_empty() && self.tags.is_empty()
    }

    pub fn len(&self) -> usize {
        self.metrics.len() + self.params.len() + self.tags.len()
    }
}

/// The server's limits on one `log-batch` request (mlflow/utils/validation.py:
/// `MAX_METRICS_PER_BATCH`, `MAX_PARAMS_TAGS_PER_BATCH`, `MAX_ENTITIES_PER_BATCH`,
/// `MAX_BATCH_LOG_REQUEST_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub metrics: usize,
    pub params: usize,
    pub tags: usize,
    pub entities: usize,
    /// Bytes of the JSON request body.
    pub bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            metrics: 1000,
            params: 100,
            tags: 100,
            entities: 1000,
            bytes: 1_000_000,
        }
    }
}

/// Room kept in each request for the envelope (`run_id`, field names, brackets).
const ENVELOPE_BYTES: usize = 256;

/// Splits `batch` into requests that each respect `limits`, keeping the order of every list
/// (params first, then tags, then metrics — a metric's points stay in step order).
pub fn split_batch(batch: Batch, limits: &BatchLimits) -> Vec<Batch> {
    enum Item {
        Param(Param),
        Tag(Tag),
        Metric(Metric),
    }
    let items = batch
        .params
        .into_iter()
        .map(Item::Param)
        .chain(batch.tags.into_iter().map(Item::Tag))
        .chain(batch.metrics.into_iter().map(Item::Metric));
    let budget = limits.bytes.saturating_sub(ENVELOPE_BYTES);
    let mut out = Vec::new();
    let mut cur = Batch::default();
    let mut bytes = 0;
    for item in items {
        // Serialized size plus a separating comma.
        let size = 1 + match &item {
            Item::Param(p) | Item::Tag(p) => serde_json::to_string(p).map_or(0, |s| s.len()),
            Item::Metric(m) => serde_json::to_string(m).map_or(0, |s| s.len()),
        };
        let fits = cur.len() < limits.entities
            && bytes + size <= budget
            && match &item {
                Item::Param(_) => cur.params.len() < limits.params,
                Item::Tag(_) => cur.tags.len() < limits.tags,
                Item::Metric(_) => cur.metrics.len() < limits.metrics,
            };
        if !fits && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        match item {
            Item::Param(p) => cur.params.push(p),
            Item::Tag(t) => cur.tags.push(t),
            Item::Metric(m) => cur.metrics.push(m),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Milliseconds since the Unix epoch, as MLflow stores times.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Client {
    /// The experiment named `name`, `None` when there is none.
    pub fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, MlflowError> {
        #[derive(Deserialize)]
        struct Resp {
            experiment: Experiment,
        }
        match self.get::<Resp>("experiments/get-by-name", &[("experiment_name", name)]) {
            Ok(r) => Ok(Some(r.experiment)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id of the experiment named `name`, created when missing (safe against a concurrent
    /// creator: `RESOURCE_ALREADY_EXISTS` reads it again).
    pub fn get_or_create_experiment(&self, name: &str) -> Result<String, MlflowError> {
        if let Some(exp) = self.experiment_by_name(name)? {
            if exp.lifecycle_stage == "deleted" {
                return Err(MlflowError::Registry {
                    message: format!(
                        "experiment {name:?} ({}) is deleted",
                        exp.experiment_id
                    ),
                    hint: "restore it in the MLflow UI (or `mlflow experiments restore`), or set MLFLOW_EXPERIMENT_NAME to another name".into(),
                });
            }
            return Ok(exp.experiment_id);
        }
        #[derive(Deserialize)]
        struct Resp {
            experiment_id: String,
        }
        match self.post::<Resp>("experiments/create", &json!({ "name": name })) {
            Ok(r) => Ok(r.experiment_id),
            Err(e) if e.is_already_exists() => self
                .experiment_by_name(name)?
                .map(|x| x.experiment_id)
                .ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// Starts a run (status RUNNING) in `experiment_id`.
    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: Option<&str>,
        tags: &[Tag],
    ) -> Result<RunInfo, MlflowError> {
        let mut body = json!({
            "experiment_id": experiment_id,
            "start_time": now_millis(),
            "tags": tags,
        });
        if let Some(n) = run_name {
            body["run_name"] = json!(n);
        }
        let resp: RunResp = self.post("runs/create", &body)?;
        Ok(resp.run.info)
    }

    pub fn get_run(&self, run_id: &str) -> Result<Run, MlflowError> {
        let resp: RunResp = self.get("runs/get", &[("run_id", run_id)])?;
        Ok(resp.run)
    }

    /// Logs everything in `batch`, in as many requests as the limits need. On an error the
    /// requests before it have been applied; the error says which one failed.
    pub fn log_batch(&self, run_id: &str, batch: Batch) -> Result<(), MlflowError> {
        self.log_batch_with(run_id, batch, &BatchLimits::default())
    }

    pub fn log_batch_with(
        &self,
        run_id: &str,
        batch: Batch,
        limits: &BatchLimits,
    ) -> Result<(), MlflowError> {
        for part in split_batch(batch, limits) {
            self.log_batch_request(run_id, &part)?;
        }
        Ok(())
    }

    /// One `log-batch` request, unsplit: the caller keeps `batch` within [`BatchLimits`].
    pub fn log_batch_request(&self, run_id: &str, batch: &Batch) -> Result<(), MlflowError> {
        let body = json!({
            "run_id": run_id,
            "metrics": batch.metrics,
            "params": batch.params,
            "tags": batch.tags,
        });
        self.post::<serde_json::Value>("runs/log-batch", &body)?;
        Ok(())
    }

    /// Sets the run's status; terminal statuses also set its end time.
    pub fn set_run_status(&self, run_id: &str, status: RunStatus) -> Result<(), MlflowError> {
        let mut body = json!({ "run_id": run_id, "status": status.as_str() });
        if !matches!(status, RunStatus::Running | RunStatus::Scheduled) {
            body["end_time"] = json!(now_millis());
        }
        self.post::<serde_json::Value>("runs/update", &body)?;
        Ok(())
    }

    /// Every point of metric `key` of a run (all pages).
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>, MlflowError> {
        let query = [("run_id", run_id), ("metric_key", key)];
        self.get_all("metrics/get-history", &query, "metrics")
    }
}

#[derive(Deserialize)]
struct RunResp {
    run: Run,
}

// Protobuf JSON writes non-finite doubles as strings and may write int64 as strings.

fn ser_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if v.is_infinite() {
        s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(*v)
    }
}

fn de_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| serde::de::Error::custom("number out of range")),
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.parse().map_err(serde::de::Error::custom),
        },
        other => Err(serde::de::Error::custom(format!("not a number: {other}"))),
    }
}

fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| serde::de::Error::custom("not an integer")),
        serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("not an integer: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(i: usize) -> Metric {
        Metric {
            key: format!("m{}", i % 7),
            value: i as f64,
            timestamp: 1_700_000_000_000,
            step: i as i64,
        }
    }

    fn param(i: usize, value_len: usize) -> Param {
        Param {
            key: format!("p{i}"),
            value: "v".repeat(value_len),
        }
    }

    /// A batch of that many metrics, params and tags (short values).
    fn batch(metrics: usize, params: usize, tags: usize) -> Batch {
        Batch {
            metrics: (0..metrics).map(metric).collect(),
            params: (0..params).map(|i| param(i, 3)).collect(),
            tags: (0..tags).map(|i| param(i, 3)).collect(),
        }
    }

    fn check(parts: &[Batch], limits: &BatchLimits) {
        for p in parts {
            assert!(!p.is_empty());
            assert!(p.metrics.len() <= limits.metrics);
            assert!(p.params.len() <= limits.params);
            assert!(p.tags.len() <= limits.tags);
            assert!(p.len() <= limits.entities);
            let body = serde_json::to_string(&json!({
                "run_id": "0123456789abcdef0123456789abcdef",
                "metrics": p.metrics, "params": p.params, "tags": p.tags,
            }))
            .unwrap();
            assert!(body.len() <= limits.bytes, "{} bytes", body.len());
        }
    }

    #[test]
    fn splits_by_count_limits_and_keeps_order() {
        let batch = batch(2500, 250, 120);
        let limits = BatchLimits::default();
        let parts = split_batch(batch.clone(), &limits);
        check(&parts, &limits);
        // Nothing lost, nothing reordered.
        let joined = parts.iter().fold(Batch::default(), |mut acc, p| {
            acc.metrics.extend(p.metrics.iter().cloned());
            acc.params.extend(p.params.iter().cloned());
            acc.tags.extend(p.tags.iter().cloned());
            acc
        });
        assert_eq!(joined, batch);
        // 250 params need 3 requests; 120 tags 2; 2500 metrics 3 — packed greedily.
        assert!(parts.len() <= 3 + 2 + 3, "{}", parts.len());
        assert!(parts.len() >= 3);
    }

    #[test]
    fn splits_by_entity_total_and_by_bytes() {
        // 100 params + 100 tags + 900 metrics = 1100 entities > 1000.
        let batch = batch(900, 100, 100);
        let limits = BatchLimits::default();
        let parts = split_batch(batch, &limits);
        check(&parts, &limits);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 1000);

        // 100 params of 6000 bytes and 100 tags of 8000 (the server's longest values): within
        // the count limits, but 1.4 MB in one request.
        let batch = Batch {
            params: (0..100).map(|i| param(i, 6000)).collect(),
            tags: (0..100).map(|i| param(i, 8000)).collect(),
            ..Batch::default()
        };
        let parts = split_batch(batch, &limits);
        check(&parts, &limits);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.iter().map(Batch::len).sum::<usize>(), 200);
    }

    #[test]
    fn small_and_empty_batches_stay_whole() {
        let limits = BatchLimits::default();
        assert!(split_batch(Batch::default(), &limits).is_empty());
        let b = batch(10, 0, 0);
        assert_eq!(split_batch(b.clone(), &limits), vec![b]);
    }

    #[test]
    fn non_finite_values_use_protobuf_json_strings() {
        let m = Metric {
            key: "k".into(),
            value: f64::NAN,
            timestamp: 1,
            step: 2,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains(r#""value":"NaN""#), "{s}");
        let back: Metric =
            serde_json::from_str(r#"{"key":"k","value":"-Infinity","timestamp":"5","step":3}"#)
                .unwrap();
        assert_eq!(back.value, f64::NEG_INFINITY);
        assert_eq!(back.timestamp, 5);
    }
}
