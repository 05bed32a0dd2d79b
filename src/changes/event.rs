//! The GitHub event that started the workflow, reduced to what choosing commits needs. Reads
//! the payload defensively (every field optional): a payload of the wrong shape becomes a
//! clear error or a documented fallback, never a panic.
//!
//! Field names are those of GitHub's webhook payloads: push `ref`, `before`, `after`,
//! `created`, `deleted`, `forced`, `repository.default_branch`; pull_request(_target)
//! `pull_request.{number, base.sha, head.sha}`; merge_group `merge_group.{base_sha, head_sha}`.

use std::path::Path;

use serde::Deserialize;

use super::error::ChangesError;

/// What the event asks to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Push {
        git_ref: String,
        /// `None` when all zeros (a new branch or tag) or absent.
        before: Option<String>,
        /// `None` when all zeros (a deleted branch) or absent.
        after: Option<String>,
        forced: bool,
    },
    PullRequest {
        number: Option<u64>,
        base_sha: String,
        head_sha: String,
    },
    MergeGroup {
        base_sha: String,
        head_sha: String,
    },
    /// workflow_dispatch, schedule and every other event: no commit range in the payload.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub default_branch: Option<String>,
    pub trigger: Trigger,
}

#[derive(Debug, Default, Deserialize)]
struct Payload {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    before: Option<String>,
    after: Option<String>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    forced: bool,
    number: Option<u64>,
    repository: Option<Repository>,
    pull_request: Option<PullRequest>,
    merge_group: Option<MergeGroup>,
}

#[derive(Debug, Default, Deserialize)]
struct Repository {
    default_branch: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PullRequest {
    number: Option<u64>,
    base: Option<Sha>,
    head: Option<Sha>,
}

#[derive(Debug, Default, Deserialize)]
struct Sha {
    sha: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct MergeGroup {
    base_sha: Option<String>,
    head_sha: Option<String>,
}

impl Event {
    /// Reads the payload at `path` for the event `name`.
    pub fn load(name: &str, path: Option<&Path>) -> Result<Event, ChangesError> {
        let text = match path {
            Some(p) => fs_err::read_to_string(p).map_err(|e| ChangesError::Event {
                path: p.to_path_buf(),
                message: e.to_string(),
                hint: "GITHUB_EVENT_PATH must name the runner's event JSON; unset GITHUB_EVENT_NAME to run locally",
            })?,
            None if is_manual(name) => "{}".to_string(),
            None => {
                return Err(ChangesError::Event {
                    path: "$GITHUB_EVENT_PATH".into(),
                    message: format!("GITHUB_EVENT_NAME is {name:?} but GITHUB_EVENT_PATH is not set"),
                    hint: "set both (the runner does), or pass --base/--head",
                });
            }
        };
        Event::parse(name, &text).map_err(|message| ChangesError::Event {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            message,
            hint: "check that GITHUB_EVENT_NAME matches the payload, or pass --base/--head",
        })
    }

