//! What a run leaves for people and for the next stages: `metrics.json` (flat DESIGN §4 keys that
//! DVC and MLflow both take), `history.csv` (one row per epoch) and `curves.svg` (loss and IoU
//! per epoch). All written atomically.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::fsutil;

use super::TrainError;
use super::state::{EpochRecord, SplitMetrics};

/// Columns of `history.csv`, in order.
pub const HISTORY_COLUMNS: &[&str] = &[
    "epoch",
    "lr",
    "train_loss",
    "train_iou",
    "train_dice",
    "train_accuracy",
    "val_loss",
    "val_iou",
    "val_dice",
    "val_accuracy",
    "test_loss",
    "test_iou",
    "test_dice",
    "test_accuracy",
    "data_share",
    "seconds",
];

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
    let mut svg = String::new();
    draw_curves(&mut svg, history).map_err(|message| TrainError::Plot {
        path: path.to_path_buf(),
        message,
    })?;
    fsutil::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn draw_curves(svg: &mut String, history: &[EpochRecord]) -> Result<(), String> {
    let root = SVGBackend::with_string(svg, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(500);
    let pick = |f: fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        history.iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    let losses: Vec<Series> = vec![
        ("train", BLUE, pick(|r| r.train.loss)),
        ("val", RED, pick(|r| r.val.loss)),
        ("test", GREEN, pick(|r| r.test.loss)),
    ];
    let ious: Vec<Series> = vec![
        ("train", BLUE, pick(|r| r.train.iou)),
        ("val", RED, pick(|r| r.val.iou)),
        ("test", GREEN, pick(|r| r.test.iou)),
    ];
    panel(&left, "BCE loss", &losses)?;
    panel(&right, "IoU", &ious)?;
    root.present().map_err(|e| e.to_string())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
) -> Result<(), String> {
    let points = || series.iter().flat_map(|s| s.2.iter());
    let x_max = points().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(1.0..x_max.max(2.0), 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, color, pts) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}
