//! Synthetic water-meter photos and masks shaped like the real data set (issue 3 item 7): a
//! cluttered background, a meter (body, bezel, dial face, pipe stubs, small pointer dials, printed
//! marks) seen through a random rotation (portrait included), scale and mild perspective, whose
//! counter window — a dark or white strip of seven-segment digits, some red, the last one rolling
//! — is the mask and covers roughly 1–9 % of the image. Then lighting gradients, a cast shadow,
//! a soft shadow band, blur, noise and JPEG artefacts.
//!
//! Everything is drawn analytically per pixel (inverse-mapping each pixel into the meter's own
//! coordinates), so image and mask agree exactly and no font or asset files are needed. Each image
//! has its own RNG derived from (seed, index): the same seed gives identical bytes whatever the
//! thread count.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{GrayImage, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::DataError;
use super::augment::sample_rng;
use super::dataset::{IMAGES_DIR, MASKS_DIR};

/// Window coverage (fraction of the image) the renderer aims for; the real data set's counter
/// windows cover roughly 1–9 % of the photo (issue 3 item 7).
pub const COVERAGE_MIN: f64 = 0.01;
pub const COVERAGE_MAX: f64 = 0.09;

/// What to synthesize.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub out: PathBuf,
    pub count: usize,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
}

/// What was written, for the command's output and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthSummary {
    pub count: usize,
    pub width: u32,
    pub height: u32,
    pub seconds: f64,
    pub images_per_second: f64,
    pub coverage_min: f64,
    pub coverage_mean: f64,
    pub coverage_max: f64,
}

/// One rendered sample.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub image: RgbImage,
    /// 255 inside the counter window, 0 elsewhere.
    pub mask: GrayImage,
    pub jpeg_quality: u8,
    /// Fraction of mask pixels that are 255.
    pub coverage: f64,
}

/// File stem of sample `index` out of `count`: zero-padded to at least 4 digits.
pub fn stem(index: usize, count: usize) -> String {
    let width = count.saturating_sub(1).to_string().len().max(4);
    format!("{index:0width$}")
}

/// Renders and writes `count` samples to `out/images/NNNN.jpg` and `out/masks/NNNN.png`, in
/// parallel, each file written atomically.
pub fn synthesize(cfg: &SynthConfig) -> Result<SynthSummary, DataError> {
    if cfg.width < 32 || cfg.height < 32 {
        return Err(DataError::Invalid {
            what: "size",
            message: format!(
                "{}x{}; hint: synthesize at least 32x32 (the real photos are ~1333x1000, training uses 512x512)",
                cfg.width, cfg.height
            ),
        });
    }
    let images = cfg.out.join(IMAGES_DIR);
    let masks = cfg.out.join(MASKS_DIR);
    for d in [&images, &masks] {
        fs_err::create_dir_all(d).map_err(|e| DataError::io(d, e))?;
    }
    let started = Instant::now();
    let bar = crate::github::actions::Actions::from_env()
        .progress(cfg.count as u64, "synthesizing water meters");
    let coverages: Vec<f64> = (0..cfg.count)
        .into_par_iter()
        .map(|i| {
            let r = render(cfg.width, cfg.height, cfg.seed, i as u64);
            let name = stem(i, cfg.count);
            write_sample(
                &r,
                &images.join(format!("{name}.jpg")),
                &masks.join(format!("{name}.png")),
            )?;
            bar.inc(1);
            Ok(r.coverage)
        })
        .collect::<Result<_, DataError>>()?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let summary = SynthSummary {
        count: cfg.count,
        width: cfg.width,
        height: cfg.height,
        seconds,
        images_per_second: if seconds > 0.0 {
            cfg.count as f64 / seconds
        } else {
            0.0
        },
        coverage_min: coverages
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .min(1.0),
        coverage_mean: coverages.iter().sum::<f64>() / coverages.len().max(1) as f64,
        coverage_max: coverages.iter().copied().fold(0.0, f64::max),
    };
    tracing::info!(
        count = summary.count,
        seconds = summary.seconds,
        images_per_second = summary.images_per_second,
        "synthetic data set written to {}",
        cfg.out.display()
    );
    Ok(summary)
}

