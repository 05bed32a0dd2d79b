//! `wms build-image` read back by tools that share no code with ours: skopeo inspects the OCI
//! layout, umoci unpacks it into a runtime bundle, and the image's own entrypoint runs in a chroot
//! inside a private network namespace (`unshare -n`; the tests run as root) and serves the same
//! mask as the library does in-process.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image::{GrayImage, ImageFormat, Rgb, RgbImage};
use wms::serve::engine::Engine;

use crate::util::{TestCommand, TestOutput, wms};

const INPUT_W: u32 = 96;
const INPUT_H: u32 = 64;
const EPOCH: &str = "1700000000";

/// A tiny random U-Net exported by the library's exporter, as `version`.
pub(crate) fn model(dir: &Path, version: &str) -> PathBuf {
    crate::util::small_model(&dir.join("model.onnx"), 11, (INPUT_W, INPUT_H), version)
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
    let out = build_image(cwd, model)
        // A layer cache per directory, so two directories share nothing but their inputs.
        .env("WMS_CACHE_DIR", cwd.join("cache"))
        .arg("--oci-layout")
        .arg(layout)
        .args(["--base", "scratch"])
        .args(["--tag", "127.0.0.1:5000/meters:v1"])
        .args(extra)
        .ok();
    last_json(&out)
}

/// A program that is not ours, checked like ours (see [`TestCommand::external`]).
fn external(program: &str) -> TestCommand {
    TestCommand::external(program)
}

/// The last line of a command's stdout as JSON: what `wms build-image` prints about the image.
#[track_caller]
fn last_json(out: &TestOutput) -> serde_json::Value {
    let stdout = out.stdout();
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e})\n{out}"))
}

/// The `digest` that [`last_json`] names.
#[track_caller]
fn printed_digest(out: &TestOutput) -> String {
    last_json(out)["digest"].as_str().unwrap().to_string()
}

/// `wms build-image` of `model` run in `dir` (also its HOME, so no Docker config of the
/// machine), dated [`EPOCH`], with the test's wms-serve.
fn build_image(dir: &Path, model: &Path) -> TestCommand {
    wms()
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("HOME", dir)
        .arg("build-image")
        .arg("--model")
        .arg(model)
        .arg("--serve-binary")
        .arg(serve_binary())
}

/// A [`build_image`] logged in to the test registry as its user with `password` on stdin
/// (`--insecure`: plain HTTP on loopback); finishing it checks that the password shows nowhere.
struct LoggedIn {
    cmd: TestCommand,
    password: String,
}

fn logged_in(dir: &Path, model: &Path, password: &str) -> LoggedIn {
    let cmd = build_image(dir, model)
        .args(["--insecure", "--username"])
        .arg(crate::servers::REGISTRY_USER)
        .arg("--password-stdin")
        .stdin(format!("{password}\n"));
    LoggedIn {
        cmd,
        password: password.to_string(),
    }
}

impl LoggedIn {
    fn args(mut self, args: &[&str]) -> Self {
        self.cmd = self.cmd.args(args);
        self
    }

    #[track_caller]
    fn ok(self) -> TestOutput {
        kept_secret(self.cmd.ok(), &self.password)
    }

    #[track_caller]
    fn fails(self, code: u8) -> TestOutput {
        kept_secret(self.cmd.fails(code), &self.password)
    }
}

