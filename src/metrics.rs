//! Segmentation metrics on plain slices (no libtorch), shared by training, evaluation and serving:
//! IoU, Dice, pixel accuracy and the symmetric Hausdorff distance of binary masks.
//!
//! Conventions (upstream evaluation): a prediction is foreground where its logit is positive
//! (sigmoid above 0.5); IoU and Dice are computed per image and averaged over images, an image whose prediction
//! and target are both empty scoring 1; Hausdorff is 0 when both masks are empty and the image
//! diagonal when exactly one is.

/// Pixel counts of one binary prediction against its target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    pub true_pos: u64,
    pub false_pos: u64,
    pub false_neg: u64,
    pub true_neg: u64,
}

impl Confusion {
    /// Counts over two masks of equal length (non-zero = foreground).
    pub fn of(pred: &[u8], target: &[u8]) -> Self {
        debug_assert_eq!(pred.len(), target.len());
        let mut c = Confusion::default();
        for (&p, &t) in pred.iter().zip(target) {
            match (p != 0, t != 0) {
                (true, true) => c.true_pos += 1,
                (true, false) => c.false_pos += 1,
                (false, true) => c.false_neg += 1,
                (false, false) => c.true_neg += 1,
            }
        }
        c
    }

    /// Counts of logits (foreground where > 0) against a 0/1 float target.
    pub fn of_logits(logits: &[f32], target: &[f32]) -> Self {
        debug_assert_eq!(logits.len(), target.len());
        let mut c = Confusion::default();
        for (&l, &t) in logits.iter().zip(target) {
            match (l > 0.0, t > 0.5) {
                (true, true) => c.true_pos += 1,
                (true, false) => c.false_pos += 1,
                (false, true) => c.false_neg += 1,
                (false, false) => c.true_neg += 1,
            }
        }
        c
    }

    pub fn iou(&self) -> f64 {
        let union = self.true_pos + self.false_pos + self.false_neg;
        if union == 0 {
            1.0
        } else {
            self.true_pos as f64 / union as f64
        }
    }

    pub fn dice(&self) -> f64 {
        let denom = 2 * self.true_pos + self.false_pos + self.false_neg;
        if denom == 0 {
            1.0
        } else {
            2.0 * self.true_pos as f64 / denom as f64
        }
    }

    pub fn accuracy(&self) -> f64 {
        let total = self.true_pos + self.false_pos + self.false_neg + self.true_neg;
        if total == 0 {
            1.0
        } else {
            (self.true_pos + self.true_neg) as f64 / total as f64
        }
    }
}

/// Foreground mask of logits: 1 where logit > 0.
pub fn mask_from_logits(logits: &[f32]) -> Vec<u8> {
    logits.iter().map(|&l| u8::from(l > 0.0)).collect()
}

/// Foreground mask of a 0/1 float target.
pub fn mask_from_target(target: &[f32]) -> Vec<u8> {
    target.iter().map(|&t| u8::from(t > 0.5)).collect()
}

/// Symmetric Hausdorff distance in pixels between the foreground sets of two `width × height`
/// masks: max over each set of the distance to the nearest pixel of the other. Exact Euclidean,
/// via distance transforms (O(pixels)), so it is cheap at 512×512.
pub fn hausdorff(pred: &[u8], target: &[u8], width: usize, height: usize) -> f64 {
    assert_eq!(pred.len(), width * height, "pred is not width × height");
    assert_eq!(target.len(), width * height, "target is not width × height");
    let any_pred = pred.iter().any(|&p| p != 0);
    let any_target = target.iter().any(|&t| t != 0);
    match (any_pred, any_target) {
        (false, false) => 0.0,
        (true, false) | (false, true) => ((width * width + height * height) as f64).sqrt(),
        (true, true) => {
            let to_target = squared_distance_transform(target, width, height);
            let to_pred = squared_distance_transform(pred, width, height);
            let directed = |from: &[u8], dist: &[f64]| {
                from.iter()
                    .zip(dist)
                    .filter(|(f, _)| **f != 0)
                    .map(|(_, d)| *d)
                    .fold(0.0f64, f64::max)
            };
            directed(pred, &to_target)
                .max(directed(target, &to_pred))
                .sqrt()
        }
    }
}

/// Squared Euclidean distance from every pixel to the nearest foreground pixel of `mask`
/// (Felzenszwalb & Huttenlocher, "Distance Transforms of Sampled Functions", 2012): the 1-D lower
/// envelope of parabolas, run over columns and then rows.
fn squared_distance_transform(mask: &[u8], width: usize, height: usize) -> Vec<f64> {
    const FAR: f64 = 1e20;
    let mut grid: Vec<f64> = mask
        .iter()
        .map(|&m| if m != 0 { 0.0 } else { FAR })
        .collect();
    let mut line = vec![0.0; width.max(height)];
    let mut out = vec![0.0; width.max(height)];
    for x in 0..width {
        for y in 0..height {
            line[y] = grid[y * width + x];
        }
        envelope_1d(&line[..height], &mut out[..height]);
        for y in 0..height {
            grid[y * width + x] = out[y];
        }
    }
    for y in 0..height {
        let row = &mut grid[y * width..(y + 1) * width];
        line[..width].copy_from_slice(row);
        envelope_1d(&line[..width], &mut out[..width]);
        row.copy_from_slice(&out[..width]);
    }
    grid
}

