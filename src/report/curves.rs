//! Training curves, drawn twice from the same numbers: as an SVG (plotters; what `wms-train`
//! writes as `curves.svg` and `wms report` writes next to the metrics) and as Mermaid
//! `xychart-beta` blocks that GitHub renders inline in a comment, so no image host is needed.
//!
//! It reads `history.csv` (the columns `wms-train` writes, [`HISTORY_COLUMNS`]) into [`History`];
//! it draws and renders, and writes nothing itself.
//!
//! Mermaid facts (DELIVERY-FACTS §3): GitHub's parser rejects unquoted non-ASCII x-axis labels, so
//! every label is quoted; `xychart-beta`, not the newer plain `xychart`. A chart has no legend,
//! so the colours are fixed (`plotColorPalette`) and named in the text under it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// Columns of `history.csv`, in order (what `wms-train` writes).
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

/// The splits drawn, with their colours (the SVG and the Mermaid palette agree).
pub const SPLITS: &[(&str, &str, RGBColor)] = &[
    ("train", "#1f77b4", RGBColor(0x1f, 0x77, 0xb4)),
    ("val", "#d62728", RGBColor(0xd6, 0x27, 0x28)),
    ("test", "#2ca02c", RGBColor(0x2c, 0xa0, 0x2c)),
];

/// The two panels: (column suffix, title).
pub const PANELS: &[(&str, &str)] = &[("loss", "BCE loss"), ("iou", "IoU")];

/// At most this many points per Mermaid line (longer runs are sampled evenly, last epoch kept):
/// a chart of 300 x labels is unreadable and costs comment characters.
pub const MERMAID_MAX_POINTS: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum CurvesError {
    /// The path is in the cause (fs_err names it), so the message does not repeat it.
    #[error(
        "cannot read the training history; hint: pass the history.csv wms-train wrote into its --out folder"
    )]
    Read {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: line {line}: {message}; hint: history.csv is written by wms-train (columns: epoch,lr,train_loss,…)"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot draw the curves: {message}; hint: this is a wms bug, please report it")]
    Plot { message: String },
}

/// One line of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    /// (epoch, value)
    pub points: Vec<(f64, f64)>,
}

/// One chart: a title and its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// `history.csv` as columns: the epoch numbers and, per column name, one value per epoch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    pub epochs: Vec<f64>,
    pub columns: Vec<(String, Vec<f64>)>,
}

impl History {
    pub fn column(&self, name: &str) -> Option<&[f64]> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Reads a `history.csv`: a header with `epoch` and numeric columns; every row numeric.
    pub fn read(path: &Path) -> Result<History, CurvesError> {
        let text = fs_err::read_to_string(path).map_err(|source| CurvesError::Read { source })?;
        History::parse(&text).map_err(|(line, message)| CurvesError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    /// Errors are (1-based line, message).
    pub fn parse(text: &str) -> Result<History, (usize, String)> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err((1, "the file is empty".into()));
        };
        let names: Vec<String> = header.split(',').map(|s| s.trim().to_string()).collect();
        let Some(epoch_col) = names.iter().position(|n| n == "epoch") else {
            return Err((1, "the header has no `epoch` column".into()));
        };
        let mut history = History {
            epochs: Vec::new(),
            columns: names
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != epoch_col)
                .map(|(_, n)| (n.clone(), Vec::new()))
                .collect(),
        };
        for (i, line) in lines {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != names.len() {
                return Err((
                    i + 1,
                    format!(
                        "{} fields where the header has {}",
                        cells.len(),
                        names.len()
                    ),
                ));
            }
            let mut values = Vec::with_capacity(cells.len());
            for (cell, name) in cells.iter().zip(&names) {
                let v: f64 = cell.parse().map_err(|_| {
                    (
                        i + 1,
                        format!(
                            "column {}: {} is not a number",
                            crate::untrusted::text::for_log(name),
                            crate::untrusted::text::for_log(&format!("{cell:?}"))
                        ),
                    )
                })?;
                values.push(v);
            }
            history.epochs.push(values[epoch_col]);
            let mut c = 0;
            for (j, v) in values.into_iter().enumerate() {
                if j != epoch_col {
                    history.columns[c].1.push(v);
                    c += 1;
                }
            }
        }
        if history.epochs.is_empty() {
            return Err((1, "no epochs after the header".into()));
        }
        Ok(history)
    }

    /// The loss and IoU panels for the splits this history has.
    pub fn panels(&self) -> Vec<Panel> {
        PANELS
            .iter()
            .map(|(suffix, title)| Panel {
                title: title.to_string(),
                series: SPLITS
                    .iter()
                    .filter_map(|(split, _, color)| {
                        let values = self.column(&format!("{split}_{suffix}"))?;
                        Some(Series {
                            name: split.to_string(),
                            color: *color,
                            points: self
                                .epochs
                                .iter()
                                .copied()
                                .zip(values.iter().copied())
                                .collect(),
                        })
                    })
                    .collect(),
            })
            .filter(|p| !p.series.is_empty())
            .collect()
    }
}