#[track_caller]
fn kept_secret(out: TestOutput, password: &str) -> TestOutput {
    assert!(
        !out.stdout().contains(password) && !out.stderr().contains(password),
        "the password was printed\n{out}"
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
        let out = wms()
            .current_dir(dir.path())
            .arg("build-image")
            .args(args)
            .args(["--oci-layout", "oci", "--base", "scratch"])
            .run();
        let err = out.stderr();
        assert!(!out.status().success(), "{args:?}\n{out}");
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

    let raw = external("skopeo")
        .args(["inspect", "--raw", &image])
        .ok()
        .output
        .stdout;
    assert_eq!(wms::oci::blob::sha256_digest(&raw), digest);
    let info: serde_json::Value = serde_json::from_slice(
        &external("skopeo")
            .args(["inspect", &image])
            .ok()
            .output
            .stdout,
    )
    .unwrap();
    assert_eq!(info["Labels"]["io.wms.model.name"], "meters");
    assert_eq!(info["Labels"]["org.opencontainers.image.version"], "3");
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["Architecture"], "amd64");

    let bundle = dir.path().join("bundle");
    external("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&bundle)
        .ok();
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
    // wms-serve answers at the photo's size by default.
    let want =
        wms::data::preprocess::resize_nearest_gray(&in_process_mask(&model_path, &photo), 320, 240);
    assert_eq!(served, want);
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

/// `host:port` of the shared test registry (htpasswd auth, plain HTTP on loopback).
fn registry_host() -> &'static str {
    crate::servers::registry()
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
}

/// `wms build-image --push` of `model` on a scratch base to `tags`, logged in with `password`.
fn push(dir: &Path, model: &Path, tags: &[String], password: &str) -> LoggedIn {
    let mut cmd = logged_in(dir, model, password).args(&["--push", "--base", "scratch"]);
    for t in tags {
        cmd = cmd.args(&["--tag", t.as_str()]);
    }
    cmd
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
    let host = registry_host();
    let dir = tempfile::tempdir().unwrap();
    let tags = [
        format!("{host}/meters-push:v1"),
        format!("{host}/meters-mirror:v1"),
    ];
    let password = crate::servers::REGISTRY_PASSWORD;
    let out = push(dir.path(), &model(dir.path(), "1"), &tags, password).ok();
    let stdout = out.stdout();
    let report = pushed(&stdout);
    let count = |k: &str| report[k].as_array().unwrap().len();
    assert_eq!((count("uploaded"), count("mounted")), (4, 4), "{report}");
    let digest = printed_digest(&out);
    for t in &tags {
        assert_eq!(
            skopeo_digest(&format!("docker://{t}")).as_deref(),
            Some(digest.as_str())
        );
    }
    // skopeo copies it back out of the registry byte for byte: same manifest digest.
    let copy = dir.path().join("copied");
    let creds = format!("{}:{password}", crate::servers::REGISTRY_USER);
    external("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
        ])
        .arg(format!("docker://{}", tags[0]))
        .arg(format!("oci:{}:v1", copy.display()))
        .ok();
    let raw = external("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg(format!("oci:{}:v1", copy.display()))
        .ok()
        .output
        .stdout;
    assert_eq!(wms::oci::blob::sha256_digest(&raw), digest);

    let out = push(dir.path(), &model(dir.path(), "2"), &tags[..1], password).ok();
    let stdout = out.stdout();
    let report = pushed(&stdout);
    let count = |k: &str| report[k].as_array().unwrap().len();
    assert_eq!((count("uploaded"), count("existing")), (2, 2), "{report}");
}

/// A push of a model to `tag` with a wrong `password` is refused for its credentials: exit 1,
/// one line naming the registry `host` and the credential sources tried (the password itself
/// never shows: [`LoggedIn`] checks), no manifest under `tag`.
#[track_caller]
fn assert_refused(dir: &Path, password: &str, host: &str, tag: &str) {
    let out = push(
        dir,
        &model(dir, "1"),
        std::slice::from_ref(&tag.to_string()),
        password,
    )
    .fails(1);
    let stderr = out.stderr();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(host) && stderr.contains("--username/--password-stdin"),
        "{stderr}"
    );
    assert_eq!(skopeo_digest(&format!("docker://{tag}")), None);
}

#[test]
fn a_wrong_password_is_one_line_naming_the_registry_and_no_manifest_is_pushed() {
    let host = registry_host();
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("{host}/meters-denied:v1");
    assert_refused(dir.path(), "wrong-pw-77", host, &tag);

    let out = wms()
        .current_dir(dir.path())
        .args(["build-image", "--push", "--insecure", "--base", "scratch"])
        .args(["--model", "m.onnx"])
        .args(["--tag", "registry.example.com/meters:v1"])
        .fails(2);
    assert!(out.stderr().contains("plain HTTP is only allowed"), "{out}");
}

// Registry bases (#12): a base image made inside the test and pushed to the test registry with
// Docker v2 media types, an index over an arm64 and an amd64 image, an arm64-only index.

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The test registry, spoken to directly (as `docker push` would) to plant base images.
struct Planter {
    client: reqwest::blocking::Client,
    url: String,
}

impl Planter {
    fn new() -> Self {
        Planter {
            client: reqwest::blocking::Client::new(),
            url: crate::servers::registry().url.trim_end_matches('/').into(),
        }
    }

    fn auth(&self, r: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        r.basic_auth(
            crate::servers::REGISTRY_USER,
            Some(crate::servers::REGISTRY_PASSWORD),
        )
    }

    fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = wms::oci::blob::sha256_digest(bytes);
        let resp = self
            .auth(
                self.client
                    .post(format!("{}/v2/{repo}/blobs/uploads/", self.url)),
            )
            .send()
            .unwrap();
        assert_eq!(resp.status(), 202);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.url)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .auth(self.client.put(format!("{location}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().unwrap_or_default());
        digest
    }

    /// Puts a manifest or index under `reference`; returns its descriptor.
    fn manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        doc: &serde_json::Value,
    ) -> serde_json::Value {
        let bytes = serde_json::to_vec(doc).unwrap();
        let resp = self
            .auth(
                self.client
                    .put(format!("{}/v2/{repo}/manifests/{reference}", self.url)),
            )
            .header("content-type", media_type)
            .body(bytes.clone())
            .send()
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().unwrap_or_default());
        serde_json::json!({
            "mediaType": media_type,
            "digest": wms::oci::blob::sha256_digest(&bytes),
            "size": bytes.len(),
        })
    }
}

/// A base image: the runtime-libraries layer of a `scratch` build (so the loader, glibc and
/// libstdc++ of this machine), under a Docker v2 schema2 manifest with a Docker config, as
/// `architecture`.
struct PlantedBase {
    layer: String,
    /// The layer's tar size, as the scratch build that made it reported it.
    uncompressed: u64,
    /// Descriptors of the two images (pushed by digest only).
    amd64: serde_json::Value,
    arm64: serde_json::Value,
    /// The amd64 manifest itself, to tag it.
    amd64_manifest: serde_json::Value,
}

