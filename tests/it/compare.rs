//! `wms compare`: a report from recorded fixtures whose every figure is recomputed here from the
//! records; broken lines skipped and named; the manual tracker driven through stdin and
//! interrupted with SIGINT; collect against the in-test GitHub API (several pages of runs),
//! idempotent, and without a token.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use wms::timing::Timestamp;

use crate::github_api::{GitHubApi, Token};
use crate::util::{self, TestCommand};

fn wms(dir: &Path) -> TestCommand {
    util::wms().current_dir(dir)
}

fn ts(epoch_s: f64) -> String {
    Timestamp::from_unix_millis((epoch_s * 1000.0).round() as i64).rfc3339()
}

/// A deterministic stream of numbers in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What a fixture record is, kept beside its JSON so the test can recompute every figure.
#[derive(Debug, Clone)]
struct Fixture {
    task: &'static str,
    method: &'static str,
    seconds: f64,
    outcome: &'static str,
    errors: u32,
    human: Option<f64>,
}

impl Fixture {
    fn json(&self, start: f64, n: usize) -> Value {
        let mut steps = Vec::new();
        let parts = 3;
        for i in 0..parts {
            let a = start + self.seconds * i as f64 / parts as f64;
            let b = start + self.seconds * (i + 1) as f64 / parts as f64;
            steps.push(json!({"name": format!("step {i}"), "started": ts(a), "finished": ts(b)}));
        }
        let source = if self.method == "manual" {
            json!({"person": format!("p{}", n % 3)})
        } else {
            json!({"command": "wms deploy apply"})
        };
        let mut v = json!({
            "task": self.task, "method": self.method,
            "started": ts(start), "finished": ts(start + self.seconds),
            "outcome": self.outcome,
            "errors": {"count": self.errors,
                       "messages": (0..self.errors).map(|i| format!("e{i}")).collect::<Vec<_>>()},
            "steps": steps, "source": source,
        });
        if let Some(h) = self.human {
            v["human_seconds"] = json!(h);
        }
        v
    }
}

fn fixtures() -> Vec<Fixture> {
    let mut rng = Lcg(14);
    let mut out = Vec::new();
    let plan: [(&str, &str, usize, f64, f64); 6] = [
        ("deploy", "manual", 7, 600.0, 1500.0),
        ("deploy", "automated", 12, 90.0, 300.0),
        ("rollback", "manual", 4, 120.0, 600.0),
        ("rollback", "automated", 5, 10.0, 40.0),
        ("scale", "manual", 3, 60.0, 240.0),
        ("promote", "automated", 2, 3.0, 9.0),
    ];
    for (task, method, n, lo, hi) in plan {
        for _ in 0..n {
            let r = rng.next();
            let outcome = if r < 0.15 {
                "failure"
            } else if r < 0.25 {
                "aborted"
            } else {
                "success"
            };
            let errors = if rng.next() < 0.3 {
                1 + (rng.next() * 3.0) as u32
            } else {
                0
            };
            // Seconds with a millisecond part, as real records have.
            let seconds = ((lo + (hi - lo) * rng.next()) * 1000.0).round() / 1000.0;
            let human = (method == "automated" && rng.next() < 0.3)
                .then(|| ((30.0 * rng.next()) * 1000.0).round() / 1000.0);
            out.push(Fixture {
                task,
                method,
                seconds,
                outcome,
                errors,
                human,
            });
        }
    }
    out
}

