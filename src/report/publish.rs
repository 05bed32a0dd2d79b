//! The GitHub side of a report, over [`GitHub`]: the sticky comment, the check run, deployments.
//! Each function is one user-visible effect and returns what it did; none decides whether a
//! failure is fatal (the CLI turns a missing permission into a warning).
//!
//! Facts (DELIVERY-FACTS §3): comments are listed oldest first, 100 per page, `Link` pagination;
//! a body holds at most 65 536 characters. A check run takes at most 50 annotations per request;
//! a PATCH appends more. Deployments default to `auto_merge: true` and to requiring every status
//! check, so both are switched off; statuses with `auto_inactive` retire earlier deployments of
//! the environment.

use serde::Deserialize;
use serde_json::json;

use crate::github::client::{GitHub, GitHubError, Permission};
use crate::untrusted::text::for_log;

/// GitHub's per-request annotation limit.
pub const ANNOTATIONS_PER_REQUEST: usize = 50;

#[derive(Debug, Deserialize)]
struct User {
    login: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    user: Option<User>,
    #[serde(default)]
    html_url: String,
}

/// Who the token is, when GitHub says (`GET /user`; installation tokens such as `GITHUB_TOKEN`
/// get 403 there, and then we do not know).
pub fn viewer_login(gh: &GitHub) -> Option<String> {
    #[derive(Deserialize)]
    struct Me {
        login: String,
    }
    gh.get::<Me>("/user", Permission::PullRequestsRead)
        .ok()
        .map(|m| m.login)
}

/// What [`upsert_comment`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentOutcome {
    pub id: u64,
    pub url: String,
    pub created: bool,
    /// Other comments that also carry the marker (left alone).
    pub others: Vec<u64>,
}

/// Updates the newest comment on PR `number` that carries `marker` (by `author` when known, else
/// preferring bot comments), or creates one. Every page is read first, so a marker on page 3 is
/// found.
pub fn upsert_comment(
    gh: &GitHub,
    repo: &str,
    number: u64,
    marker: &str,
    author: Option<&str>,
    body: &str,
) -> Result<CommentOutcome, GitHubError> {
    let path = format!("/repos/{repo}/issues/{number}/comments");
    let comments: Vec<Comment> = gh.get_all(&path, None, Permission::PullRequestsRead, None)?;
    let marked: Vec<&Comment> = comments
        .iter()
        .filter(|c| {
            c.body
                .as_deref()
                .is_some_and(|b| b.lines().any(|l| l.trim() == marker))
        })
        .collect();
    let by = |pred: &dyn Fn(&User) -> bool| -> Vec<&Comment> {
        marked
            .iter()
            .copied()
            .filter(|c| c.user.as_ref().is_some_and(pred))
            .collect()
    };
    let candidates = match author {
        Some(login) => by(&|u| u.login == login),
        None => {
            let bots = by(&|u| u.kind == "Bot");
            if bots.is_empty() {
                marked.clone()
            } else {
                bots
            }
        }
    };
    // Comments come oldest first and ids grow: the newest is the largest id.
    let newest = candidates.iter().max_by_key(|c| c.id);
    match newest {
        Some(c) => {
            let updated: Comment = gh.patch(
                &format!("/repos/{repo}/issues/comments/{}", c.id),
                &json!({ "body": body }),
                Permission::PullRequestsWrite,
            )?;
            Ok(CommentOutcome {
                id: updated.id,
                url: updated.html_url,
                created: false,
                others: candidates
                    .iter()
                    .filter(|o| o.id != c.id)
                    .map(|o| o.id)
                    .collect(),
            })
        }
        None => {
            let created: Comment = gh.post(
                &path,
                &json!({ "body": body }),
                Permission::PullRequestsWrite,
            )?;
            Ok(CommentOutcome {
                id: created.id,
                url: created.html_url,
                created: true,
                others: Vec::new(),
            })
        }
    }
}

/// One check-run annotation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Annotation {
    pub path: String,
    pub start_line: u32,
    pub end_line: u32,
    /// `notice`, `warning` or `failure`.
    pub annotation_level: &'static str,
    pub title: String,
    pub message: String,
}

/// What [`check_run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub id: u64,
    pub url: String,
    /// Requests made (1 create + one PATCH per further 50 annotations).
    pub requests: usize,
}

/// A completed check run to create.
#[derive(Debug, Clone)]
pub struct CheckRequest<'a> {
    pub repo: &'a str,
    pub name: &'a str,
    pub head_sha: &'a str,
    /// `success` or `failure` (the gate's verdict).
    pub conclusion: &'a str,
    pub title: &'a str,
    /// At most 65 535 characters.
    pub summary: &'a str,
    pub annotations: &'a [Annotation],
}

