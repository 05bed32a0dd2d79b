//! PyTorch checkpoint interop against the venv's real PyTorch: the reference `WaterMetersUNet`
//! written in this project from the DESIGN §5 facts (`bench/train/reference.py`, not imported
//! from anywhere else), weights going both ways, logits compared within 1e-4; and a malicious
//! pickle refused without running it.

use std::path::Path;

use tch::{Device, Tensor, nn};
use wms::checkpoint::{Checkpoint, CheckpointMeta};
use wms::data::preprocess::PreprocessSpec;
use wms::model::ModelSpec;
use wms::train::{UNet, unet};

use crate::util::{TestCommand, TestOutput, python_command, run_python, torch_reference_dir};

/// Upstream's `WaterMetersUNet` (`bench/train/reference.py`, written from DESIGN §5: blocks
/// Conv-BN-ReLU ×2, MaxPool 2×2, decoder input = concat(upsampled deeper FIRST, skip), bilinear
/// to the skip's size with align_corners=False) saving or loading a state dict and running it.
const REFERENCE_MODEL: &str = r#"
import sys, numpy as np, torch
mode, pth, x_path, out_path, reference_dir = sys.argv[1:6]
sys.path.insert(0, reference_dir)
from reference import WaterMetersUNet
n, h, w = 2, 48, 32
x = torch.from_numpy(np.fromfile(x_path, dtype=np.float32).reshape(n, 3, h, w))
model = WaterMetersUNet()
if mode == "save":
    torch.manual_seed(0)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(7)
        for name, p in model.named_parameters():
            if ".1." in name or ".4." in name:
                p.copy_(torch.rand_like(p) + 0.5 if name.endswith("weight") else torch.randn_like(p) * 0.1)
    torch.save(model.state_dict(), pth)
else:
    # torch >= 2.6 defaults to weights_only=True: only plain tensors and allow-listed types load.
    model.load_state_dict(torch.load(pth))
model.eval()
with torch.no_grad():
    model(x).numpy().astype(np.float32).tofile(out_path)
"#;

const N: i64 = 2;
const H: i64 = 48;
const W: i64 = 32;

fn write_input(dir: &Path) -> Vec<f32> {
    // Deterministic, non-trivial input without an RNG dependency.
    let x: Vec<f32> = (0..N * 3 * H * W)
        .map(|i| ((i as f32 * 0.37).sin() + (i as f32 * 0.011).cos()) * 0.8)
        .collect();
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    fs_err::write(dir.join("x.f32"), bytes).unwrap();
    x
}

fn read_f32(path: &Path) -> Vec<f32> {
    fs_err::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn run_reference(dir: &Path, mode: &str, pth: &Path) -> Vec<f32> {
    let out = dir.join("y_torch.f32");
    let reference = torch_reference_dir();
    run_python(
        REFERENCE_MODEL,
        &[Path::new(mode), pth, &dir.join("x.f32"), &out, &reference],
    );
    read_f32(&out)
}

/// Our forward pass, in eval mode, on the checkpoint's weights.
fn our_logits(ckpt: &Checkpoint, x: &[f32]) -> Vec<f32> {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = UNet::new(&vs.root(), &ckpt.meta.spec);
    unet::load_state_dict(&vs, &ckpt.tensors).unwrap();
    let x = Tensor::from_slice(x).view([N, 3, H, W]);
    let y = tch::no_grad(|| model.forward(&x, false)).unwrap();
    Vec::<f32>::try_from(&y.contiguous().view([-1])).unwrap()
}

fn assert_close(ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len());
    let max = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-4, "max |Δlogit| = {max}");
    // The logits must not be trivially equal (e.g. all zeros).
    assert!(theirs.iter().any(|v| v.abs() > 1e-3));
}

/// `wms-train import --from <from> --out <out>`.
fn import(from: &Path, out: &Path) -> TestCommand {
    TestCommand::new("wms-train")
        .args(["import", "--from"])
        .arg(from)
        .arg("--out")
        .arg(out)
}

