//! DVC 3.x compatibility: the formats (`.dvc` files, `dvc.lock`, `.dir` manifests, the cache
//! layout, `.dvc/config`) and data sync against an S3 remote, so a repository versioned with
//! `dvc` can be added to, pushed and pulled by `wms data` and the other way round (DESIGN §8).
//!
//! [`add`] hashes a workspace path into the cache and writes its `.dvc` file; [`sync`] moves
//! objects between the cache and the remote and checks files out. This module reads and writes
//! DVC's files only; it does not run pipelines (`dvc repro`) and keeps no state database: a
//! file already in the workspace is trusted only after its md5 is checked.
//!
//! Everything a repository commits is untrusted input (docs/SECURITY.md): an output's `path:`, a
//! manifest's `relpath`, the cache itself (objects can be committed under `.dvc/cache/`), the
//! `endpointurl` of `.dvc/config`. Each becomes a filesystem path only through
//! [`crate::untrusted::path`], and a remote endpoint only through [`trust`].

pub mod add;
pub mod cache;
pub mod config;
pub mod dvcfile;
pub mod remote;
pub mod sync;
pub mod trust;

use std::path::{Path, PathBuf};

use cache::{Cache, ObjectId};
use dvcfile::Out;
use trust::EndpointOrigin;

use crate::env_vars::{WMS_DVC_ALLOW_HTTP, WMS_DVC_ENDPOINT_URL, WMS_DVC_TRUST_ENDPOINT};
use crate::untrusted::path::{PathError, check_relative, existing_inside};
use crate::untrusted::redact;
use crate::untrusted::text::for_log;

