//! A plain f32 forward pass of the U-Net straight from a checkpoint, written to be obviously
//! right rather than fast: convolution as im2col + GEMM, BatchNorm applied unfolded in eval mode
//! (running statistics), ReLU, 2×2 max pooling, bilinear resize with PyTorch's
//! `align_corners=False` arithmetic, channel concat. It shares nothing with the graph builder but
//! the spec, so agreeing with ONNX Runtime on the exported graph checks BatchNorm folding, layer
//! order and the Resize semantics at once.

use ndarray::{Array2, Array4, ArrayView4, Axis, s};

use crate::checkpoint::Checkpoint;
use crate::model::{BN_EPS, BlockSpec};

use super::OnnxError;

/// Logits `[N, out, H, W]` for preprocessed images `[N, in, H, W]`.
pub fn forward(ckpt: &Checkpoint, input: ArrayView4<f32>) -> Result<Array4<f32>, OnnxError> {
    let spec = ckpt.meta.spec;
    let (_, c, h, w) = input.dim();
    let min_side = spec.size_multiple() as usize;
    if c as i64 != spec.in_channels || h < min_side || w < min_side {
        return Err(OnnxError::BadInput {
            message: format!("got input {:?}", input.shape()),
            channels: spec.in_channels,
            multiple: spec.size_multiple(),
        });
    }
    let net = Weights(ckpt);
    // [N, 3, H, W]
    let mut x = input.to_owned();
    let mut skips = Vec::with_capacity(spec.depth);
    for enc in spec.encoders() {
        // enc1: [N, 16, H, W] … enc4: [N, 128, H/8, W/8]
        let e = net.block(x.view(), &enc)?;
        // [N, C, h/2, w/2]
        x = max_pool_2x2(e.view());
        skips.push(e);
    }
    // [N, 256, H/16, W/16]
    x = net.block(x.view(), &spec.bottleneck())?;
    for (dec, skip) in spec.decoders().iter().zip(skips.iter().rev()) {
        let (_, _, sh, sw) = skip.dim();
        // dec4: [N, 256, H/8, W/8] … dec1: [N, 32, H, W]
        let up = resize_bilinear(x.view(), sh, sw);
        // Upstream: torch.cat([upsampled, skip], dim=1).
        // dec4: [N, 384, H/8, W/8] … dec1: [N, 48, H, W]
        let cat = ndarray::concatenate(Axis(1), &[up.view(), skip.view()])
            .expect("same N, H, W by construction");
        x = net.block(cat.view(), dec)?;
    }
    let (cin, cout) = (spec.base_filters as usize, spec.out_channels as usize);
    let fw = net.get("final.weight", &[cout, cin, 1, 1])?;
    let fb = net.get("final.bias", &[cout])?;
    // [N, 1, H, W]
    Ok(conv2d(x.view(), fw, fb, cout, 1, 0))
}

struct Weights<'c>(&'c Checkpoint);

impl<'c> Weights<'c> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<&'c [f32], OnnxError> {
        super::f32_weight(self.0, name, shape)
    }

    /// `Sequential[Conv3×3, BatchNorm2d, ReLU, Conv3×3, BatchNorm2d, ReLU]`.
    fn block(&self, x: ArrayView4<f32>, b: &BlockSpec) -> Result<Array4<f32>, OnnxError> {
        let (cin, cout) = (b.in_channels as usize, b.out_channels as usize);
        let mut y = x.to_owned();
        for (conv, bn, ci) in [(0, 1, cin), (3, 4, cout)] {
            let n = &b.name;
            let w = self.get(&format!("{n}.{conv}.weight"), &[cout, ci, 3, 3])?;
            let bias = self.get(&format!("{n}.{conv}.bias"), &[cout])?;
            y = conv2d(y.view(), w, bias, cout, 3, 1);
            batch_norm_eval(
                &mut y,
                self.get(&format!("{n}.{bn}.weight"), &[cout])?,
                self.get(&format!("{n}.{bn}.bias"), &[cout])?,
                self.get(&format!("{n}.{bn}.running_mean"), &[cout])?,
                self.get(&format!("{n}.{bn}.running_var"), &[cout])?,
            );
            y.mapv_inplace(|v| v.max(0.0));
        }
        Ok(y)
    }
}

/// Zero-padded stride-1 convolution, `[N, Cin, H, W] -> [N, Cout, H + 2·pad − k + 1, …]`,
/// weight `[Cout, Cin, k, k]` row-major. im2col over bands of output rows keeps the column
/// buffer small (a few MiB) at 512×512.
pub fn conv2d(
    x: ArrayView4<f32>,
    weight: &[f32],
    bias: &[f32],
    cout: usize,
    k: usize,
    pad: usize,
) -> Array4<f32> {
    let (n, cin, h, w) = x.dim();
    let (oh, ow) = (h + 2 * pad + 1 - k, w + 2 * pad + 1 - k);
    let wmat = Array2::from_shape_vec((cout, cin * k * k), weight.to_vec())
        .expect("weight length = cout·cin·k·k, checked by the caller");
    let mut out = Array4::<f32>::zeros((n, cout, oh, ow));
    let band = (4_000_000 / (cin * k * k * ow)).clamp(1, oh);
    for b in 0..n {
        let xb = x.index_axis(Axis(0), b);
        let mut r0 = 0;
        while r0 < oh {
            let r1 = (r0 + band).min(oh);
            let rows = r1 - r0;
            // [Cin·k·k, rows·ow]
            let mut cols = Array2::<f32>::zeros((cin * k * k, rows * ow));
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        let mut row = cols.row_mut((ci * k + ky) * k + kx);
                        for oy in r0..r1 {
                            let iy = (oy + ky) as isize - pad as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for ox in 0..ow {
                                let ix = (ox + kx) as isize - pad as isize;
                                if ix >= 0 && ix < w as isize {
                                    row[(oy - r0) * ow + ox] = xb[[ci, iy as usize, ix as usize]];
                                }
                            }
                        }
                    }
                }
            }
            // [Cout, rows·ow]
            let y = wmat.dot(&cols);
            for co in 0..cout {
                for (i, v) in y.row(co).iter().enumerate() {
                    out[[b, co, r0 + i / ow, i % ow]] = v + bias[co];
                }
            }
            r0 = r1;
        }
    }
    out
}

