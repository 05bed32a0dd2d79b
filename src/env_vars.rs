//! Every environment variable wms reads or writes, named once. Code elsewhere refers to these
//! constants, never to string literals, so `grep` over this file answers "what does wms look at?".

/// Set to `true` by the GitHub Actions runner; switches output to workflow commands.
pub const GITHUB_ACTIONS: &str = "GITHUB_ACTIONS";
/// File the runner reads step outputs from (`name=value` or heredoc blocks).
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";
/// File whose Markdown becomes the job summary.
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
/// File of `NAME=value` lines exported as environment variables to later steps.
pub const GITHUB_ENV: &str = "GITHUB_ENV";
/// Action inputs arrive as `INPUT_<NAME>` (upper-cased, spaces to `_`).
pub const INPUT_PREFIX: &str = "INPUT_";
/// Name of the triggering event (`push`, `pull_request`, …).
pub const GITHUB_EVENT_NAME: &str = "GITHUB_EVENT_NAME";
/// Path of the event payload JSON.
pub const GITHUB_EVENT_PATH: &str = "GITHUB_EVENT_PATH";
/// Commit SHA that triggered the workflow.
pub const GITHUB_SHA: &str = "GITHUB_SHA";

/// `tracing` filter, e.g. `wms=debug`.
pub const RUST_LOG: &str = "RUST_LOG";
/// Log format for every binary: `text` (default) or `json`.
pub const WMS_LOG_FORMAT: &str = "WMS_LOG_FORMAT";
/// Any non-empty value turns off colour in logs (<https://no-color.org>); without it, logs are
/// coloured only when stderr is a terminal.
pub const NO_COLOR: &str = "NO_COLOR";

/// Explicit path of the ONNX Runtime shared library (ort's own variable).
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
/// An activated Python virtualenv; its onnxruntime wheel is one place we look for the library.
pub const VIRTUAL_ENV: &str = "VIRTUAL_ENV";

/// MLflow tracking server URL; when set, training logs to it.
pub const MLFLOW_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";

/// `wms-serve`: model file to serve (as `--model`).
pub const WMS_SERVE_MODEL: &str = "WMS_SERVE_MODEL";
/// `wms-serve`: TorchServe-style `config.properties` (as `--config`).
pub const WMS_SERVE_CONFIG: &str = "WMS_SERVE_CONFIG";
/// `wms-serve`: each overrides the `config.properties` key of the same name.
pub const WMS_SERVE_INFERENCE_ADDRESS: &str = "WMS_SERVE_INFERENCE_ADDRESS";
pub const WMS_SERVE_MANAGEMENT_ADDRESS: &str = "WMS_SERVE_MANAGEMENT_ADDRESS";
pub const WMS_SERVE_METRICS_ADDRESS: &str = "WMS_SERVE_METRICS_ADDRESS";
pub const WMS_SERVE_MODEL_STORE: &str = "WMS_SERVE_MODEL_STORE";
pub const WMS_SERVE_LOAD_MODELS: &str = "WMS_SERVE_LOAD_MODELS";
pub const WMS_SERVE_BATCH_SIZE: &str = "WMS_SERVE_BATCH_SIZE";
pub const WMS_SERVE_MAX_BATCH_DELAY: &str = "WMS_SERVE_MAX_BATCH_DELAY";
/// `default_workers_per_model`.
pub const WMS_SERVE_WORKERS: &str = "WMS_SERVE_WORKERS";
pub const WMS_SERVE_MAX_REQUEST_SIZE: &str = "WMS_SERVE_MAX_REQUEST_SIZE";
pub const WMS_SERVE_MAX_IMAGE_PIXELS: &str = "WMS_SERVE_MAX_IMAGE_PIXELS";
pub const WMS_SERVE_JOB_QUEUE_SIZE: &str = "WMS_SERVE_JOB_QUEUE_SIZE";
/// `default_response_timeout` (seconds).
pub const WMS_SERVE_RESPONSE_TIMEOUT: &str = "WMS_SERVE_RESPONSE_TIMEOUT";
/// Seconds SIGTERM waits for in-flight requests.
pub const WMS_SERVE_SHUTDOWN_TIMEOUT: &str = "WMS_SERVE_SHUTDOWN_TIMEOUT";
/// ONNX Runtime intra-op threads (`number_of_threads`; default: all cores).
pub const WMS_SERVE_THREADS: &str = "WMS_SERVE_THREADS";

/// OpenMP wait policy of libtorch's thread pool (libgomp reads it once, at load). `wms-train`
/// re-executes itself with `PASSIVE` when it is unset: spinning workers starve the data loader
/// and collapse throughput several-fold whenever another process shares the cores.
pub const OMP_WAIT_POLICY: &str = "OMP_WAIT_POLICY";
/// glibc's cap on malloc arenas (read by glibc at start). `wms-serve` sets 2 itself unless this
/// or `glibc.malloc.arena_max` in [`GLIBC_TUNABLES`] already chose a value.
pub const MALLOC_ARENA_MAX: &str = "MALLOC_ARENA_MAX";
/// glibc's tunables (`name=value:name=value`), read by glibc at start.
pub const GLIBC_TUNABLES: &str = "GLIBC_TUNABLES";

