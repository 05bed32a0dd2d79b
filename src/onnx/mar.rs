//! TorchServe model archives, so real TorchServe can serve the model `wms-serve` serves. An
//! archive holds `MAR-INF/MANIFEST.json` (the shape `torch-model-archiver` writes), `model.onnx`,
//! `handler.py` (embedded from `torchserve/handler.py`) and the handler's `requirements.txt`. It is
//! written twice: unpacked as `DIR/<name>/…` and zipped as `DIR/<name>.mar` (what TorchServe's
//! model store loads).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fsutil;
use crate::untrusted::path::create_parents_inside;

use super::OnnxError;

/// The TorchServe handler, embedded so the binary carries it.
pub const HANDLER_PY: &str = include_str!("../../torchserve/handler.py");
/// Python packages the handler imports beyond TorchServe's own.
pub const REQUIREMENTS_TXT: &str = "onnxruntime>=1.17\nnumpy\nPillow\n";
/// `torch-model-archiver` version whose manifest layout we write.
pub const ARCHIVER_VERSION: &str = "0.12.0";
pub const MANIFEST_PATH: &str = "MAR-INF/MANIFEST.json";
pub const SERIALIZED_FILE: &str = "model.onnx";
pub const HANDLER_FILE: &str = "handler.py";
pub const REQUIREMENTS_FILE: &str = "requirements.txt";

/// Where [`write`] put the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarPaths {
    /// `DIR/<name>/` (unpacked).
    pub dir: PathBuf,
    /// `DIR/<name>.mar` (zip).
    pub archive: PathBuf,
}

/// The manifest TorchServe reads (`MAR-INF/MANIFEST.json`).
pub fn manifest(model_name: &str, version: &str, created: SystemTime) -> serde_json::Value {
    serde_json::json!({
        "createdOn": created_on(created),
        "runtime": "python",
        "model": {
            "modelName": model_name,
            "serializedFile": SERIALIZED_FILE,
            "handler": HANDLER_FILE,
            "modelVersion": version,
            "requirementsFile": REQUIREMENTS_FILE,
        },
        "archiverVersion": ARCHIVER_VERSION,
    })
}

/// Writes the archive for `model_onnx` under `out_dir`, both unpacked and as a `.mar` zip.
pub fn write(
    out_dir: &Path,
    model_name: &str,
    version: &str,
    model_onnx: &[u8],
    created: SystemTime,
) -> Result<MarPaths, OnnxError> {
    if model_name.is_empty()
        || model_name.starts_with('.')
        || !model_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(OnnxError::MarName {
            name: model_name.to_string(),
        });
    }
    let manifest = serde_json::to_vec_pretty(&manifest(model_name, version, created))
        .expect("a json! value serializes");
    let entries: [(&str, &[u8]); 4] = [
        (MANIFEST_PATH, &manifest),
        (SERIALIZED_FILE, model_onnx),
        (HANDLER_FILE, HANDLER_PY.as_bytes()),
        (REQUIREMENTS_FILE, REQUIREMENTS_TXT.as_bytes()),
    ];
    // `model_name` comes from the checkpoint, and `out_dir` may hold what a pull request
    // committed: every path goes through the path-safety rule, so a `<name>` or `MAR-INF`
    // committed as a symlink is refused instead of written through.
    fs_err::create_dir_all(out_dir).map_err(|e| OnnxError::Write {
        path: out_dir.to_path_buf(),
        cause: e.to_string(),
    })?;
    let inside = |rel: String| {
        create_parents_inside(out_dir, &rel).map_err(|e| OnnxError::Write {
            path: out_dir.join(&rel),
            cause: e.to_string(),
        })
    };
    let dir = out_dir.join(model_name);
    for (name, bytes) in entries {
        let path = inside(format!("{model_name}/{name}"))?;
        fsutil::write_atomic(&path, bytes).map_err(|e| OnnxError::Write {
            path: path.clone(),
            cause: e.to_string(),
        })?;
    }
    let archive = inside(format!("{model_name}.mar"))?;
    let zipped = zip_entries(&entries).map_err(|e| OnnxError::Write {
        path: archive.clone(),
        cause: e.to_string(),
    })?;
    fsutil::write_atomic(&archive, &zipped).map_err(|e| OnnxError::Write {
        path: archive.clone(),
        cause: e.to_string(),
    })?;
    Ok(MarPaths { dir, archive })
}

