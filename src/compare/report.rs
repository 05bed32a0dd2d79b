//! `wms compare report`: the seed's table (deployment time, error rate, rollback time, human
//! hours) per method, a table per task and method, and two SVG charts, from the timing records
//! of one directory. Figures are [`super::stats`]'s; every figure shows how many records are
//! behind it and a figure without records is written "no data". Files are written atomically
//! (temp + rename); `--update-docs` replaces only the marked generated section of a document.
//!
//! It must not read anything but the records directory and the document it updates.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use plotters::prelude::*;

use super::CompareError;
use super::stats::{self, Cell, Figures, Spread};
use crate::fsutil;
use crate::timing::{self, Method, Task, Timestamp};
use crate::untrusted::text::{md_code, md_text};

/// The generated section of docs/COMPARISON.md lies between these lines.
pub const BEGIN_MARKER: &str =
    "<!-- wms compare report: begin (generated; edits here are overwritten) -->";
pub const END_MARKER: &str = "<!-- wms compare report: end -->";

/// What to report.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub records: PathBuf,
    /// The Markdown report; the charts go next to it (`<stem>-durations.svg`, `<stem>-human.svg`).
    pub out: PathBuf,
    pub update_docs: Option<PathBuf>,
    pub generated: Timestamp,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct ReportOutput {
    pub markdown: String,
    pub files: Vec<PathBuf>,
    pub figures: Figures,
    pub records: usize,
    pub warnings: Vec<String>,
}

/// `comparison/reports/<YYYY-MM-DD>.md` for `at`.
pub fn default_out(reports_dir: &Path, at: Timestamp) -> PathBuf {
    reports_dir.join(format!("{}.md", &at.rfc3339()[..10]))
}

pub fn report(settings: &ReportSettings) -> Result<ReportOutput, CompareError> {
    let read = timing::read_dir(&settings.records)?;
    let figures = stats::compute(read.iter());
    let warnings: Vec<String> = read.warnings.iter().map(ToString::to_string).collect();

    let out_dir = match settings.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = settings
        .out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let durations_svg = out_dir.join(format!("{stem}-durations.svg"));
    let human_svg = out_dir.join(format!("{stem}-human.svg"));
    let tasks = tasks_shown(&figures);
    write_chart(&durations_svg, |svg| durations_chart(svg, &figures, &tasks))?;
    write_chart(&human_svg, |svg| human_chart(svg, &figures, &tasks))?;

    let charts = |from: &Path| -> [(String, String); 2] {
        [
            (
                "Duration of successful runs".to_string(),
                relative_link(from, &durations_svg),
            ),
            ("Human hours".to_string(), relative_link(from, &human_svg)),
        ]
    };
    let info = Info {
        records_dir: &settings.records,
        files: &read.files,
        records: read.records.len(),
        warnings: &warnings,
        generated: settings.generated,
    };
    let markdown = render(&figures, &info, &charts(&out_dir));
    fsutil::write_atomic(&settings.out, markdown.as_bytes())?;
    let mut files = vec![
        settings.out.clone(),
        durations_svg.clone(),
        human_svg.clone(),
    ];

    if let Some(doc) = &settings.update_docs {
        let doc_dir = match doc.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let section = render(&figures, &info, &charts(&doc_dir));
        update_docs(doc, &section)?;
        files.push(doc.clone());
    }
    Ok(ReportOutput {
        markdown,
        files,
        figures,
        records: read.records.len(),
        warnings,
    })
}

struct Info<'a> {
    records_dir: &'a Path,
    files: &'a [PathBuf],
    records: usize,
    warnings: &'a [String],
    generated: Timestamp,
}

/// The standard tasks always (missing ones show "no data"), others when they have records.
fn tasks_shown(figures: &Figures) -> Vec<Task> {
    Task::ALL
        .into_iter()
        .filter(|t| {
            Task::STANDARD.contains(t) || Method::ALL.iter().any(|m| figures.cell(*t, *m).is_some())
        })
        .collect()
}

const NO_DATA: &str = "no data";

/// `12.3 s`.
pub fn fmt_seconds(s: f64) -> String {
    format!("{s:.1} s")
}

