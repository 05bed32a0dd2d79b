//! `wms report` end to end: the real binary against the in-test GitHub REST stand-in
//! ([`crate::github_api`]), and the Mermaid blocks through the real renderer (mmdc with Debian's
//! Chromium, `tools/mermaid`).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::github_api::{GitHubApi, Token};
use crate::util::{TestCommand, TestOutput, mmdc, wms};

const REPO: &str = "octo-org/water-meters";
const MARKER: &str = "<!-- wms-report:water-meters-unet -->";

/// A temp dir with the files a report reads, and the runner files it writes.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write(
            "baseline.json",
            &json!({"test_iou": 0.80, "test_dice": 0.88, "test_loss": 0.05, "test_accuracy": 0.99})
                .to_string(),
        );
        f.metrics(0.85, 0.91);
        let mut history =
            String::from("epoch,lr,train_loss,train_iou,val_loss,val_iou,test_loss,test_iou\n");
        for e in 1..=5 {
            let x = e as f64;
            history.push_str(&format!(
                "{e},0.003,{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}\n",
                0.6 / x,
                0.9 - 0.6 / x,
                0.5 / x,
                0.92 - 0.6 / x,
                0.55 / x,
                0.91 - 0.6 / x
            ));
        }
        f.write("history.csv", &history);
        f.write(
            "changes.json",
            &json!({
                "base": "1".repeat(40), "head": "2".repeat(40),
                "files": [
                    {"path": "data/training.dvc", "status": "modified"},
                    {"path": "configs/train|<b>x</b>.yaml", "status": "added"}
                ],
                "data": [{"source": "data/training.dvc", "output": "data/training", "kind": "modified",
                          "description": "data/training: 1244 → 1489 files (+245)"}],
                "should_train": true
            })
            .to_string(),
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        f.write(
            "image.json",
            &json!({"image": format!("ghcr.io/octo-org/water-meters@{digest}"), "digest": digest,
                    "compressed_size": 17_487_193})
            .to_string(),
        );
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        fs_err::write(self.path(name), text).unwrap();
    }

    fn metrics(&self, iou: f64, dice: f64) {
        self.write(
            "metrics.json",
            &serde_json::to_string_pretty(
                &json!({"test_iou": iou, "test_dice": dice, "test_loss": 0.04, "test_accuracy": 0.991}),
            )
            .unwrap(),
        );
    }

    fn summary(&self) -> String {
        fs_err::read_to_string(self.path("summary.md")).unwrap_or_default()
    }

    /// `wms report pr` as a pull_request job would run it.
    fn report(&self, api: &GitHubApi, token: Option<&str>, extra: &[&str]) -> TestCommand {
        let mut args: Vec<String> = ["report", "pr", "--metrics"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(self.path("metrics.json").display().to_string());
        for (flag, file) in [
            ("--baseline", "baseline.json"),
            ("--history", "history.csv"),
            ("--changes", "changes.json"),
            ("--image", "image.json"),
        ] {
            args.push(flag.into());
            args.push(self.path(file).display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        self.run(api, token, &args)
    }

    fn run(&self, api: &GitHubApi, token: Option<&str>, args: &[String]) -> TestCommand {
        let event = self.path("event.json");
        fs_err::write(
            &event,
            json!({"number": 7, "pull_request": {"number": 7,
                   "base": {"sha": "1".repeat(40)}, "head": {"sha": "3".repeat(40)}}})
            .to_string(),
        )
        .unwrap();
        let mut cmd = wms()
            .args(args)
            .current_dir(self.dir.path())
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_API_URL", api.url())
            .env("GITHUB_REPOSITORY", REPO)
            .env("GITHUB_SHA", "4".repeat(40))
            .env("GITHUB_EVENT_NAME", "pull_request")
            .env("GITHUB_EVENT_PATH", &event)
            .env("GITHUB_STEP_SUMMARY", self.path("summary.md"))
            .github_output(self.path("output.txt"))
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_RUN_ID", "99");
        if let Some(t) = token {
            cmd = cmd.env("GITHUB_TOKEN", t);
        }
        cmd
    }
}

fn text(out: &TestOutput) -> String {
    format!("{}{}", out.stdout(), out.stderr())
}

fn api() -> GitHubApi {
    let api = GitHubApi::start();
    api.add_repo(REPO);
    api.add_token("app-token", Token::App);
    api.add_token("fork-token", Token::ReadOnly);
    api.add_token("pat", Token::User("octocat".into()));
    api
}

fn count(api: &GitHubApi, method: &str, suffix: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(suffix))
        .count()
}

#[test]
fn sticky_comment_is_created_once_then_updated_across_three_runs() {
    let api = api();
    let f = Fixture::new();
    for (run, iou) in [0.81, 0.83, 0.86].into_iter().enumerate() {
        f.metrics(iou, 0.91);
        f.report(&api, Some("app-token"), &[]).ok();
        let comments = api.comments(REPO, 7);
        assert_eq!(comments.len(), 1, "run {run}: {comments:?}");
        let body = comments[0]["body"].as_str().unwrap();
        assert!(body.starts_with(MARKER), "{body}");
        assert!(
            body.contains(&format!("| `test_iou` | {iou:.4} | 0.8000 |")),
            "run {run}: {body}"
        );
        assert_eq!(comments[0]["user"]["login"], "github-actions[bot]");
    }
    assert_eq!(count(&api, "POST", "/issues/7/comments"), 1);
    assert_eq!(
        count(
            &api,
            "PATCH",
            &format!("/issues/comments/{}", api.comments(REPO, 7)[0]["id"])
        ),
        2
    );
    // Another model gets its own comment.
    f.report(&api, Some("app-token"), &["--model", "meter-digits"])
        .ok();
    let comments = api.comments(REPO, 7);
    assert_eq!(comments.len(), 2);
    assert!(
        comments[1]["body"]
            .as_str()
            .unwrap()
            .starts_with("<!-- wms-report:meter-digits -->")
    );
}

#[test]
fn the_marker_is_found_on_page_three() {
    let api = api();
    for i in 0..250 {
        api.seed_comment(
            REPO,
            7,
            if i % 2 == 0 { "alice" } else { "ci-bot[bot]" },
            &format!("comment {i}"),
        );
    }
    // Someone quoting the marker is not us: a user's comment with it must not be taken over
    // while a bot's one exists.
    api.seed_comment(REPO, 7, "mallory", &format!("{MARKER}\nfake"));
    let ours = api.seed_comment(
        REPO,
        7,
        "github-actions[bot]",
        &format!("{MARKER}\nold report"),
    );
    let f = Fixture::new();
    f.report(&api, Some("app-token"), &[]).ok();
    let comments = api.comments(REPO, 7);
    assert_eq!(comments.len(), 252, "nothing new was posted");
    let updated = comments.iter().find(|c| c["id"] == ours).unwrap();
    assert!(
        updated["body"]
            .as_str()
            .unwrap()
            .contains("quality gate passed"),
        "{updated}"
    );
    let fake = comments
        .iter()
        .find(|c| c["user"]["login"] == "mallory")
        .unwrap();
    assert_eq!(fake["body"], format!("{MARKER}\nfake"));
    let pages: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/issues/7/comments"))
        .map(|r| r.query.clone())
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages[2].contains("page=3"), "{pages:?}");
    assert_eq!(count(&api, "POST", "/issues/7/comments"), 0);
}

