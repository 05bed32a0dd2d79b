//! `wms export-onnx --precision int8` (issue 18): the QDQ model of the upstream-sized test
//! checkpoint passes `onnx.checker` (full check), runs in ONNX Runtime (which fuses it into
//! `QLinearConv`), agrees with fp32 on ≥ 99 % of mask pixels of synthetic photos it was not
//! calibrated on, carries the accuracy guard's figures in `metadata_props`, stdout, step outputs
//! and the checkpoint sidecar; the guard refuses a calibration on one black photo (exit 3);
//! `wms-serve` reports the precision it loaded.
//!
//! The data set is `wms data synth` photos labelled with the fp32 model's own masks, so the fp32
//! model scores IoU 1 on its test split by construction and the guard's IoU drop is exactly how
//! much int8 disagrees with fp32 — with random weights, ground-truth masks of meters would leave
//! both models near 0 and the guard nothing to see.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::Array4;
use wms::checkpoint::Checkpoint;
use wms::data::preprocess::{PreprocessSpec, decode_image_file, preprocess_image, to_rgb};
use wms::model::ModelSpec;
use wms::onnx::check::OrtModel;
use wms::onnx::fixtures;

use crate::util::wms;

/// Network input side of the test checkpoint (upstream's).
const SIDE: u32 = 512;

struct Fixture {
    dir: tempfile::TempDir,
    checkpoint: PathBuf,
    fp32: PathBuf,
    data: PathBuf,
    int8: PathBuf,
    stdout: String,
    outputs: std::collections::BTreeMap<String, String>,
}

fn preprocess() -> PreprocessSpec {
    PreprocessSpec {
        input_width: SIDE,
        input_height: SIDE,
        ..PreprocessSpec::default()
    }
}

fn network_input(photo: &Path) -> Array4<f32> {
    let img = to_rgb(decode_image_file(photo).unwrap());
    let x = preprocess_image(&img, &preprocess());
    Array4::from_shape_vec((1, 3, SIDE as usize, SIDE as usize), x).unwrap()
}

fn images(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs_err::read_dir(data.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn synth(out: &Path, count: usize, seed: u64) {
    crate::util::synth(out, count, &format!("{SIDE}x{SIDE}"), seed);
}

/// The test checkpoint of `onnx.rs`: random upstream-sized weights (b=16, depth 4, random
/// BatchNorm statistics, seed 2024) at the upstream input size.
fn checkpoint(dir: &Path) -> PathBuf {
    let mut ckpt = fixtures::random_checkpoint(ModelSpec::default(), 2024);
    ckpt.meta.preprocessing = preprocess();
    let path = dir.join("best.safetensors");
    ckpt.write(&path).unwrap();
    path
}

/// Replaces every mask of `data` with the fp32 model's own mask of its photo.
fn label_with(model: &Path, data: &Path) {
    let mut m = OrtModel::load(model).unwrap();
    for photo in images(data) {
        let logits = m.run(network_input(&photo).view()).unwrap();
        let mask = wms::serve::engine::mask_from_logits(logits.as_slice().unwrap(), SIDE, SIDE);
        let stem = photo.file_stem().unwrap().to_string_lossy().into_owned();
        mask.save(data.join("masks").join(format!("{stem}.png")))
            .unwrap();
    }
}

fn fixture() -> &'static Fixture {
    static CELL: OnceLock<Fixture> = OnceLock::new();
    CELL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synth(&data, 40, 11);
        let checkpoint = checkpoint(dir.path());
        let fp32 = dir.path().join("fp32.onnx");
        wms()
            .arg("export-onnx")
            .arg("--checkpoint")
            .arg(&checkpoint)
            .arg("--out")
            .arg(&fp32)
            .ok();
        label_with(&fp32, &data);
        let int8 = dir.path().join("int8.onnx");
        let out = wms()
            .step_outputs()
            .arg("export-onnx")
            .arg("--checkpoint")
            .arg(&checkpoint)
            .arg("--out")
            .arg(&int8)
            .args(["--version", "3", "--precision", "int8", "--calibrate"])
            .arg(&data)
            // Random weights put many logits near the threshold, and the foreground is small,
            // so the IoU of int8 against fp32's own masks is far from a trained model's; the
            // guard is exercised by the black-photo test, this export records the figures.
            .args(["--calibration-images", "6", "--max-iou-drop", "1"])
            .ok();
        eprintln!("{}", out.stderr());
        Fixture {
            checkpoint,
            fp32,
            data,
            int8,
            stdout: out.stdout(),
            outputs: out.outputs.clone(),
            dir,
        }
    })
}

