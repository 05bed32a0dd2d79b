//! The data pipeline as users and the trainer meet it: `wms data synth` and `wms data qa`
//! through the binary, and the preprocessing checked against a numpy reference.

use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};
use wms::data::preprocess::PreprocessSpec;
use wms::data::preprocess::{normalize_resized_into, percentile_from_histogram};
use wms::data::{Dataset, Loader, LoaderConfig, SplitRatios, split};

use crate::util::{TestCommand, python, run_python, synth, wms};

/// `wms data qa DIR` writing its JSON and Markdown reports into `dir`; run it with `.ok()` or
/// `.fails(1)` and read the reports with [`qa_report`].
fn qa(dir: &Path) -> TestCommand {
    wms()
        .args(["data", "qa"])
        .arg(dir)
        .arg("--json")
        .arg(dir.join("qa.json"))
        .arg("--markdown")
        .arg(dir.join("qa.md"))
}

/// The JSON report of a [`qa`] run, after checking that its Markdown report was written too.
fn qa_report(dir: &Path) -> serde_json::Value {
    assert!(
        fs_err::read_to_string(dir.join("qa.md"))
            .unwrap()
            .contains("## Data QA")
    );
    serde_json::from_slice(&fs_err::read(dir.join("qa.json")).unwrap()).unwrap()
}

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs_err::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn synth_is_deterministic_by_seed_and_windows_cover_1_to_9_percent() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    let out = synth(&a, 24, "128x96", 3);
    assert!(out.stdout().contains("synthesized 24 images"), "{out}");
    synth(&b, 24, "128x96", 3);
    synth(&c, 24, "128x96", 4);
    for sub in ["images", "masks"] {
        let fa = files_in(&a.join(sub));
        assert_eq!(fa.len(), 24);
        assert_eq!(fa, files_in(&b.join(sub)), "same seed, same bytes ({sub})");
        assert_ne!(
            fa,
            files_in(&c.join(sub)),
            "another seed, other images ({sub})"
        );
    }
    let ds = Dataset::discover(&a).unwrap();
    assert_eq!(ds.samples.len(), 24);
    assert_eq!(ds.samples[0].stem, "0000");
    for s in &ds.samples {
        let img = image::open(&s.image).unwrap();
        assert_eq!((img.width(), img.height()), (128, 96));
        let mask = image::open(&s.mask).unwrap().to_luma8();
        assert!(mask.iter().all(|&v| v == 0 || v == 255), "{}", s.stem);
        let cover = mask.iter().filter(|&&v| v == 255).count() as f64 / (128.0 * 96.0);
        assert!(
            (0.01..=0.09).contains(&cover),
            "{}: coverage {cover}",
            s.stem
        );
    }
    qa(&a).ok();
    let report = qa_report(&a);
    assert_eq!(report["ok"], true);
    assert_eq!(report["valid_pairs"], 24);
}

#[test]
fn loader_reads_a_synthetic_data_set_split_by_stem() {
    let d = tempfile::tempdir().unwrap();
    synth(d.path(), 12, "64x64", 1);
    let ds = Dataset::discover(d.path()).unwrap();
    let (train, val, test) = split::split_samples(&ds.samples, &SplitRatios::default());
    assert_eq!(train.len() + val.len() + test.len(), 12);
    let spec = PreprocessSpec {
        input_width: 32,
        input_height: 32,
        ..PreprocessSpec::default()
    };
    let cfg = LoaderConfig {
        batch_size: 4,
        shuffle: true,
        augment: Some(Default::default()),
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(ds.samples.clone(), spec, cfg).unwrap();
    assert_eq!(loader.num_batches(), 3);
    let batches: Vec<_> = loader.by_ref().map(Result::unwrap).collect();
    assert_eq!(batches.len(), 3);
    assert!(batches.iter().all(|b| b.images.len() == 4 * 3 * 32 * 32));
    assert!(batches.iter().any(|b| b.masks.contains(&1.0)));
    assert_eq!(loader.stats().samples, 12);
    assert_ne!(ds.fingerprint().unwrap(), "");
}

/// A valid data set of `n` synthetic pairs to break in one way per test.
fn valid_dataset(n: usize) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    synth(d.path(), n, "64x64", 11);
    d
}