fn median_range(mut v: Vec<f64>, unit: fn(f64) -> String) -> String {
    if v.is_empty() {
        return "no data".into();
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    format!(
        "{} ({}–{}), n={n}",
        unit(median),
        unit(v[0]),
        unit(v[n - 1])
    )
}

fn secs(x: f64) -> String {
    format!("{x:.1} s")
}

fn hours(x: f64) -> String {
    format!("{:.2} h", x / 3600.0)
}

fn rate(f: &[&Fixture]) -> String {
    let rated: Vec<_> = f.iter().filter(|x| x.outcome != "aborted").collect();
    if rated.is_empty() {
        return "no data".into();
    }
    let bad = rated
        .iter()
        .filter(|x| x.outcome == "failure" || x.errors > 0)
        .count();
    format!(
        "{bad}/{} ({:.0}%)",
        rated.len(),
        100.0 * bad as f64 / rated.len() as f64
    )
}

fn human_of(x: &Fixture) -> f64 {
    x.human
        .unwrap_or(if x.method == "manual" { x.seconds } else { 0.0 })
}

/// The row this test expects for one task and method, computed from the fixtures alone.
fn expected_row(all: &[Fixture], task: &str, method: &str) -> String {
    let f: Vec<&Fixture> = all
        .iter()
        .filter(|x| x.task == task && x.method == method)
        .collect();
    let count = |o: &str| f.iter().filter(|x| x.outcome == o).count();
    let durations: Vec<f64> = f
        .iter()
        .filter(|x| x.outcome == "success")
        .map(|x| x.seconds)
        .collect();
    let human: Vec<f64> = f
        .iter()
        .filter(|x| x.outcome != "aborted")
        .map(|x| human_of(x))
        .collect();
    let total = if human.is_empty() {
        "no data".to_string()
    } else {
        hours(human.iter().sum())
    };
    format!(
        "| {task} | {method} | {} / {} / {} | {} | {} | {} | {total} |",
        count("success"),
        count("failure"),
        count("aborted"),
        median_range(durations, secs),
        rate(&f),
        median_range(human, hours),
    )
}

fn write_fixtures(dir: &Path, all: &[Fixture]) {
    fs_err::create_dir_all(dir).unwrap();
    let mut manual = String::new();
    let mut automated = String::new();
    let mut start = 1_780_000_000.0;
    for (n, f) in all.iter().enumerate() {
        start += 3600.0;
        let line = format!("{}\n", f.json(start, n));
        if f.method == "manual" {
            manual.push_str(&line);
        } else {
            automated.push_str(&line);
        }
    }
    // Line 3 of manual.jsonl is broken: a torn write.
    let mut lines: Vec<&str> = manual.lines().collect();
    lines.insert(2, "{\"task\":\"deploy\",\"method\":\"man");
    fs_err::write(dir.join("manual.jsonl"), lines.join("\n") + "\n").unwrap();
    fs_err::write(dir.join("automated.jsonl"), automated).unwrap();
    // Not a records file: ignored.
    fs_err::write(dir.join("notes.txt"), "not JSON").unwrap();
}

#[test]
fn report_figures_are_the_ones_recomputed_from_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("records");
    let all = fixtures();
    // The fixtures exercise every branch of the definitions.
    for outcome in ["success", "failure", "aborted"] {
        assert!(all.iter().any(|f| f.outcome == outcome), "{outcome}");
    }
    assert!(all.iter().any(|f| f.outcome == "success" && f.errors > 0));
    assert!(all.iter().any(|f| f.human.is_some()));
    write_fixtures(&records, &all);

    let c = wms(tmp.path())
        .args(["compare", "report", "--records"])
        .arg(&records)
        .args(["--out", "reports/r.md"]);
    let out = c.ok();
    let (stdout, stderr) = (out.stdout(), out.stderr());
    let md = fs_err::read_to_string(tmp.path().join("reports/r.md")).unwrap();
    assert!(stdout.contains("reports/r.md"), "{stdout}");

    for task in ["deploy", "rollback", "scale", "config", "debug", "promote"] {
        for method in ["manual", "automated"] {
            let row = expected_row(&all, task, method);
            assert!(md.contains(&row), "missing row\n{row}\nin\n{md}");
        }
    }
    // Cleanup has no records and is not a standard task: not listed.
    assert!(!md.contains("| cleanup |"), "{md}");
    // Tasks without records say so.
    assert!(md.contains("| config | manual | 0 / 0 / 0 | no data | no data | no data | no data |"));

    // The summary table.
    let of = |task: &str, method: &str, outcome: Option<&str>| -> Vec<&Fixture> {
        all.iter()
            .filter(|x| x.task == task && x.method == method)
            .filter(|x| outcome.is_none_or(|o| x.outcome == o))
            .collect()
    };
    let durations = |task, method| -> Vec<f64> {
        of(task, method, Some("success"))
            .iter()
            .map(|x| x.seconds)
            .collect()
    };
    // Human hours of a deploy, aborted attempts left out.
    let deploy_hours = |method| -> Vec<f64> {
        of("deploy", method, None)
            .iter()
            .filter(|x| x.outcome != "aborted")
            .map(|x| human_of(x))
            .collect()
    };
    let row = |metric: &str, m: String, a: String| format!("| {metric} | {m} | {a} |");
    for expected in [
        row(
            "Deployment time",
            median_range(durations("deploy", "manual"), secs),
            median_range(durations("deploy", "automated"), secs),
        ),
        row(
            "Rollback time",
            median_range(durations("rollback", "manual"), secs),
            median_range(durations("rollback", "automated"), secs),
        ),
        row(
            "Error rate (all tasks)",
            rate(
                &all.iter()
                    .filter(|x| x.method == "manual")
                    .collect::<Vec<_>>(),
            ),
            rate(
                &all.iter()
                    .filter(|x| x.method == "automated")
                    .collect::<Vec<_>>(),
            ),
        ),
        row(
            "Human hours per deployment",
            median_range(deploy_hours("manual"), hours),
            median_range(deploy_hours("automated"), hours),
        ),
    ] {
        assert!(md.contains(&expected), "missing\n{expected}\nin\n{md}");
    }
    let used = all.len();
    assert!(
        md.contains(&format!("from **{used} timing records**")),
        "{md}"
    );

    // The broken line is skipped and named, in the report and on stderr.
    let named = format!("{}:3:", records.join("manual.jsonl").display());
    assert!(stderr.contains(&named), "{stderr}");
    assert!(md.contains("## Skipped lines"), "{md}");
    assert!(md.contains("manual.jsonl:3:"), "{md}");

    // Charts: valid SVG next to the report, each task named, "no data" where missing.
    for chart in ["r-durations.svg", "r-human.svg"] {
        let svg = fs_err::read_to_string(tmp.path().join("reports").join(chart)).unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{chart}");
        assert!(svg.trim_end().ends_with("</svg>"), "{chart}");
        for task in ["deploy", "rollback", "scale", "config", "debug"] {
            // plotters writes each text element's content on a line of its own.
            assert!(
                svg.contains(&format!("\n{task}\n</text>")),
                "{chart}: {task}"
            );
        }
        assert!(svg.contains("no data"), "{chart}");
        assert!(md.contains(&format!("]({chart})")), "{md}");
    }
}