fn plant_base(dir: &Path, repo: &str) -> PlantedBase {
    let layout = dir.join("scratch-oci");
    let built = build(dir, &model(dir, "1"), &layout, &[]);
    let blob = |digest: &str| {
        fs_err::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(built["digest"].as_str().unwrap())).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer = blob(layer_digest);
    let planter = Planter::new();
    assert_eq!(planter.blob(repo, &layer), layer_digest);
    let image = |arch: &str| {
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "BASE_MARK=cc"], "User": "0"},
            "rootfs": {"type": "layers", "diff_ids": [config["rootfs"]["diff_ids"][0]]},
            "history": [{"created": "2023-01-01T00:00:00Z", "created_by": "test base libs"},
                        {"created_by": "ENV BASE_MARK=cc", "empty_layer": true}],
        });
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config.len(),
                       "digest": planter.blob(repo, &config)},
            "layers": [{"mediaType": DOCKER_LAYER, "size": layer.len(), "digest": layer_digest}],
        });
        let digest = wms::oci::blob::sha256_digest(&serde_json::to_vec(&manifest).unwrap());
        (
            planter.manifest(repo, &digest, DOCKER_MANIFEST, &manifest),
            manifest,
        )
    };
    let (amd64, amd64_manifest) = image("amd64");
    PlantedBase {
        layer: layer_digest.into(),
        uncompressed: built["layers"][0]["uncompressed_size"].as_u64().unwrap(),
        amd64,
        arm64: image("arm64").0,
        amd64_manifest,
    }
}

fn with_platform(descriptor: &serde_json::Value, os: &str, arch: &str) -> serde_json::Value {
    let mut d = descriptor.clone();
    d["platform"] = serde_json::json!({"os": os, "architecture": arch});
    d
}

/// The `role` of each layer in a build's JSON, in order.
fn layer_roles(built: &serde_json::Value) -> Vec<&str> {
    built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["role"].as_str().unwrap())
        .collect()
}

/// `wms build-image` with the test registry's credentials on stdin and `extra` flags.
fn build_with_login(dir: &Path, model: &Path, extra: &[&str]) -> LoggedIn {
    logged_in(dir, model, crate::servers::REGISTRY_PASSWORD).args(extra)
}

/// A Docker v2 base on the test registry: its layer comes first (mounted into the target
/// repository, not uploaded; an OCI media type in our OCI manifest), its Env is inherited, the
/// manifest names it in `base.name`/`base.digest`; skopeo reads the pushed image, umoci unpacks
/// the layout (base blob included) and the entrypoint answers /ping on the base's libraries. An
/// index over arm64 and amd64 resolves to the amd64 image.
#[test]
fn a_registry_base_goes_first_is_mounted_and_its_image_runs() {
    let host = registry_host();
    let dir = tempfile::tempdir().unwrap();
    let base = plant_base(dir.path(), "base/cc");
    let planter = Planter::new();
    planter.manifest("base/cc", "1", DOCKER_MANIFEST, &base.amd64_manifest);
    let model_path = model(dir.path(), "4");
    let layout = dir.path().join("oci");
    let base_ref = format!("{host}/base/cc:1");
    let tag = format!("{host}/meters-based:v1");
    let built = last_json(
        &build_with_login(
            dir.path(),
            &model_path,
            &[
                "--base",
                &base_ref,
                "--push",
                "--tag",
                &tag,
                "--oci-layout",
                "oci",
            ],
        )
        .ok(),
    );
    let digest = built["digest"].as_str().unwrap();
    assert_eq!(
        layer_roles(&built),
        ["base", "wms-serve + ONNX Runtime", "model + config"],
        "no runtime layer"
    );
    let count = |k: &str| built["pushed"][k].as_array().unwrap().len();
    assert_eq!(
        built["pushed"]["mounted"],
        serde_json::json!([base.layer]),
        "{built}"
    );
    // The base layer's real size, from inflating it to check its diff_id.
    assert_eq!(built["layers"][0]["uncompressed_size"], base.uncompressed);
    assert!(base.uncompressed > built["layers"][0]["size"].as_u64().unwrap());
    assert_eq!((count("uploaded"), count("existing")), (3, 0), "{built}");

    assert_eq!(
        skopeo_digest(&format!("docker://{tag}")).as_deref(),
        Some(digest)
    );
    let creds = format!(
        "{}:{}",
        crate::servers::REGISTRY_USER,
        crate::servers::REGISTRY_PASSWORD
    );
    let inspect = |raw: bool| -> serde_json::Value {
        let mut cmd = external("skopeo").args(["inspect", "--tls-verify=false", "--creds", &creds]);
        if raw {
            cmd = cmd.arg("--raw");
        }
        serde_json::from_slice(&cmd.arg(format!("docker://{tag}")).ok().output.stdout).unwrap()
    };
    let info = inspect(false);
    assert_eq!(info["Layers"][0], base.layer.as_str(), "{info}");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3, "{info}");
    let raw = inspect(true);
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.base.name"],
        base_ref.as_str()
    );
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.base.digest"],
        base.amd64["digest"]
    );

    let bundle = dir.path().join("bundle");
    let (args, env, cwd) = umoci_unpack(&layout, "v1", &bundle);
    assert!(env.iter().any(|e| e == "BASE_MARK=cc"), "{env:?}");
    assert!(
        env.iter().any(|e| e == "PATH=/usr/local/bin:/usr/bin:/bin"),
        "{env:?}"
    );
    // The base's PATH would also be the PATH `unshare` looks up the host's `chroot` in; the
    // entrypoint is an absolute path and needs none.
    let env: Vec<String> = env
        .into_iter()
        .filter(|e| !e.starts_with("PATH="))
        .collect();
    let mut server = Chrooted::start(&bundle.join("rootfs"), &args, &env, &cwd);
    server.wait_ready();
    drop(server);

    // An OCI index over arm64 and amd64: the amd64 image is the base.
    planter.manifest(
        "base/cc",
        "multi",
        OCI_INDEX,
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            with_platform(&base.arm64, "linux", "arm64"),
            with_platform(&base.amd64, "linux", "amd64"),
        ]}),
    );
    build_with_login(
        dir.path(),
        &model_path,
        &[
            "--base",
            &format!("{host}/base/cc:multi"),
            "--oci-layout",
            "multi",
        ],
    )
    .ok();
    let info: serde_json::Value = serde_json::from_slice(
        &external("skopeo")
            .args([
                "inspect",
                &format!("oci:{}", dir.path().join("multi").display()),
            ])
            .ok()
            .output
            .stdout,
    )
    .unwrap();
    assert_eq!(
        info["Labels"]["org.opencontainers.image.base.digest"],
        base.amd64["digest"]
    );
    assert_eq!(info["Layers"][0], base.layer.as_str());
}

