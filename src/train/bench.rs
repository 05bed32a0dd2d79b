//! `wms-train bench`: training throughput of the real pipeline (our loader with augmentation,
//! forward, BCE, backward, Adam) for a fixed number of steps, for `make bench-train`, which runs
//! the PyTorch eager reference (`bench/train/reference.py`) on the same data in the same command.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tch::{Reduction, Tensor, nn};

use crate::data::{Dataset, Loader, LoaderConfig, SampleCache};

use super::TrainError;
use super::adam::Adam;
use super::config::TrainConfig;
use super::trainer::{batch_tensors, epoch_seed, resolve_device};
use super::unet::UNet;

#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub config: TrainConfig,
    pub data_dir: PathBuf,
    /// Timed steps, after `warmup` untimed ones.
    pub steps: usize,
    pub warmup: usize,
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub framework: &'static str,
    pub images_per_second: f64,
    pub steps: usize,
    pub batch_size: usize,
    pub input_size: u32,
    pub threads: usize,
    /// Share of the timed steps spent waiting for data.
    pub data_share: f64,
    /// Shares of the timed steps spent in the forward pass with the loss, the backward pass and
    /// the optimizer (zero_grad + step); with `data_share` they add up to about 1.
    pub forward_share: f64,
    pub backward_share: f64,
    pub optimizer_share: f64,
    /// One-time decode + resize of the data set (cached across epochs), not in images/s.
    pub decode_seconds: f64,
}

pub fn bench(plan: &BenchPlan) -> Result<BenchResult, TrainError> {
    let cfg = &plan.config;
    cfg.validate()?;
    let device = resolve_device(&cfg.training.device)?;
    let threads = plan.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    tch::set_num_threads(threads as i32);
    let dataset = Dataset::discover(&plan.data_dir)?;
    let decode_start = Instant::now();
    let cache = Arc::new(SampleCache::new(dataset.samples, cfg.preprocess_spec()));
    cache.warm()?;
    let decode_seconds = decode_start.elapsed().as_secs_f64();

    tch::manual_seed(epoch_seed(cfg.training.seed, 0));
    let vs = nn::VarStore::new(device);
    let model = UNet::new(&vs.root(), &cfg.model_spec());
    let params = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    let mut adam = Adam::new(
        params,
        cfg.training.learning_rate,
        cfg.training.weight_decay,
    );
    let pos_weight = Tensor::from_slice(&[cfg.training.pos_weight as f32]).to_device(device);

    let total = plan.warmup + plan.steps;
    let (mut done, mut epoch) = (0usize, 0u64);
    let (mut images, mut wait) = (0usize, 0.0f64);
    // Seconds in forward + loss, backward, optimizer over the timed steps.
    let mut phases = [0.0f64; 3];
    let mut timed_start = Instant::now();
    while done < total {
        epoch += 1;
        let mut loader = Loader::with_cache(
            Arc::clone(&cache),
            LoaderConfig {
                batch_size: cfg.training.batch_size,
                shuffle: true,
                augment: Some(cfg.augment()),
                seed: cfg.training.seed,
                epoch,
                drop_last: true,
                prefetch: cfg.data.num_workers.max(1),
            },
        )?;
        loop {
            if done == plan.warmup {
                timed_start = Instant::now();
            }
            let t = Instant::now();
            let Some(batch) = loader.next() else { break };
            if done >= plan.warmup {
                wait += t.elapsed().as_secs_f64();
            }
            let b = batch?;
            let t0 = Instant::now();
            let (x, y) = batch_tensors(&b, device)?;
            let logits = model.forward(&x, true)?;
            let loss = logits.f_binary_cross_entropy_with_logits(
                &y,
                None::<&Tensor>,
                Some(&pos_weight),
                Reduction::Mean,
            )?;
            let t1 = Instant::now();
            adam.zero_grad();
            loss.f_backward()?;
            let t2 = Instant::now();
            adam.step()?;
            // Wait for the device so the step is really over before the clock reads it.
            let _ = loss.f_double_value(&[])?;
            if done >= plan.warmup {
                images += b.n;
                phases[0] += (t1 - t0).as_secs_f64();
                phases[1] += (t2 - t1).as_secs_f64();
                phases[2] += t2.elapsed().as_secs_f64();
            }
            done += 1;
            if done == total {
                break;
            }
        }
        if loader.num_batches() == 0 {
            return Err(TrainError::Invalid {
                field: "training.batch_size",
                message: format!(
                    "{} is larger than the data set ({} samples)",
                    cfg.training.batch_size,
                    cache.len()
                ),
            });
        }
    }
    let elapsed = timed_start.elapsed().as_secs_f64();
    Ok(BenchResult {
        framework: "wms-train (tch)",
        images_per_second: images as f64 / elapsed,
        steps: plan.steps,
        batch_size: cfg.training.batch_size,
        input_size: cfg.data.image_size,
        threads,
        data_share: wait / elapsed,
        forward_share: phases[0] / elapsed,
        backward_share: phases[1] / elapsed,
        optimizer_share: phases[2] / elapsed,
        decode_seconds,
    })
}
