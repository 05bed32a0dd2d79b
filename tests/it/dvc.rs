//! `wms data add|push|pull` against the real `dvc` CLI (the project venv's) and a real S3 API
//! (the moto server from `servers`): interop both ways, resume after an interruption, and a
//! corrupted remote object. Each test has its own bucket and repositories in temp dirs.
//!
//! The `issue11_*` tests are hostile repositories (issue 11): manifests and `.dvc` files whose
//! paths leave the workspace, directories committed as links, objects committed under
//! `.dvc/cache/` (so no remote is involved), links to secrets for `wms data add`, and a
//! `.dvc/config` that chooses where the signed requests go.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::TestCommand;

use crate::{servers, util};

/// Temp dirs a test keeps alive; commands get HOME and dvc's config/cache dirs inside it.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub bucket: String,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let sb = Sandbox::offline(tag);
        s3(|c| {
            let bucket = sb.bucket.clone();
            async move { c.create_bucket().bucket(bucket).send().await.map(|_| ()) }
        });
        sb
    }

    /// A sandbox whose bucket is not created (the test never reaches moto).
    pub fn offline(tag: &str) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wms-dvc-{tag}-"))
            .tempdir()
            .unwrap();
        for d in ["home", "dvc-global", "dvc-system", "dvc-site"] {
            fs_err::create_dir_all(dir.path().join(d)).unwrap();
        }
        let bucket = format!(
            "wms-{tag}-{}",
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .rsplit('-')
                .next()
                .unwrap()
                .to_ascii_lowercase()
        );
        Sandbox { dir, bucket }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The env every command here runs with: moto credentials, isolated dvc state, and the
    /// allowance to use the loopback moto endpoint that `repo` writes into `.dvc/config`.
    pub fn env(&self, cmd: &mut Command) {
        for var in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "WMS_DATA_PULL_STOP_AFTER",
            "WMS_DATA_JOBS",
            "WMS_DVC_ENDPOINT_URL",
            "WMS_DVC_ALLOW_HTTP",
            "GIT_DIR",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(self.vars());
    }

    /// The variables [`Sandbox::env`] sets.
    fn vars(&self) -> Vec<(&'static str, OsString)> {
        let path = |rel: &str| self.path(rel).into_os_string();
        vec![
            ("WMS_DVC_TRUST_ENDPOINT", "1".into()),
            ("HOME", path("home")),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("DVC_NO_ANALYTICS", "1".into()),
            ("DVC_GLOBAL_CONFIG_DIR", path("dvc-global")),
            ("DVC_SYSTEM_CONFIG_DIR", path("dvc-system")),
            ("DVC_SITE_CACHE_DIR", path("dvc-site")),
            ("GIT_AUTHOR_NAME", "t".into()),
            ("GIT_AUTHOR_EMAIL", "t@example.com".into()),
            ("GIT_COMMITTER_NAME", "t".into()),
            ("GIT_COMMITTER_EMAIL", "t@example.com".into()),
        ]
    }

    pub fn run(&self, mut cmd: Command, dir: &Path) -> Output {
        self.env(&mut cmd);
        cmd.current_dir(dir);
        cmd.output().unwrap()
    }

    pub fn ok(&self, cmd: Command, dir: &Path) -> String {
        let what = format!("{cmd:?}");
        let out = self.run(cmd, dir);
        assert!(
            out.status.success(),
            "{what} failed in {}:\nstdout: {}\nstderr: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn dvc(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new(util::python().with_file_name("dvc"));
        cmd.args(args);
        self.ok(cmd, dir)
    }

    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new("git");
        cmd.args(args);
        self.ok(cmd, dir)
    }

    /// `wms ARGS` in `dir`: the clean environment plus this sandbox's variables.
    pub fn wms(&self, dir: &Path, args: &[&str]) -> TestCommand {
        util::wms().args(args).current_dir(dir).envs(self.vars())
    }

    /// A git + dvc repository whose default remote is this sandbox's bucket on moto.
    pub fn repo(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        fs_err::create_dir_all(&dir).unwrap();
        self.git(&dir, &["init", "-q", "-b", "main"]);
        self.dvc(&dir, &["init", "-q"]);
        let url = format!("s3://{}/store", self.bucket);
        self.dvc(&dir, &["remote", "add", "-d", "storage", &url]);
        self.dvc(
            &dir,
            &[
                "remote",
                "modify",
                "storage",
                "endpointurl",
                &servers::moto().url,
            ],
        );
        self.git(&dir, &["add", "-A"]);
        self.git(&dir, &["commit", "-q", "-m", "dvc init"]);
        dir
    }

    pub fn clone(&self, repo: &Path, name: &str) -> PathBuf {
        let dest = self.path(name);
        self.git(
            self.dir.path(),
            &[
                "clone",
                "-q",
                &repo.display().to_string(),
                &dest.display().to_string(),
            ],
        );
        dest
    }

    pub fn commit_all(&self, repo: &Path, message: &str) {
        self.git(repo, &["add", "-A"]);
        self.git(repo, &["commit", "-q", "-m", message]);
    }

    /// [`Sandbox::repo`] with `files` photos in data/images, not tracked yet.
    pub fn repo_with_photos(&self, name: &str, files: usize) -> PathBuf {
        let repo = self.repo(name);
        write_dataset(&repo.join("data/images"), files);
        repo
    }

    /// [`Sandbox::repo_with_photos`], data/images added by dvc and committed.
    pub fn repo_with_images(&self, name: &str, files: usize) -> PathBuf {
        let repo = self.repo_with_photos(name, files);
        self.dvc(&repo, &["add", "-q", "data/images"]);
        self.commit_all(&repo, "data");
        repo
    }
}

