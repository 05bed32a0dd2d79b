//! `push` and `pull` between the local cache and an S3 remote, and the checkout of pulled
//! objects into the workspace (by copy, as DVC's default cache type on most file systems).
//!
//! Only missing objects move: pull skips what the cache already holds (so a pull that was
//! interrupted resumes where it stopped: every finished object was renamed into the cache), push
//! asks the remote first (HEAD). Transfers run `jobs` at a time on one tokio runtime. Directory
//! manifests go last on push and first on pull, as DVC orders them, so a `.dir` in the remote
//! implies its files are there. Every downloaded byte is md5-checked before it gets its name.
//!
//! A manifest's `relpath`s come from the repository (or whoever wrote the remote): each one is
//! checked by the path rule before anything is downloaded for it, and every file is written
//! through [`create_parents_inside`], so no entry and no committed link can place a file outside
//! the workspace. Such a refusal stops the whole pull.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::cache::{Cache, ObjectId, md5_file, set_mode};
use super::config::{DvcConfig, config_path};
use super::dvcfile::{DirEntry, parse_dir_manifest};
use super::remote::S3Remote;
use super::trust::EndpointPolicy;
use super::{DvcError, Repo, Tracked, slash_path};
use crate::untrusted::path::{check_relative, create_parents_inside};
use crate::untrusted::text::for_log;

/// What `push` and `pull` are asked to do.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Remote name; `None`: `[core] remote`.
    pub remote: Option<String>,
    /// Parallel transfers.
    pub jobs: usize,
    /// `.dvc` files or tracked paths; empty: all.
    pub targets: Vec<PathBuf>,
    /// Which endpoint the signed requests may go to.
    pub endpoint: EndpointPolicy,
    /// Test hook (`WMS_DATA_PULL_STOP_AFTER`): start at most this many downloads, then fail as
    /// an interrupted pull would, leaving the finished objects in the cache.
    pub stop_after: Option<usize>,
    pub progress: indicatif::ProgressBar,
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullSummary {
    pub objects: usize,
    pub downloaded: usize,
    pub already_cached: usize,
    pub bytes: u64,
    pub files_written: usize,
    pub files_unchanged: usize,
    pub seconds: f64,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushSummary {
    pub objects: usize,
    pub uploaded: usize,
    pub already_in_remote: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// One object to move, with the workspace name people know it by.
#[derive(Debug, Clone)]
struct Wanted {
    id: ObjectId,
    name: String,
}

fn runtime(jobs: usize) -> Result<tokio::runtime::Runtime, DvcError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(jobs.clamp(1, 8))
        .enable_all()
        .build()
        .map_err(DvcError::Runtime)
}

async fn connect(
    repo: &Repo,
    remote: Option<&str>,
    policy: &EndpointPolicy,
) -> Result<S3Remote, DvcError> {
    let cfg = DvcConfig::load(&repo.dvc_dir())?;
    let (name, rc) = cfg.remote(remote, &config_path(&repo.root))?;
    let endpoint = policy.choose(&name, &rc)?;
    S3Remote::connect(&rc, endpoint.as_deref()).await
}

/// Runs `f` over `items`, at most `jobs` at a time; results in completion order.
async fn parallel<T, R, F, Fut>(items: Vec<T>, jobs: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(jobs.max(1)));
    let f = Arc::new(f);
    let mut set = JoinSet::new();
    let mut out = Vec::new();
    for item in items {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let f = f.clone();
        set.spawn(async move {
            let r = f(item).await;
            drop(permit);
            r
        });
        // Collect finished results as we go so memory stays flat for large transfers.
        while let Some(done) = set.try_join_next() {
            out.push(unwrap_join(done));
        }
    }
    while let Some(done) = set.join_next().await {
        out.push(unwrap_join(done));
    }
    out
}

