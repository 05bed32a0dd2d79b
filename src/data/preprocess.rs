//! THE preprocessing: one implementation used by training, evaluation and serving (`wms-serve`
//! calls [`preprocess_image`] per request), so train/serve skew cannot happen by construction.
//!
//! It reproduces upstream `valTransforms` (DESIGN §5): RGB → Pillow bilinear resize (antialiased
//! when shrinking) → /255 → contrast stretch between the 2nd and 98th percentile of all values →
//! 3×3 median blur on `uint8(x·255)` → /255 → CHW f32. Every step after the resize works on uint8
//! values, so percentiles come from a 256-bin histogram and the stretch is a 256-entry lookup
//! table: no sorting and no per-pixel allocation.
//!
//! [`PreprocessSpec`] is its parameters; checkpoints and ONNX metadata store it (so `data` does not
//! depend on the checkpoint format, the checkpoint depends on this). It must not do augmentation
//! (see [`super::augment`]) nor know about batches.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

use super::DataError;

/// Fixed-point precision of Pillow's 8-bit resampler: `PRECISION_BITS = 32 - 8 - 2`
/// (Pillow `src/libImaging/Resample.c`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Added to the percentile range before dividing, so a flat image does not divide by zero
/// (upstream `valTransforms`: `(img - p2) / (p98 - p2 + 1e-6)`).
const STRETCH_EPS: f64 = 1e-6;

/// How inputs were preprocessed for this model (upstream `valTransforms`, DESIGN §5). Serving and
/// export read it back instead of assuming; `input_width`/`input_height` are what the network saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessSpec {
    pub input_width: u32,
    pub input_height: u32,
    /// Percentiles for the contrast stretch (upstream 2 and 98).
    pub percentile_low: f32,
    pub percentile_high: f32,
    /// Median blur kernel side (upstream 3).
    pub median_kernel: u32,
    /// Mask threshold on grayscale (upstream: >= 127 is foreground).
    pub mask_threshold: u8,
}

impl Default for PreprocessSpec {
    fn default() -> Self {
        PreprocessSpec {
            input_width: 512,
            input_height: 512,
            percentile_low: 2.0,
            percentile_high: 98.0,
            median_kernel: 3,
            mask_threshold: 127,
        }
    }
}

/// The full preprocessing of one photo: `[3, H, W]` f32 in CHW order, `H = spec.input_height`,
/// `W = spec.input_width`.
pub fn preprocess_image(img: &RgbImage, spec: &PreprocessSpec) -> Vec<f32> {
    let (w, h) = (spec.input_width, spec.input_height);
    let mut out = vec![0f32; 3 * w as usize * h as usize];
    if img.dimensions() == (w, h) {
        normalize_resized_into(img, spec, &mut out);
    } else {
        let resized = resize_bilinear_antialias(img, w, h);
        normalize_resized_into(&resized, spec, &mut out);
    }
    out
}

/// A mask as the loss sees it: `[H, W]` f32 of 0.0/1.0, resized with nearest neighbour (as
/// Pillow's `NEAREST`); a grey value `>= spec.mask_threshold` is foreground.
pub fn preprocess_mask(mask: &GrayImage, spec: &PreprocessSpec) -> Vec<f32> {
    let resized = resize_nearest_gray(mask, spec.input_width, spec.input_height);
    resized
        .as_raw()
        .iter()
        .map(|&v| if v >= spec.mask_threshold { 1.0 } else { 0.0 })
        .collect()
}

/// The mask resized to the network size and thresholded to 0/1 bytes (what the loader caches).
pub fn binarize_mask(mask: &GrayImage, spec: &PreprocessSpec) -> GrayImage {
    let mut resized = resize_nearest_gray(mask, spec.input_width, spec.input_height);
    for v in resized.iter_mut() {
        *v = u8::from(*v >= spec.mask_threshold);
    }
    resized
}

