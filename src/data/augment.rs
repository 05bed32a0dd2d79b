//! Training augmentation as upstream `TrainTransforms` (DESIGN §5): horizontal flip, vertical
//! flip, rotation by a random angle, brightness scaling; image and mask are transformed together
//! (the mask with nearest neighbour so it stays binary).
//!
//! Order: the loader applies these to the image already resized to the network size (uint8) and
//! its 0/1 mask, BEFORE the contrast stretch and median blur of [`super::preprocess`]. Resizing
//! first keeps the per-epoch cost independent of the photo size; the stretch after augmentation
//! means brightness changes are largely normalized away, as upstream where the stretch also runs
//! last.
//!
//! Determinism: every random draw for a sample comes from its own RNG derived from (seed, epoch,
//! sample index), so results do not depend on thread scheduling.

use image::{GrayImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Probabilities and ranges of the augmentations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    pub hflip_p: f64,
    pub vflip_p: f64,
    /// Maximum absolute rotation in degrees; the angle is uniform in ±this.
    pub rotation_degrees: f64,
    pub rotation_p: f64,
    pub brightness_low: f64,
    pub brightness_high: f64,
    pub brightness_p: f64,
}

impl Default for AugmentConfig {
    /// Upstream `configs/train.yaml` / `TrainTransforms` (DESIGN §5): hflip 0.5, vflip 0.3,
    /// rotation ±10° with probability 0.5, brightness × U(0.8, 1.2) with probability 0.3.
    fn default() -> Self {
        AugmentConfig {
            hflip_p: 0.5,
            vflip_p: 0.3,
            rotation_degrees: 10.0,
            rotation_p: 0.5,
            brightness_low: 0.8,
            brightness_high: 1.2,
            brightness_p: 0.3,
        }
    }
}

