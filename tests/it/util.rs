//! Shared helpers for integration tests: paths of the built binaries, the project venv, and
//! [`TestCommand`], the one way a test runs one of our binaries and checks how it ended.
//!
//! `TestCommand` follows ripgrep's `tests/util.rs`: a builder around `std::process::Command` whose
//! `.ok()` / `.fails(code)` assert the exit status and, when it is wrong, panic with everything
//! needed to see why (command line, working directory, status, stdout, stderr) at the caller's
//! line (`#[track_caller]`). It starts from a clean environment, so a developer's shell (AWS
//! credentials, `GITHUB_*`, `RUST_LOG`, …) cannot change what a test sees. It must not hide
//! failures: nothing here retries or loosens a check.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

/// Where one of the package's binaries was built for this test run.
pub fn bin_path(name: &str) -> PathBuf {
    match name {
        "wms" => PathBuf::from(env!("CARGO_BIN_EXE_wms")),
        "wms-serve" => PathBuf::from(env!("CARGO_BIN_EXE_wms-serve")),
        #[cfg(feature = "train")]
        "wms-train" => PathBuf::from(env!("CARGO_BIN_EXE_wms-train")),
        other => panic!("unknown binary {other}"),
    }
}

/// A command for one of the package's binaries with the developer's environment minus what
/// changes our binaries' behaviour. Prefer [`wms`] / [`TestCommand`]; this stays for tests that
/// drive a long-running child themselves.
pub fn bin(name: &str) -> Command {
    let mut cmd = Command::new(bin_path(name));
    // Image layers cached by `wms build-image` stay out of the user's ~/.cache.
    cmd.env("WMS_CACHE_DIR", test_cache_dir())
        .env("WMS_TIMING_DIR", test_timing_dir())
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("RUST_LOG");
    cmd
}