fn write_sample(r: &Rendered, image_path: &Path, mask_path: &Path) -> Result<(), DataError> {
    let mut jpeg = Vec::with_capacity(64 * 1024);
    let encode_err = |message: String| DataError::Encode {
        path: image_path.to_path_buf(),
        message,
    };
    let (w, h) = (
        u16::try_from(r.image.width()).map_err(|e| encode_err(e.to_string()))?,
        u16::try_from(r.image.height()).map_err(|e| encode_err(e.to_string()))?,
    );
    jpeg_encoder::Encoder::new(&mut jpeg, r.jpeg_quality)
        .encode(r.image.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| encode_err(e.to_string()))?;
    let mut png = Vec::with_capacity(8 * 1024);
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        &mut png,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Sub,
    );
    r.mask
        .write_with_encoder(encoder)
        .map_err(|e| DataError::Encode {
            path: mask_path.to_path_buf(),
            message: e.to_string(),
        })?;
    crate::fsutil::write_atomic(image_path, &jpeg)?;
    crate::fsutil::write_atomic(mask_path, &png)?;
    Ok(())
}

type Rgb = [f32; 3];

/// A fast per-pixel noise source (xorshift64*), seeded from the sample's ChaCha RNG.
struct FastRng(u64);

impl FastRng {
    /// Four uniforms in [0, 1) from one step (16 bits each is plenty for pixel noise).
    #[inline(always)]
    fn four_uniforms(&mut self) -> [f32; 4] {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let k = 1.0 / 65536.0;
        [
            (r & 0xFFFF) as f32 * k,
            ((r >> 16) & 0xFFFF) as f32 * k,
            ((r >> 32) & 0xFFFF) as f32 * k,
            (r >> 48) as f32 * k,
        ]
    }
}

/// A 3×3 projective map (row-major).
#[derive(Debug, Clone, Copy)]
struct Homography([f64; 9]);

impl Homography {
    fn mul(&self, o: &Homography) -> Homography {
        let (a, b) = (&self.0, &o.0);
        let mut m = [0.0; 9];
        for r in 0..3 {
            for c in 0..3 {
                m[r * 3 + c] = (0..3).map(|k| a[r * 3 + k] * b[k * 3 + c]).sum();
            }
        }
        Homography(m)
    }

    fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.0;
        let w = m[6] * x + m[7] * y + m[8];
        (
            (m[0] * x + m[1] * y + m[2]) / w,
            (m[3] * x + m[4] * y + m[5]) / w,
        )
    }

    fn inverse(&self) -> Homography {
        let m = &self.0;
        let det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
            + m[2] * (m[3] * m[7] - m[4] * m[6]);
        let inv = [
            (m[4] * m[8] - m[5] * m[7]) / det,
            (m[2] * m[7] - m[1] * m[8]) / det,
            (m[1] * m[5] - m[2] * m[4]) / det,
            (m[5] * m[6] - m[3] * m[8]) / det,
            (m[0] * m[8] - m[2] * m[6]) / det,
            (m[2] * m[3] - m[0] * m[5]) / det,
            (m[3] * m[7] - m[4] * m[6]) / det,
            (m[1] * m[6] - m[0] * m[7]) / det,
            (m[0] * m[4] - m[1] * m[3]) / det,
        ];
        Homography(inv)
    }
}

/// Segments a–g of a seven-segment digit (bit 0 = a … bit 6 = g).
const SEVEN_SEGMENT: [u8; 10] = [
    0b011_1111, 0b000_0110, 0b101_1011, 0b100_1111, 0b110_0110, 0b110_1101, 0b111_1101, 0b000_0111,
    0b111_1111, 0b110_1111,
];

/// Whether (x, y) in the unit digit box lies on a stroke of `digit`; `t` is the stroke
/// thickness relative to the height, `tx` relative to the width.
#[inline]
fn seven_segment(digit: u8, x: f32, y: f32, t: f32, tx: f32) -> bool {
    if !(0.0..=1.0).contains(&x) || !(0.0..=1.0).contains(&y) {
        return false;
    }
    let seg = SEVEN_SEGMENT[(digit % 10) as usize];
    let on = |i: u8| seg & (1 << i) != 0;
    let top = y < t;
    let mid = (y - 0.5).abs() < t / 2.0;
    let bottom = y > 1.0 - t;
    let left = x < tx;
    let right = x > 1.0 - tx;
    let upper = y < 0.5;
    (on(0) && top)
        || (on(6) && mid)
        || (on(3) && bottom)
        || (on(5) && left && upper)
        || (on(1) && right && upper)
        || (on(4) && left && !upper)
        || (on(2) && right && !upper)
}