/// `import` of `from` fails with exit 1 and one error line containing each of `expect` and a
/// hint, and writes no checkpoint at `ckpt`.
#[track_caller]
fn assert_import_refused(from: &Path, ckpt: &Path, expect: &[&str]) -> TestOutput {
    let out = import(from, ckpt).fails(1);
    let stderr = out.stderr();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for e in expect.iter().chain(&["hint:"]) {
        assert!(stderr.contains(e), "{e:?} not in {stderr}");
    }
    assert!(!ckpt.exists(), "a checkpoint was written");
    out
}

#[test]
fn pytorch_state_dict_imports_and_gives_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let x = write_input(dir.path());
    let pth = dir.path().join("best.pth");
    let theirs = run_reference(dir.path(), "save", &pth);

    let ckpt_path = dir.path().join("imported.safetensors");
    let out = import(&pth, &ckpt_path).ok();
    let report: serde_json::Value = serde_json::from_slice(&out.output.stdout).unwrap();
    assert_eq!(report["parameters"], 1_965_569);

    let ckpt = Checkpoint::read(&ckpt_path).unwrap();
    assert_eq!(ckpt.meta.spec, ModelSpec::default());
    assert_eq!(ckpt.meta.source, "import:best.pth");
    assert_eq!(ckpt.meta.preprocessing, PreprocessSpec::default());
    assert_eq!(
        ckpt.tensors["enc1.1.num_batches_tracked"].data,
        wms::checkpoint::TensorData::I64(vec![7])
    );
    assert_close(&our_logits(&ckpt, &x), &theirs);
}

#[test]
fn exported_pth_loads_in_pytorch_and_gives_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let x = write_input(dir.path());
    let spec = ModelSpec::default();
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = UNet::new(&vs.root(), &spec);
    // Non-trivial BatchNorm statistics, so eval mode is really exercised.
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with("running_mean") {
                t.copy_(&(Tensor::randn_like(&t) * 0.1));
            } else if name.ends_with("running_var") {
                t.copy_(&(Tensor::rand_like(&t) + 0.5));
            }
        }
    });
    let ckpt = Checkpoint {
        meta: CheckpointMeta::new("water-meters-unet", spec, PreprocessSpec::default()),
        tensors: unet::state_dict(&vs).unwrap(),
    };
    let ckpt_path = dir.path().join("best.safetensors");
    ckpt.write(&ckpt_path).unwrap();
    let pth = dir.path().join("model.pth");
    TestCommand::new("wms-train")
        .args(["export-pth", "--checkpoint"])
        .arg(&ckpt_path)
        .arg("--out")
        .arg(&pth)
        .ok();
    let theirs = run_reference(dir.path(), "load", &pth);
    assert_close(&our_logits(&ckpt, &x), &theirs);
}

#[test]
fn pickle_with_a_foreign_global_is_refused_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let evil = dir.path().join("evil.pth");
    // A torch-style zip whose pickle would run `os.system("touch pwned")` if executed.
    let script = r#"
import os, pickle, sys, zipfile
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("evil/data.pkl", pickle.dumps({"enc1.0.weight": Evil()}, protocol=2))
    z.writestr("evil/version", "3\n")
"#;
    python_command()
        .args(["-c", script])
        .arg(&evil)
        .arg(&marker)
        .ok();

    let ckpt = dir.path().join("out.safetensors");
    // Python pickles os.system as posix.system on Linux.
    let out = assert_import_refused(&evil, &ckpt, &["not a plain tensor state dict", "system`"]);
    let stderr = out.stderr();
    assert!(
        stderr.contains("posix.system") || stderr.contains("os.system"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the pickle was executed");
}

#[test]
fn issue11_pickle_memo_bomb_is_refused_by_wms_train_import() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.pth");
    crate::fuzz::write_memo_bomb(&bomb);
    let ckpt = dir.path().join("out.safetensors");
    let start = std::time::Instant::now();
    // The copying reader aborted (SIGABRT) after allocating 3.7 GB.
    let path = bomb.to_string_lossy();
    assert_import_refused(
        &bomb,
        &ckpt,
        &[&path, "entry \"w0\" is a list, not a tensor"],
    );
    let took = start.elapsed();
    assert!(took.as_secs() < 30, "{took:?}");
}
