//! The quality gate: does a candidate's `metrics.json` beat the baseline (production's metrics,
//! read from MLflow, or a file)? Rules are data ([`GateRules`]); the default is upstream's: test
//! Dice and test IoU must both improve. Absolute floors/ceilings (`--min test_iou=0.85`) apply
//! with or without a baseline. This module decides and renders; it does no I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::untrusted::text::{md_code, md_text};

/// Metrics upstream's gate requires to improve (DESIGN §5).
pub const DEFAULT_IMPROVE: &[&str] = &["test_dice", "test_iou"];

/// Which way is better for a metric: losses and distances go down, scores go up.
pub fn lower_is_better(metric: &str) -> bool {
    metric.contains("loss") || metric.contains("hausdorff") || metric.ends_with("_seconds")
}

#[derive(Debug, Clone, PartialEq)]
pub struct GateRules {
    /// Each must be strictly better than the baseline's.
    pub improve: Vec<String>,
    /// `metric >= value`.
    pub min: Vec<(String, f64)>,
    /// `metric <= value`.
    pub max: Vec<(String, f64)>,
}

impl Default for GateRules {
    fn default() -> Self {
        GateRules {
            improve: DEFAULT_IMPROVE.iter().map(|s| s.to_string()).collect(),
            min: Vec::new(),
            max: Vec::new(),
        }
    }
}

/// Parses `metric=value` (as in `--min test_iou=0.85`).
pub fn parse_threshold(text: &str) -> Result<(String, f64), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not METRIC=VALUE; hint: e.g. test_iou=0.85"))?;
    let k = k.trim();
    let v: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {v:?} is not a number; hint: e.g. test_iou=0.85"))?;
    if k.is_empty() || !v.is_finite() {
        return Err(format!(
            "{text:?} is not METRIC=VALUE; hint: e.g. test_iou=0.85"
        ));
    }
    Ok((k.to_string(), v))
}

/// The baseline the candidate is compared with.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Shown in the table header, e.g. `production (v3)` or `baseline.json`.
    pub label: String,
    pub metrics: BTreeMap<String, f64>,
}

/// One checked rule: a row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub metric: String,
    pub candidate: Option<f64>,
    pub baseline: Option<f64>,
    /// `> baseline`, `< baseline`, `>= 0.85`, `<= 10`.
    pub rule: String,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GateDecision {
    pub passed: bool,
    pub checks: Vec<Check>,
    /// Why a rule was waived or failed in a way the table cannot show.
    pub notes: Vec<String>,
    pub baseline_label: Option<String>,
}

impl GateDecision {
    /// One line naming the failed checks, for the exit error.
    pub fn failure_reason(&self) -> String {
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| {
                format!(
                    "{} {} (candidate {})",
                    c.metric,
                    c.rule,
                    fmt_value(c.candidate)
                )
            })
            .collect();
        failed.join(", ")
    }
}

/// Applies `rules` to `candidate` against `baseline` (`None`: no production model yet — the
/// improvement rules pass with a note; the absolute ones still apply).
pub fn decide(
    candidate: &BTreeMap<String, f64>,
    baseline: Option<&Baseline>,
    rules: &GateRules,
) -> GateDecision {
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    match baseline {
        None => notes.push(
            "no baseline (no model behind the production alias yet): the improvement rules pass; absolute limits still apply".into(),
        ),
        Some(b) => {
            for metric in &rules.improve {
                let lower = lower_is_better(metric);
                let cand = candidate.get(metric).copied();
                let base = b.metrics.get(metric).copied();
                let passed = match (cand, base) {
                    (Some(c), Some(p)) if lower => c < p,
                    (Some(c), Some(p)) => c > p,
                    (Some(_), None) => {
                        notes.push(format!(
                            "{metric}: the baseline has no value, so it cannot regress; passed"
                        ));
                        true
                    }
                    (None, _) => {
                        notes.push(format!("{metric}: missing from the candidate's metrics"));
                        false
                    }
                };
                let passed = passed && cand.is_some_and(f64::is_finite);
                checks.push(Check {
                    metric: metric.clone(),
                    candidate: cand,
                    baseline: base,
                    rule: if lower { "< baseline" } else { "> baseline" }.into(),
                    passed,
                });
            }
        }
    }
    let limits = rules
        .min
        .iter()
        .map(|(m, v)| (m, *v, true))
        .chain(rules.max.iter().map(|(m, v)| (m, *v, false)));
    for (metric, limit, is_min) in limits {
        let cand = candidate.get(metric).copied();
        let passed = match cand {
            Some(c) if is_min => c >= limit,
            Some(c) => c <= limit,
            None => {
                notes.push(format!("{metric}: missing from the candidate's metrics"));
                false
            }
        };
        checks.push(Check {
            metric: metric.clone(),
            candidate: cand,
            baseline: baseline.and_then(|b| b.metrics.get(metric).copied()),
            rule: format!("{} {limit}", if is_min { ">=" } else { "<=" }),
            passed,
        });
    }
    GateDecision {
        passed: checks.iter().all(|c| c.passed),
        checks,
        notes,
        baseline_label: baseline.map(|b| b.label.clone()),
    }
}

fn fmt_value(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.4}"))
}

