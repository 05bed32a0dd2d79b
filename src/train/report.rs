//! What a run leaves for people and for the next stages: `metrics.json` (flat DESIGN §4 keys that
//! DVC and MLflow both take), `history.csv` (one row per epoch) and `curves.svg` (loss and IoU
//! per epoch). All written atomically. The drawing is [`crate::report::curves`]'s, shared with
//! `wms report`, so the PR report and the training run show the same picture.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::fsutil;
use crate::report::curves;

use super::TrainError;
use super::state::{EpochRecord, SplitMetrics};

/// Columns of `history.csv`, in order (defined where the report reads them back).
pub use crate::report::curves::HISTORY_COLUMNS;

/// Adds `<prefix>_{loss,iou,dice,accuracy}` to a flat metrics map.
pub fn insert_split(map: &mut BTreeMap<String, f64>, prefix: &str, m: &SplitMetrics) {
    map.insert(format!("{prefix}_loss"), m.loss);
    map.insert(format!("{prefix}_iou"), m.iou);
    map.insert(format!("{prefix}_dice"), m.dice);
    map.insert(format!("{prefix}_accuracy"), m.accuracy);
}

pub fn write_metrics(path: &Path, metrics: &BTreeMap<String, f64>) -> Result<(), TrainError> {
    let mut text = serde_json::to_string_pretty(metrics).expect("metrics serialize");
    text.push('\n');
    fsutil::write_atomic(path, text.as_bytes())?;
    Ok(())
}

pub fn write_history(path: &Path, history: &[EpochRecord]) -> Result<(), TrainError> {
    let mut text = HISTORY_COLUMNS.join(",");
    text.push('\n');
    for r in history {
        let row = [
            r.lr,
            r.train.loss,
            r.train.iou,
            r.train.dice,
            r.train.accuracy,
            r.val.loss,
            r.val.iou,
            r.val.dice,
            r.val.accuracy,
            r.test.loss,
            r.test.iou,
            r.test.dice,
            r.test.accuracy,
            r.data_share,
            r.seconds,
        ];
        let _ = write!(text, "{}", r.epoch);
        for v in row {
            let _ = write!(text, ",{v}");
        }
        text.push('\n');
    }
    fsutil::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Two panels: losses (train/val/test) and IoU (train/val/test) per epoch.
pub fn write_curves(path: &Path, history: &[EpochRecord]) -> Result<(), TrainError> {
    let svg = curves::svg(&panels(history)).map_err(|e| TrainError::Plot {
        path: path.to_path_buf(),
        message: match e {
            curves::CurvesError::Plot { message } => message,
            other => other.to_string(),
        },
    })?;
    fsutil::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// The records as the shared loss and IoU panels (same splits, colours and titles as
/// `history.csv` read back by `wms report`).
fn panels(history: &[EpochRecord]) -> Vec<curves::Panel> {
    let pick = |f: &dyn Fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        history.iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    let split = |r: &EpochRecord, name: &str| -> SplitMetrics {
        match name {
            "train" => r.train,
            "val" => r.val,
            _ => r.test,
        }
    };
    curves::PANELS
        .iter()
        .map(|(suffix, title)| curves::Panel {
            title: title.to_string(),
            series: curves::SPLITS
                .iter()
                .map(|(name, _, color)| curves::Series {
                    name: name.to_string(),
                    color: *color,
                    points: pick(&|r| {
                        let m = split(r, name);
                        if *suffix == "loss" { m.loss } else { m.iou }
                    }),
                })
                .collect(),
        })
        .collect()
}