/// The steps after the resize, on an image already at the network size (the loader caches
/// resized images and augments them before this). Writes `[3, H, W]` into `out`.
///
/// # Panics
/// If `out.len() != 3 * width * height` of `img` (a caller bug, not bad input).
pub fn normalize_resized_into(img: &RgbImage, spec: &PreprocessSpec, out: &mut [f32]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    assert_eq!(out.len(), 3 * w * h, "output buffer must be [3, H, W]");
    let raw = img.as_raw();

    // Percentiles over ALL values of the HWC array, as `np.percentile(img, (2, 98))` upstream.
    let mut hist = [0u64; 256];
    for &v in raw {
        hist[v as usize] += 1;
    }
    let stretch = stretch_lut(&hist, spec);

    // Split into stretched planes (CHW), then a 3×3 median per plane straight into `out`.
    let mut planes = vec![0u8; 3 * w * h];
    let (p0, rest) = planes.split_at_mut(w * h);
    let (p1, p2) = rest.split_at_mut(w * h);
    for (i, px) in raw.chunks_exact(3).enumerate() {
        p0[i] = stretch[px[0] as usize];
        p1[i] = stretch[px[1] as usize];
        p2[i] = stretch[px[2] as usize];
    }
    let to_float = u8_to_unit_lut();
    let mut scratch = MedianScratch::new(w, h);
    for (c, plane) in planes.chunks_exact(w * h).enumerate() {
        let dst = &mut out[c * w * h..(c + 1) * w * h];
        median3x3_into(plane, w, h, &mut scratch, |y, row| {
            for (d, &v) in dst[y * w..(y + 1) * w].iter_mut().zip(row) {
                *d = to_float[v as usize];
            }
        });
    }
}

/// `v / 255.0` computed in f64 and rounded to f32, as upstream's float64 numpy array is before
/// the tensor becomes f32.
fn u8_to_unit_lut() -> [f32; 256] {
    let mut lut = [0f32; 256];
    for (v, slot) in lut.iter_mut().enumerate() {
        *slot = (v as f64 / 255.0) as f32;
    }
    lut
}

/// The contrast stretch as a lookup table from the resized uint8 value to `uint8(x·255)` after
/// stretching and clipping: upstream computes `np.clip((x - p2) / (p98 - p2 + 1e-6), 0, 1)` on
/// `x = img / 255.0` (float64) and then `(x * 255).astype(np.uint8)`, which truncates.
pub fn stretch_lut(hist: &[u64; 256], spec: &PreprocessSpec) -> [u8; 256] {
    let lo = percentile_from_histogram(hist, spec.percentile_low as f64);
    let hi = percentile_from_histogram(hist, spec.percentile_high as f64);
    let mut lut = [0u8; 256];
    for (v, slot) in lut.iter_mut().enumerate() {
        let x = v as f64 / 255.0;
        let y = ((x - lo) / (hi - lo + STRETCH_EPS)).clamp(0.0, 1.0);
        *slot = (y * 255.0) as u8;
    }
    lut
}