/// Runs one signed S3 call against moto (test credentials, path-style addressing).
pub fn s3<F, Fut, E>(call: F)
where
    F: FnOnce(aws_sdk_s3::Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Debug,
{
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&servers::moto().url)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(call(client)).unwrap();
}

/// Writes a small data set: nested folders, a non-ASCII name, an empty file, two files with
/// the same content, and `count` pseudo-random binary files.
pub fn write_dataset(dir: &Path, count: usize) {
    fs_err::create_dir_all(dir.join("sub/deeper")).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..count {
        let len = 100 + (i * 37) % 900;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        fs_err::write(dir.join(format!("f{i:03}.bin")), bytes).unwrap();
    }
    fs_err::write(dir.join("sub/readme.txt"), "meter photos\r\n").unwrap();
    fs_err::write(dir.join("sub/deeper/same-a.txt"), "same\n").unwrap();
    fs_err::write(dir.join("sub/deeper/same-b.txt"), "same\n").unwrap();
    fs_err::write(dir.join("sub/empty"), "").unwrap();
    fs_err::write(dir.join("Zähler ü.txt"), "non-ascii name\n").unwrap();
}

/// Every file below `dir` (relative path → bytes), `.git` and `.dvc` skipped unless asked.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs_err::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs_err::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn dvc_push_then_wms_pull_reproduces_the_files_byte_for_byte() {
    let sb = Sandbox::new("dvc2wms");
    let a = sb.repo_with_photos("a", 40);
    fs_err::write(a.join("data/labels.csv"), "stem,reading\nf000,00123\n").unwrap();
    sb.dvc(&a, &["add", "-q", "data/images"]);
    sb.dvc(&a, &["add", "-q", "data/labels.csv"]);
    sb.commit_all(&a, "data");
    sb.dvc(&a, &["push", "-q"]);

    let b = sb.clone(&a, "b");
    let out = sb.wms(&b, &["data", "pull", "--jobs", "8"]).ok();
    // 40 + 5 files, one duplicate content, one manifest, one single-file output.
    assert!(
        out.stdout().contains("pulled 46 of 46 object(s)"),
        "{}",
        out.stdout()
    );
    assert_eq!(tree(&b.join("data/images")), tree(&a.join("data/images")));
    assert_eq!(
        fs_err::read(b.join("data/labels.csv")).unwrap(),
        fs_err::read(a.join("data/labels.csv")).unwrap()
    );
    // Same cache as dvc's own (paths and bytes).
    assert_eq!(tree(&b.join(".dvc/cache")), tree(&a.join(".dvc/cache")));
    // dvc agrees that the workspace matches.
    let status = sb.dvc(&b, &["status"]);
    assert!(status.contains("up to date"), "{status}");
    // A second pull moves nothing and rewrites nothing.
    let again = sb.wms(&b, &["data", "pull"]).ok();
    assert!(
        again.stdout().contains("pulled 0 of 46 object(s)")
            && again.stdout().contains("0 file(s) written, 46 unchanged"),
        "{}",
        again.stdout()
    );
}

