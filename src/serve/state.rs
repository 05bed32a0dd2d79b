//! What the three APIs share: the loaded models with their batchers, metrics, request limits and
//! the readiness flag that `/ping` reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::admission::DecodeBudget;
use super::batcher::{BatchConfig, Batcher};
use super::engine::{Engine, EngineError};
use super::metrics::{Metrics, ModelLabels};
use super::settings::ServeSettings;

pub type SharedState = Arc<AppState>;

/// Limits applied to every prediction request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_size: usize,
    pub max_image_pixels: u64,
    pub max_image_bit_depth: u8,
    pub body_read_timeout: Duration,
    pub response_timeout: Duration,
}

/// A model being served.
#[derive(Debug)]
pub struct LoadedModel {
    pub engine: Arc<Engine>,
    pub batcher: Batcher,
    pub loaded_at: SystemTime,
}

impl LoadedModel {
    pub fn labels(&self) -> ModelLabels {
        let info = self.engine.info();
        ModelLabels {
            model: info.name.clone(),
            version: info.version.clone(),
        }
    }
}

#[derive(Debug)]
pub struct AppState {
    pub models: Vec<LoadedModel>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Bytes of decoded pixels all requests hold at once.
    pub decode_budget: DecodeBudget,
    pub batching: BatchConfig,
    ready: AtomicBool,
}

impl AppState {
    /// Starts a batcher per engine; call inside a tokio runtime. Not ready until [`Self::warm_up`].
    pub fn new(engines: Vec<Engine>, settings: &ServeSettings) -> SharedState {
        let metrics = Arc::new(Metrics::new());
        let batching = BatchConfig {
            batch_size: settings.batch_size,
            max_batch_delay: settings.max_batch_delay,
            queue_size: settings.job_queue_size,
        };
        let models = engines
            .into_iter()
            .map(|engine| {
                let engine = Arc::new(engine);
                LoadedModel {
                    batcher: Batcher::start(engine.clone(), batching, metrics.clone()),
                    engine,
                    loaded_at: SystemTime::now(),
                }
            })
            .collect();
        Arc::new(AppState {
            models,
            metrics,
            limits: Limits {
                max_request_size: settings.max_request_size,
                max_image_pixels: settings.max_image_pixels,
                max_image_bit_depth: settings.max_image_bit_depth,
                body_read_timeout: settings.body_read_timeout,
                response_timeout: settings.response_timeout,
            },
            decode_budget: DecodeBudget::new(
                settings.decode_memory_budget,
                settings.decode_queue_timeout,
            ),
            batching,
            ready: AtomicBool::new(false),
        })
    }

    pub fn model(&self, name: &str) -> Option<&LoadedModel> {
        self.models.iter().find(|m| m.engine.info().name == name)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Runs one inference per session of every model, then reports healthy.
    pub async fn warm_up(&self) -> Result<(), EngineError> {
        for m in &self.models {
            let engine = m.engine.clone();
            tokio::task::spawn_blocking(move || engine.warm_up())
                .await
                .map_err(|e| EngineError::Run {
                    message: format!("warm-up task failed: {e}"),
                })??;
            self.metrics.model_loaded.get_or_create(&m.labels()).set(1);
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }
}