/// Stored (uncompressed) entries with a fixed timestamp: the zip depends only on the contents.
fn zip_entries(entries: &[(&str, &[u8])]) -> zip::result::ZipResult<Vec<u8>> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::FileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    for (name, bytes) in entries {
        w.start_file(*name, options)?;
        w.write_all(bytes)?;
    }
    Ok(w.finish()?.into_inner())
}

/// `torch-model-archiver`'s `createdOn`: `%d/%m/%Y %H:%M:%S`, here in UTC.
fn created_on(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let u = crate::calendar::utc(secs);
    format!(
        "{:02}/{:02}/{:04} {:02}:{:02}:{:02}",
        u.day, u.month, u.year, u.hour, u.minute, u.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn created_on_is_torchserve_format() {
        // 2024-02-29 13:04:05 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_709_211_845);
        assert_eq!(created_on(t), "29/02/2024 13:04:05");
        assert_eq!(created_on(UNIX_EPOCH), "01/01/1970 00:00:00");
    }

    #[test]
    fn writes_dir_and_zip_with_the_same_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = write(tmp.path(), "wm-unet", "7", b"onnx bytes", UNIX_EPOCH).unwrap();
        assert_eq!(paths.dir, tmp.path().join("wm-unet"));
        let m: serde_json::Value =
            serde_json::from_slice(&fs_err::read(paths.dir.join(MANIFEST_PATH)).unwrap()).unwrap();
        assert_eq!(m["model"]["serializedFile"], "model.onnx");
        assert_eq!(m["model"]["handler"], "handler.py");
        assert_eq!(m["model"]["modelName"], "wm-unet");
        assert_eq!(m["model"]["modelVersion"], "7");
        assert_eq!(m["runtime"], "python");
        let f = fs_err::File::open(&paths.archive).unwrap();
        let mut z = zip::ZipArchive::new(f).unwrap();
        let mut names: Vec<String> = z.file_names().map(str::to_string).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "MAR-INF/MANIFEST.json",
                "handler.py",
                "model.onnx",
                "requirements.txt"
            ]
        );
        let mut s = String::new();
        std::io::Read::read_to_string(&mut z.by_name("handler.py").unwrap(), &mut s).unwrap();
        assert_eq!(s, HANDLER_PY);
        // Same inputs, same archive bytes.
        let again = tempfile::tempdir().unwrap();
        let p2 = write(again.path(), "wm-unet", "7", b"onnx bytes", UNIX_EPOCH).unwrap();
        assert_eq!(
            fs_err::read(&paths.archive).unwrap(),
            fs_err::read(&p2.archive).unwrap()
        );
    }

    #[test]
    fn a_committed_symlink_is_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, elsewhere) = (tmp.path().join("dist"), tmp.path().join("elsewhere"));
        fs_err::create_dir_all(out.join("wm-unet")).unwrap();
        fs_err::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join("wm-unet/MAR-INF")).unwrap();
        let err = write(&out, "wm-unet", "1", b"onnx", UNIX_EPOCH).unwrap_err();
        assert!(err.to_string().contains("MAR-INF"), "{err}");
        assert_eq!(fs_err::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_name_that_is_not_a_path_component_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            let err = write(tmp.path(), bad, "1", b"", UNIX_EPOCH).unwrap_err();
            assert!(matches!(err, OnnxError::MarName { .. }), "{bad}: {err}");
        }
    }
}