/// The panels side by side as one SVG document.
pub fn svg(panels: &[Panel]) -> Result<String, CurvesError> {
    let mut out = String::new();
    draw(&mut out, panels).map_err(|message| CurvesError::Plot { message })?;
    Ok(out)
}

fn draw(out: &mut String, panels: &[Panel]) -> Result<(), String> {
    let n = panels.len().max(1);
    let root = SVGBackend::with_string(out, (500 * n as u32, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    for (area, panel) in root.split_evenly((1, n)).iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), String> {
    let points = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let x_max = points().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
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
    for s in &panel.series {
        let color = s.color;
        let finite = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite());
        chart
            .draw_series(LineSeries::new(finite, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// A Mermaid `xychart-beta` block (with its ```` ```mermaid ```` fence) per panel, and the
/// sentence naming the colours. Series with a non-finite value are left out and named.
pub fn mermaid(panels: &[Panel]) -> String {
    let mut md = String::new();
    let mut skipped = Vec::new();
    for panel in panels {
        let series: Vec<&Series> = panel
            .series
            .iter()
            .filter(|s| {
                let ok = !s.points.is_empty() && s.points.iter().all(|p| p.1.is_finite());
                if !ok {
                    skipped.push(format!("{} {}", s.name, panel.title));
                }
                ok
            })
            .collect();
        let Some(first) = series.first() else {
            continue;
        };
        let keep = sample(first.points.len(), MERMAID_MAX_POINTS);
        let palette: Vec<String> = series
            .iter()
            .map(|s| {
                let RGBColor(r, g, b) = s.color;
                format!("#{r:02x}{g:02x}{b:02x}")
            })
            .collect();
        let y_max = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        let y_max = if y_max <= 1.0 {
            1.0
        } else {
            round_up(y_max * 1.05)
        };
        let labels: Vec<String> = keep
            .iter()
            .map(|&i| format!("\"{}\"", number_label(first.points[i].0)))
            .collect();
        let _ = writeln!(md, "```mermaid");
        let _ = writeln!(
            md,
            "%%{{init: {{\"themeVariables\": {{\"xyChart\": {{\"plotColorPalette\": \"{}\"}}}}}}}}%%",
            palette.join(", ")
        );
        let _ = writeln!(md, "xychart-beta");
        let _ = writeln!(md, "    title \"{} per epoch\"", quote_safe(&panel.title));
        let _ = writeln!(md, "    x-axis \"epoch\" [{}]", labels.join(", "));
        let _ = writeln!(
            md,
            "    y-axis \"{}\" 0 --> {}",
            quote_safe(&panel.title),
            number_label(y_max)
        );
        for s in &series {
            let values: Vec<String> = keep
                .iter()
                .filter_map(|&i| s.points.get(i))
                .map(|p| format!("{:.4}", p.1))
                .collect();
            let _ = writeln!(md, "    line [{}]", values.join(", "));
        }
        let _ = writeln!(md, "```");
        let names: Vec<String> = series
            .iter()
            .map(|s| format!("{} ({})", s.name, color_name(s.color)))
            .collect();
        let sampled = if keep.len() < first.points.len() {
            format!(
                "; {} of {} epochs shown, evenly spaced",
                keep.len(),
                first.points.len()
            )
        } else {
            String::new()
        };
        let _ = writeln!(md, "\nLines: {}{sampled}.\n", names.join(", "));
    }
    if !skipped.is_empty() {
        let _ = writeln!(
            md,
            "Not charted (a value is not a finite number): {}.\n",
            skipped.join(", ")
        );
    }
    md
}

/// Indices of at most `max` evenly spaced points out of `n`, first and last included.
fn sample(n: usize, max: usize) -> Vec<usize> {
    if n <= max || max < 2 {
        return (0..n).collect();
    }
    let mut idx: Vec<usize> = (0..max)
        .map(|k| (k * (n - 1) + (max - 1) / 2) / (max - 1))
        .collect();
    idx.dedup();
    idx
}

fn round_up(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    (v / mag).ceil() * mag
}

fn number_label(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Titles are ours, but keep the rule visible: nothing that could close a quoted label.
fn quote_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '"' | '\n' | '\r' | '`'))
        .collect()
}

fn color_name(c: RGBColor) -> &'static str {
    match c {
        RGBColor(0x1f, 0x77, 0xb4) => "blue",
        RGBColor(0xd6, 0x27, 0x28) => "red",
        RGBColor(0x2c, 0xa0, 0x2c) => "green",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "epoch,lr,train_loss,train_iou,val_loss,val_iou\n1,0.003,0.6,0.27,0.46,0.64\n2,0.003,0.35,0.61,0.25,0.77\n3,0.003,0.2,0.7,0.2,0.8\n";

    #[test]
    fn a_missing_history_names_its_path_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.csv");
        let err = History::read(&path).unwrap_err();
        let line = crate::exit::render(&err);
        assert_eq!(line.matches("history.csv").count(), 2, "{line}");
        assert!(line.contains(&path.display().to_string()), "{line}");
        crate::exit::assert_renders_once(&err, 1);
    }

    #[test]
    fn history_parses_and_names_bad_cells() {
        let h = History::parse(CSV).unwrap();
        assert_eq!(h.epochs, [1.0, 2.0, 3.0]);
        assert_eq!(h.column("val_iou").unwrap(), [0.64, 0.77, 0.8]);
        let panels = h.panels();
        assert_eq!(panels.len(), 2);
        assert_eq!(panels[1].series.len(), 2, "train and val, no test column");
        let (line, msg) = History::parse("epoch,val_iou\n1,0.5\n2,abc\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(msg.contains("val_iou") && msg.contains("abc"), "{msg}");
        assert_eq!(History::parse("lr\n1\n").unwrap_err().0, 1);
        assert_eq!(History::parse("epoch,a\n1\n").unwrap_err().0, 2);
        assert!(History::parse("epoch,a\n").is_err());
    }

    #[test]
    fn mermaid_quotes_labels_and_samples_long_runs() {
        let h = History::parse(CSV).unwrap();
        let md = mermaid(&h.panels());
        assert!(
            md.contains("x-axis \"epoch\" [\"1\", \"2\", \"3\"]"),
            "{md}"
        );
        assert!(md.contains("line [0.2700, 0.6100, 0.7000]"), "{md}");
        assert!(md.contains("y-axis \"IoU\" 0 --> 1"), "{md}");
        assert_eq!(md.matches("```mermaid").count(), 2);
        let mut long = String::from("epoch,val_loss\n");
        for e in 1..=200 {
            long.push_str(&format!("{e},{}\n", 2.0 / e as f64));
        }
        let md = mermaid(&History::parse(&long).unwrap().panels());
        let labels = md.lines().find(|l| l.contains("x-axis")).unwrap();
        assert_eq!(
            labels.matches('"').count() / 2 - 1,
            MERMAID_MAX_POINTS,
            "{labels}"
        );
        assert!(
            labels.contains("\"1\"") && labels.contains("\"200\""),
            "{labels}"
        );
        assert!(md.contains("60 of 200 epochs shown"), "{md}");
        let md = mermaid(&History::parse("epoch,val_loss\n1,NaN\n").unwrap().panels());
        assert!(
            !md.contains("```mermaid") && md.contains("Not charted"),
            "{md}"
        );
    }

    #[test]
    fn svg_has_both_panels() {
        let h = History::parse(CSV).unwrap();
        let svg = svg(&h.panels()).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("BCE loss") && svg.contains("IoU"));
    }
}