#[test]
fn wms_add_and_push_then_dvc_pull_is_clean() {
    let sb = Sandbox::new("wms2dvc");
    let a = sb.repo_with_photos("a", 30);
    fs_err::write(a.join("data/.gitignore"), "/scratch").unwrap();
    sb.wms(&a, &["data", "add", "data/images"]).ok();

    // The same directory added by dvc in a twin repository gives identical bytes.
    let twin = sb.repo_with_photos("twin", 30);
    fs_err::write(twin.join("data/.gitignore"), "/scratch").unwrap();
    sb.dvc(&twin, &["add", "-q", "data/images"]);
    for f in ["data/images.dvc", "data/.gitignore"] {
        assert_eq!(
            fs_err::read_to_string(a.join(f)).unwrap(),
            fs_err::read_to_string(twin.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(tree(&a.join(".dvc/cache")), tree(&twin.join(".dvc/cache")));

    sb.commit_all(&a, "data");
    let out = sb.wms(&a, &["data", "push", "--jobs", "4"]).ok();
    assert!(
        out.stdout().contains("pushed 35 of 35 object(s)"),
        "{}",
        out.stdout()
    );
    let again = sb.wms(&a, &["data", "push"]).ok();
    assert!(
        again.stdout().contains("pushed 0 of 35"),
        "{}",
        again.stdout()
    );

    let b = sb.clone(&a, "b");
    sb.dvc(&b, &["pull", "-q"]);
    assert_eq!(tree(&b.join("data/images")), tree(&a.join("data/images")));
    let status = sb.dvc(&b, &["status"]);
    assert!(status.contains("up to date"), "{status}");
    let cloud = sb.dvc(&b, &["status", "--cloud"]);
    assert!(cloud.contains("in sync"), "{cloud}");
}

/// Cache files below `.dvc/cache` with their inode numbers (a re-download renames a new file
/// into place, so a kept inode proves the object was not fetched again).
fn cache_inodes(repo: &Path) -> BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    tree(&repo.join(".dvc/cache"))
        .into_keys()
        .map(|k| {
            let ino = fs_err::metadata(repo.join(".dvc/cache").join(&k))
                .unwrap()
                .ino();
            (k, ino)
        })
        .collect()
}

#[test]
fn an_interrupted_pull_resumes_without_downloading_finished_objects() {
    let sb = Sandbox::new("resume");
    let a = sb.repo_with_images("a", 20);
    sb.dvc(&a, &["push", "-q"]);
    let total = tree(&a.join(".dvc/cache")).len(); // 24 file objects + 1 manifest

    let b = sb.clone(&a, "b");
    // The hook starts at most 10 downloads (the manifest and 9 files), then stops the pull
    // the way a kill between objects would: nothing checked out, finished objects cached.
    let out = sb
        .wms(&b, &["data", "pull", "--jobs", "4"])
        .env("WMS_DATA_PULL_STOP_AFTER", "10")
        .fails(1);
    assert!(out.stderr().contains("interrupted"), "{out}");
    let first = cache_inodes(&b);
    assert_eq!(first.len(), 10, "{first:?}");
    assert!(!b.join("data/images").exists());

    let out = sb.wms(&b, &["data", "pull", "--jobs", "4"]).ok();
    assert!(
        out.stdout()
            .contains(&format!("pulled {} of {total} object(s)", total - 10)),
        "{}",
        out.stdout()
    );
    let second = cache_inodes(&b);
    for (k, ino) in &first {
        assert_eq!(second.get(k), Some(ino), "{k} was downloaded again");
    }
    assert_eq!(tree(&b.join("data/images")), tree(&a.join("data/images")));
    assert_no_temp_files(&b);
}

#[test]
fn a_corrupted_remote_object_is_reported_by_name_and_never_written() {
    let sb = Sandbox::new("corrupt");
    let a = sb.repo_with_images("a", 6);
    sb.wms(&a, &["data", "push"]).ok();

    // Replace the object of data/images/f003.bin in the bucket with other bytes.
    let good = fs_err::read(a.join("data/images/f003.bin")).unwrap();
    let md5 = format!("{:x}", md5::Md5::digest(&good));
    let key = format!("store/files/md5/{}/{}", &md5[..2], &md5[2..]);
    s3(|c| {
        let (bucket, key) = (sb.bucket.clone(), key.clone());
        async move {
            let body = b"not the photo you are looking for".to_vec();
            c.put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .map(|_| ())
        }
    });

    let b = sb.clone(&a, "b");
    let err = sb.wms(&b, &["data", "pull"]).fails(1).stderr();
    assert!(
        err.contains("data/images/f003.bin") && err.contains("corrupted") && err.contains(&key),
        "{err}"
    );
    assert!(!b.join("data/images/f003.bin").exists());
    assert!(
        !b.join(format!(".dvc/cache/files/md5/{}/{}", &md5[..2], &md5[2..]))
            .exists()
    );
    assert_no_temp_files(&b);
}

/// A download's temp files (`.wms-tmp-*`) are gone from `dir`, whatever became of the download.
#[track_caller]
fn assert_no_temp_files(dir: &Path) {
    let left: Vec<String> = tree(dir)
        .into_keys()
        .filter(|k| k.contains(".wms-tmp-"))
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

/// A loopback port where nobody should knock: connections queue in the backlog unaccepted, and
/// [`Trap::assert_untouched`] fails if one did.
struct Trap(std::net::TcpListener);

impl Trap {
    fn new() -> Trap {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Trap(listener)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.local_addr().unwrap().port())
    }

    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{peer} connected to the endpoint the repository chose"),
            Err(e) => panic!("checking the trap: {e}"),
        }
    }
}

