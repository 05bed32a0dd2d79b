//! Turning `wms-serve`'s command line, environment and TorchServe `config.properties` into the
//! one [`ServeSettings`] value the server runs with. Precedence: flags > environment > file >
//! defaults, decided here and nowhere else. Every value keeps where it came from ([`Origin`]), so
//! an error names the flag, variable or `file:line` to fix. The command line arrives as a
//! [`CommandLine`] (built by `cli::serve` from its clap flags): this module knows no clap. Keys
//! follow TorchServe's documented `config.properties` (defaults from its configuration docs);
//! unknown keys are logged and ignored so a TorchServe file can be reused as is.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env_vars;

/// TorchServe's default inference address.
pub const DEFAULT_INFERENCE_ADDRESS: &str = "http://127.0.0.1:8080";
/// TorchServe's default management address.
pub const DEFAULT_MANAGEMENT_ADDRESS: &str = "http://127.0.0.1:8081";
/// TorchServe's default metrics address.
pub const DEFAULT_METRICS_ADDRESS: &str = "http://127.0.0.1:8082";
/// TorchServe's default `max_request_size` (6.5 MB).
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 6_553_500;
/// Largest decoded image we accept (pixels); larger headers are rejected before decoding.
/// 50 MP covers any phone camera; a 1 GB RGBA bomb would need 250 MP.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 50_000_000;
/// Bits per channel accepted by default: 8. The model sees 8-bit RGB, so a 16-bit image only
/// doubles the decode cost (a 7000x7000 16-bit RGBA PNG of 381 KB decodes to 392 MB, issue 11).
pub const DEFAULT_MAX_IMAGE_BIT_DEPTH: u8 = 8;
/// Bytes all concurrent decodes may hold (512 MiB): one 8-bit image at `max_image_pixels` of any
/// kind fits (50 MP progressive JPEG: 450 MB with its coefficients); larger images are refused,
/// concurrent ones wait their turn. The server's memory is bounded by its idle size plus this
/// plus `connection_limit` x `max_request_size` of bodies being read.
pub const DEFAULT_DECODE_MEMORY_BUDGET: u64 = 512 * 1024 * 1024;
/// Open connections per listener (inference, management, metrics each); more wait in the
/// kernel's accept queue until one closes.
pub const DEFAULT_CONNECTION_LIMIT: usize = 256;

/// A model to load at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    /// Name in URLs; `None` = from the model's metadata, else the file stem.
    pub name: Option<String>,
    pub path: PathBuf,
}

/// Everything the server needs, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSettings {
    pub inference_address: SocketAddr,
    pub management_address: SocketAddr,
    pub metrics_address: SocketAddr,
    pub models: Vec<ModelSource>,
    /// Requests coalesced into one ONNX Runtime run (TorchServe `batch_size`, default 1).
    pub batch_size: usize,
    /// How long the batcher waits to fill a batch (TorchServe `max_batch_delay`, ms, default 100).
    pub max_batch_delay: Duration,
    /// Batches of one model that may run at once when requests queue up, each on its own
    /// session with `threads / workers` intra-op threads (default and maximum: `threads`). A
    /// lone request runs on one session with all `threads`.
    pub workers: usize,
    pub max_request_size: usize,
    pub max_image_pixels: u64,
    /// Bits per channel a request's image may have (8 or 16), checked from the header.
    pub max_image_bit_depth: u8,
    /// Bytes of decoded pixels (and their conversions) all requests may hold at once.
    pub decode_memory_budget: u64,
    /// How long a request waits for decode budget before a 503 + `Retry-After`.
    pub decode_queue_timeout: Duration,
    /// Open connections per listener.
    pub connection_limit: usize,
    /// Time a connection has to send a complete request head, from when it is accepted or sends
    /// the first byte of the next request (trickling does not extend it).
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may sit idle after a response.
    pub idle_timeout: Duration,
    /// Time to receive a request body.
    pub body_read_timeout: Duration,
    /// Requests waiting for a batch slot; beyond it 503 + `Retry-After`.
    pub job_queue_size: usize,
    /// Per-request limit from arrival to response.
    pub response_timeout: Duration,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// ONNX Runtime intra-op threads over all workers (default: all cores).
    pub threads: usize,
    /// How the ONNX Runtime sessions hold memory.
    pub ort_memory: OrtMemory,
}