/// The meter in its own coordinates: body radius 1, x right, y down.
#[derive(Debug, Clone)]
struct Meter {
    body: Rgb,
    bezel: Rgb,
    face: Rgb,
    face_r: f64,
    bezel_r: f64,
    pipe: Option<(Rgb, f64, f64)>, // colour, half height, half length
    // Counter window: centre, half sizes, frame width.
    wx: f64,
    wy: f64,
    ww: f64,
    wh: f64,
    frame: f64,
    frame_color: Rgb,
    window_bg: Rgb,
    digit_color: Rgb,
    red_from: usize,
    red: Rgb,
    digits: Vec<u8>,
    roll: f64,
    // Small pointer dials: centre, radius, pointer direction.
    dials: Vec<(f64, f64, f64, (f64, f64))>,
    // Printed marks on the face (rectangles): x0, y0, x1, y1.
    marks: Vec<(f64, f64, f64, f64)>,
    mark_color: Rgb,
    glare: (f64, f64, f64, f64, f32), // centre, radii, strength
    light: (f64, f64),                // direction of the bezel highlight
}

enum Hit {
    Window(Rgb),
    Solid(Rgb),
}

fn lerp3(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale3(a: Rgb, s: f32) -> Rgb {
    [a[0] * s, a[1] * s, a[2] * s]
}

impl Meter {
    /// Whether (u, v) lies on the meter's silhouette (for the cast shadow).
    #[inline]
    fn covers(&self, u: f64, v: f64) -> bool {
        u * u + v * v < 1.0
            || self
                .pipe
                .is_some_and(|(_, ph, pl)| v.abs() < ph && u.abs() < pl)
    }

    #[inline]
    fn shade(&self, u: f64, v: f64) -> Option<Hit> {
        let (du, dv) = ((u - self.wx).abs(), (v - self.wy).abs());
        if du < self.ww && dv < self.wh {
            return Some(Hit::Window(self.glare(u, v, self.window(u, v))));
        }
        if du < self.ww + self.frame && dv < self.wh + self.frame {
            return Some(Hit::Solid(self.frame_color));
        }
        let r2 = u * u + v * v;
        if r2 < self.face_r * self.face_r {
            return Some(Hit::Solid(self.glare(u, v, self.face(u, v, r2))));
        }
        if r2 < self.bezel_r * self.bezel_r {
            let r = r2.sqrt().max(1e-9);
            let lit = ((u * self.light.0 + v * self.light.1) / r) as f32;
            return Some(Hit::Solid(scale3(self.bezel, 1.0 + 0.35 * lit)));
        }
        if r2 < 1.0 {
            let edge = ((1.0 - r2.sqrt()) / (1.0 - self.bezel_r)).min(1.0) as f32;
            return Some(Hit::Solid(scale3(self.body, 0.75 + 0.25 * edge)));
        }
        if let Some((color, ph, pl)) = self.pipe
            && v.abs() < ph
            && u.abs() < pl
        {
            let t = (v / ph) as f32;
            let ring = if (u.abs() - 1.35).abs() < 0.08 {
                0.8
            } else {
                1.0
            };
            return Some(Hit::Solid(scale3(color, (1.05 - 0.6 * t * t) * ring)));
        }
        None
    }

    fn glare(&self, u: f64, v: f64, c: Rgb) -> Rgb {
        let (gx, gy, rx, ry, s) = self.glare;
        let d = ((u - gx) / rx).powi(2) + ((v - gy) / ry).powi(2);
        if d < 1.0 {
            lerp3(c, [255.0; 3], s * (1.0 - d as f32))
        } else {
            c
        }
    }

    fn face(&self, u: f64, v: f64, r2: f64) -> Rgb {
        for &(cx, cy, r, (px, py)) in &self.dials {
            let (dx, dy) = (u - cx, v - cy);
            let d2 = dx * dx + dy * dy;
            if d2 < r * r {
                // Pointer: a thin red wedge along (px, py).
                let along = dx * px + dy * py;
                let across = (dx * py - dy * px).abs();
                if along > 0.0 && across < 0.12 * r * (1.0 - along / r).max(0.0) + 0.02 * r {
                    return [200.0, 25.0, 20.0];
                }
                if d2 > (0.85 * r) * (0.85 * r) {
                    return self.mark_color;
                }
                return lerp3(self.face, [255.0; 3], 0.3);
            }
        }
        for &(x0, y0, x1, y1) in &self.marks {
            if u > x0 && u < x1 && v > y0 && v < y1 {
                return self.mark_color;
            }
        }
        // Tick ring near the rim.
        let r = r2.sqrt();
        if r > self.face_r * 0.9 {
            let a = v.atan2(u);
            if (a * 30.0 / std::f64::consts::PI).rem_euclid(1.0) < 0.25 {
                return self.mark_color;
            }
        }
        scale3(
            self.face,
            1.0 - 0.12 * (r2 / (self.face_r * self.face_r)) as f32,
        )
    }

    fn window(&self, u: f64, v: f64) -> Rgb {
        let n = self.digits.len();
        let fx = (u - (self.wx - self.ww)) / (2.0 * self.ww) * n as f64;
        let k = (fx as usize).min(n - 1);
        let cx = (fx - k as f64) as f32;
        let fy = ((v - (self.wy - self.wh)) / (2.0 * self.wh)) as f32;
        let red = k >= self.red_from;
        let bg = if red && self.window_bg[0] > 128.0 {
            [225.0, 70.0, 60.0]
        } else {
            self.window_bg
        };
        if !(0.05..=0.95).contains(&cx) {
            return scale3(bg, 0.55);
        }
        // Digit box inside the cell; the last wheel shows two half digits while it rolls.
        let (mut digit, mut y) = (self.digits[k], fy);
        if k == n - 1 {
            let yy = fy as f64 + self.roll;
            digit = (digit + yy.floor() as u8) % 10;
            y = yy.fract() as f32;
        }
        let x = (cx - 0.2) / 0.6;
        let y = (y - 0.16) / 0.68;
        let cell_aspect = (2.0 * self.ww / n as f64 / (2.0 * self.wh)) as f32;
        let t = 0.13;
        let tx = (t / (0.6 * cell_aspect / 0.68)).min(0.45);
        if seven_segment(digit, x, y, t, tx) {
            if red && self.window_bg[0] <= 128.0 {
                self.red
            } else {
                self.digit_color
            }
        } else {
            // The wheels are cylinders: darker towards the top and bottom of the window.
            let curve = 1.0 - 0.35 * (2.0 * fy - 1.0).powi(2);
            scale3(bg, curve)
        }
    }
}

fn rand_color(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> Rgb {
    [
        rng.random_range(lo..hi),
        rng.random_range(lo..hi),
        rng.random_range(lo..hi),
    ]
}

fn random_meter(rng: &mut ChaCha8Rng) -> Meter {
    let body = match rng.random_range(0..5) {
        0 => [180.0, 140.0, 60.0],  // brass
        1 => [40.0, 70.0, 150.0],   // blue plastic
        2 => [30.0, 30.0, 35.0],    // black
        3 => [170.0, 170.0, 175.0], // steel
        _ => rand_color(rng, 40.0, 200.0),
    };
    let body = lerp3(body, rand_color(rng, 0.0, 255.0), 0.15);
    let dark_window = rng.random_bool(0.6);
    let ww = rng.random_range(0.45..0.68);
    let wh = rng.random_range(0.09..0.15);
    let n = rng.random_range(5..=8usize);
    let face_r = rng.random_range(0.78..0.86);
    let wy = rng.random_range(-0.36..-0.12);
    let mut marks = Vec::new();
    for _ in 0..rng.random_range(2..6) {
        let x0 = rng.random_range(-0.5..0.3);
        let y0 = rng.random_range(0.05..0.55);
        marks.push((
            x0,
            y0,
            x0 + rng.random_range(0.05..0.3),
            y0 + rng.random_range(0.02..0.06),
        ));
    }
    let mut dials = Vec::new();
    for i in 0..rng.random_range(0..=4) {
        let a: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        dials.push((
            -0.45 + 0.3 * i as f64,
            rng.random_range(0.25..0.45),
            rng.random_range(0.08..0.12),
            (a.cos(), a.sin()),
        ));
    }
    let light: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    Meter {
        body,
        bezel: lerp3(body, [200.0; 3], rng.random_range(0.2..0.6)),
        face: lerp3([245.0, 243.0, 235.0], rand_color(rng, 150.0, 255.0), 0.3),
        face_r,
        bezel_r: rng.random_range(face_r + 0.04..0.96),
        pipe: rng.random_bool(0.7).then(|| {
            (
                lerp3([170.0, 150.0, 100.0], rand_color(rng, 50.0, 220.0), 0.5),
                rng.random_range(0.25..0.42),
                rng.random_range(1.4..2.4),
            )
        }),
        wx: rng.random_range(-0.08..0.08),
        wy,
        ww,
        wh,
        frame: rng.random_range(0.015..0.05),
        frame_color: rand_color(rng, 10.0, 90.0),
        window_bg: if dark_window {
            rand_color(rng, 5.0, 45.0)
        } else {
            rand_color(rng, 215.0, 250.0)
        },
        digit_color: if dark_window {
            rand_color(rng, 215.0, 250.0)
        } else {
            rand_color(rng, 5.0, 40.0)
        },
        red_from: n - rng.random_range(0..=3usize).min(n - 1),
        red: [210.0, 40.0, 35.0],
        digits: (0..n).map(|_| rng.random_range(0..10u8)).collect(),
        roll: if rng.random_bool(0.5) {
            rng.random_range(0.0..1.0)
        } else {
            0.0
        },
        dials,
        marks,
        mark_color: rand_color(rng, 10.0, 70.0),
        glare: (
            rng.random_range(-0.5..0.5),
            rng.random_range(-0.5..0.5),
            rng.random_range(0.2..0.6),
            rng.random_range(0.1..0.3),
            if rng.random_bool(0.5) {
                rng.random_range(0.1..0.45)
            } else {
                0.0
            },
        ),
        light: (light.cos(), light.sin()),
    }
}

/// Flat-coloured clutter: rotated boxes, labels with text-like stripes, ellipses.
fn draw_clutter(canvas: &mut [Rgb], w: usize, h: usize, rng: &mut ChaCha8Rng) {
    let (wf, hf) = (w as f64, h as f64);
    for _ in 0..rng.random_range(3..11) {
        let cx = rng.random_range(-0.1..1.1) * wf;
        let cy = rng.random_range(-0.1..1.1) * hf;
        let (rx, ry) = (
            rng.random_range(0.03..0.45) * wf,
            rng.random_range(0.01..0.3) * hf,
        );
        let a: f64 = rng.random_range(0.0..std::f64::consts::PI);
        let (s, c) = a.sin_cos();
        let ellipse = rng.random_bool(0.35);
        let stripes = !ellipse && rng.random_bool(0.3);
        let color = rand_color(rng, 0.0, 255.0);
        let alpha = rng.random_range(0.6..1.0f32);
        // Tight bounding box of the rotated shape.
        let (ex, ey) = (c.abs() * rx + s.abs() * ry, s.abs() * rx + c.abs() * ry);
        let (x0, x1) = (
            (cx - ex).clamp(0.0, wf) as usize,
            (cx + ex).clamp(0.0, wf) as usize,
        );
        let (y0, y1) = (
            (cy - ey).clamp(0.0, hf) as usize,
            (cy + ey).clamp(0.0, hf) as usize,
        );
        if x0 >= x1 || y0 >= y1 {
            continue; // entirely outside the frame
        }
        // Local coordinates are affine in x: step them instead of recomputing.
        let (ax, ay) = ((c / rx) as f32, (-s / ry) as f32);
        for y in y0..y1 {
            let dy = y as f64 + 0.5 - cy;
            let dx0 = x0 as f64 + 0.5 - cx;
            let mut lx = ((c * dx0 + s * dy) / rx) as f32;
            let mut ly = ((-s * dx0 + c * dy) / ry) as f32;
            for p in &mut canvas[y * w + x0..y * w + x1] {
                let inside = if ellipse {
                    lx * lx + ly * ly < 1.0
                } else {
                    lx.abs() < 1.0 && ly.abs() < 1.0
                };
                if inside {
                    let mut col = scale3(color, 0.85 + 0.15 * lx);
                    if stripes && (ly * 6.0).rem_euclid(1.0) < 0.35 && lx.abs() < 0.8 {
                        col = scale3(col, 0.3);
                    }
                    *p = lerp3(*p, col, alpha);
                }
                lx += ax;
                ly += ay;
            }
        }
    }
}

/// Renders sample `index` of the data set with `seed`.
pub fn render(width: u32, height: u32, seed: u64, index: u64) -> Rendered {
    let mut rng = sample_rng("wms-synth", seed, 0, index);
    // Retry with fresh parameters in the rare case the visible window misses the coverage band.
    let mut last = None;
    for _ in 0..8 {
        let r = render_once(width, height, &mut rng);
        if (COVERAGE_MIN..=COVERAGE_MAX).contains(&r.coverage) {
            return r;
        }
        last = Some(r);
    }
    last.expect("at least one attempt")
}

fn render_once(width: u32, height: u32, rng: &mut ChaCha8Rng) -> Rendered {
    let (w, h) = (width as usize, height as usize);
    let (wf, hf) = (w as f64, h as f64);
    let mut fast = FastRng(rng.random::<u64>() | 1);

    // Background: a two-colour gradient with low-frequency blotches, then clutter.
    let c0 = rand_color(rng, 20.0, 220.0);
    let c1 = lerp3(c0, rand_color(rng, 0.0, 255.0), 0.5);
    let ga: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    let (gx, gy) = (ga.cos() / wf, ga.sin() / hf);
    const GRID: usize = 6;
    let blotch: Vec<f32> = (0..GRID * GRID)
        .map(|_| rng.random_range(-25.0..25.0))
        .collect();
    let mut canvas: Vec<Rgb> = Vec::with_capacity(w * h);
    for y in 0..h {
        let by = y as f32 / h as f32 * (GRID - 1) as f32;
        let (iy, fy) = ((by as usize).min(GRID - 2), by.fract());
        for x in 0..w {
            let t = (0.5 + (x as f64 * gx + y as f64 * gy) * 0.7).clamp(0.0, 1.0) as f32;
            let bx = x as f32 / w as f32 * (GRID - 1) as f32;
            let (ix, fx) = ((bx as usize).min(GRID - 2), bx.fract());
            let b = |i: usize, j: usize| blotch[j * GRID + i];
            let n = (b(ix, iy) * (1.0 - fx) + b(ix + 1, iy) * fx) * (1.0 - fy)
                + (b(ix, iy + 1) * (1.0 - fx) + b(ix + 1, iy + 1) * fx) * fy;
            let c = lerp3(c0, c1, t);
            canvas.push([c[0] + n, c[1] + n, c[2] + n]);
        }
    }
    draw_clutter(&mut canvas, w, h, rng);

    // Pose: rotation (a quarter of photos portrait-ish), anisotropic scale, mild perspective,
    // sized so the window covers the target fraction, placed so the window is fully visible.
    let meter = random_meter(rng);
    let coverage_target = rng.random_range(0.014..0.08);
    let base = [0.0, 90.0, -90.0, 180.0][match rng.random_range(0..100) {
        0..60 => 0,
        60..78 => 1,
        78..92 => 2,
        _ => 3,
    }];
    let theta = (base + rng.random_range(-20.0..20.0f64)).to_radians();
    let aniso = rng.random_range(0.8..1.0);
    let (sx_f, sy_f) = if rng.random_bool(0.5) {
        (1.0, aniso)
    } else {
        (aniso, 1.0)
    };
    let window_area = 4.0 * meter.ww * meter.wh * sx_f * sy_f;
    let mut scale = (coverage_target * wf * hf / window_area).sqrt();
    let persp = Homography([
        1.0,
        0.0,
        0.0,
        0.0,
        1.0,
        0.0,
        rng.random_range(-0.12..0.12),
        rng.random_range(-0.12..0.12),
        1.0,
    ]);
    let (st, ct) = theta.sin_cos();
    let (forward, inverse) = loop {
        let linear = Homography([
            ct * scale * sx_f,
            -st * scale * sy_f,
            0.0,
            st * scale * sx_f,
            ct * scale * sy_f,
            0.0,
            0.0,
            0.0,
            1.0,
        ])
        .mul(&persp);
        let corners = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)].map(|(a, b)| {
            linear.apply(
                meter.wx + a * (meter.ww + meter.frame),
                meter.wy + b * (meter.wh + meter.frame),
            )
        });
        let (min_x, max_x) = corners
            .iter()
            .fold((f64::MAX, f64::MIN), |m, c| (m.0.min(c.0), m.1.max(c.0)));
        let (min_y, max_y) = corners
            .iter()
            .fold((f64::MAX, f64::MIN), |m, c| (m.0.min(c.1), m.1.max(c.1)));
        let margin = 2.0;
        let (tx_lo, tx_hi) = (margin - min_x, wf - margin - max_x);
        let (ty_lo, ty_hi) = (margin - min_y, hf - margin - max_y);
        if tx_lo < tx_hi && ty_lo < ty_hi {
            // Prefer the meter centre towards the middle of the frame, as photographers do.
            let pick = |lo: f64, hi: f64, mid: f64, rng: &mut ChaCha8Rng| {
                let (a, b) = (lo.max(mid * 0.5).min(hi), hi.min(mid * 1.5).max(lo));
                if a < b {
                    rng.random_range(a..b)
                } else {
                    rng.random_range(lo..hi)
                }
            };
            let tx = pick(tx_lo, tx_hi, wf / 2.0, rng);
            let ty = pick(ty_lo, ty_hi, hf / 2.0, rng);
            let m = Homography([1.0, 0.0, tx, 0.0, 1.0, ty, 0.0, 0.0, 1.0]).mul(&linear);
            break (m, m.inverse());
        }
        scale *= 0.85;
    };

    // Meter, its cast shadow and the mask, over the meter's bounding box.
    let reach = meter.pipe.map_or(1.0, |p| p.2.max(1.0));
    let shadow = (
        rng.random_range(-0.08..0.08) * wf,
        rng.random_range(-0.08..0.08) * hf,
    );
    let shadow_strength = rng.random_range(0.45..0.8f32);
    let pts = [(-reach, -1.0), (reach, -1.0), (reach, 1.0), (-reach, 1.0)]
        .map(|(a, b)| forward.apply(a, b));
    let bx0 = pts
        .iter()
        .map(|p| p.0.min(p.0 + shadow.0))
        .fold(f64::MAX, f64::min)
        .max(0.0) as usize;
    let bx1 = pts
        .iter()
        .map(|p| p.0.max(p.0 + shadow.0))
        .fold(f64::MIN, f64::max)
        .clamp(0.0, wf)
        .ceil() as usize;
    let by0 = pts
        .iter()
        .map(|p| p.1.min(p.1 + shadow.1))
        .fold(f64::MAX, f64::min)
        .max(0.0) as usize;
    let by1 = pts
        .iter()
        .map(|p| p.1.max(p.1 + shadow.1))
        .fold(f64::MIN, f64::max)
        .clamp(0.0, hf)
        .ceil() as usize;
    let mut mask = vec![0u8; w * h];
    let mut window_px = 0usize;
    for y in by0..by1.min(h) {
        for x in bx0..bx1.min(w) {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let (u, v) = inverse.apply(px, py);
            let i = y * w + x;
            match meter.shade(u, v) {
                Some(Hit::Window(c)) => {
                    canvas[i] = c;
                    mask[i] = 255;
                    window_px += 1;
                }
                Some(Hit::Solid(c)) => canvas[i] = c,
                None => {
                    let (su, sv) = inverse.apply(px - shadow.0, py - shadow.1);
                    if meter.covers(su, sv) {
                        canvas[i] = scale3(canvas[i], shadow_strength);
                    }
                }
            }
        }
    }

    // Lighting: a linear gradient, a soft shadow band across the frame, a colour cast.
    let (la, lb) = (
        rng.random_range(-0.5..0.5f32),
        rng.random_range(-0.5..0.5f32),
    );
    let band_angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    let (bnx, bny) = (band_angle.cos() as f32, band_angle.sin() as f32);
    let band_offset = rng.random_range(-0.3..0.3f32) * w.max(h) as f32;
    let band_soft = rng.random_range(0.02..0.15f32) * w.max(h) as f32;
    let band_dark = if rng.random_bool(0.5) {
        rng.random_range(0.55..0.9f32)
    } else {
        1.0
    };
    let cast = [
        rng.random_range(0.9..1.1f32),
        rng.random_range(0.9..1.1f32),
        rng.random_range(0.9..1.1f32),
    ];
    let exposure = rng.random_range(0.7..1.2f32);
    // Focus blur ([1 2 1] passes; blurring before the smooth lighting is the same to the eye
    // and lets lighting, noise and quantization share one pass).
    for _ in 0..rng.random_range(0..=2) {
        blur121(&mut canvas, w, h);
    }
    // Sensor noise: luminance (triangular, unit variance) plus weaker uncorrelated chroma.
    let sigma = rng.random_range(1.5..8.0f32);
    let (luma_k, chroma_k) = (sigma * 6f32.sqrt(), sigma * 0.4 * 12f32.sqrt());
    let (cxf, cyf) = (w as f32 / 2.0, h as f32 / 2.0);
    let inv_soft = 1.0 / band_soft;
    let mut image = RgbImage::new(width, height);
    for (y, (dst_row, row)) in image
        .as_mut()
        .chunks_exact_mut(3 * w)
        .zip(canvas.chunks_exact(w))
        .enumerate()
    {
        let fy = y as f32 / h as f32 - 0.5;
        let row_gain = (1.0 + lb * fy) * exposure;
        let dy = (y as f32 - cyf) * bny - band_offset;
        for (x, (dst, p)) in dst_row.chunks_exact_mut(3).zip(row).enumerate() {
            let fx = x as f32 / w as f32 - 0.5;
            let d = (x as f32 - cxf) * bnx + dy;
            let band = 1.0 - (1.0 - band_dark) * (0.5 + 0.5 * (d * inv_soft).clamp(-1.0, 1.0));
            let g = (row_gain + la * fx * exposure) * band;
            let [u0, u1, u2, u3] = fast.four_uniforms();
            let luma = (u0 + u1 - 1.0) * luma_k;
            let chroma = [
                (u2 - 0.5) * chroma_k,
                (u3 - 0.5) * chroma_k,
                (u0 - u1) * 0.5 * chroma_k,
            ];
            for c in 0..3 {
                // `as u8` saturates, so this clamps to [0, 255]; + 0.5 rounds.
                dst[c] = (p[c] * g * cast[c] + luma + chroma[c] + 0.5) as u8;
            }
        }
    }
    let coverage = window_px as f64 / (w * h) as f64;
    Rendered {
        image,
        mask: GrayImage::from_raw(width, height, mask).expect("w*h mask"),
        jpeg_quality: rng.random_range(35..=92),
        coverage,
    }
}