/// Errors from DVC formats and data sync; each names the file, key or URL involved.
#[derive(Debug, thiserror::Error)]
pub enum DvcError {
    #[error(
        "no DVC repository at or above {start}; hint: run `dvc init` (or `git init && dvc init`) first"
    )]
    NotARepo { start: PathBuf },
    /// A file-system call whose error comes from `fs_err`: that message names the call and the
    /// path, so this one says only what wms was doing (the cause prints once, see `crate::exit`).
    #[error("cannot {what}; hint: check that the path exists and is readable and writable")]
    Fs {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An I/O failure whose cause does not name the path (an open file, a path made absolute,
    /// a stream), so this message does.
    #[error("cannot {what} {path}; hint: check that the path exists and is readable and writable")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} links back to a directory above it (a loop); hint: remove the link")]
    LinkLoop { path: PathBuf },
    #[error(transparent)]
    Write(#[from] crate::fsutil::WriteError),
    #[error("{path}:{line}: {message}; hint: fix the line or recreate it with `dvc remote add`")]
    Config {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{file}: [cache] dir = {} is not supported (wms keeps the cache in .dvc/cache); hint: remove it (`dvc cache dir --unset`) or use dvc itself for this repository",
        for_log(.dir)
    )]
    CacheDir { file: PathBuf, dir: String },
    #[error(
        "{path}: no default remote; hint: `dvc remote add -d NAME s3://BUCKET/PREFIX` or pass --remote"
    )]
    NoRemote { path: PathBuf },
    #[error(
        "{path}: no remote named {name:?} with a `url`; hint: `dvc remote list` shows the configured ones"
    )]
    UnknownRemote { path: PathBuf, name: String },
    #[error(
        "remote {}: only s3:// remotes are supported; hint: use `dvc push`/`dvc pull` for other storage",
        for_log(&redact::url(.url))
    )]
    UnsupportedRemote { url: String },
    #[error("{path}: {message}; hint: restore it from git or re-run `dvc add`")]
    Metafile { path: PathBuf, message: String },
    #[error(
        "{path} is not tracked by DVC; hint: pass a `.dvc` file or a path that has one (`wms data add PATH` first)"
    )]
    NotTracked { path: PathBuf },
    #[error(
        "{path} is outside the DVC repository at {root}; hint: add paths inside the repository"
    )]
    OutsideRepo { path: PathBuf, root: PathBuf },
    #[error(
        "{}: object {path} is missing from the local cache; hint: run `wms data add` (or `wms data pull`) first",
        for_log(.name)
    )]
    NotInCache { name: String, path: PathBuf },
    #[error(
        "{}: {}; hint: check the remote's URL, endpoint and AWS credentials",
        for_log(.url), for_log(&redact::text(.message))
    )]
    Remote { url: String, message: String },
    #[error(
        "{}: {} is not in the remote; hint: push it from a clone that has it",
        for_log(.name), for_log(.url)
    )]
    MissingInRemote { name: String, url: String },
    #[error(
        "{}: corrupted object {} (md5 {actual}, expected {expected}); not written; hint: re-push it from a clone with a good copy",
        for_log(.name), for_log(.url)
    )]
    Corrupt {
        name: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: a directory is in the way of a tracked file; hint: move it away")]
    InTheWay { path: PathBuf },
    #[error(
        "{op} interrupted after starting {after} download(s) (WMS_DATA_PULL_STOP_AFTER); finished objects stay in the cache; hint: run it again to resume"
    )]
    Interrupted { op: &'static str, after: usize },
    #[error("{op}: {failed} of {total} object(s) failed: {details}")]
    Incomplete {
        op: &'static str,
        failed: usize,
        total: usize,
        details: String,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// A path the repository supplied (an output's `path:`, a manifest's `relpath`) that the
    /// path rule refused; the source says why and what to do.
    #[error("{file}: {what}")]
    UnsafePath {
        file: PathBuf,
        what: String,
        #[source]
        source: PathError,
    },
    #[error(
        "{path} resolves to {real}, inside the repository's .git or .dvc; hint: wms does not add repository metadata (it can hold credentials), copy the file out of there instead"
    )]
    InRepoMetadata { path: PathBuf, real: PathBuf },
    /// A file to read whose real location is outside the repository, or a cache entry behind a
    /// link; the message names the path.
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(
        "{file}: remote `{}` sets endpointurl = {}, and an endpoint chosen by the repository would receive requests signed with your AWS credentials; hint: set {WMS_DVC_TRUST_ENDPOINT}=1 (or pass --trust-endpoint) if you trust this repository's DVC config, or set {WMS_DVC_ENDPOINT_URL} (--endpoint-url) to the endpoint yourself",
        for_log(.remote), for_log(&redact::url(.url))
    )]
    UntrustedEndpoint {
        file: PathBuf,
        remote: String,
        url: String,
    },
    #[error(
        "endpoint {} ({origin}) is plain HTTP to a host that is not loopback: the signed requests and the session token would cross the network unencrypted; hint: use https://, or set {WMS_DVC_ALLOW_HTTP}=1 (or pass --allow-http) if the network in between is private",
        for_log(&redact::url(.url))
    )]
    PlainHttpEndpoint { url: String, origin: EndpointOrigin },
    #[error(
        "endpoint {} ({origin}) cannot be used: {message}; hint: give an https:// URL, e.g. https://minio.example.com:9000",
        for_log(&redact::url(.url))
    )]
    BadEndpoint {
        url: String,
        origin: EndpointOrigin,
        message: String,
    },
}

/// A DVC repository: the directory holding `.dvc/`.
#[derive(Debug, Clone)]
pub struct Repo {
    pub root: PathBuf,
}

/// One tracked output: where it is recorded, where it lives, and its object.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub metafile: PathBuf,
    /// Absolute workspace path of the output.
    pub workspace: PathBuf,
    /// Repository-relative `/`-separated path, for people.
    pub name: String,
    pub out: Out,
    pub id: ObjectId,
}

impl Repo {
    /// The repository at or above `start`.
    pub fn discover(start: &Path) -> Result<Repo, DvcError> {
        let abs = std::path::absolute(start).map_err(|source| DvcError::Io {
            what: "resolve",
            path: start.to_path_buf(),
            source,
        })?;
        let mut dir = Some(abs.as_path());
        while let Some(d) = dir {
            if d.join(".dvc").is_dir() {
                let repo = Repo {
                    root: d.to_path_buf(),
                };
                for warning in repo.unsupported()? {
                    tracing::warn!("{}", for_log(&warning));
                }
                return Ok(repo);
            }
            dir = d.parent();
        }
        Err(DvcError::NotARepo { start: abs })
    }

