//! The report's Markdown: one body for the PR comment, the job summary and the check run's
//! summary, fitted to a character limit by showing fewer table rows (with a note saying how many
//! were left out) rather than cutting a table or a Mermaid block in half.
//!
//! Everything that comes from files (metric names, file paths, DVC descriptions, the image
//! reference, the deployment URL) passes through [`md_text`]/[`md_code`]: a name cannot add a
//! row, a heading, a link, HTML or a second marker.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::checkpoint::QuantizationRecord;
use crate::gate::{Baseline, GateDecision, lower_is_better};
use crate::untrusted::text::{md_code, md_text};

use super::curves::{self, History};
use super::inputs::{Changes, ImageInfo};
use super::publish::Annotation;

/// Everything one report shows.
#[derive(Debug, Clone)]
pub struct Report {
    pub model: String,
    /// The commit the report is about (the PR's head), if known.
    pub sha: Option<String>,
    pub candidate: BTreeMap<String, f64>,
    pub baseline: Option<Baseline>,
    pub decision: GateDecision,
    pub history: Option<History>,
    pub changes: Option<Changes>,
    pub image: Option<ImageInfo>,
    pub deployment_url: Option<String>,
    /// Link to the workflow run that made the report.
    pub run_url: Option<String>,
    /// The int8 export's accuracy guard, when the checkpoint was exported int8.
    pub quantization: Option<QuantizationRecord>,
}

/// Which way a metric moved, judged like the gate judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Better,
    Worse,
    Same,
}

pub fn direction(metric: &str, candidate: f64, baseline: f64) -> Direction {
    let delta = candidate - baseline;
    if delta == 0.0 {
        Direction::Same
    } else if (delta < 0.0) == lower_is_better(metric) {
        Direction::Better
    } else {
        Direction::Worse
    }
}

/// The metric names in table order: the gate's metrics first (the verdict is about them), then
/// test metrics, then the rest alphabetically.
pub fn metric_order(report: &Report) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in &report.decision.checks {
        if report.candidate.contains_key(&c.metric) && !names.contains(&c.metric) {
            names.push(c.metric.clone());
        }
    }
    let rest = |test: bool| {
        report
            .candidate
            .keys()
            .filter(move |k| k.starts_with("test_") == test)
            .cloned()
    };
    for k in rest(true).chain(rest(false)) {
        if !names.contains(&k) {
            names.push(k);
        }
    }
    names
}

/// The body, with at most `max_rows` rows per table/list (`usize::MAX`: all).
pub fn render(report: &Report, marker: &str, max_rows: usize) -> String {
    let mut md = String::new();
    if !marker.is_empty() {
        let _ = writeln!(md, "{marker}");
    }
    let verdict = if report.decision.passed {
        "passed ✅"
    } else {
        "failed ❌"
    };
    let _ = writeln!(
        md,
        "## wms report: {} — quality gate {verdict}\n",
        md_code(&report.model)
    );
    let mut about = Vec::new();
    if let Some(sha) = &report.sha {
        about.push(format!(
            "commit {}",
            md_code(&sha.chars().take(12).collect::<String>())
        ));
    }
    if let Some(url) = &report.run_url {
        about.push(format!("[workflow run]({})", link_target(url)));
    }
    if !about.is_empty() {
        let _ = writeln!(md, "{}\n", about.join(" · "));
    }

    metrics_table(&mut md, report, max_rows);
    gate_section(&mut md, report);
    if let Some(q) = &report.quantization {
        int8_section(&mut md, q);
    }

    if let Some(history) = &report.history {
        let _ = writeln!(md, "### Training curves\n");
        md.push_str(&curves::mermaid(&history.panels()));
    }
    if let Some(changes) = &report.changes {
        changes_section(&mut md, changes, max_rows);
    }
    if let Some(image) = &report.image {
        let _ = writeln!(md, "### Image\n");
        let mut line = md_code(&image.reference);
        if let Some(d) = &image.digest
            && !image.reference.contains(d.as_str())
        {
            let _ = write!(line, " ({})", md_code(d));
        }
        if let Some(size) = image.size {
            let _ = write!(line, " · {} compressed", human_bytes(size));
        }
        let _ = writeln!(md, "{line}\n");
    }
    if let Some(url) = &report.deployment_url {
        let _ = writeln!(md, "### Deployment\n\n{}\n", link_or_text(url));
    }
    let _ = writeln!(
        md,
        "<sub>Written by `wms report`; this comment is updated in place on every run.</sub>"
    );
    md
}