/// Creates the completed check run with the summary and every annotation (50 per request: the
/// create, then PATCHes, which GitHub appends).
pub fn check_run(gh: &GitHub, req: &CheckRequest<'_>) -> Result<CheckOutcome, GitHubError> {
    let CheckRequest {
        repo,
        name,
        head_sha,
        conclusion,
        title,
        summary,
        annotations,
    } = *req;
    #[derive(Deserialize)]
    struct Run {
        id: u64,
        #[serde(default)]
        html_url: String,
    }
    let mut batches = annotations.chunks(ANNOTATIONS_PER_REQUEST);
    let output =
        |batch: &[Annotation]| json!({ "title": title, "summary": summary, "annotations": batch });
    let first = batches.next().unwrap_or(&[]);
    let run: Run = gh.post(
        &format!("/repos/{repo}/check-runs"),
        &json!({
            "name": name,
            "head_sha": head_sha,
            "status": "completed",
            "conclusion": conclusion,
            "output": output(first),
        }),
        Permission::ChecksWrite,
    )?;
    let mut requests = 1;
    for batch in batches {
        let _: serde_json::Value = gh.patch(
            &format!("/repos/{repo}/check-runs/{}", run.id),
            &json!({ "output": output(batch) }),
            Permission::ChecksWrite,
        )?;
        requests += 1;
    }
    Ok(CheckOutcome {
        id: run.id,
        url: run.html_url,
        requests,
    })
}

/// A deployment status to record.
#[derive(Debug, Clone)]
pub struct DeploymentRequest<'a> {
    pub repo: &'a str,
    pub environment: &'a str,
    pub git_ref: &'a str,
    /// `in_progress`, `success`, `failure`, `error`, `queued`, `pending`, `inactive`.
    pub state: &'a str,
    pub environment_url: Option<&'a str>,
    pub log_url: Option<&'a str>,
    /// At most 140 characters (GitHub's limit); longer is cut.
    pub description: &'a str,
    /// Add the status to this deployment instead of finding or creating one.
    pub deployment_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentOutcome {
    pub deployment_id: u64,
    pub created: bool,
    pub status_id: u64,
}

/// States after which a deployment is finished; a new status on the same ref and environment
/// then starts a new deployment.
const FINAL: &[&str] = &["success", "failure", "error", "inactive"];

/// Records `state` for `environment` at `git_ref`: on the deployment given, else on the newest
/// unfinished deployment of that ref and environment, else on a new one.
pub fn deployment_status(
    gh: &GitHub,
    req: &DeploymentRequest<'_>,
) -> Result<DeploymentOutcome, GitHubError> {
    #[derive(Deserialize)]
    struct Deployment {
        id: u64,
    }
    #[derive(Deserialize)]
    struct Status {
        id: u64,
        #[serde(default)]
        state: String,
    }
    let repo = req.repo;
    let mut created = false;
    let id = match req.deployment_id {
        Some(id) => id,
        None => {
            let query = format!(
                "/repos/{repo}/deployments?ref={}&environment={}",
                urlencode(req.git_ref),
                urlencode(req.environment)
            );
            // Newest first; only the first page matters.
            let existing: Vec<Deployment> =
                gh.get_all(&query, None, Permission::DeploymentsWrite, Some(10))?;
            let mut open = None;
            if let Some(d) = existing.first() {
                let statuses: Vec<Status> = gh.get_all(
                    &format!("/repos/{repo}/deployments/{}/statuses?per_page=1", d.id),
                    None,
                    Permission::DeploymentsWrite,
                    Some(1),
                )?;
                let finished = statuses
                    .first()
                    .is_some_and(|s| FINAL.contains(&s.state.as_str()));
                if !finished {
                    open = Some(d.id);
                }
            }
            match open {
                Some(id) => id,
                None => {
                    let d: Deployment = gh.post(
                        &format!("/repos/{repo}/deployments"),
                        &json!({
                            "ref": req.git_ref,
                            "environment": req.environment,
                            "auto_merge": false,
                            "required_contexts": [],
                            "description": cut(req.description, 140),
                        }),
                        Permission::DeploymentsWrite,
                    )?;
                    created = true;
                    d.id
                }
            }
        }
    };
    let mut body = json!({
        "state": req.state,
        "description": cut(req.description, 140),
        "auto_inactive": true,
    });
    if let Some(u) = req.environment_url {
        body["environment_url"] = json!(u);
    }
    if let Some(u) = req.log_url {
        body["log_url"] = json!(u);
    }
    let status: Status = gh.post(
        &format!("/repos/{repo}/deployments/{id}/statuses"),
        &body,
        Permission::DeploymentsWrite,
    )?;
    tracing::debug!(
        deployment = id,
        status = status.id,
        "deployment status {}",
        for_log(req.state)
    );
    Ok(DeploymentOutcome {
        deployment_id: id,
        created,
        status_id: status.id,
    })
}

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