/// `np.percentile(values / 255.0, q)` with numpy's default `method="linear"`, for values given as
/// a histogram of uint8. Follows numpy 2.x `_quantile` step by step (virtual index, floor,
/// `_lerp` that interpolates from the upper end when `gamma >= 0.5`) so results agree bit for bit.
pub fn percentile_from_histogram(hist: &[u64; 256], q_percent: f64) -> f64 {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let q = q_percent / 100.0;
    // numpy `_compute_virtual_index(n, q, alpha=1, beta=1)`: n*q + (alpha + q*(1-alpha-beta)) - 1
    // (alpha = beta = 1 for "linear"; kept in numpy's operation order so rounding matches).
    let (alpha, beta) = (1.0, 1.0);
    let virtual_index = n as f64 * q + (alpha + q * (1.0 - alpha - beta)) - 1.0;
    let last = n - 1;
    let (prev, next) = if virtual_index >= last as f64 {
        (last, last)
    } else if virtual_index < 0.0 {
        (0, 0)
    } else {
        let p = virtual_index.floor() as u64;
        (p, p + 1)
    };
    let gamma = if virtual_index >= last as f64 {
        // numpy uses index -1 here; gamma does not matter because both ends are equal.
        0.0
    } else {
        virtual_index - virtual_index.floor().max(0.0)
    };
    let a = sorted_value(hist, prev) as f64 / 255.0;
    let b = sorted_value(hist, next) as f64 / 255.0;
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

/// The value at position `index` of the sorted values that `hist` counts.
fn sorted_value(hist: &[u64; 256], index: u64) -> u8 {
    let mut seen = 0u64;
    for (v, &count) in hist.iter().enumerate() {
        seen += count;
        if seen > index {
            return v as u8;
        }
    }
    255
}

/// Buffers for [`median3x3_into`], allocated once per image rather than per pixel.
struct MedianScratch {
    /// The plane with a one-pixel replicated border, `(w + 2) × (h + 2)`.
    padded: Vec<u8>,
    lo: Vec<u8>,
    mid: Vec<u8>,
    hi: Vec<u8>,
    row: Vec<u8>,
}

impl MedianScratch {
    fn new(w: usize, h: usize) -> Self {
        MedianScratch {
            padded: vec![0; (w + 2) * (h + 2)],
            lo: vec![0; w + 2],
            mid: vec![0; w + 2],
            hi: vec![0; w + 2],
            row: vec![0; w],
        }
    }
}

#[inline(always)]
fn med3(a: u8, b: u8, c: u8) -> u8 {
    a.min(b).max(a.max(b).min(c))
}

/// 3×3 median with replicated borders, like OpenCV `cv2.medianBlur(img, 3)` (its 3×3 path uses
/// `BORDER_REPLICATE`). Exact: sort each column of three, then the median of nine is
/// `med3(max of the lows, med3 of the middles, min of the highs)`. Written as loops over whole
/// rows of min/max so the compiler vectorizes them; `emit(y, row)` receives each output row.
fn median3x3_into(
    plane: &[u8],
    w: usize,
    h: usize,
    scratch: &mut MedianScratch,
    mut emit: impl FnMut(usize, &[u8]),
) {
    if w == 0 || h == 0 {
        return;
    }
    let pw = w + 2;
    let padded = &mut scratch.padded;
    for py in 0..h + 2 {
        let src = &plane[py.saturating_sub(1).min(h - 1) * w..][..w];
        let dst = &mut padded[py * pw..(py + 1) * pw];
        dst[1..=w].copy_from_slice(src);
        dst[0] = src[0];
        dst[w + 1] = src[w - 1];
    }
    let (lo, mid, hi, row) = (
        &mut scratch.lo,
        &mut scratch.mid,
        &mut scratch.hi,
        &mut scratch.row,
    );
    for y in 0..h {
        let r0 = &padded[y * pw..(y + 1) * pw];
        let r1 = &padded[(y + 1) * pw..(y + 2) * pw];
        let r2 = &padded[(y + 2) * pw..(y + 3) * pw];
        for j in 0..pw {
            let (a, b, c) = (r0[j], r1[j], r2[j]);
            lo[j] = a.min(b).min(c);
            hi[j] = a.max(b).max(c);
            mid[j] = med3(a, b, c);
        }
        for x in 0..w {
            let l = lo[x].max(lo[x + 1]).max(lo[x + 2]);
            let m = med3(mid[x], mid[x + 1], mid[x + 2]);
            let u = hi[x].min(hi[x + 1]).min(hi[x + 2]);
            row[x] = med3(l, m, u);
        }
        emit(y, row);
    }
}

/// Public for tests and tools: the 3×3 median of one uint8 plane (`w × h`), replicate border.
pub fn median3x3(plane: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    let mut scratch = MedianScratch::new(w, h);
    median3x3_into(plane, w, h, &mut scratch, |y, row| {
        out[y * w..(y + 1) * w].copy_from_slice(row)
    });
    out
}

/// Pillow's resampling coefficients for one axis (`precompute_coeffs` + `normalize_coeffs_8bpc`
/// in `src/libImaging/Resample.c`), bilinear filter (support 1.0).
struct Coeffs {
    /// Per output index: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    /// Fixed-point weights, `ksize` per output index.
    k: Vec<i32>,
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    // Antialiasing: when shrinking, the filter is stretched by the scale factor.
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut k = vec![0i32; out_size * ksize];
    let mut bounds = Vec::with_capacity(out_size);
    let mut pre = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C `(int)` truncates toward zero, as `as i64` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let taps = ((xmax - xmin).max(0) as usize).min(ksize);
        let mut ww = 0.0;
        for (x, slot) in pre.iter_mut().enumerate().take(taps) {
            let w = bilinear_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *slot = w;
            ww += w;
        }
        let kk = &mut k[xx * ksize..(xx + 1) * ksize];
        for x in 0..taps {
            let v = if ww != 0.0 { pre[x] / ww } else { pre[x] };
            let fixed = v * (1u32 << PRECISION_BITS) as f64;
            kk[x] = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin as usize, taps));
    }
    Coeffs { bounds, ksize, k }
}

