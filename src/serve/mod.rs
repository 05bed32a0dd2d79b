//! `wms-serve`: serving `model.onnx` over TorchServe's three APIs — inference ([`inference`]),
//! management ([`management`]) and metrics ([`metrics`]) — each its own listener and its own
//! `app(state) -> Router`, so tests drive them with `tower::ServiceExt::oneshot`. Requests are
//! preprocessed by the library's training preprocessing ([`predict`]), coalesced by a dynamic
//! batcher ([`batcher`]) and run in ONNX Runtime ([`engine`]). [`settings`] owns configuration.
//! Untrusted input is admitted in two places: [`connections`] (connection limit, header and idle
//! timeouts) and [`admission`] (the decode memory budget that image headers are costed against).
//!
//! This module must not grow a second preprocessing path or model description: both come from
//! `data::preprocess` and the model's own `metadata_props`.

pub mod admission;
pub mod batcher;
pub mod connections;
pub mod engine;
pub mod error;
pub mod inference;
pub mod management;
pub mod metrics;
pub mod predict;
pub mod settings;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpListener;

pub use engine::{Engine, EngineError, ModelInfo};
pub use settings::{OrtMemory, ServeSettings, SettingsError};
pub use state::{AppState, SharedState};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "cannot listen on {address} ({key}); hint: pick a free port with --{flag} or set {key} in config.properties"
    )]
    Bind {
        key: &'static str,
        flag: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server error")]
    Io(#[from] std::io::Error),
}

/// The three bound listeners, before serving (their addresses are the real ports).
pub struct Listeners {
    pub inference: TcpListener,
    pub management: TcpListener,
    pub metrics: TcpListener,
}

impl Listeners {
    pub async fn bind(settings: &ServeSettings) -> Result<Self, ServeError> {
        async fn one(
            key: &'static str,
            flag: &'static str,
            address: SocketAddr,
        ) -> Result<TcpListener, ServeError> {
            TcpListener::bind(address)
                .await
                .map_err(|source| ServeError::Bind {
                    key,
                    flag,
                    address,
                    source,
                })
        }
        Ok(Listeners {
            inference: one(
                "inference_address",
                "inference-address",
                settings.inference_address,
            )
            .await?,
            management: one(
                "management_address",
                "management-address",
                settings.management_address,
            )
            .await?,
            metrics: one(
                "metrics_address",
                "metrics-address",
                settings.metrics_address,
            )
            .await?,
        })
    }
}

/// Loads every configured model (ONNX Runtime sessions; no inference yet).
pub async fn load_engines(settings: &ServeSettings) -> Result<Vec<Engine>, ServeError> {
    let models = settings.models.clone();
    let (workers, threads, memory) = (settings.workers, settings.threads, settings.ort_memory);
    let engines = tokio::task::spawn_blocking(move || {
        models
            .iter()
            .map(|m| Engine::load_with(&m.path, m.name.as_deref(), workers, threads, memory))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(engines)
}

/// Runs the server until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish within `shutdown_timeout`, and returns. Prints the bound addresses on stdout as
/// `config.properties` lines (`inference_address=http://…`) for scripts and tests.
pub async fn serve(
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let started = Instant::now();
    let listeners = Listeners::bind(&settings).await?;
    let engines = load_engines(&settings).await?;
    for e in &engines {
        let info = e.info();
        tracing::info!(
            model = %info.name, version = %info.version, path = %info.path.display(),
            input = ?info.input_size(), workers = e.workers(), threads = settings.threads,
            batch_size = settings.batch_size, max_batch_delay_ms = settings.max_batch_delay.as_millis() as u64,
            "model loaded"
        );
    }
    let state = AppState::new(engines, &settings);
    for (key, l) in [
        ("inference_address", &listeners.inference),
        ("management_address", &listeners.management),
        ("metrics_address", &listeners.metrics),
    ] {
        let addr = l.local_addr()?;
        println!("{key}=http://{addr}");
        tracing::info!("{key} http://{addr}");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = connections::ConnectionLimits {
        limit: settings.connection_limit,
        header_read_timeout: settings.header_read_timeout,
        idle_timeout: settings.idle_timeout,
    };
    let mut servers = tokio::task::JoinSet::new();
    for (listener, router) in [
        (listeners.inference, inference::app(state.clone())),
        (listeners.management, management::app(state.clone())),
        (listeners.metrics, metrics::app(state.clone())),
    ] {
        servers.spawn(connections::serve(
            listener,
            router,
            limits,
            stop_rx.clone(),
        ));
    }

    let warm = state.clone();
    let mut warm_up = tokio::spawn(async move { warm.warm_up().await });
    tokio::pin!(shutdown);
    tokio::select! {
        r = &mut warm_up => {
            r.map_err(|e| std::io::Error::other(e.to_string()))??;
            tracing::info!(ms = started.elapsed().as_millis() as u64, "warm-up done; healthy");
            shutdown.await;
        }
        () = &mut shutdown => warm_up.abort(),
    }

    tracing::info!(
        timeout_s = settings.shutdown_timeout.as_secs(),
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = stop_tx.send(true);
    let drain = async {
        while let Some(r) = servers.join_next().await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "listener task failed");
            }
        }
    };
    if tokio::time::timeout(settings.shutdown_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached with requests still in flight; closing them");
    }
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes' stop signal) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("stop signal received");
}
