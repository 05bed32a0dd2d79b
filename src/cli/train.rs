//! `wms-train train | import | export-pth`. Flags, else the `train` action's `INPUT_*` (config,
//! data, out, seed, device), else the config file, else upstream defaults. Results go to stdout
//! as JSON; logs and progress to stderr. With `MLFLOW_TRACKING_URI` set, `train` logs to MLflow
//! (see [`crate::mlflow::tracker`]) and adds the outputs `mlflow_run_id`, `mlflow_run_url` and
//! `mlflow_unlogged`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::data::preprocess::PreprocessSpec;
use crate::env_vars;
use crate::exit::UsageError;
use crate::github::actions::{Actions, Location};
use crate::mlflow::tracker::{self, Tracker, TrackerOptions, TrackerReport};
use crate::mlflow::{ClientConfig, RunStatus};
use crate::train::{self, TrainConfig, TrainError, TrainPlan, interop};
use crate::untrusted::text::for_log;

/// Run folder when neither `--out`, the action input nor `output.dir` names one.
pub const DEFAULT_OUT: &str = "runs/train";

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// YAML config (keys of upstream configs/train.yaml); absent = upstream defaults.
    /// Action input: `config`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data set folder with images/ and masks/. Action input: `data`.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Run folder for checkpoints, metrics and plots [default: runs/train]. Action input: `out`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// training.epochs
    #[arg(long)]
    pub epochs: Option<u32>,
    /// training.batch_size
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// data.image_size (square network input; multiple of 16 at depth 4)
    #[arg(long, value_name = "PIXELS")]
    pub input_size: Option<u32>,
    /// training.seed. Action input: `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// training.device: cpu, cuda or auto. Action input: `device`.
    #[arg(long, value_parser = ["cpu", "cuda", "auto"])]
    pub device: Option<String>,
    /// training.learning_rate
    #[arg(long)]
    pub lr: Option<f64>,
    /// training.weight_decay
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// training.pos_weight
    #[arg(long)]
    pub pos_weight: Option<f64>,
    /// training.early_stopping_patience
    #[arg(long)]
    pub patience: Option<u32>,
    /// model.base_filters
    #[arg(long)]
    pub base_filters: Option<i64>,
    /// libtorch threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Continue the run in --out from its last finished epoch.
    #[arg(long)]
    pub resume: bool,
}

impl TrainArgs {
    /// Merges flags, action inputs and the config file into a plan; bad values are usage errors.
    pub fn resolve(self, input: impl Fn(&str) -> Option<String>) -> Result<TrainPlan, UsageError> {
        let TrainArgs {
            config,
            data,
            out,
            epochs,
            batch_size,
            input_size,
            seed,
            device,
            lr,
            weight_decay,
            pos_weight,
            patience,
            base_filters,
            threads,
            resume,
        } = self;
        let usage = |e: TrainError| UsageError::new(e.to_string());
        let config_path = config.or_else(|| input("config").map(PathBuf::from));
        let mut cfg = match &config_path {
            Some(p) => TrainConfig::read(p).map_err(usage)?,
            None => TrainConfig::default(),
        };
        let seed = match seed {
            Some(s) => Some(s),
            None => input("seed")
                .map(|s| {
                    s.parse::<u64>().map_err(|_| {
                        UsageError::new(format!(
                            "action input seed={s:?} is not a non-negative integer; hint: e.g. seed: 42"
                        ))
                    })
                })
                .transpose()?,
        };
        let device = device.or_else(|| input("device"));
        let t = &mut cfg.training;
        set(&mut t.epochs, epochs);
        set(&mut t.batch_size, batch_size);
        set(&mut t.seed, seed);
        set(&mut t.device, device);
        set(&mut t.learning_rate, lr);
        set(&mut t.weight_decay, weight_decay);
        set(&mut t.pos_weight, pos_weight);
        set(&mut t.early_stopping_patience, patience);
        set(&mut cfg.data.image_size, input_size);
        set(&mut cfg.model.base_filters, base_filters);
        let data_dir = data
            .or_else(|| input("data").map(PathBuf::from))
            .or_else(|| cfg.data.data_dir.clone())
            .ok_or_else(|| {
                UsageError::new(
                    "no data set given; hint: pass --data DIR (a folder with images/ and masks/; `wms data synth --out DIR` makes one)",
                )
            })?;
        let out_dir = out
            .or_else(|| input("out").map(PathBuf::from))
            .or_else(|| cfg.output.dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_OUT));
        // The plan records where things are; the config keeps only what shapes the result.
        cfg.data.data_dir = None;
        cfg.output.dir = None;
        cfg.validate().map_err(usage)?;
        if threads == Some(0) {
            return Err(UsageError::new(
                "--threads 0; hint: use at least 1, or omit it for all cores",
            ));
        }
        Ok(TrainPlan {
            config: cfg,
            data_dir,
            out_dir,
            resume,
            threads,
        })
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let actions = Actions::from_env();
    let plan = args.resolve(|name| actions.input(name))?;
    let mut tracker = start_tracking(&plan, &actions)?;
    let result = train::train_tracked(&plan, &actions, tracker.as_mut());
    if let Some(t) = tracker {
        let status = match &result {
            Ok(_) => RunStatus::Finished,
            Err(TrainError::Stopped { .. }) => RunStatus::Killed,
            Err(_) => RunStatus::Failed,
        };
        report_tracking(&actions, t.finish(status))?;
    }
    let outcome = result.with_context(|| format!("training into {}", plan.out_dir.display()))?;
    write_step_outputs(&actions, &outcome)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&outcome.metrics).expect("metrics serialize")
    );
    Ok(())
}

