//! Deterministic random checkpoints and inputs for parity checks and tests. Weights are drawn so
//! that activations keep an O(1) scale through the whole network (He-normal convolutions,
//! BatchNorm statistics near — but not at — identity), so a 1e-4 logit tolerance means something.
//!
//! The generator is a fixed SplitMix64, not `rand`'s `StdRng`, whose stream may change between
//! releases: a seed here means the same numbers forever.

use std::collections::BTreeMap;

use ndarray::Array4;

use crate::checkpoint::{Checkpoint, CheckpointMeta, Tensor, TensorData};
use crate::data::preprocess::PreprocessSpec;
use crate::model::ModelSpec;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fully specified.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A checkpoint for `spec` with random weights and random (eval-mode) BatchNorm statistics.
pub fn random_checkpoint(spec: ModelSpec, seed: u64) -> Checkpoint {
    let mut rng = SplitMix64::new(seed);
    let mut tensors = BTreeMap::new();
    for t in spec.state_dict() {
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let n: usize = shape.iter().product();
        let name = t.name.as_str();
        let mut draw = |f: &mut dyn FnMut(&mut SplitMix64) -> f64| {
            TensorData::F32((0..n).map(|_| f(&mut rng) as f32).collect())
        };
        let data = if name.ends_with("num_batches_tracked") {
            TensorData::I64(vec![1000; n])
        } else if name.ends_with(".running_mean") {
            draw(&mut |r| 0.2 * r.normal())
        } else if name.ends_with(".running_var") {
            draw(&mut |r| r.range(0.5, 2.0))
        } else if shape.len() == 4 {
            // He-normal: std = sqrt(2 / fan_in) keeps the ReLU network's scale.
            let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
            let std = (2.0 / fan_in).sqrt();
            draw(&mut |r| std * r.normal())
        } else if name.starts_with("final") {
            draw(&mut |r| 0.1 * r.normal())
        } else if is_bn_weight(name) {
            draw(&mut |r| r.range(0.6, 1.4))
        } else {
            // conv biases and BN biases
            draw(&mut |r| 0.1 * r.normal())
        };
        tensors.insert(t.name, Tensor { shape, data });
    }
    let mut meta = CheckpointMeta::new("water-meters-unet", spec, PreprocessSpec::default());
    meta.source = format!("random:{seed}");
    Checkpoint { meta, tensors }
}

/// BatchNorm parameters are at sub-indices 1 and 4 of each block (`enc1.1.weight`).
fn is_bn_weight(name: &str) -> bool {
    name.ends_with(".1.weight") || name.ends_with(".4.weight")
}

/// A random input in [0, 1), like preprocessed photos: `[n, c, h, w]`.
pub fn random_input(shape: [usize; 4], seed: u64) -> Array4<f32> {
    let mut rng = SplitMix64::new(seed);
    Array4::from_shape_simple_fn(shape, || rng.uniform() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_checkpoint_matches_its_spec_and_is_reproducible() {
        let spec = ModelSpec {
            base_filters: 4,
            ..ModelSpec::default()
        };
        let a = random_checkpoint(spec, 1);
        a.validate(std::path::Path::new("mem")).unwrap();
        assert_eq!(a.tensors, random_checkpoint(spec, 1).tensors);
        assert_ne!(a.tensors, random_checkpoint(spec, 2).tensors);
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = SplitMix64::new(3);
        let xs: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
