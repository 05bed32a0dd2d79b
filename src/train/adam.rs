//! Adam as `torch.optim.Adam` (not AdamW): the L2 term `weight_decay · p` is added to the
//! gradient before the moments. Our own implementation rather than `tch::nn::Optimizer` because
//! resuming must restore the moments exactly, and tch's optimizer cannot export them.
//!
//! Update (PyTorch `torch/optim/adam.py`, `_single_tensor_adam`): g ← g + λp; m ← lerp(m, g,
//! 1−β₁); v ← β₂v + (1−β₂)g²; p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε).

use std::collections::BTreeMap;

use tch::Tensor;

use crate::checkpoint;

use super::TrainError;
use super::unet::{from_checkpoint_tensor, to_checkpoint_tensor};

/// PyTorch defaults.
pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;
pub const EPS: f64 = 1e-8;

const EXP_AVG: &str = "optimizer.exp_avg.";
const EXP_AVG_SQ: &str = "optimizer.exp_avg_sq.";

#[derive(Debug)]
pub struct Adam {
    pub lr: f64,
    pub weight_decay: f64,
    /// Steps taken (t in the bias corrections).
    pub step: i64,
    params: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
}

impl Adam {
    /// Over the named trainable tensors (moments start at zero).
    pub fn new(params: Vec<(String, Tensor)>, lr: f64, weight_decay: f64) -> Self {
        let zeros = |ps: &[(String, Tensor)]| -> Vec<Tensor> {
            ps.iter().map(|(_, p)| p.zeros_like().detach()).collect()
        };
        Adam {
            lr,
            weight_decay,
            step: 0,
            exp_avg: zeros(&params),
            exp_avg_sq: zeros(&params),
            params,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update from the gradients the last `backward` left on the parameters.
    pub fn step(&mut self) -> Result<(), TrainError> {
        self.step += 1;
        let t = self.step as i32;
        let bias1 = 1.0 - BETA1.powi(t);
        let bias2_sqrt = (1.0 - BETA2.powi(t)).sqrt();
        let step_size = self.lr / bias1;
        tch::no_grad(|| -> Result<(), TrainError> {
            for (((_, p), m), v) in self
                .params
                .iter_mut()
                .zip(&mut self.exp_avg)
                .zip(&mut self.exp_avg_sq)
            {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let g = if self.weight_decay != 0.0 {
                    grad.f_add(&p.f_mul_scalar(self.weight_decay)?)?
                } else {
                    grad
                };
                let _ = m.f_lerp_(&g, 1.0 - BETA1)?;
                let _ = v.f_mul_scalar_(BETA2)?;
                let _ = v.f_addcmul_(&g.f_mul_scalar(1.0 - BETA2)?, &g)?;
                let denom = v.f_sqrt()?.f_div_scalar_(bias2_sqrt)?.f_add_scalar_(EPS)?;
                let _ = p.f_addcdiv_(&m.f_mul_scalar(-step_size)?, &denom)?;
            }
            Ok(())
        })
    }

    /// The moments as checkpoint tensors (`optimizer.exp_avg.<name>`, `optimizer.exp_avg_sq.<name>`).
    pub fn state_tensors(&self) -> Result<BTreeMap<String, checkpoint::Tensor>, TrainError> {
        let mut out = BTreeMap::new();
        for (((name, _), m), v) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            out.insert(format!("{EXP_AVG}{name}"), to_checkpoint_tensor(m)?);
            out.insert(format!("{EXP_AVG_SQ}{name}"), to_checkpoint_tensor(v)?);
        }
        Ok(out)
    }

    /// Restores the moments saved by [`Adam::state_tensors`]; every parameter must have both.
    pub fn load_state_tensors(
        &mut self,
        tensors: &BTreeMap<String, checkpoint::Tensor>,
    ) -> Result<(), TrainError> {
        for (((name, p), m), v) in self
            .params
            .iter()
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            for (prefix, dst) in [(EXP_AVG, m), (EXP_AVG_SQ, v)] {
                let key = format!("{prefix}{name}");
                let src = tensors.get(&key).ok_or_else(|| TrainError::Weights {
                    name: key.clone(),
                    message: "missing from the optimizer state".into(),
                })?;
                let t = from_checkpoint_tensor(src, p.device())?;
                if t.size() != p.size() {
                    return Err(TrainError::Weights {
                        name: key,
                        message: format!("shape {:?}, expected {:?}", t.size(), p.size()),
                    });
                }
                *dst = t;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Matches a hand-computed first step: with m₀ = v₀ = 0 the first update is
    /// −lr · g / (|g| + ε') ≈ −lr · sign(g), g including the weight decay.
    #[test]
    fn first_step_is_signed_lr() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let loss = (&p * Tensor::from_slice(&[3.0f32, 0.5])).sum(tch::Kind::Float);
        loss.backward();
        let mut adam = Adam::new(vec![("p".into(), p.shallow_clone())], 0.1, 0.0);
        adam.step().unwrap();
        let v = Vec::<f32>::try_from(&p.detach()).unwrap();
        assert!(
            (v[0] - 0.9).abs() < 1e-6 && (v[1] + 2.1).abs() < 1e-6,
            "{v:?}"
        );
        assert_eq!(adam.state_tensors().unwrap().len(), 2);
    }
}