#[test]
fn update_docs_replaces_only_the_generated_section() {
    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("records");
    write_fixtures(&records, &fixtures()[..4]);
    let doc = tmp.path().join("docs/COMPARISON.md");
    fs_err::create_dir_all(doc.parent().unwrap()).unwrap();
    let begin = wms::compare::report::BEGIN_MARKER;
    let end = wms::compare::report::END_MARKER;
    fs_err::write(
        &doc,
        format!("# Hand-written\n\nprose\n\n{begin}\nold\n{end}\n\ntail\n"),
    )
    .unwrap();
    report_updating_docs(tmp.path(), &records).ok();
    let text = fs_err::read_to_string(&doc).unwrap();
    assert!(text.starts_with("# Hand-written\n\nprose\n\n"), "{text}");
    assert!(text.ends_with(&format!("{end}\n\ntail\n")), "{text}");
    assert!(!text.contains("\nold\n"), "{text}");
    assert!(text.contains("| deploy | manual |"), "{text}");
    // Chart links are relative to the document.
    assert!(
        text.contains("](../comparison/reports/x-durations.svg)"),
        "{text}"
    );

    // A document without markers is refused in one line and left as it was.
    fs_err::write(&doc, "# no markers\n").unwrap();
    let out = report_updating_docs(tmp.path(), &records).fails(1);
    assert_eq!(out.stderr().trim().lines().count(), 1, "{out}");
    let _redacted = util::redactions().bind_to_scope();
    insta::assert_snapshot!("compare_report_doc_without_markers", out.error_line());
    assert_eq!(fs_err::read_to_string(&doc).unwrap(), "# no markers\n");
}

