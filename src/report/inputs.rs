//! The files a report is made from, read strictly: a field that is not what the producing stage
//! writes is an error naming the file and the field, never a silently empty row. Producers:
//! `metrics.json` (wms-train, DESIGN §4: a flat object of numbers), `detect-changes --format
//! json` ([`crate::changes::Detection`]), `build-image`'s JSON line (digest, size). History
//! files are read by [`super::curves::History`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ReportError;
use crate::untrusted::text::for_log;

/// A flat `metrics.json`: every value a finite number.
pub fn read_metrics(path: &Path) -> Result<BTreeMap<String, f64>, ReportError> {
    let text = read(path, "metrics")?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ReportError::json(path, "metrics", source))?;
    let Some(map) = value.as_object() else {
        return Err(ReportError::Field {
            path: path.to_path_buf(),
            field: "(top level)".into(),
            message: "is not a JSON object of metrics".into(),
            hint: "expected {\"test_iou\": 0.9, …} as wms-train writes it",
        });
    };
    let mut metrics = BTreeMap::new();
    for (k, v) in map {
        match v.as_f64() {
            Some(x) if x.is_finite() => {
                metrics.insert(k.clone(), x);
            }
            _ => {
                return Err(ReportError::Field {
                    path: path.to_path_buf(),
                    field: for_log(k).into_owned(),
                    message: format!(
                        "is {}, not a finite number",
                        for_log(&short(&v.to_string(), 40))
                    ),
                    hint: "metrics.json holds only numbers (wms-train writes it)",
                });
            }
        }
    }
    if metrics.is_empty() {
        return Err(ReportError::Field {
            path: path.to_path_buf(),
            field: "(top level)".into(),
            message: "holds no metrics".into(),
            hint: "pass the metrics.json wms-train wrote",
        });
    }
    Ok(metrics)
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

