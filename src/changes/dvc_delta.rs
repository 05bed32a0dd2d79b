//! What a change to a `.dvc` file or `dvc.lock` means for the data it tracks: parses both
//! versions' `outs` and reports each output that appeared, disappeared or changed (md5, size,
//! nfiles), in words a reviewer reads (`data/training/images: 1244 → 1489 files`).
//!
//! Only the `outs` entries are read here (DESIGN §8: `md5`, `size`, `nfiles`, `hash`, `path`;
//! `dvc.lock` is `schema: '2.0'` with `stages.<name>.outs`). Reading caches, remotes or `.dir`
//! objects is the job of the `dvc` module; this one must stay a pure function of two texts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One tracked output as recorded in a `.dvc` file or a `dvc.lock` stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DvcOut {
    /// Repository-relative path (the file's own directory joined with the recorded `path`).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nfiles: Option<u64>,
    /// `md5` for DVC 3.x entries; absent for 2.x legacy ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaKind {
    Added,
    Removed,
    Modified,
}

/// One output whose recorded content differs between base and head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataDelta {
    /// The `.dvc` file or `dvc.lock` that records it (head path; base path when deleted).
    pub source: String,
    /// The `dvc.lock` stage, for lock files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    pub output: String,
    pub kind: DeltaKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<DvcOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<DvcOut>,
    /// The human sentence fragment, e.g. `data/training/images: 1244 → 1489 files (+245)`.
    pub description: String,
}

/// A `.dvc` or `dvc.lock` text that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct DvcParseError {
    pub file: String,
    pub message: String,
}

/// Whether `path` is a file this module understands.
pub fn is_dvc_metafile(path: &str) -> bool {
    crate::dvc::dvcfile::is_metafile(path)
}

/// The outputs recorded in one version of `file`, keyed by repository path, with their stage.
/// The parsing itself is [`crate::dvc::dvcfile::parse_outs`], shared with `wms data`.
pub fn parse_outs(
    file: &str,
    text: &str,
) -> Result<BTreeMap<String, (Option<String>, DvcOut)>, DvcParseError> {
    let recorded =
        crate::dvc::dvcfile::parse_outs(file, text).map_err(|message| DvcParseError {
            file: file.to_string(),
            message,
        })?;
    let dir = match file.rfind('/') {
        Some(i) => &file[..i],
        None => "",
    };
    let mut out = BTreeMap::new();
    for r in recorded {
        let path = join_normalized(dir, &r.out.path);
        out.entry(path.clone()).or_insert((
            r.stage,
            DvcOut {
                path,
                md5: r.out.md5,
                size: r.out.size,
                nfiles: r.out.nfiles,
                hash: r.out.hash,
            },
        ));
    }
    Ok(out)
}

/// The deltas between the base and head versions of one metafile (`None`: absent on that side).
/// `base_path` differs from `head_path` for renames.
pub fn deltas(
    base_path: &str,
    base: Option<&str>,
    head_path: &str,
    head: Option<&str>,
) -> Result<Vec<DataDelta>, DvcParseError> {
    let before = match base {
        Some(text) => parse_outs(base_path, text)?,
        None => BTreeMap::new(),
    };
    let after = match head {
        Some(text) => parse_outs(head_path, text)?,
        None => BTreeMap::new(),
    };
    let source = if head.is_some() { head_path } else { base_path };
    let mut out = Vec::new();
    for (path, (stage, new)) in &after {
        match before.get(path) {
            None => out.push(DataDelta {
                source: source.to_string(),
                stage: stage.clone(),
                output: path.clone(),
                kind: DeltaKind::Added,
                before: None,
                after: Some(new.clone()),
                description: format!("{path}: newly tracked{}", totals(new)),
            }),
            Some((_, old))
                if old.md5 != new.md5 || old.size != new.size || old.nfiles != new.nfiles =>
            {
                out.push(DataDelta {
                    source: source.to_string(),
                    stage: stage.clone(),
                    output: path.clone(),
                    kind: DeltaKind::Modified,
                    before: Some(old.clone()),
                    after: Some(new.clone()),
                    description: describe_change(path, old, new),
                })
            }
            Some(_) => {}
        }
    }
    for (path, (stage, old)) in &before {
        if !after.contains_key(path) {
            out.push(DataDelta {
                source: source.to_string(),
                stage: stage.clone(),
                output: path.clone(),
                kind: DeltaKind::Removed,
                before: Some(old.clone()),
                after: None,
                description: format!("{path}: no longer tracked{}", totals(old)),
            });
        }
    }
    Ok(out)
}

