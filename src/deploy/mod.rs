//! `wms deploy`: one Kubernetes namespace per model version, through the API server only (no
//! kubectl, helm or aws CLI on the runner). This module owns what is applied ([`render`]), how
//! (server-side apply, field manager `wms`: [`apply`]), when a rollout is done or failed
//! ([`rollout`], kubectl's logic) and why pods fail ([`pods`]), the stable entry point and its
//! promotion history ([`route`]), the deploy Lease ([`lease`]), scale/config/status/cleanup
//! ([`ops`]), the smoke test through the service proxy ([`smoke`]), and how a client is made
//! ([`cluster`]). EKS tokens ([`eks`]) and the Helm chart ([`chart`]) sit beside it.
//!
//! It must not shell out, read files other than the kubeconfig (the CLI reads the rest), or
//! print: results and errors go back to `cli::deploy`, which writes step outputs and timing
//! records.
//!
//! The stable entry points other modules call:
//! - [`render::render`]`(&DeploySpec) -> Result<Vec<serde_json::Value>, DeployError>`
//! - [`cluster::Cluster::from_config`]`(kube::Config, label) -> Result<Cluster, DeployError>`:
//!   the seam where a `kube::Config` made elsewhere (EKS) becomes the client every operation
//!   takes.

pub mod apply;
pub mod chart;
pub mod cluster;
pub mod eks;
pub mod lease;
pub mod names;
pub mod ops;
pub mod pods;
pub mod render;
pub mod rollout;
pub mod route;
pub mod smoke;

pub use names::Names;
pub use render::{DeploySpec, Resources};

use crate::untrusted::text::for_log;

/// Everything `wms deploy` can fail with; each message is one line that ends in what to do.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "{flag} {:?} {why}; hint: Kubernetes names are DNS-1123 labels, e.g. v3 or water-meters (write v1-2 for 1.2)",
        for_log(value)
    )]
    NotDnsSafe {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "{flag} {:?}: {why}; hint: see `wms deploy apply --help`",
        for_log(value)
    )]
    Flag {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "--image {image}: {why}; hint: pass the `image` output of build-image (REGISTRY/REPO@sha256:<64 hex>)"
    )]
    Image { image: String, why: String },
    #[error(
        "--image {image} names a tag, not a digest, and a tag can move after the deploy; hint: pass REGISTRY/REPO@sha256:… (the `image` output of build-image), or --allow-tag to deploy the tag anyway"
    )]
    TagOnly { image: String },
    #[error(
        "{credentials}: cannot set up a client for {server}; hint: check the cluster's server URL and certificate data in the kubeconfig"
    )]
    Client {
        server: String,
        credentials: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "kubeconfig context {context:?} cannot be loaded; hint: `kubectl config get-contexts` lists the contexts of $KUBECONFIG (default ~/.kube/config); pass one with --context"
    )]
    Kubeconfig {
        context: String,
        #[source]
        source: KubeconfigCause,
    },
    #[error(
        "no Kubernetes credentials: no kubeconfig and not inside a pod; hint: set KUBECONFIG (or write ~/.kube/config), or pass --eks-cluster NAME --region R"
    )]
    NoCredentials {
        #[source]
        source: KubeconfigCause,
    },
    #[error(
        "cannot reach the Kubernetes API server {server} ({credentials}); hint: check that the cluster is up and that this runner can reach it (VPN, private endpoint, firewall)"
    )]
    Unreachable {
        server: String,
        credentials: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the API server {server} refused the credentials of {credentials} (401 Unauthorized: {}); hint: refresh them (an expired token or certificate; for EKS, wms aws assume-role)",
        for_log(message)
    )]
    Unauthorized {
        server: String,
        credentials: String,
        message: String,
    },
    #[error(
        "{credentials} may not {verb} {resource} (403 Forbidden: {}); hint: grant that identity the RBAC verb `{verb}` on {resource} (a Role/ClusterRole and a binding)",
        for_log(message)
    )]
    Forbidden {
        credentials: String,
        verb: String,
        resource: String,
        message: String,
    },
    #[error(
        "{verb} {resource} failed ({code} {reason}): {}; hint: the API server's message says why",
        for_log(message)
    )]
    Api {
        verb: String,
        resource: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error(
        "server-side apply conflict on {resource}: {}; hint: another field manager owns those fields; pass --force to take them over for `wms`",
        for_log(message)
    )]
    Conflict { resource: String, message: String },
    #[error(
        "the rollout of {namespace}/{deployment} failed: {why}; hint: `wms deploy debug --version {version}` prints each pod's reason and last log lines again"
    )]
    RolloutFailed {
        namespace: String,
        deployment: String,
        version: String,
        why: String,
        /// Each failing pod with its last log lines (the message has one line per pod).
        pods: Vec<pods::PodProblem>,
    },
    #[error(
        "the deploy lock {namespace}/{lease} is held by {holder} (waited {waited_s} s); hint: wait for that deploy to finish, or pass a longer --lock-timeout; a crashed holder's lock expires {duration_s} s after its last renewal"
    )]
    LockHeld {
        namespace: String,
        lease: String,
        holder: String,
        waited_s: u64,
        duration_s: i32,
    },
    #[error(
        "version {version} is not Ready ({why}); the promoted version keeps serving; hint: `wms deploy status` shows every version, `wms deploy debug --version {version}` why its pods fail"
    )]
    NotReady { version: String, why: String },
    #[error(
        "no version {version} of model {model} (namespace {namespace} not found); hint: `wms deploy status` lists the deployed versions"
    )]
    NoSuchVersion {
        model: String,
        version: String,
        namespace: String,
    },
    #[error(
        "nothing to roll back to: {why}; hint: `wms deploy status` shows the promotion history"
    )]
    NothingToRollBack { why: String },
    #[error(
        "namespace {namespace} is stuck Terminating after {waited_s} s: {}; hint: remove what blocks it (a finalizer whose controller is gone, an unavailable API service) and run cleanup again",
        for_log(leftovers)
    )]
    StuckTerminating {
        namespace: String,
        waited_s: u64,
        leftovers: String,
    },
    #[error("smoke test of {target} failed: {why}; hint: `wms deploy debug --version {version}`")]
    Smoke {
        target: String,
        version: String,
        why: String,
    },
    #[error(
        "{what} in {namespace}/{name} is not what wms wrote: {why}; hint: re-run `wms deploy apply` for that version"
    )]
    Unexpected {
        what: &'static str,
        namespace: String,
        name: String,
        why: String,
    },
}