fn assert_qa_fails_with(dir: &Path, kind: &str, file: &str) {
    let out = qa(dir).fails(1);
    let stderr = out.stderr();
    let report = qa_report(dir);
    assert_eq!(report["ok"], false);
    let errors = report["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["kind"] == kind && e["files"].to_string().contains(file)),
        "{report:#}"
    );
    assert!(stderr.contains(file) && stderr.contains(kind), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn qa_catches_a_missing_mask() {
    let d = valid_dataset(3);
    fs_err::remove_file(d.path().join("masks/0001.png")).unwrap();
    assert_qa_fails_with(d.path(), "missing_mask", "images/0001.jpg");
}

#[test]
fn qa_catches_a_non_binary_mask() {
    let d = valid_dataset(3);
    let grey = GrayImage::from_fn(64, 64, |x, _| image::Luma([(x * 4) as u8]));
    grey.save(d.path().join("masks/0002.png")).unwrap();
    assert_qa_fails_with(d.path(), "non_binary_mask", "masks/0002.png");
}

#[test]
fn qa_catches_a_truncated_jpeg() {
    let d = valid_dataset(3);
    let p = d.path().join("images/0000.jpg");
    let bytes = fs_err::read(&p).unwrap();
    fs_err::write(&p, &bytes[..bytes.len() * 3 / 4]).unwrap();
    assert_qa_fails_with(d.path(), "undecodable", "images/0000.jpg");
}

#[test]
fn qa_catches_a_duplicate_photo() {
    let d = valid_dataset(3);
    let r = d.path();
    fs_err::copy(r.join("images/0000.jpg"), r.join("images/copy.jpg")).unwrap();
    fs_err::copy(r.join("masks/0000.png"), r.join("masks/copy.png")).unwrap();
    assert_qa_fails_with(r, "duplicate_photo", "images/copy.jpg");
}

#[test]
fn qa_catches_an_empty_mask_and_an_orphan_mask() {
    let d = valid_dataset(3);
    let r = d.path();
    GrayImage::new(64, 64)
        .save(r.join("masks/0001.png"))
        .unwrap();
    GrayImage::new(64, 64)
        .save(r.join("masks/lonely.png"))
        .unwrap();
    assert_qa_fails_with(r, "empty_mask", "masks/0001.png");
    assert_qa_fails_with(r, "orphan_mask", "masks/lonely.png");
}

/// numpy reference of upstream `valTransforms` after the resize, written from DESIGN §5:
/// /255 → percentiles (2, 98) over all values → stretch, clip → uint8(x·255) → 3×3 median with
/// replicated border (as cv2.medianBlur) → /255 → CHW float32.
const NUMPY_REFERENCE: &str = r#"
import sys, numpy as np
path, out, h, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
img = np.fromfile(path, dtype=np.uint8).reshape(h, w, 3) / 255.0
p2, p98 = np.percentile(img, (2, 98))
img = np.clip((img - p2) / (p98 - p2 + 1e-6), 0, 1)
u8 = (img * 255).astype(np.uint8)
pad = np.pad(u8, ((1, 1), (1, 1), (0, 0)), mode="edge")
stack = np.stack([pad[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])
med = np.sort(stack, axis=0)[4]
(med / 255.0).transpose(2, 0, 1).astype(np.float32).tofile(out)
print(repr(float(p2)), repr(float(p98)))
"#;

/// A test image's channel value from (x, y, a random u64).
type PixelFn = dyn Fn(u32, u32, u64) -> u8;

#[test]
fn contrast_stretch_and_median_match_numpy_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    let py = python();
    assert!(
        py.exists(),
        "{} not found; hint: create the project venv (make setup) or set WMS_VENV",
        py.display()
    );
    // Full range, a narrow low-contrast range (where truncation and p2/p98 matter), one with
    // saturated corners, and an odd size.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let cases: Vec<(u32, u32, Box<PixelFn>)> = vec![
        (40, 30, Box::new(|_, _, r| r as u8)),
        (
            33,
            17,
            Box::new(|x, y, r| 100 + ((x + y) % 7) as u8 + (r % 5) as u8),
        ),
        (
            25,
            25,
            Box::new(|x, y, r| {
                if x < 5 && y < 5 {
                    255
                } else {
                    60 + (r % 90) as u8
                }
            }),
        ),
        (7, 3, Box::new(|x, y, _| (x * 30 + y * 5) as u8)),
    ];
    for (case, (w, h, f)) in cases.into_iter().enumerate() {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([f(x, y, next()), f(x, y, next()), f(x, y, next())])
        });
        let input: PathBuf = d.path().join(format!("in{case}.u8"));
        let output = d.path().join(format!("out{case}.f32"));
        fs_err::write(&input, img.as_raw()).unwrap();
        let (height, width) = (PathBuf::from(h.to_string()), PathBuf::from(w.to_string()));
        let stdout = run_python(NUMPY_REFERENCE, &[&input, &output, &height, &width]);
        let want: Vec<f32> = fs_err::read(&output)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let spec = PreprocessSpec {
            input_width: w,
            input_height: h,
            ..PreprocessSpec::default()
        };
        let mut got = vec![0f32; (3 * w * h) as usize];
        normalize_resized_into(&img, &spec, &mut got);
        assert_eq!(got, want, "case {case}");

        let (p2, p98) = stdout.trim().split_once(' ').unwrap();
        let mut hist = [0u64; 256];
        for &v in img.as_raw() {
            hist[v as usize] += 1;
        }
        assert_eq!(
            percentile_from_histogram(&hist, 2.0),
            p2.parse::<f64>().unwrap(),
            "case {case}"
        );
        assert_eq!(
            percentile_from_histogram(&hist, 98.0),
            p98.parse::<f64>().unwrap(),
            "case {case}"
        );
    }
}
