//! Data-set checks (`wms data qa DIR`): unlike [`super::Dataset::discover`], which stops at the
//! first problem, QA looks at every file and reports all problems at once, as JSON for machines
//! and Markdown for people (job summaries, PR comments).
//!
//! Checks: every image has a mask and every mask an image; every file decodes completely (a
//! truncated JPEG is an error); image and mask sizes match; masks are binary after thresholding
//! (see [`NON_BINARY_MAX_FRACTION`]); no mask is empty; no photo appears twice (same SHA-256).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::DataError;
use super::dataset::{IMAGE_EXTENSIONS, IMAGES_DIR, MASK_EXTENSIONS, MASKS_DIR, list_by_stem};
use super::preprocess::{decode_image_file, to_gray};
use crate::untrusted::text::{for_log, md_code, md_text};

/// Grey values strictly between these are "mid-grey": neither clearly background nor clearly
/// foreground. JPEG-compressed masks have a thin band of such values along edges; a mask drawn
/// with soft brushes or saved as a photo has many.
pub const MID_GREY_LOW: u8 = 32;
pub const MID_GREY_HIGH: u8 = 223;
/// A mask is non-binary when more than this fraction of its pixels are mid-grey
/// (`MID_GREY_LOW < v < MID_GREY_HIGH`). 2 % tolerates JPEG edge ringing around a window covering
/// a few percent of the photo, and flags anti-aliased, blurred or greyscale-photo masks.
pub const NON_BINARY_MAX_FRACTION: f64 = 0.02;
/// Foreground threshold (DESIGN §4: mask pixel >= 127 is foreground).
pub const MASK_THRESHOLD: u8 = 127;
/// How many offending files the command prints before "…and N more".
pub const SHOW_FIRST: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    MissingDir,
    NoImages,
    MissingMask,
    OrphanMask,
    DuplicateStem,
    Undecodable,
    SizeMismatch,
    NonBinaryMask,
    EmptyMask,
    DuplicatePhoto,
}

impl IssueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::MissingDir => "missing_dir",
            IssueKind::NoImages => "no_images",
            IssueKind::MissingMask => "missing_mask",
            IssueKind::OrphanMask => "orphan_mask",
            IssueKind::DuplicateStem => "duplicate_stem",
            IssueKind::Undecodable => "undecodable",
            IssueKind::SizeMismatch => "size_mismatch",
            IssueKind::NonBinaryMask => "non_binary_mask",
            IssueKind::EmptyMask => "empty_mask",
            IssueKind::DuplicatePhoto => "duplicate_photo",
        }
    }
}

/// One problem; `files` are relative to the data set root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QaIssue {
    pub kind: IssueKind,
    pub files: Vec<String>,
    pub message: String,
}

/// The whole report (the JSON file is this, serialized).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QaReport {
    pub root: String,
    pub images: usize,
    pub masks: usize,
    /// Image/mask pairs that passed every check.
    pub valid_pairs: usize,
    pub ok: bool,
    /// Issue count per kind (every kind listed, zeros included).
    pub counts: BTreeMap<&'static str, usize>,
    pub errors: Vec<QaIssue>,
    /// The rule used for non-binary masks, so a reader of the report knows it.
    pub non_binary_rule: String,
}

struct PairResult {
    issues: Vec<QaIssue>,
    image_hash: Option<String>,
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

fn check_pair(root: &Path, image: &Path, mask: &Path) -> PairResult {
    let mut issues = Vec::new();
    let issue = |kind, files: Vec<&Path>, message: String| QaIssue {
        kind,
        files: files.iter().map(|p| rel(root, p)).collect(),
        message,
    };
    let image_hash = fs_err::read(image)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)));
    let img = decode_image_file(image);
    let msk = decode_image_file(mask).map(to_gray);
    if let Err(e) = &img {
        issues.push(issue(IssueKind::Undecodable, vec![image], e.to_string()));
    }
    let msk = match msk {
        Ok(m) => Some(m),
        Err(e) => {
            issues.push(issue(IssueKind::Undecodable, vec![mask], e.to_string()));
            None
        }
    };
    if let (Ok(img), Some(m)) = (&img, &msk)
        && (img.width(), img.height()) != m.dimensions()
    {
        issues.push(issue(
            IssueKind::SizeMismatch,
            vec![image, mask],
            format!(
                "image is {}x{} (after EXIF orientation), mask is {}x{}",
                img.width(),
                img.height(),
                m.width(),
                m.height()
            ),
        ));
    }
    if let Some(m) = &msk {
        let total = m.as_raw().len().max(1);
        let fg = m.as_raw().iter().filter(|&&v| v >= MASK_THRESHOLD).count();
        let mid = m
            .as_raw()
            .iter()
            .filter(|&&v| v > MID_GREY_LOW && v < MID_GREY_HIGH)
            .count();
        let frac = mid as f64 / total as f64;
        if frac > NON_BINARY_MAX_FRACTION {
            issues.push(issue(
                IssueKind::NonBinaryMask,
                vec![mask],
                format!(
                    "{:.1} % of pixels are mid-grey ({MID_GREY_LOW} < v < {MID_GREY_HIGH}); at most {:.0} % allowed",
                    frac * 100.0,
                    NON_BINARY_MAX_FRACTION * 100.0
                ),
            ));
        }
        if fg == 0 {
            issues.push(issue(
                IssueKind::EmptyMask,
                vec![mask],
                format!("no pixel >= {MASK_THRESHOLD}: the photo has no labelled counter window"),
            ));
        }
    }
    PairResult {
        issues,
        image_hash: img.is_ok().then_some(image_hash).flatten(),
    }
}

