//! `wms build-image` read back by tools that share no code with ours: skopeo inspects the OCI
//! layout, umoci unpacks it into a runtime bundle, and the image's own entrypoint runs in a chroot
//! inside a private network namespace (`unshare -n`; the tests run as root) and serves the same
//! mask as the library does in-process.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use image::{GrayImage, ImageFormat, Rgb, RgbImage};
use wms::checkpoint::PreprocessSpec;
use wms::model::ModelSpec;
use wms::serve::engine::Engine;

use crate::util;

const INPUT_W: u32 = 96;
const INPUT_H: u32 = 64;
const EPOCH: &str = "1700000000";

/// A tiny random U-Net exported by the library's exporter, as `version`.
pub(crate) fn model(dir: &Path, version: &str) -> PathBuf {
    let spec = ModelSpec {
        base_filters: 4,
        ..ModelSpec::default()
    };
    let mut ckpt = wms::onnx::fixtures::random_checkpoint(spec, 11);
    ckpt.meta.model_name = "meters".into();
    ckpt.meta.preprocessing = PreprocessSpec {
        input_width: INPUT_W,
        input_height: INPUT_H,
        ..PreprocessSpec::default()
    };
    let opts = wms::onnx::ExportOptions {
        version: version.into(),
    };
    let path = dir.join("model.onnx");
    fs_err::write(&path, wms::onnx::export(&ckpt, &opts).unwrap()).unwrap();
    path
}

/// A wms-serve that does not link libtorch: `make test` builds one without the `train` feature
/// and names it in `WMS_TEST_SERVE_BINARY`; a test build without `train` is one itself.
pub(crate) fn serve_binary() -> PathBuf {
    match std::env::var_os("WMS_TEST_SERVE_BINARY") {
        Some(p) => PathBuf::from(p),
        #[cfg(not(feature = "train"))]
        None => PathBuf::from(env!("CARGO_BIN_EXE_wms-serve")),
        #[cfg(feature = "train")]
        None => panic!(
            "the wms-serve of a `train` build links libtorch; run `make test`, or set \
             WMS_TEST_SERVE_BINARY to a wms-serve built without `--features train`"
        ),
    }
}

fn build(cwd: &Path, model: &Path, layout: &Path, extra: &[&str]) -> serde_json::Value {
    let out = util::bin("wms")
        .current_dir(cwd)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .arg("build-image")
        .arg("--model")
        .arg(model)
        .arg("--serve-binary")
        .arg(serve_binary())
        .arg("--oci-layout")
        .arg(layout)
        .args(["--tag", "127.0.0.1:5000/meters:v1"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Same inputs and `SOURCE_DATE_EPOCH` from two directories: the same digest. A new model
/// version changes only the last layer, so a push of it uploads one small blob.
#[test]
fn the_image_is_reproducible_and_a_new_model_changes_only_the_model_layer() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = build(a.path(), &model(a.path(), "1"), &a.path().join("oci"), &[]);
    let again = build(b.path(), &model(b.path(), "1"), &b.path().join("oci"), &[]);
    assert_eq!(first["digest"], again["digest"]);
    assert!(first["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        first["image"].as_str().unwrap(),
        format!(
            "127.0.0.1:5000/meters@{}",
            first["digest"].as_str().unwrap()
        )
    );

    let next = build(b.path(), &model(b.path(), "2"), &b.path().join("oci"), &[]);
    let layers = |v: &serde_json::Value| -> Vec<String> {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let (old, new) = (layers(&first), layers(&next));
    assert_eq!(old.len(), 3, "{first}");
    assert_eq!(
        old[..2],
        new[..2],
        "runtime and server layers must not change"
    );
    assert_ne!(old[2], new[2], "the model layer must change");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_onnx = dir.path().join("model.onnx");
    fs_err::write(&not_onnx, b"\xff\xff\xff not protobuf").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--model", "missing.onnx"], "missing.onnx"),
        (
            &["--model", not_onnx.to_str().unwrap()],
            "not an ONNX model",
        ),
        (
            &[
                "--model",
                not_onnx.to_str().unwrap(),
                "--platform",
                "linux/arm64",
            ],
            "--platform",
        ),
        (
            &["--model", not_onnx.to_str().unwrap(), "--tag", "x:a b"],
            "--tag",
        ),
    ];
    for (args, want) in cases {
        let out = util::bin("wms")
            .current_dir(dir.path())
            .arg("build-image")
            .args(args)
            .args(["--oci-layout", "oci"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert!(!dir.path().join("oci/index.json").exists());
}

/// skopeo and umoci read the layout; the unpacked rootfs has no base, only the libraries the
/// loader resolved, and its entrypoint serves the in-process mask as the non-root user.
#[test]
fn skopeo_and_umoci_read_the_image_and_its_entrypoint_serves_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = model(dir.path(), "3");
    let layout = dir.path().join("oci");
    let built = build(dir.path(), &model_path, &layout, &[]);
    let digest = built["digest"].as_str().unwrap();
    let image = format!("oci:{}:v1", layout.display());

    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &image])).stdout;
    assert_eq!(wms::oci::blob::sha256_digest(&raw), digest);
    let info: serde_json::Value =
        serde_json::from_slice(&run(Command::new("skopeo").args(["inspect", &image])).stdout)
            .unwrap();
    assert_eq!(info["Labels"]["io.wms.model.name"], "meters");
    assert_eq!(info["Labels"]["org.opencontainers.image.version"], "3");
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["Architecture"], "amd64");

    let bundle = dir.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&bundle));
    let spec: serde_json::Value =
        serde_json::from_slice(&fs_err::read(bundle.join("config.json")).unwrap()).unwrap();
    let process = &spec["process"];
    let args: Vec<String> = serde_json::from_value(process["args"].clone()).unwrap();
    let env: Vec<String> = serde_json::from_value(process["env"].clone()).unwrap();
    let (uid, gid) = (&process["user"]["uid"], &process["user"]["gid"]);
    assert_eq!((uid.as_u64(), gid.as_u64()), (Some(65532), Some(65532)));
    let rootfs = bundle.join("rootfs");
    assert!(
        !rootfs.join("bin/sh").exists(),
        "a scratch image has no shell"
    );

    let mut server = Chrooted::start(&rootfs, &args, &env, process["cwd"].as_str().unwrap());
    server.wait_ready();
    let photo = jpeg(320, 240);
    let photo_path = dir.path().join("photo.jpg");
    fs_err::write(&photo_path, &photo).unwrap();
    let mask_path = dir.path().join("mask.png");
    let status = server.curl(&[
        "-o",
        mask_path.to_str().unwrap(),
        "-w",
        "%{http_code}",
        "--data-binary",
        &format!("@{}", photo_path.display()),
        "http://127.0.0.1:8080/predictions/meters",
    ]);
    assert_eq!(status, "200", "{}", server.log());
    let served = image::load_from_memory(&fs_err::read(&mask_path).unwrap())
        .unwrap()
        .to_luma8();
    assert_eq!(served, in_process_mask(&model_path, &photo));
}

