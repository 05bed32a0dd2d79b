//! The U-Net model spec: the single description of the architecture from which the tch module
//! (`train::unet`), the ONNX graph (`onnx`) and checkpoint validation are all built. It is saved
//! in every checkpoint sidecar and reloaded by every consumer; nobody assumes the defaults.
//!
//! Facts (DESIGN §5, upstream `WaterMetersUNet(inChannels=3, baseFilters=16, outChannels=1)`):
//! blocks `enc1..enc{depth}`, `bottleneck`, `dec{depth}..dec1`, each
//! `Sequential[Conv3×3 pad 1 (bias), BatchNorm2d, ReLU, Conv3×3 pad 1, BatchNorm2d, ReLU]`;
//! channels double per level; decoder input = concat(upsampled deeper features, skip); final
//! `Conv1×1` base→out named `final`. BatchNorm eps 1e-5, momentum 0.1. Output = logits.

use serde::{Deserialize, Serialize};

/// BatchNorm epsilon used upstream (PyTorch default).
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm momentum used upstream (PyTorch default).
pub const BN_MOMENTUM: f64 = 0.1;

/// Architecture hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub in_channels: i64,
    pub out_channels: i64,
    pub base_filters: i64,
    /// Number of encoder levels (upstream: 4). Input H and W must be multiples of 2^depth.
    pub depth: usize,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            in_channels: 3,
            out_channels: 1,
            base_filters: 16,
            depth: 4,
        }
    }
}

/// One double-conv block: `name.{0,1,3,4}.*` in the state dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    pub name: String,
    pub in_channels: i64,
    pub out_channels: i64,
}

/// One state-dict entry: name and shape, in upstream `state_dict()` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
}

impl ModelSpec {
    /// Channels of encoder level `i` (1-based): base · 2^(i-1).
    pub fn level_channels(&self, level: usize) -> i64 {
        self.base_filters << (level - 1)
    }

    /// Encoder blocks `enc1..encD`, in forward order.
    pub fn encoders(&self) -> Vec<BlockSpec> {
        (1..=self.depth)
            .map(|i| BlockSpec {
                name: format!("enc{i}"),
                in_channels: if i == 1 {
                    self.in_channels
                } else {
                    self.level_channels(i - 1)
                },
                out_channels: self.level_channels(i),
            })
            .collect()
    }

    /// The bottleneck block: 2^(D-1)·b → 2^D·b.
    pub fn bottleneck(&self) -> BlockSpec {
        BlockSpec {
            name: "bottleneck".into(),
            in_channels: self.level_channels(self.depth),
            out_channels: self.level_channels(self.depth + 1),
        }
    }

    /// Decoder blocks `decD..dec1`, in forward order. `dec i` takes concat(up(deeper), skip i).
    pub fn decoders(&self) -> Vec<BlockSpec> {
        (1..=self.depth)
            .rev()
            .map(|i| BlockSpec {
                name: format!("dec{i}"),
                in_channels: self.level_channels(i + 1) + self.level_channels(i),
                out_channels: self.level_channels(i),
            })
            .collect()
    }

    /// Every block in state-dict order (upstream registers enc1..4, bottleneck, dec4..1).
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let mut v = self.encoders();
        v.push(self.bottleneck());
        v.extend(self.decoders());
        v
    }

    /// The full state dict layout (names and shapes) in upstream order, `final.*` last.
    pub fn state_dict(&self) -> Vec<TensorSpec> {
        let t = |name: String, shape: Vec<i64>| TensorSpec { name, shape };
        let mut v = Vec::new();
        for b in self.blocks() {
            for (conv, bn, cin) in [(0, 1, b.in_channels), (3, 4, b.out_channels)] {
                let n = &b.name;
                v.push(t(
                    format!("{n}.{conv}.weight"),
                    vec![b.out_channels, cin, 3, 3],
                ));
                v.push(t(format!("{n}.{conv}.bias"), vec![b.out_channels]));
                for p in ["weight", "bias", "running_mean", "running_var"] {
                    v.push(t(format!("{n}.{bn}.{p}"), vec![b.out_channels]));
                }
                v.push(t(format!("{n}.{bn}.num_batches_tracked"), vec![]));
            }
        }
        v.push(t(
            "final.weight".into(),
            vec![self.out_channels, self.base_filters, 1, 1],
        ));
        v.push(t("final.bias".into(), vec![self.out_channels]));
        v
    }

    /// Trainable parameter count (excludes BatchNorm running stats and counters).
    pub fn parameter_count(&self) -> i64 {
        self.state_dict()
            .iter()
            .filter(|t| !t.name.contains("running_") && !t.name.ends_with("num_batches_tracked"))
            .map(|t| t.shape.iter().product::<i64>())
            .sum()
    }

    /// Input sides must be multiples of this (one halving per encoder level).
    pub fn size_multiple(&self) -> u32 {
        1 << self.depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_parameter_count() {
        // DESIGN §5: 1,965,569 parameters at b=16.
        assert_eq!(ModelSpec::default().parameter_count(), 1_965_569);
    }

    #[test]
    fn upstream_channels_and_names() {
        let s = ModelSpec::default();
        let dec4 = &s.decoders()[0];
        assert_eq!(
            (dec4.name.as_str(), dec4.in_channels, dec4.out_channels),
            ("dec4", 256 + 128, 128)
        );
        let sd = s.state_dict();
        assert_eq!(sd[0].name, "enc1.0.weight");
        assert_eq!(sd[0].shape, vec![16, 3, 3, 3]);
        assert_eq!(sd.last().unwrap().name, "final.bias");
    }
}
