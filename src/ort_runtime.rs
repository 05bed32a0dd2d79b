//! Finding and loading the ONNX Runtime shared library (ort's `load-dynamic`). We never download
//! it: the pinned `onnxruntime==1.31.1` wheel in the project venv ships `libonnxruntime.so.1.31.1`,
//! and images put the library next to `wms-serve`. Search order: `ORT_DYLIB_PATH` (authoritative
//! when set), next to the running binary, the project venv (`$VIRTUAL_ENV`, then the venv this
//! binary was built beside), then the system library directories. A miss is one error line that
//! lists every path tried.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::env_vars;

/// The ONNX Runtime version this build is pinned to (`requirements.lock`, ort 2.0.0-rc.15 = API 31).
pub const PINNED_VERSION: &str = "1.31.1";

#[derive(Debug, thiserror::Error)]
pub enum OrtRuntimeError {
    #[error(
        "ONNX Runtime library not found; tried: {}; hint: run `make bootstrap` (installs onnxruntime=={PINNED_VERSION} into .venv) or set {} to libonnxruntime.so",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        env_vars::ORT_DYLIB_PATH
    )]
    NotFound { tried: Vec<PathBuf> },
    #[error(
        "cannot load ONNX Runtime from {path}: {message}; hint: it must be ONNX Runtime >= 1.31 for this platform; set {} to another copy",
        env_vars::ORT_DYLIB_PATH
    )]
    Load { path: PathBuf, message: String },
}

static LOADED: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();

/// Loads ONNX Runtime once per process and returns the library path used.
pub fn init() -> Result<&'static Path, OrtRuntimeError> {
    if let Some((path, _)) = LOADED.get() {
        return Ok(path);
    }
    let path = locate()?;
    let load_err = |message: String| OrtRuntimeError::Load {
        path: path.clone(),
        message,
    };
    let builder = ort::init_from(&path).map_err(|e| load_err(e.to_string()))?;
    let env = builder
        .with_name("wms")
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let _ = LOADED.set((path, env));
    Ok(&LOADED.get().expect("set above").0)
}

/// The process-wide ONNX Runtime environment (loading the library first if needed); sessions are
/// built from it: `ort::session::Session::builder(ort_runtime::environment()?)`.
pub fn environment() -> Result<&'static ort::environment::Environment, OrtRuntimeError> {
    init()?;
    Ok(&LOADED.get().expect("set by init").1)
}

/// The first existing candidate, or the full list of places tried.
pub fn locate() -> Result<PathBuf, OrtRuntimeError> {
    let explicit = std::env::var_os(env_vars::ORT_DYLIB_PATH).filter(|v| !v.is_empty());
    let candidates = match explicit {
        // An explicit setting that points nowhere is a configuration error, not a hint to guess.
        Some(p) => vec![PathBuf::from(p)],
        None => candidates(),
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(OrtRuntimeError::NotFound { tried: candidates })
}

fn candidates() -> Vec<PathBuf> {
    let names = [
        format!("libonnxruntime.so.{PINNED_VERSION}"),
        "libonnxruntime.so.1".to_string(),
        "libonnxruntime.so".to_string(),
    ];
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("lib"));
        dirs.push(exe_dir.clone());
    }
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os(env_vars::VIRTUAL_ENV).filter(|v| !v.is_empty()) {
        venvs.push(PathBuf::from(v));
    }
    venvs.push(PathBuf::from(env!("WMS_BUILD_VENV")));
    for venv in venvs {
        dirs.extend(venv_onnxruntime_dirs(&venv));
    }
    dirs.extend(
        [
            "/usr/local/lib",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
        ]
        .map(PathBuf::from),
    );
    let mut out = Vec::new();
    for dir in dirs {
        for name in &names {
            let p = dir.join(name);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// `<venv>/lib/python3.*/site-packages/onnxruntime/capi`, for whichever Python the venv has.
fn venv_onnxruntime_dirs(venv: &Path) -> Vec<PathBuf> {
    let lib = venv.join("lib");
    let mut found: Vec<PathBuf> = fs_err::read_dir(&lib)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path().join("site-packages/onnxruntime/capi"))
                .collect()
        })
        .unwrap_or_default();
    if found.is_empty() {
        found.push(lib.join("python3.11/site-packages/onnxruntime/capi"));
    }
    found.sort();
    found
}

/// Registers one CPU arena allocator (ONNX Runtime's default arena settings) on the
/// process-wide environment, once; later calls return the first outcome. Sessions built with
/// `with_env_allocators()` then draw every tensor from this one arena instead of each growing
/// its own: `wms-serve` keeps a session per worker plus one for lone requests, and with an arena
/// each they together kept three forward passes' worth of blocks (issue 18: RSS under
/// concurrency 8; measured in docs/PERFORMANCE.md). The `ort` crate has no safe call for this,
/// hence the C API.
pub fn register_shared_cpu_arena() -> Result<(), String> {
    use ort::AsPointer as _;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let env = environment().map_err(|e| e.to_string())?;
        let cpu_arena = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Arena,
            MemoryType::Default,
        )
        .map_err(|e| e.to_string())?;
        // SAFETY: as ONNX Runtime's C API documents: the environment and the memory info are
        // live for the call (the environment copies what it keeps), a null arena config means
        // the default one, and `result_from_status` takes ownership of the returned status.
        unsafe {
            ort::Error::result_from_status((ort::api().CreateAndRegisterAllocator)(
                env.ptr().cast_mut(),
                cpu_arena.ptr(),
                std::ptr::null(),
            ))
        }
        .map_err(|e| e.to_string())
    })
    .clone()
}