/// A base with no linux/amd64 image, and a base that does not exist: one line naming the ref
/// and what the registry has (or answered), exit 1, nothing written.
#[test]
fn an_arm64_only_or_missing_base_is_a_one_line_error() {
    let host = registry_host();
    let dir = tempfile::tempdir().unwrap();
    let base = plant_base(dir.path(), "base/arm");
    Planter::new().manifest(
        "base/arm",
        "1",
        OCI_INDEX,
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            with_platform(&base.arm64, "linux", "arm64"),
        ]}),
    );
    let model_path = model(dir.path(), "1");
    let arm = format!("{host}/base/arm:1");
    let missing = format!("{host}/base/nope:1");
    for (base_ref, want) in [
        (&arm, &["no linux/amd64", "linux/arm64", arm.as_str()][..]),
        (&missing, &["not found", "404", missing.as_str()][..]),
    ] {
        let err = build_with_login(
            dir.path(),
            &model_path,
            &["--base", base_ref, "--oci-layout", "oci"],
        )
        .fails(1)
        .stderr();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for w in want {
            assert!(err.contains(w), "{w}: {err}");
        }
    }
    assert!(!dir.path().join("oci/index.json").exists());
}

/// A base whose layer does not inflate to the diff_id its config names (a consistent manifest
/// and digests, so only the diff_id check can catch it): one line naming the layer, the diff_id
/// and what it inflates to.
#[test]
fn a_base_layer_that_does_not_match_its_diff_id_is_refused() {
    let host = registry_host().to_string();
    let dir = tempfile::tempdir().unwrap();
    let planter = Planter::new();
    let tar = b"pretend this is the tar of a layer".to_vec();
    let layer = wms::oci::blob::gzip(&tar);
    let layer_digest = planter.blob("base/diffid", &layer);
    let claimed = wms::oci::blob::sha256_digest(b"another tar");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [claimed]},
    }))
    .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.len(),
                   "digest": planter.blob("base/diffid", &config)},
        "layers": [{"mediaType": DOCKER_LAYER, "size": layer.len(), "digest": layer_digest}],
    });
    planter.manifest("base/diffid", "1", DOCKER_MANIFEST, &manifest);
    let err = build_with_login(
        dir.path(),
        &model(dir.path(), "1"),
        &[
            "--base",
            &format!("{host}/base/diffid:1"),
            "--oci-layout",
            "oci",
        ],
    )
    .fails(1)
    .stderr();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for want in [
        "diff_id",
        layer_digest.as_str(),
        claimed.as_str(),
        &wms::oci::blob::sha256_digest(&tar),
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!dir.path().join("oci/index.json").exists());
}

/// A base whose registry cannot be reached (a loopback port nobody listens on): one line naming
/// the ref and the registry, suggesting `--base scratch` or a mirror; the model is checked before
/// (a bad model is named without any network traffic).
#[test]
fn an_unreachable_base_registry_suggests_scratch_or_a_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base_ref = format!("127.0.0.1:{port}/distroless/cc-debian12:nonroot");
    let model_path = model(dir.path(), "1");
    let not_onnx = dir.path().join("bad.onnx");
    fs_err::write(&not_onnx, b"not a model").unwrap();
    for (model, want) in [
        (
            &model_path,
            &[
                base_ref.as_str(),
                "cannot reach",
                "--base scratch",
                "mirror",
            ][..],
        ),
        (&not_onnx, &["not an ONNX model"][..]),
    ] {
        let err = build_image(dir.path(), model)
            .args(["--insecure", "--oci-layout", "oci", "--base"])
            .arg(&base_ref)
            .fails(1)
            .stderr();
        // Retries are logged as warnings; the error is one line.
        assert_eq!(error_lines(&err).len(), 1, "{err}");
        for w in want {
            assert!(err.contains(w), "{w}: {err}");
        }
    }
    assert!(!dir.path().join("oci/index.json").exists());
}

/// The lines of stderr that are not log records of retries (`WARN`): the error itself.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .trim()
        .lines()
        .filter(|l| !l.contains(" WARN"))
        .collect()
}