/// `BatchNorm2d` in eval mode: `(x − μ)/√(σ² + ε)·γ + β` per channel.
pub fn batch_norm_eval(
    x: &mut Array4<f32>,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
) {
    for (c, mut plane) in x.axis_iter_mut(Axis(1)).enumerate() {
        let inv_std = (1.0 / (f64::from(var[c]) + BN_EPS).sqrt()) as f32;
        let (m, g, bt) = (mean[c], gamma[c], beta[c]);
        plane.mapv_inplace(|v| (v - m) * inv_std * g + bt);
    }
}

/// `MaxPool2d(2)` (floor): `[N, C, H, W] -> [N, C, H/2, W/2]`.
pub fn max_pool_2x2(x: ArrayView4<f32>) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = (h / 2, w / 2);
    Array4::from_shape_fn((n, c, oh, ow), |(b, ch, y, xx)| {
        let p = x.slice(s![b, ch, 2 * y..2 * y + 2, 2 * xx..2 * xx + 2]);
        p.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    })
}

/// `F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)`:
/// source coordinate `(dst + 0.5)·(in/out) − 0.5`, clamped at 0, neighbours clamped at the edge.
pub fn resize_bilinear(x: ArrayView4<f32>, oh: usize, ow: usize) -> Array4<f32> {
    let (n, c, ih, iw) = x.dim();
    // (i0, i1, λ1) per output coordinate, as PyTorch computes them in f32.
    let taps = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| {
                let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (src as usize).min(inp - 1);
                let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ty, tx) = (taps(oh, ih), taps(ow, iw));
    Array4::from_shape_fn((n, c, oh, ow), |(b, ch, y, xx)| {
        let (y0, y1, ly) = ty[y];
        let (x0, x1, lx) = tx[xx];
        let p = |yy, xi| x[[b, ch, yy, xi]];
        (1.0 - ly) * ((1.0 - lx) * p(y0, x0) + lx * p(y0, x1))
            + ly * ((1.0 - lx) * p(y1, x0) + lx * p(y1, x1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use crate::onnx::fixtures::{random_checkpoint, random_input};

    #[test]
    fn conv_matches_a_direct_loop() {
        let x = random_input([2, 3, 5, 7], 1);
        let w: Vec<f32> = random_input([4, 3, 3, 3], 2).iter().copied().collect();
        let bias = [0.1, -0.2, 0.3, 0.0];
        let y = conv2d(x.view(), &w, &bias, 4, 3, 1);
        for (b, co, oy, ox) in [(0, 0, 0, 0), (1, 3, 4, 6), (0, 2, 2, 3), (1, 1, 0, 6)] {
            let mut acc = bias[co] as f64;
            for ci in 0..3 {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = (oy as isize + ky - 1, ox as isize + kx - 1);
                        if (0..5).contains(&iy) && (0..7).contains(&ix) {
                            acc +=
                                f64::from(w[((co * 3 + ci) * 3 + ky as usize) * 3 + kx as usize])
                                    * f64::from(x[[b, ci, iy as usize, ix as usize]]);
                        }
                    }
                }
            }
            assert!((y[[b, co, oy, ox]] as f64 - acc).abs() < 1e-5);
        }
    }

    #[test]
    fn bilinear_2x_matches_pytorch_values() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4),
        // mode="bilinear", align_corners=False)[0, 0, 0] == [1.0, 1.25, 1.75, 2.0]
        let x = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let y = resize_bilinear(x.view(), 4, 4);
        let row: Vec<f32> = y.slice(s![0, 0, 0, ..]).to_vec();
        assert_eq!(row, vec![1.0, 1.25, 1.75, 2.0]);
        let col: Vec<f32> = y.slice(s![0, 0, .., 3]).to_vec();
        assert_eq!(col, vec![2.0, 2.5, 3.5, 4.0]);
    }

    #[test]
    fn max_pool_takes_the_maximum() {
        let x =
            Array4::from_shape_vec((1, 1, 2, 4), vec![1., 5., 2., 0., 3., 4., -1., -2.]).unwrap();
        assert_eq!(
            max_pool_2x2(x.view()).into_raw_vec_and_offset().0,
            vec![5., 2.]
        );
    }

    #[test]
    fn forward_has_the_output_shape_and_rejects_wrong_channels() {
        let spec = ModelSpec {
            base_filters: 4,
            depth: 2,
            ..ModelSpec::default()
        };
        let c = random_checkpoint(spec, 5);
        let y = forward(&c, random_input([2, 3, 8, 12], 1).view()).unwrap();
        assert_eq!(y.dim(), (2, 1, 8, 12));
        assert!(y.iter().all(|v| v.is_finite()));
        let err = forward(&c, random_input([1, 4, 8, 8], 1).view()).unwrap_err();
        assert!(err.to_string().contains("[1, 4, 8, 8]"), "{err}");
    }
}
