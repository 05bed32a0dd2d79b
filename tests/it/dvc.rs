//! `wms data add|push|pull` against the real `dvc` CLI (the project venv's) and a real S3 API
//! (the moto server from `servers`): interop both ways, resume after an interruption, and a
//! corrupted remote object. Each test has its own bucket and repositories in temp dirs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{servers, util};

/// Temp dirs a test keeps alive; commands get HOME and dvc's config/cache dirs inside it.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub bucket: String,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
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
        s3(|c| {
            let bucket = bucket.clone();
            async move { c.create_bucket().bucket(bucket).send().await.map(|_| ()) }
        });
        Sandbox { dir, bucket }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The env every command here runs with: moto credentials, isolated dvc state.
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
            "GIT_DIR",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self.path("home"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("DVC_NO_ANALYTICS", "1")
            .env("DVC_GLOBAL_CONFIG_DIR", self.path("dvc-global"))
            .env("DVC_SYSTEM_CONFIG_DIR", self.path("dvc-system"))
            .env("DVC_SITE_CACHE_DIR", self.path("dvc-site"))
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com");
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

    pub fn wms(&self, dir: &Path, args: &[&str]) -> Output {
        let mut cmd = util::bin("wms");
        cmd.args(args);
        self.run(cmd, dir)
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

#[test]
fn dvc_push_then_wms_pull_reproduces_the_files_byte_for_byte() {
    let sb = Sandbox::new("dvc2wms");
    let a = sb.repo("a");
    write_dataset(&a.join("data/images"), 40);
    fs_err::write(a.join("data/labels.csv"), "stem,reading\nf000,00123\n").unwrap();
    sb.dvc(&a, &["add", "-q", "data/images"]);
    sb.dvc(&a, &["add", "-q", "data/labels.csv"]);
    sb.commit_all(&a, "data");
    sb.dvc(&a, &["push", "-q"]);

    let b = sb.clone(&a, "b");
    let out = sb.wms(&b, &["data", "pull", "--jobs", "8"]);
    assert_ok(&out, "wms data pull");
    // 40 + 5 files, one duplicate content, one manifest, one single-file output.
    assert!(
        stdout(&out).contains("pulled 46 of 46 object(s)"),
        "{}",
        stdout(&out)
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
    let again = sb.wms(&b, &["data", "pull"]);
    assert_ok(&again, "second pull");
    assert!(
        stdout(&again).contains("pulled 0 of 46 object(s)")
            && stdout(&again).contains("0 file(s) written, 46 unchanged"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn wms_add_and_push_then_dvc_pull_is_clean() {
    let sb = Sandbox::new("wms2dvc");
    let a = sb.repo("a");
    write_dataset(&a.join("data/images"), 30);
    fs_err::write(a.join("data/.gitignore"), "/scratch").unwrap();
    let out = sb.wms(&a, &["data", "add", "data/images"]);
    assert_ok(&out, "wms data add");

    // The same directory added by dvc in a twin repository gives identical bytes.
    let twin = sb.repo("twin");
    write_dataset(&twin.join("data/images"), 30);
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
    let out = sb.wms(&a, &["data", "push", "--jobs", "4"]);
    assert_ok(&out, "wms data push");
    assert!(
        stdout(&out).contains("pushed 35 of 35 object(s)"),
        "{}",
        stdout(&out)
    );
    let again = sb.wms(&a, &["data", "push"]);
    assert_ok(&again, "second push");
    assert!(
        stdout(&again).contains("pushed 0 of 35"),
        "{}",
        stdout(&again)
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
    let a = sb.repo("a");
    write_dataset(&a.join("data/images"), 20);
    sb.dvc(&a, &["add", "-q", "data/images"]);
    sb.commit_all(&a, "data");
    sb.dvc(&a, &["push", "-q"]);
    let total = tree(&a.join(".dvc/cache")).len(); // 24 file objects + 1 manifest

    let b = sb.clone(&a, "b");
    // The hook starts at most 10 downloads (the manifest and 9 files), then stops the pull
    // the way a kill between objects would: nothing checked out, finished objects cached.
    let mut cmd = util::bin("wms");
    cmd.args(["data", "pull", "--jobs", "4"]);
    sb.env(&mut cmd);
    cmd.env("WMS_DATA_PULL_STOP_AFTER", "10").current_dir(&b);
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let first = cache_inodes(&b);
    assert_eq!(first.len(), 10, "{first:?}");
    assert!(!b.join("data/images").exists());

    let out = sb.wms(&b, &["data", "pull", "--jobs", "4"]);
    assert_ok(&out, "resumed pull");
    assert!(
        stdout(&out).contains(&format!("pulled {} of {total} object(s)", total - 10)),
        "{}",
        stdout(&out)
    );
    let second = cache_inodes(&b);
    for (k, ino) in &first {
        assert_eq!(second.get(k), Some(ino), "{k} was downloaded again");
    }
    assert_eq!(tree(&b.join("data/images")), tree(&a.join("data/images")));
    assert!(
        !tree(&b).keys().any(|k| k.contains(".wms-tmp-")),
        "temp files left behind"
    );
}

#[test]
fn a_corrupted_remote_object_is_reported_by_name_and_never_written() {
    let sb = Sandbox::new("corrupt");
    let a = sb.repo("a");
    write_dataset(&a.join("data/images"), 6);
    sb.dvc(&a, &["add", "-q", "data/images"]);
    sb.commit_all(&a, "data");
    assert_ok(&sb.wms(&a, &["data", "push"]), "push");

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
    let out = sb.wms(&b, &["data", "pull"]);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("data/images/f003.bin") && err.contains("corrupted") && err.contains(&key),
        "{err}"
    );
    assert!(!b.join("data/images/f003.bin").exists());
    assert!(
        !b.join(format!(".dvc/cache/files/md5/{}/{}", &md5[..2], &md5[2..]))
            .exists()
    );
    assert!(
        !tree(&b).keys().any(|k| k.contains(".wms-tmp-")),
        "temp files left behind"
    );
}

use md5::Digest as _;