/// The image's entrypoint in a chroot, in a network namespace of its own; the test reaches it
/// with `nsenter` into that namespace.
struct Chrooted {
    child: Child,
    log: PathBuf,
}

impl Chrooted {
    fn start(rootfs: &Path, args: &[String], env: &[String], cwd: &str) -> Self {
        let log = rootfs.with_file_name("server.log");
        let mut cmd = Command::new("unshare");
        cmd.args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
            .arg("chroot")
            .arg("--userspec=65532:65532")
            .arg(rootfs)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().filter_map(|kv| kv.split_once('=')))
            .current_dir(rootfs.join(cwd.trim_start_matches('/')))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        Chrooted {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn curl(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.child.id().to_string(),
                "-n",
                "curl",
                "-s",
                "-m",
                "30",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .curl(&["http://127.0.0.1:8080/ping"])
                .contains("Healthy")
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the image's entrypoint exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "not ready after 60 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Chrooted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x * y) % 251) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn in_process_mask(model: &Path, photo_bytes: &[u8]) -> GrayImage {
    let engine = Engine::load(model, None, 1, 1).unwrap();
    let img = wms::data::preprocess::decode_image(photo_bytes).unwrap();
    let rgb = wms::data::preprocess::to_rgb(img);
    let input = wms::data::preprocess::preprocess_image(&rgb, &engine.info().preprocessing);
    let logits = engine.run(&[&input]).unwrap().remove(0);
    wms::serve::engine::mask_from_logits(&logits, INPUT_W, INPUT_H)
}

fn push(dir: &Path, model: &Path, tags: &[String], password: &str) -> (Output, String, String) {
    let mut cmd = util::bin("wms");
    cmd.current_dir(dir)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("HOME", dir)
        .args(["build-image", "--push", "--insecure", "--username"])
        .arg(crate::servers::REGISTRY_USER)
        .arg("--password-stdin")
        .arg("--model")
        .arg(model)
        .arg("--serve-binary")
        .arg(serve_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for t in tags {
        cmd.args(["--tag", t]);
    }
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{password}\n").as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stdout.contains(password) && !stderr.contains(password),
        "{stdout}{stderr}"
    );
    (out, stdout, stderr)
}

fn pushed(stdout: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(stdout.lines().last().unwrap()).unwrap()["pushed"]
        .clone()
}

fn skopeo_digest(image: &str) -> Option<String> {
    let creds = format!(
        "{}:{}",
        crate::servers::REGISTRY_USER,
        crate::servers::REGISTRY_PASSWORD
    );
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--creds", &creds, image])
        .output()
        .unwrap();
    out.status.success().then(|| {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Digest"].as_str().unwrap().to_string()
    })
}

/// Push to the real registry with htpasswd auth: skopeo reads back the digest we printed; a
/// second repository of the same registry mounts every blob instead of uploading it; a new model
/// version uploads the model layer and the config only.
#[test]
fn push_to_a_registry_with_auth_mounts_across_repositories_and_reuploads_only_the_model() {
    let registry = crate::servers::registry();
    let host = registry.url.trim_start_matches("http://");
    let dir = tempfile::tempdir().unwrap();
    let tags = [
        format!("{host}/meters-push:v1"),
        format!("{host}/meters-mirror:v1"),
    ];
    let password = crate::servers::REGISTRY_PASSWORD;
    let (out, stdout, stderr) = push(dir.path(), &model(dir.path(), "1"), &tags, password);
    assert!(out.status.success(), "{stderr}");
    let report = pushed(&stdout);
    let count = |k: &str| report[k].as_array().unwrap().len();
    assert_eq!((count("uploaded"), count("mounted")), (4, 4), "{report}");
    let digest = serde_json::from_str::<serde_json::Value>(stdout.lines().last().unwrap()).unwrap()
        ["digest"]
        .as_str()
        .unwrap()
        .to_string();
    for t in &tags {
        assert_eq!(
            skopeo_digest(&format!("docker://{t}")).as_deref(),
            Some(digest.as_str())
        );
    }

    let (out, stdout, stderr) = push(dir.path(), &model(dir.path(), "2"), &tags[..1], password);
    assert!(out.status.success(), "{stderr}");
    let report = pushed(&stdout);
    let count = |k: &str| report[k].as_array().unwrap().len();
    assert_eq!((count("uploaded"), count("existing")), (2, 2), "{report}");
}

#[test]
fn a_wrong_password_is_one_line_naming_the_registry_and_no_manifest_is_pushed() {
    let registry = crate::servers::registry();
    let host = registry.url.trim_start_matches("http://");
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("{host}/meters-denied:v1");
    let (out, _, stderr) = push(
        dir.path(),
        &model(dir.path(), "1"),
        &[tag.clone()],
        "wrong-pw-77",
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(host) && stderr.contains("--username/--password-stdin"),
        "{stderr}"
    );
    assert_eq!(skopeo_digest(&format!("docker://{tag}")), None);

    let out = util::bin("wms")
        .current_dir(dir.path())
        .args(["build-image", "--push", "--insecure", "--model", "m.onnx"])
        .args(["--tag", "registry.example.com/meters:v1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain HTTP is only allowed"));
}

/// ECR (#12): GetAuthorizationToken against moto, then a push with `--ecr` to a registry whose
/// htpasswd holds exactly the user and password moto's token decodes to; skopeo reads the image
/// back with those credentials, and the registry refuses any other.
#[test]
fn ecr_token_from_moto_pushes_to_a_registry_that_accepts_exactly_those_credentials() {
    use aws_config::{BehaviorVersion, Region};
    let moto = crate::servers::moto();
    let sdk = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(&moto.url)
                .credentials_provider(aws_sdk_ecr::config::Credentials::new(
                    "testing", "testing", None, None, "test",
                ))
                .load(),
        );
    let actions = wms::github::actions::Actions::from_env();
    let creds = wms::oci::ecr::ecr_credentials(&sdk, "127.0.0.1", &actions).unwrap();
    assert_eq!(creds.username, "AWS");
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", &creds.username, &creds.password])
        .output()
        .unwrap();
    let registry = crate::servers::start_registry_with(&htpasswd.stdout);
    let host = registry.url.trim_start_matches("http://");

    let dir = tempfile::tempdir().unwrap();
    let tag = format!("{host}/meters-ecr:v1");
    let mut cmd = util::bin("wms");
    for var in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .current_dir(dir.path())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("HOME", dir.path())
        .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("no-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env(wms::env_vars::AWS_ENDPOINT_URL_ECR, &moto.url)
        .args([
            "build-image",
            "--push",
            "--insecure",
            "--ecr",
            "--tag",
            &tag,
        ])
        .arg("--model")
        .arg(model(dir.path(), "1"))
        .arg("--serve-binary")
        .arg(serve_binary())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains(&creds.password) && !stderr.contains(&creds.password),
        "{stdout}{stderr}"
    );
    let digest = serde_json::from_str::<serde_json::Value>(stdout.lines().last().unwrap()).unwrap()
        ["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let inspect = |user: &str, password: &str| {
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--creds"])
            .arg(format!("{user}:{password}"))
            .arg(format!("docker://{tag}"))
            .output()
            .unwrap()
    };
    let read = inspect(&creds.username, &creds.password);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(info["Digest"].as_str(), Some(digest.as_str()));
    let other = inspect(
        crate::servers::REGISTRY_USER,
        crate::servers::REGISTRY_PASSWORD,
    );
    assert!(
        !other.status.success(),
        "the registry must accept only ECR's credentials"
    );
}