/// [`render`] with as many rows as fit in `limit` characters; the note in each shortened table
/// says how many rows were left out. Never longer than `limit`.
pub fn fit(report: &Report, marker: &str, limit: usize) -> String {
    let full = render(report, marker, usize::MAX);
    if full.chars().count() <= limit {
        return full;
    }
    let (mut lo, mut hi) = (0usize, longest_list(report));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if render(report, marker, mid).chars().count() <= limit {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let body = render(report, marker, lo);
    if body.chars().count() <= limit {
        return body;
    }
    // Even without rows it is too long (a monstrous single name): cut, and say so.
    let note = "\n\n… (cut to GitHub's size limit)\n";
    let keep = limit.saturating_sub(note.chars().count());
    let mut cut: String = body.chars().take(keep).collect();
    cut.push_str(note);
    cut
}

fn longest_list(report: &Report) -> usize {
    let changes = report
        .changes
        .as_ref()
        .map_or(0, |c| c.files.len().max(c.data.len()));
    changes.max(report.candidate.len())
}

fn metrics_table(md: &mut String, report: &Report, max_rows: usize) {
    let base_label = report
        .baseline
        .as_ref()
        .map_or_else(|| "production".to_string(), |b| md_text(&b.label));
    let _ = writeln!(
        md,
        "| metric | this PR | {base_label} | Δ |\n|---|---:|---:|---|"
    );
    let names = metric_order(report);
    for name in names.iter().take(max_rows) {
        let cand = report.candidate[name];
        let base = report
            .baseline
            .as_ref()
            .and_then(|b| b.metrics.get(name).copied());
        let delta = match base {
            Some(b) => {
                let d = cand - b;
                let arrow = if d > 0.0 {
                    "↑"
                } else if d < 0.0 {
                    "↓"
                } else {
                    "="
                };
                let word = match direction(name, cand, b) {
                    Direction::Better => " better",
                    Direction::Worse => " **worse**",
                    Direction::Same => "",
                };
                format!("{} {arrow}{word}", signed(d))
            }
            None => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {delta} |",
            md_code(name),
            number(cand),
            base.map_or_else(|| "—".into(), number)
        );
    }
    if names.len() > max_rows {
        let _ = writeln!(
            md,
            "\n… {} more metric(s) not shown, to stay under GitHub's 65 536-character limit.",
            names.len() - max_rows
        );
    }
    md.push('\n');
}

fn gate_section(md: &mut String, report: &Report) {
    let d = &report.decision;
    let _ = writeln!(
        md,
        "**Quality gate: {}**",
        if d.passed { "passed ✅" } else { "failed ❌" }
    );
    for c in &d.checks {
        let _ = writeln!(
            md,
            "- {} {} (this PR {}): {}",
            md_code(&c.metric),
            c.rule.replace('<', "&lt;").replace('>', "&gt;"),
            c.candidate.map_or_else(|| "—".into(), number),
            if c.passed { "pass" } else { "**fail**" }
        );
    }
    for n in &d.notes {
        let _ = writeln!(md, "- {}", md_text(n));
    }
    md.push('\n');
}

/// The int8 export's figures (`wms export-onnx --precision int8`, read from the checkpoint
/// sidecar): test IoU and Dice of both models against the ground truth and the drop the guard
/// judged. The strings come from a file, so they pass through [`md_code`].
fn int8_section(md: &mut String, q: &QuantizationRecord) {
    let _ = writeln!(
        md,
        "### int8 export
"
    );
    let _ = writeln!(md, "| metric | fp32 | int8 | drop |\n|---|---:|---:|---|");
    let within = q.iou_drop <= q.max_iou_drop;
    let _ = writeln!(
        md,
        "| `test_iou` | {} | {} | {} (limit {}) {} |",
        number(q.fp32_test_iou),
        number(q.int8_test_iou),
        signed(q.iou_drop),
        number(q.max_iou_drop),
        if within {
            "✅"
        } else {
            "❌ **over the limit**"
        }
    );
    let _ = writeln!(
        md,
        "| `test_dice` | {} | {} | {} |",
        number(q.fp32_test_dice),
        number(q.int8_test_dice),
        signed(q.dice_drop)
    );
    let kept = if q.fp32_convs.is_empty() {
        "none".to_string()
    } else {
        q.fp32_convs
            .iter()
            .map(|c| md_code(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        md,
        "\nMasks agree on {:.2} % of the pixels of {} test photo(s); calibrated on {} validation photo(s) ({}); kept fp32: {kept}.\n",
        100.0 * q.pixel_agreement,
        q.test_images,
        q.calibration_images,
        md_code(&q.method),
    );
}

fn changes_section(md: &mut String, changes: &Changes, max_rows: usize) {
    let _ = writeln!(md, "### What data changed\n");
    let short = |s: &str| s.chars().take(12).collect::<String>();
    if !changes.base.is_empty() && !changes.head.is_empty() {
        let _ = writeln!(
            md,
            "{} → {}: {} changed file(s), {} DVC output(s) changed.\n",
            md_code(&short(&changes.base)),
            md_code(&short(&changes.head)),
            changes.files.len(),
            changes.data.len()
        );
    }
    if !changes.data.is_empty() {
        let _ = writeln!(md, "**DVC data**\n");
        for d in changes.data.iter().take(max_rows) {
            let _ = writeln!(md, "- {} ({})", md_text(&d.description), md_text(&d.kind));
        }
        if changes.data.len() > max_rows {
            let _ = writeln!(
                md,
                "- … {} more DVC change(s) not shown, to stay under GitHub's 65 536-character limit.",
                changes.data.len() - max_rows
            );
        }
        md.push('\n');
    }
    if !changes.files.is_empty() {
        let _ = writeln!(md, "| file | change |\n|---|---|");
        for f in changes.files.iter().take(max_rows) {
            let name = match &f.old_path {
                Some(old) => format!("{} → {}", md_code(old), md_code(&f.path)),
                None => md_code(&f.path),
            };
            let _ = writeln!(md, "| {name} | {} |", md_text(&f.status));
        }
        if changes.files.len() > max_rows {
            let _ = writeln!(
                md,
                "\n… {} more file(s) not shown, to stay under GitHub's 65 536-character limit; `wms detect-changes` lists them all.",
                changes.files.len() - max_rows
            );
        }
        md.push('\n');
    }
}

/// Check-run annotations on the metrics file: `failure` for each failed gate rule, `warning` for
/// each other metric that got worse than the baseline, at the line that holds the metric.
pub fn annotations(report: &Report, path: &str, metrics_text: &str) -> Vec<Annotation> {
    let line_of = |metric: &str| {
        let key = serde_json::to_string(metric).unwrap_or_default();
        metrics_text
            .lines()
            .position(|l| l.contains(&key))
            .map_or(1, |i| i as u32 + 1)
    };
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for c in report.decision.checks.iter().filter(|c| !c.passed) {
        failed.push(c.metric.clone());
        let line = line_of(&c.metric);
        out.push(Annotation {
            path: path.to_string(),
            start_line: line,
            end_line: line,
            annotation_level: "failure",
            title: format!("quality gate: {} {}", c.metric, c.rule),
            message: format!(
                "{} is {} (baseline {}); the gate requires {}",
                c.metric,
                c.candidate.map_or_else(|| "missing".into(), number),
                c.baseline.map_or_else(|| "—".into(), number),
                c.rule
            ),
        });
    }
    let Some(baseline) = &report.baseline else {
        return out;
    };
    for name in metric_order(report) {
        if failed.contains(&name) {
            continue;
        }
        let (Some(&cand), Some(&base)) = (report.candidate.get(&name), baseline.metrics.get(&name))
        else {
            continue;
        };
        if direction(&name, cand, base) == Direction::Worse {
            let line = line_of(&name);
            out.push(Annotation {
                path: path.to_string(),
                start_line: line,
                end_line: line,
                annotation_level: "warning",
                title: format!("{name} got worse"),
                message: format!(
                    "{name}: {} against {} in {} ({})",
                    number(cand),
                    number(base),
                    baseline.label,
                    signed(cand - base)
                ),
            });
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

fn signed(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{:+}", v as i64)
    } else {
        format!("{v:+.4}")
    }
}

pub fn human_bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} kB", n as f64 / 1e3)
    } else {
        format!("{n} B")
    }
}

/// A URL we link to: only http(s), with the characters that would end a Markdown link target
/// percent-encoded.
fn link_target(url: &str) -> String {
    url.chars()
        .map(|c| match c {
            '(' => "%28".to_string(),
            ')' => "%29".to_string(),
            ' ' => "%20".to_string(),
            '<' => "%3C".to_string(),
            '>' => "%3E".to_string(),
            c if c.is_control() => String::new(),
            c => c.to_string(),
        })
        .collect()
}

/// An http(s) URL as a link; anything else as escaped text (a `javascript:` URL stays text).
fn link_or_text(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    if (lower.starts_with("https://") || lower.starts_with("http://"))
        && !url.chars().any(char::is_whitespace)
    {
        let shown = crate::untrusted::redact::url(url);
        format!("[{}]({})", md_text(&shown), link_target(&shown))
    } else {
        md_text(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{GateRules, decide};

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn report() -> Report {
        let candidate = m(&[("test_iou", 0.85), ("test_dice", 0.91), ("test_loss", 0.03)]);
        let baseline = Baseline {
            label: "production (v3)".into(),
            metrics: m(&[("test_iou", 0.80), ("test_dice", 0.92), ("test_loss", 0.04)]),
        };
        let decision = decide(&candidate, Some(&baseline), &GateRules::default());
        Report {
            model: "water-meters-unet".into(),
            sha: Some("0123456789abcdef".into()),
            candidate,
            baseline: Some(baseline),
            decision,
            history: None,
            changes: None,
            image: None,
            deployment_url: None,
            run_url: None,
            quantization: None,
        }
    }

    fn record() -> QuantizationRecord {
        QuantizationRecord {
            precision: "int8".into(),
            method: "qdq-u8s8-minmax".into(),
            calibration_images: 30,
            test_images: 23,
            fp32_test_iou: 0.7496,
            fp32_test_dice: 0.834,
            int8_test_iou: 0.7509,
            int8_test_dice: 0.835,
            iou_drop: 0.7496 - 0.7509,
            dice_drop: 0.834 - 0.835,
            pixel_agreement: 0.99982,
            max_iou_drop: 0.005,
            fp32_convs: vec!["logits".into()],
        }
    }

    #[test]
    fn the_int8_figures_show_when_the_checkpoint_was_exported_int8() {
        let mut r = report();
        assert!(!render(&r, "", usize::MAX).contains("int8"));
        r.quantization = Some(record());
        let md = render(&r, "", usize::MAX);
        let section: Vec<&str> = md
            .lines()
            .skip_while(|l| *l != "### int8 export")
            .take(7)
            .collect();
        assert_eq!(
            section,
            [
                "### int8 export",
                "",
                "| metric | fp32 | int8 | drop |",
                "|---|---:|---:|---|",
                "| `test_iou` | 0.7496 | 0.7509 | -0.0013 (limit 0.0050) ✅ |",
                "| `test_dice` | 0.8340 | 0.8350 | -0.0010 |",
                "",
            ],
            "{md}"
        );
        assert!(
            md.contains("agree on 99.98 % of the pixels of 23 test photo(s); calibrated on 30"),
            "{md}"
        );
        // A drop over the guard's limit says so; names from the sidecar stay code spans.
        let mut q = record();
        q.iou_drop = 0.02;
        q.fp32_convs = vec!["x | # y".into()];
        r.quantization = Some(q);
        let md = render(&r, "", usize::MAX);
        assert!(
            md.contains("+0.0200 (limit 0.0050) ❌ **over the limit**"),
            "{md}"
        );
        assert!(md.contains("kept fp32: `x \\| # y`."), "{md}");
    }

    #[test]
    fn directions_follow_the_gate() {
        assert_eq!(direction("test_iou", 0.9, 0.8), Direction::Better);
        assert_eq!(direction("test_loss", 0.9, 0.8), Direction::Worse);
        assert_eq!(direction("test_loss", 0.7, 0.8), Direction::Better);
        assert_eq!(direction("test_iou", 0.8, 0.8), Direction::Same);
        let md = render(&report(), "<!-- m -->", usize::MAX);
        assert!(md.starts_with("<!-- m -->\n"), "{md}");
        assert!(
            md.contains("| `test_dice` | 0.9100 | 0.9200 | -0.0100 ↓ **worse** |"),
            "{md}"
        );
        assert!(
            md.contains("| `test_loss` | 0.0300 | 0.0400 | -0.0100 ↓ better |"),
            "{md}"
        );
        assert!(md.contains("quality gate failed ❌"), "{md}");
        // The gate's metrics lead the table.
        let first = md.lines().find(|l| l.starts_with("| `")).unwrap();
        assert!(first.contains("test_dice"), "{first}");
    }

    #[test]
    fn untrusted_names_stay_inside_their_cell() {
        let mut r = report();
        r.candidate
            .insert("x | <!-- wms-report:evil --> |\n# h".into(), 1.0);
        r.deployment_url = Some("javascript:alert(1)".into());
        let md = render(&r, "", usize::MAX);
        // A marker is a whole line; inside a code span it is text, and never a line of its own.
        assert!(
            !md.lines().any(|l| l.trim() == "<!-- wms-report:evil -->"),
            "{md}"
        );
        assert!(
            md.contains("`x \\| <!-- wms-report:evil --> \\|\\n# h`"),
            "{md}"
        );
        assert!(!md.contains("\n# h"), "{md}");
        assert!(!md.contains("](javascript"), "{md}");
    }

    #[test]
    fn fit_drops_rows_with_a_note_and_respects_the_limit() {
        let mut r = report();
        r.changes = Some(Changes {
            base: "a".repeat(40),
            head: "b".repeat(40),
            files: (0..5000)
                .map(|i| super::super::inputs::ChangedFile {
                    path: format!("data/images/{i:06}.jpg"),
                    old_path: None,
                    status: "added".into(),
                })
                .collect(),
            data: vec![],
        });
        let body = fit(&r, "<!-- m -->", 10_000);
        assert!(body.chars().count() <= 10_000);
        assert!(body.contains("more file(s) not shown"), "{body}");
        assert!(body.contains("5000 changed file(s)"));
        assert!(body.ends_with("</sub>\n"), "the footer survives");
    }
}