/// How `wms-serve`'s ONNX Runtime sessions hold memory (issue 18: peak RSS under concurrency).
/// Measured in docs/PERFORMANCE.md; the defaults are what held least without costing speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrtMemory {
    /// Most images per ONNX Runtime run (`ort_run_images`, default 1): a batch runs in chunks of
    /// this many. A CPU convolution is as fast per image at batch 1 as at 4 (the GEMMs are
    /// already large), while a batch of 4 at 512×512 holds four images' activations.
    pub run_images: usize,
    /// ONNX Runtime's CPU arena (`ort_arena`, default on): keeps the blocks it grew to and
    /// reuses them. Without it glibc's heap kept even more, and every run paid page faults.
    pub arena: bool,
    /// One arena for all sessions of the process (`ort_shared_arena`, default on) instead of
    /// one each: the session for lone requests and the worker sessions no longer each keep a
    /// whole forward pass's worth of blocks. Peak RSS at concurrency 8 over 25 s: int8 237–275
    /// instead of 323–325 MB, fp32 404–457 instead of 481–486 MB; requests/s within this
    /// machine's noise (0 to −4 % in alternating runs). Needs `arena`.
    pub shared_arena: bool,
    /// ONNX Runtime's memory pattern (`ort_memory_pattern`, default off): one block planned per
    /// run, which made each arena grow by far more than the tensors alive at once.
    pub memory_pattern: bool,
}

impl Default for OrtMemory {
    fn default() -> Self {
        OrtMemory {
            run_images: 1,
            arena: true,
            shared_arena: true,
            memory_pattern: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    // `source` comes from `fs_err`, whose message names the path.
    #[error(
        "cannot read the config file; hint: pass an existing file with --config or {}",
        env_vars::WMS_SERVE_CONFIG
    )]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {key} = {value:?}: {message}")]
    Invalid {
        origin: Origin,
        key: &'static str,
        value: String,
        message: String,
    },
    #[error(
        "no model to serve; hint: pass --model model.onnx, set {}, or set model_store and load_models in config.properties",
        env_vars::WMS_SERVE_MODEL
    )]
    NoModel,
    #[error(
        "model_store {store}: {message}; hint: point model_store at a directory holding .onnx files"
    )]
    ModelStore { store: PathBuf, message: String },
}

/// One configuration key: its `config.properties` name, environment variable and default.
struct Key {
    name: &'static str,
    env: &'static str,
    default: Option<DefaultValue>,
}