#[test]
fn with_a_user_token_only_its_own_comments_count_and_the_newest_is_updated() {
    let api = api();
    let older = api.seed_comment(REPO, 7, "octocat", &format!("{MARKER}\nfirst"));
    api.seed_comment(
        REPO,
        7,
        "github-actions[bot]",
        &format!("{MARKER}\nnot ours"),
    );
    let newer = api.seed_comment(REPO, 7, "octocat", &format!("{MARKER}\nsecond"));
    let f = Fixture::new();
    let out = f.report(&api, Some("pat"), &[]).ok();
    let all = api.comments(REPO, 7);
    let body = |id: u64| {
        all.iter().find(|c| c["id"] == id).unwrap()["body"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(body(newer).contains("quality gate"), "{}", body(newer));
    assert_eq!(body(older), format!("{MARKER}\nfirst"));
    let t = text(&out);
    assert!(
        t.contains("::warning::1 other comment(s) on #7 carry the marker"),
        "{t}"
    );
}

#[test]
fn a_fork_pull_request_gets_the_summary_and_a_warning_and_exit_0() {
    let api = api();
    let f = Fixture::new();
    let out = f.report(&api, Some("fork-token"), &[]).ok();
    let t = text(&out);
    assert!(api.comments(REPO, 7).is_empty());
    assert!(api.check_runs(REPO).is_empty());
    let warning = t
        .lines()
        .find(|l| l.starts_with("::warning::"))
        .unwrap_or_default();
    assert!(
        warning.contains("`pull-requests: write`") && warning.contains("`checks: write`"),
        "{t}"
    );
    let summary = f.summary();
    assert!(
        summary.contains("quality gate passed") && summary.contains("```mermaid"),
        "{summary}"
    );
    // Without any token: the same, and the warning says to pass one.
    let f = Fixture::new();
    let out = f.report(&api, None, &[]).ok();
    let t = text(&out);
    assert!(t.contains("::warning::no GITHUB_TOKEN"), "{t}");
    assert!(f.summary().contains(MARKER));
}

#[test]
fn a_secondary_rate_limit_is_waited_out() {
    let api = api();
    api.rate_limit_next(1, 403, 1);
    api.rate_limit_next(1, 429, 1);
    let f = Fixture::new();
    f.report(&api, Some("app-token"), &[]).ok();
    assert_eq!(api.comments(REPO, 7).len(), 1);
    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..2], [403, 429], "{statuses:?}");
}

