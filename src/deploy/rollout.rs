//! When a rollout is done, still going, or failed: [`decide`] is kubectl's
//! `DeploymentStatusViewer.Status` (kubernetes/kubectl `pkg/polymorphichelpers/rollout_status.go`)
//! and [`wait`] follows the Deployment with a watch until it decides or the time is up.
//!
//! Why not kube-runtime's `is_deployment_completed`: it only looks at the `Progressing`
//! condition, which right after an apply still describes the previous rollout; kubectl first
//! checks that the controller has observed the new generation.
//!
//! Watches end (API server timeouts, load balancers, restarts): [`wait`] re-watches from the last
//! resourceVersion it saw (events or bookmarks), and on `410 Gone` reads the Deployment again and
//! watches from there. This module must not look at pods (that is [`super::pods`]).

use std::time::{Duration, Instant};

use futures_util::TryStreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, WatchEvent, WatchParams};

use super::DeployError;
use super::cluster::{Cluster, status_code};

/// What kubectl would say about a Deployment now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// `successfully rolled out`.
    Done,
    /// Still going; the text is kubectl's waiting message.
    Waiting(String),
    /// `ProgressDeadlineExceeded`: the controller gave up.
    Failed(String),
}

/// kubectl's decision, step by step (rollout_status.go:59-91).
pub fn decide(d: &Deployment) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or("deployment");
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Rollout::Waiting(format!(
            "waiting for the controller to observe generation {generation} of {name}"
        ));
    }
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Rollout::Failed(format!(
            "{name} exceeded its progress deadline ({})",
            c.message.as_deref().unwrap_or("ProgressDeadlineExceeded")
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if let Some(want) = d.spec.replicas
        && updated < want
    {
        return Rollout::Waiting(format!(
            "{updated} of {want} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    Rollout::Done
}

/// How a wait ended (errors talking to the API server are `Err`).
#[derive(Debug, Clone)]
pub enum Waited {
    Done(Box<Deployment>),
    Failed(String, Box<Deployment>),
    /// Time is up; the text is the last waiting message.
    TimedOut(String, Box<Deployment>),
}

/// What the wait saw, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Watches opened (1 + re-watches after a stream ended or a 410).
    pub watches: u32,
    /// `410 Gone` answers that made it read the Deployment again.
    pub gone: u32,
}

/// Follows Deployment `namespace/name` until [`decide`] says done or failed, or `timeout`.
pub async fn wait(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(Waited, WatchStats), DeployError> {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), namespace);
    let resource = format!("deployments.apps in namespace {namespace}");
    let get = || async {
        api.get(name)
            .await
            .map_err(|e| cluster.error("get", &resource, e))
    };
    let deadline = Instant::now() + timeout;
    let mut stats = WatchStats::default();
    let mut last = get().await?;
    let mut rv = last.metadata.resource_version.clone().unwrap_or_default();
    let mut said = String::new();
    loop {
        match decide(&last) {
            Rollout::Done => return Ok((Waited::Done(Box::new(last)), stats)),
            Rollout::Failed(why) => return Ok((Waited::Failed(why, Box::new(last)), stats)),
            Rollout::Waiting(msg) => {
                if msg != said {
                    tracing::info!("{namespace}/{name}: {msg}");
                    said = msg;
                }
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok((Waited::TimedOut(said, Box::new(last)), stats));
        }
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(remaining.as_secs().clamp(1, 290) as u32);
        stats.watches += 1;
        let followed = tokio::time::timeout(remaining, async {
            let stream = match api.watch(&params, &rv).await {
                Ok(s) => s,
                Err(e) if status_code(&e) == Some(410) => return Ok(Step::Gone),
                Err(e) => return Err(cluster.error("watch", &resource, e)),
            };
            futures_util::pin_mut!(stream);
            loop {
                let event = match stream.try_next().await {
                    Ok(Some(ev)) => ev,
                    // The server (or something in between) closed the stream.
                    Ok(None) => return Ok(Step::Ended),
                    Err(e) if status_code(&e) == Some(410) => return Ok(Step::Gone),
                    // A connection cut mid-stream is an ended watch too; the next watch (or
                    // get) tells whether the server is really gone.
                    Err(e) => {
                        tracing::debug!("watch of {namespace}/{name} broke: {e}");
                        return Ok(Step::Ended);
                    }
                };
                match event {
                    WatchEvent::Added(d) | WatchEvent::Modified(d) => {
                        if d.metadata.name.as_deref() != Some(name) {
                            continue;
                        }
                        rv = d.metadata.resource_version.clone().unwrap_or_default();
                        let settled = !matches!(decide(&d), Rollout::Waiting(_));
                        last = d;
                        if settled {
                            return Ok(Step::Settled);
                        }
                    }
                    WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                    WatchEvent::Deleted(_) => {
                        return Err(DeployError::Unexpected {
                            what: "the Deployment",
                            namespace: namespace.to_string(),
                            name: name.to_string(),
                            why: "it was deleted during the rollout".into(),
                        });
                    }
                    WatchEvent::Error(status) if status.code == 410 => return Ok(Step::Gone),
                    WatchEvent::Error(status) => {
                        return Err(cluster.error("watch", &resource, kube::Error::Api(status)));
                    }
                }
            }
        })
        .await;
        match followed {
            Err(_elapsed) => {
                return Ok((Waited::TimedOut(said, Box::new(last)), stats));
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Step::Settled)) => {}
            Ok(Ok(Step::Ended)) => {
                tracing::debug!("watch of {namespace}/{name} ended; watching again from {rv}")
            }
            Ok(Ok(Step::Gone)) => {
                stats.gone += 1;
                tracing::debug!("resourceVersion {rv} is gone (410); reading {name} again");
                last = get().await?;
                rv = last.metadata.resource_version.clone().unwrap_or_default();
            }
        }
    }
}

enum Step {
    Settled,
    Ended,
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    /// A Deployment at `generation` whose status (of `observed`) has all `replicas` updated,
    /// `available` of them available, and the Progressing condition `progressing` (its status,
    /// reason and message).
    fn progressing(
        generation: i64,
        observed: i64,
        replicas: i32,
        available: i32,
        mut progressing: serde_json::Value,
    ) -> Deployment {
        progressing["type"] = json!("Progressing");
        deployment(json!({
            "metadata": {"name": "m", "generation": generation},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "replicas": replicas,
                       "updatedReplicas": replicas, "availableReplicas": available,
                       "conditions": [progressing]},
        }))
    }

    #[test]
    fn an_unobserved_generation_waits_even_if_the_old_rollout_looks_complete() {
        // The previous rollout's status, complete, but generation 3 is not observed yet:
        // is_deployment_completed would say done here.
        let complete = json!({"status": "True", "reason": "NewReplicaSetAvailable"});
        let d = progressing(3, 2, 2, 2, complete);
        assert!(matches!(decide(&d), Rollout::Waiting(m) if m.contains("generation 3")));
    }

    #[test]
    fn kubectl_steps_in_order() {
        let at = |updated: i32, replicas: i32, available: i32| {
            deployment(json!({
                "metadata": {"name": "m", "generation": 2},
                "spec": {"replicas": 2},
                "status": {"observedGeneration": 2, "replicas": replicas,
                           "updatedReplicas": updated, "availableReplicas": available},
            }))
        };
        assert!(matches!(decide(&at(1, 3, 2)), Rollout::Waiting(m) if m.contains("1 of 2 new")));
        assert!(
            matches!(decide(&at(2, 3, 2)), Rollout::Waiting(m) if m.contains("1 old replicas"))
        );
        assert!(
            matches!(decide(&at(2, 2, 1)), Rollout::Waiting(m) if m.contains("1 of 2 updated"))
        );
        assert_eq!(decide(&at(2, 2, 2)), Rollout::Done);
    }

    #[test]
    fn progress_deadline_fails_before_the_replica_counts() {
        let deadline = json!({"status": "False", "reason": "ProgressDeadlineExceeded",
                              "message": "ReplicaSet \"m-abc\" has timed out progressing."});
        let d = progressing(1, 1, 1, 0, deadline);
        assert!(matches!(decide(&d), Rollout::Failed(m) if m.contains("timed out progressing")));
    }

    #[test]
    fn zero_replicas_is_done_once_observed() {
        let d = deployment(json!({
            "metadata": {"name": "m", "generation": 4},
            "spec": {"replicas": 0},
            "status": {"observedGeneration": 4},
        }));
        assert_eq!(decide(&d), Rollout::Done);
    }
}