/// Pillow's `clip8`: fixed-point sum back to a byte.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUND_HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes like Pillow `Image.resize((w, h), Image.BILINEAR)`: separable, horizontal pass first
/// into a uint8 intermediate, then vertical, both in Pillow's 22-bit fixed point, with the filter
/// support scaled by the downscale factor (antialiasing), so results match Pillow byte for byte.
pub fn resize_bilinear_antialias(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (w as usize, h as usize);
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return RgbImage::new(w, h);
    }
    if (in_w, in_h) == (out_w, out_h) {
        return img.clone();
    }
    let src = img.as_raw();
    // Horizontal pass over all input rows (Pillow limits it to the rows the vertical pass reads,
    // which gives the same bytes).
    let horizontal: Vec<u8>;
    let (mid, mid_w) = if in_w != out_w {
        let c = precompute_coeffs(in_w, out_w);
        let mut buf = vec![0u8; out_w * in_h * 3];
        for y in 0..in_h {
            let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
            let dst = &mut buf[y * out_w * 3..(y + 1) * out_w * 3];
            for (xx, &(xmin, taps)) in c.bounds.iter().enumerate() {
                let k = &c.k[xx * c.ksize..xx * c.ksize + taps];
                let (mut s0, mut s1, mut s2) = (ROUND_HALF, ROUND_HALF, ROUND_HALF);
                for (x, &kx) in k.iter().enumerate() {
                    let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    s0 += p[0] as i32 * kx;
                    s1 += p[1] as i32 * kx;
                    s2 += p[2] as i32 * kx;
                }
                dst[xx * 3] = clip8(s0);
                dst[xx * 3 + 1] = clip8(s1);
                dst[xx * 3 + 2] = clip8(s2);
            }
        }
        horizontal = buf;
        (&horizontal[..], out_w)
    } else {
        (&src[..], in_w)
    };
    if in_h == out_h {
        return RgbImage::from_raw(w, h, mid.to_vec()).expect("buffer sized w*h*3");
    }
    let c = precompute_coeffs(in_h, out_h);
    let stride = mid_w * 3;
    let mut out = vec![0u8; out_w * out_h * 3];
    let mut acc = vec![0i32; stride];
    for (yy, &(ymin, taps)) in c.bounds.iter().enumerate() {
        acc.fill(ROUND_HALF);
        for (y, &ky) in c.k[yy * c.ksize..yy * c.ksize + taps].iter().enumerate() {
            let row = &mid[(ymin + y) * stride..(ymin + y + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * ky;
            }
        }
        for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    RgbImage::from_raw(w, h, out).expect("buffer sized w*h*3")
}

/// Resizes like Pillow `Image.resize((w, h), Image.NEAREST)`: Pillow turns it into an affine
/// scale (`ImagingScaleAffine` in `src/libImaging/Geometry.c`) that starts at half a step and
/// accumulates the step in f64; positions outside the source get 0.
pub fn resize_nearest_gray(img: &GrayImage, w: u32, h: u32) -> GrayImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    if (in_w as u32, in_h as u32) == (w, h) {
        return img.clone();
    }
    let xs = nearest_positions(in_w, w as usize);
    let ys = nearest_positions(in_h, h as usize);
    let src = img.as_raw();
    let mut out = GrayImage::new(w, h);
    for (y, yin) in ys.iter().enumerate() {
        let dst = &mut out.as_mut()[y * w as usize..(y + 1) * w as usize];
        let Some(yin) = yin else { continue };
        let row = &src[yin * in_w..(yin + 1) * in_w];
        for (d, xin) in dst.iter_mut().zip(&xs) {
            if let Some(xin) = xin {
                *d = row[*xin];
            }
        }
    }
    out
}