#[test]
fn no_records_means_no_data_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let c = wms(tmp.path())
        .env("WMS_TIMING_DIR", tmp.path().join("none"))
        .args(["compare", "report", "--out", "r.md"]);
    c.ok();
    let md = fs_err::read_to_string(tmp.path().join("r.md")).unwrap();
    assert_contains_all(
        &md,
        &[
            "from **0 timing records**",
            "| Deployment time | no data | no data |",
            "| Human hours, all tasks (sum) | no data | no data |",
        ],
    );
    // No digit in any table cell except the zero run counts.
    for line in md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Task") && !l.starts_with("| Metric"))
    {
        let cells: Vec<&str> = line.split('|').skip(3).collect();
        for cell in cells {
            assert!(
                cell.trim().is_empty() || cell.trim() == "no data" || cell.trim() == "0 / 0 / 0",
                "{line}"
            );
        }
    }
}

/// The names of a timing record's steps, in order.
fn step_names(record: &Value) -> Vec<&str> {
    record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

/// Asserts that `text` contains every one of `needles`.
#[track_caller]
fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} is missing from:\n{text}");
    }
}

fn read_records(dir: &Path) -> Vec<Value> {
    let text = fs_err::read_to_string(dir.join("manual.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `wms compare record --method manual --task TASK --person PERSON --out DIR` with piped stdin
/// and stderr.
fn tracker(tmp: &Path, dir: &Path, task: &str, person: &str) -> TestCommand {
    wms(tmp)
        .args([
            "compare", "record", "--method", "manual", "--task", task, "--person", person,
        ])
        .arg("--out")
        .arg(dir)
}

/// An artifact folder (as `actions/download-artifact` leaves it) holding one timing record.
fn artifact_with(dir: &Path, record: &Value) -> PathBuf {
    let artifact = dir.join("artifact");
    fs_err::create_dir_all(&artifact).unwrap();
    fs_err::write(artifact.join("automated.jsonl"), format!("{record}\n")).unwrap();
    artifact
}

/// `wms compare collect` of REPO's `workflows` runs on the GitHub stand-in into `records`,
/// importing the records in `artifact`.
fn collect(
    dir: &Path,
    api: &GitHubApi,
    workflows: &[&str],
    records: &Path,
    artifact: &Path,
) -> TestCommand {
    let mut c = wms(dir)
        .env("GITHUB_API_URL", api.url())
        .args(["compare", "collect", "--repo", REPO]);
    for w in workflows {
        c = c.args(["--workflow", w]);
    }
    c.arg("--records").arg(records).arg("--from").arg(artifact)
}

/// `wms compare report` of `records` into `comparison/reports/x.md`, updating `docs/COMPARISON.md`.
fn report_updating_docs(dir: &Path, records: &Path) -> TestCommand {
    wms(dir)
        .args(["compare", "report", "--records"])
        .arg(records)
        .args([
            "--out",
            "comparison/reports/x.md",
            "--update-docs",
            "docs/COMPARISON.md",
        ])
}

#[test]
fn the_tracker_reads_commands_from_a_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("records");
    let out = tracker(tmp.path(), &dir, "scale", "ann")
        .stdin(b"\nbogus\ne kubectl: forbidden\n\n\nq\n".to_vec())
        .ok();
    assert!(out.stderr().contains("unknown command"), "{out}");
    let recs = read_records(&dir);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r["task"], "scale");
    assert_eq!(r["method"], "manual");
    assert_eq!(r["outcome"], "success");
    assert_eq!(r["source"]["person"], "ann");
    let names = step_names(r);
    assert_eq!(
        names,
        ["check the current size", "scale", "wait for the replicas"]
    );
    assert_eq!(r["errors"]["count"], 1);
    assert_eq!(
        r["errors"]["messages"][0],
        "step 2 (scale): kubectl: forbidden"
    );
    assert_eq!(
        out.stdout().trim(),
        dir.join("manual.jsonl").display().to_string()
    );

    // Input that ends before `q`: the marked step is kept, outcome aborted.
    tracker(tmp.path(), &dir, "debug", "bo")
        .stdin(b"\n".to_vec())
        .ok();
    let recs = read_records(&dir);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["outcome"], "aborted");
    assert_eq!(recs[1]["steps"].as_array().unwrap().len(), 1);

    // Wrong flags: one line with a hint, nothing written.
    let c = wms(tmp.path())
        .args([
            "compare",
            "record",
            "--method",
            "automated",
            "--task",
            "debug",
            "--person",
            "x",
            "--out",
        ])
        .arg(&dir);
    let out = c.fails(2);
    assert!(out.stderr().contains("hint: use --method manual"), "{out}");
    assert_eq!(read_records(&dir).len(), 2);
}