/// The decision as a Markdown table (stdout, the `table` output, the job summary).
pub fn markdown(d: &GateDecision) -> String {
    // Metric names and the label come from the workflow's inputs and files: escaped, so neither
    // can add a row, a heading or HTML to the summary.
    let baseline = md_text(d.baseline_label.as_deref().unwrap_or("baseline"));
    let mut md = format!(
        "### Quality gate: {}\n\n| metric | candidate | {baseline} | Δ | rule | result |\n|---|---:|---:|---:|---|---|\n",
        if d.passed { "passed ✅" } else { "failed ❌" }
    );
    for c in &d.checks {
        let delta = match (c.candidate, c.baseline) {
            (Some(a), Some(b)) => format!("{:+.4}", a - b),
            _ => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {delta} | {} | {} |",
            md_code(&c.metric),
            fmt_value(c.candidate),
            fmt_value(c.baseline),
            c.rule.replace('<', "&lt;").replace('>', "&gt;"),
            if c.passed { "pass" } else { "**fail**" }
        );
    }
    for n in &d.notes {
        let _ = write!(md, "\n> {}\n", md_text(n));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn base(pairs: &[(&str, f64)]) -> Baseline {
        Baseline {
            label: "production (v1)".into(),
            metrics: m(pairs),
        }
    }

    #[test]
    fn default_rule_needs_both_dice_and_iou_to_improve() {
        let rules = GateRules::default();
        let prod = base(&[("test_dice", 0.90), ("test_iou", 0.80)]);
        let against_prod = |candidate: &[(&str, f64)]| decide(&m(candidate), Some(&prod), &rules);
        let both = against_prod(&[("test_dice", 0.91), ("test_iou", 0.81)]);
        assert!(both.passed, "{both:?}");
        let only_dice = against_prod(&[("test_dice", 0.91), ("test_iou", 0.79)]);
        assert!(!only_dice.passed);
        assert_eq!(
            only_dice.failure_reason(),
            "test_iou > baseline (candidate 0.7900)"
        );
        // Equal is not an improvement (upstream: "beat").
        let equal = against_prod(&[("test_dice", 0.90), ("test_iou", 0.81)]);
        assert!(!equal.passed);
    }

    #[test]
    fn no_baseline_passes_with_a_note_but_minimums_still_apply() {
        let rules = GateRules {
            min: vec![("test_iou".into(), 0.85)],
            ..GateRules::default()
        };
        let d = decide(&m(&[("test_dice", 0.5), ("test_iou", 0.86)]), None, &rules);
        assert!(d.passed);
        assert!(d.notes[0].contains("no baseline"), "{:?}", d.notes);
        let d = decide(&m(&[("test_dice", 0.5), ("test_iou", 0.84)]), None, &rules);
        assert!(!d.passed);
        assert!(d.failure_reason().contains("test_iou >= 0.85"));
    }

    #[test]
    fn lower_is_better_for_losses_and_hausdorff() {
        let rules = GateRules {
            improve: vec!["test_hausdorff".into()],
            min: vec![],
            max: vec![("val_loss".into(), 0.2)],
        };
        let prod = base(&[("test_hausdorff", 5.0)]);
        let against_prod = |candidate: &[(&str, f64)]| decide(&m(candidate), Some(&prod), &rules);
        let d = against_prod(&[("test_hausdorff", 4.0), ("val_loss", 0.1)]);
        assert!(d.passed, "{d:?}");
        let d = against_prod(&[("test_hausdorff", 6.0), ("val_loss", 0.3)]);
        assert_eq!(d.checks.iter().filter(|c| !c.passed).count(), 2);
    }

    #[test]
    fn missing_or_nan_candidate_metrics_fail() {
        let rules = GateRules::default();
        let prod = base(&[("test_dice", 0.9), ("test_iou", 0.8)]);
        let d = decide(&m(&[("test_dice", 0.95)]), Some(&prod), &rules);
        assert!(!d.passed);
        assert!(d.notes.iter().any(|n| n.contains("test_iou: missing")));
        let d = decide(
            &m(&[("test_dice", f64::NAN), ("test_iou", 0.9)]),
            Some(&prod),
            &rules,
        );
        assert!(!d.passed);
    }

    #[test]
    fn thresholds_parse_and_table_renders() {
        assert_eq!(
            parse_threshold("test_iou=0.85").unwrap(),
            ("test_iou".into(), 0.85)
        );
        assert!(parse_threshold("test_iou").unwrap_err().contains("hint:"));
        assert!(parse_threshold("test_iou=high").is_err());
        let prod = base(&[("test_dice", 0.9), ("test_iou", 0.8)]);
        let d = decide(
            &m(&[("test_dice", 0.95), ("test_iou", 0.75)]),
            Some(&prod),
            &GateRules::default(),
        );
        let md = markdown(&d);
        assert!(md.starts_with("### Quality gate: failed"), "{md}");
        assert!(
            md.contains("| `test_dice` | 0.9500 | 0.9000 | +0.0500 | &gt; baseline | pass |"),
            "{md}"
        );
        assert!(
            md.contains("| `test_iou` | 0.7500 | 0.8000 | -0.0500 | &gt; baseline | **fail** |"),
            "{md}"
        );
        assert!(md.contains("| production \\(v1\\) |"), "{md}");
    }

    #[test]
    fn names_cannot_inject_rows_or_headings() {
        let hostile = "x |\n### injected | `y";
        let d = decide(
            &m(&[(hostile, 1.0)]),
            Some(&Baseline {
                label: "<img src=x> | a".into(),
                metrics: m(&[]),
            }),
            &GateRules {
                improve: vec![hostile.into()],
                ..GateRules::default()
            },
        );
        let md = markdown(&d);
        assert_eq!(md.lines().filter(|l| l.starts_with('#')).count(), 1, "{md}");
        assert!(
            md.contains("| candidate | \\<img src\\=x\\> \\| a | Δ |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| ``x \\|\\n### injected \\| `y`` | 1.0000 | — | — | &gt; baseline | pass |"
            ),
            "{md}"
        );
    }
}
