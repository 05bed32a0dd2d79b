//! Which two commits to compare: from `--base/--head`, or from the event (push, new branch,
//! force-push, pull request, tag push, merge queue, manual runs). Owns the decision and the
//! sentence explaining it; the git work is delegated to [`Git`].

use git2::Oid;

use super::error::ChangesError;
use super::event::{Event, Trigger};
use super::git::{Git, short};

/// What workflow_dispatch / schedule (and other events without commits) compare.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ManualMode {
    /// Every filter is true: a manual run means "do everything".
    #[default]
    Always,
    /// Compare the head with this ref (a tag, `origin/main~1`, a sha).
    Since(String),
}

impl ManualMode {
    pub fn parse(value: &str) -> ManualMode {
        match value.trim() {
            "" | "always" => ManualMode::Always,
            other => ManualMode::Since(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RangeRequest {
    pub base: Option<String>,
    pub head: Option<String>,
    pub event: Option<Event>,
    pub manual: ManualMode,
    /// `GITHUB_SHA`: the head when the payload has none.
    pub github_sha: Option<String>,
}

/// The resolved comparison.
#[derive(Debug, Clone)]
pub struct Range {
    /// `None`: the empty tree (everything at head is new).
    pub base: Option<Oid>,
    pub head: Oid,
    /// A manual run in `always` mode: every filter is forced true.
    pub always: bool,
    /// One sentence: what was compared and why.
    pub reason: String,
    pub warnings: Vec<String>,
}

impl Range {
    fn new(base: Option<Oid>, head: Oid, reason: String) -> Range {
        Range {
            base,
            head,
            always: false,
            reason,
            warnings: Vec::new(),
        }
    }
}

pub fn resolve(git: &mut Git, req: &RangeRequest) -> Result<Range, ChangesError> {
    if req.base.is_some() || req.head.is_some() {
        return explicit(git, req.base.as_deref(), req.head.as_deref());
    }
    let Some(event) = &req.event else {
        return first_parent_of(git, "HEAD", "No event and no --base/--head");
    };
    let head_fallback = req.github_sha.as_deref().unwrap_or("HEAD");
    match &event.trigger {
        Trigger::Push {
            git_ref,
            before,
            after,
            forced,
        } => push(
            git,
            event,
            git_ref,
            before.as_deref(),
            after.as_deref(),
            *forced,
            head_fallback,
        ),
        Trigger::PullRequest {
            number,
            base_sha,
            head_sha,
        } => {
            if let Some(n) = number {
                git.add_refspec(format!("+refs/pull/{n}/head:refs/remotes/pull/{n}/head"));
            }
            let base = git.commit("pull request base", base_sha)?;
            let head = git.commit("pull request head", head_sha)?;
            match git.merge_base(base, head)? {
                Some(mb) => Ok(Range::new(
                    Some(mb),
                    head,
                    format!(
                        "{} #{}: compared the merge-base {} of base {} with head {}.",
                        event.name,
                        number.map_or_else(|| "?".to_string(), |n| n.to_string()),
                        short(mb),
                        short(base),
                        short(head)
                    ),
                )),
                None => {
                    let mut r = Range::new(
                        Some(base),
                        head,
                        format!(
                            "{}: base {} and head {} share no history, so compared them directly.",
                            event.name,
                            short(base),
                            short(head)
                        ),
                    );
                    r.warnings.push(r.reason.clone());
                    Ok(r)
                }
            }
        }
        Trigger::MergeGroup { base_sha, head_sha } => {
            let base = git.commit("merge group base", base_sha)?;
            let head = git.commit("merge group head", head_sha)?;
            Ok(Range::new(
                Some(base),
                head,
                format!(
                    "merge_group: compared the queue's base {} with {}.",
                    short(base),
                    short(head)
                ),
            ))
        }
        Trigger::Manual => {
            let head = git.commit("head", head_fallback)?;
            match &req.manual {
                ManualMode::Always => Ok(Range {
                    always: true,
                    ..Range::new(
                        Some(head),
                        head,
                        format!(
                            "{}: manual runs are configured as `always`, so every filter is true.",
                            event.name
                        ),
                    )
                }),
                ManualMode::Since(spec) => {
                    let base = git.commit("dispatch base", spec)?;
                    Ok(Range::new(
                        Some(base),
                        head,
                        format!(
                            "{}: compared {} ({spec}) with {} as configured.",
                            event.name,
                            short(base),
                            short(head)
                        ),
                    ))
                }
            }
        }
    }
}

fn explicit(git: &mut Git, base: Option<&str>, head: Option<&str>) -> Result<Range, ChangesError> {
    let head_spec = head.unwrap_or("HEAD");
    let Some(base_spec) = base else {
        return first_parent_of(git, head_spec, "No --base given");
    };
    let b = git.commit("--base", base_spec)?;
    let h = git.commit("--head", head_spec)?;
    Ok(Range::new(
        Some(b),
        h,
        format!(
            "Compared {} ({base_spec}) with {} ({head_spec}) as given.",
            short(b),
            short(h)
        ),
    ))
}

/// `head` against its first parent: the change a merge commit brings to its branch.
fn first_parent_of(git: &mut Git, head_spec: &str, why: &str) -> Result<Range, ChangesError> {
    let head = git.commit("head", head_spec)?;
    let merge = if git.is_merge(head) {
        "merge commit "
    } else {
        ""
    };
    Ok(match git.first_parent(head)? {
        Some(p) => Range::new(
            Some(p),
            head,
            format!(
                "{why}: compared {merge}{} ({head_spec}) with its first parent {}.",
                short(head),
                short(p)
            ),
        ),
        None => Range::new(
            None,
            head,
            format!(
                "{why}: {} ({head_spec}) is a root commit, so compared it with the empty tree.",
                short(head)
            ),
        ),
    })
}

fn push(
    git: &mut Git,
    event: &Event,
    git_ref: &str,
    before: Option<&str>,
    after: Option<&str>,
    forced: bool,
    head_fallback: &str,
) -> Result<Range, ChangesError> {
    let Some(after) = after else {
        let head = git.commit("head", head_fallback)?;
        return Ok(Range::new(
            Some(head),
            head,
            format!("push: {git_ref} was deleted, so there is nothing to compare."),
        ));
    };
    let head = git.commit("push `after`", after)?;
    if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        return tag_push(git, tag, head);
    }
    let branch = git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref);
    let Some(before) = before else {
        return new_branch(git, event, branch, head);
    };
    if let Some(b) = git.try_commit(before)? {
        let forced = if forced { " (forced)" } else { "" };
        return Ok(Range::new(
            Some(b),
            head,
            format!(
                "push to {branch}{forced}: compared before {} with after {}.",
                short(b),
                short(head)
            ),
        ));
    }
    // The old tip is gone: a force-push rewrote it away (or it was never fetched).
    let warning = format!(
        "push to {branch}: `before` {} is not in the repository (force-push?); comparing against the merge-base with the default branch instead",
        &before[..before.len().min(7)]
    );
    let mut range = against_default_branch(git, event, branch, head, "force-push")?;
    range.warnings.insert(0, warning);
    Ok(range)
}

/// The first push of a branch: everything since it left the default branch.
fn new_branch(
    git: &mut Git,
    event: &Event,
    branch: &str,
    head: Oid,
) -> Result<Range, ChangesError> {
    if event.default_branch.as_deref() == Some(branch) {
        return Ok(Range::new(
            None,
            head,
            format!(
                "push: first push of the default branch {branch}, so compared {} with the empty tree.",
                short(head)
            ),
        ));
    }
    against_default_branch(git, event, branch, head, "new branch")
}

fn against_default_branch(
    git: &mut Git,
    event: &Event,
    branch: &str,
    head: Oid,
    what: &str,
) -> Result<Range, ChangesError> {
    let default = event.default_branch.as_deref();
    let tip = match default {
        Some(name) => default_branch_tip(git, name)?,
        None => None,
    };
    let Some((tip_ref, tip)) = tip else {
        let mut r = first_parent_of(
            git,
            &head.to_string(),
            &format!("push to {branch} ({what})"),
        )?;
        r.warnings.push(format!(
            "push to {branch}: the default branch {} is not in the repository; compared with the first parent instead",
            default.unwrap_or("(not in the payload)")
        ));
        return Ok(r);
    };
    match git.merge_base(tip, head)? {
        Some(mb) => Ok(Range::new(
            Some(mb),
            head,
            format!(
                "push to {branch} ({what}): compared the merge-base {} with {tip_ref} with {}.",
                short(mb),
                short(head)
            ),
        )),
        None => {
            let mut r = Range::new(
                None,
                head,
                format!(
                    "push to {branch} ({what}): it shares no history with {tip_ref}, so compared {} with the empty tree.",
                    short(head)
                ),
            );
            r.warnings.push(r.reason.clone());
            Ok(r)
        }
    }
}

fn default_branch_tip(git: &mut Git, name: &str) -> Result<Option<(String, Oid)>, ChangesError> {
    let remote = git.remote_name();
    let mut candidates = Vec::new();
    if let Some(r) = &remote {
        candidates.push(format!("refs/remotes/{r}/{name}"));
    }
    candidates.push(format!("refs/heads/{name}"));
    for _ in 0..2 {
        for c in &candidates {
            if let Some(oid) = git.try_commit_local(c) {
                return Ok(Some((c.clone(), oid)));
            }
        }
        // A checkout of one branch has no ref for the default branch: fetch it once.
        if remote.is_none() || !git.fetch_once(&format!("the default branch {name}"))? {
            break;
        }
    }
    Ok(None)
}

/// A tag push compares against the previous tag of the same pattern: digits runs are the
/// version (`v1.10.0` after `v1.9.3`), the rest must match exactly (`v#.#.#`).
fn tag_push(git: &mut Git, tag: &str, head: Oid) -> Result<Range, ChangesError> {
    git.ensure_full_history(&format!("the tags before {tag}"))?;
    let shape = tag_shape(tag);
    let current = tag_numbers(tag);
    let previous = git
        .tags()?
        .into_iter()
        .filter(|(name, oid)| name != tag && tag_shape(name) == shape && *oid != head)
        .filter(|(name, _)| tag_numbers(name) < current)
        .max_by(|(a, _), (b, _)| tag_numbers(a).cmp(&tag_numbers(b)));
    Ok(match previous {
        Some((name, oid)) => Range::new(
            Some(oid),
            head,
            format!(
                "tag push {tag}: compared the previous tag {name} ({}) with {}.",
                short(oid),
                short(head)
            ),
        ),
        None => Range::new(
            None,
            head,
            format!(
                "tag push {tag}: no earlier tag matches {shape}, so compared {} with the empty tree.",
                short(head)
            ),
        ),
    })
}

/// `v1.2.3` → `v#.#.#`.
fn tag_shape(tag: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in tag.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

fn tag_numbers(tag: &str) -> Vec<u128> {
    tag.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u128::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_shapes_and_order() {
        assert_eq!(tag_shape("v1.10.0"), "v#.#.#");
        assert_eq!(tag_shape("model-2024-05"), "model-#-#");
        assert_ne!(tag_shape("v1.2.3-rc1"), tag_shape("v1.2.3"));
        assert!(tag_numbers("v1.9.3") < tag_numbers("v1.10.0"));
    }

    #[test]
    fn manual_mode_values() {
        assert_eq!(ManualMode::parse("always"), ManualMode::Always);
        assert_eq!(ManualMode::parse(""), ManualMode::Always);
        assert_eq!(
            ManualMode::parse("v1.0.0"),
            ManualMode::Since("v1.0.0".into())
        );
    }
}
