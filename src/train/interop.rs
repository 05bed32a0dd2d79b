//! PyTorch interop: `.pth` state dicts of the upstream `WaterMetersUNet` ⇄ wms checkpoints.
//! Import infers the [`ModelSpec`] from tensor names and shapes and writes a complete checkpoint
//! (sidecar included) that `wms export-onnx` takes as is; export writes the spec's tensors in
//! upstream `state_dict()` order so `model.load_state_dict(torch.load(path))` accepts the file.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::pth;
use crate::checkpoint::{Checkpoint, CheckpointMeta, Tensor, TensorData};
use crate::data::preprocess::PreprocessSpec;
use crate::model::ModelSpec;

use super::TrainError;

/// Model name written into imported checkpoints.
pub const IMPORTED_MODEL_NAME: &str = "water-meters-unet";

/// The spec whose state dict has exactly these names and shapes.
pub fn infer_spec(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<ModelSpec, TrainError> {
    let err = |message: String| TrainError::Import {
        path: path.to_path_buf(),
        message,
    };
    let shape = |name: &str| -> Result<&[usize], TrainError> {
        tensors
            .get(name)
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| err(format!("no tensor {name}")))
    };
    let enc1 = shape("enc1.0.weight")?;
    let fin = shape("final.weight")?;
    if enc1.len() != 4 || fin.len() != 4 {
        return Err(err(
            "enc1.0.weight and final.weight must be 4-D conv weights".into(),
        ));
    }
    let depth = (1..)
        .take_while(|i| tensors.contains_key(&format!("enc{i}.0.weight")))
        .count();
    let spec = ModelSpec {
        in_channels: enc1[1] as i64,
        out_channels: fin[0] as i64,
        base_filters: enc1[0] as i64,
        depth,
    };
    crate::checkpoint::check_spec(&spec).map_err(err)?;
    let expected = spec.state_dict();
    for t in &expected {
        let got = shape(&t.name)?;
        let want: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        if got != want.as_slice() {
            return Err(err(format!(
                "tensor {} has shape {got:?}, expected {want:?} for in={} out={} base={} depth={}",
                t.name, spec.in_channels, spec.out_channels, spec.base_filters, spec.depth
            )));
        }
    }
    if let Some(extra) = tensors
        .keys()
        .find(|k| !expected.iter().any(|t| &t.name == *k))
    {
        return Err(err(format!("unexpected tensor {extra}")));
    }
    Ok(spec)
}

/// Reads a `.pth` state dict and writes it as a complete wms checkpoint at `out`.
pub fn import_pth(
    from: &Path,
    out: &Path,
    preprocessing: PreprocessSpec,
) -> Result<Checkpoint, TrainError> {
    let mut tensors: BTreeMap<String, Tensor> = pth::read_state_dict(from)?.into_iter().collect();
    // PyTorch < 0.4.1 state dicts have no BatchNorm counters; load_state_dict fills 0 as well.
    let bn_weights: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".running_mean").map(str::to_string))
        .collect();
    for bn in bn_weights {
        tensors
            .entry(format!("{bn}.num_batches_tracked"))
            .or_insert(Tensor {
                shape: vec![],
                data: TensorData::I64(vec![0]),
            });
    }
    let spec = infer_spec(from, &tensors)?;
    let mut meta = CheckpointMeta::new(IMPORTED_MODEL_NAME, spec, preprocessing);
    let file = from
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    meta.source = format!("import:{file}");
    let ckpt = Checkpoint { meta, tensors };
    ckpt.validate(from)?;
    ckpt.write(out)?;
    Ok(ckpt)
}

/// Writes the checkpoint's model tensors as a PyTorch state dict (upstream order).
pub fn export_pth(checkpoint: &Path, out: &Path) -> Result<(), TrainError> {
    let ckpt = Checkpoint::read(checkpoint)?;
    let ordered: Vec<(String, &Tensor)> = ckpt
        .meta
        .spec
        .state_dict()
        .into_iter()
        .map(|t| {
            let tensor = &ckpt.tensors[&t.name]; // present: `Checkpoint::read` validated it
            (t.name, tensor)
        })
        .collect();
    pth::write_state_dict(out, &ordered)?;
    Ok(())
}
