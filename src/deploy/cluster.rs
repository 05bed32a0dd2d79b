//! Which cluster, as whom: a [`Cluster`] is a `kube::Client` plus the API server URL and a label
//! for the credentials (`context NAME`, `in-cluster service account`, `EKS cluster NAME`), so
//! every error can say where it went. This module owns turning API failures into
//! [`DeployError`]s (unreachable, 401, 403 with the RBAC verb, other statuses); it must not decide
//! anything about deployments.
//!
//! Credentials, in order: `--context`/`$KUBECONFIG`/`~/.kube/config` (kube's loader, so exec
//! plugins and client certificates work), else the pod's service account. EKS builds its own
//! `kube::Config` (`deploy::eks`) and comes in through [`Cluster::from_config`].

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{DeployError, KubeconfigCause};

/// The client every deploy operation takes.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    /// The API server URL, for messages.
    pub server: String,
    /// Whose credentials: `context NAME`, `in-cluster service account`, `EKS cluster NAME`.
    pub credentials: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Seconds to open a TCP connection to the API server before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Cluster {
    /// The seam for any `kube::Config` (kubeconfig, in-cluster, EKS): a client with wms'
    /// timeouts. `credentials` names where the config came from, for messages.
    pub fn from_config(
        config: kube::Config,
        credentials: impl Into<String>,
    ) -> Result<Self, DeployError> {
        super::eks::install_tls_provider();
        let credentials = credentials.into();
        let config = Self::with_timeouts(config);
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|source| DeployError::Client {
            server: server.clone(),
            credentials: credentials.clone(),
            source,
        })?;
        Ok(Cluster {
            client,
            server,
            credentials,
        })
    }

    /// A client built elsewhere (the EKS client re-signs its token per request).
    pub fn from_client(
        client: kube::Client,
        server: impl Into<String>,
        credentials: impl Into<String>,
    ) -> Self {
        Cluster {
            client,
            server: server.into(),
            credentials: credentials.into(),
        }
    }

    /// `config` with wms' timeouts: connecting gives up after [`CONNECT_TIMEOUT`]; reads
    /// wait longer than a watch's own timeoutSeconds (at most 290 s).
    ///
    /// kube's default retry is off: it repeats every 429/503/504 up to 15 times with a backoff
    /// doubling from 5 ms (about 5 minutes in all), so a smoke test whose service proxy answers
    /// 503 (the pod does not answer) failed only after those minutes, and any such answer
    /// overran `--wait`. A failed request is reported at once, naming what it was.
    pub fn with_timeouts(mut config: kube::Config) -> kube::Config {
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(Duration::from_secs(330));
        config.default_retry = false;
        config
    }

    /// `--context` or the kubeconfig's current context; without a kubeconfig, the pod's
    /// service account.
    pub async fn connect(context: Option<&str>) -> Result<Self, DeployError> {
        match Kubeconfig::read() {
            Ok(kubeconfig) => {
                let name = context
                    .map(str::to_string)
                    .or_else(|| kubeconfig.current_context.clone())
                    .unwrap_or_default();
                let options = KubeConfigOptions {
                    context: context.map(str::to_string),
                    ..KubeConfigOptions::default()
                };
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|source| DeployError::Kubeconfig {
                        context: name.clone(),
                        source: KubeconfigCause(source),
                    })?;
                Self::from_config(config, format!("context {name}"))
            }
            Err(kubeconfig_err) => {
                if let Some(name) = context {
                    return Err(DeployError::Kubeconfig {
                        context: name.to_string(),
                        source: KubeconfigCause(kubeconfig_err),
                    });
                }
                match kube::Config::incluster() {
                    Ok(config) => Self::from_config(config, "in-cluster service account"),
                    Err(_) => Err(DeployError::NoCredentials {
                        source: KubeconfigCause(kubeconfig_err),
                    }),
                }
            }
        }
    }

    /// Classifies a failed API call: `verb` and `resource` say what wms tried (`patch`,
    /// `deployments.apps in wms-m-v3`), so a 403 names the permission to grant.
    pub fn error(&self, verb: &str, resource: &str, err: kube::Error) -> DeployError {
        classify(&self.server, &self.credentials, verb, resource, err)
    }
}

/// See [`Cluster::error`].
pub fn classify(
    server: &str,
    credentials: &str,
    verb: &str,
    resource: &str,
    err: kube::Error,
) -> DeployError {
    match err {
        kube::Error::Api(status) => {
            let message = status.message.clone();
            match status.code {
                401 => DeployError::Unauthorized {
                    server: server.into(),
                    credentials: credentials.into(),
                    message,
                },
                403 => DeployError::Forbidden {
                    credentials: credentials.into(),
                    verb: verb.into(),
                    resource: resource.into(),
                    message,
                },
                code => DeployError::Api {
                    verb: verb.into(),
                    resource: resource.into(),
                    code,
                    reason: status.reason.clone(),
                    message,
                },
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => DeployError::Unreachable {
            server: server.into(),
            credentials: credentials.into(),
            source: err,
        },
        other => DeployError::Client {
            server: server.into(),
            credentials: credentials.into(),
            source: other,
        },
    }
}

/// The HTTP status of an API error, if it is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