fn nearest_positions(in_size: usize, out_size: usize) -> Vec<Option<usize>> {
    let step = in_size as f64 / out_size as f64;
    let mut pos = step * 0.5;
    (0..out_size)
        .map(|_| {
            // Pillow `COORD(v)`: -1 when negative, else truncation.
            let i = if pos < 0.0 { None } else { Some(pos as usize) };
            pos += step;
            i.filter(|&i| i < in_size)
        })
        .collect()
}

/// Decodes a JPEG or PNG completely and applies its EXIF orientation, so a portrait photo taken
/// with the phone turned is upright. A JPEG cut short is an error (decoders would otherwise
/// fill the missing part with grey without complaint).
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, DataError> {
    decode_inner(bytes).map_err(|message| DataError::DecodeBytes { message })
}

/// [`decode_image`] on a file; errors name the file.
pub fn decode_image_file(path: &Path) -> Result<DynamicImage, DataError> {
    let bytes = fs_err::read(path).map_err(|e| DataError::io(path, e))?;
    decode_inner(&bytes).map_err(|message| DataError::Decode {
        path: path.to_path_buf(),
        message,
    })
}

fn decode_inner(bytes: &[u8]) -> Result<DynamicImage, String> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    match reader.format() {
        Some(ImageFormat::Jpeg) => check_jpeg_complete(bytes)?,
        Some(ImageFormat::Png) => {}
        Some(other) => {
            return Err(format!(
                "unsupported format {other:?} (expected JPEG or PNG)"
            ));
        }
        None => return Err("not a JPEG or PNG file".into()),
    }
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// A JPEG is complete when its last scan (`FF DA`) is followed by the end-of-image marker
/// (`FF D9`). Inside entropy-coded data `FF` is always followed by `00` or a restart marker, so
/// neither pair can appear there by chance.
pub fn check_jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    for i in (0..bytes.len().saturating_sub(1)).rev() {
        if bytes[i] == 0xFF {
            match bytes[i + 1] {
                0xD9 => return Ok(()),
                0xDA => break,
                _ => {}
            }
        }
    }
    Err("JPEG data ends before the end-of-image marker (file truncated)".into())
}