/// A kubeconfig error from kube, as a cause that prints once. kube's `KubeconfigError` writes
/// its cause into its own message and also returns it from `source()` (`ReadConfig`: "failed to
/// read kubeconfig from '…': No such file or directory" with the io error as source), so the
/// chain `exit::render` prints showed the cause twice. This shows kube's message and skips a
/// source whose text that message already carries (the one rule of [`crate::exit`]).
#[derive(Debug)]
pub struct KubeconfigCause(pub kube::config::KubeconfigError);

impl std::fmt::Display for KubeconfigCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for KubeconfigCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause = std::error::Error::source(&self.0)?;
        if self.0.to_string().contains(&cause.to_string()) {
            cause.source()
        } else {
            Some(cause)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{assert_renders_once, render};

    /// `wms deploy` without a kubeconfig: kube's read error (the real one, from
    /// `Kubeconfig::read_from`) names the file and says why once, and the hint comes last.
    #[test]
    fn a_missing_kubeconfig_prints_its_cause_once() {
        let missing = std::path::Path::new("/nonexistent/wms-deploy-test/kubeconfig");
        let kube_err = kube::config::Kubeconfig::read_from(missing).unwrap_err();
        let err = DeployError::NoCredentials {
            source: KubeconfigCause(kube_err),
        };
        assert_renders_once(&err, 1);
        let line = render(&err);
        assert_eq!(
            line.matches("No such file or directory").count(),
            1,
            "{line}"
        );
        assert!(
            line.contains("/nonexistent/wms-deploy-test/kubeconfig"),
            "{line}"
        );
        assert!(
            line.ends_with("or pass --eks-cluster NAME --region R"),
            "{line}"
        );

        let kube_err = kube::config::Kubeconfig::read_from(missing).unwrap_err();
        let err = DeployError::Kubeconfig {
            context: "ci".into(),
            source: KubeconfigCause(kube_err),
        };
        assert_renders_once(&err, 1);
    }
}