/// The project venv's Python (pinned torch, onnxruntime, onnx). `make` exports `WMS_VENV`
/// (CI keeps the venv outside the clone); a plain `cargo test` falls back to `./.venv`.
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// The project venv (see [`python`]).
pub fn venv() -> PathBuf {
    std::env::var_os("WMS_VENV")
        .or_else(|| std::env::var_os("VIRTUAL_ENV"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"))
}

fn test_cache_dir() -> PathBuf {
    std::env::temp_dir().join("wms-test-cache")
}

/// Timing records of commands a test runs (`wms deploy` writes one per task) go here unless the
/// test sets `WMS_TIMING_DIR` itself; without it they would land in the checkout's
/// `comparison/records/` (the default for a command run inside a git work tree).
fn test_timing_dir() -> PathBuf {
    std::env::temp_dir().join(format!("wms-test-timing-{}", std::process::id()))
}

/// `wms` as a [`TestCommand`].
pub fn wms() -> TestCommand {
    TestCommand::new("wms")
}

/// Variables passed through from the test's own environment: what finds programs and libraries
/// (PATH, the loader path, libtorch through the venv's torch, an explicit onnxruntime), nothing
/// that configures what our binaries do.
const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "LIBTORCH_USE_PYTORCH",
    "ORT_DYLIB_PATH",
    "RUST_BACKTRACE",
];

/// One run of one of our binaries, built up like `std::process::Command`.
pub struct TestCommand {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    github_output: Option<PathBuf>,
    step_summary: Option<PathBuf>,
    /// Files the command made for itself (step outputs, summary, event payload).
    scratch: Option<tempfile::TempDir>,
}

impl TestCommand {
    /// `name` (a binary of this package) in a clean environment: [`PASSED_THROUGH`], the project
    /// venv, a test-only image cache, telemetry off, and no AWS config or instance metadata.
    pub fn new(name: &str) -> Self {
        let mut cmd = Command::new(bin_path(name));
        cmd.env_clear();
        for var in PASSED_THROUGH {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        let venv = venv();
        cmd.env("VIRTUAL_ENV", &venv)
            .env("WMS_VENV", &venv)
            .env("WMS_CACHE_DIR", test_cache_dir())
            .env("WMS_TIMING_DIR", test_timing_dir())
            .env("DO_NOT_TRACK", "1")
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .env("DVC_NO_ANALYTICS", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // Empty AWS config and credentials: nothing from the developer's ~/.aws.
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        TestCommand {
            cmd,
            stdin: None,
            github_output: None,
            step_summary: None,
            scratch: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Bytes written to the child's stdin (otherwise stdin is empty).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs as an Actions step: `GITHUB_OUTPUT` names `path`, which [`TestOutput::outputs`] reads
    /// back after the run the way the runner would.
    pub fn github_output(mut self, path: impl AsRef<Path>) -> Self {
        self.cmd.env("GITHUB_OUTPUT", path.as_ref());
        self.github_output = Some(path.as_ref().to_path_buf());
        self
    }

    /// Like [`TestCommand::github_output`] with a fresh file of its own.
    pub fn step_outputs(mut self) -> Self {
        let path = self.scratch("github_output");
        self.github_output(path)
    }

    /// Runs as an Actions step with a job summary file of its own (`GITHUB_STEP_SUMMARY`), read
    /// back into [`TestOutput::summary`].
    pub fn step_summary(mut self) -> Self {
        let path = self.scratch("step_summary.md");
        self.cmd.env("GITHUB_STEP_SUMMARY", &path);
        self.step_summary = Some(path);
        self
    }

    /// Runs as a step triggered by `event` with `payload` (`GITHUB_EVENT_NAME`/`_PATH`).
    pub fn github_event(mut self, event: &str, payload: &serde_json::Value) -> Self {
        let path = self.scratch("event.json");
        fs_err::write(&path, payload.to_string()).expect("write the event payload");
        self.cmd
            .env("GITHUB_EVENT_NAME", event)
            .env("GITHUB_EVENT_PATH", &path);
        self
    }

    /// A path named `name` in this command's own temp dir (made on first use, removed with it).
    pub fn scratch(&mut self, name: &str) -> PathBuf {
        self.scratch
            .get_or_insert_with(|| tempfile::tempdir().expect("temp dir for a test command"))
            .path()
            .join(name)
    }

    /// The command itself, for a test that drives the child (signals, interactive stdin).
    pub fn into_command(self) -> Command {
        self.cmd
    }

    /// The command line and its changes to the environment, as a panic message shows them.
    pub fn describe(&self) -> String {
        let mut line = vec![shell_word(self.cmd.get_program())];
        line.extend(self.cmd.get_args().map(shell_word));
        let dir = self
            .cmd
            .get_current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| {
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            });
        format!("command: {}\ncwd: {dir}", line.join(" "))
    }

    /// Runs to the end and returns how it ended, asserting nothing.
    #[track_caller]
    pub fn run(mut self) -> TestOutput {
        let description = self.describe();
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start it: {e}\n{description}"));
        if let Some(bytes) = self.stdin.take() {
            let mut pipe = child.stdin.take().expect("piped stdin");
            // Written from a thread: a child that does not read its input must not deadlock us.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for it: {e}\n{description}"));
        let outputs = self.github_output.as_deref().map(read_outputs);
        let summary = self
            .step_summary
            .as_deref()
            .map(|p| fs_err::read_to_string(p).unwrap_or_default());
        TestOutput {
            description,
            outputs: outputs.unwrap_or_default(),
            summary: summary.unwrap_or_default(),
            output,
        }
    }

    /// Runs and asserts that it exited 0.
    #[track_caller]
    pub fn ok(self) -> TestOutput {
        let out = self.run();
        if !out.status().success() {
            panic!("expected success\n{out}");
        }
        out
    }

    /// Runs and asserts that it exited with `code` (see `wms::exit` for ours).
    #[track_caller]
    pub fn fails(self, code: u8) -> TestOutput {
        assert_ne!(code, 0, "fails(0): use ok()");
        let out = self.run();
        if out.status().code() != Some(i32::from(code)) {
            panic!("expected exit code {code}\n{out}");
        }
        out
    }
}

/// How a [`TestCommand`] ended.
pub struct TestOutput {
    description: String,
    /// Step outputs from the `$GITHUB_OUTPUT` file (empty when there was none).
    pub outputs: BTreeMap<String, String>,
    /// The job summary written under [`TestCommand::step_summary`] (empty when none).
    pub summary: String,
    pub output: Output,
}

impl TestOutput {
    pub fn status(&self) -> ExitStatus {
        self.output.status
    }

    /// Stdout as text (lossy: a test about bytes reads `output.stdout`).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// One step output; panics (with the run) when the command did not write it.
    #[track_caller]
    pub fn output(&self, name: &str) -> &str {
        match self.outputs.get(name) {
            Some(v) => v,
            None => panic!("no step output {name:?}\n{self}"),
        }
    }

    /// The last line of stderr: where our binaries print their one-line error.
    pub fn error_line(&self) -> String {
        self.stderr()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .to_string()
    }
}

impl std::fmt::Display for TestOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.description,
            self.output.status,
            self.stdout(),
            self.stderr()
        )?;
        if !self.outputs.is_empty() {
            write!(f, "\n--- step outputs ---\n{:#?}", self.outputs)?;
        }
        Ok(())
    }
}

/// The `$GITHUB_OUTPUT` file parsed as the runner does; a missing file is no outputs.
fn read_outputs(path: &Path) -> BTreeMap<String, String> {
    match fs_err::read_to_string(path) {
        Ok(text) => wms::github::actions::parse_file_command("GITHUB_OUTPUT", &text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .into_iter()
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => panic!("{e}"),
    }
}

fn shell_word(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Insta settings that redact what changes from run to run in user-facing text: temp dirs,
/// loopback ports, sha256 digests, RFC 3339 times and durations. Bind them around snapshot
/// assertions: `let _redacted = util::redactions().bind_to_scope();`.
pub fn redactions() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_string_lossy();
    let tmp = tmp.trim_end_matches('/');
    for (pattern, replacement) in [
        (
            // The temp dir's own entry (`/tmp/.tmpAbC123`), keeping what follows it.
            format!("{}/[^/\\s'\"`):,]+", regex_escape(tmp)),
            "[TMP]".to_string(),
        ),
        (r"127\.0\.0\.1:\d+".to_string(), "127.0.0.1:[PORT]".into()),
        (r"localhost:\d+".to_string(), "localhost:[PORT]".into()),
        (r"sha256:[0-9a-f]{64}".to_string(), "sha256:[DIGEST]".into()),
        (r"\b[0-9a-f]{40}\b".to_string(), "[SHA]".into()),
        (
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)".to_string(),
            "[TIME]".into(),
        ),
        (r"\b\d+(\.\d+)? ?(ms|s)\b".to_string(), "[DURATION]".into()),
    ] {
        settings.add_filter(&pattern, replacement);
    }
    settings
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Mermaid renderer (`tools/mermaid`, installed by `make test-deps`) and its puppeteer
/// settings (Debian's Chromium, no sandbox). Missing: a failure in CI, else `None` after saying
/// the test is skipped.
#[track_caller]
pub fn mmdc() -> Option<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mermaid");
    let bin = root.join("node_modules/.bin/mmdc");
    if bin.is_file() && Path::new("/usr/bin/chromium").is_file() {
        return Some((bin, root.join("puppeteer.json")));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "mmdc not found; hint: make test-deps installs tools/mermaid/node_modules and chromium"
    );
    eprintln!("skipped: tools/mermaid/node_modules or chromium missing (make test-deps)");
    None
}

/// `wms-serve` on loopback ports of its choosing (`--*-address http://127.0.0.1:0`), with its
/// addresses read from the `config.properties` lines it prints first; killed on drop.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub inference: String,
    pub management: String,
    pub metrics: String,
}

impl ServeProcess {
    pub fn start(model: &std::path::Path, extra: &[&str]) -> ServeProcess {
        ServeProcess::start_with_env(model, extra, &[])
    }

    /// With `WMS_SERVE_*` variables (the `config.properties` keys without flags).
    pub fn start_with_env(
        model: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServeProcess {
        use std::io::BufRead as _;
        let mut child = bin("wms-serve")
            .envs(env.iter().copied())
            .arg("--model")
            .arg(model)
            .args([
                "--inference-address",
                "http://127.0.0.1:0",
                "--management-address",
                "http://127.0.0.1:0",
                "--metrics-address",
                "http://127.0.0.1:0",
            ])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start wms-serve");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut addr = |key: &str| {
            let line = lines
                .next()
                .expect("wms-serve exited before printing its addresses")
                .expect("read wms-serve's stdout");
            line.strip_prefix(&format!("{key}="))
                .unwrap_or_else(|| panic!("expected {key}=…, got {line}"))
                .to_string()
        };
        let inference = addr("inference_address");
        let management = addr("management_address");
        let metrics = addr("metrics_address");
        ServeProcess {
            child,
            inference,
            management,
            metrics,
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Programs that are not ours, and fixtures several test modules share ----

impl TestCommand {
    /// A program that is not ours (Python, skopeo, openssl, this test binary run as a child) with
    /// the test's own environment, since such tools read their own settings from it: the same
    /// `.ok()` / `.fails(code)` checks and panic messages, without the clean slate of [`new`].
    ///
    /// [`new`]: TestCommand::new
    pub fn external(program: impl AsRef<OsStr>) -> Self {
        TestCommand {
            cmd: Command::new(program),
            stdin: None,
            github_output: None,
            step_summary: None,
            scratch: None,
        }
    }
}

/// The project venv's Python as a [`TestCommand`]: `VIRTUAL_ENV` set, two threads (as CI's two
/// cores), no `.pyc` files written next to the scripts it imports.
pub fn python_command() -> TestCommand {
    TestCommand::external(python())
        .env("VIRTUAL_ENV", venv())
        .env("OMP_NUM_THREADS", "2")
        .env("PYTHONDONTWRITEBYTECODE", "1")
}

/// `python -c script args…` with the venv's Python; its stdout. The test fails with the whole
/// run (stdout and stderr) when Python does.
#[track_caller]
pub fn run_python(script: &str, args: &[&Path]) -> String {
    python_command()
        .arg("-c")
        .arg(script)
        .args(args)
        .ok()
        .stdout()
}

/// The folder holding `reference.py`, upstream's `WaterMetersUNet` in PyTorch written from the
/// DESIGN §5 facts (the `make bench-train` reference): test scripts import it from there
/// (`sys.path.insert(0, …); from reference import WaterMetersUNet`) instead of a copy each.
pub fn torch_reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/train")
}

/// The training recipe of the tests that train for real, tuned for 2 CPU cores: a narrower
/// network (base 8), a higher learning rate halved whenever the val loss stalls, and no
/// augmentation (the synthetic photos are already varied); the rest is the upstream recipe.
#[cfg(feature = "train")]
pub fn quick_train_yaml(epochs: u32, early_stopping_patience: Option<u32>) -> String {
    let patience = early_stopping_patience
        .map(|p| format!("  early_stopping_patience: {p}\n"))
        .unwrap_or_default();
    format!(
        "model:
  base_filters: 8
training:
  epochs: {epochs}
  batch_size: 4
  learning_rate: 0.003
{patience}  scheduler:
    factor: 0.5
    patience: 0
augmentation:
  horizontal_flip_p: 0.0
  vertical_flip_p: 0.0
  rotation_p: 0.0
  brightness_p: 0.0
"
    )
}

/// `wms data synth`: `count` synthetic photo/mask pairs of `size` (`WxH`) drawn from `seed`,
/// under `out`.
#[track_caller]
pub fn synth(out: &Path, count: usize, size: &str, seed: u64) -> TestOutput {
    wms()
        .args(["data", "synth", "--out"])
        .arg(out)
        .args(["--count", &count.to_string(), "--size", size])
        .args(["--seed", &seed.to_string()])
        .ok()
}

/// A tiny random U-Net (base 4, weights drawn from `seed`) named `meters` with a
/// `width`×`height` input, exported as `version` by the library's own exporter to `path`.
pub fn small_model(path: &Path, seed: u64, (width, height): (u32, u32), version: &str) -> PathBuf {
    let spec = wms::model::ModelSpec {
        base_filters: 4,
        ..wms::model::ModelSpec::default()
    };
    let mut ckpt = wms::onnx::fixtures::random_checkpoint(spec, seed);
    ckpt.meta.model_name = "meters".into();
    ckpt.meta.preprocessing.input_width = width;
    ckpt.meta.preprocessing.input_height = height;
    let opts = wms::onnx::ExportOptions {
        version: version.into(),
    };
    fs_err::write(path, wms::onnx::export(&ckpt, &opts).expect("export")).unwrap();
    path.to_path_buf()
}

/// `actions/<name>/action.yml`, parsed.
pub fn action(name: &str) -> serde_yaml::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("actions/{name}/action.yml"));
    serde_yaml::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
}

/// The step of `action` that runs `command`, checked to pass every input as the `INPUT_*`
/// variable wms reads (`INPUT_` + the name upper-cased, hyphens kept, as the runner names them).
#[track_caller]
pub fn command_step(action: &serde_yaml::Value, command: &str) -> serde_yaml::Value {
    let step = action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["run"].as_str() == Some(command))
        .unwrap_or_else(|| panic!("no step runs `{command}`"))
        .clone();
    for (name, _) in action["inputs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let var = format!("INPUT_{}", name.to_uppercase());
        assert_eq!(
            step["env"][var.as_str()].as_str(),
            Some(format!("${{{{ inputs.{name} }}}}").as_str()),
            "{command}: {var}"
        );
    }
    step
}
