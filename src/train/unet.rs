//! The U-Net as a tch module, built from [`ModelSpec`] on a `VarStore` whose variable names are
//! exactly the upstream PyTorch `state_dict` keys (`enc1.0.weight`, `enc1.1.running_mean`, …,
//! `final.bias`), so checkpoints convert by name with no mapping table.
//!
//! Forward (DESIGN §5): each encoder block feeds a 2×2/2 max-pool; each decoder block takes
//! concat(bilinear upsample of the deeper features to the skip's size (align_corners=False), skip)
//! — upsampled FIRST; BatchNorm eps 1e-5, momentum 0.1; the output is logits.

use std::collections::BTreeMap;

use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, TensorData};
use crate::model::{BN_EPS, BN_MOMENTUM, BlockSpec, ModelSpec};

use super::TrainError;

/// `nn.Conv2d` parameters.
#[derive(Debug)]
struct Conv {
    weight: Tensor,
    bias: Tensor,
    padding: i64,
}

impl Conv {
    /// PyTorch's default init (kaiming_uniform with a=√5): weight and bias ~ U(±1/√fan_in).
    /// With `channels_last` the weight is stored NHWC-strided (see [`UNet::with_layout`]).
    fn new(p: &nn::Path, cin: i64, cout: i64, kernel: i64, channels_last: bool) -> Self {
        let bound = 1.0 / ((cin * kernel * kernel) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let mut weight = p.var("weight", &[cout, cin, kernel, kernel], init);
        // Only a layout: should the copy fail, the contiguous weight works the same.
        if channels_last && let Ok(cl) = tch::no_grad(|| to_channels_last(&weight)) {
            weight.set_data(&cl);
        }
        Conv {
            weight,
            bias: p.var("bias", &[cout], init),
            padding: kernel / 2,
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        x.f_conv2d(
            &self.weight,
            Some(&self.bias),
            [1, 1],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }
}

/// `nn.BatchNorm2d` parameters and buffers.
#[derive(Debug)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
}

impl Norm {
    fn new(p: &nn::Path, channels: i64) -> Self {
        Norm {
            weight: p.var("weight", &[channels], Init::Const(1.0)),
            bias: p.var("bias", &[channels], Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
            num_batches_tracked: p.add(
                "num_batches_tracked",
                Tensor::zeros([], (Kind::Int64, p.device())),
                false,
            ),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
        if train {
            // PyTorch counts batches even with a fixed momentum (it only uses the count when
            // momentum is None); keep it for state-dict parity.
            let _ = tch::no_grad(|| self.num_batches_tracked.shallow_clone().f_add_scalar_(1))?;
        }
        x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )
    }
}

/// `Sequential[Conv3×3, BN, ReLU, Conv3×3, BN, ReLU]`: indices 0, 1, 3, 4 in the state dict.
#[derive(Debug)]
struct Block {
    conv0: Conv,
    bn1: Norm,
    conv3: Conv,
    bn4: Norm,
}

impl Block {
    fn new(root: &nn::Path, b: &BlockSpec, cl: bool) -> Self {
        let p = root / b.name.as_str();
        Block {
            conv0: Conv::new(&(&p / "0"), b.in_channels, b.out_channels, 3, cl),
            bn1: Norm::new(&(&p / "1"), b.out_channels),
            conv3: Conv::new(&(&p / "3"), b.out_channels, b.out_channels, 3, cl),
            bn4: Norm::new(&(&p / "4"), b.out_channels),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
        // ReLU in place on the BatchNorm output, as `nn.ReLU(inplace=True)` upstream: BN's
        // backward needs its input, not its output, so nothing autograd saved is overwritten.
        let x = self
            .bn1
            .forward(&self.conv0.forward(x)?, train)?
            .f_relu_()?;
        self.bn4.forward(&self.conv3.forward(&x)?, train)?.f_relu_()
    }
}

/// The network. Its tensors live in the `VarStore` it was built on.
#[derive(Debug)]
pub struct UNet {
    spec: ModelSpec,
    encoders: Vec<Block>,
    bottleneck: Block,
    decoders: Vec<Block>,
    final_conv: Conv,
    channels_last: bool,
}

impl UNet {
    /// Creates the variables under `root` (normally `vs.root()`), initialized as PyTorch does;
    /// seed with `tch::manual_seed` first for reproducible weights. Channels-last on the CPU
    /// (see [`UNet::with_layout`]), libtorch's default layout elsewhere.
    pub fn new(root: &nn::Path, spec: &ModelSpec) -> Self {
        Self::with_layout(root, spec, root.device() == Device::Cpu)
    }

    /// [`UNet::new`] with the memory layout chosen: `channels_last` stores the conv weights and
    /// runs every activation NHWC-strided (shapes and values unchanged), which takes libtorch's
    /// oneDNN convolution and its channels-last BatchNorm, pooling and upsampling kernels on the
    /// CPU: about 1.2-1.4× faster training steps than NCHW there (docs/PERFORMANCE.md).
    pub fn with_layout(root: &nn::Path, spec: &ModelSpec, channels_last: bool) -> Self {
        let cl = channels_last;
        UNet {
            spec: *spec,
            encoders: spec
                .encoders()
                .iter()
                .map(|b| Block::new(root, b, cl))
                .collect(),
            bottleneck: Block::new(root, &spec.bottleneck(), cl),
            decoders: spec
                .decoders()
                .iter()
                .map(|b| Block::new(root, b, cl))
                .collect(),
            final_conv: Conv::new(
                &(root / "final"),
                spec.base_filters,
                spec.out_channels,
                1,
                cl,
            ),
            channels_last,
        }
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// `[N, in, H, W]` → logits `[N, out, H, W]`. `train` selects batch statistics (and updates the
    /// running ones) as `model.train()` does; `false` is `model.eval()`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
        let mut skips = Vec::with_capacity(self.encoders.len());
        let mut x = if self.channels_last {
            to_channels_last(x)?
        } else {
            x.shallow_clone()
        };
        for enc in &self.encoders {
            let e = enc.forward(&x, train)?; // [N, b·2^i, H/2^i, W/2^i]
            x = e.f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)?;
            skips.push(e);
        }
        x = self.bottleneck.forward(&x, train)?; // [N, 16b, H/16, W/16]
        for (dec, skip) in self.decoders.iter().zip(skips.iter().rev()) {
            let size = skip.size();
            let up = x.f_upsample_bilinear2d([size[2], size[3]], false, None, None)?;
            x = dec.forward(&Tensor::f_cat(&[&up, skip], 1)?, train)?;
        }
        self.final_conv.forward(&x) // [N, out, H, W]
    }
}

/// `x` `[N, C, H, W]` with channels-last strides (NHWC in memory, same shape and values).
fn to_channels_last(x: &Tensor) -> Result<Tensor, tch::TchError> {
    x.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])
}

/// The VarStore's tensors as checkpoint tensors, keyed by state-dict name.
pub fn state_dict(vs: &nn::VarStore) -> Result<BTreeMap<String, checkpoint::Tensor>, TrainError> {
    let mut out = BTreeMap::new();
    for (name, t) in vs.variables() {
        out.insert(name, to_checkpoint_tensor(&t)?);
    }
    Ok(out)
}

/// A tch tensor copied to host memory as a checkpoint tensor (f32, or i64 for integer kinds).
pub fn to_checkpoint_tensor(t: &Tensor) -> Result<checkpoint::Tensor, TrainError> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let flat = t.f_to_device(Device::Cpu)?.f_contiguous()?.f_view([-1])?;
    let data = match t.kind() {
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 => {
            TensorData::I64(Vec::<i64>::try_from(&flat.f_to_kind(Kind::Int64)?)?)
        }
        _ => TensorData::F32(Vec::<f32>::try_from(&flat.f_to_kind(Kind::Float)?)?),
    };
    Ok(checkpoint::Tensor { shape, data })
}