/// A key's default, written once: numbers that other code also needs are the `DEFAULT_*`
/// constants above.
enum DefaultValue {
    Text(&'static str),
    Number(u64),
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// A `config.properties` line (1-based).
    File {
        path: PathBuf,
        line: usize,
    },
    Environment(&'static str),
    /// A command-line flag, as the user writes it (`--batch-size`).
    Flag(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Environment(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// What the command line gave, by configuration key: the CLI maps its flags onto this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// `--model`: serve this file (beats `model_store` / `load_models`).
    pub model: Option<PathBuf>,
    /// `--config`: the `config.properties` to read.
    pub config: Option<PathBuf>,
    /// Other flags: (config key, flag, value). A key that is not a configuration key is a bug in
    /// the caller and panics.
    pub values: Vec<(&'static str, &'static str, String)>,
}

const KEYS: &[Key] = &[
    Key {
        name: "inference_address",
        env: env_vars::WMS_SERVE_INFERENCE_ADDRESS,
        default: Some(DefaultValue::Text(DEFAULT_INFERENCE_ADDRESS)),
    },
    Key {
        name: "management_address",
        env: env_vars::WMS_SERVE_MANAGEMENT_ADDRESS,
        default: Some(DefaultValue::Text(DEFAULT_MANAGEMENT_ADDRESS)),
    },
    Key {
        name: "metrics_address",
        env: env_vars::WMS_SERVE_METRICS_ADDRESS,
        default: Some(DefaultValue::Text(DEFAULT_METRICS_ADDRESS)),
    },
    Key {
        name: "model_store",
        env: env_vars::WMS_SERVE_MODEL_STORE,
        default: None,
    },
    Key {
        name: "load_models",
        env: env_vars::WMS_SERVE_LOAD_MODELS,
        default: None,
    },
    Key {
        name: "batch_size",
        env: env_vars::WMS_SERVE_BATCH_SIZE,
        default: Some(DefaultValue::Text("1")),
    },
    Key {
        name: "max_batch_delay",
        env: env_vars::WMS_SERVE_MAX_BATCH_DELAY,
        default: Some(DefaultValue::Text("100")),
    },
    Key {
        name: "default_workers_per_model",
        env: env_vars::WMS_SERVE_WORKERS,
        // One per intra-op thread (see `ServeSettings::workers`).
        default: None,
    },
    Key {
        name: "max_request_size",
        env: env_vars::WMS_SERVE_MAX_REQUEST_SIZE,
        default: Some(DefaultValue::Number(DEFAULT_MAX_REQUEST_SIZE as u64)),
    },
    Key {
        name: "max_image_pixels",
        env: env_vars::WMS_SERVE_MAX_IMAGE_PIXELS,
        default: Some(DefaultValue::Number(DEFAULT_MAX_IMAGE_PIXELS)),
    },
    Key {
        name: "max_image_bit_depth",
        env: env_vars::WMS_SERVE_MAX_IMAGE_BIT_DEPTH,
        default: Some(DefaultValue::Number(DEFAULT_MAX_IMAGE_BIT_DEPTH as u64)),
    },
    Key {
        name: "decode_memory_budget",
        env: env_vars::WMS_SERVE_DECODE_MEMORY_BUDGET,
        default: Some(DefaultValue::Number(DEFAULT_DECODE_MEMORY_BUDGET)),
    },
    Key {
        name: "decode_queue_timeout",
        env: env_vars::WMS_SERVE_DECODE_QUEUE_TIMEOUT,
        default: Some(DefaultValue::Text("10")),
    },
    Key {
        name: "connection_limit",
        env: env_vars::WMS_SERVE_CONNECTION_LIMIT,
        default: Some(DefaultValue::Number(DEFAULT_CONNECTION_LIMIT as u64)),
    },
    Key {
        name: "header_read_timeout",
        env: env_vars::WMS_SERVE_HEADER_READ_TIMEOUT,
        default: Some(DefaultValue::Text("10")),
    },
    Key {
        // Above the 60 s upstream keep-alive of common proxies (AWS ALB, ingress-nginx), so
        // the proxy, not us, closes an idle pooled connection and never reuses a dying one.
        name: "idle_timeout",
        env: env_vars::WMS_SERVE_IDLE_TIMEOUT,
        default: Some(DefaultValue::Text("75")),
    },
    Key {
        name: "body_read_timeout",
        env: env_vars::WMS_SERVE_BODY_READ_TIMEOUT,
        default: Some(DefaultValue::Text("60")),
    },
    Key {
        name: "job_queue_size",
        env: env_vars::WMS_SERVE_JOB_QUEUE_SIZE,
        default: Some(DefaultValue::Text("100")),
    },
    Key {
        name: "default_response_timeout",
        env: env_vars::WMS_SERVE_RESPONSE_TIMEOUT,
        default: Some(DefaultValue::Text("120")),
    },
    Key {
        name: "shutdown_timeout",
        env: env_vars::WMS_SERVE_SHUTDOWN_TIMEOUT,
        default: Some(DefaultValue::Text("30")),
    },
    Key {
        name: "number_of_threads",
        env: env_vars::WMS_SERVE_THREADS,
        default: None,
    },
    // Ours, not TorchServe's: how ONNX Runtime holds memory (see `OrtMemory`).
    Key {
        name: "ort_run_images",
        env: env_vars::WMS_SERVE_ORT_RUN_IMAGES,
        default: Some(DefaultValue::Text("1")),
    },
    Key {
        name: "ort_arena",
        env: env_vars::WMS_SERVE_ORT_ARENA,
        default: Some(DefaultValue::Text("1")),
    },
    Key {
        name: "ort_shared_arena",
        env: env_vars::WMS_SERVE_ORT_SHARED_ARENA,
        default: Some(DefaultValue::Text("1")),
    },
    Key {
        name: "ort_memory_pattern",
        env: env_vars::WMS_SERVE_ORT_MEMORY_PATTERN,
        default: Some(DefaultValue::Text("0")),
    },
];

/// TorchServe keys we accept without acting on them (no warning: they are meaningless here).
const IGNORED_KEYS: &[&str] = &[
    "number_of_netty_threads",
    "netty_client_threads",
    "enable_envvars_config",
    "install_py_dep_per_model",
    "default_service_handler",
    "service_envelope",
    "models",
    "disable_token_authorization",
    "enable_metrics_api",
    "metrics_mode",
    "metrics_format",
];

/// A raw value and where it came from.
#[derive(Debug, Clone)]
struct Raw {
    value: String,
    origin: Origin,
}

impl ServeSettings {
    /// Resolves the command line, environment (`env` looks a variable up) and the config file
    /// into settings.
    pub fn resolve(
        command_line: &CommandLine,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let CommandLine {
            model,
            config,
            values,
        } = command_line;
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());

        let mut raw: BTreeMap<&'static str, Raw> = BTreeMap::new();
        for key in KEYS {
            if let Some(d) = &key.default {
                let value = match d {
                    DefaultValue::Text(text) => text.to_string(),
                    DefaultValue::Number(n) => n.to_string(),
                };
                raw.insert(
                    key.name,
                    Raw {
                        value,
                        origin: Origin::Default,
                    },
                );
            }
        }
        let config_path = config
            .clone()
            .or_else(|| env(env_vars::WMS_SERVE_CONFIG).map(PathBuf::from));
        let mut config_dir = None;
        if let Some(path) = &config_path {
            let text =
                fs_err::read_to_string(path).map_err(|source| SettingsError::ReadConfig {
                    path: path.clone(),
                    source,
                })?;
            config_dir = path.parent().map(Path::to_path_buf);
            for (line_no, key, value) in parse_properties(&text) {
                let origin = Origin::File {
                    path: path.clone(),
                    line: line_no,
                };
                match KEYS.iter().find(|k| k.name == key) {
                    Some(k) => {
                        raw.insert(k.name, Raw { value, origin });
                    }
                    None if IGNORED_KEYS.contains(&key.as_str()) => {}
                    None => tracing::warn!(
                        origin = %origin, key, "unknown config.properties key ignored"
                    ),
                }
            }
        }
        for key in KEYS {
            if let Some(value) = env(key.env) {
                raw.insert(
                    key.name,
                    Raw {
                        value,
                        origin: Origin::Environment(key.env),
                    },
                );
            }
        }
        for (key, flag, value) in values {
            let key = KEYS
                .iter()
                .find(|k| k.name == *key)
                .unwrap_or_else(|| panic!("{flag} maps to {key}, which is no configuration key"));
            raw.insert(
                key.name,
                Raw {
                    value: value.clone(),
                    origin: Origin::Flag(flag),
                },
            );
        }

        let get = |key: &'static str| raw.get(key).cloned();
        let addr = |key: &'static str| -> Result<SocketAddr, SettingsError> {
            let r = get(key).expect("address keys have defaults");
            parse_address(&r.value).map_err(|message| invalid(&r, key, message))
        };
        let optional_positive = |key: &'static str| -> Result<Option<u64>, SettingsError> {
            get(key)
                .map(|r| match r.value.trim().parse::<u64>() {
                    Ok(v) if v > 0 => Ok(v),
                    _ => Err(invalid(&r, key, "expected a positive integer".into())),
                })
                .transpose()
        };
        let positive = |key: &'static str| -> Result<u64, SettingsError> {
            Ok(optional_positive(key)?.expect("numeric keys have defaults"))
        };
        let non_negative = |key: &'static str| -> Result<u64, SettingsError> {
            let r = get(key).expect("numeric keys have defaults");
            r.value
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid(&r, key, "expected a non-negative integer".into()))
        };

        let switch = |key: &'static str| -> Result<bool, SettingsError> {
            let r = get(key).expect("switch keys have defaults");
            match r.value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(invalid(&r, key, "expected 1 or 0 (true or false)".into())),
            }
        };

        let threads = match optional_positive("number_of_threads")? {
            Some(v) => v as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        // One per thread by default; never more than the threads to split between them.
        let workers = optional_positive("default_workers_per_model")?
            .map_or(threads, |v| (v as usize).min(threads));

        let models = resolve_models(
            model
                .clone()
                .or_else(|| env(env_vars::WMS_SERVE_MODEL).map(PathBuf::from)),
            get("model_store"),
            get("load_models"),
            config_dir.as_deref(),
        )?;

        Ok(ServeSettings {
            inference_address: addr("inference_address")?,
            management_address: addr("management_address")?,
            metrics_address: addr("metrics_address")?,
            models,
            batch_size: positive("batch_size")? as usize,
            max_batch_delay: Duration::from_millis(non_negative("max_batch_delay")?),
            workers,
            max_request_size: positive("max_request_size")? as usize,
            max_image_pixels: positive("max_image_pixels")?,
            max_image_bit_depth: bit_depth(get("max_image_bit_depth"))?,
            decode_memory_budget: positive("decode_memory_budget")?,
            decode_queue_timeout: Duration::from_secs(positive("decode_queue_timeout")?),
            connection_limit: positive("connection_limit")? as usize,
            header_read_timeout: Duration::from_secs(positive("header_read_timeout")?),
            idle_timeout: Duration::from_secs(positive("idle_timeout")?),
            body_read_timeout: Duration::from_secs(positive("body_read_timeout")?),
            job_queue_size: positive("job_queue_size")? as usize,
            response_timeout: Duration::from_secs(positive("default_response_timeout")?),
            shutdown_timeout: Duration::from_secs(non_negative("shutdown_timeout")?),
            threads,
            ort_memory: OrtMemory {
                run_images: positive("ort_run_images")? as usize,
                arena: switch("ort_arena")?,
                shared_arena: switch("ort_shared_arena")?,
                memory_pattern: switch("ort_memory_pattern")?,
            },
        })
    }
}