/// The request line and headers of one HTTP/1.1 request, read byte by byte up to the blank
/// line (the stand-in servers below never need the body).
fn read_request_head(stream: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && std::io::Read::read(stream, &mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Stands in for a misbehaving registry (the real one verifies digests, so it cannot serve a bad
/// blob): a thread answering canned responses by path, one request per connection, no auth.
fn misbehaving_registry(routes: Vec<(String, &'static str, Vec<u8>)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let head = read_request_head(&mut stream);
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let response = match routes.iter().find(|(p, _, _)| *p == path) {
                Some((_, media_type, body)) => http_response("200 OK", media_type, body),
                None => http_response("404 Not Found", "text/plain", b""),
            };
            let _ = std::io::Write::write_all(&mut stream, &response);
        }
    });
    addr
}

/// A registry that serves a layer whose bytes do not hash to the digest its manifest names:
/// refused before anything is written.
#[test]
fn a_base_blob_that_does_not_match_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layer = b"pretend this is a gzip tar".to_vec();
    let layer_digest = wms::oci::blob::sha256_digest(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = wms::oci::blob::sha256_digest(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": DOCKER_LAYER, "size": layer.len(), "digest": layer_digest}],
    }))
    .unwrap();
    let mut tampered = layer.clone();
    tampered[0] ^= 1;
    let addr = misbehaving_registry(vec![
        ("/v2/base/bad/manifests/1".into(), DOCKER_MANIFEST, manifest),
        (
            format!("/v2/base/bad/blobs/{config_digest}"),
            "application/octet-stream",
            config,
        ),
        (
            format!("/v2/base/bad/blobs/{layer_digest}"),
            "application/octet-stream",
            tampered,
        ),
    ]);
    let err = build_image(dir.path(), &model(dir.path(), "1"))
        .args(["--insecure", "--oci-layout", "oci", "--base"])
        .arg(format!("{addr}/base/bad:1"))
        .fails(1)
        .stderr();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("does not match its digest") && err.contains(&layer_digest),
        "{err}"
    );
    assert!(!dir.path().join("oci/index.json").exists());
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
    let htpasswd = external("htpasswd")
        .args(["-Bbn", &creds.username, &creds.password])
        .ok();
    let registry = crate::servers::start_registry_with(&htpasswd.output.stdout);
    let host = registry.url.trim_start_matches("http://");

    let dir = tempfile::tempdir().unwrap();
    let tag = format!("{host}/meters-ecr:v1");
    // TestCommand's clean environment has no AWS profile, config, credentials or endpoint of
    // the machine: only what is set here.
    let out = build_image(dir.path(), &model(dir.path(), "1"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env(wms::env_vars::AWS_ENDPOINT_URL_ECR, &moto.url)
        .args([
            "--push",
            "--insecure",
            "--ecr",
            "--base",
            "scratch",
            "--tag",
            &tag,
        ])
        .ok();
    assert!(
        !out.stdout().contains(&creds.password) && !out.stderr().contains(&creds.password),
        "{out}"
    );
    let digest = printed_digest(&out);
    let inspect = |user: &str, password: &str| {
        external("skopeo")
            .args(["inspect", "--tls-verify=false", "--creds"])
            .arg(format!("{user}:{password}"))
            .arg(format!("docker://{tag}"))
    };
    let read = inspect(&creds.username, &creds.password).ok();
    let info: serde_json::Value = serde_json::from_slice(&read.output.stdout).unwrap();
    assert_eq!(info["Digest"].as_str(), Some(digest.as_str()));
    let other = inspect(
        crate::servers::REGISTRY_USER,
        crate::servers::REGISTRY_PASSWORD,
    )
    .run();
    assert!(
        !other.status().success(),
        "the registry must accept only ECR's credentials\n{other}"
    );
}

/// SBOM (#12): the push attaches an SPDX 2.3 document whose `subject` is the image; distribution
/// 2.8 has no referrers API, so the `sha256-<hex>` tag of the referrers tag schema lists it.
/// skopeo reads that index and the artifact manifest; the document comes back over plain HTTP.
#[test]
fn the_sbom_is_pushed_as_a_referrer_of_the_image_and_found_through_the_tag_schema() {
    let registry = crate::servers::registry();
    let host = registry_host();
    let dir = tempfile::tempdir().unwrap();
    let model_path = model(dir.path(), "4");
    // The pushes go through a proxy that only records the requests.
    let proxy = cutting_proxy(host.to_string(), 0);
    let proxied_tag = format!("{}/meters-sbom:v1", proxy.addr);
    let password = crate::servers::REGISTRY_PASSWORD;
    let out = push(
        dir.path(),
        &model_path,
        std::slice::from_ref(&proxied_tag),
        password,
    )
    .ok();
    let stdout = out.stdout();
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let digest = result["digest"].as_str().unwrap();
    let sbom_digest = result["sbom_digest"].as_str().unwrap();
    let referrers_tag = digest.replacen(':', "-", 1);
    assert_eq!(
        result["sbom_referrers"][0]["via"]["tag"].as_str(),
        Some(referrers_tag.as_str()),
        "{result}"
    );
    // The referrers API is asked first; distribution 2.8 has none (404), then the tag schema.
    let log = proxy.log.lock().unwrap().clone();
    let position = |prefix: &str| log.iter().position(|l| l.starts_with(prefix));
    let asked = position(&format!("GET /v2/meters-sbom/referrers/{digest} "))
        .unwrap_or_else(|| panic!("no referrers request: {log:?}"));
    let tagged = position(&format!("PUT /v2/meters-sbom/manifests/{referrers_tag} "))
        .unwrap_or_else(|| panic!("no referrers tag: {log:?}"));
    assert!(asked < tagged, "{log:?}");

    let creds = format!("{}:{password}", crate::servers::REGISTRY_USER);
    let raw = |reference: &str| -> serde_json::Value {
        let out = external("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                &creds,
                &format!("docker://{host}/meters-sbom{reference}"),
            ])
            .ok();
        serde_json::from_slice(&out.output.stdout).unwrap()
    };
    let index = raw(&format!(":{referrers_tag}"));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["digest"], sbom_digest);
    assert_eq!(entries[0]["artifactType"], "application/spdx+json");

    let artifact = raw(&format!("@{sbom_digest}"));
    assert_eq!(artifact["artifactType"], "application/spdx+json");
    assert_eq!(artifact["subject"]["digest"], digest);
    assert_eq!(
        artifact["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let layer = &artifact["layers"][0];
    assert_eq!(layer["mediaType"], "application/spdx+json");
    let document = reqwest::blocking::Client::new()
        .get(format!(
            "{}/v2/meters-sbom/blobs/{}",
            registry.url,
            layer["digest"].as_str().unwrap()
        ))
        .basic_auth(crate::servers::REGISTRY_USER, Some(password))
        .send()
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(
        wms::oci::blob::sha256_digest(&document),
        layer["digest"].as_str().unwrap()
    );
    let spdx: serde_json::Value = serde_json::from_slice(&document).unwrap();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert_eq!(spdx["dataLicense"], "CC0-1.0");
    let packages = spdx["packages"].as_array().unwrap();
    let named = |name: &str| packages.iter().find(|p| p["name"] == name);
    let model_sha = wms::oci::blob::sha256_digest(&fs_err::read(&model_path).unwrap());
    let model_pkg = named("meters").expect("the model package");
    assert_eq!(model_pkg["versionInfo"], "4");
    assert_eq!(
        model_pkg["checksums"][0]["checksumValue"].as_str(),
        model_sha.strip_prefix("sha256:")
    );
    let ort = named("onnxruntime").expect("an onnxruntime package");
    assert!(
        ort["versionInfo"].as_str().unwrap().starts_with("1."),
        "{ort}"
    );
    assert!(named("ort").is_some() && named("axum").is_some());
    assert!(named("tch").is_none() && named("torch-sys").is_none());
    let image_pkg = &packages[0];
    assert_eq!(image_pkg["versionInfo"], digest);
    assert!(image_pkg["comment"].as_str().unwrap().contains("scratch"));

    // A second push of the same image (same first tag, so the same SBOM) leaves one entry.
    push(dir.path(), &model_path, &[proxied_tag], password).ok();
    assert_eq!(
        raw(&format!(":{referrers_tag}"))["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The OCI layout lists the SBOM's artifact manifest without a ref name; its blobs are there.
#[test]
fn the_oci_layout_lists_the_sbom_untagged() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    let built = build(dir.path(), &model(dir.path(), "5"), &layout, &[]);
    let sbom_digest = built["sbom_digest"].as_str().unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == sbom_digest)
        .expect("the SBOM's entry");
    assert_eq!(entry["artifactType"], "application/spdx+json");
    assert!(entry["annotations"]["org.opencontainers.image.ref.name"].is_null());
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let artifact: serde_json::Value =
        serde_json::from_slice(&fs_err::read(blob(sbom_digest)).unwrap()).unwrap();
    assert_eq!(artifact["subject"]["digest"], built["digest"]);
    let spdx: serde_json::Value = serde_json::from_slice(
        &fs_err::read(blob(artifact["layers"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    // skopeo still reads the image under its tag.
    external("skopeo")
        .args(["inspect", "--raw", &format!("oci:{}:v1", layout.display())])
        .ok();
}

/// `umoci unpack` of `tag` in the layout: the runtime spec's process args, env and cwd.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> (Vec<String>, Vec<String>, String) {
    external("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .ok();
    let spec: serde_json::Value =
        serde_json::from_slice(&fs_err::read(bundle.join("config.json")).unwrap()).unwrap();
    let process = &spec["process"];
    (
        serde_json::from_value(process["args"].clone()).unwrap(),
        serde_json::from_value(process["env"].clone()).unwrap(),
        process["cwd"].as_str().unwrap().to_string(),
    )
}

/// A TCP proxy in front of the real registry that cuts blob uploads: each connection carries
/// one request (it adds `Connection: close`, which the registry echoes, so the client opens a
/// new connection per request); the first `cuts` blob `PUT`s are cut off after half of their
/// body has gone upstream (both sides closed, the registry left with a partial upload). Returns
/// its address, the number of uploads it cut and the request lines it saw.
fn cutting_proxy(upstream: String, cuts: usize) -> CuttingProxy {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = cut.clone();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let upstream = upstream.clone();
            let counter = counter.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let head = read_request_head(&mut client);
                if let Some(line) = head.lines().next() {
                    seen.lock().unwrap().push(line.to_string());
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let line = head.lines().next().unwrap_or_default().to_string();
                let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                    return;
                };
                let head = format!(
                    "{}\r\nConnection: close\r\n\r\n",
                    head.trim_end_matches("\r\n")
                );
                let _ = server.write_all(head.as_bytes());
                let is_upload = line.starts_with("PUT ") && line.contains("/blobs/uploads/");
                let cutting = is_upload
                    && counter
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                            (n < cuts).then_some(n + 1)
                        })
                        .is_ok();
                let forward = if cutting { length / 2 } else { length };
                let mut body = vec![0u8; forward];
                if client.read_exact(&mut body).is_err() {
                    return;
                }
                let _ = server.write_all(&body);
                if cutting {
                    // Unread body in our receive buffer: closing sends the client a reset.
                    let _ = server.shutdown(std::net::Shutdown::Both);
                    return;
                }
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    CuttingProxy { addr, cut, log }
}

struct CuttingProxy {
    addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A connection cut in the middle of a blob upload, in front of the real registry: the upload
/// starts over in a fresh session and the push succeeds (one retry, one cut), the image
/// complete (skopeo reads it straight from the registry). A registry whose uploads are always
/// cut: one line naming the blob and the registry, exit 1, and no manifest under the tag.
#[test]
fn a_dropped_upload_is_retried_in_a_fresh_session_and_never_leaves_a_manifest() {
    let registry = crate::servers::registry();
    let host = registry_host().to_string();
    let dir = tempfile::tempdir().unwrap();
    let password = crate::servers::REGISTRY_PASSWORD;

    let CuttingProxy {
        addr: proxy, cut, ..
    } = cutting_proxy(host.clone(), 1);
    let out = push(
        dir.path(),
        &model(dir.path(), "1"),
        &[format!("{proxy}/meters-cut-once:v1")],
        password,
    )
    .ok();
    let stdout = out.stdout();
    assert_eq!(cut.load(std::sync::atomic::Ordering::SeqCst), 1);
    let report = pushed(&stdout);
    assert_eq!(report["retries"], 1, "{report}");
    let digest = printed_digest(&out);
    assert_eq!(
        skopeo_digest(&format!("docker://{host}/meters-cut-once:v1")).as_deref(),
        Some(digest.as_str())
    );

    let CuttingProxy {
        addr: proxy, cut, ..
    } = cutting_proxy(host.clone(), usize::MAX);
    let stderr = push(
        dir.path(),
        &model(dir.path(), "2"),
        &[format!("{proxy}/meters-cut-always:v1")],
        password,
    )
    .fails(1)
    .stderr();
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(
        stderr.contains(&proxy)
            && stderr.contains("failed 4 times")
            && stderr.contains("no manifest"),
        "{stderr}"
    );
    assert_eq!(cut.load(std::sync::atomic::Ordering::SeqCst), 4);
    let manifest = reqwest::blocking::Client::new()
        .get(format!(
            "{}/v2/meters-cut-always/manifests/v1",
            registry.url
        ))
        .basic_auth(crate::servers::REGISTRY_USER, Some(password))
        .send()
        .unwrap();
    assert_eq!(manifest.status(), 404);
    assert_eq!(
        skopeo_digest(&format!("docker://{host}/meters-cut-always:v1")),
        None
    );
}

/// An `--oci-layout` that cannot be written is one line naming it; nothing half-written is left
/// claiming to be an image.
#[test]
fn an_unwritable_oci_layout_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("layout");
    fs_err::write(&blocker, b"a file where the layout should go").unwrap();
    let stderr = build_image(dir.path(), &model(dir.path(), "1"))
        .args(["--base", "scratch", "--oci-layout"])
        .arg(&blocker)
        .fails(1)
        .stderr();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("layout"), "{stderr}");
    assert_eq!(
        fs_err::read(&blocker).unwrap(),
        b"a file where the layout should go"
    );
}

// Bearer tokens (#12): the real registry with `auth: token`, and the token service it names as
// its realm, run by the test.

/// The registry's `service` and `issuer` (the token's `aud` and `iss`).
const TOKEN_SERVICE: &str = "wms-test-registry";
const TOKEN_ISSUER: &str = "wms-test-issuer";

/// A token service as the distribution token-auth spec describes it (`docs/spec/auth/token.md`,
/// and what Docker Hub's auth.docker.io or cesanta/docker_auth do): `GET /token?service=…&
/// scope=…` with Basic credentials answers `{"token", "access_token", "expires_in",
/// "issued_at"}`, the token an RS256 JWT whose header carries the signing certificate in `x5c`
/// and whose claims are `iss`/`sub`/`aud`/`exp`/`nbf`/`iat`/`jti` and `access` = the requested
/// scopes; wrong or missing credentials get 401. The key and self-signed certificate come from
/// the `openssl` CLI, which also signs (`openssl dgst -sha256 -sign`), so the registry's own
/// verification (distribution 2.8 `registry/auth/token/token.go`: issuer, audience, exp/nbf with
/// 60 s leeway, x5c chained to `rootcertbundle`, the signature) decides whether a token is good.
struct TokenService {
    addr: String,
    cert: PathBuf,
    /// One line per token request: `granted <scopes>` or `refused`.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn token_service(dir: &Path) -> TokenService {
    let key = dir.join("token-key.pem");
    let cert = dir.join("token-cert.pem");
    external("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=wms-test-token-issuer", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .ok();
    let der = external("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .ok()
        .output
        .stdout;
    use base64::Engine as _;
    let x5c = base64::engine::general_purpose::STANDARD.encode(der);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let head = read_request_head(&mut stream);
            let target = head.split_whitespace().nth(1).unwrap_or_default();
            let url = reqwest::Url::parse(&format!("http://token{target}")).unwrap();
            let authorized = head.lines().any(|l| {
                let Some((name, value)) = l.split_once(':') else {
                    return false;
                };
                let want = format!(
                    "{}:{}",
                    crate::servers::REGISTRY_USER,
                    crate::servers::REGISTRY_PASSWORD
                );
                name.eq_ignore_ascii_case("authorization")
                    && value.trim()
                        == format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(want)
                        )
            });
            let service = url
                .query_pairs()
                .find(|(k, _)| k == "service")
                .map(|(_, v)| v.into_owned());
            let response = if url.path() != "/token" || service.as_deref() != Some(TOKEN_SERVICE) {
                http_response("404 Not Found", "application/json", b"{}")
            } else if !authorized {
                seen.lock().unwrap().push("refused".into());
                http_response(
                    "401 Unauthorized",
                    "application/json",
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
                )
            } else {
                let scopes: Vec<String> = url
                    .query_pairs()
                    .filter(|(k, _)| k == "scope")
                    .map(|(_, v)| v.into_owned())
                    .collect();
                let access: Vec<serde_json::Value> = scopes
                    .iter()
                    .filter_map(|s| {
                        let (kind, rest) = s.split_once(':')?;
                        let (name, actions) = rest.rsplit_once(':')?;
                        Some(serde_json::json!({
                            "type": kind, "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>(),
                        }))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let token = jwt(
                    &key,
                    &serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]}),
                    &serde_json::json!({
                        "iss": TOKEN_ISSUER, "sub": crate::servers::REGISTRY_USER,
                        "aud": TOKEN_SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                        "jti": format!("wms-test-{n}-{now}"), "access": access,
                    }),
                );
                seen.lock()
                    .unwrap()
                    .push(format!("granted {}", scopes.join(" ")));
                let body = serde_json::json!({
                    "token": token, "access_token": token, "expires_in": 300,
                    "issued_at": wms::oci::rfc3339(now),
                });
                http_response(
                    "200 OK",
                    "application/json",
                    &serde_json::to_vec(&body).unwrap(),
                )
            };
            let _ = std::io::Write::write_all(&mut stream, &response);
        }
    });
    TokenService { addr, cert, log }
}