fn unwrap_join<R>(r: Result<R, tokio::task::JoinError>) -> R {
    match r {
        Ok(v) => v,
        // A panic in a transfer task is a bug; surface it where it happened.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Reads a `.dir` manifest from the cache.
fn read_manifest(cache: &Cache, t: &Tracked) -> Result<Vec<DirEntry>, DvcError> {
    let path = cache.entry(&t.id, &t.name)?;
    let bytes = fs_err::read(&path).map_err(|source| DvcError::Fs {
        what: "read a directory manifest from the cache",
        source,
    })?;
    parse_dir_manifest(&bytes).map_err(|message| DvcError::Metafile { path, message })
}

/// The file objects of `t` (itself, or its manifest's entries) with their workspace names; a
/// `relpath` the path rule refuses is an error.
fn file_objects(cache: &Cache, t: &Tracked) -> Result<Vec<Wanted>, DvcError> {
    if !t.id.dir {
        return Ok(vec![Wanted {
            id: t.id.clone(),
            name: t.name.clone(),
        }]);
    }
    let mut out = Vec::new();
    for e in read_manifest(cache, t)? {
        let id = ObjectId::parse(&e.md5, t.id.legacy).ok_or_else(|| DvcError::Metafile {
            path: cache.path_of(&t.id),
            message: format!("`{}` is not an md5 object id", for_log(&e.md5)),
        })?;
        let rel = check_relative(&e.relpath).map_err(|source| DvcError::UnsafePath {
            file: cache.path_of(&t.id),
            what: format!("the .dir manifest of {} lists a file", for_log(&t.name)),
            source,
        })?;
        out.push(Wanted {
            id,
            name: format!("{}/{}", t.name, slash_path(&rel)),
        });
    }
    Ok(out)
}

struct Fetcher {
    remote: S3Remote,
    cache: Cache,
    stop_after: Option<usize>,
    started: AtomicUsize,
    bytes: AtomicU64,
    progress: indicatif::ProgressBar,
}

impl Fetcher {
    async fn fetch(&self, w: &Wanted) -> Result<(), DvcError> {
        if let Some(n) = self.stop_after
            && self.started.fetch_add(1, Ordering::SeqCst) >= n
        {
            return Err(DvcError::Interrupted {
                op: "pull",
                after: n,
            });
        }
        let r = self.remote.fetch(&w.id, &self.cache, &w.name).await;
        if let Ok(n) = &r {
            self.bytes.fetch_add(*n, Ordering::Relaxed);
        }
        self.progress.inc(1);
        r.map(|_| ())
    }
}

/// Downloads the wanted objects the cache lacks; returns (downloaded, failures).
async fn fetch_missing(
    fetcher: &Arc<Fetcher>,
    wanted: Vec<Wanted>,
    jobs: usize,
) -> (usize, Vec<DvcError>) {
    let mut seen = BTreeSet::new();
    let missing: Vec<Wanted> = wanted
        .into_iter()
        .filter(|w| seen.insert(w.id.clone()) && !fetcher.cache.contains(&w.id))
        .collect();
    fetcher.progress.inc_length(missing.len() as u64);
    let count = missing.len();
    let f = fetcher.clone();
    let results = parallel(missing, jobs, move |w| {
        let f = f.clone();
        async move { f.fetch(&w).await }
    })
    .await;
    let failures: Vec<DvcError> = results.into_iter().filter_map(Result::err).collect();
    (count - failures.len(), failures)
}

/// Downloads what `targets` need and checks it out into the workspace.
pub fn pull(repo: &Repo, opts: &SyncOptions) -> Result<PullSummary, DvcError> {
    let start = Instant::now();
    let tracked = repo.tracked(&opts.targets)?;
    let cache = repo.cache();
    let rt = runtime(opts.jobs)?;
    let jobs = opts.jobs.max(1);
    let (mut summary, failures, complete) = rt.block_on(async {
        let remote = connect(repo, opts.remote.as_deref(), &opts.endpoint).await?;
        let fetcher = Arc::new(Fetcher {
            remote,
            cache: cache.clone(),
            stop_after: opts.stop_after,
            started: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            progress: opts.progress.clone(),
        });
        fetcher.progress.set_length(0);
        // Manifests first: they say which file objects exist.
        let dirs: Vec<Wanted> = tracked
            .iter()
            .filter(|t| t.id.dir)
            .map(|t| Wanted {
                id: t.id.clone(),
                name: t.name.clone(),
            })
            .collect();
        let (mut downloaded, mut failures) = fetch_missing(&fetcher, dirs, jobs).await;
        let mut per_out: Vec<Option<Vec<Wanted>>> = Vec::new();
        let mut all = Vec::new();
        for t in &tracked {
            if t.id.dir && !cache.contains(&t.id) {
                per_out.push(None);
                continue;
            }
            match file_objects(&cache, t) {
                Ok(files) => {
                    all.extend(files.iter().cloned());
                    per_out.push(Some(files));
                }
                // A hostile manifest stops the pull before anything is downloaded for it.
                Err(e) if is_unsafe(&e) => return Err(e),
                Err(e) => {
                    failures.push(e);
                    per_out.push(None);
                }
            }
        }
        let objects = all.iter().map(|w| &w.id).collect::<BTreeSet<_>>().len()
            + tracked.iter().filter(|t| t.id.dir).count();
        let (n, more) = fetch_missing(&fetcher, all, jobs).await;
        downloaded += n;
        failures.extend(more);
        let summary = PullSummary {
            objects,
            downloaded,
            already_cached: objects.saturating_sub(downloaded + failures.len()),
            bytes: fetcher.bytes.load(Ordering::Relaxed),
            ..PullSummary::default()
        };
        Ok::<_, DvcError>((summary, failures, per_out))
    })?;
    opts.progress.finish_and_clear();
    let mut failures = failures;
    // A cache the repository committed as links: stop, as for a hostile manifest.
    if let Some(i) = failures.iter().position(is_unsafe) {
        return Err(failures.swap_remove(i));
    }
    if let Some(DvcError::Interrupted { after, .. }) = failures
        .iter()
        .find(|e| matches!(e, DvcError::Interrupted { .. }))
    {
        return Err(DvcError::Interrupted {
            op: "pull",
            after: *after,
        });
    }
    // Check out every output whose objects are all in the cache, even when others failed.
    let mut checkout_failures = Vec::new();
    for files in complete.into_iter().flatten() {
        if files.iter().any(|w| !cache.contains(&w.id)) {
            continue;
        }
        match checkout(&repo.root, &cache, &files) {
            Ok((written, unchanged)) => {
                summary.files_written += written;
                summary.files_unchanged += unchanged;
            }
            Err(e) if is_unsafe(&e) => return Err(e),
            Err(e) => checkout_failures.push(e),
        }
    }
    failures.extend(checkout_failures);
    summary.seconds = start.elapsed().as_secs_f64();
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(incomplete("pull", failures, summary.objects))
    }
}

/// Whether `e` is the path rule refusing repository content: never one failure among many.
fn is_unsafe(e: &DvcError) -> bool {
    matches!(e, DvcError::UnsafePath { .. } | DvcError::Path(_))
}

fn incomplete(op: &'static str, failures: Vec<DvcError>, total: usize) -> DvcError {
    let mut details: Vec<String> = failures
        .iter()
        .take(3)
        .map(|e| crate::mlflow::error::chain(e))
        .collect();
    if failures.len() > 3 {
        details.push(format!("… and {} more", failures.len() - 3));
    }
    DvcError::Incomplete {
        op,
        failed: failures.len(),
        total,
        details: details.join("; "),
    }
}

/// Copies the cached objects of one output into the workspace at `root`; returns (written,
/// unchanged). Each file's parents are made (or found) as real directories inside `root`.
fn checkout(root: &Path, cache: &Cache, files: &[Wanted]) -> Result<(usize, usize), DvcError> {
    let results: Vec<Result<bool, DvcError>> = files
        .par_iter()
        .map(|w| {
            let dest = create_parents_inside(root, &w.name)?;
            checkout_file(&cache.entry(&w.id, &w.name)?, &dest, &w.id)
        })
        .collect();
    let mut written = 0;
    let mut unchanged = 0;
    for r in results {
        if r? {
            written += 1;
        } else {
            unchanged += 1;
        }
    }
    Ok((written, unchanged))
}

/// Copies `src` (a cache entry) to `dest` atomically unless `dest` already has that content.
/// `dest`'s parent must exist; a link at `dest` is replaced, never followed.
fn checkout_file(src: &Path, dest: &Path, id: &ObjectId) -> Result<bool, DvcError> {
    let fs = |what| move |source| DvcError::Fs { what, source };
    let io = |source| DvcError::Io {
        what: "write",
        path: dest.to_path_buf(),
        source,
    };
    match fs_err::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            return Err(DvcError::InTheWay {
                path: dest.to_path_buf(),
            });
        }
        Ok(m) if m.is_file() => {
            let cached = fs_err::metadata(src).map_err(fs("read a cache entry"))?;
            if cached.len() == m.len() && id.matches(&md5_file(dest)?.0, None) {
                return Ok(false);
            }
        }
        _ => {}
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".wms-tmp-")
        .tempfile_in(dir)
        .map_err(fs("create a temp file beside a tracked file"))?;
    fs_err::copy(src, tmp.path()).map_err(fs("copy a cache entry into the workspace"))?;
    set_mode(tmp.path(), 0o644).map_err(io)?;
    tmp.persist(dest).map_err(|e| io(e.error))?;
    Ok(true)
}