#[test]
fn ctrl_c_keeps_the_steps_marked_so_far() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("records");
    let mut child = tracker(tmp.path(), &dir, "deploy", "cy")
        .into_command()
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut wait_for = |needle: &str| {
        let mut line = String::new();
        loop {
            line.clear();
            let n = stderr.read_line(&mut line).unwrap();
            assert!(n > 0, "tracker ended early; saw:\n{seen}");
            seen.push_str(&line);
            if line.contains(needle) {
                return;
            }
        }
    };
    wait_for("step 1/7");
    stdin.write_all(b"\n").unwrap();
    wait_for("marked 1/7");
    stdin
        .write_all(b"e docker: no space left on device\n")
        .unwrap();
    wait_for("error noted");
    stdin.write_all(b"\n").unwrap();
    wait_for("marked 2/7");
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    wait_for("interrupted");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    drop(stdin);
    let recs = read_records(&dir);
    assert_eq!(recs.len(), 1, "{seen}");
    let r = &recs[0];
    assert_eq!(r["outcome"], "aborted");
    assert_eq!(r["task"], "deploy");
    let names = step_names(r);
    assert_eq!(names, ["build the image", "log in to ECR and push"]);
    assert_eq!(
        r["errors"]["messages"][0],
        "step 2 (log in to ECR and push): docker: no space left on device"
    );
}

const REPO: &str = "acme/meters";
const TOKEN: &str = "ghs_compare_test_token";

/// A run with one job of three steps; `conclusion` decides the run's and the last step's.
fn seed_run(api: &GitHubApi, workflow: u64, i: u64, conclusion: &str) -> u64 {
    let t0 = 1_780_000_000 + i * 1000;
    let iso = |s: u64| ts(s as f64).replace(".000Z", "Z");
    let id = api.seed_run(
        REPO,
        workflow,
        json!({"status": "completed", "conclusion": conclusion,
               "created_at": iso(t0), "run_started_at": iso(t0 + 2), "updated_at": iso(t0 + 200)}),
    );
    let last = if conclusion == "failure" {
        "failure"
    } else {
        "success"
    };
    api.seed_job(
        REPO,
        id,
        json!({"name": "deploy", "conclusion": conclusion, "started_at": iso(t0 + 5), "completed_at": iso(t0 + 95 + i % 7),
               "steps": [
                 {"name": "Set up job", "status": "completed", "conclusion": "success", "number": 1,
                  "started_at": iso(t0 + 5), "completed_at": iso(t0 + 7)},
                 {"name": "wms deploy apply", "status": "completed", "conclusion": last, "number": 2,
                  "started_at": iso(t0 + 7), "completed_at": iso(t0 + 90)},
                 {"name": "Skipped", "status": "completed", "conclusion": "skipped", "number": 3,
                  "started_at": null, "completed_at": null}]}),
    );
    id
}

