//! From request bytes to model input and from logits to the served mask. Validation happens in
//! the cheapest order — empty, magic bytes, header dimensions (before any pixel is decoded, so a
//! decompression bomb costs nothing) — then the library's own decoding (EXIF-aware) and
//! [`crate::data::preprocess::preprocess_image`], the exact preprocessing training used.
//! Everything here is synchronous and CPU-bound: handlers call it on the blocking pool.

use std::io::Cursor;

use image::{GrayImage, ImageFormat, ImageReader};

use super::engine::{ModelInfo, mask_from_logits};
use super::error::ApiError;
use crate::checkpoint::PreprocessSpec;
use crate::data::preprocess;

/// A request's image, ready for the model.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// CHW at the model's input size.
    pub input: Vec<f32>,
    /// The photo's size after EXIF orientation.
    pub width: u32,
    pub height: u32,
}

/// Rejects what is not a JPEG/PNG of acceptable size, reading only the header.
pub fn inspect(bytes: &[u8], max_pixels: u64) -> Result<ImageFormat, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    let format = image::guess_format(bytes).map_err(|_| ApiError::NotAnImage)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(ApiError::UnsupportedFormat {
            format: format!("{format:?}").to_uppercase(),
        });
    }
    let (width, height) = match png_ihdr_dimensions(bytes) {
        Some(dims) if format == ImageFormat::Png => dims,
        _ => ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| ApiError::CorruptImage {
                detail: e.to_string(),
            })?,
    };
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ApiError::TooManyPixels {
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    Ok(format)
}

/// Width and height from a PNG's IHDR chunk, which the format requires first (PNG spec §5.6):
/// bytes 8..16 are its length and type, 16..24 the big-endian dimensions. Reading them directly
/// also refuses a bomb whose body was cut off after the header.
fn png_ihdr_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let be = |r: std::ops::Range<usize>| Some(u32::from_be_bytes(bytes.get(r)?.try_into().ok()?));
    Some((be(16..20)?, be(20..24)?))
}

/// Validates, decodes and preprocesses one photo.
pub fn prepare(bytes: &[u8], spec: &PreprocessSpec, max_pixels: u64) -> Result<Prepared, ApiError> {
    inspect(bytes, max_pixels)?;
    let img = preprocess::decode_image(bytes).map_err(|e| ApiError::CorruptImage {
        detail: decode_detail(&e.to_string()),
    })?;
    let rgb = preprocess::to_rgb(img);
    let (width, height) = rgb.dimensions();
    Ok(Prepared {
        input: preprocess::preprocess_image(&rgb, spec),
        width,
        height,
    })
}

/// The decoder's own words without the library's hint (ours is in [`ApiError`]).
fn decode_detail(message: &str) -> String {
    let m = message
        .strip_prefix("cannot decode image: ")
        .unwrap_or(message);
    m.split("; hint:").next().unwrap_or(m).to_string()
}

/// The mask a client receives.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub mask: GrayImage,
    /// Fraction of foreground pixels at the model's resolution.
    pub coverage: f64,
}

/// Thresholds logits at the model's input size; `original` resizes the mask (nearest
/// neighbour, so it stays binary) to the photo's size.
pub fn postprocess(logits: &[f32], info: &ModelInfo, original: Option<(u32, u32)>) -> Prediction {
    let (w, h) = info.input_size();
    let mask = mask_from_logits(logits, w, h);
    let fg = mask.as_raw().iter().filter(|&&v| v > 0).count();
    let coverage = fg as f64 / mask.as_raw().len().max(1) as f64;
    let mask = match original {
        Some((ow, oh)) if (ow, oh) != (w, h) => preprocess::resize_nearest_gray(&mask, ow, oh),
        _ => mask,
    };
    Prediction { mask, coverage }
}

/// PNG bytes of a grayscale mask.
pub fn encode_png(mask: &GrayImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Cursor::new(Vec::new());
    mask.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        encode_png(&GrayImage::new(w, h)).unwrap()
    }

    #[test]
    fn bad_inputs_are_named() {
        let max = 1_000_000;
        assert!(matches!(inspect(b"", max), Err(ApiError::EmptyBody)));
        assert!(matches!(
            inspect(b"hello, not an image", max),
            Err(ApiError::NotAnImage)
        ));
        assert!(matches!(
            inspect(b"GIF89a\x01\x00\x01\x00\x00\x00\x00", max),
            Err(ApiError::UnsupportedFormat { .. })
        ));
        let p = png(100, 100);
        assert!(inspect(&p, max).is_ok());
        assert!(matches!(
            inspect(&p, 9_999),
            Err(ApiError::TooManyPixels { pixels: 10_000, .. })
        ));
        assert!(matches!(
            prepare(&p[..p.len() / 2], &PreprocessSpec::default(), max),
            Err(ApiError::CorruptImage { .. })
        ));
    }

    #[test]
    fn decode_detail_drops_hint() {
        assert_eq!(
            decode_detail("cannot decode image: cut short; hint: send a complete file"),
            "cut short"
        );
    }
}
