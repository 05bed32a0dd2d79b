//! The training loop: BCEWithLogits(pos_weight), Adam with L2 weight decay, ReduceLROnPlateau and
//! early stopping on the validation loss, per-epoch train/val/test metrics, atomic checkpoints and
//! a resume state after every epoch; at the end the best checkpoint is evaluated on the test split
//! (with Hausdorff) and the reports are written.
//!
//! Reproducibility: weights are initialized after `tch::manual_seed(seed)`; epoch `e` reseeds
//! libtorch from (seed, e) and the loader derives its shuffle and augmentation from (seed, e), so
//! a resumed run replays exactly what the uninterrupted run would have done (on the same device
//! and thread count).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tch::{Device, Reduction, Tensor, nn};

use crate::checkpoint::{Checkpoint, CheckpointMeta};
use crate::data::preprocess::PreprocessSpec;
use crate::data::{Dataset, Loader, LoaderConfig, SampleCache, split::split_samples};
use crate::fsutil;
use crate::github::actions::Actions;
use crate::metrics::{Meter, Summary};
use crate::mlflow::tracker::{self as mlflow_tracker, Tracker};

use super::TrainError;
use super::adam::Adam;
use super::config::TrainConfig;
use super::report;
use super::state::{self, EpochRecord, SplitMetrics, TrainState};
use super::unet::{self, UNet};

/// Files of a run folder.
pub const BEST_FILE: &str = "best.safetensors";
pub const LAST_FILE: &str = "last.safetensors";
pub const SIDECAR_FILE: &str = "checkpoint.json";
pub const METRICS_FILE: &str = "metrics.json";
pub const HISTORY_FILE: &str = "history.csv";
pub const CURVES_FILE: &str = "curves.svg";

/// Resolved inputs of one run (flags and config merged by the CLI).
#[derive(Debug, Clone)]
pub struct TrainPlan {
    pub config: TrainConfig,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    pub resume: bool,
    /// libtorch intra-op threads; `None` = all cores.
    pub threads: Option<usize>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub metrics: BTreeMap<String, f64>,
    pub best_checkpoint: PathBuf,
    pub metrics_file: PathBuf,
}

/// The device named in the config (`auto` = CUDA when available).
pub fn resolve_device(name: &str) -> Result<Device, TrainError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => Err(TrainError::NoCuda),
        _ => Ok(Device::cuda_if_available()),
    }
}