/// MLflow (`wms-train` logging, `wms gate`, `wms promote`); the names are MLflow's own.
/// Bearer token for the tracking server (wins over username/password).
pub const MLFLOW_TRACKING_TOKEN: &str = "MLFLOW_TRACKING_TOKEN";
/// HTTP basic auth for the tracking server.
pub const MLFLOW_TRACKING_USERNAME: &str = "MLFLOW_TRACKING_USERNAME";
pub const MLFLOW_TRACKING_PASSWORD: &str = "MLFLOW_TRACKING_PASSWORD";
/// Experiment `wms-train` logs into (default: the config's model name).
pub const MLFLOW_EXPERIMENT_NAME: &str = "MLFLOW_EXPERIMENT_NAME";
/// Seconds per MLflow request (default 120).
pub const MLFLOW_HTTP_REQUEST_TIMEOUT: &str = "MLFLOW_HTTP_REQUEST_TIMEOUT";
/// Retries per MLflow request after the first attempt (default 4).
pub const MLFLOW_HTTP_REQUEST_MAX_RETRIES: &str = "MLFLOW_HTTP_REQUEST_MAX_RETRIES";
/// S3-compatible endpoint for runs whose artifact URI is `s3://` (MinIO, moto).
pub const MLFLOW_S3_ENDPOINT_URL: &str = "MLFLOW_S3_ENDPOINT_URL";
/// GitHub context for MLflow run tags: branch (`GITHUB_HEAD_REF` on pull requests) and the
/// parts of the run URL `<server>/<repository>/actions/runs/<id>`.
pub const GITHUB_HEAD_REF: &str = "GITHUB_HEAD_REF";
pub const GITHUB_REF_NAME: &str = "GITHUB_REF_NAME";
pub const GITHUB_SERVER_URL: &str = "GITHUB_SERVER_URL";
pub const GITHUB_REPOSITORY: &str = "GITHUB_REPOSITORY";
pub const GITHUB_RUN_ID: &str = "GITHUB_RUN_ID";

/// `wms data pull` test hook: start at most this many object downloads, then stop as an
/// interrupted pull would (finished objects stay in the cache). Used by the resume test.
pub const WMS_DATA_PULL_STOP_AFTER: &str = "WMS_DATA_PULL_STOP_AFTER";
/// `wms data push|pull`: default `--jobs`.
pub const WMS_DATA_JOBS: &str = "WMS_DATA_JOBS";
/// GitHub OIDC: URL of the runner's ID-token endpoint (set with `permissions: id-token: write`).
pub const ACTIONS_ID_TOKEN_REQUEST_URL: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
/// GitHub OIDC: bearer token for [`ACTIONS_ID_TOKEN_REQUEST_URL`].
pub const ACTIONS_ID_TOKEN_REQUEST_TOKEN: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";
/// AWS credentials exported by `wms aws assume-role` (and read by the SDK's provider chain).
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// AWS region (the SDK reads both; `wms aws assume-role` exports both).
pub const AWS_REGION: &str = "AWS_REGION";
pub const AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
/// STS endpoint override (honoured by the AWS SDK; `--endpoint-url` takes precedence).
pub const AWS_ENDPOINT_URL_STS: &str = "AWS_ENDPOINT_URL_STS";
/// Endpoint override for every AWS service (honoured by the AWS SDK).
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";

// dvc trust (#11)
/// `wms data push|pull` (`--trust-endpoint`): `1` lets the `endpointurl` that the repository's
/// `.dvc/config` or `.dvc/config.local` sets receive the signed S3 requests. Unset, such an
/// endpoint is refused: the repository would choose where requests signed with the workflow's
/// AWS credentials go.
pub const WMS_DVC_TRUST_ENDPOINT: &str = "WMS_DVC_TRUST_ENDPOINT";
/// `wms data push|pull` (`--endpoint-url`): the S3 endpoint, chosen by the workflow; it replaces
/// any `endpointurl` from the repository.
pub const WMS_DVC_ENDPOINT_URL: &str = "WMS_DVC_ENDPOINT_URL";
/// `wms data push|pull` (`--allow-http`): `1` allows a plain `http://` endpoint on a host that is
/// not loopback (the requests, session token included, would cross the network unencrypted).
pub const WMS_DVC_ALLOW_HTTP: &str = "WMS_DVC_ALLOW_HTTP";