#[test]
fn collect_reads_every_page_of_runs_once() {
    let api = GitHubApi::start();
    api.add_repo(REPO);
    api.add_token(TOKEN, Token::App);
    api.seed_workflow(REPO, 1, "Deploy", ".github/workflows/deploy.yml");
    api.seed_workflow(REPO, 2, "Rollback", ".github/workflows/rollback.yml");
    let mut ids = Vec::new();
    for i in 0..104 {
        let conclusion = match i % 10 {
            3 => "failure",
            7 => "cancelled",
            9 => "skipped",
            _ => "success",
        };
        ids.push(seed_run(&api, 1, i, conclusion));
    }
    seed_run(&api, 2, 500, "success");
    // Not finished: not a task run yet.
    api.seed_run(
        REPO,
        1,
        json!({"status": "in_progress", "conclusion": null,
                                 "created_at": "2026-06-01T00:00:00Z"}),
    );

    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("records");
    // A record `wms deploy` wrote inside one of those runs, and one elsewhere to import.
    let inside = json!({"task": "deploy", "method": "automated",
        "started": "2026-05-28T20:00:00Z", "finished": "2026-05-28T20:01:00Z", "outcome": "success",
        "errors": {"count": 0, "messages": []}, "steps": [],
        "source": {"command": "wms deploy apply", "run_url": format!("https://github.com/{REPO}/actions/runs/{}", ids[0])}});
    fs_err::create_dir_all(&records).unwrap();
    fs_err::write(records.join("automated.jsonl"), format!("{inside}\n")).unwrap();
    let imported = json!({"task": "scale", "method": "automated",
        "started": "2026-05-28T21:00:00Z", "finished": "2026-05-28T21:00:04.5Z", "outcome": "success",
        "errors": {"count": 0}, "steps": [], "source": {"command": "wms deploy scale"}});
    let artifact = artifact_with(tmp.path(), &imported);

    let collect = || {
        let workflows = ["deploy.yml", "rollback.yml"];
        collect(tmp.path(), &api, &workflows, &records, &artifact)
            .env("GITHUB_TOKEN", TOKEN)
            .ok()
            .stderr()
    };
    let stderr = collect();
    let text = fs_err::read_to_string(records.join("automated.jsonl")).unwrap();
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let from_api: Vec<&Value> = recs
        .iter()
        .filter(|r| r["context"]["collector"] == "github-actions")
        .collect();
    // 104 deploy runs less the 10 skipped ones, plus the rollback run.
    assert_eq!(from_api.len(), 95, "{stderr}");
    assert_eq!(recs.len(), 95 + 2, "{stderr}");
    assert!(
        stderr.contains("105 seen, 95 collected, 0 already collected"),
        "{stderr}"
    );
    // Every page was read: the runs list asked for page 2.
    let pages: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/actions/workflows/deploy.yml/runs"))
        .map(|r| r.query.clone())
        .collect();
    assert!(
        pages.len() >= 2 && pages.iter().any(|q| q.contains("page=2")),
        "{pages:?}"
    );
    assert!(
        api.requests()
            .iter()
            .all(|r| r.token.as_deref() == Some(TOKEN))
    );

    // One record, checked field by field against what was seeded.
    let first = from_api
        .iter()
        .find(|r| r["context"]["run_id"].as_str() == Some(ids[3].to_string().as_str()))
        .unwrap();
    let t0 = 1_780_000_000.0 + 3.0 * 1000.0;
    assert_eq!(first["task"], "deploy");
    assert_eq!(first["method"], "automated");
    assert_eq!(first["outcome"], "failure");
    assert_eq!(
        first["source"]["run_url"],
        format!(
            "https://github.com/{REPO}/actions/runs/{}/attempts/1",
            ids[3]
        )
    );
    assert_eq!(first["started"], ts(t0 + 2.0));
    assert_eq!(first["finished"], ts(t0 + 95.0 + 3.0));
    let steps: Vec<(&str, &str, &str)> = first["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["started"].as_str().unwrap(),
                s["finished"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (
                "deploy / Set up job",
                ts(t0 + 5.0).as_str(),
                ts(t0 + 7.0).as_str()
            ),
            (
                "deploy / wms deploy apply",
                ts(t0 + 7.0).as_str(),
                ts(t0 + 90.0).as_str()
            ),
        ]
    );
    assert_eq!(
        first["errors"],
        json!({"count": 1, "messages": ["deploy / wms deploy apply: failure"]})
    );
    let cancelled = from_api
        .iter()
        .find(|r| r["context"]["run_id"].as_str() == Some(ids[7].to_string().as_str()))
        .unwrap();
    assert_eq!(cancelled["outcome"], "aborted");
    assert!(from_api.iter().any(|r| r["task"] == "rollback"));

    // Again: nothing new, the file is byte for byte the same.
    let stderr = collect();
    assert!(stderr.contains("95 already collected"), "{stderr}");
    assert!(
        stderr.contains("imported 0 (duplicates skipped: 1)"),
        "{stderr}"
    );
    assert_eq!(
        fs_err::read_to_string(records.join("automated.jsonl")).unwrap(),
        text
    );

    // The report counts the `wms deploy` record inside run ids[0] once, as that run.
    let c = wms(tmp.path())
        .args(["compare", "report", "--records"])
        .arg(&records)
        .args(["--out", "r.md"]);
    c.ok();
    let md = fs_err::read_to_string(tmp.path().join("r.md")).unwrap();
    assert!(
        md.contains("1 record(s) that `wms deploy` wrote inside a collected workflow run"),
        "{md}"
    );
    let deploy_ok = from_api
        .iter()
        .filter(|r| r["task"] == "deploy" && r["outcome"] == "success")
        .count();
    assert!(md.contains(&format!("n={deploy_ok} |")), "{md}");
}