/// The libtorch seed of epoch `e` (0 = initialization): a SplitMix64 step of (seed, e), so epochs
/// never share a stream and nothing depends on how many numbers earlier epochs drew.
pub fn epoch_seed(seed: u64, epoch: u32) -> i64 {
    let mut z = seed ^ (u64::from(epoch).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

struct Splits {
    train: Arc<SampleCache>,
    val: Arc<SampleCache>,
    test: Arc<SampleCache>,
}

/// Files of a run folder uploaded to MLflow, with their artifact paths: the checkpoint under
/// `model/` (what `wms promote --artifact-path model` registers), the reports at the root.
pub const TRACKED_ARTIFACTS: &[(&str, &str)] = &[
    (BEST_FILE, "model/best.safetensors"),
    (SIDECAR_FILE, "model/checkpoint.json"),
    (METRICS_FILE, "metrics.json"),
    (HISTORY_FILE, "history.csv"),
    (CURVES_FILE, "curves.svg"),
];

/// Runs (or resumes) training as planned and writes every artifact into `plan.out_dir`.
pub fn train(plan: &TrainPlan, actions: &Actions) -> Result<TrainOutcome, TrainError> {
    train_tracked(plan, actions, None)
}

/// [`train`], also logging to an MLflow run: params and tags once the data is known, one point
/// per metric per epoch, and at the end the final metrics and the run's files. The tracker
/// never fails training; the caller starts it and finishes the run.
pub fn train_tracked(
    plan: &TrainPlan,
    actions: &Actions,
    mut tracker: Option<&mut Tracker>,
) -> Result<TrainOutcome, TrainError> {
    let cfg = &plan.config;
    cfg.validate()?;
    let device = resolve_device(&cfg.training.device)?;
    let threads = plan.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    tch::set_num_threads(threads as i32);
    let spec = cfg.model_spec();
    let pre = cfg.preprocess_spec();
    fs_err::create_dir_all(&plan.out_dir).map_err(|source| TrainError::Io {
        what: "create the run folder (--out)",
        path: plan.out_dir.clone(),
        source,
    })?;

    let dataset = Dataset::discover(&plan.data_dir)?;
    let fingerprint = dataset.fingerprint()?;
    let splits = load_splits(&dataset, cfg, &pre, &plan.data_dir)?;
    tracing::info!(
        device = ?device,
        threads,
        train = splits.train.len(),
        val = splits.val.len(),
        test = splits.test.len(),
        input = pre.input_width,
        "training {} ({} parameters)",
        cfg.model.name,
        spec.parameter_count()
    );

    tch::manual_seed(epoch_seed(cfg.training.seed, 0));
    let vs = nn::VarStore::new(device);
    let model = UNet::new(&vs.root(), &spec);
    let mut adam = Adam::new(
        trainable_in_order(&vs, &spec),
        cfg.training.learning_rate,
        cfg.training.weight_decay,
    );
    let resume_path = plan.out_dir.join(state::RESUME_FILE);
    let mut st = if plan.resume {
        restore(&resume_path, cfg, &fingerprint, &vs, &mut adam)?
    } else {
        TrainState::new(cfg.training.learning_rate)
    };

    let mut meta = CheckpointMeta::new(cfg.model.name.clone(), spec, pre.clone());
    meta.config = serde_json::to_value(cfg).expect("config serializes");
    meta.data_fingerprint = Some(fingerprint.clone());
    meta.git_sha = git_sha();
    meta.source = "wms-train".into();
    meta.optimizer_state = Some(state::RESUME_FILE.into());
    if let Some(t) = tracker.as_deref_mut() {
        t.log_params(&mlflow_tracker::flatten_params(&meta.config));
        let mut tags = vec![(mlflow_tracker::TAG_DATA_FINGERPRINT, fingerprint.clone())];
        if let Some(sha) = &meta.git_sha {
            tags.push((mlflow_tracker::TAG_GIT_COMMIT, sha.clone()));
        }
        t.set_tags(&tags);
        // A resumed run is a new MLflow run: give it the epochs done before the interruption.
        for r in &st.history {
            t.log_epoch(r.epoch, &epoch_metrics(r));
        }
    }

    let pos_weight = Tensor::from_slice(&[cfg.training.pos_weight as f32]).to_device(device);
    let session_start = Instant::now();
    let elapsed_before = st.elapsed_seconds;
    while st.epoch < cfg.training.epochs && !st.stopped_early {
        let epoch = st.epoch + 1;
        let epoch_start = Instant::now();
        let _group = actions.group(&format!("epoch {epoch}/{}", cfg.training.epochs));
        tch::manual_seed(epoch_seed(cfg.training.seed, epoch));
        adam.lr = st.lr;
        let (train_m, data_share, step_seconds, images) = train_epoch(
            &model,
            &mut adam,
            &splits.train,
            cfg,
            epoch,
            device,
            &pos_weight,
            actions,
        )?;
        let val_m = evaluate(&model, &splits.val, cfg, device, &pos_weight, false)?;
        let test_m = evaluate(&model, &splits.test, cfg, device, &pos_weight, false)?;
        let record = EpochRecord {
            epoch,
            lr: st.lr,
            train: train_m,
            val: val_m.into(),
            test: test_m.into(),
            data_share,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        st.epoch = epoch;
        st.step = adam.step;
        st.train_images += images;
        st.train_step_seconds += step_seconds;
        let improved = advance_schedules(&mut st, cfg, val_m.loss);
        st.history.push(record.clone());
        if let Some(t) = tracker.as_deref_mut() {
            t.log_epoch(epoch, &epoch_metrics(&record));
        }
        st.elapsed_seconds = elapsed_before + session_start.elapsed().as_secs_f64();

        let mut epoch_meta = meta.clone();
        epoch_meta.epoch = epoch;
        report::insert_split(&mut epoch_meta.metrics, "train", &record.train);
        report::insert_split(&mut epoch_meta.metrics, "val", &record.val);
        report::insert_split(&mut epoch_meta.metrics, "test", &record.test);
        let weights = unet::state_dict(&vs)?;
        if improved {
            let best = Checkpoint {
                meta: epoch_meta.clone(),
                tensors: weights.clone(),
            };
            best.write(&plan.out_dir.join(BEST_FILE))?;
            write_sidecar(&plan.out_dir.join(SIDECAR_FILE), &epoch_meta)?;
        }
        let mut resume_tensors = weights.clone();
        resume_tensors.extend(adam.state_tensors()?);
        state::write_resume(&resume_path, &epoch_meta, &st, &resume_tensors)?;
        Checkpoint {
            meta: epoch_meta,
            tensors: weights,
        }
        .write(&plan.out_dir.join(LAST_FILE))?;
        report::write_history(&plan.out_dir.join(HISTORY_FILE), &st.history)?;
        report::write_curves(&plan.out_dir.join(CURVES_FILE), &st.history)?;
        tracing::info!(
            epoch,
            lr = record.lr,
            train_loss = format!("{:.4}", record.train.loss),
            val_loss = format!("{:.4}", record.val.loss),
            val_iou = format!("{:.4}", record.val.iou),
            test_iou = format!("{:.4}", record.test.iou),
            data_share = format!("{:.1}%", 100.0 * data_share),
            seconds = format!("{:.1}", record.seconds),
            best = improved,
            "epoch done"
        );
        if st.stopped_early {
            tracing::info!(
                epoch,
                patience = cfg.training.early_stopping_patience,
                "early stopping: no val-loss improvement"
            );
        }
    }

    let outcome = finish(plan, &st, &splits, &vs, &model, device, &pos_weight)?;
    if let Some(t) = tracker {
        t.log_final_metrics(&outcome.metrics);
        for (file, artifact_path) in TRACKED_ARTIFACTS {
            t.log_artifact(&plan.out_dir.join(file), artifact_path);
        }
    }
    Ok(outcome)
}

/// One epoch's row of `history.csv` as metrics (everything but the epoch, which is the step).
fn epoch_metrics(r: &EpochRecord) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("lr".into(), r.lr);
    report::insert_split(&mut m, "train", &r.train);
    report::insert_split(&mut m, "val", &r.val);
    report::insert_split(&mut m, "test", &r.test);
    m.insert("data_share".into(), r.data_share);
    m.insert("seconds".into(), r.seconds);
    m
}

/// Trainable tensors in state-dict order (the VarStore's map has no order), for a stable
/// optimizer layout.
fn trainable_in_order(vs: &nn::VarStore, spec: &crate::model::ModelSpec) -> Vec<(String, Tensor)> {
    let vars = vs.variables();
    spec.state_dict()
        .into_iter()
        .filter_map(|t| {
            vars.get(&t.name)
                .filter(|v| v.requires_grad())
                .map(|v| (t.name.clone(), v.shallow_clone()))
        })
        .collect()
}

fn load_splits(
    dataset: &Dataset,
    cfg: &TrainConfig,
    pre: &PreprocessSpec,
    root: &Path,
) -> Result<Splits, TrainError> {
    let (train, val, test) = split_samples(&dataset.samples, &cfg.split_ratios());
    for (split, s) in [("train", &train), ("val", &val), ("test", &test)] {
        if s.is_empty() {
            return Err(TrainError::EmptySplit {
                split,
                path: root.to_path_buf(),
            });
        }
    }
    let cache = |s| {
        let c = Arc::new(SampleCache::new(s, pre.clone()));
        c.warm().map(|()| c)
    };
    Ok(Splits {
        train: cache(train)?,
        val: cache(val)?,
        test: cache(test)?,
    })
}

fn restore(
    path: &Path,
    cfg: &TrainConfig,
    fingerprint: &str,
    vs: &nn::VarStore,
    adam: &mut Adam,
) -> Result<TrainState, TrainError> {
    let (ckpt, st) = state::read_resume(path)?;
    let err = |message: String, hint| TrainError::Resume {
        path: path.to_path_buf(),
        message,
        hint,
    };
    let mut saved: TrainConfig = serde_json::from_value(ckpt.meta.config.clone()).map_err(|e| {
        err(
            e.to_string(),
            "the state was written by another wms version",
        )
    })?;
    // The device may change between attempts; nothing else may.
    saved.training.device = cfg.training.device.clone();
    if saved != *cfg {
        return Err(err(
            "the configuration differs from the interrupted run's".into(),
            "resume with the same config and flags, or start a fresh run in a new --out folder",
        ));
    }
    if ckpt.meta.data_fingerprint.as_deref() != Some(fingerprint) {
        return Err(err(
            "the data set changed since the interrupted run".into(),
            "resume on the same data, or start a fresh run",
        ));
    }
    let (opt, weights): (BTreeMap<_, _>, BTreeMap<_, _>) = ckpt
        .tensors
        .into_iter()
        .partition(|(k, _)| k.starts_with("optimizer."));
    unet::load_state_dict(vs, &weights)?;
    adam.load_state_tensors(&opt)?;
    adam.step = st.step;
    adam.lr = st.lr;
    tracing::info!(epoch = st.epoch, "resuming after epoch {}", st.epoch);
    Ok(st)
}

/// Updates ReduceLROnPlateau and early stopping from this epoch's val loss; returns whether it is
/// the best so far (the checkpoint to keep).
fn advance_schedules(st: &mut TrainState, cfg: &TrainConfig, val_loss: f64) -> bool {
    let sched = &cfg.training.scheduler;
    // torch ReduceLROnPlateau(mode="min", threshold=1e-4, threshold_mode="rel", cooldown=0).
    let better = st.plateau_best.is_none_or(|b| val_loss < b * (1.0 - 1e-4));
    if better {
        st.plateau_best = Some(val_loss);
        st.plateau_bad_epochs = 0;
    } else {
        st.plateau_bad_epochs += 1;
    }
    if st.plateau_bad_epochs > sched.patience {
        let new_lr = (st.lr * sched.factor).max(sched.min_lr);
        if st.lr - new_lr > 1e-8 {
            tracing::info!(from = st.lr, to = new_lr, "reducing learning rate");
            st.lr = new_lr;
        }
        st.plateau_bad_epochs = 0;
    }
    let improved = st.best_val_loss.is_none_or(|b| val_loss < b);
    if improved {
        st.best_val_loss = Some(val_loss);
        st.best_epoch = st.epoch;
        st.stale_epochs = 0;
    } else {
        st.stale_epochs += 1;
        st.stopped_early = st.stale_epochs >= cfg.training.early_stopping_patience;
    }
    improved
}

pub(crate) fn batch_tensors(
    b: &crate::data::Batch,
    device: Device,
) -> Result<(Tensor, Tensor), TrainError> {
    let (n, h, w) = (b.n as i64, b.height as i64, b.width as i64);
    let x = Tensor::from_slice(&b.images)
        .f_view([n, 3, h, w])?
        .f_to_device(device)?;
    let y = Tensor::from_slice(&b.masks)
        .f_view([n, 1, h, w])?
        .f_to_device(device)?;
    Ok((x, y))
}

fn add_images(
    meter: &mut Meter,
    logits: &Tensor,
    b: &crate::data::Batch,
    hausdorff: bool,
) -> Result<(), TrainError> {
    let flat = logits
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?
        .f_view([-1])?;
    let logits = Vec::<f32>::try_from(&flat)?;
    let plane = b.height * b.width;
    for i in 0..b.n {
        meter.add_image(
            &logits[i * plane..(i + 1) * plane],
            &b.masks[i * plane..(i + 1) * plane],
            b.width,
            b.height,
            hausdorff,
        );
    }
    Ok(())
}

/// One pass over the training split; returns its metrics, the data share, the seconds spent in
/// training steps and the images seen.
#[allow(clippy::too_many_arguments)]
fn train_epoch(
    model: &UNet,
    adam: &mut Adam,
    cache: &Arc<SampleCache>,
    cfg: &TrainConfig,
    epoch: u32,
    device: Device,
    pos_weight: &Tensor,
    actions: &Actions,
) -> Result<(SplitMetrics, f64, f64, u64), TrainError> {
    let loader = Loader::with_cache(
        Arc::clone(cache),
        LoaderConfig {
            batch_size: cfg.training.batch_size,
            shuffle: true,
            augment: Some(cfg.augment()),
            seed: cfg.training.seed,
            epoch: u64::from(epoch),
            drop_last: false,
            prefetch: cfg.data.num_workers.max(1),
        },
    )?;
    let bar = actions.progress(loader.num_batches() as u64, &format!("epoch {epoch}"));
    let mut meter = Meter::default();
    let mut loader = loader;
    let mut step_seconds = 0.0;
    let mut images = 0u64;
    for batch in loader.by_ref() {
        if let Some(signal) = super::stop::requested() {
            return Err(TrainError::Stopped { signal });
        }
        let b = batch?;
        let t = Instant::now();
        let (x, y) = batch_tensors(&b, device)?;
        let logits = model.forward(&x, true)?;
        let loss = logits.f_binary_cross_entropy_with_logits(
            &y,
            None::<&Tensor>,
            Some(pos_weight),
            Reduction::Mean,
        )?;
        adam.zero_grad();
        loss.f_backward()?;
        adam.step()?;
        meter.add_loss(loss.f_double_value(&[])?, b.n);
        add_images(&mut meter, &logits, &b, false)?;
        step_seconds += t.elapsed().as_secs_f64();
        images += b.n as u64;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let share = loader.stats().data_share();
    Ok((meter.summary().into(), share, step_seconds, images))
}

/// Loss and metrics of the model in eval mode over one split.
pub fn evaluate(
    model: &UNet,
    cache: &Arc<SampleCache>,
    cfg: &TrainConfig,
    device: Device,
    pos_weight: &Tensor,
    hausdorff: bool,
) -> Result<Summary, TrainError> {
    let loader = Loader::with_cache(
        Arc::clone(cache),
        LoaderConfig {
            batch_size: cfg.training.batch_size,
            prefetch: cfg.data.num_workers.max(1),
            ..LoaderConfig::default()
        },
    )?;
    let mut meter = Meter::default();
    tch::no_grad(|| -> Result<(), TrainError> {
        for batch in loader {
            let b = batch?;
            let (x, y) = batch_tensors(&b, device)?;
            let logits = model.forward(&x, false)?;
            let loss = logits.f_binary_cross_entropy_with_logits(
                &y,
                None::<&Tensor>,
                Some(pos_weight),
                Reduction::Mean,
            )?;
            meter.add_loss(loss.f_double_value(&[])?, b.n);
            add_images(&mut meter, &logits, &b, hausdorff)?;
        }
        Ok(())
    })?;
    Ok(meter.summary())
}

/// Final test evaluation of the best checkpoint and metrics.json (`cli::train` writes the step
/// outputs and the summary from the outcome).
#[allow(clippy::too_many_arguments)]
fn finish(
    plan: &TrainPlan,
    st: &TrainState,
    splits: &Splits,
    vs: &nn::VarStore,
    model: &UNet,
    device: Device,
    pos_weight: &Tensor,
) -> Result<TrainOutcome, TrainError> {
    let out = &plan.out_dir;
    let best_path = out.join(BEST_FILE);
    let mut best = Checkpoint::read(&best_path)?;
    unet::load_state_dict(vs, &best.tensors)?;
    let test = evaluate(model, &splits.test, &plan.config, device, pos_weight, true)?;
    let best_record = st
        .history
        .iter()
        .find(|r| r.epoch == st.best_epoch)
        .cloned()
        .ok_or_else(|| TrainError::Resume {
            path: out.join(state::RESUME_FILE),
            message: format!("no history for the best epoch {}", st.best_epoch),
            hint: "start a fresh run in a new --out folder",
        })?;
    let mut metrics = BTreeMap::new();
    report::insert_split(&mut metrics, "train", &best_record.train);
    report::insert_split(&mut metrics, "val", &best_record.val);
    report::insert_split(&mut metrics, "test", &test.into());
    metrics.insert("test_hausdorff".into(), test.hausdorff.unwrap_or(0.0));
    metrics.insert("best_epoch".into(), f64::from(st.best_epoch));
    metrics.insert("epochs_run".into(), f64::from(st.epoch));
    metrics.insert("train_seconds".into(), st.elapsed_seconds);
    let ips = if st.train_step_seconds > 0.0 {
        st.train_images as f64 / st.train_step_seconds
    } else {
        0.0
    };
    metrics.insert("images_per_second".into(), ips);

    best.meta.metrics = metrics.clone();
    best.write(&best_path)?;
    write_sidecar(&out.join(SIDECAR_FILE), &best.meta)?;
    let metrics_file = out.join(METRICS_FILE);
    report::write_metrics(&metrics_file, &metrics)?;

    tracing::info!(
        best_epoch = st.best_epoch,
        test_iou = format!("{:.4}", test.iou),
        test_dice = format!("{:.4}", test.dice),
        test_hausdorff = format!("{:.2}", test.hausdorff.unwrap_or(0.0)),
        "training finished; best checkpoint {}",
        best_path.display()
    );
    Ok(TrainOutcome {
        metrics,
        best_checkpoint: best_path,
        metrics_file,
    })
}

fn write_sidecar(path: &Path, meta: &CheckpointMeta) -> Result<(), TrainError> {
    let mut text = serde_json::to_string_pretty(meta).expect("metadata serializes");
    text.push('\n');
    fsutil::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// The commit being trained: `GITHUB_SHA` in Actions, else the HEAD of the git checkout around the
/// working directory (read from `.git`, loose or packed ref); `None` outside a checkout.
fn git_sha() -> Option<String> {
    if let Ok(sha) = std::env::var(crate::env_vars::GITHUB_SHA)
        && !sha.is_empty()
    {
        return Some(sha);
    }
    let cwd = std::env::current_dir().ok()?;
    let git = cwd
        .ancestors()
        .map(|d| d.join(".git"))
        .find(|g| g.is_dir())?;
    let head = fs_err::read_to_string(git.join("HEAD")).ok()?;
    let sha = match head.trim().strip_prefix("ref: ") {
        Some(r) => fs_err::read_to_string(git.join(r)).ok().or_else(|| {
            let packed = fs_err::read_to_string(git.join("packed-refs")).ok()?;
            packed
                .lines()
                .find(|l| l.ends_with(r))
                .and_then(|l| l.split(' ').next())
                .map(str::to_string)
        })?,
        None => head,
    };
    let sha = sha.trim().to_string();
    (sha.len() == 40).then_some(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_and_early_stopping_follow_torch() {
        let mut cfg = TrainConfig::default();
        cfg.training.scheduler.patience = 1;
        cfg.training.early_stopping_patience = 3;
        let mut st = TrainState::new(1e-3);
        let mut run = |loss| {
            st.epoch += 1;
            let improved = advance_schedules(&mut st, &cfg, loss);
            (improved, st.lr, st.stopped_early)
        };
        assert_eq!(run(1.0), (true, 1e-3, false));
        assert_eq!(run(1.0), (false, 1e-3, false));
        // Second bad epoch > patience 1: halve.
        assert_eq!(run(1.0), (false, 5e-4, false));
        assert_eq!(run(1.0), (false, 5e-4, true));
    }

    #[test]
    fn epoch_seeds_differ_and_are_stable() {
        assert_ne!(epoch_seed(42, 1), epoch_seed(42, 2));
        assert_eq!(epoch_seed(42, 1), epoch_seed(42, 1));
        assert!(epoch_seed(u64::MAX, u32::MAX) >= 0);
    }
}