fn run_python(script: &str, args: &[&Path]) -> String {
    let out = std::process::Command::new(crate::util::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .env("OMP_NUM_THREADS", "2")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn int8_model_passes_the_full_onnx_check_and_is_qdq_with_int8_weights() {
    let f = fixture();
    let script = r#"
import json, sys
import onnx
onnx.checker.check_model(sys.argv[1], full_check=True)
m = onnx.load(sys.argv[1])
g = m.graph
ops = {}
for n in g.node:
    ops[n.op_type] = ops.get(n.op_type, 0) + 1
types = {}
for t in g.initializer:
    types[t.data_type] = types.get(t.data_type, 0) + 1
print(json.dumps({"ops": ops, "types": types, "meta": {p.key: p.value for p in m.metadata_props},
                  "out": [(v.name, v.type.tensor_type.elem_type) for v in g.output]}))
"#;
    let v: serde_json::Value = serde_json::from_str(run_python(script, &[&f.int8]).trim()).unwrap();
    // 18 block convolutions and the final 1×1, all int8 (the default plan).
    assert_eq!(v["ops"]["Conv"], 19, "{v}");
    let q = v["ops"]["QuantizeLinear"].as_u64().unwrap();
    let dq = v["ops"]["DequantizeLinear"].as_u64().unwrap();
    assert!(q >= 20 && dq >= 2 * 19 + q, "{v}");
    // TensorProto.DataType: 3 = INT8 (weights, weight zero points), 6 = INT32 (biases and
    // their zero points), 7 = INT64 (the pads of the first conv's 3 → 4 input channels).
    assert_eq!(v["types"]["3"], 38, "{v}");
    assert_eq!(v["types"]["6"], 38, "{v}");
    assert_eq!(v["types"]["7"], 1, "{v}");
    assert_eq!(v["ops"]["Pad"], 1, "{v}");
    assert_eq!(v["out"], serde_json::json!([["logits", 1]]));
    assert_eq!(v["meta"]["precision"], "int8");
    assert_eq!(v["meta"]["version"], "3");
    // Weights are 1 byte instead of 4: the file shrinks to well under half.
    let (a, b) = (
        fs_err::metadata(&f.fp32).unwrap().len(),
        fs_err::metadata(&f.int8).unwrap().len(),
    );
    assert!(b * 3 < a, "int8 {b} bytes vs fp32 {a}");
}

#[test]
fn onnx_runtime_fuses_the_int8_model_into_int8_kernels() {
    let f = fixture();
    // ONNX Runtime writes the graph it actually runs (level 99 = all optimizations).
    let script = r#"
import json, sys
import onnx, onnxruntime as ort
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
so.optimized_model_filepath = sys.argv[2]
ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
ops = {}
for n in onnx.load(sys.argv[2]).graph.node:
    ops[n.op_type] = ops.get(n.op_type, 0) + 1
print(json.dumps(ops))
"#;
    let optimized = f.dir.path().join("optimized.onnx");
    let v: serde_json::Value =
        serde_json::from_str(run_python(script, &[&f.int8, &optimized]).trim()).unwrap();
    // The final 1×1 too, and nothing of the model left in float convolutions.
    assert_eq!(v["QLinearConv"], 19, "{v}");
    assert_eq!(v["QLinearConcat"], 4, "{v}");
    assert!(v.get("Conv").is_none(), "{v}");
}

#[test]
fn int8_masks_agree_with_fp32_on_99_percent_of_pixels_of_unseen_photos() {
    let f = fixture();
    // Photos from another seed: neither calibration nor the guard saw them.
    let unseen = f.dir.path().join("unseen");
    synth(&unseen, 8, 99);
    let mut a = OrtModel::load(&f.fp32).unwrap();
    let mut b = OrtModel::load(&f.int8).unwrap();
    let (mut agree, mut total, mut foreground) = (0usize, 0usize, 0usize);
    for photo in images(&unseen) {
        let x = network_input(&photo);
        let (la, lb) = (a.run(x.view()).unwrap(), b.run(x.view()).unwrap());
        assert_eq!(lb.dim(), (1, 1, SIDE as usize, SIDE as usize));
        assert!(lb.iter().all(|v| v.is_finite()));
        agree += la
            .iter()
            .zip(lb.iter())
            .filter(|(p, q)| (**p > 0.0) == (**q > 0.0))
            .count();
        foreground += la.iter().filter(|v| **v > 0.0).count();
        total += la.len();
    }
    let share = agree as f64 / total as f64;
    eprintln!(
        "int8 vs fp32: {:.3} % of {total} pixels agree (fp32 foreground {:.1} %)",
        100.0 * share,
        100.0 * foreground as f64 / total as f64
    );
    // A mask that is all background (or all foreground) would agree trivially.
    assert!(
        foreground > 0 && foreground < total,
        "{foreground} of {total}"
    );
    assert!(share >= 0.99, "{share}");
}

#[test]
fn the_guard_figures_reach_stdout_step_outputs_metadata_and_the_sidecar() {
    let f = fixture();
    let printed: serde_json::Value = serde_json::from_str(f.stdout.trim()).unwrap();
    assert_eq!(printed["precision"], "int8");
    let q = &printed["quantization"];
    // At most --calibration-images 6, fewer when the val split is smaller.
    let ratios = wms::data::SplitRatios::default();
    let val = images(&f.data)
        .iter()
        .filter(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy();
            wms::data::split_of(&stem, &ratios) == wms::data::Split::Val
        })
        .count();
    assert_eq!(q["calibration_images"], val.min(6));
    assert!(q["test_images"].as_u64().unwrap() >= 1, "{q}");
    // Labelled with fp32's own masks: fp32 scores 1, the drop is int8's disagreement.
    assert_eq!(q["fp32_test_iou"], 1.0);
    assert_eq!(q["fp32_test_dice"], 1.0);
    let drop = q["iou_drop"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&drop), "{q}");
    assert!(
        (q["int8_test_iou"].as_f64().unwrap() - (1.0 - drop)).abs() < 1e-12,
        "{q}"
    );
    assert!(q["pixel_agreement"].as_f64().unwrap() >= 0.99, "{q}");
    assert_eq!(q["max_iou_drop"], 1.0);
    assert_eq!(q["fp32_convs"], serde_json::json!([]));
    eprintln!("guard: {q}");

    assert_eq!(f.outputs["precision"], "int8");
    assert_eq!(f.outputs["iou_drop"].parse::<f64>().unwrap(), drop);

    let script = r#"
import json, sys, onnx
m = onnx.load(sys.argv[1])
print(json.dumps({p.key: p.value for p in m.metadata_props}))
"#;
    let meta: serde_json::Value =
        serde_json::from_str(run_python(script, &[&f.int8]).trim()).unwrap();
    let recorded: serde_json::Value =
        serde_json::from_str(meta["quantization"].as_str().unwrap()).unwrap();
    assert_eq!(&recorded, q);

    let sidecar: serde_json::Value = serde_json::from_str(
        &fs_err::read_to_string(f.checkpoint.with_file_name("checkpoint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(&sidecar["quantization"], q);
    assert_eq!(sidecar["model_name"], "water-meters-unet");
    // `wms report` finds the record next to the run's metrics.json and shows its figures.
    let record =
        wms::report::inputs::read_quantization(&f.checkpoint.with_file_name("metrics.json"))
            .unwrap()
            .expect("the sidecar's quantization record");
    assert_eq!(serde_json::to_value(&record).unwrap(), *q);
    // The weights file itself is not touched.
    let ckpt = Checkpoint::read(&f.checkpoint).unwrap();
    assert_eq!(ckpt.meta.quantization, None);
}

#[test]
fn a_calibration_on_one_black_photo_is_refused_with_exit_3() {
    let f = fixture();
    // A data set whose val split is one black photo and whose test split is the fixture's.
    let broken = f.dir.path().join("broken");
    for d in ["images", "masks"] {
        fs_err::create_dir_all(broken.join(d)).unwrap();
    }
    let ratios = wms::data::SplitRatios::default();
    let black_stem = (0..)
        .map(|i| format!("black{i}"))
        .find(|s| wms::data::split_of(s, &ratios) == wms::data::Split::Val)
        .unwrap();
    image::RgbImage::new(SIDE, SIDE)
        .save(broken.join("images").join(format!("{black_stem}.png")))
        .unwrap();
    image::GrayImage::new(SIDE, SIDE)
        .save(broken.join("masks").join(format!("{black_stem}.png")))
        .unwrap();
    let mut tests = 0;
    for photo in images(&f.data) {
        let stem = photo.file_stem().unwrap().to_string_lossy().into_owned();
        if wms::data::split_of(&stem, &ratios) == wms::data::Split::Test {
            fs_err::copy(
                &photo,
                broken.join("images").join(photo.file_name().unwrap()),
            )
            .unwrap();
            let mask = format!("{stem}.png");
            fs_err::copy(
                f.data.join("masks").join(&mask),
                broken.join("masks").join(&mask),
            )
            .unwrap();
            tests += 1;
        }
    }
    assert!(tests >= 1);
    let out_model = f.dir.path().join("refused.onnx");
    let out = wms()
        .arg("export-onnx")
        .arg("--checkpoint")
        .arg(&f.checkpoint)
        .arg("--out")
        .arg(&out_model)
        .args(["--precision", "int8", "--calibrate"])
        .arg(&broken)
        .fails(3);
    let stderr = out.stderr();
    let line = out.error_line();
    eprintln!("{line}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    assert!(
        line.starts_with("error: quality gate not met: int8 model refused"),
        "{line}"
    );
    assert!(
        line.contains("--max-iou-drop 0.005") && line.contains("hint:"),
        "{line}"
    );
    assert!(!out_model.exists(), "a refused model must not be written");
}

#[test]
fn bad_int8_flags_are_one_line_usage_errors() {
    let f = fixture();
    let missing = f.dir.path().join("no-such-dir");
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        (
            vec!["--precision".into(), "int4".into()],
            "--precision \"int4\" is not a precision",
        ),
        (
            vec!["--precision".into(), "int8".into()],
            "needs calibration photos",
        ),
        (
            vec![
                "--precision".into(),
                "int8".into(),
                "--calibrate".into(),
                missing.clone().into(),
            ],
            "no such directory",
        ),
        (
            vec![
                "--precision".into(),
                "int8".into(),
                "--calibrate".into(),
                f.data.clone().into(),
                "--calibration-images".into(),
                "0".into(),
            ],
            "--calibration-images \"0\" is not a positive whole number",
        ),
        (
            vec!["--calibrate".into(), f.data.clone().into()],
            "--calibrate applies to int8 export only",
        ),
    ];
    for (args, expect) in cases {
        let out_model = f.dir.path().join("bad.onnx");
        let out = wms()
            .arg("export-onnx")
            .arg("--checkpoint")
            .arg(&f.checkpoint)
            .arg("--out")
            .arg(&out_model)
            .args(&args)
            .fails(2);
        let stderr = out.stderr();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(stderr.contains("hint:"), "{args:?}: {stderr}");
        assert!(!out_model.exists());
    }
}

#[test]
fn wms_serve_serves_the_int8_model_and_says_so() {
    let f = fixture();
    let server = crate::util::ServeProcess::start(&f.int8, &[]);
    let (inference, management, metrics) = (&server.inference, &server.management, &server.metrics);
    let client = reqwest::blocking::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while client
        .get(format!("{inference}/ping"))
        .send()
        .map(|r| r.status() != reqwest::StatusCode::OK)
        .unwrap_or(true)
    {
        assert!(std::time::Instant::now() < deadline, "not healthy in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let photo = fs_err::read(&images(&f.data)[0]).unwrap();
    let resp = client
        .post(format!("{inference}/predictions/water-meters-unet"))
        .header("Content-Type", "application/octet-stream")
        .body(photo)
        .send()
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let d: serde_json::Value = client
        .get(format!("{management}/models/water-meters-unet"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(d[0]["precision"], "int8", "{d}");
    let text = client
        .get(format!("{metrics}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let needle =
        r#"wms_model_precision_info{model="water-meters-unet",version="3",precision="int8"} 1"#;
    assert!(text.contains(needle), "missing {needle} in\n{text}");
}

#[test]
fn build_image_takes_the_int8_model() {
    let f = fixture();
    let layout = f.dir.path().join("oci");
    let out = wms()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("WMS_CACHE_DIR", f.dir.path().join("image-cache"))
        .arg("build-image")
        .arg("--model")
        .arg(&f.int8)
        .arg("--serve-binary")
        .arg(crate::oci::serve_binary())
        .arg("--oci-layout")
        .arg(&layout)
        .args(["--base", "scratch", "--tag", "127.0.0.1:5000/meters:int8"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(out.stdout().lines().last().unwrap()).unwrap();
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"), "{v}");
    // The model layer carries the int8 file byte for byte: find it among the layout's blobs.
    let int8 = fs_err::read(&f.int8).unwrap();
    let needle = &int8[int8.len() / 2..][..64];
    let blobs = layout.join("blobs/sha256");
    let found = fs_err::read_dir(&blobs).unwrap().any(|e| {
        let bytes = fs_err::read(e.unwrap().path()).unwrap();
        let mut tar = Vec::new();
        let plain = match std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(bytes.as_slice()),
            &mut tar,
        ) {
            Ok(_) => tar,
            Err(_) => bytes,
        };
        plain.windows(needle.len()).any(|w| w == needle)
    });
    assert!(found, "no layer holds the int8 model");
}