fn http_response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// `header.claims.signature`, base64url without padding, RS256 by `openssl dgst -sha256 -sign`.
fn jwt(key: &Path, header: &serde_json::Value, claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let signature = external("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(input.as_bytes())
        .ok()
        .output
        .stdout;
    format!("{input}.{}", b64(&signature))
}

/// The bearer flow against the real registry with `auth: token`: it answers our requests with a
/// `Bearer realm=…,service=…,scope=…` challenge, wms gets a token for the push scopes from the
/// realm with its Basic credentials and pushes; skopeo reads the image through the same flow;
/// the image is then pulled as the base of another build (the pull scope, then a mount of its
/// layers with a token for both repositories). A wrong password is refused by the token service:
/// one line naming the registry and the credential sources tried, no secret, no manifest.
#[test]
fn bearer_tokens_from_the_registrys_realm_push_and_pull_a_base() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_service(dir.path());
    let registry = crate::servers::start_registry_with_auth(&format!(
        "{{token: {{realm: \"http://{}/token\", service: {TOKEN_SERVICE}, issuer: {TOKEN_ISSUER}, rootcertbundle: {}}}}}",
        tokens.addr,
        tokens.cert.display()
    ));
    let host = registry.url.trim_start_matches("http://").to_string();
    // The registry asks for a token, and takes neither Basic credentials nor anonymous requests.
    let client = reqwest::blocking::Client::new();
    let resp = client
        .get(format!("{}/v2/", registry.url))
        .basic_auth(
            crate::servers::REGISTRY_USER,
            Some(crate::servers::REGISTRY_PASSWORD),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"http://{}/token\"", tokens.addr)),
        "{challenge}"
    );

    let tag = format!("{host}/meters-bearer:v1");
    let password = crate::servers::REGISTRY_PASSWORD;
    let out = push(
        dir.path(),
        &model(dir.path(), "1"),
        std::slice::from_ref(&tag),
        password,
    )
    .ok();
    let digest = printed_digest(&out);
    assert!(
        tokens
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == "granted repository:meters-bearer:pull,push"),
        "{:?}",
        tokens.log.lock().unwrap()
    );
    assert_eq!(
        skopeo_digest(&format!("docker://{tag}")).as_deref(),
        Some(digest.as_str())
    );

    // Pulled as a base through the bearer flow; its layers are mounted into the new repository.
    let built = last_json(
        &build_with_login(
            dir.path(),
            &model(dir.path(), "2"),
            &[
                "--base",
                &tag,
                "--push",
                "--tag",
                &format!("{host}/meters-on-bearer:v1"),
            ],
        )
        .ok(),
    );
    assert_eq!(
        layer_roles(&built),
        [
            "base",
            "base",
            "base",
            "wms-serve + ONNX Runtime",
            "model + config"
        ],
        "{built}"
    );
    assert_eq!(
        built["pushed"]["mounted"].as_array().unwrap().len(),
        3,
        "{built}"
    );
    let log = tokens.log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l == "granted repository:meters-bearer:pull"),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l
                == "granted repository:meters-on-bearer:pull,push repository:meters-bearer:pull"),
        "{log:?}"
    );

    // A wrong password: the token service refuses it.
    let denied = format!("{host}/meters-bearer-denied:v1");
    assert_refused(dir.path(), "wrong-pw-91", &host, &denied);
    assert!(
        tokens.log.lock().unwrap().iter().any(|l| l == "refused"),
        "the token service saw the wrong password"
    );
}