/// Step outputs `test_iou`, `test_dice`, `metrics` (JSON), `checkpoint`, and the job summary.
fn write_step_outputs(actions: &Actions, outcome: &train::TrainOutcome) -> anyhow::Result<()> {
    let metric = |key: &str| outcome.metrics.get(key).copied().unwrap_or(f64::NAN);
    actions.set_output("test_iou", &format!("{:.6}", metric("test_iou")))?;
    actions.set_output("test_dice", &format!("{:.6}", metric("test_dice")))?;
    actions.set_output(
        "metrics",
        &serde_json::to_string(&outcome.metrics).expect("metrics serialize"),
    )?;
    actions.set_output("checkpoint", &outcome.best_checkpoint.display().to_string())?;
    actions.append_summary(&summary_markdown(&outcome.metrics))?;
    Ok(())
}

fn summary_markdown(metrics: &BTreeMap<String, f64>) -> String {
    let mut md = String::from("### Training\n\n| metric | value |\n|---|---|\n");
    for key in [
        "test_iou",
        "test_dice",
        "test_accuracy",
        "test_hausdorff",
        "val_iou",
        "best_epoch",
        "epochs_run",
        "train_seconds",
        "images_per_second",
    ] {
        if let Some(v) = metrics.get(key) {
            md.push_str(&format!("| {key} | {v:.4} |\n"));
        }
    }
    md
}

/// With `MLFLOW_TRACKING_URI` set: the experiment (`MLFLOW_EXPERIMENT_NAME`, else the model's
/// name) and a started run, which SIGINT/SIGTERM end as KILLED. Without it: `None`, and training
/// runs exactly as it would without MLflow (signals included).
fn start_tracking(plan: &TrainPlan, actions: &Actions) -> anyhow::Result<Option<Tracker>> {
    // Masked before the settings are checked: an error about them must not show one either.
    for secret in ClientConfig::secrets_from_env() {
        actions.add_mask(&secret);
    }
    let Some(cfg) = ClientConfig::from_env()? else {
        return Ok(None);
    };
    let opts = TrackerOptions {
        experiment: std::env::var(env_vars::MLFLOW_EXPERIMENT_NAME)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| plan.config.model.name.clone()),
        run_name: None,
        buffer_points: tracker::DEFAULT_BUFFER_POINTS,
    };
    let t = Tracker::start(&cfg, &opts, tracker::context_tags("wms-train"))
        .with_context(|| format!("starting an MLflow run on {}", cfg.uri))?;
    // SIGINT/SIGTERM stop training between two steps, so the run can end as KILLED.
    train::stop::watch_signals().context("watching for SIGINT/SIGTERM")?;
    actions.set_output("mlflow_run_id", &t.run().run_id)?;
    actions.set_output("mlflow_run_url", &t.run_url())?;
    Ok(Some(t))
}