/// Checks the data set at `dir`. Problems with the data are issues in the report, never `Err`;
/// `Err` is only for failing to list a folder that exists.
pub fn run_qa(dir: &Path) -> Result<QaReport, DataError> {
    let mut errors = Vec::new();
    let images_dir = dir.join(IMAGES_DIR);
    let masks_dir = dir.join(MASKS_DIR);
    let mut listing = |d: &Path, exts: &[&str]| -> Result<BTreeMap<String, PathBuf>, DataError> {
        if !d.is_dir() {
            errors.push(QaIssue {
                kind: IssueKind::MissingDir,
                files: vec![rel(dir, d)],
                message: "folder not found".into(),
            });
            return Ok(BTreeMap::new());
        }
        let (by_stem, dups) = list_by_stem(d, exts)?;
        for (stem, a, b) in dups {
            errors.push(QaIssue {
                kind: IssueKind::DuplicateStem,
                files: vec![rel(dir, &a), rel(dir, &b)],
                message: format!("two files with the stem `{stem}`"),
            });
        }
        Ok(by_stem)
    };
    let images = listing(&images_dir, IMAGE_EXTENSIONS)?;
    let masks = listing(&masks_dir, MASK_EXTENSIONS)?;
    if images_dir.is_dir() && images.is_empty() {
        errors.push(QaIssue {
            kind: IssueKind::NoImages,
            files: vec![rel(dir, &images_dir)],
            message: "no .jpg, .jpeg or .png files".into(),
        });
    }
    let mut pairs = Vec::new();
    for (stem, image) in &images {
        match masks.get(stem) {
            Some(mask) => pairs.push((image.clone(), mask.clone())),
            None => errors.push(QaIssue {
                kind: IssueKind::MissingMask,
                files: vec![rel(dir, image)],
                message: format!("no masks/{stem}.png (or .jpg/.jpeg)"),
            }),
        }
    }
    for (stem, mask) in &masks {
        if !images.contains_key(stem) {
            errors.push(QaIssue {
                kind: IssueKind::OrphanMask,
                files: vec![rel(dir, mask)],
                message: format!("no images/{stem}.jpg (or .jpeg/.png)"),
            });
        }
    }

    let bar =
        crate::github::actions::Actions::from_env().progress(pairs.len() as u64, "checking data");
    let results: Vec<PairResult> = pairs
        .par_iter()
        .map(|(i, m)| {
            let r = check_pair(dir, i, m);
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut valid_pairs: usize = 0;
    let mut by_hash: BTreeMap<&str, Vec<&Path>> = BTreeMap::new();
    for (r, (image, _)) in results.iter().zip(&pairs) {
        if r.issues.is_empty() {
            valid_pairs += 1;
        }
        errors.extend(r.issues.iter().cloned());
        if let Some(h) = &r.image_hash {
            by_hash.entry(h).or_default().push(image);
        }
    }
    for (hash, files) in by_hash {
        if files.len() > 1 {
            valid_pairs = valid_pairs.saturating_sub(files.len() - 1);
            errors.push(QaIssue {
                kind: IssueKind::DuplicatePhoto,
                files: files.iter().map(|p| rel(dir, p)).collect(),
                message: format!("identical content (sha256 {})", &hash[..12]),
            });
        }
    }
    errors.sort_by(|a, b| (a.kind, &a.files).cmp(&(b.kind, &b.files)));
    let mut counts: BTreeMap<&'static str, usize> =
        ALL_KINDS.iter().map(|k| (k.as_str(), 0)).collect();
    for e in &errors {
        *counts.entry(e.kind.as_str()).or_default() += 1;
    }
    let report = QaReport {
        root: dir.display().to_string(),
        images: images.len(),
        masks: masks.len(),
        valid_pairs,
        ok: errors.is_empty(),
        counts,
        errors,
        non_binary_rule: format!(
            "a mask is non-binary when more than {:.0} % of its pixels are mid-grey ({MID_GREY_LOW} < v < {MID_GREY_HIGH})",
            NON_BINARY_MAX_FRACTION * 100.0
        ),
    };
    tracing::info!(
        images = report.images,
        masks = report.masks,
        errors = report.errors.len(),
        "data QA of {}",
        dir.display()
    );
    Ok(report)
}

const ALL_KINDS: [IssueKind; 10] = [
    IssueKind::MissingDir,
    IssueKind::NoImages,
    IssueKind::MissingMask,
    IssueKind::OrphanMask,
    IssueKind::DuplicateStem,
    IssueKind::Undecodable,
    IssueKind::SizeMismatch,
    IssueKind::NonBinaryMask,
    IssueKind::EmptyMask,
    IssueKind::DuplicatePhoto,
];

impl QaReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes") + "\n"
    }

    /// For job summaries and people: a verdict, counts per check, then the offending files.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let verdict = if self.ok { "✅ passed" } else { "❌ failed" };
        md.push_str(&format!("## Data QA: {verdict}\n\n"));
        md.push_str(&format!(
            "{}: {} images, {} masks, {} valid pairs.\n\n",
            md_code(&self.root),
            self.images,
            self.masks,
            self.valid_pairs
        ));
        md.push_str("| check | problems |\n|---|---:|\n");
        for (kind, n) in &self.counts {
            md.push_str(&format!("| {} | {} |\n", kind.replace('_', " "), n));
        }
        if !self.errors.is_empty() {
            md.push_str("\n| problem | files | detail |\n|---|---|---|\n");
            for e in &self.errors {
                // File names (and messages quoting them) come from the data set: escaped.
                let files: Vec<String> = e.files.iter().map(|f| md_code(f)).collect();
                md.push_str(&format!(
                    "| {} | {} | {} |\n",
                    e.kind.as_str().replace('_', " "),
                    files.join(", "),
                    md_text(&e.message)
                ));
            }
        }
        md.push_str(&format!("\nRule: {}.\n", self.non_binary_rule));
        md
    }

    /// One line per issue for the terminal, the first [`SHOW_FIRST`] only, safe to print (file
    /// names quoted by `for_log`).
    pub fn first_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .errors
            .iter()
            .take(SHOW_FIRST)
            .map(|e| {
                let line = format!("{}: {}: {}", e.kind.as_str(), e.files.join(", "), e.message);
                for_log(&line).into_owned()
            })
            .collect();
        if self.errors.len() > SHOW_FIRST {
            lines.push(format!("…and {} more", self.errors.len() - SHOW_FIRST));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: a file name from the data set can neither add a heading or a table cell to the
    /// summary nor a line to the terminal.
    #[test]
    fn issue11_file_names_cannot_break_the_report() {
        let report = QaReport {
            root: "data".into(),
            images: 1,
            masks: 0,
            valid_pairs: 0,
            ok: false,
            counts: BTreeMap::new(),
            errors: vec![QaIssue {
                kind: IssueKind::MissingMask,
                files: vec!["images/a|b\n# x.jpg".into()],
                message: "no masks/a|b\n# x.png (or .jpg/.jpeg)".into(),
            }],
            non_binary_rule: "r".into(),
        };
        let md = report.to_markdown();
        assert_eq!(md.lines().filter(|l| l.starts_with('#')).count(), 1, "{md}");
        assert!(
            md.contains(
                "| missing mask | `images/a\\|b\\n# x.jpg` | no masks/a\\|b\\\\n\\# x.png \\(or .jpg/.jpeg\\) |"
            ),
            "{md}"
        );
        assert_eq!(
            report.first_lines(),
            ["missing_mask: images/a|b\\n# x.jpg: no masks/a|b\\n# x.png (or .jpg/.jpeg)"]
        );
    }
}
