//! The deploy lock: a `coordination.k8s.io/v1` Lease in the system namespace, held for the whole
//! of every mutating `wms deploy` command, so two deploys (two workflow runs, a person and a run)
//! never interleave their writes.
//!
//! Taking it: create it (a 409 AlreadyExists means someone else just did), or, when it is free
//! (no holder) or expired (`renewTime + leaseDurationSeconds < now`), replace it carrying the
//! resourceVersion read, so that of two writers exactly one wins and the other gets a 409 and
//! looks again. While held, a task renews it every third of its duration; releasing clears the
//! holder (again with the resourceVersion). A holder that crashes stops renewing and the lock
//! frees itself after [`LEASE_SECONDS`].
//!
//! This module must not know what the lock protects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;

use super::DeployError;
use super::cluster::{Cluster, status_code};

/// The Lease's name in the system namespace.
pub const LEASE_NAME: &str = "wms-deploy";
/// How long a holder that stopped renewing keeps the lock.
pub const LEASE_SECONDS: i32 = 30;
/// Between two looks at a lock someone else holds.
const POLL: Duration = Duration::from_millis(500);

/// A held lock; [`LeaseGuard::release`] frees it (dropping it only stops the renewals, and the
/// lock then expires on its own).
pub struct LeaseGuard {
    cluster: Cluster,
    namespace: String,
    holder: String,
    /// The last Lease this holder wrote (renewals update it).
    current: Arc<Mutex<Lease>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Whether the Lease can be taken: no holder, or its holder stopped renewing.
pub fn is_free(lease: &Lease, at: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return true;
    };
    if spec
        .holder_identity
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    renewed.0.as_millisecond() + duration * 1000 < at.as_millisecond()
}

fn holder_of(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// Takes the lock for `holder`, waiting up to `timeout` while someone else holds it.
pub async fn acquire(
    cluster: &Cluster,
    namespace: &str,
    holder: &str,
    timeout: Duration,
) -> Result<LeaseGuard, DeployError> {
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), namespace);
    let resource = format!("leases.coordination.k8s.io in namespace {namespace}");
    let started = Instant::now();
    let mut announced = false;
    loop {
        let existing = api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|e| cluster.error("get", &resource, e))?;
        let taken = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        namespace: Some(namespace.into()),
                        labels: Some(
                            [(
                                super::render::keys::MANAGED_BY.to_string(),
                                super::render::MANAGER.to_string(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(holder.into()),
                        lease_duration_seconds: Some(LEASE_SECONDS),
                        acquire_time: Some(now()),
                        renew_time: Some(now()),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match api.create(&PostParams::default(), &lease).await {
                    Ok(l) => Some(l),
                    Err(e) if status_code(&e) == Some(409) => None,
                    Err(e) => return Err(cluster.error("create", &resource, e)),
                }
            }
            Some(lease) if is_free(&lease, Timestamp::now()) => {
                let mut next = lease.clone();
                let spec = next.spec.get_or_insert_with(LeaseSpec::default);
                let transitions = spec.lease_transitions.unwrap_or(0)
                    + i32::from(spec.holder_identity.as_deref() != Some(holder));
                spec.holder_identity = Some(holder.into());
                spec.lease_duration_seconds = Some(LEASE_SECONDS);
                spec.acquire_time = Some(now());
                spec.renew_time = Some(now());
                spec.lease_transitions = Some(transitions);
                // `next` carries the resourceVersion we read: if anyone wrote in between, 409.
                match api.replace(LEASE_NAME, &PostParams::default(), &next).await {
                    Ok(l) => Some(l),
                    Err(e) if status_code(&e) == Some(409) => None,
                    Err(e) => return Err(cluster.error("update", &resource, e)),
                }
            }
            Some(lease) => {
                let other = holder_of(&lease);
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(DeployError::LockHeld {
                        namespace: namespace.into(),
                        lease: LEASE_NAME.into(),
                        holder: crate::untrusted::text::for_log(&other).into_owned(),
                        waited_s: waited.as_secs(),
                        duration_s: lease
                            .spec
                            .as_ref()
                            .and_then(|s| s.lease_duration_seconds)
                            .unwrap_or(LEASE_SECONDS),
                    });
                }
                if !announced {
                    tracing::info!(
                        "waiting for the deploy lock {namespace}/{LEASE_NAME}, held by {}",
                        crate::untrusted::text::for_log(&other)
                    );
                    announced = true;
                }
                None
            }
        };
        if let Some(lease) = taken {
            tracing::debug!("took the deploy lock {namespace}/{LEASE_NAME} as {holder}");
            let current = Arc::new(Mutex::new(lease));
            let renewer = tokio::spawn(renew_forever(
                api.clone(),
                holder.to_string(),
                current.clone(),
            ));
            return Ok(LeaseGuard {
                cluster: cluster.clone(),
                namespace: namespace.into(),
                holder: holder.into(),
                current,
                renewer,
            });
        }
        let left = timeout.saturating_sub(started.elapsed());
        tokio::time::sleep(POLL.min(left.max(Duration::from_millis(50)))).await;
    }
}

async fn renew_forever(api: Api<Lease>, holder: String, current: Arc<Mutex<Lease>>) {
    let every = Duration::from_secs((LEASE_SECONDS / 3).max(1) as u64);
    loop {
        tokio::time::sleep(every).await;
        let mut held = current.lock().await;
        let mut next = held.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        match api.replace(LEASE_NAME, &PostParams::default(), &next).await {
            Ok(l) => *held = l,
            Err(e) => {
                // Someone took it over (we stalled past the duration) or the server is away;
                // the command's own API calls will say so. Keep trying.
                tracing::warn!("renewing the deploy lock as {holder}: {e}");
                if status_code(&e) == Some(409)
                    && let Ok(l) = api.get(LEASE_NAME).await
                    && holder_of(&l) == holder
                {
                    *held = l;
                }
            }
        }
    }
}

impl LeaseGuard {
    /// Clears the holder, so the next deploy need not wait for the lease to expire.
    pub async fn release(self) -> Result<(), DeployError> {
        self.renewer.abort();
        let api: Api<Lease> = Api::namespaced(self.cluster.client.clone(), &self.namespace);
        let mut next = self.current.lock().await.clone();
        if holder_of(&next) != self.holder {
            return Ok(());
        }
        if let Some(spec) = next.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = Some(now());
        }
        match api.replace(LEASE_NAME, &PostParams::default(), &next).await {
            Ok(_) => Ok(()),
            // Taken over after we stalled: nothing of ours to release.
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.cluster.error(
                "update",
                &format!("leases.coordination.k8s.io in namespace {}", self.namespace),
                e,
            )),
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_ms_ago: i64, duration: i32) -> (Lease, Timestamp) {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let renewed = Timestamp::from_millisecond(at.as_millisecond() - renewed_ms_ago).unwrap();
        (
            Lease {
                metadata: ObjectMeta::default(),
                spec: Some(LeaseSpec {
                    holder_identity: holder.map(String::from),
                    lease_duration_seconds: Some(duration),
                    renew_time: Some(MicroTime(renewed)),
                    ..LeaseSpec::default()
                }),
            },
            at,
        )
    }

    #[test]
    fn free_when_unheld_or_expired() {
        let (l, at) = lease(None, 0, 30);
        assert!(is_free(&l, at));
        let (l, at) = lease(Some("a"), 29_000, 30);
        assert!(!is_free(&l, at));
        let (l, at) = lease(Some("a"), 31_000, 30);
        assert!(is_free(&l, at));
        let (l, at) = lease(Some(""), 0, 30);
        assert!(is_free(&l, at));
    }
}