fn totals(out: &DvcOut) -> String {
    match (out.nfiles, out.size) {
        (Some(n), Some(s)) => format!(" ({n} files, {})", human_size(s)),
        (None, Some(s)) => format!(" ({})", human_size(s)),
        (Some(n), None) => format!(" ({n} files)"),
        (None, None) => String::new(),
    }
}

fn describe_change(path: &str, old: &DvcOut, new: &DvcOut) -> String {
    let mut parts = Vec::new();
    if let (Some(a), Some(b)) = (old.nfiles, new.nfiles)
        && a != b
    {
        parts.push(format!("{a} → {b} files ({:+})", b as i128 - a as i128));
    }
    if let (Some(a), Some(b)) = (old.size, new.size)
        && a != b
    {
        parts.push(format!("{} → {}", human_size(a), human_size(b)));
    }
    if parts.is_empty() {
        let short = |m: &Option<String>| {
            m.as_deref()
                .map(|m| m.chars().take(8).collect::<String>())
                .unwrap_or_else(|| "none".into())
        };
        parts.push(format!(
            "content changed, same size (md5 {} → {})",
            short(&old.md5),
            short(&new.md5)
        ));
    }
    format!("{path}: {}", parts.join(", "))
}

/// Bytes in SI units with one decimal (`96.3 MB`), as `du --si` and DVC's own output print.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

/// `dir` joined with `rel`, with `.` and `..` resolved (DVC paths may climb: `../data`).
fn join_normalized(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_DVC: &str = "outs:\n- md5: a304afb96060aad90176268345e10355.dir\n  size: 80123456\n  nfiles: 1244\n  hash: md5\n  path: images\n";
    const NEW_DVC: &str = "outs:\n- md5: 9f2c1e0b1c1e4a7d8a6b5c4d3e2f1a0b.dir\n  size: 96300000\n  nfiles: 1489\n  hash: md5\n  path: images\n";

    #[test]
    fn a_grown_directory_reads_as_file_counts() {
        let d = deltas(
            "data/training/images.dvc",
            Some(OLD_DVC),
            "data/training/images.dvc",
            Some(NEW_DVC),
        )
        .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, DeltaKind::Modified);
        assert_eq!(
            d[0].description,
            "data/training/images: 1244 → 1489 files (+245), 80.1 MB → 96.3 MB"
        );
    }

    #[test]
    fn added_and_removed_files_and_reformatting() {
        let added = deltas("a/x.dvc", None, "a/x.dvc", Some(NEW_DVC)).unwrap();
        assert_eq!(added[0].kind, DeltaKind::Added);
        assert_eq!(added[0].output, "a/images");
        assert!(
            added[0]
                .description
                .contains("newly tracked (1489 files, 96.3 MB)"),
            "{}",
            added[0].description
        );
        let removed = deltas("x.dvc", Some(OLD_DVC), "x.dvc", None).unwrap();
        assert_eq!(removed[0].kind, DeltaKind::Removed);
        // Same entries, other key order: no data change.
        let reordered = "outs:\n- path: images\n  hash: md5\n  nfiles: 1244\n  size: 80123456\n  md5: a304afb96060aad90176268345e10355.dir\n";
        assert!(
            deltas("x.dvc", Some(OLD_DVC), "x.dvc", Some(reordered))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn dvc_lock_stages_and_same_size_edits() {
        let old = "schema: '2.0'\nstages:\n  train:\n    cmd: wms-train train\n    deps:\n    - path: data\n      md5: aaa.dir\n    outs:\n    - path: models/best.safetensors\n      hash: md5\n      md5: 11112222333344445555666677778888\n      size: 7864320\n";
        let new = old.replace("11112222", "99990000");
        let d = deltas("dvc.lock", Some(old), "dvc.lock", Some(&new)).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].stage.as_deref(), Some("train"));
        assert_eq!(
            d[0].description,
            "models/best.safetensors: content changed, same size (md5 11112222 → 99990000)"
        );
        let bad = deltas(
            "dvc.lock",
            Some("schema: '3.0'\nstages: {}\n"),
            "dvc.lock",
            None,
        );
        assert!(bad.unwrap_err().message.contains("unsupported"));
        let bad = deltas("x.dvc", Some("outs: 3\n"), "x.dvc", None);
        assert!(
            bad.unwrap_err()
                .to_string()
                .starts_with("x.dvc: not a .dvc file")
        );
    }

    #[test]
    fn paths_and_names() {
        assert_eq!(join_normalized("data/sub", "../images"), "data/images");
        assert_eq!(join_normalized("", "./images"), "images");
        assert!(is_dvc_metafile("data/images.dvc"));
        assert!(is_dvc_metafile("sub/dvc.lock"));
        assert!(!is_dvc_metafile(".dvc"));
        assert!(!is_dvc_metafile("dvc.yaml"));
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500_000), "1.5 MB");
    }
}
