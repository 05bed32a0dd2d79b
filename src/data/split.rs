//! The train/val/test split by a stable hash of the file stem (DESIGN §4). A sample's split
//! depends on its stem and the ratios only, so adding photos never moves existing ones between
//! splits and baselines stay comparable (upstream reshuffles on every data change).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DataError;
use super::dataset::Sample;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// Fractions of the data set per split; they need not sum to exactly 1 (they are normalized).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitRatios {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

impl Default for SplitRatios {
    /// Upstream `configs/train.yaml`: 0.8 / 0.1 / 0.1.
    fn default() -> Self {
        SplitRatios {
            train: 0.8,
            val: 0.1,
            test: 0.1,
        }
    }
}

impl SplitRatios {
    /// All finite and non-negative with a positive sum.
    pub fn validate(&self) -> Result<(), DataError> {
        let all = [self.train, self.val, self.test];
        if all.iter().any(|r| !r.is_finite() || *r < 0.0) || all.iter().sum::<f64>() <= 0.0 {
            return Err(DataError::Invalid {
                what: "split ratios",
                message: format!(
                    "{}/{}/{} must be non-negative with a positive sum; hint: e.g. 0.8/0.1/0.1",
                    self.train, self.val, self.test
                ),
            });
        }
        Ok(())
    }
}

/// Position of a stem in [0, 1): the first 8 bytes of SHA-256(stem) as a big-endian u64, top 53
/// bits as a fraction (exact in f64).
pub fn stem_fraction(stem: &str) -> f64 {
    let d = Sha256::digest(stem.as_bytes());
    let u = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (u >> 11) as f64 / (1u64 << 53) as f64
}

/// The split a stem belongs to. Invalid ratios (see [`SplitRatios::validate`]) put everything
/// in train.
pub fn split_of(stem: &str, ratios: &SplitRatios) -> Split {
    let total = ratios.train + ratios.val + ratios.test;
    if total.is_nan() || total <= 0.0 || !total.is_finite() {
        return Split::Train;
    }
    let f = stem_fraction(stem) * total;
    if f < ratios.train {
        Split::Train
    } else if f < ratios.train + ratios.val {
        Split::Val
    } else {
        Split::Test
    }
}

/// Samples partitioned into (train, val, test), each keeping the input order.
pub fn split_samples(
    samples: &[Sample],
    ratios: &SplitRatios,
) -> (Vec<Sample>, Vec<Sample>, Vec<Sample>) {
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for s in samples {
        match split_of(&s.stem, ratios) {
            Split::Train => train.push(s.clone()),
            Split::Val => val.push(s.clone()),
            Split::Test => test.push(s.clone()),
        }
    }
    (train, val, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stable_and_close_to_the_ratios() {
        let r = SplitRatios::default();
        let stems: Vec<String> = (0..5000).map(|i| format!("{i:04}")).collect();
        let splits: Vec<Split> = stems.iter().map(|s| split_of(s, &r)).collect();
        // Same answer every time, independent of other stems.
        assert_eq!(split_of("0042", &r), splits[42]);
        let n = |want| splits.iter().filter(|&&s| s == want).count() as f64 / 5000.0;
        assert!((n(Split::Train) - 0.8).abs() < 0.03, "{}", n(Split::Train));
        assert!((n(Split::Val) - 0.1).abs() < 0.02);
        assert!((n(Split::Test) - 0.1).abs() < 0.02);
    }

    #[test]
    fn ratios_are_validated() {
        let bad = SplitRatios {
            train: -1.0,
            val: 0.5,
            test: 0.5,
        };
        assert!(bad.validate().unwrap_err().to_string().contains("hint:"));
        assert!(SplitRatios::default().validate().is_ok());
        let all_train = SplitRatios {
            train: 1.0,
            val: 0.0,
            test: 0.0,
        };
        assert_eq!(split_of("x", &all_train), Split::Train);
    }
}
