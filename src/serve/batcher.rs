//! Dynamic batching (TorchServe's `batch_size` / `max_batch_delay`): preprocessed requests wait
//! in a bounded queue; one batcher task per model takes the first waiting request when a worker
//! is free, collects more until the batch is full or the delay has passed since the first, and
//! runs them as one ONNX Runtime call on the blocking pool. Each request carries a oneshot
//! channel for its logits. Decoding and preprocessing happen before submission, in parallel,
//! never here: the batcher only groups and runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::engine::{Engine, EngineError};
use super::metrics::{Metrics, ModelLabels};

/// Batching policy for one model.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub batch_size: usize,
    pub max_batch_delay: Duration,
    pub queue_size: usize,
}

/// What a request gets back: its logits and how long they took, or why not.
pub type BatchResult = Result<Batched, BatchFailed>;

/// One request's share of a batch run.
#[derive(Debug, Clone)]
pub struct Batched {
    /// `[H·W]` at the model's input size.
    pub logits: Vec<f32>,
    /// From submission until its batch started.
    pub queued: Duration,
    /// The whole batch's forward pass.
    pub compute: Duration,
    pub batch_size: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchFailed {
    #[error("{0}")]
    Engine(String),
    #[error("the batcher stopped")]
    Stopped,
}

impl From<EngineError> for BatchFailed {
    fn from(e: EngineError) -> Self {
        BatchFailed::Engine(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("queue full")]
    Full,
    #[error("batcher stopped")]
    Closed,
}

struct Job {
    input: Vec<f32>,
    enqueued: Instant,
    reply: oneshot::Sender<BatchResult>,
}

/// The submitting side; cheap to clone. The batcher task ends when every handle is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("capacity", &self.tx.capacity())
            .finish()
    }
}

impl Batcher {
    /// Spawns the batcher task on the current tokio runtime.
    pub fn start(engine: Arc<Engine>, config: BatchConfig, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_size.max(1));
        let labels = ModelLabels {
            model: engine.info().name.clone(),
            version: engine.info().version.clone(),
        };
        tokio::spawn(run(rx, engine, config, metrics, labels));
        Batcher { tx }
    }

    /// Queues a preprocessed input; fails at once when the queue is full.
    pub fn submit(&self, input: Vec<f32>) -> Result<oneshot::Receiver<BatchResult>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            input,
            enqueued: Instant::now(),
            reply,
        };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Full,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })?;
        Ok(rx)
    }
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    engine: Arc<Engine>,
    config: BatchConfig,
    metrics: Arc<Metrics>,
    labels: ModelLabels,
) {
    // One permit per worker: a batch is formed only when a worker can run it at once, so
    // requests arriving meanwhile wait in the queue and join the next batch. A batch that
    // leaves the queue empty while every worker is idle takes all permits and runs on the
    // session that uses every thread (a lone request's lowest latency); otherwise it runs on a
    // lane of its own, next to the others (throughput under load).
    let worker_count = engine.workers();
    let workers = Arc::new(Semaphore::new(worker_count));
    let batch_size = config.batch_size.max(1);
    loop {
        let Ok(permit) = workers.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + config.max_batch_delay;
        while jobs.len() < batch_size {
            // Take what is already queued without waiting, then wait until the deadline.
            match rx.try_recv() {
                Ok(job) => {
                    jobs.push(job);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        // Requests whose caller gave up (timeout, disconnect) are not worth computing.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let started = Instant::now();
        for j in &jobs {
            metrics
                .queue_seconds
                .get_or_create(&labels)
                .observe(started.duration_since(j.enqueued).as_secs_f64());
        }
        metrics
            .batch_size
            .get_or_create(&labels)
            .observe(jobs.len() as f64);
        let wide = if worker_count > 1 && rx.is_empty() {
            workers
                .clone()
                .try_acquire_many_owned(worker_count as u32 - 1)
                .ok()
        } else {
            None
        };
        let engine = engine.clone();
        let compute = metrics.compute_seconds.get_or_create(&labels).clone();
        tokio::task::spawn_blocking(move || {
            let inputs: Vec<&[f32]> = jobs.iter().map(|j| j.input.as_slice()).collect();
            let run_started = Instant::now();
            let result = match wide {
                Some(_) => engine.run(&inputs),
                None => engine.run_lane(&inputs),
            };
            let took = run_started.elapsed();
            compute.observe(took.as_secs_f64());
            drop((permit, wide));
            match result {
                Ok(outputs) => {
                    let batch_size = jobs.len();
                    for (job, logits) in jobs.into_iter().zip(outputs) {
                        let _ = job.reply.send(Ok(Batched {
                            logits,
                            queued: started.duration_since(job.enqueued),
                            compute: took,
                            batch_size,
                        }));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, batch = jobs.len(), "batch inference failed");
                    let failed = BatchFailed::from(e);
                    for job in jobs {
                        let _ = job.reply.send(Err(failed.clone()));
                    }
                }
            }
        });
    }
}