/// `0.25 h`.
pub fn fmt_hours(seconds: f64) -> String {
    format!("{:.2} h", seconds / 3600.0)
}

/// `median (min–max), n=N` with `unit` formatting each value, or "no data".
pub fn fmt_spread(s: Option<Spread>, unit: fn(f64) -> String) -> String {
    match s {
        None => NO_DATA.into(),
        Some(s) => format!(
            "{} ({}–{}), n={}",
            unit(s.median),
            unit(s.min),
            unit(s.max),
            s.n
        ),
    }
}

/// `k/n (p%)`, or "no data".
pub fn fmt_rate(rate: Option<(usize, usize)>) -> String {
    match rate {
        None => NO_DATA.into(),
        Some((k, n)) => format!("{k}/{n} ({:.0}%)", 100.0 * k as f64 / n as f64),
    }
}

fn cell_or_empty(figures: &Figures, task: Task, method: Method) -> Cell {
    figures.cell(task, method).cloned().unwrap_or_default()
}

fn render(figures: &Figures, info: &Info<'_>, charts: &[(String, String)]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Manual versus automated deployment: comparison report\n"
    );
    let files: Vec<String> = info
        .files
        .iter()
        .map(|f| {
            md_code(
                &f.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "Generated {} by `wms compare report` from **{} timing records** in {} ({}).",
        info.generated,
        info.records,
        md_code(&info.records_dir.display().to_string()),
        if files.is_empty() {
            "no record files".to_string()
        } else {
            files.join(", ")
        }
    );
    if !info.warnings.is_empty() {
        let _ = writeln!(
            md,
            "{} broken line(s) were skipped (listed at the end).",
            info.warnings.len()
        );
    }
    if figures.covered > 0 {
        let _ = writeln!(
            md,
            "{} record(s) that `wms deploy` wrote inside a collected workflow run are counted in that run's record, not twice.",
            figures.covered
        );
    }
    let _ = writeln!(
        md,
        "Each figure is the median with its range (min–max) and the number of records behind it (n); \"{NO_DATA}\" means no record exists for it yet. Definitions are at the end.\n"
    );

    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(md, "| Metric | Manual | Automated |\n|---|---|---|");
    let row = |md: &mut String, metric: &str, f: &dyn Fn(Method) -> String| {
        let _ = writeln!(
            md,
            "| {metric} | {} | {} |",
            f(Method::Manual),
            f(Method::Automated)
        );
    };
    row(&mut md, "Deployment time", &|m| {
        fmt_spread(
            cell_or_empty(figures, Task::Deploy, m).duration(),
            fmt_seconds,
        )
    });
    row(&mut md, "Error rate (all tasks)", &|m| {
        fmt_rate(figures.all_tasks(m).error_rate())
    });
    row(&mut md, "Rollback time", &|m| {
        fmt_spread(
            cell_or_empty(figures, Task::Rollback, m).duration(),
            fmt_seconds,
        )
    });
    row(&mut md, "Human hours per deployment", &|m| {
        fmt_spread(
            cell_or_empty(figures, Task::Deploy, m).human_time(),
            fmt_hours,
        )
    });
    row(&mut md, "Human hours, all tasks (sum)", &|m| {
        let all = figures.all_tasks(m);
        match all.human_total() {
            None => NO_DATA.into(),
            Some(total) => format!("{}, n={}", fmt_hours(total), all.human.len()),
        }
    });

    let _ = writeln!(md, "\n## Per task\n");
    let _ = writeln!(
        md,
        "| Task | Method | Runs: success / failure / aborted | Duration of successful runs | Error rate | Human time per run | Human hours (sum) |\n|---|---|---|---|---|---|---|"
    );
    for task in tasks_shown(figures) {
        for method in Method::ALL {
            let c = cell_or_empty(figures, task, method);
            let _ = writeln!(
                md,
                "| {task} | {method} | {} / {} / {} | {} | {} | {} | {} |",
                c.success,
                c.failure,
                c.aborted,
                fmt_spread(c.duration(), fmt_seconds),
                fmt_rate(c.error_rate()),
                fmt_spread(c.human_time(), fmt_hours),
                c.human_total().map_or_else(|| NO_DATA.into(), fmt_hours),
            );
        }
    }

    let _ = writeln!(md, "\n## Charts\n");
    for (title, link) in charts {
        let _ = writeln!(md, "![{title}]({link})\n");
    }

    let _ = writeln!(md, "## Definitions\n");
    let _ = writeln!(
        md,
        "- **Deployment time**, **rollback time**, **duration**: `finished − started` of the `deploy` (`rollback`, …) records whose outcome is `success`.\n\
         - **Error rate**: records with at least one error or outcome `failure`, over the records with outcome `success` or `failure`.\n\
         - **Human time**: a record's `human_seconds` when it has one; otherwise a manual record's whole duration and 0 for an automated one. Records with outcome `success` or `failure` count.\n\
         - **Median**: the middle value, or the mean of the two middle values; the range is min–max.\n\
         - **Aborted** records (Ctrl-C, a cancelled run) are counted in the runs column and used in no figure.\n\
         - Manual records come from `wms compare record` following `comparison/manual/instructions.md`; automated ones from `wms deploy` and from GitHub Actions runs collected by `wms compare collect`."
    );
    if !info.warnings.is_empty() {
        let _ = writeln!(md, "\n## Skipped lines\n");
        for w in info.warnings {
            let _ = writeln!(md, "- {}", md_text(w));
        }
    }
    md
}

/// Replaces the generated section of `doc` (between [`BEGIN_MARKER`] and [`END_MARKER`]); a
/// missing document is created with just the section.
fn update_docs(doc: &Path, section: &str) -> Result<(), CompareError> {
    // The generated report's own top heading would compete with the document's.
    let section = section.replacen(
        "# Manual versus automated deployment: comparison report\n",
        "## Latest report\n",
        1,
    );
    let section = section.replace("\n## ", "\n### ");
    let section = section.replacen("### Latest report", "## Latest report", 1);
    let text = match std::fs::read_to_string(doc) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(CompareError::Read {
                path: doc.to_path_buf(),
                source,
            });
        }
    };
    let new = if text.is_empty() {
        format!("{BEGIN_MARKER}\n{section}{END_MARKER}\n")
    } else {
        let (Some(b), Some(e)) = (text.find(BEGIN_MARKER), text.find(END_MARKER)) else {
            return Err(CompareError::Docs {
                path: doc.to_path_buf(),
                message: "has no generated section".into(),
                hint: "add the two marker lines from docs/COMPARISON.md where the report should go",
            });
        };
        if e < b || text[b + 1..].contains(BEGIN_MARKER) || text[e + 1..].contains(END_MARKER) {
            return Err(CompareError::Docs {
                path: doc.to_path_buf(),
                message: "the generated-section markers are out of order or repeated".into(),
                hint: "keep exactly one begin marker followed by one end marker",
            });
        }
        format!("{}{BEGIN_MARKER}\n{section}{}", &text[..b], &text[e..])
    };
    fsutil::write_atomic(doc, new.as_bytes())?;
    Ok(())
}