#[test]
fn a_check_run_carries_120_annotations_in_three_requests() {
    let api = api();
    let f = Fixture::new();
    let mut metrics = json!({"test_iou": 0.85, "test_dice": 0.91});
    let mut baseline = json!({"test_iou": 0.80, "test_dice": 0.88});
    for i in 0..120 {
        metrics[format!("region_{i:03}_iou")] = json!(0.5);
        baseline[format!("region_{i:03}_iou")] = json!(0.6);
    }
    f.write(
        "metrics.json",
        &serde_json::to_string_pretty(&metrics).unwrap(),
    );
    f.write("baseline.json", &baseline.to_string());
    f.report(&api, Some("app-token"), &[]).ok();
    let runs = api.check_runs(REPO);
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["name"], "wms / model quality");
    assert_eq!(
        run["head_sha"],
        "3".repeat(40),
        "the PR head, not the merge commit"
    );
    assert_eq!(run["conclusion"], "success");
    let anns = run["annotations"].as_array().unwrap();
    assert_eq!(anns.len(), 120);
    assert!(
        anns.iter()
            .all(|a| a["annotation_level"] == "warning" && a["path"] == "metrics.json")
    );
    // The annotation points at the metric's line in metrics.json.
    let line = anns[0]["start_line"].as_u64().unwrap() as usize;
    let text_of = fs_err::read_to_string(f.path("metrics.json")).unwrap();
    let title = anns[0]["title"].as_str().unwrap();
    let metric = title.split_whitespace().next().unwrap();
    assert!(
        text_of.lines().nth(line - 1).unwrap().contains(metric),
        "{line} {metric}"
    );
    assert_eq!(count(&api, "POST", "/check-runs"), 1);
    assert_eq!(
        count(&api, "PATCH", &format!("/check-runs/{}", run["id"])),
        2
    );

    // A failed gate makes a failed check run, with a failure annotation per failed rule.
    let api = self::api();
    f.metrics(0.70, 0.91);
    f.write(
        "baseline.json",
        &json!({"test_iou": 0.80, "test_dice": 0.88}).to_string(),
    );
    // A report does not fail the job.
    f.report(&api, Some("app-token"), &[]).ok();
    let run = &api.check_runs(REPO)[0];
    assert_eq!(run["conclusion"], "failure");
    let failures: Vec<&Value> = run["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["annotation_level"] == "failure")
        .collect();
    assert_eq!(failures.len(), 1, "{run}");
    assert!(failures[0]["title"].as_str().unwrap().contains("test_iou"));
}