/// A DVC repository made by hand (no git, no dvc CLI) whose default remote is this sandbox's
/// bucket behind `endpoint`.
fn hand_repo(sb: &Sandbox, name: &str, endpoint: &str) -> PathBuf {
    let root = sb.path(name);
    fs_err::create_dir_all(root.join(".dvc")).unwrap();
    fs_err::write(
        root.join(".dvc/config"),
        format!(
            "[core]\n    remote = storage\n['remote \"storage\"']\n    url = s3://{}/store\n    endpointurl = {endpoint}\n",
            sb.bucket
        ),
    )
    .unwrap();
    root
}

/// A hand-made repository for a hostile-input test: its remote's endpoint is a [`Trap`], so
/// the test can assert that nothing was sent anywhere.
fn trapped_repo(tag: &str) -> (Sandbox, Trap, PathBuf) {
    let sb = Sandbox::offline(tag);
    let trap = Trap::new();
    let root = hand_repo(&sb, "a", &trap.url());
    (sb, trap, root)
}

/// Commits `bytes` as an object under `.dvc/cache/` (DVC 3 layout; `suffix` `.dir` for a
/// manifest), as a hostile pull request can; returns its md5.
fn commit_object(root: &Path, bytes: &[u8], suffix: &str) -> String {
    let md5 = format!("{:x}", md5::Md5::digest(bytes));
    let path = root.join(format!(
        ".dvc/cache/files/md5/{}/{}{suffix}",
        &md5[..2],
        &md5[2..]
    ));
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::write(&path, bytes).unwrap();
    md5
}

/// `data/images.dvc` tracking a directory whose manifest, committed in the cache with its
/// files, lists `entries` (relpath, content) verbatim.
fn hostile_dir(root: &Path, entries: &[(&str, &[u8])]) {
    let listed: Vec<serde_json::Value> = entries
        .iter()
        .map(|(rel, bytes)| serde_json::json!({"md5": commit_object(root, bytes, ""), "relpath": rel}))
        .collect();
    let md5 = commit_object(root, &serde_json::to_vec(&listed).unwrap(), ".dir");
    fs_err::create_dir_all(root.join("data")).unwrap();
    fs_err::write(
        root.join("data/images.dvc"),
        format!(
            "outs:\n- md5: {md5}.dir\n  size: 1\n  nfiles: {}\n  hash: md5\n  path: images\n",
            entries.len()
        ),
    )
    .unwrap();
}