/// Step output `mlflow_unlogged` (empty when everything reached the server) and a warning per
/// thing that did not.
fn report_tracking(actions: &Actions, report: TrackerReport) -> anyhow::Result<()> {
    actions.set_output("mlflow_unlogged", &report.unlogged.join("\n"))?;
    for line in &report.unlogged {
        let message = format!("MLflow run {}: {line}", report.run_id);
        if actions.in_actions() {
            actions.warning(&message, &Location::default());
        }
        tracing::warn!("{}", for_log(&message));
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A `torch.save(model.state_dict())` file of the upstream WaterMetersUNet.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The wms checkpoint to write (`.safetensors`).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Input side the model was trained at, recorded for export and serving.
    #[arg(long, value_name = "PIXELS", default_value_t = PreprocessSpec::default().input_width)]
    pub input_size: u32,
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let ImportArgs {
        from,
        out,
        input_size,
    } = args;
    if input_size == 0 {
        return Err(UsageError::new("--input-size 0; hint: e.g. --input-size 512").into());
    }
    let pre = PreprocessSpec {
        input_width: input_size,
        input_height: input_size,
        ..PreprocessSpec::default()
    };
    let ckpt = interop::import_pth(&from, &out, pre)
        .with_context(|| format!("importing {}", from.display()))?;
    tracing::info!(
        tensors = ckpt.tensors.len(),
        "imported {} into {}",
        from.display(),
        out.display()
    );
    let report = serde_json::json!({
        "checkpoint": out,
        "spec": ckpt.meta.spec,
        "parameters": ckpt.meta.spec.parameter_count(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("serializes")
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ExportPthArgs {
    /// A wms checkpoint (`best.safetensors`).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// The `.pth` file to write (loadable with `model.load_state_dict(torch.load(path))`).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run_export_pth(args: ExportPthArgs) -> anyhow::Result<()> {
    let ExportPthArgs { checkpoint, out } = args;
    interop::export_pth(&checkpoint, &out)
        .with_context(|| format!("exporting {}", checkpoint.display()))?;
    println!("{}", out.display());
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Data set folder with images/ and masks/ (`wms data synth` makes one).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// YAML config for everything not given as a flag; absent = upstream defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Timed training steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first (allocator and kernel warm-up).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// training.batch_size
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// data.image_size
    #[arg(long, value_name = "PIXELS")]
    pub input_size: Option<u32>,
    /// training.device: cpu, cuda or auto.
    #[arg(long, value_parser = ["cpu", "cuda", "auto"])]
    pub device: Option<String>,
    /// libtorch threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        data,
        config,
        steps,
        warmup,
        batch_size,
        input_size,
        device,
        threads,
    } = args;
    let usage = |e: TrainError| UsageError::new(e.to_string());
    let mut cfg = match &config {
        Some(p) => TrainConfig::read(p).map_err(usage)?,
        None => TrainConfig::default(),
    };
    set(&mut cfg.training.batch_size, batch_size);
    set(&mut cfg.data.image_size, input_size);
    set(&mut cfg.training.device, device);
    cfg.validate().map_err(usage)?;
    if steps == 0 || threads == Some(0) {
        return Err(UsageError::new("--steps and --threads must be at least 1").into());
    }
    let plan = train::bench::BenchPlan {
        config: cfg,
        data_dir: data,
        steps,
        warmup,
        threads,
    };
    let result = train::bench::bench(&plan).context("benchmarking training")?;
    println!("{}", serde_json::to_string(&result).expect("serializes"));
    Ok(())
}