/// The RNG for one sample in one epoch: ChaCha8 keyed by SHA-256 of (tag, seed, epoch, index).
pub fn sample_rng(tag: &str, seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update(seed.to_le_bytes());
    h.update(epoch.to_le_bytes());
    h.update(index.to_le_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

/// Applies the augmentations in upstream order (hflip, vflip, rotation, brightness), image and
/// mask together. The mask must be at the image's size.
pub fn augment_pair(
    img: &mut RgbImage,
    mask: &mut GrayImage,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) {
    debug_assert_eq!(img.dimensions(), mask.dimensions());
    if rng.random_bool(cfg.hflip_p.clamp(0.0, 1.0)) {
        image::imageops::flip_horizontal_in_place(img);
        image::imageops::flip_horizontal_in_place(mask);
    }
    if rng.random_bool(cfg.vflip_p.clamp(0.0, 1.0)) {
        image::imageops::flip_vertical_in_place(img);
        image::imageops::flip_vertical_in_place(mask);
    }
    if rng.random_bool(cfg.rotation_p.clamp(0.0, 1.0)) && cfg.rotation_degrees > 0.0 {
        let angle = rng.random_range(-cfg.rotation_degrees..=cfg.rotation_degrees);
        rotate_pair(img, mask, angle);
    }
    if rng.random_bool(cfg.brightness_p.clamp(0.0, 1.0))
        && cfg.brightness_high >= cfg.brightness_low
    {
        let factor = rng.random_range(cfg.brightness_low..=cfg.brightness_high);
        brightness(img, factor);
    }
}

/// Pillow `ImageEnhance.Brightness(img).enhance(f)`: a blend with black, `(float)v * f`
/// truncated and clipped to [0, 255] (`ImagingBlend` in `src/libImaging/Blend.c`).
pub fn brightness(img: &mut RgbImage, factor: f64) {
    let f = factor as f32;
    for v in img.iter_mut() {
        let t = *v as f32 * f;
        *v = if t <= 0.0 {
            0
        } else if t >= 255.0 {
            255
        } else {
            t as u8
        };
    }
}

/// Rotates counter-clockwise by `degrees` about the image centre, same size, fill 0: bilinear for
/// the image, nearest for the mask, both from the same inverse mapping.
pub fn rotate_pair(img: &mut RgbImage, mask: &mut GrayImage, degrees: f64) {
    let (w, h) = img.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    if wu == 0 || hu == 0 {
        return;
    }
    let (wf, hf) = (w as f32, h as f32);
    let (cx, cy) = ((wf - 1.0) / 2.0, (hf - 1.0) / 2.0);
    let (s, c) = degrees.to_radians().sin_cos();
    let (s, c) = (s as f32, c as f32);
    let src = img.clone();
    let src_mask = mask.clone();
    let (src_raw, mask_raw) = (src.as_raw(), src_mask.as_raw());
    let (out, out_mask) = (img.as_mut(), mask.as_mut());
    const EDGE: f32 = 1e-4;
    let (max_x, max_y) = (wf - 1.0, hf - 1.0);
    for y in 0..hu {
        let dy = y as f32 - cy;
        // Inverse of the counter-clockwise rotation (image y axis points down); affine in x.
        let mut sx = -c * cx - s * dy + cx;
        let mut sy = -s * cx + c * dy + cy;
        for x in 0..wu {
            let o = y * wu + x;
            let (px, py) = (sx, sy);
            sx += c;
            sy += s;
            if px < -EDGE || py < -EDGE || px > max_x + EDGE || py > max_y + EDGE {
                out[o * 3..o * 3 + 3].fill(0);
                out_mask[o] = 0;
                continue;
            }
            let (px, py) = (px.clamp(0.0, max_x), py.clamp(0.0, max_y));
            let (x0, y0) = (px as usize, py as usize);
            let (x1, y1) = ((x0 + 1).min(wu - 1), (y0 + 1).min(hu - 1));
            let (fx, fy) = (px - x0 as f32, py - y0 as f32);
            let (i00, i01) = ((y0 * wu + x0) * 3, (y0 * wu + x1) * 3);
            let (i10, i11) = ((y1 * wu + x0) * 3, (y1 * wu + x1) * 3);
            for ch in 0..3 {
                let top = src_raw[i00 + ch] as f32 * (1.0 - fx) + src_raw[i01 + ch] as f32 * fx;
                let bottom = src_raw[i10 + ch] as f32 * (1.0 - fx) + src_raw[i11 + ch] as f32 * fx;
                out[o * 3 + ch] = (top * (1.0 - fy) + bottom * fy + 0.5) as u8;
            }
            let (nx, ny) = ((px + 0.5) as usize, (py + 0.5) as usize);
            out_mask[o] = mask_raw[ny.min(hu - 1) * wu + nx.min(wu - 1)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_epoch_index_gives_same_result() {
        let img = RgbImage::from_fn(24, 16, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 15) as u8, 7])
        });
        let mask = GrayImage::from_fn(24, 16, |x, _| image::Luma([u8::from(x > 12)]));
        let run = |index| {
            let (mut i, mut m) = (img.clone(), mask.clone());
            let cfg = AugmentConfig {
                rotation_p: 1.0,
                brightness_p: 1.0,
                ..AugmentConfig::default()
            };
            augment_pair(&mut i, &mut m, &cfg, &mut sample_rng("t", 1, 2, index));
            (i, m)
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3).0, run(4).0);
        let (_, m) = run(3);
        assert!(m.iter().all(|&v| v <= 1), "mask stays binary");
    }

    #[test]
    fn rotation_by_zero_is_identity_and_brightness_clips() {
        let mut img = RgbImage::from_fn(9, 5, |x, y| {
            image::Rgb([(x * 20) as u8, (y * 40) as u8, 250])
        });
        let orig = img.clone();
        let mut mask = GrayImage::from_pixel(9, 5, image::Luma([1]));
        rotate_pair(&mut img, &mut mask, 0.0);
        assert_eq!(img, orig);
        assert!(mask.iter().all(|&v| v == 1));
        brightness(&mut img, 1.2);
        assert_eq!(img.get_pixel(0, 0).0[2], 255);
        assert_eq!(img.get_pixel(1, 1).0[0], 24);
    }

    #[test]
    fn rotation_by_ninety_moves_corners() {
        let mut img = RgbImage::new(5, 5);
        img.put_pixel(4, 0, image::Rgb([200, 0, 0]));
        let mut mask = GrayImage::new(5, 5);
        mask.put_pixel(4, 0, image::Luma([1]));
        rotate_pair(&mut img, &mut mask, 90.0);
        // Counter-clockwise: top-right goes to top-left.
        assert_eq!(img.get_pixel(0, 0).0[0], 200);
        assert_eq!(mask.get_pixel(0, 0).0[0], 1);
    }
}