/// `data/<name>.dvc` tracking one file recorded at `path`, its object committed in the cache.
fn hostile_file(root: &Path, name: &str, path: &str, bytes: &[u8]) {
    let md5 = commit_object(root, bytes, "");
    fs_err::create_dir_all(root.join("data")).unwrap();
    fs_err::write(
        root.join(format!("data/{name}.dvc")),
        format!(
            "outs:\n- md5: {md5}\n  size: {}\n  hash: md5\n  path: {path}\n",
            bytes.len()
        ),
    )
    .unwrap();
}

/// Runs `cmd`, asserts the one-line refusal (exit 1) and returns it.
#[track_caller]
fn refusal(cmd: TestCommand) -> String {
    let out = cmd.fails(1);
    let err = out.stderr();
    assert_eq!(err.trim().lines().count(), 1, "{out}");
    assert!(err.contains("hint:"), "{out}");
    err
}

/// `wms` with the sandbox's env but without the allowance to use the repository's endpoint.
fn wms_untrusting(sb: &Sandbox, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> TestCommand {
    sb.wms(dir, args)
        .env_remove("WMS_DVC_TRUST_ENDPOINT")
        .envs(env.iter().copied())
}

#[test]
fn issue11_pull_refuses_dotdot_relpath() {
    let (sb, trap, root) = trapped_repo("dotdot");
    // data/images/../../../escape.txt is next to the repository, outside it.
    hostile_dir(
        &root,
        &[("a.txt", b"fine\n"), ("../../../escape.txt", b"pwned\n")],
    );
    let err = refusal(sb.wms(&root, &["data", "pull"]));
    assert!(
        err.contains("../../../escape.txt") && err.contains("data/images") && err.contains(".dir"),
        "{err}"
    );
    assert!(!sb.path("escape.txt").exists());
    assert!(!root.join("data/images").exists(), "nothing checked out");
    trap.assert_untouched();
}

#[test]
fn issue11_pull_refuses_absolute_relpath() {
    let (sb, trap, root) = trapped_repo("abs");
    let target = sb.path("abs-escape.txt");
    hostile_dir(&root, &[(target.to_str().unwrap(), b"pwned\n")]);
    let err = refusal(sb.wms(&root, &["data", "pull"]));
    assert!(
        err.contains("absolute") && err.contains("data/images"),
        "{err}"
    );
    assert!(!target.exists());
    trap.assert_untouched();
}

#[test]
fn issue11_pull_does_not_follow_a_committed_symlinked_directory() {
    use std::os::unix::fs::symlink;
    let (sb, trap, root) = trapped_repo("linkdir");
    let outside = sb.path("outside");
    fs_err::create_dir_all(&outside).unwrap();
    hostile_dir(&root, &[("sub/pwned.txt", b"pwned\n")]);
    // A directory inside the output committed as a link out of the workspace.
    fs_err::create_dir_all(root.join("data/images")).unwrap();
    symlink(&outside, root.join("data/images/sub")).unwrap();
    let err = refusal(sb.wms(&root, &["data", "pull"]));
    assert!(
        err.contains("symbolic link") && err.contains("data/images/sub"),
        "{err}"
    );
    assert_eq!(fs_err::read_dir(&outside).unwrap().count(), 0);
    // The output directory itself committed as a link: the same.
    fs_err::remove_dir_all(root.join("data/images")).unwrap();
    symlink(&outside, root.join("data/images")).unwrap();
    let err = refusal(sb.wms(&root, &["data", "pull"]));
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(fs_err::read_dir(&outside).unwrap().count(), 0);
    trap.assert_untouched();
}

#[test]
fn issue11_pull_replaces_a_committed_file_link_instead_of_writing_through_it() {
    use std::os::unix::fs::symlink;
    let (sb, trap, root) = trapped_repo("linkfile");
    let victim = sb.path("victim.txt");
    fs_err::write(&victim, "original\n").unwrap();
    hostile_dir(&root, &[("a.txt", b"data\n")]);
    fs_err::create_dir_all(root.join("data/images")).unwrap();
    symlink(&victim, root.join("data/images/a.txt")).unwrap();
    sb.wms(&root, &["data", "pull"]).ok();
    assert_eq!(fs_err::read_to_string(&victim).unwrap(), "original\n");
    let written = root.join("data/images/a.txt");
    assert!(fs_err::symlink_metadata(&written).unwrap().is_file());
    assert_eq!(fs_err::read_to_string(&written).unwrap(), "data\n");
    trap.assert_untouched();
}

#[test]
fn issue11_pull_refuses_an_output_path_outside_the_workspace() {
    let sb = Sandbox::offline("outpath");
    let trap = Trap::new();
    let abs = sb.path("abs-out.txt");
    for (i, path) in ["../../escape-out.txt", abs.to_str().unwrap()]
        .into_iter()
        .enumerate()
    {
        let root = hand_repo(&sb, &format!("r{i}"), &trap.url());
        hostile_file(&root, "x", path, b"pwned\n");
        let err = refusal(sb.wms(&root, &["data", "pull"]));
        assert!(
            err.contains("data/x.dvc") && err.contains("`path`"),
            "{err}"
        );
    }
    // The same through dvc.lock.
    let root = hand_repo(&sb, "lock", &trap.url());
    let md5 = commit_object(&root, b"pwned\n", "");
    fs_err::write(
        root.join("dvc.lock"),
        format!(
            "schema: '2.0'\nstages:\n  s:\n    cmd: x\n    outs:\n    - path: ../escape-lock.txt\n      hash: md5\n      md5: {md5}\n      size: 6\n"
        ),
    )
    .unwrap();
    let err = refusal(sb.wms(&root, &["data", "pull"]));
    assert!(err.contains("dvc.lock") && err.contains(".."), "{err}");
    for escaped in ["escape-out.txt", "abs-out.txt", "escape-lock.txt"] {
        assert!(!sb.path(escaped).exists(), "{escaped} written");
    }
    trap.assert_untouched();
}

#[test]
fn issue11_add_refuses_a_symlink_to_a_file_outside_the_repository() {
    use std::os::unix::fs::symlink;
    let sb = Sandbox::offline("addlink");
    let root = sb.path("a");
    fs_err::create_dir_all(root.join(".dvc")).unwrap();
    fs_err::create_dir_all(root.join("data/images")).unwrap();
    let secret = sb.path("credentials");
    fs_err::write(&secret, "aws_secret_access_key = hunter2\n").unwrap();
    symlink(&secret, root.join("data/creds")).unwrap();
    let err = refusal(sb.wms(&root, &["data", "add", "data/creds"]));
    assert!(
        err.contains("data/creds") && err.contains("outside"),
        "{err}"
    );
    // Inside a directory: the process environment, as in the reported attack.
    fs_err::write(root.join("data/images/ok.txt"), "ok\n").unwrap();
    symlink("/proc/self/environ", root.join("data/images/leak")).unwrap();
    let err = refusal(sb.wms(&root, &["data", "add", "data/images"]));
    assert!(err.contains("leak") && err.contains("outside"), "{err}");
    // Into the repository's own .git (the checkout's token lives in .git/config).
    fs_err::create_dir_all(root.join(".git")).unwrap();
    fs_err::write(root.join(".git/config"), "extraheader = AUTHORIZATION: x\n").unwrap();
    symlink("../.git/config", root.join("data/gitconfig")).unwrap();
    let err = refusal(sb.wms(&root, &["data", "add", "data/gitconfig"]));
    assert!(err.contains(".git"), "{err}");
    assert!(!root.join(".dvc/cache").exists(), "something was hashed");
    for f in ["data/creds.dvc", "data/images.dvc", "data/gitconfig.dvc"] {
        assert!(!root.join(f).exists(), "{f}");
    }
    // A link that stays inside is followed, as dvc does.
    fs_err::remove_file(root.join("data/images/leak")).unwrap();
    symlink("../../README.md", root.join("data/images/readme")).unwrap();
    fs_err::write(root.join("README.md"), "hello\n").unwrap();
    let out = sb.wms(&root, &["data", "add", "data/images"]).ok();
    assert!(out.stdout().contains("(2 file(s)"), "{}", out.stdout());
}

#[test]
fn issue11_a_repository_endpoint_is_not_used_without_the_allowance() {
    let (sb, trap, root) = trapped_repo("endpoint");
    hostile_file(&root, "y", "y.txt", b"cached\n");
    // An output whose object is nowhere: a pull would have to download it.
    fs_err::write(
        root.join("data/x.dvc"),
        "outs:\n- md5: 0123456789abcdef0123456789abcdef\n  size: 3\n  hash: md5\n  path: x.txt\n",
    )
    .unwrap();
    for args in [&["data", "pull"][..], &["data", "push", "data/y.dvc"]] {
        let err = refusal(wms_untrusting(&sb, &root, args, &[]));
        assert!(
            err.contains(".dvc/config")
                && err.contains(&trap.url())
                && err.contains("WMS_DVC_TRUST_ENDPOINT=1")
                && err.contains("--trust-endpoint")
                && err.contains("WMS_DVC_ENDPOINT_URL"),
            "{args:?}: {err}"
        );
    }
    // A committed config.local is the repository's too, and named as such.
    fs_err::write(
        root.join(".dvc/config"),
        format!(
            "[core]\n    remote = storage\n['remote \"storage\"']\n    url = s3://{}/store\n",
            sb.bucket
        ),
    )
    .unwrap();
    fs_err::write(
        root.join(".dvc/config.local"),
        format!("['remote \"storage\"']\n    endpointurl = {}\n", trap.url()),
    )
    .unwrap();
    let err = refusal(wms_untrusting(&sb, &root, &["data", "pull"], &[]));
    assert!(err.contains(".dvc/config.local"), "{err}");
    trap.assert_untouched();
}

#[test]
fn issue11_the_workflows_endpoint_replaces_the_repositorys() {
    let sb = Sandbox::new("override");
    let trap = Trap::new();
    let root = hand_repo(&sb, "a", &trap.url());
    hostile_file(&root, "y", "y.txt", b"pushed\n");
    let moto = &servers::moto().url;
    let out = wms_untrusting(
        &sb,
        &root,
        &["data", "push"],
        &[("WMS_DVC_ENDPOINT_URL", moto)],
    )
    .ok();
    assert!(out.stdout().contains("pushed 1 of 1"), "{}", out.stdout());
    // The flag does the same, and wins over a repository endpoint that is trusted.
    fs_err::remove_dir_all(root.join(".dvc/cache")).unwrap();
    sb.wms(&root, &["data", "pull", "--endpoint-url", moto])
        .ok();
    assert_eq!(fs_err::read(root.join("data/y.txt")).unwrap(), b"pushed\n");
    trap.assert_untouched();
}

#[test]
fn issue11_plain_http_to_a_non_loopback_host_is_refused_even_when_allowed() {
    let sb = Sandbox::offline("http");
    // TEST-NET-3: never routed. The refusal comes before any connection is tried.
    let far = "http://203.0.113.7:9000";
    let root = hand_repo(&sb, "a", far);
    hostile_file(&root, "y", "y.txt", b"cached\n");
    let err = refusal(sb.wms(&root, &["data", "push"]));
    assert!(
        err.contains("plain HTTP")
            && err.contains(far)
            && err.contains(".dvc/config")
            && err.contains("WMS_DVC_ALLOW_HTTP=1")
            && err.contains("--allow-http"),
        "{err}"
    );
    // The workflow's own endpoint is held to the same rule.
    let err = refusal(wms_untrusting(
        &sb,
        &root,
        &["data", "pull"],
        &[("WMS_DVC_ENDPOINT_URL", far)],
    ));
    assert!(
        err.contains("plain HTTP") && err.contains("WMS_DVC_ENDPOINT_URL"),
        "{err}"
    );
}

use md5::Digest as _;