/// RGB as Pillow's `convert("RGB")`: grey is replicated, alpha is dropped.
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// Grey as Pillow's `convert("L")`: ITU-R 601-2 luma in Pillow's fixed point
/// (`L24 = (r*19595 + g*38470 + b*7471 + 0x8000) >> 16`, `src/libImaging/Convert.c`).
pub fn to_gray(img: DynamicImage) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(g) => g,
        DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => img.to_luma8(),
        other => {
            let rgb = other.to_rgb8();
            let (w, h) = rgb.dimensions();
            let data = rgb
                .as_raw()
                .chunks_exact(3)
                .map(|p| {
                    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000)
                        >> 16) as u8
                })
                .collect();
            GrayImage::from_raw(w, h, data).expect("buffer sized w*h")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_matches_brute_force_with_replicated_border() {
        let (w, h) = (7, 5);
        let plane: Vec<u8> = (0..w * h).map(|i| ((i * 37 + 11) % 251) as u8).collect();
        let got = median3x3(&plane, w, h);
        for y in 0..h {
            for x in 0..w {
                let mut v = Vec::new();
                for dy in -1i32..=1 {
                    for dx in -1i32..=1 {
                        let yy = (y as i32 + dy).clamp(0, h as i32 - 1) as usize;
                        let xx = (x as i32 + dx).clamp(0, w as i32 - 1) as usize;
                        v.push(plane[yy * w + xx]);
                    }
                }
                v.sort();
                assert_eq!(got[y * w + x], v[4], "at {x},{y}");
            }
        }
    }

    #[test]
    fn percentile_matches_numpy_linear_on_small_cases() {
        // np.percentile([0, 255], 2) == 0.02 * 1.0 ; np.percentile([10, 20, 30, 40]/255, 98)
        let mut hist = [0u64; 256];
        hist[0] = 1;
        hist[255] = 1;
        assert!((percentile_from_histogram(&hist, 2.0) - 0.02).abs() < 1e-12);
        let mut hist = [0u64; 256];
        for v in [10, 20, 30, 40] {
            hist[v] = 1;
        }
        // virtual index 3*0.98 = 2.94 → 30 + 0.94*10 = 39.4
        assert!((percentile_from_histogram(&hist, 98.0) - 39.4 / 255.0).abs() < 1e-12);
    }

    #[test]
    fn identity_resize_and_upscale_keep_flat_colour() {
        let img = RgbImage::from_pixel(9, 7, image::Rgb([10, 200, 77]));
        for (w, h) in [(9, 7), (4, 3), (20, 30)] {
            let r = resize_bilinear_antialias(&img, w, h);
            assert!(r.pixels().all(|p| p.0 == [10, 200, 77]), "{w}x{h}");
        }
    }

    #[test]
    fn nearest_positions_follow_pillow() {
        // Pillow: Image.new("L", (5, 1)).resize((2, 1), NEAREST) samples x = 1 and 3.
        assert_eq!(nearest_positions(5, 2), vec![Some(1), Some(3)]);
        assert_eq!(
            nearest_positions(2, 4),
            vec![Some(0), Some(0), Some(1), Some(1)]
        );
    }

    #[test]
    fn truncated_jpeg_is_an_error_and_full_one_decodes() {
        let img = RgbImage::from_fn(32, 24, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 10) as u8, 99])
        });
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
            .encode_image(&img)
            .unwrap();
        let full = decode_image(&buf).unwrap();
        assert_eq!((full.width(), full.height()), (32, 24));
        let err = decode_image(&buf[..buf.len() * 2 / 3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(decode_image(b"garbage").is_err());
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 32x16 JPEG tagged "rotate 90° clockwise to display" (EXIF orientation 6).
        let img = RgbImage::from_fn(32, 16, |x, _| image::Rgb([if x < 16 { 250 } else { 5 }; 3]));
        let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0".to_vec();
        exif.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let mut buf = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut buf, 95);
        enc.add_app_segment(1, exif).unwrap();
        enc.encode(img.as_raw(), 32, 16, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let rgb = to_rgb(decode_image(&buf).unwrap());
        assert_eq!(rgb.dimensions(), (16, 32));
        // The bright left half of the stored image is the top after rotating clockwise.
        assert!(rgb.get_pixel(8, 2).0[0] > 200 && rgb.get_pixel(8, 29).0[0] < 50);
    }

    #[test]
    fn preprocess_shapes_and_range() {
        let spec = PreprocessSpec {
            input_width: 32,
            input_height: 16,
            ..PreprocessSpec::default()
        };
        let img = RgbImage::from_fn(50, 40, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 6) as u8, 128])
        });
        let t = preprocess_image(&img, &spec);
        assert_eq!(t.len(), 3 * 32 * 16);
        assert!(t.iter().all(|v| (0.0..=1.0).contains(v)));
        let mask = GrayImage::from_fn(50, 40, |x, _| image::Luma([if x < 25 { 0 } else { 255 }]));
        let m = preprocess_mask(&mask, &spec);
        assert_eq!(m.len(), 32 * 16);
        assert_eq!(m[0], 0.0);
        assert_eq!(m[31], 1.0);
    }
}