/// A checkpoint tensor as a tch tensor on `device`.
pub fn from_checkpoint_tensor(
    t: &checkpoint::Tensor,
    device: Device,
) -> Result<Tensor, TrainError> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    let flat = match &t.data {
        TensorData::F32(v) => Tensor::from_slice(v),
        TensorData::I64(v) => Tensor::from_slice(v),
    };
    Ok(flat.f_reshape(&shape)?.f_to_device(device)?)
}

/// Copies every variable of `vs` from `tensors` (by name, shapes checked). Extra tensors are an
/// error too: they mean the checkpoint is for another architecture.
pub fn load_state_dict(
    vs: &nn::VarStore,
    tensors: &BTreeMap<String, checkpoint::Tensor>,
) -> Result<(), TrainError> {
    let vars = vs.variables();
    if let Some(extra) = tensors.keys().find(|k| !vars.contains_key(*k)) {
        return Err(TrainError::Weights {
            name: extra.clone(),
            message: "not a tensor of this model".into(),
        });
    }
    for (name, mut var) in vars {
        let src = tensors.get(&name).ok_or_else(|| TrainError::Weights {
            name: name.clone(),
            message: "missing".into(),
        })?;
        let want: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
        if src.shape != want {
            return Err(TrainError::Weights {
                name,
                message: format!("shape {:?}, expected {:?}", src.shape, want),
            });
        }
        let t = from_checkpoint_tensor(src, var.device())?.f_to_kind(var.kind())?;
        tch::no_grad(|| var.f_copy_(&t))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Reduction;

    use crate::train::adam::Adam;

    /// Losses of `steps` Adam steps on one fixed batch, and the first step's logits, of a small
    /// U-Net built from `seed` in the given layout.
    fn run(channels_last: bool, steps: usize) -> (Vec<f64>, Tensor) {
        let spec = ModelSpec {
            base_filters: 4,
            depth: 2,
            ..ModelSpec::default()
        };
        tch::manual_seed(7);
        let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::rand([2, 1, 32, 32], (Kind::Float, Device::Cpu))
            .gt(0.8)
            .to_kind(Kind::Float);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = UNet::with_layout(&vs.root(), &spec, channels_last);
        let params = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let mut adam = Adam::new(params, 1e-2, 1e-4);
        let mut losses = Vec::new();
        let mut first = None;
        for _ in 0..steps {
            let logits = model.forward(&x, true).unwrap();
            let loss =
                logits.binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Mean);
            adam.zero_grad();
            loss.backward();
            adam.step().unwrap();
            losses.push(loss.double_value(&[]));
            first.get_or_insert_with(|| logits.detach().contiguous());
        }
        (losses, first.unwrap())
    }

    /// Channels-last is a layout only: same logits and the same loss curve as NCHW, within
    /// float noise, and the loss falls.
    #[test]
    fn channels_last_trains_like_nchw() {
        let (cl_losses, cl_logits) = run(true, 8);
        let (losses, logits) = run(false, 8);
        let diff = (&cl_logits - &logits).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "logits differ by {diff}");
        for (a, b) in cl_losses.iter().zip(&losses) {
            assert!(
                (a - b).abs() < 5e-3 * b.abs().max(1.0),
                "{cl_losses:?} vs {losses:?}"
            );
        }
        assert!(
            cl_losses[7] < cl_losses[0],
            "loss did not fall: {cl_losses:?}"
        );
    }
}
