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

    serve_crates();

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

/// `$OUT_DIR/serve-crates.txt` for the image SBOM (`src/oci/sbom.rs`, #12): the crates linked
/// into `wms-serve`, from `cargo metadata`'s resolve (no features, so not the `train`-only ones)
/// for this target platform, following only normal dependencies from this package and leaving
/// out proc-macro crates (they run in the compiler, nothing of them is linked); build and dev
/// dependencies are not followed. One line per crate: `name version`, a tab, its normal
/// dependencies in the set as `name version` separated by `,`. Empty when cargo metadata fails
/// (the SBOM then says so and falls back to Cargo.lock).
fn serve_crates() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("serve-crates.txt");
    let text = match serve_crates_from_metadata() {
        Ok(text) => text,
        Err(why) => {
            println!("cargo:warning=the image SBOM will list Cargo.lock's crates: {why}");
            String::new()
        }
    };
    std::fs::write(&out, text).expect("write serve-crates.txt");
}

fn serve_crates_from_metadata() -> Result<String, String> {
    use std::collections::{BTreeMap, BTreeSet};
    let cargo = std::env::var("CARGO").map_err(|_| "CARGO is not set".to_string())?;
    let manifest = format!(
        "{}/Cargo.toml",
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--offline",
        "--manifest-path",
        &manifest,
    ]);
    if let Ok(target) = std::env::var("TARGET") {
        cmd.args(["--filter-platform", &target]);
    }
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .next()
                .unwrap_or_default()
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut proc_macro: BTreeSet<&str> = BTreeSet::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let id = p["id"].as_str().unwrap_or_default();
        names.insert(
            id,
            format!(
                "{} {}",
                p["name"].as_str().unwrap_or_default(),
                p["version"].as_str().unwrap_or_default()
            ),
        );
        let is_macro = p["targets"].as_array().into_iter().flatten().any(|t| {
            t["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k == "proc-macro")
        });
        if is_macro {
            proc_macro.insert(id);
        }
    }
    let mut normal: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
        let deps = node["deps"].as_array().into_iter().flatten().filter(|d| {
            d["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null())
        });
        normal.insert(
            node["id"].as_str().unwrap_or_default(),
            deps.filter_map(|d| d["pkg"].as_str())
                .filter(|id| !proc_macro.contains(id))
                .collect(),
        );
    }
    let root = meta["resolve"]["root"]
        .as_str()
        .ok_or("cargo metadata has no root package")?;
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if seen.insert(id) {
            todo.extend(normal.get(id).into_iter().flatten());
        }
    }
    let mut lines: Vec<String> = seen
        .iter()
        .map(|id| {
            let mut deps: Vec<&str> = normal
                .get(id)
                .into_iter()
                .flatten()
                .map(|d| names[d].as_str())
                .collect();
            deps.sort_unstable();
            format!("{}\t{}", names[id], deps.join(","))
        })
        .collect();
    lines.sort();
    Ok(lines.join("\n") + "\n")
}
