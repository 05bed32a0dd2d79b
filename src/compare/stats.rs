//! The comparison's figures from timing records, as plain numbers (rendering is
//! [`super::report`]'s). Definitions, also in docs/COMPARISON.md:
//!
//! - **Duration** of a task: `finished − started` of its records with outcome `success`
//!   (a failed deploy did not deploy; an aborted record is incomplete).
//! - **Error rate**: records with at least one error or outcome `failure`, over the records with
//!   outcome `success` or `failure`.
//! - **Human time**: [`TimingRecord::human_seconds`] of `success` and `failure` records (a failed
//!   attempt costs a person time too).
//! - **Median**: the middle value, or the mean of the two middle values; **spread**: min–max
//!   (with few records an interquartile range would claim more than the data holds).
//! - Aborted records are counted and shown, never used in a figure.
//! - A `wms deploy` record made inside a GitHub Actions run that was also collected from the API
//!   (same run URL and task) is covered by that run's record and not counted twice.

use std::collections::{BTreeMap, BTreeSet};

use crate::timing::{Method, Outcome, Task, TimingRecord};

/// `context` key and value that [`super::collect`] puts on records built from the Actions API.
pub const COLLECTOR_KEY: &str = "collector";
pub const COLLECTOR_ACTIONS: &str = "github-actions";

/// Median and min–max of some values, with how many there were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// `None` for no values: there is no figure without records behind it.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        n,
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// The figures for one task done one way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    pub success: usize,
    pub failure: usize,
    pub aborted: usize,
    /// Durations (seconds) of successful records.
    pub durations: Vec<f64>,
    /// Records (success or failure) with at least one error or a failed outcome.
    pub error_runs: usize,
    /// Human seconds of success and failure records.
    pub human: Vec<f64>,
}

impl Cell {
    /// Records an error rate can be computed over.
    pub fn rated(&self) -> usize {
        self.success + self.failure
    }

    pub fn duration(&self) -> Option<Spread> {
        spread(&self.durations)
    }

    pub fn human_time(&self) -> Option<Spread> {
        spread(&self.human)
    }

    /// `(runs with errors, runs)`; `None` without runs.
    pub fn error_rate(&self) -> Option<(usize, usize)> {
        (self.rated() > 0).then_some((self.error_runs, self.rated()))
    }

    /// Sum of human seconds, `None` without runs.
    pub fn human_total(&self) -> Option<f64> {
        (!self.human.is_empty()).then(|| self.human.iter().sum())
    }

    fn add(&mut self, r: &TimingRecord) {
        match r.outcome {
            Outcome::Aborted => {
                self.aborted += 1;
                return;
            }
            Outcome::Success => {
                self.success += 1;
                self.durations.push(r.seconds());
            }
            Outcome::Failure => self.failure += 1,
        }
        if r.outcome == Outcome::Failure || r.errors.count > 0 {
            self.error_runs += 1;
        }
        self.human.push(r.human_seconds());
    }
}

/// All figures of a report.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub cells: BTreeMap<(Task, Method), Cell>,
    /// Records used.
    pub used: usize,
    /// Records left out as covered by a collected workflow run's record.
    pub covered: usize,
}

impl Figures {
    pub fn cell(&self, task: Task, method: Method) -> Option<&Cell> {
        self.cells.get(&(task, method))
    }

    /// Every task and method together (for the overall error rate).
    pub fn all_tasks(&self, method: Method) -> Cell {
        let mut out = Cell::default();
        for ((_, m), c) in &self.cells {
            if *m == method {
                out.success += c.success;
                out.failure += c.failure;
                out.aborted += c.aborted;
                out.durations.extend(&c.durations);
                out.error_runs += c.error_runs;
                out.human.extend(&c.human);
            }
        }
        out
    }
}

/// `…/actions/runs/<id>` of a run URL (without `/attempts/<n>` or a job suffix).
pub fn run_base(url: &str) -> Option<&str> {
    let i = url.find("/actions/runs/")? + "/actions/runs/".len();
    let id_len = url[i..].bytes().take_while(u8::is_ascii_digit).count();
    (id_len > 0).then(|| &url[..i + id_len])
}

fn is_collected_run(r: &TimingRecord) -> bool {
    r.context.get(COLLECTOR_KEY).map(String::as_str) == Some(COLLECTOR_ACTIONS)
}

/// The figures of `records` (see the module docs for every definition).
pub fn compute<'a>(records: impl IntoIterator<Item = &'a TimingRecord>) -> Figures {
    let records: Vec<&TimingRecord> = records.into_iter().collect();
    let collected: BTreeSet<(&str, Task)> = records
        .iter()
        .filter(|r| is_collected_run(r))
        .filter_map(|r| Some((run_base(r.source.run_url.as_deref()?)?, r.task)))
        .collect();
    let mut figures = Figures::default();
    for r in records {
        let covered = !is_collected_run(r)
            && r.source
                .run_url
                .as_deref()
                .and_then(run_base)
                .is_some_and(|base| collected.contains(&(base, r.task)));
        if covered {
            figures.covered += 1;
            continue;
        }
        figures.used += 1;
        figures.cells.entry((r.task, r.method)).or_default().add(r);
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(spread(&[]), None);
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 10.0]).unwrap().median, 3.0);
    }

    #[test]
    fn run_bases() {
        let u = "https://github.com/o/r/actions/runs/42/attempts/2";
        assert_eq!(run_base(u), Some("https://github.com/o/r/actions/runs/42"));
        assert_eq!(run_base("https://x/o/r/actions/runs/"), None);
    }
}