/// A Markdown link from a file in `from_dir` to `target` (both made absolute first).
fn relative_link(from_dir: &Path, target: &Path) -> String {
    let abs = |p: &Path| -> PathBuf {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                c => out.push(c),
            }
        }
        out
    };
    let (from, to) = (abs(from_dir), abs(target));
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<String> = from
        .components()
        .skip(common)
        .map(|_| "..".into())
        .collect();
    parts.extend(
        to.components()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    // Spaces and parentheses would end a Markdown link target.
    parts
        .join("/")
        .replace('%', "%25")
        .replace(' ', "%20")
        .replace('(', "%28")
        .replace(')', "%29")
}

fn write_chart(
    path: &Path,
    draw: impl FnOnce(&mut String) -> Result<(), String>,
) -> Result<(), CompareError> {
    let mut svg = String::new();
    draw(&mut svg).map_err(|message| CompareError::Plot {
        path: path.to_path_buf(),
        message,
    })?;
    fsutil::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

const MANUAL_COLOR: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
const AUTOMATED_COLOR: RGBColor = RGBColor(0x1b, 0x9e, 0x77);

fn color(m: Method) -> RGBColor {
    match m {
        Method::Manual => MANUAL_COLOR,
        Method::Automated => AUTOMATED_COLOR,
    }
}

/// One bar: value, optional whisker (min, max), label above it; `None` draws "no data".
struct Bar {
    value: Option<f64>,
    whisker: Option<(f64, f64)>,
    label: String,
}

fn durations_chart(svg: &mut String, figures: &Figures, tasks: &[Task]) -> Result<(), String> {
    let series = bars_per_method(figures, tasks, |c| {
        let s = c.duration()?;
        Some(Bar {
            value: Some(s.median / 60.0),
            whisker: Some((s.min / 60.0, s.max / 60.0)),
            label: format!("n={}", s.n),
        })
    });
    grouped_bars(
        svg,
        "Duration of successful runs: median, min–max (minutes)",
        "minutes",
        tasks,
        &series,
    )
}

fn human_chart(svg: &mut String, figures: &Figures, tasks: &[Task]) -> Result<(), String> {
    let series = bars_per_method(figures, tasks, |c| {
        Some(Bar {
            value: Some(c.human_total()? / 3600.0),
            whisker: None,
            label: format!("n={}", c.human.len()),
        })
    });
    grouped_bars(
        svg,
        "Human hours per task (sum over runs)",
        "hours",
        tasks,
        &series,
    )
}

/// One bar per task and method from `bar`, or a "no data" bar where it has nothing to show.
fn bars_per_method(
    figures: &Figures,
    tasks: &[Task],
    bar: impl Fn(&Cell) -> Option<Bar>,
) -> Vec<(Method, Vec<Bar>)> {
    Method::ALL
        .into_iter()
        .map(|m| {
            let bars = tasks
                .iter()
                .map(|t| {
                    figures.cell(*t, m).and_then(&bar).unwrap_or(Bar {
                        value: None,
                        whisker: None,
                        label: NO_DATA.into(),
                    })
                })
                .collect();
            (m, bars)
        })
        .collect()
}

/// Bars grouped by task, one per method, with whiskers and labels; task names under the axis.
fn grouped_bars(
    svg: &mut String,
    title: &str,
    y_desc: &str,
    tasks: &[Task],
    series: &[(Method, Vec<Bar>)],
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let width = 160 + 130 * tasks.len() as u32;
    let root = SVGBackend::with_string(svg, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let y_max = series
        .iter()
        .flat_map(|(_, bars)| bars.iter())
        .filter_map(|b| b.whisker.map(|w| w.1).or(b.value))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.15;
    let k = tasks.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..k - 0.5, 0.0..y_max)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(tasks.len().max(1))
        .x_label_formatter(&|_| String::new())
        .y_desc(y_desc)
        .draw()
        .map_err(|x| e(&x))?;
    let width_per = 0.8 / series.len().max(1) as f64;
    for (si, (method, bars)) in series.iter().enumerate() {
        let c = color(*method);
        let x0 = |i: usize| i as f64 - 0.4 + si as f64 * width_per;
        chart
            .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
                b.value.map(|v| {
                    Rectangle::new(
                        [(x0(i) + 0.02, 0.0), (x0(i) + width_per - 0.02, v)],
                        c.filled(),
                    )
                })
            }))
            .map_err(|x| e(&x))?
            .label(method.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        chart
            .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
                let (lo, hi) = b.whisker?;
                let mid = x0(i) + width_per / 2.0;
                Some(PathElement::new(
                    vec![(mid, lo), (mid, hi)],
                    BLACK.stroke_width(1),
                ))
            }))
            .map_err(|x| e(&x))?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let top = b.whisker.map(|w| w.1).or(b.value).unwrap_or(0.0);
                let mid = x0(i) + width_per / 2.0;
                Text::new(
                    b.label.clone(),
                    (mid - width_per / 3.0, top + y_max * 0.06),
                    ("sans-serif", 12).into_font().color(&BLACK),
                )
            }))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    for (i, task) in tasks.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64, 0.0));
        root.draw(&Text::new(
            task.as_str(),
            (px - 4 * task.as_str().len() as i32, py + 10),
            ("sans-serif", 14).into_font(),
        ))
        .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))
}