    /// What DVC supports and we do not, so it is never silently ignored: a `[cache] dir` is an
    /// error (data would land where DVC does not look); `.dvcignore` patterns come back as a
    /// warning (a directory with ignored files hashes differently from `dvc add`'s).
    pub fn unsupported(&self) -> Result<Vec<String>, DvcError> {
        let cfg = config::DvcConfig::load(&self.dvc_dir())?;
        if let Some(dir) = cfg.sections.get("cache").and_then(|c| c.get("dir")) {
            return Err(DvcError::CacheDir {
                file: dir.file.clone(),
                dir: dir.value.clone(),
            });
        }
        let ignore = self.root.join(".dvcignore");
        let patterns = fs_err::read_to_string(&ignore).map_or(0, |text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count()
        });
        Ok(if patterns > 0 {
            vec![format!(
                "{}: {patterns} pattern(s) not applied: wms hashes every file of a tracked directory, so one with ignored files gets another hash than `dvc add` gives it; hint: remove the patterns or track that directory with dvc",
                ignore.display()
            )]
        } else {
            Vec::new()
        })
    }

    pub fn dvc_dir(&self) -> PathBuf {
        self.root.join(".dvc")
    }

    /// The local cache (`.dvc/cache`; a `cache.dir` in the config is refused by [`Repo::discover`]).
    pub fn cache(&self) -> Cache {
        Cache {
            root: self.root.clone(),
        }
    }

    /// `/`-separated path of `path` relative to the root.
    pub fn relative(&self, path: &Path) -> Result<String, DvcError> {
        let rel = path
            .strip_prefix(&self.root)
            .map_err(|_| DvcError::OutsideRepo {
                path: path.to_path_buf(),
                root: self.root.clone(),
            })?;
        Ok(slash_path(rel))
    }

    /// Every `.dvc` file and `dvc.lock` in the workspace (not inside `.git`, `.dvc` or tracked
    /// directories), sorted.
    pub fn metafiles(&self) -> Result<Vec<PathBuf>, DvcError> {
        let mut found = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let io = |source| DvcError::Fs {
                what: "list the workspace for DVC files",
                source,
            };
            let mut names = Vec::new();
            for entry in fs_err::read_dir(&dir).map_err(io)? {
                let entry = entry.map_err(io)?;
                let is_dir = entry.file_type().map_err(io)?.is_dir();
                names.push((entry.file_name().to_string_lossy().into_owned(), is_dir));
            }
            for (name, is_dir) in &names {
                if *is_dir {
                    let tracked = names.iter().any(|(n, d)| !d && *n == format!("{name}.dvc"));
                    if name != ".git" && name != ".dvc" && !tracked {
                        stack.push(dir.join(name));
                    }
                } else if dvcfile::is_metafile(name) {
                    found.push(dir.join(name));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// The outputs recorded in `targets` (`.dvc` files, `dvc.lock`s, or tracked paths), or in
    /// every metafile when `targets` is empty.
    pub fn tracked(&self, targets: &[PathBuf]) -> Result<Vec<Tracked>, DvcError> {
        let metafiles = if targets.is_empty() {
            self.metafiles()?
        } else {
            let mut m = Vec::new();
            for t in targets {
                let abs = user_path(t)?;
                let name = abs.to_string_lossy().into_owned();
                if dvcfile::is_metafile(&name) && abs.is_file() {
                    m.push(abs);
                } else {
                    let with = PathBuf::from(format!("{}.dvc", name.trim_end_matches('/')));
                    if !with.is_file() {
                        return Err(DvcError::NotTracked { path: t.clone() });
                    }
                    m.push(with);
                }
            }
            m
        };
        let mut out = Vec::new();
        for metafile in metafiles {
            // A metafile committed as a link is read only when it points inside the repository.
            existing_inside(&self.root, &metafile)?;
            let dir = self.relative(metafile.parent().unwrap_or(&self.root))?;
            let text = fs_err::read_to_string(&metafile).map_err(|source| DvcError::Fs {
                what: "read a DVC file",
                source,
            })?;
            let name = metafile.to_string_lossy().into_owned();
            let recorded =
                dvcfile::parse_outs(&name, &text).map_err(|message| DvcError::Metafile {
                    path: metafile.clone(),
                    message,
                })?;
            for r in recorded {
                if r.out.cache == Some(false) {
                    // Kept in git, not in the cache or the remote.
                    continue;
                }
                let Some(md5) = r.out.md5.as_deref() else {
                    // Not yet computed (e.g. a stage never run): nothing to sync.
                    continue;
                };
                let id =
                    ObjectId::parse(md5, r.out.is_legacy()).ok_or_else(|| DvcError::Metafile {
                        path: metafile.clone(),
                        message: format!("`{md5}` is not an md5 object id"),
                    })?;
                let name = output_name(&metafile, &dir, &r.out.path)?;
                let workspace = self.root.join(&name);
                out.push(Tracked {
                    metafile: metafile.clone(),
                    workspace,
                    name,
                    out: r.out,
                    id,
                });
            }
        }
        Ok(out)
    }
}

/// The repository-relative name of an output recorded as `path` in a metafile in directory
/// `dir` (`""` at the root). The path rule's syntax half: relative, no `..`, no NUL; whether its
/// parents are real directories is checked where it is written (checkout).
fn output_name(metafile: &Path, dir: &str, path: &str) -> Result<String, DvcError> {
    let rel = check_relative(path).map_err(|source| DvcError::UnsafePath {
        file: metafile.to_path_buf(),
        what: "the `path` of an output".into(),
        source,
    })?;
    let rel = slash_path(&rel);
    Ok(if dir.is_empty() {
        rel
    } else {
        format!("{dir}/{rel}")
    })
}

/// A relative path as `/`-separated text (the form DVC records and the path rule takes).
pub(crate) fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A path the user typed, absolute, with `.` and `..` resolved without touching the file system:
/// `..` in it is theirs to write (links in it are resolved, and checked, where it is read).
fn user_path(path: &Path) -> Result<PathBuf, DvcError> {
    let abs = std::path::absolute(path).map_err(|source| DvcError::Io {
        what: "resolve",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(normalize(&abs))
}

/// Resolves `.` and `..` without touching the file system (for paths the user typed).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{assert_renders_once, render};

    /// An empty DVC repository (a `.dvc` folder) in a temp dir.
    fn empty_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join(".dvc")).unwrap();
        dir
    }

    /// Each io error prints its path once: from the `fs_err` cause, or from the message when
    /// the cause does not name it.
    #[test]
    fn io_errors_name_the_path_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-file.bin");
        let shown = missing.display().to_string();
        let err = cache::md5_file(&missing).unwrap_err();
        assert!(matches!(err, DvcError::Fs { .. }), "{err:?}");
        assert_renders_once(&err, 1);
        assert_eq!(render(&err).matches(&shown).count(), 1, "{}", render(&err));

        let err = DvcError::Io {
            what: "write",
            path: missing.clone(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        assert_renders_once(&err, 1);
        assert_eq!(render(&err).matches(&shown).count(), 1, "{}", render(&err));

        let err = DvcError::LinkLoop { path: missing };
        assert_renders_once(&err, 1);
    }

    #[test]
    fn discovers_the_repo_and_its_tracked_outputs() {
        let dir = empty_repo();
        let root = dir.path();
        fs_err::create_dir_all(root.join("data/images/deep")).unwrap();
        fs_err::write(
            root.join("data/images.dvc"),
            "outs:\n- md5: d23608bc013c1f42db5f0e4a34bbb6ea.dir\n  size: 17\n  nfiles: 3\n  hash: md5\n  path: images\n",
        )
        .unwrap();
        // `cache: false` outputs live in git: nothing to sync.
        fs_err::write(
            root.join("dvc.lock"),
            "schema: '2.0'\nstages:\n  train:\n    cmd: wms-train train\n    outs:\n    - path: metrics.json\n      hash: md5\n      md5: 11112222333344445555666677778888\n      size: 10\n      cache: false\n",
        )
        .unwrap();
        // Inside a tracked directory: not a metafile of the repo.
        fs_err::write(root.join("data/images/deep/x.dvc"), "outs: []\n").unwrap();
        let repo = Repo::discover(&root.join("data")).unwrap();
        assert_eq!(repo.root, root);
        assert_eq!(
            repo.metafiles().unwrap(),
            vec![root.join("data/images.dvc"), root.join("dvc.lock")]
        );
        let t = repo.tracked(&[]).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].name, "data/images");
        assert!(t[0].id.dir);
        let by_path = repo.tracked(&[root.join("data/images")]).unwrap();
        assert_eq!(by_path[0].name, "data/images");
        assert!(matches!(
            repo.tracked(&[root.join("nope")]),
            Err(DvcError::NotTracked { .. })
        ));
        assert!(matches!(
            Repo::discover(Path::new("/")),
            Err(DvcError::NotARepo { .. })
        ));
    }

    /// Issue 17: `[cache] dir` is an error naming the file; `.dvcignore` patterns a warning.
    #[test]
    fn unsupported_cache_dir_and_dvcignore_are_not_silently_ignored() {
        let dir = empty_repo();
        let root = dir.path();
        let warnings = || Repo::discover(root).unwrap().unsupported().unwrap();
        assert!(warnings().is_empty());
        fs_err::write(root.join(".dvcignore"), "# comment only\n\n").unwrap();
        assert!(warnings().is_empty());
        fs_err::write(root.join(".dvcignore"), "# tmp\n*.tmp\n").unwrap();
        let warnings = warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains(".dvcignore: 1 pattern"),
            "{warnings:?}"
        );
        fs_err::write(root.join(".dvc/config"), "[cache]\n    dir = /elsewhere\n").unwrap();
        let err = Repo::discover(root).unwrap_err();
        assert!(matches!(&err, DvcError::CacheDir { dir, .. } if dir == "/elsewhere"));
        let line = crate::exit::render(&err);
        assert!(
            line.contains(".dvc/config") && line.contains("hint:"),
            "{line}"
        );
        crate::exit::assert_renders_once(&err, 1);
    }

    #[test]
    fn issue11_output_paths_must_be_relative_without_dotdot() {
        let dir = empty_repo();
        let root = dir.path();
        fs_err::create_dir_all(root.join("data")).unwrap();
        let repo = Repo {
            root: root.to_path_buf(),
        };
        let md5 = "b1946ac92492d2347c6235b4d2611184";
        for path in ["../../etc/x", "/etc/x", "a/../../x", "''"] {
            fs_err::write(
                root.join("data/x.dvc"),
                format!("outs:\n- md5: {md5}\n  hash: md5\n  path: {path}\n"),
            )
            .unwrap();
            let err = repo.tracked(&[]).unwrap_err();
            assert!(matches!(err, DvcError::UnsafePath { .. }), "{path}: {err}");
            let text = crate::mlflow::error::chain(&err);
            assert!(
                text.contains("data/x.dvc") && text.contains("hint:"),
                "{text}"
            );
        }
        // `.` components are harmless and dropped.
        fs_err::write(
            root.join("data/x.dvc"),
            format!("outs:\n- md5: {md5}\n  hash: md5\n  path: ./sub/./x.bin\n"),
        )
        .unwrap();
        let t = repo.tracked(&[]).unwrap();
        assert_eq!(t[0].name, "data/sub/x.bin");
        assert_eq!(t[0].workspace, root.join("data/sub/x.bin"));
    }
}
