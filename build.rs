//! Build script: makes `wms-train` (and the test binaries built with the `train` feature) find libtorch
//! at run time without `LD_LIBRARY_PATH`, by embedding the directory torch-sys linked against as an
//! rpath. Also records where the project venv is, so the ONNX Runtime lookup can try it
//! (see `src/ort_runtime.rs`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WMS_VENV");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let venv = std::env::var("WMS_VENV").unwrap_or_else(|_| format!("{manifest_dir}/.venv"));
    println!("cargo:rustc-env=WMS_BUILD_VENV={venv}");

    if std::env::var_os("CARGO_FEATURE_TRAIN").is_some() {
        // torch-sys publishes the libtorch lib dir through its `links = "tch"` metadata.
        match std::env::var("DEP_TCH_LIBTORCH_LIB") {
            Ok(dir) if !dir.is_empty() => {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            }
            _ => println!(
                "cargo:warning=torch-sys did not report its libtorch dir; wms-train will need LD_LIBRARY_PATH"
            ),
        }
    }
}