#[test]
fn collect_without_a_token_still_collects_local_records() {
    let api = GitHubApi::start();
    api.add_repo(REPO);
    let tmp = tempfile::tempdir().unwrap();
    let records: PathBuf = tmp.path().join("records");
    fs_err::create_dir_all(&records).unwrap();
    fs_err::write(records.join("automated.jsonl"), "not json\n").unwrap();
    let rec = json!({"task": "config", "method": "automated", "started": "2026-05-28T21:00:00Z",
        "finished": "2026-05-28T21:00:04Z", "outcome": "success", "source": {"command": "wms deploy config"}});
    let artifact = artifact_with(tmp.path(), &rec);
    let stderr = collect(tmp.path(), &api, &["deploy.yml"], &records, &artifact)
        .ok()
        .stderr();
    assert_contains_all(
        &stderr,
        &[
            "no token",
            "GitHub Actions API part was skipped",
            "automated.jsonl:1: skipped a broken timing record",
        ],
    );
    assert!(api.requests().is_empty());
    let text = fs_err::read_to_string(records.join("automated.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().nth(1).unwrap().contains("\"task\":\"config\""));

    // Bad flags: one line each, exit 2.
    let mut lines = Vec::new();
    for (flag, value) in [
        ("--repo", "not-a-repo"),
        ("--workflow", "../evil.yml"),
        ("--since", "yesterday"),
    ] {
        let c = wms(tmp.path())
            .args(["compare", "collect", "--records"])
            .arg(&records)
            .args([flag, value]);
        let c = if flag != "--workflow" {
            c.args(["--workflow", "deploy.yml"])
        } else {
            c
        };
        lines.push(c.fails(2).error_line());
    }
    let _redacted = util::redactions().bind_to_scope();
    insta::assert_snapshot!("compare_collect_bad_flags", lines.join("\n"));
}

#[test]
fn collect_with_a_bad_token_fails_in_one_line_and_keeps_the_imports() {
    let api = GitHubApi::start();
    api.add_repo(REPO);
    api.seed_workflow(REPO, 1, "Deploy", ".github/workflows/deploy.yml");
    seed_run(&api, 1, 0, "success");
    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("records");
    let rec = json!({"task": "cleanup", "method": "automated", "started": "2026-05-28T21:00:00Z",
        "finished": "2026-05-28T21:00:02Z", "outcome": "success", "source": {"command": "wms deploy cleanup"}});
    let artifact = artifact_with(tmp.path(), &rec);
    let out = collect(tmp.path(), &api, &["deploy.yml"], &records, &artifact)
        .env("GITHUB_TOKEN", "not-a-token")
        .fails(1);
    let stderr = out.stderr();
    assert_eq!(stderr.trim().lines().count(), 1, "{out}");
    assert!(
        stderr.contains("401") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-a-token"), "{stderr}");
    let text = fs_err::read_to_string(records.join("automated.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("\"task\":\"cleanup\""));
}