// wms-serve admission (#11): each overrides the `config.properties` key of the same name (see
// `serve::settings` for units and defaults).
/// `max_image_bit_depth`: bits per channel a request's image may have (8 or 16).
pub const WMS_SERVE_MAX_IMAGE_BIT_DEPTH: &str = "WMS_SERVE_MAX_IMAGE_BIT_DEPTH";
/// `decode_memory_budget`: bytes that all concurrent decodes may hold together.
pub const WMS_SERVE_DECODE_MEMORY_BUDGET: &str = "WMS_SERVE_DECODE_MEMORY_BUDGET";
/// `decode_queue_timeout`: seconds a request waits for decode budget before a 503.
pub const WMS_SERVE_DECODE_QUEUE_TIMEOUT: &str = "WMS_SERVE_DECODE_QUEUE_TIMEOUT";
/// `connection_limit`: open connections per listener; more wait to be accepted.
pub const WMS_SERVE_CONNECTION_LIMIT: &str = "WMS_SERVE_CONNECTION_LIMIT";
/// `header_read_timeout`: seconds a connection has to deliver a complete request head.
pub const WMS_SERVE_HEADER_READ_TIMEOUT: &str = "WMS_SERVE_HEADER_READ_TIMEOUT";
/// `idle_timeout`: seconds a keep-alive connection may stay idle between requests.
pub const WMS_SERVE_IDLE_TIMEOUT: &str = "WMS_SERVE_IDLE_TIMEOUT";
/// `body_read_timeout`: seconds to receive a request body.
pub const WMS_SERVE_BODY_READ_TIMEOUT: &str = "WMS_SERVE_BODY_READ_TIMEOUT";

// build-image (#12)
/// Seconds since the epoch used for every timestamp of a reproducible build
/// (reproducible-builds.org's convention); unset means now.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// Directory of the Docker client's `config.json` (registry credentials); default `~/.docker`.
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
/// The user's home directory (for `~/.docker/config.json`).
pub const HOME: &str = "HOME";

// build-image ECR (#12)
/// The ECR endpoint the AWS SDK calls for `GetAuthorizationToken` (the SDK's service-specific
/// endpoint variable; read by the SDK, named here because the tests point it at moto).
pub const AWS_ENDPOINT_URL_ECR: &str = "AWS_ENDPOINT_URL_ECR";
/// Where wms keeps caches between runs (compressed image layers under `layers/`); default
/// `$XDG_CACHE_HOME/wms`, else `~/.cache/wms`.
pub const WMS_CACHE_DIR: &str = "WMS_CACHE_DIR";
/// The XDG base directory for caches.
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";

// comparison (#14)
/// Directory of the timing records (`*.jsonl`) that `wms deploy` and `wms compare` append to and
/// `wms compare` reads; default `comparison/records/` at the top of the current git work tree.
pub const WMS_TIMING_DIR: &str = "WMS_TIMING_DIR";
/// The login name; `wms compare record` uses it when `--person` is not given.
pub const USER: &str = "USER";

// report (#14)
/// The GitHub REST API root (`https://api.github.com`, or `https://HOST/api/v3` on GitHub
/// Enterprise Server); the runner sets it.
pub const GITHUB_API_URL: &str = "GITHUB_API_URL";
/// The token for GitHub's REST API (`${{ github.token }}` in a workflow).
pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
/// The runner's checkout directory; report annotations name files relative to it.
pub const GITHUB_WORKSPACE: &str = "GITHUB_WORKSPACE";

// deploy EKS (#13)
/// The EKS endpoint `wms deploy --eks-cluster` calls `DescribeCluster` at (the SDK's
/// service-specific endpoint variable, honoured the same way; the tests point it at moto).
pub const AWS_ENDPOINT_URL_EKS: &str = "AWS_ENDPOINT_URL_EKS";

// serve memory (#18)
/// Most images one ONNX Runtime run of `wms-serve` takes (default 1): larger batches are run
/// in chunks of this many on the same session, so a session's activations (and its arena) stay
/// the size of one chunk's.
pub const WMS_SERVE_ORT_RUN_IMAGES: &str = "WMS_SERVE_ORT_RUN_IMAGES";
/// `0` turns off ONNX Runtime's CPU memory arena in `wms-serve` (default on); `1` keeps it.
pub const WMS_SERVE_ORT_ARENA: &str = "WMS_SERVE_ORT_ARENA";
/// `0` gives each of `wms-serve`'s ONNX Runtime sessions its own CPU arena; `1` (the default)
/// has them share one, which holds less under concurrency (config key `ort_shared_arena`).
pub const WMS_SERVE_ORT_SHARED_ARENA: &str = "WMS_SERVE_ORT_SHARED_ARENA";
/// `1` turns on ONNX Runtime's memory pattern (one pre-planned block per run) in `wms-serve`;
/// `0` (the default) keeps it off, which holds less memory under concurrency.
pub const WMS_SERVE_ORT_MEMORY_PATTERN: &str = "WMS_SERVE_ORT_MEMORY_PATTERN";