/// Separable [1 2 1]/4 blur with replicated edges.
fn blur121(canvas: &mut [Rgb], w: usize, h: usize) {
    let mut tmp = vec![[0f32; 3]; w * h];
    for y in 0..h {
        let row = &canvas[y * w..(y + 1) * w];
        for x in 0..w {
            let (a, b, c) = (row[x.saturating_sub(1)], row[x], row[(x + 1).min(w - 1)]);
            tmp[y * w + x] = [
                (a[0] + 2.0 * b[0] + c[0]) * 0.25,
                (a[1] + 2.0 * b[1] + c[1]) * 0.25,
                (a[2] + 2.0 * b[2] + c[2]) * 0.25,
            ];
        }
    }
    for y in 0..h {
        let (up, down) = (y.saturating_sub(1), (y + 1).min(h - 1));
        for x in 0..w {
            let (a, b, c) = (tmp[up * w + x], tmp[y * w + x], tmp[down * w + x]);
            canvas[y * w + x] = [
                (a[0] + 2.0 * b[0] + c[0]) * 0.25,
                (a[1] + 2.0 * b[1] + c[1]) * 0.25,
                (a[2] + 2.0 * b[2] + c[2]) * 0.25,
            ];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_deterministic_and_covers_the_band() {
        for i in 0..20 {
            let a = render(128, 96, 7, i);
            assert!(
                (COVERAGE_MIN..=COVERAGE_MAX).contains(&a.coverage),
                "sample {i}: {}",
                a.coverage
            );
            assert!(a.mask.iter().all(|&v| v == 0 || v == 255));
            if i < 3 {
                let b = render(128, 96, 7, i);
                assert_eq!(a.image, b.image);
                assert_eq!(a.mask, b.mask);
            }
        }
        assert_ne!(render(64, 64, 1, 0).image, render(64, 64, 2, 0).image);
        // Many poses and clutter layouts, including shapes entirely off-frame: no panics.
        for i in 0..400 {
            let r = render(40, 32, 9, i);
            assert!(r.coverage > 0.0, "sample {i}");
        }
    }

    #[test]
    fn seven_segment_eight_lights_every_segment_and_one_does_not() {
        assert!(seven_segment(8, 0.5, 0.05, 0.13, 0.2));
        assert!(seven_segment(8, 0.5, 0.5, 0.13, 0.2));
        assert!(!seven_segment(1, 0.5, 0.5, 0.13, 0.2));
        assert!(seven_segment(1, 0.95, 0.3, 0.13, 0.2));
    }

    /// For looking at the renderer: `WMS_SYNTH_SHEET=sheet.png cargo test --lib contact_sheet --
    /// --ignored` writes a 4×3 grid of 256×256 renders with their masks tinted red.
    #[test]
    #[ignore]
    fn contact_sheet() {
        let path = std::env::var("WMS_SYNTH_SHEET").unwrap_or_else(|_| "synth-sheet.png".into());
        let (tile, cols, rows) = (256u32, 4u32, 3u32);
        let mut sheet = RgbImage::new(tile * cols, tile * rows);
        for i in 0..cols * rows {
            let r = render(tile, tile, 1, i as u64);
            for (x, y, p) in r.image.enumerate_pixels() {
                let mut p = *p;
                if i % 2 == 1 && r.mask.get_pixel(x, y).0[0] == 255 {
                    p.0[0] = p.0[0].saturating_add(90);
                }
                sheet.put_pixel((i % cols) * tile + x, (i / cols) * tile + y, p);
            }
        }
        sheet.save(path).unwrap();
    }

    #[test]
    fn stems_are_zero_padded() {
        assert_eq!(stem(7, 10), "0007");
        assert_eq!(stem(7, 100_000), "00007");
    }
}
