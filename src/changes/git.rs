//! Every git2 call of change detection: opening the repository, resolving refs, merge-bases,
//! first parents, tree diffs with rename detection, reading a file at a commit, and filling in
//! missing history of shallow clones by fetching from the configured remote.
//!
//! Shallow clones are handled here and nowhere else: an operation that needs a commit outside
//! the clone's history (a missing object, or a commit listed in `.git/shallow` whose parents
//! were cut off) fetches the full history of the remote's branches once and retries. Without a
//! remote it fails with the one-line `fetch-depth: 0` hint.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use git2::{Delta, DiffFindOptions, DiffOptions, ErrorCode, Oid, Repository};

use super::error::ChangesError;
use super::{ChangeKind, FileChange};
use crate::untrusted::redact;
use crate::untrusted::text::for_log;

/// The id of git's empty tree, what a comparison "against nothing" uses as its base.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// git's `diff.renameLimit` default since 2.x; libgit2's own default (200) is lower, and the
/// change list must equal `git diff --name-only`.
const GIT_RENAME_LIMIT: usize = 1000;

/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`.
const DEPTH_UNSHALLOW: i32 = i32::MAX;

pub struct Git {
    repo: Repository,
    shallow_roots: HashSet<Oid>,
    fetched: bool,
    /// Refspecs worth fetching besides the remote's branches (a pull request's head).
    extra_refspecs: Vec<String>,
    /// What was fetched, for the reasons.
    pub notes: Vec<String>,
}

impl Git {
    pub fn open(path: &Path) -> Result<Git, ChangesError> {
        // git itself does not re-hash every object it reads; libgit2 does by default, which
        // costs a fifth of a large diff. Object integrity is `git fsck`'s job.
        git2::opts::strict_hash_verification(false);
        let repo = Repository::discover(path).map_err(|e| ChangesError::OpenRepo {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let shallow_roots = read_shallow_roots(&repo);
        Ok(Git {
            repo,
            shallow_roots,
            fetched: false,
            extra_refspecs: Vec::new(),
            notes: Vec::new(),
        })
    }

    pub fn workdir(&self) -> Option<PathBuf> {
        self.repo.workdir().map(Path::to_path_buf)
    }

    pub fn is_shallow(&self) -> bool {
        !self.shallow_roots.is_empty() || self.repo.is_shallow()
    }

    pub fn add_refspec(&mut self, refspec: String) {
        self.extra_refspecs.push(refspec);
    }

    /// The commit `spec` names (a sha, branch, tag, `HEAD~2`, …), fetching history first when a
    /// shallow clone lacks it. `Ok(None)` when it does not exist even then.
    pub fn try_commit(&mut self, spec: &str) -> Result<Option<Oid>, ChangesError> {
        loop {
            match self.peel(spec) {
                Ok(oid) => return Ok(Some(oid)),
                Err(e) if e.code() == ErrorCode::NotFound || e.code() == ErrorCode::InvalidSpec => {
                    if self.is_shallow() && !self.fetched {
                        self.fetch_history(&format!("commit {spec}"))?;
                        continue;
                    }
                    return Ok(None);
                }
                Err(e) => {
                    return Err(ChangesError::BadRef {
                        what: "ref",
                        spec: spec.to_string(),
                        message: e.message().to_string(),
                        hint: "pass a commit sha, branch or tag".into(),
                    });
                }
            }
        }
    }

    /// Like [`Git::try_commit`], but a missing commit is an error naming `what` it was for.
    pub fn commit(&mut self, what: &'static str, spec: &str) -> Result<Oid, ChangesError> {
        self.try_commit(spec)?.ok_or_else(|| ChangesError::BadRef {
            what,
            spec: spec.to_string(),
            message: "no such commit in this repository".into(),
            hint: if self.is_shallow() {
                "set `fetch-depth: 0` on actions/checkout".into()
            } else {
                "check the sha/ref, or fetch it (`git fetch origin <ref>`)".into()
            },
        })
    }

    /// The commit `spec` names, without fetching anything.
    pub fn try_commit_local(&self, spec: &str) -> Option<Oid> {
        self.peel(spec).ok()
    }

    /// Fetches from the remote once (full history when shallow, new refs otherwise). `Ok(false)`
    /// when it already did or there is no remote; a failed fetch only matters when shallow.
    pub fn fetch_once(&mut self, what: &str) -> Result<bool, ChangesError> {
        if self.fetched || self.remote_name().is_none() {
            return Ok(false);
        }
        match self.fetch_history(what) {
            Ok(()) => Ok(true),
            Err(e) if self.is_shallow() => Err(e),
            Err(e) => {
                // The error's URL is redacted already; names in it may still hold newlines.
                tracing::warn!("{}", for_log(&e.to_string()));
                Ok(false)
            }
        }
    }

    fn peel(&self, spec: &str) -> Result<Oid, git2::Error> {
        let object = self.repo.revparse_single(spec)?;
        Ok(object.peel_to_commit()?.id())
    }

    /// The merge-base of two commits; `None` for unrelated histories.
    pub fn merge_base(&mut self, a: Oid, b: Oid) -> Result<Option<Oid>, ChangesError> {
        loop {
            match self.repo.merge_base(a, b) {
                Ok(oid) => return Ok(Some(oid)),
                Err(e) if e.code() == ErrorCode::NotFound => {
                    if self.is_shallow() && !self.fetched {
                        self.fetch_history(&format!(
                            "the merge-base of {} and {}",
                            short(a),
                            short(b)
                        ))?;
                        continue;
                    }
                    if self.is_shallow() {
                        return Err(ChangesError::StillShallow {
                            what: format!("the merge-base of {} and {}", short(a), short(b)),
                            remote: self.remote_name().unwrap_or_default(),
                        });
                    }
                    return Ok(None);
                }
                Err(e) => return Err(ChangesError::git("merge-base", e)),
            }
        }
    }

    /// The first parent of `commit` (merge commits compare against it); `None` for a root.
    pub fn first_parent(&mut self, commit: Oid) -> Result<Option<Oid>, ChangesError> {
        if self.shallow_roots.contains(&commit) {
            self.fetch_history(&format!("the parent of {}", short(commit)))?;
            if self.shallow_roots.contains(&commit) {
                return Err(ChangesError::StillShallow {
                    what: format!("the parent of {}", short(commit)),
                    remote: self.remote_name().unwrap_or_default(),
                });
            }
        }
        let c = self
            .repo
            .find_commit(commit)
            .map_err(|e| ChangesError::git(format!("read commit {commit}"), e))?;
        Ok(c.parent_id(0).ok())
    }

    pub fn is_merge(&self, commit: Oid) -> bool {
        self.repo
            .find_commit(commit)
            .is_ok_and(|c| c.parent_count() > 1)
    }

    /// Tag names with the commits they point to (annotated tags peeled).
    pub fn tags(&mut self) -> Result<Vec<(String, Oid)>, ChangesError> {
        let names = self
            .repo
            .tag_names(None)
            .map_err(|e| ChangesError::git("list tags", e))?;
        let mut out = Vec::new();
        for name in names.iter().flatten() {
            if let Ok(oid) = self.peel(&format!("refs/tags/{name}")) {
                out.push((name.to_string(), oid));
            }
        }
        Ok(out)
    }

    /// Makes sure the clone is complete before an operation that cannot detect truncation by
    /// itself (listing tags): fetches when shallow.
    pub fn ensure_full_history(&mut self, what: &str) -> Result<(), ChangesError> {
        if self.is_shallow() && !self.fetched {
            self.fetch_history(what)?;
        }
        Ok(())
    }

    /// The credentials in the URLs of the repository's remotes (`https://x-access-token:…@`),
    /// for the caller to mask before a fetch could print them.
    pub fn remote_secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(remotes) = self.repo.remotes() else {
            return out;
        };
        for name in remotes.iter().flatten() {
            let Ok(remote) = self.repo.find_remote(name) else {
                continue;
            };
            for url in [remote.url(), remote.pushurl()].into_iter().flatten() {
                out.extend(redact::userinfo_secrets(url));
            }
        }
        out.dedup();
        out
    }

    pub fn remote_name(&self) -> Option<String> {
        let remotes = self.repo.remotes().ok()?;
        let names: Vec<&str> = remotes.iter().flatten().collect();
        names
            .iter()
            .find(|n| **n == "origin")
            .or_else(|| names.first())
            .map(|s| s.to_string())
    }

    /// Fetches the full history of the remote's branches and tags (libgit2 "unshallow").
    fn fetch_history(&mut self, what: &str) -> Result<(), ChangesError> {
        if self.fetched {
            return Ok(());
        }
        self.fetched = true;
        let Some(name) = self.remote_name() else {
            return Err(ChangesError::ShallowNoRemote {
                what: what.to_string(),
            });
        };
        // The URL may carry a token (`https://x-access-token:…@`), and libgit2 and reqwest quote
        // URLs in their messages: neither reaches an error or a log line unredacted.
        let failed = |url: &str, message: String| ChangesError::FetchFailed {
            what: what.to_string(),
            remote: name.clone(),
            url: redact::url(url).into_owned(),
            message: redact::text(&message).into_owned(),
        };
        let mut remote = self
            .repo
            .find_remote(&name)
            .map_err(|e| failed("?", e.message().to_string()))?;
        let url = remote.url().unwrap_or("?").to_string();
        let mut refspecs: Vec<String> = remote
            .fetch_refspecs()
            .map(|a| a.iter().flatten().map(str::to_string).collect())
            .unwrap_or_default();
        if refspecs.is_empty() {
            refspecs.push(format!("+refs/heads/*:refs/remotes/{name}/*"));
        }
        refspecs.push("+refs/tags/*:refs/tags/*".to_string());
        let headers = extra_headers(&self.repo, &url);
        if url.starts_with("http://") || url.starts_with("https://") {
            super::http::register().map_err(|message| failed(&url, message))?;
            super::http::set_headers(headers.clone());
        }
        let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        // Local transports refuse any depth, so a complete clone fetches plainly.
        let depth = if self.is_shallow() {
            DEPTH_UNSHALLOW
        } else {
            0
        };
        let mut attempt = |specs: &[String]| {
            let mut opts = git2::FetchOptions::new();
            opts.depth(depth)
                .download_tags(git2::AutotagOption::None)
                .custom_headers(&header_refs);
            remote.fetch(
                specs,
                Some(&mut opts),
                Some("wms detect-changes: unshallow"),
            )
        };
        let shown = redact::url(&url).into_owned();
        tracing::info!(
            remote = %for_log(&name),
            url = %for_log(&shown),
            "shallow clone: fetching history for {}",
            for_log(what)
        );
        let mut with_extra = refspecs.clone();
        with_extra.extend(self.extra_refspecs.iter().cloned());
        let result = match attempt(&with_extra) {
            Ok(()) => Ok(()),
            // A remote without the extra refs (not GitHub) must not block the branches.
            Err(_) if with_extra.len() > refspecs.len() => attempt(&refspecs),
            Err(e) => Err(e),
        };
        result.map_err(|e| failed(&url, e.message().to_string()))?;
        drop(remote);
        // libgit2 caches the shallow grafts; a fresh handle sees the completed history.
        let path = self.repo.path().to_path_buf();
        self.repo = Repository::open(&path).map_err(|e| ChangesError::OpenRepo {
            path,
            message: e.message().to_string(),
        })?;
        self.shallow_roots = read_shallow_roots(&self.repo);
        self.notes.push(if depth == 0 {
            format!("wms fetched {shown} to find {what}.")
        } else {
            format!("The clone was shallow, so wms fetched the history of {shown} to find {what}.")
        });
        Ok(())
    }

    /// The changed files between `base` (`None`: the empty tree) and `head`, like
    /// `git diff --name-only -M base head`, sorted by path.
    ///
    /// Fast path first: a walk that skips every subtree whose id is unchanged, as git's own
    /// tree diff does (libgit2's iterates every entry of both trees, 6× slower than git on 50k
    /// files). Renames can only exist when the change both adds and deletes files; then
    /// libgit2's rename detection (`find_similar`, git's `-M` rules) decides instead.
    pub fn diff(&self, base: Option<Oid>, head: Oid) -> Result<Vec<FileChange>, ChangesError> {
        let old = base.map(|b| self.tree_of(b)).transpose()?;
        let new = self.tree_of(head)?;
        let mut out = Vec::new();
        self.walk(old.as_ref(), Some(&new), "", &mut out)?;
        let adds = out.iter().any(|c| c.kind == ChangeKind::Added);
        let deletes = out.iter().any(|c| c.kind == ChangeKind::Deleted);
        if adds && deletes {
            out = self.diff_with_renames(old.as_ref(), &new)?;
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn tree_of(&self, commit: Oid) -> Result<git2::Tree<'_>, ChangesError> {
        self.repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(|e| ChangesError::git(format!("read the tree of {commit}"), e))
    }

    fn find_tree(&self, oid: Oid) -> Result<git2::Tree<'_>, ChangesError> {
        self.repo
            .find_tree(oid)
            .map_err(|e| ChangesError::git(format!("read tree {oid}"), e))
    }

    /// Adds to `out` every file that differs between two trees (either may be absent).
    fn walk(
        &self,
        old: Option<&git2::Tree<'_>>,
        new: Option<&git2::Tree<'_>>,
        prefix: &str,
        out: &mut Vec<FileChange>,
    ) -> Result<(), ChangesError> {
        let entries = |t: Option<&git2::Tree<'_>>| -> Vec<Entry> {
            let mut v: Vec<Entry> = t
                .map(|t| {
                    t.iter()
                        .map(|e| Entry {
                            name: e.name_bytes().to_vec(),
                            id: e.id(),
                            mode: e.filemode_raw(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        let (olds, news) = (entries(old), entries(new));
        let (mut i, mut j) = (0, 0);
        while i < olds.len() || j < news.len() {
            let order = match (olds.get(i), news.get(j)) {
                (Some(o), Some(n)) => o.name.cmp(&n.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (o, n) = match order {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (Some(&olds[i - 1]), None)
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (None, Some(&news[j - 1]))
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (Some(&olds[i - 1]), Some(&news[j - 1]))
                }
            };
            let name = String::from_utf8_lossy(&o.or(n).expect("one side").name).into_owned();
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            match (o, n) {
                (Some(o), Some(n)) if o.id == n.id && o.mode == n.mode => {}
                (Some(o), Some(n)) if o.is_tree() && n.is_tree() => {
                    let (ot, nt) = (self.find_tree(o.id)?, self.find_tree(n.id)?);
                    self.walk(Some(&ot), Some(&nt), &path, out)?;
                }
                (Some(o), Some(n)) if !o.is_tree() && !n.is_tree() => out.push(FileChange {
                    path,
                    old_path: None,
                    kind: ChangeKind::Modified,
                }),
                // A file became a directory or back: git lists it as deletions plus additions.
                (o, n) => {
                    for (side, kind) in [(o, ChangeKind::Deleted), (n, ChangeKind::Added)] {
                        let Some(e) = side else { continue };
                        if e.is_tree() {
                            let t = self.find_tree(e.id)?;
                            let (old_t, new_t) = match kind {
                                ChangeKind::Deleted => (Some(&t), None),
                                _ => (None, Some(&t)),
                            };
                            self.walk(old_t, new_t, &path, out)?;
                        } else {
                            out.push(FileChange {
                                path: path.clone(),
                                old_path: None,
                                kind,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// libgit2's tree diff plus `find_similar`: the rename pairing `git diff -M` makes.
    fn diff_with_renames(
        &self,
        old: Option<&git2::Tree<'_>>,
        new: &git2::Tree<'_>,
    ) -> Result<Vec<FileChange>, ChangesError> {
        let mut opts = DiffOptions::new();
        // Names only: never load blobs to sniff binary-ness, and report a file↔symlink change
        // as one modification (as `git diff --name-only` lists it once).
        opts.skip_binary_check(true).include_typechange(true);
        let mut diff = self
            .repo
            .diff_tree_to_tree(old, Some(new), Some(&mut opts))
            .map_err(|e| ChangesError::git("diff trees", e))?;
        let limit = self
            .repo
            .config()
            .and_then(|c| c.get_i64("diff.renameLimit"))
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(GIT_RENAME_LIMIT);
        let mut find = DiffFindOptions::new();
        find.renames(true).rename_limit(limit);
        diff.find_similar(Some(&mut find))
            .map_err(|e| ChangesError::git("detect renames", e))?;
        let mut out = Vec::with_capacity(diff.deltas().len());
        for delta in diff.deltas() {
            let path_of = |f: git2::DiffFile<'_>| {
                f.path_bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default()
            };
            let (kind, path, old_path) = match delta.status() {
                Delta::Added => (ChangeKind::Added, path_of(delta.new_file()), None),
                Delta::Deleted => (ChangeKind::Deleted, path_of(delta.old_file()), None),
                Delta::Renamed => (
                    ChangeKind::Renamed,
                    path_of(delta.new_file()),
                    Some(path_of(delta.old_file())),
                ),
                Delta::Copied => (
                    ChangeKind::Copied,
                    path_of(delta.new_file()),
                    Some(path_of(delta.old_file())),
                ),
                Delta::Unmodified | Delta::Ignored | Delta::Untracked => continue,
                _ => (ChangeKind::Modified, path_of(delta.new_file()), None),
            };
            out.push(FileChange {
                path,
                old_path,
                kind,
            });
        }
        Ok(out)
    }

    /// The text of `path` at `commit` (`None`: absent, or not a blob).
    pub fn read_at(&self, commit: Option<Oid>, path: &str) -> Option<String> {
        let commit = self.repo.find_commit(commit?).ok()?;
        let entry = commit.tree().ok()?.get_path(Path::new(path)).ok()?;
        let blob = entry.to_object(&self.repo).ok()?.peel_to_blob().ok()?;
        Some(String::from_utf8_lossy(blob.content()).into_owned())
    }
}

/// One tree entry, owned so both sides can be merged by name.
struct Entry {
    name: Vec<u8>,
    id: Oid,
    mode: i32,
}

impl Entry {
    fn is_tree(&self) -> bool {
        self.mode == 0o040000
    }
}

/// The commits `.git/shallow` lists: their parents are not in the clone.
fn read_shallow_roots(repo: &Repository) -> HashSet<Oid> {
    let Ok(text) = fs_err::read_to_string(repo.path().join("shallow")) else {
        return HashSet::new();
    };
    text.lines()
        .filter_map(|l| Oid::from_str(l.trim()).ok())
        .collect()
}

/// `http.<url>.extraheader` values that apply to `url`: actions/checkout authenticates this way
/// (`AUTHORIZATION: basic …`), and libgit2 does not read that setting itself.
fn extra_headers(repo: &Repository, url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(config) = repo.config() else {
        return out;
    };
    let Ok(mut entries) = config.entries(Some("http\\..*extraheader")) else {
        return out;
    };
    while let Some(Ok(entry)) = entries.next() {
        let (Some(name), Some(value)) = (entry.name(), entry.value()) else {
            continue;
        };
        let scope = name
            .strip_prefix("http.")
            .and_then(|n| {
                n.strip_suffix(".extraheader")
                    .or_else(|| n.strip_suffix(".extraHeader"))
            })
            .unwrap_or("");
        if (scope.is_empty() || scope.eq_ignore_ascii_case("extraheader") || url.starts_with(scope))
            && !value.is_empty()
        {
            out.push(value.to_string());
        }
    }
    out
}

pub fn short(oid: Oid) -> String {
    oid.to_string()[..7].to_string()
}
