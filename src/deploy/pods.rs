//! Why a version's pods are not serving, for the "debug a failed deployment" task: each pod's
//! reason as the kubelet and scheduler report it, and its last log lines.
//!
//! Where the reasons live (kubernetes/kubernetes): `containerStatuses[].state.waiting.reason`
//! (`ImagePullBackOff`, `ErrImagePull`, `InvalidImageName` from `pkg/kubelet/images/types.go`;
//! `CrashLoopBackOff`, `RunContainerError` from `pkg/kubelet/container/sync_result.go`;
//! `CreateContainerConfigError`), `lastState.terminated.{reason,exitCode}` (`OOMKilled`,
//! `Error`), and the `PodScheduled=False` condition with reason `Unschedulable`. A container that
//! runs but is not ready fails its readiness probe. Logs: `pods/log?tailLines=N`, with
//! `previous=true` for a container that restarted (its current instance may not have written
//! anything yet). This module must not decide whether a rollout failed.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams, LogParams};
use serde::Serialize;

use super::DeployError;
use super::cluster::Cluster;
use crate::untrusted::text::for_log;

/// Log lines kept per pod.
pub const TAIL_LINES: i64 = 20;

/// One pod that is not serving, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodProblem {
    pub pod: String,
    /// `ImagePullBackOff`, `CrashLoopBackOff`, `OOMKilled`, `Unschedulable`, `NotReady`, …
    pub reason: String,
    /// The kubelet's or scheduler's message, and the last termination.
    pub detail: String,
    /// The last log lines of the serving container (empty when it never started).
    pub logs: Vec<String>,
}

impl PodProblem {
    /// `pod p: CrashLoopBackOff (…); last log: …` on one line.
    pub fn one_line(&self) -> String {
        let mut s = format!("pod {}: {}", self.pod, self.reason);
        if !self.detail.is_empty() {
            s.push_str(&format!(" ({})", self.detail));
        }
        if let Some(last) = self.logs.iter().rev().find(|l| !l.trim().is_empty()) {
            s.push_str(&format!("; last log: {last}"));
        }
        for_log(&s).into_owned()
    }
}

/// What is wrong with one pod, from its status alone (`None`: it is Ready).
pub fn diagnose(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return Some((
            c.reason.clone().unwrap_or_else(|| "Unschedulable".into()),
            c.message.clone().unwrap_or_default(),
        ));
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for cs in containers {
        if let Some(found) = container_problem(cs) {
            return Some(found);
        }
    }
    let ready = conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        return None;
    }
    let phase = status.phase.clone().unwrap_or_else(|| "Pending".into());
    if phase == "Running" {
        Some((
            "NotReady".into(),
            format!(
                "running, but the readiness probe on {} does not pass",
                super::render::PROBE_PATH
            ),
        ))
    } else {
        Some((phase, status.message.clone().unwrap_or_default()))
    }
}

fn container_problem(cs: &ContainerStatus) -> Option<(String, String)> {
    let state = cs.state.as_ref();
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| {
            format!(
                "last exit: {} (exit code {})",
                t.reason.as_deref().unwrap_or("terminated"),
                t.exit_code
            )
        });
    let oom = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
        || state
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    let join = |a: Option<String>, b: Option<String>| {
        [a, b]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.clone().unwrap_or_else(|| "Waiting".into());
        // Normal while a pod starts; not a reason by itself.
        if reason != "ContainerCreating" && reason != "PodInitializing" || last.is_some() {
            let reason = if oom {
                format!("OOMKilled, {reason}")
            } else {
                reason
            };
            return Some((
                reason,
                join(w.message.clone(), last.clone()).replace('\n', " "),
            ));
        }
    }
    if let Some(t) = state.and_then(|s| s.terminated.as_ref())
        && t.exit_code != 0
    {
        return Some((
            t.reason.clone().unwrap_or_else(|| "Error".into()),
            format!("exit code {}", t.exit_code),
        ));
    }
    None
}

/// Pods matching `selector` in `namespace` that are not Ready, with their last log lines.
pub async fn problems(
    cluster: &Cluster,
    namespace: &str,
    selector: &str,
    container: &str,
) -> Result<Vec<PodProblem>, DeployError> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let pods = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| cluster.error("list", &format!("pods in namespace {namespace}"), e))?;
    let mut out = Vec::new();
    for pod in pods.items {
        let Some((reason, detail)) = diagnose(&pod) else {
            continue;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|v| v.iter().find(|c| c.name == container));
        let started = status.is_some_and(|c| {
            c.restart_count > 0
                || c.state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        });
        let logs = if started {
            let restarted = status.is_some_and(|c| {
                c.restart_count > 0 && c.state.as_ref().is_some_and(|s| s.running.is_none())
            });
            logs(cluster, &api, namespace, &name, container, restarted).await
        } else {
            Vec::new()
        };
        out.push(PodProblem {
            pod: name,
            reason,
            detail,
            logs,
        });
    }
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    Ok(out)
}

/// The container's last [`TAIL_LINES`] lines (of the previous instance when it restarted); a
/// failure to read them becomes one line saying so (the reason matters more than the logs).
async fn logs(
    cluster: &Cluster,
    api: &Api<Pod>,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Vec<String> {
    let params = LogParams {
        container: Some(container.to_string()),
        tail_lines: Some(TAIL_LINES),
        previous,
        limit_bytes: Some(64 * 1024),
        ..LogParams::default()
    };
    match api.logs(pod, &params).await {
        Ok(text) => text.lines().map(|l| for_log(l).into_owned()).collect(),
        Err(e) => {
            let e = cluster.error("get", &format!("pods/log in namespace {namespace}"), e);
            vec![format!("(no logs: {e})")]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn reasons_from_the_places_kubernetes_puts_them() {
        let p = pod(json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient cpu."}]}));
        let (r, d) = diagnose(&p).unwrap();
        assert_eq!(r, "Unschedulable");
        assert!(d.contains("Insufficient cpu"));

        let p = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "wms-serve", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}));
        assert_eq!(diagnose(&p).unwrap().0, "ImagePullBackOff");

        let p = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "wms-serve", "image": "x", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}));
        let (r, d) = diagnose(&p).unwrap();
        assert_eq!(r, "OOMKilled, CrashLoopBackOff");
        assert!(d.contains("exit code 137"), "{d}");

        let p = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "wms-serve", "image": "x", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"running": {}}}]}));
        assert_eq!(diagnose(&p).unwrap().0, "NotReady");

        let p = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "wms-serve", "image": "x", "imageID": "",
                "ready": true, "restartCount": 0, "state": {"running": {}}}]}));
        assert_eq!(diagnose(&p), None);
    }

    #[test]
    fn one_line_escapes_log_text() {
        let p = PodProblem {
            pod: "p".into(),
            reason: "CrashLoopBackOff".into(),
            detail: String::new(),
            logs: vec!["a".into(), "::error::x\r".into()],
        };
        let line = p.one_line();
        assert!(!line.contains('\r'), "{line}");
        assert!(
            line.starts_with("pod p: CrashLoopBackOff; last log: "),
            "{line}"
        );
    }
}