#[test]
fn deployments_get_statuses_and_retire_the_previous_one() {
    let api = api();
    let f = Fixture::new();
    let deploy = |git_ref: &str, state: &str, token: &str| {
        let args: Vec<String> = [
            "report",
            "deployment",
            "--environment",
            "staging",
            "--state",
            state,
            "--url",
            "https://staging.example.com/",
            "--ref",
            git_ref,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        f.run(&api, Some(token), &args)
    };
    let a = "a".repeat(40);
    let b = "b".repeat(40);
    for state in ["in_progress", "success"] {
        deploy(&a, state, "app-token").ok();
    }
    let deployments = api.deployments(REPO);
    assert_eq!(
        deployments.len(),
        1,
        "the success went to the same deployment"
    );
    let first = &deployments[0];
    assert_eq!(first["request"]["auto_merge"], false);
    assert_eq!(first["request"]["required_contexts"], json!([]));
    assert_eq!(first["environment"], "staging");
    let id = first["id"].as_u64().unwrap();
    let states = |id: u64| -> Vec<String> {
        api.deployment_statuses(id)
            .iter()
            .map(|s| s["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(states(id), ["in_progress", "success"]);
    let st = &api.deployment_statuses(id)[1];
    assert_eq!(st["environment_url"], "https://staging.example.com/");
    assert_eq!(
        st["log_url"],
        "https://github.com/octo-org/water-meters/actions/runs/99"
    );
    assert_eq!(st["auto_inactive"], true);
    assert!(
        fs_err::read_to_string(f.path("output.txt"))
            .unwrap()
            .contains(&format!("deployment-id={id}"))
    );

    // The next release: a new deployment; its success retires the first one.
    for state in ["in_progress", "success"] {
        deploy(&b, state, "app-token").ok();
    }
    let deployments = api.deployments(REPO);
    assert_eq!(deployments.len(), 2);
    assert_eq!(
        states(deployments[1]["id"].as_u64().unwrap()),
        ["in_progress", "success"]
    );
    assert_eq!(states(id), ["in_progress", "success", "inactive"]);

    // A failed rollout is recorded as failure.
    deploy(&a, "in_progress", "app-token").ok();
    deploy(&a, "failure", "app-token").ok();
    let third = api.deployments(REPO)[2]["id"].as_u64().unwrap();
    assert_eq!(states(third), ["in_progress", "failure"]);

    // Read-only: a warning naming the permission, exit 0, nothing recorded.
    let out = deploy(&a, "in_progress", "fork-token").ok();
    let t = text(&out);
    assert!(
        t.contains("::warning::the token lacks `deployments: write`"),
        "{t}"
    );
    assert_eq!(api.deployments(REPO).len(), 3);
}

#[test]
fn the_comment_stays_under_65536_characters_with_a_huge_changes_file() {
    let api = api();
    let f = Fixture::new();
    let files: Vec<Value> = (0..20_000)
        .map(|i| json!({"path": format!("data/training/images/meter_{i:06}_{}.jpg", "x".repeat(40)), "status": "added"}))
        .collect();
    let data: Vec<Value> = (0..3_000)
        .map(|i| {
            json!({"output": format!("data/part{i}"), "kind": "added",
                        "description": format!("data/part{i}: 0 → {i} files (+{i})")})
        })
        .collect();
    f.write(
        "changes.json",
        &json!({"base": "1".repeat(40), "head": "2".repeat(40), "files": files, "data": data})
            .to_string(),
    );
    f.report(&api, Some("app-token"), &[]).ok();
    let comments = api.comments(REPO, 7);
    assert_eq!(comments.len(), 1, "GitHub accepted it");
    let body = comments[0]["body"].as_str().unwrap();
    let n = body.chars().count();
    assert!(n <= 65_536 && n > 50_000, "{n} characters");
    assert!(
        body.contains("20000 changed file(s)"),
        "the count is the real one"
    );
    assert!(body.contains("more file(s) not shown, to stay under GitHub's 65 536-character limit"));
    assert!(
        body.contains("```mermaid") && body.trim_end().ends_with("</sub>"),
        "nothing cut in half"
    );
    let check = &api.check_runs(REPO)[0];
    assert!(check["output"]["summary"].as_str().unwrap().chars().count() <= 65_535);
}

#[test]
fn bad_inputs_and_api_errors_are_one_line_and_exit_1() {
    let api = api();
    let f = Fixture::new();
    f.write("metrics.json", r#"{"test_iou": "high", "test_dice": 0.9}"#);
    let mut errors = Vec::new();
    let out = f.report(&api, Some("app-token"), &[]).fails(1);
    errors.push(error_line(&out));
    assert!(api.requests().is_empty(), "nothing was posted");

    let f = Fixture::new();
    fs_err::remove_file(f.path("baseline.json")).unwrap();
    errors.push(error_line(&f.report(&api, Some("app-token"), &[]).fails(1)));

    let f = Fixture::new();
    errors.push(error_line(&f.report(&api, Some("stolen"), &[]).fails(1)));
    assert!(
        f.summary().contains(MARKER),
        "the summary is written before any API call"
    );

    let out = f
        .report(&api, Some("app-token"), &["--repo", "octo-org/nope"])
        .fails(1);
    errors.push(error_line(&out));
    let _redacted = crate::util::redactions().bind_to_scope();
    insta::assert_snapshot!("report_pr_errors", errors.join("\n"));
}

/// The one `::error::` line a failed report prints (there must be exactly one).
#[track_caller]
fn error_line(out: &TestOutput) -> String {
    let t = text(out);
    let errors: Vec<&str> = t.lines().filter(|l| l.starts_with("::error::")).collect();
    assert_eq!(errors.len(), 1, "{out}");
    errors[0].to_string()
}

/// The Markdown users read, with the temp dir filtered out.
#[test]
fn the_report_markdown_snapshot() {
    let api = api();
    let f = Fixture::new();
    f.report(
        &api,
        None,
        &[
            "--deployment-url",
            "https://preview.example.com/pr-7",
            "--markdown",
            "report.md",
        ],
    )
    .ok();
    let md = fs_err::read_to_string(f.path("report.md")).unwrap();
    {
        let _redacted = crate::util::redactions().bind_to_scope();
        insta::assert_snapshot!("report_pr_body", md);
    }
    assert_eq!(
        f.summary(),
        fs_err::read_to_string(f.path("report.md")).unwrap()
    );
    let svg = fs_err::read_to_string(f.path("curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("IoU") && svg.contains("BCE loss"));
}

#[test]
fn the_mermaid_charts_render_in_the_real_renderer() {
    let Some((mmdc, puppeteer)) = mmdc() else {
        return;
    };
    let api = api();
    let f = Fixture::new();
    f.report(&api, None, &["--markdown", "report.md"]).ok();
    let md = fs_err::read_to_string(f.path("report.md")).unwrap();
    // Each block on its own, so a failure names the chart.
    let blocks: Vec<&str> = md
        .split("```mermaid\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2);
    for (i, block) in blocks.iter().enumerate() {
        let input = f.path(&format!("chart{i}.mmd"));
        let output = f.path(&format!("chart{i}.svg"));
        fs_err::write(&input, block).unwrap();
        eprintln!("chart {i}:\n{block}");
        TestCommand::external(&mmdc)
            .arg("-p")
            .arg(&puppeteer)
            .arg("-i")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .ok();
        let svg = fs_err::read_to_string(&output).unwrap();
        let title = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("title \""))
            .unwrap()
            .trim_end_matches('"');
        for label in [title, "epoch", ">1<", ">5<", "#d62728"] {
            assert!(
                svg.contains(label),
                "chart {i}: {label:?} missing from the SVG"
            );
        }
        assert!(
            svg.matches("<path").count() >= 3
                || svg.contains("polyline")
                || svg.contains("line-plot"),
            "chart {i} has no lines"
        );
    }
}