fn envelope_1d(f: &[f64], d: &mut [f64]) {
    let n = f.len();
    if n == 0 {
        return;
    }
    let mut v = vec![0usize; n];
    let mut z = vec![0f64; n + 1];
    let mut k = 0usize;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    for q in 1..n {
        // z[0] = -inf and every s is finite, so k never drops below 0.
        let mut s;
        loop {
            let p = v[k];
            s = ((f[q] + (q * q) as f64) - (f[p] + (p * p) as f64)) / (2.0 * (q - p) as f64);
            if s <= z[k] {
                k -= 1;
            } else {
                break;
            }
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for (q, out) in d.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let diff = q as f64 - p as f64;
        *out = diff * diff + f[p];
    }
}

/// Running means of per-image metrics and the per-pixel loss over an epoch or an evaluation.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    loss_sum: f64,
    loss_batches: u64,
    iou_sum: f64,
    dice_sum: f64,
    accuracy_sum: f64,
    hausdorff_sum: f64,
    images: u64,
    hausdorff_images: u64,
}

/// Means reported by a [`Meter`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub loss: f64,
    pub iou: f64,
    pub dice: f64,
    pub accuracy: f64,
    /// `None` when Hausdorff was not computed.
    pub hausdorff: Option<f64>,
    pub images: u64,
}

impl Meter {
    /// Adds the mean loss of one batch (weighted by its image count, like an epoch mean).
    pub fn add_loss(&mut self, batch_mean_loss: f64, images: usize) {
        self.loss_sum += batch_mean_loss * images as f64;
        self.loss_batches += images as u64;
    }

    /// Adds one image's logits and 0/1 target (both `height × width`); Hausdorff on request.
    pub fn add_image(
        &mut self,
        logits: &[f32],
        target: &[f32],
        width: usize,
        height: usize,
        with_hausdorff: bool,
    ) {
        let c = Confusion::of_logits(logits, target);
        self.iou_sum += c.iou();
        self.dice_sum += c.dice();
        self.accuracy_sum += c.accuracy();
        self.images += 1;
        if with_hausdorff {
            let hd = hausdorff(
                &mask_from_logits(logits),
                &mask_from_target(target),
                width,
                height,
            );
            self.hausdorff_sum += hd;
            self.hausdorff_images += 1;
        }
    }

    pub fn summary(&self) -> Summary {
        let mean = |s: f64, n: u64| if n == 0 { 0.0 } else { s / n as f64 };
        Summary {
            loss: mean(self.loss_sum, self.loss_batches),
            iou: mean(self.iou_sum, self.images),
            dice: mean(self.dice_sum, self.images),
            accuracy: mean(self.accuracy_sum, self.images),
            hausdorff: (self.hausdorff_images > 0)
                .then(|| mean(self.hausdorff_sum, self.hausdorff_images)),
            images: self.images,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_scores() {
        let pred = [1, 1, 0, 0];
        let target = [1, 0, 1, 0];
        let c = Confusion::of(&pred, &target);
        assert_eq!(c.iou(), 1.0 / 3.0);
        assert_eq!(c.dice(), 0.5);
        assert_eq!(c.accuracy(), 0.5);
        let empty = Confusion::of(&[0, 0], &[0, 0]);
        assert_eq!((empty.iou(), empty.dice()), (1.0, 1.0));
    }

    /// Brute force over all pairs, the definition.
    fn hausdorff_brute(a: &[u8], b: &[u8], w: usize) -> f64 {
        let pts = |m: &[u8]| -> Vec<(f64, f64)> {
            m.iter()
                .enumerate()
                .filter(|(_, v)| **v != 0)
                .map(|(i, _)| ((i % w) as f64, (i / w) as f64))
                .collect()
        };
        let (pa, pb) = (pts(a), pts(b));
        let directed = |x: &[(f64, f64)], y: &[(f64, f64)]| {
            x.iter()
                .map(|p| {
                    y.iter()
                        .map(|q| ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt())
                        .fold(f64::INFINITY, f64::min)
                })
                .fold(0.0, f64::max)
        };
        directed(&pa, &pb).max(directed(&pb, &pa))
    }

    #[test]
    fn hausdorff_matches_brute_force() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let (w, h) = (rng.random_range(1..20), rng.random_range(1..20));
            let mut a = vec![0u8; w * h];
            let mut b = vec![0u8; w * h];
            for v in a.iter_mut().chain(b.iter_mut()) {
                *v = u8::from(rng.random_bool(0.1));
            }
            a[rng.random_range(0..w * h)] = 1;
            b[rng.random_range(0..w * h)] = 1;
            let fast = hausdorff(&a, &b, w, h);
            let slow = hausdorff_brute(&a, &b, w);
            assert!((fast - slow).abs() < 1e-9, "{w}x{h}: {fast} vs {slow}");
        }
    }

    #[test]
    fn hausdorff_empty_conventions() {
        assert_eq!(hausdorff(&[0; 12], &[0; 12], 4, 3), 0.0);
        let mut one = [0u8; 12];
        one[5] = 1;
        assert_eq!(hausdorff(&one, &[0; 12], 4, 3), 5.0);
        assert_eq!(hausdorff(&[0; 12], &one, 4, 3), 5.0);
    }

    #[test]
    fn meter_means_per_image() {
        let mut m = Meter::default();
        m.add_image(&[1.0, -1.0], &[1.0, 0.0], 2, 1, true);
        m.add_image(&[1.0, 1.0], &[1.0, 0.0], 2, 1, false);
        m.add_loss(0.5, 1);
        m.add_loss(1.0, 3);
        let s = m.summary();
        assert_eq!(s.iou, 0.75);
        assert_eq!(s.accuracy, 0.75);
        assert_eq!(s.hausdorff, Some(0.0));
        assert_eq!(s.loss, 0.875);
    }
}