/// 8 or 16: the depths JPEG and PNG decode to (PNG's 1, 2 and 4 bits are widened to 8).
fn bit_depth(r: Option<Raw>) -> Result<u8, SettingsError> {
    let r = r.expect("max_image_bit_depth has a default");
    match r.value.trim() {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err(invalid(
            &r,
            "max_image_bit_depth",
            "expected 8 or 16".into(),
        )),
    }
}

fn invalid(r: &Raw, key: &'static str, message: String) -> SettingsError {
    SettingsError::Invalid {
        origin: r.origin.clone(),
        key,
        value: r.value.clone(),
        message,
    }
}

/// `--model` wins; else `load_models` (`all`, or comma-separated `file.onnx` / `name=file.onnx`)
/// relative to `model_store` (itself relative to the config file's directory).
fn resolve_models(
    model: Option<PathBuf>,
    store: Option<Raw>,
    load: Option<Raw>,
    config_dir: Option<&Path>,
) -> Result<Vec<ModelSource>, SettingsError> {
    if let Some(path) = model {
        return Ok(vec![ModelSource { name: None, path }]);
    }
    let Some(store) = store else {
        return Err(SettingsError::NoModel);
    };
    let mut store_path = PathBuf::from(store.value.trim());
    if store_path.is_relative()
        && matches!(store.origin, Origin::File { .. })
        && let Some(dir) = config_dir
    {
        store_path = dir.join(store_path);
    }
    let load_value = load.map_or_else(|| "all".to_string(), |r| r.value);
    let mut models = Vec::new();
    for entry in load_value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        if entry == "all" {
            let rd = fs_err::read_dir(&store_path).map_err(|e| SettingsError::ModelStore {
                store: store_path.clone(),
                message: e.to_string(),
            })?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
                .collect();
            found.sort();
            models.extend(
                found
                    .into_iter()
                    .map(|path| ModelSource { name: None, path }),
            );
        } else {
            let (name, file) = match entry.split_once('=') {
                Some((n, f)) => (Some(n.trim().to_string()), f.trim()),
                None => (None, entry),
            };
            models.push(ModelSource {
                name,
                path: store_path.join(file),
            });
        }
    }
    if models.is_empty() {
        return Err(SettingsError::ModelStore {
            store: store_path,
            message: format!("load_models={load_value:?} selects no .onnx model"),
        });
    }
    Ok(models)
}