/// Uploads the objects of `targets` that the remote lacks: files first, manifests last.
pub fn push(repo: &Repo, opts: &SyncOptions) -> Result<PushSummary, DvcError> {
    let start = Instant::now();
    let tracked = repo.tracked(&opts.targets)?;
    let cache = repo.cache();
    // Everything must be in the cache before anything is sent.
    let mut files: BTreeMap<ObjectId, PathBuf> = BTreeMap::new();
    let mut dirs: BTreeMap<ObjectId, PathBuf> = BTreeMap::new();
    for t in &tracked {
        let entry = cache.entry(&t.id, &t.name)?;
        for w in file_objects(&cache, t)? {
            let path = cache.entry(&w.id, &w.name)?;
            files.entry(w.id).or_insert(path);
        }
        if t.id.dir {
            dirs.entry(t.id.clone()).or_insert(entry);
        }
    }
    let objects = files.len() + dirs.len();
    opts.progress.set_length(objects as u64);
    let rt = runtime(opts.jobs)?;
    let jobs = opts.jobs.max(1);
    let (uploaded, bytes, failures) = rt.block_on(async {
        let remote = Arc::new(connect(repo, opts.remote.as_deref(), &opts.endpoint).await?);
        let mut uploaded = 0usize;
        let mut bytes = 0u64;
        let mut failures = Vec::new();
        for phase in [files, dirs] {
            if !failures.is_empty() {
                // Never publish a manifest whose files did not all arrive.
                break;
            }
            let items: Vec<(ObjectId, PathBuf)> = phase.into_iter().collect();
            let r = remote.clone();
            let progress = opts.progress.clone();
            let results = parallel(items, jobs, move |(id, path)| {
                let r = r.clone();
                let progress = progress.clone();
                async move {
                    let res = match r.exists(&id).await {
                        Ok(true) => Ok(None),
                        Ok(false) => r.upload(&id, &path).await.map(Some),
                        Err(e) => Err(e),
                    };
                    progress.inc(1);
                    res
                }
            })
            .await;
            for res in results {
                match res {
                    Ok(Some(n)) => {
                        uploaded += 1;
                        bytes += n;
                    }
                    Ok(None) => {}
                    Err(e) => failures.push(e),
                }
            }
        }
        Ok::<_, DvcError>((uploaded, bytes, failures))
    })?;
    opts.progress.finish_and_clear();
    if !failures.is_empty() {
        return Err(incomplete("push", failures, objects));
    }
    Ok(PushSummary {
        objects,
        uploaded,
        already_in_remote: objects - uploaded,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dvc::cache::md5_hex;
    use crate::dvc::dvcfile::render_dir_manifest;

    /// A repository whose cache holds `files` and a manifest listing them, tracked as
    /// `data/images`.
    fn repo_with_manifest(root: &Path, files: &[(&str, &[u8])]) -> (Repo, Tracked) {
        fs_err::create_dir_all(root.join(".dvc")).unwrap();
        let repo = Repo {
            root: root.to_path_buf(),
        };
        let cache = repo.cache();
        let mut entries = Vec::new();
        for (rel, bytes) in files {
            let md5 = md5_hex(bytes);
            cache
                .store_bytes(&ObjectId::parse(&md5, false).unwrap(), bytes)
                .unwrap();
            entries.push(DirEntry {
                md5,
                relpath: rel.to_string(),
            });
        }
        let manifest = render_dir_manifest(&entries);
        let id = ObjectId {
            md5: md5_hex(&manifest),
            dir: true,
            legacy: false,
        };
        cache.store_bytes(&id, &manifest).unwrap();
        let tracked = Tracked {
            metafile: root.join("data/images.dvc"),
            workspace: root.join("data/images"),
            name: "data/images".into(),
            out: crate::dvc::dvcfile::Out {
                path: "images".into(),
                md5: Some(format!("{}.dir", id.md5)),
                size: None,
                nfiles: None,
                hash: Some("md5".into()),
                cache: None,
            },
            id,
        };
        (repo, tracked)
    }

    #[test]
    fn issue11_manifest_relpaths_are_checked_before_anything_is_planned() {
        for bad in ["../x", "/tmp/x", "a/../../x", "a\0b", ""] {
            let dir = tempfile::tempdir().unwrap();
            let (repo, t) = repo_with_manifest(dir.path(), &[("ok", b"1"), (bad, b"2")]);
            let err = file_objects(&repo.cache(), &t).unwrap_err();
            assert!(is_unsafe(&err), "{bad:?}: {err}");
            assert!(err.to_string().contains("data/images"), "{err}");
        }
    }

    #[test]
    fn issue11_checkout_does_not_write_through_a_symlinked_directory() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (repo, t) = repo_with_manifest(root, &[("sub/a.txt", b"a"), ("b.txt", b"b")]);
        let files = file_objects(&repo.cache(), &t).unwrap();
        fs_err::create_dir_all(root.join("data/images")).unwrap();
        symlink(outside.path(), root.join("data/images/sub")).unwrap();
        let err = checkout(root, &repo.cache(), &files).unwrap_err();
        assert!(is_unsafe(&err), "{err}");
        assert_eq!(fs_err::read_dir(outside.path()).unwrap().count(), 0);
        // With a real directory there, the rest checks out (b.txt, inside, was already written).
        fs_err::remove_file(root.join("data/images/sub")).unwrap();
        assert_eq!(checkout(root, &repo.cache(), &files).unwrap(), (1, 1));
        assert_eq!(
            fs_err::read(root.join("data/images/sub/a.txt")).unwrap(),
            b"a"
        );
    }
}