fn read(path: &Path, what: &'static str) -> Result<String, ReportError> {
    fs_err::read_to_string(path).map_err(|source| ReportError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The parts of `wms detect-changes --format json` a report shows.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Changes {
    #[serde(default)]
    pub base: String,
    #[serde(default)]
    pub head: String,
    #[serde(default)]
    pub files: Vec<ChangedFile>,
    #[serde(default)]
    pub data: Vec<DataChange>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ChangedFile {
    pub path: String,
    #[serde(default)]
    pub old_path: Option<String>,
    pub status: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DataChange {
    pub output: String,
    #[serde(default)]
    pub source: String,
    pub kind: String,
    pub description: String,
}

pub fn read_changes(path: &Path) -> Result<Changes, ReportError> {
    let text = read(path, "detect-changes")?;
    serde_json::from_str(&text).map_err(|source| {
        ReportError::json(
            path,
            "detect-changes (wms detect-changes --format json)",
            source,
        )
    })
}

/// The image a PR built.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// `name@sha256:…`, or what the user passed.
    pub reference: String,
    pub digest: Option<String>,
    /// Compressed bytes (what a pull transfers).
    pub size: Option<u64>,
}

#[derive(Deserialize)]
struct BuildImageLine {
    image: String,
    digest: String,
    compressed_size: Option<u64>,
}

/// `--image`: the JSON line `wms build-image` prints (saved to a file), or a reference.
pub fn read_image(arg: &str) -> Result<ImageInfo, ReportError> {
    let path = PathBuf::from(arg);
    if path.is_file() {
        let text = read(&path, "build-image")?;
        let line = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let parsed: BuildImageLine = serde_json::from_str(line).map_err(|source| {
            ReportError::json(&path, "build-image (the JSON line it prints)", source)
        })?;
        if !is_digest(&parsed.digest) {
            return Err(ReportError::Field {
                path,
                field: "digest".into(),
                message: format!(
                    "{} is not a sha256 digest",
                    for_log(&short(&parsed.digest, 80))
                ),
                hint: "pass the JSON wms build-image printed",
            });
        }
        return Ok(ImageInfo {
            reference: parsed.image,
            digest: Some(parsed.digest),
            size: parsed.compressed_size,
        });
    }
    let digest = arg
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .filter(|d| is_digest(d));
    if arg.is_empty() || arg.chars().any(char::is_whitespace) || arg.len() > 512 {
        return Err(ReportError::Flag {
            flag: "--image",
            message: format!(
                "{} is neither a file nor an image reference",
                for_log(&short(arg, 80))
            ),
            hint: "pass the file build-image's JSON output was saved to, or name@sha256:…",
        });
    }
    Ok(ImageInfo {
        reference: arg.to_string(),
        digest,
        size: None,
    })
}

/// The int8 export's guard figures: the `quantization` record of the checkpoint sidecar
/// (`checkpoint.json`, which wms-train writes next to `metrics.json` and `wms export-onnx
/// --precision int8` adds the record to). `None` without a sidecar or without a record (an fp32
/// export); a sidecar that is not JSON, or a record without its fields, is an error.
pub fn read_quantization(
    metrics: &Path,
) -> Result<Option<crate::checkpoint::QuantizationRecord>, ReportError> {
    #[derive(Deserialize)]
    struct Sidecar {
        #[serde(default)]
        quantization: Option<crate::checkpoint::QuantizationRecord>,
    }
    let path = metrics.with_file_name(crate::onnx::pipeline::SIDECAR_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = read(&path, "checkpoint sidecar")?;
    let sidecar: Sidecar = serde_json::from_str(&text)
        .map_err(|source| ReportError::json(&path, "checkpoint sidecar", source))?;
    Ok(sidecar.quantization)
}

fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{assert_renders_once, render};

    /// The path of a missing input shows once (`fs_err`'s cause names it), with the hint.
    #[test]
    fn a_missing_input_names_its_path_once() {
        let missing = "/nonexistent/wms-report-test/baseline.json";
        let err = read_metrics(Path::new(missing)).unwrap_err();
        assert_renders_once(&err, 1);
        let line = render(&err);
        assert_eq!(line.matches(missing).count(), 1, "{line}");
        assert!(line.starts_with("cannot read the metrics file: "), "{line}");
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        fs_err::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn metrics_errors_name_the_file_and_field() {
        let ok = file(r#"{"test_iou": 0.8, "epochs_run": 10}"#);
        assert_eq!(read_metrics(ok.path()).unwrap()["test_iou"], 0.8);
        let bad = file(r#"{"test_iou": "0.8"}"#);
        let e = read_metrics(bad.path()).unwrap_err().to_string();
        assert!(
            e.contains("test_iou") && e.contains("not a finite number"),
            "{e}"
        );
        assert!(e.contains(&bad.path().display().to_string()), "{e}");
        let e = read_metrics(file("[1]").path()).unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
        let e = read_metrics(file("{").path()).unwrap_err().to_string();
        assert!(
            e.contains("not valid metrics JSON (line 1, column 1)"),
            "{e}"
        );
        let e = render(&read_metrics(Path::new("/nonexistent/metrics.json")).unwrap_err());
        assert!(e.contains("/nonexistent/metrics.json"), "{e}");
    }

    #[test]
    fn image_from_build_output_or_reference() {
        let d = format!("sha256:{}", "a".repeat(64));
        let f = file(&format!(
            "{{\"image\":\"r/m@{d}\",\"digest\":\"{d}\",\"compressed_size\":1234}}\n"
        ));
        let i = read_image(&f.path().display().to_string()).unwrap();
        assert_eq!(
            (i.digest.as_deref(), i.size),
            (Some(d.as_str()), Some(1234))
        );
        let i = read_image(&format!("ghcr.io/o/m@{d}")).unwrap();
        assert_eq!(i.digest.as_deref(), Some(d.as_str()));
        assert_eq!(read_image("ghcr.io/o/m:v1").unwrap().digest, None);
        assert!(read_image("a b").is_err());
    }
}