/// `http://host:port` (as TorchServe writes addresses) or bare `host:port`.
pub fn parse_address(value: &str) -> Result<SocketAddr, String> {
    let v = value.trim();
    let rest = if let Some(rest) = v.strip_prefix("http://") {
        rest
    } else if v.starts_with("https://") {
        return Err(
            "TLS is not built in; hint: use http:// and terminate TLS at the ingress".into(),
        );
    } else {
        v
    };
    let rest = rest.trim_end_matches('/');
    rest.to_socket_addrs()
        .map_err(|e| format!("not host:port ({e}); hint: write it like http://127.0.0.1:8080"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

/// Java-properties lines as TorchServe reads them: `key=value` or `key: value`, `#`/`!`
/// comments, trailing `\` continues a line. Yields (1-based line, key, value).
fn parse_properties(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let mut logical = trimmed.to_string();
        while logical.ends_with('\\') {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let split = logical.find(['=', ':']);
        let (key, value) = match split {
            Some(pos) => (&logical[..pos], &logical[pos + 1..]),
            None => (logical.as_str(), ""),
        };
        out.push((i + 1, key.trim().to_string(), value.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args() -> CommandLine {
        CommandLine {
            model: Some(PathBuf::from("m.onnx")),
            ..CommandLine::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_torchserves() {
        let s = ServeSettings::resolve(&args(), no_env).unwrap();
        assert_eq!(s.inference_address.to_string(), "127.0.0.1:8080");
        assert_eq!(s.management_address.port(), 8081);
        assert_eq!(s.metrics_address.port(), 8082);
        assert_eq!(s.batch_size, 1);
        assert_eq!(s.max_batch_delay, Duration::from_millis(100));
        assert_eq!(s.job_queue_size, 100);
        assert_eq!(s.response_timeout, Duration::from_secs(120));
        assert_eq!(s.max_request_size, DEFAULT_MAX_REQUEST_SIZE);
        assert_eq!(s.max_image_bit_depth, DEFAULT_MAX_IMAGE_BIT_DEPTH);
        assert_eq!(s.decode_memory_budget, DEFAULT_DECODE_MEMORY_BUDGET);
        assert_eq!(s.connection_limit, DEFAULT_CONNECTION_LIMIT);
        assert_eq!(s.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.idle_timeout, Duration::from_secs(75));
    }

    #[test]
    fn ort_memory_keys_come_from_file_and_env_and_bad_values_name_the_variable() {
        assert_eq!(
            ServeSettings::resolve(&args(), no_env).unwrap().ort_memory,
            OrtMemory::default()
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.properties");
        fs_err::write(&cfg, "ort_run_images=2\nort_memory_pattern=true\n").unwrap();
        let mut a = args();
        a.config = Some(cfg);
        let env: HashMap<&str, &str> = [(env_vars::WMS_SERVE_ORT_SHARED_ARENA, " 0 ")].into();
        let s = ServeSettings::resolve(&a, |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(
            s.ort_memory,
            OrtMemory {
                run_images: 2,
                arena: true,
                shared_arena: false,
                memory_pattern: true,
            }
        );
        // Once silently the default; now one line naming the variable and what it takes.
        for (var, value, expected) in [
            (env_vars::WMS_SERVE_ORT_ARENA, "yes", "1 or 0"),
            (env_vars::WMS_SERVE_ORT_MEMORY_PATTERN, "on", "1 or 0"),
            (env_vars::WMS_SERVE_ORT_RUN_IMAGES, "0", "positive integer"),
        ] {
            let env: HashMap<&str, &str> = [(var, value)].into();
            let err = ServeSettings::resolve(&args(), |k| env.get(k).map(|v| v.to_string()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(var) && err.contains(expected) && !err.contains('\n'),
                "{err}"
            );
        }
    }

    #[test]
    fn admission_keys_come_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.properties");
        fs_err::write(
            &cfg,
            "max_image_bit_depth=16\ndecode_memory_budget=1000000\nconnection_limit=3\nheader_read_timeout=2\n",
        )
        .unwrap();
        let env: HashMap<&str, &str> = [(env_vars::WMS_SERVE_IDLE_TIMEOUT, "4")].into();
        let mut a = args();
        a.config = Some(cfg.clone());
        let s = ServeSettings::resolve(&a, |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.max_image_bit_depth, 16);
        assert_eq!(s.decode_memory_budget, 1_000_000);
        assert_eq!(s.connection_limit, 3);
        assert_eq!(s.header_read_timeout, Duration::from_secs(2));
        assert_eq!(s.idle_timeout, Duration::from_secs(4));
        fs_err::write(&cfg, "max_image_bit_depth=12\n").unwrap();
        let err = ServeSettings::resolve(&a, no_env).unwrap_err().to_string();
        assert!(
            err.contains("max_image_bit_depth") && err.contains("8 or 16"),
            "{err}"
        );
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.properties");
        fs_err::write(
            &cfg,
            "# comment\ninference_address=http://127.0.0.1:9000\nbatch_size=4\nmax_batch_delay: 7\nmystery_key=1\n",
        )
        .unwrap();
        let env: HashMap<&str, &str> = [
            (env_vars::WMS_SERVE_BATCH_SIZE, "6"),
            (
                env_vars::WMS_SERVE_INFERENCE_ADDRESS,
                "http://127.0.0.1:9001",
            ),
        ]
        .into();
        let lookup = |k: &str| env.get(k).map(|v| v.to_string());
        let mut a = args();
        a.config = Some(cfg.clone());
        let s = ServeSettings::resolve(&a, lookup).unwrap();
        assert_eq!(s.inference_address.port(), 9001);
        assert_eq!(s.batch_size, 6);
        assert_eq!(s.max_batch_delay, Duration::from_millis(7));
        a.values = vec![
            (
                "inference_address",
                "--inference-address",
                "http://127.0.0.1:0".into(),
            ),
            ("batch_size", "--batch-size", "8".into()),
        ];
        let s = ServeSettings::resolve(&a, lookup).unwrap();
        assert_eq!(s.inference_address.port(), 0);
        assert_eq!(s.batch_size, 8);
    }

    #[test]
    fn bad_value_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.properties");
        fs_err::write(&cfg, "\nbatch_size=many\n").unwrap();
        let mut a = args();
        a.config = Some(cfg.clone());
        let err = ServeSettings::resolve(&a, no_env).unwrap_err().to_string();
        assert!(err.contains("config.properties:2"), "{err}");
        assert!(
            err.contains("batch_size") && err.contains("positive integer"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_where_the_value_came_from() {
        let env: HashMap<&str, &str> = [(env_vars::WMS_SERVE_BATCH_SIZE, "0")].into();
        let err =
            ServeSettings::resolve(&args(), |k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(matches!(
            &err,
            SettingsError::Invalid { origin: Origin::Environment(name), .. }
                if *name == env_vars::WMS_SERVE_BATCH_SIZE
        ));
        let mut a = args();
        a.values = vec![("max_batch_delay", "--max-batch-delay", "soon".into())];
        let err = ServeSettings::resolve(&a, no_env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("flag --max-batch-delay: max_batch_delay = \"soon\""),
            "{err}"
        );
    }

    #[test]
    fn models_from_store() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir(dir.path().join("store")).unwrap();
        fs_err::write(dir.path().join("store/a.onnx"), b"").unwrap();
        fs_err::write(dir.path().join("store/b.onnx"), b"").unwrap();
        let cfg = dir.path().join("config.properties");
        fs_err::write(&cfg, "model_store=store\nload_models=meters=a.onnx\n").unwrap();
        let a = CommandLine {
            config: Some(cfg.clone()),
            ..CommandLine::default()
        };
        let s = ServeSettings::resolve(&a, no_env).unwrap();
        assert_eq!(
            s.models,
            vec![ModelSource {
                name: Some("meters".into()),
                path: dir.path().join("store/a.onnx")
            }]
        );
        fs_err::write(&cfg, "model_store=store\nload_models=all\n").unwrap();
        let s = ServeSettings::resolve(&a, no_env).unwrap();
        assert_eq!(s.models.len(), 2);
        let none = ServeSettings::resolve(&CommandLine::default(), no_env).unwrap_err();
        assert!(none.to_string().contains("--model"), "{none}");
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_address("http://127.0.0.1:8080").unwrap().port(), 8080);
        assert_eq!(parse_address("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_address("https://x:1").unwrap_err().contains("TLS"));
        assert!(parse_address("http://nope").is_err());
    }

    #[test]
    fn shipped_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("torchserve/config.properties");
        let a = CommandLine {
            config: Some(path),
            ..args()
        };
        let s = ServeSettings::resolve(&a, no_env).unwrap();
        // Issue 11: only inference faces the network by default.
        assert!(s.inference_address.ip().is_unspecified());
        assert!(s.management_address.ip().is_loopback());
        assert!(s.metrics_address.ip().is_loopback());
        assert_eq!(s.max_image_bit_depth, DEFAULT_MAX_IMAGE_BIT_DEPTH);
        assert_eq!(s.decode_memory_budget, DEFAULT_DECODE_MEMORY_BUDGET);
    }
}