    pub fn parse(name: &str, json: &str) -> Result<Event, String> {
        let payload: Payload =
            serde_json::from_str(json).map_err(|e| format!("not a GitHub event payload: {e}"))?;
        let default_branch = payload
            .repository
            .as_ref()
            .and_then(|r| r.default_branch.clone())
            .filter(|b| !b.is_empty());
        let trigger = match name {
            "push" => Trigger::Push {
                git_ref: payload.git_ref.clone().unwrap_or_default(),
                before: payload.before.clone().filter(|s| !is_zero_sha(s)),
                after: payload
                    .after
                    .clone()
                    .filter(|s| !is_zero_sha(s) && !payload.deleted),
                forced: payload.forced,
            },
            "pull_request" | "pull_request_target" => {
                let pr = payload.pull_request.as_ref().ok_or_else(|| {
                    format!("a {name} event without `pull_request` in its payload")
                })?;
                let sha = |side: &Option<Sha>, what: &str| {
                    side.as_ref()
                        .and_then(|s| s.sha.clone())
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| format!("the payload lacks pull_request.{what}.sha"))
                };
                Trigger::PullRequest {
                    number: pr.number.or(payload.number),
                    base_sha: sha(&pr.base, "base")?,
                    head_sha: sha(&pr.head, "head")?,
                }
            }
            "merge_group" => {
                let mg = payload
                    .merge_group
                    .as_ref()
                    .ok_or("a merge_group event without `merge_group` in its payload")?;
                match (&mg.base_sha, &mg.head_sha) {
                    (Some(b), Some(h)) => Trigger::MergeGroup {
                        base_sha: b.clone(),
                        head_sha: h.clone(),
                    },
                    _ => return Err("the payload lacks merge_group.base_sha/head_sha".into()),
                }
            }
            _ => Trigger::Manual,
        };
        Ok(Event {
            name: name.to_string(),
            default_branch,
            trigger,
        })
    }
}

fn is_manual(name: &str) -> bool {
    !matches!(
        name,
        "push" | "pull_request" | "pull_request_target" | "merge_group"
    )
}

/// GitHub writes 40 (or 64) zeros for "no commit" (a new or deleted ref).
pub fn is_zero_sha(s: &str) -> bool {
    s.is_empty() || s.chars().all(|c| c == '0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn push_payloads() {
        let json = format!(
            r#"{{"ref":"refs/heads/feature","before":"{ZERO}","after":"abc","forced":false,"repository":{{"default_branch":"main"}}}}"#
        );
        let e = Event::parse("push", &json).unwrap();
        assert_eq!(e.default_branch.as_deref(), Some("main"));
        assert_eq!(
            e.trigger,
            Trigger::Push {
                git_ref: "refs/heads/feature".into(),
                before: None,
                after: Some("abc".into()),
                forced: false
            }
        );
        let deleted =
            format!(r#"{{"ref":"refs/heads/x","before":"abc","after":"{ZERO}","deleted":true}}"#);
        let e = Event::parse("push", &deleted).unwrap();
        assert!(matches!(e.trigger, Trigger::Push { after: None, .. }));
    }

    #[test]
    fn pull_request_and_merge_group_payloads() {
        let json = r#"{"number":7,"pull_request":{"base":{"sha":"b1"},"head":{"sha":"h1"}}}"#;
        let e = Event::parse("pull_request_target", json).unwrap();
        assert_eq!(
            e.trigger,
            Trigger::PullRequest {
                number: Some(7),
                base_sha: "b1".into(),
                head_sha: "h1".into()
            }
        );
        let mg = r#"{"merge_group":{"base_sha":"b","head_sha":"h"}}"#;
        assert!(matches!(
            Event::parse("merge_group", mg).unwrap().trigger,
            Trigger::MergeGroup { .. }
        ));
        assert_eq!(
            Event::parse("schedule", "{}").unwrap().trigger,
            Trigger::Manual
        );
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        for (name, json, needle) in [
            ("push", "[1,2]", "not a GitHub event payload"),
            ("push", "not json", "not a GitHub event payload"),
            ("push", r#"{"before": 5}"#, "not a GitHub event payload"),
            ("pull_request", "{}", "without `pull_request`"),
            (
                "pull_request",
                r#"{"pull_request":{"base":{}}}"#,
                "pull_request.base.sha",
            ),
            (
                "pull_request",
                r#"{"pull_request":null}"#,
                "without `pull_request`",
            ),
            ("merge_group", r#"{"merge_group":{}}"#, "base_sha"),
        ] {
            let err = Event::parse(name, json).unwrap_err();
            assert!(err.contains(needle), "{name} {json}: {err}");
        }
        // Unknown fields and odd-but-valid shapes are fine.
        let e = Event::parse(
            "push",
            r#"{"commits":[],"repository":{"default_branch":null}}"#,
        );
        assert!(e.unwrap().default_branch.is_none());
    }

    #[test]
    fn missing_payload_file_names_the_path() {
        let e = Event::load("push", Some(Path::new("/nonexistent/event.json"))).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("/nonexistent/event.json") && s.contains("hint:"),
            "{s}"
        );
        assert!(Event::load("workflow_dispatch", None).is_ok());
        assert!(Event::load("push", None).is_err());
    }
}
