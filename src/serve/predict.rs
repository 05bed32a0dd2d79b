//! From request bytes to model input and from logits to the served mask. Validation happens in
//! the cheapest order — empty, magic bytes, then the header alone ([`inspect`]: dimensions, bit
//! depth and the decode's memory cost, before any pixel is decoded, so a decompression bomb costs
//! nothing) — then decoding limited to what the header admitted (EXIF-aware, as the library's
//! `decode_image`) and [`crate::data::preprocess::preprocess_image`], the exact preprocessing
//! training used. Everything here is synchronous and CPU-bound: handlers call it on the blocking
//! pool.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ColorType, DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::engine::{ModelInfo, mask_from_logits};
use super::error::ApiError;
use crate::data::preprocess;
use crate::data::preprocess::PreprocessSpec;

/// A request's image, ready for the model.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// CHW at the model's input size.
    pub input: Vec<f32>,
    /// The photo's size after EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// Mean of the photo's 8-bit RGB values / 255 (a drift signal for the metrics).
    pub brightness: f64,
}

/// Limits checked from the image header, before any pixel is decoded.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_pixels: u64,
    /// Bits per channel (8 or 16).
    pub max_bit_depth: u8,
}

/// What the header says about a request's image and what decoding it will cost.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub format: ImageFormat,
    /// As stored, before EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// Peak bytes [`prepare`] holds for this image (see [`decode_cost`]).
    pub cost: u64,
}

/// Rejects what is not a JPEG/PNG within `limits`, reading only the header, and estimates the
/// decode's memory so the caller can reserve it before [`prepare`].
pub fn inspect(
    bytes: &[u8],
    limits: &ImageLimits,
    spec: &PreprocessSpec,
) -> Result<Admission, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    let format = image::guess_format(bytes).map_err(|_| ApiError::NotAnImage)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(ApiError::UnsupportedFormat {
            format: format!("{format:?}").to_uppercase(),
        });
    }
    // The IHDR alone refuses a bomb whose body was cut off after the header (the decoder
    // below wants the chunks up to the first IDAT).
    if format == ImageFormat::Png
        && let Some((w, h)) = png_ihdr_dimensions(bytes)
    {
        check_pixels(w, h, limits.max_pixels)?;
    }
    let mut decoder = header_decoder(bytes, format)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits.max_pixels)?;
    let color = decoder.color_type();
    let bits = (color.bits_per_pixel() / u16::from(color.channel_count().max(1))) as u8;
    if bits > limits.max_bit_depth {
        return Err(ApiError::BitDepthTooHigh {
            bits,
            limit: limits.max_bit_depth,
        });
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let progressive = format == ImageFormat::Jpeg && jpeg_is_progressive(bytes);
    Ok(Admission {
        format,
        width,
        height,
        cost: decode_cost(width, height, color, orientation, progressive, spec),
    })
}

fn check_pixels(width: u32, height: u32, limit: u64) -> Result<(), ApiError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limit {
        return Err(ApiError::TooManyPixels {
            width,
            height,
            pixels,
            limit,
        });
    }
    Ok(())
}

/// A decoder that has read the header (PNG: the chunks before the first IDAT; JPEG: the
/// markers and EXIF) and no pixel.
fn header_decoder(bytes: &[u8], format: ImageFormat) -> Result<impl ImageDecoder + '_, ApiError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Sizes are checked by `inspect` and bounded by `decode_cost` in `prepare`; the crate's
    // default 512 MiB `max_alloc` is neither.
    reader.limits(Limits::no_limits());
    reader.into_decoder().map_err(|e| ApiError::CorruptImage {
        detail: e.to_string(),
    })
}

/// Peak bytes held while one image is decoded and preprocessed, following [`prepare`] step by
/// step, the largest of:
/// - decoding: the decoded buffer `D` (`w*h*bytes_per_pixel`), plus for a progressive JPEG the
///   decoder's i16 coefficients (2 bytes per sample, zune-jpeg keeps them all until the end);
/// - EXIF rotation by 90/270 degrees: `D` and its rotated copy (`DynamicImage::apply_orientation`;
///   flips and 180 degrees are in place);
/// - conversion to 8-bit RGB when the image is not already: `D` and `R = w*h*3`;
/// - the resize: `R`, its horizontal pass (`out_w * h * 3`), the resized image and the f32
///   tensor (`out_w * out_h * 3 * 4`).
///
/// Request bodies are not counted (bounded by `max_request_size` per connection).
pub fn decode_cost(
    width: u32,
    height: u32,
    color: ColorType,
    orientation: Orientation,
    progressive: bool,
    spec: &PreprocessSpec,
) -> u64 {
    let px = u64::from(width) * u64::from(height);
    let decoded = px * u64::from(color.bytes_per_pixel());
    let coefficients = if progressive {
        px * u64::from(color.channel_count()) * 2
    } else {
        0
    };
    let rotated = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let rgb = px * 3;
    let (out_w, out_h) = (u64::from(spec.input_width), u64::from(spec.input_height));
    let tall = u64::from(width.max(height));
    let resize = rgb + out_w * tall * 3 + out_w * out_h * 3 + out_w * out_h * 3 * 4;
    [
        decoded + coefficients,
        if rotated { 2 * decoded } else { 0 },
        if color == ColorType::Rgb8 {
            0
        } else {
            decoded + rgb
        },
        resize,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// Whether a JPEG's frame is progressive (SOF2/6/10/14), walking the marker segments before
/// the first scan (ITU T.81 B.1.1.3: each segment is `FF xx` and a big-endian length that
/// counts itself).
fn jpeg_is_progressive(bytes: &[u8]) -> bool {
    let mut i = 2;
    while let (Some(&ff), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) {
        if ff != 0xFF {
            return false;
        }
        match marker {
            0xFF => i += 1, // fill byte
            0xC2 | 0xC6 | 0xCA | 0xCE => return true,
            0xC0 | 0xC1 | 0xC3 | 0xC5 | 0xC7 | 0xC9 | 0xCB | 0xCD | 0xCF | 0xDA => return false,
            0xD0..=0xD9 | 0x01 => i += 2,
            _ => {
                let Some(len) = bytes.get(i + 2..i + 4) else {
                    return false;
                };
                i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
    false
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

/// Decodes (EXIF-aware, as [`preprocess::decode_image`]) and preprocesses one photo admitted by
/// [`inspect`], with the decoder limited to the header's size and the admitted cost, so a
/// header that lied cannot allocate more than was reserved.
pub fn prepare(
    bytes: &[u8],
    admission: &Admission,
    spec: &PreprocessSpec,
) -> Result<Prepared, ApiError> {
    let corrupt = |e: String| ApiError::CorruptImage {
        detail: decode_detail(&e),
    };
    if admission.format == ImageFormat::Jpeg {
        preprocess::check_jpeg_complete(bytes).map_err(corrupt)?;
    }
    let mut decoder = header_decoder(bytes, admission.format)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(admission.width);
    limits.max_image_height = Some(admission.height);
    limits.max_alloc = Some(admission.cost);
    decoder
        .set_limits(limits)
        .map_err(|e| corrupt(e.to_string()))?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| corrupt(e.to_string()))?;
    img.apply_orientation(orientation);
    let rgb = preprocess::to_rgb(img);
    let (width, height) = rgb.dimensions();
    Ok(Prepared {
        input: preprocess::preprocess_image(&rgb, spec),
        width,
        height,
        brightness: mean_brightness(rgb.as_raw()),
    })
}

/// Mean of 8-bit samples / 255: one pass over the decoded photo, a few ms for 12 megapixels
/// (decoding it took far longer).
fn mean_brightness(samples: &[u8]) -> f64 {
    let sum: u64 = samples.iter().map(|&v| u64::from(v)).sum();
    sum as f64 / (samples.len().max(1) as f64 * 255.0)
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

/// Thresholds logits at the model's input size and resizes the mask (nearest neighbour, as
/// Pillow's `NEAREST`, so it stays binary and `torchserve/handler.py` gives the same pixels) to
/// `photo_size`: the photo's size by default, `None` for `?size=model`.
pub fn postprocess(logits: &[f32], info: &ModelInfo, photo_size: Option<(u32, u32)>) -> Prediction {
    let (w, h) = info.input_size();
    let mask = mask_from_logits(logits, w, h);
    let fg = mask.as_raw().iter().filter(|&&v| v > 0).count();
    let coverage = fg as f64 / mask.as_raw().len().max(1) as f64;
    let mask = match photo_size {
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
    use image::RgbImage;

    fn png(w: u32, h: u32) -> Vec<u8> {
        encode_png(&GrayImage::new(w, h)).unwrap()
    }

    fn limits(max_pixels: u64) -> ImageLimits {
        ImageLimits {
            max_pixels,
            max_bit_depth: 8,
        }
    }

    fn check(bytes: &[u8], max_pixels: u64) -> Result<Admission, ApiError> {
        inspect(bytes, &limits(max_pixels), &PreprocessSpec::default())
    }

    #[test]
    fn bad_inputs_are_named() {
        let max = 1_000_000;
        assert!(matches!(check(b"", max), Err(ApiError::EmptyBody)));
        assert!(matches!(
            check(b"hello, not an image", max),
            Err(ApiError::NotAnImage)
        ));
        assert!(matches!(
            check(b"GIF89a\x01\x00\x01\x00\x00\x00\x00", max),
            Err(ApiError::UnsupportedFormat { .. })
        ));
        let p = png(100, 100);
        let ok = check(&p, max).unwrap();
        assert!(matches!(
            check(&p, 9_999),
            Err(ApiError::TooManyPixels { pixels: 10_000, .. })
        ));
        assert!(matches!(
            prepare(&p[..p.len() / 2], &ok, &PreprocessSpec::default()),
            Err(ApiError::CorruptImage { .. })
        ));
    }

    #[test]
    fn sixteen_bit_images_are_refused_by_default_and_costed_when_allowed() {
        let img = image::ImageBuffer::<image::Rgba<u16>, _>::new(64, 32);
        let mut p = Cursor::new(Vec::new());
        img.write_to(&mut p, ImageFormat::Png).unwrap();
        let p = p.into_inner();
        assert!(matches!(
            check(&p, 1_000_000),
            Err(ApiError::BitDepthTooHigh { bits: 16, limit: 8 })
        ));
        let wide = ImageLimits {
            max_pixels: 1_000_000,
            max_bit_depth: 16,
        };
        let spec = PreprocessSpec::default();
        let a = inspect(&p, &wide, &spec).unwrap();
        let cost = |w, h, c, o, prog| decode_cost(w, h, c, o, prog, &spec);
        assert_eq!(
            a.cost,
            cost(64, 32, ColorType::Rgba16, Orientation::NoTransforms, false)
        );
        prepare(&p, &a, &spec).unwrap();
        // 7000x7000 RGBA16 (issue 11's bomb): 392 MB decoded plus 147 MB of RGB.
        let bomb = cost(
            7000,
            7000,
            ColorType::Rgba16,
            Orientation::NoTransforms,
            false,
        );
        assert_eq!(bomb, 49_000_000 * 8 + 49_000_000 * 3);
        // 8-bit RGB: the decoded image is the RGB one; rotation copies it; progressive adds
        // 2 bytes per sample.
        let px = 6_000 * 4_000u64;
        let rgb = |o, prog| cost(6_000, 4_000, ColorType::Rgb8, o, prog);
        assert!(rgb(Orientation::NoTransforms, false) < px * 4);
        assert_eq!(rgb(Orientation::Rotate90, false), px * 6);
        assert_eq!(rgb(Orientation::NoTransforms, true), px * 9);
    }

    #[test]
    fn progressive_jpegs_are_told_apart() {
        let baseline = {
            let mut out = Cursor::new(Vec::new());
            image::RgbImage::new(16, 16)
                .write_to(&mut out, ImageFormat::Jpeg)
                .unwrap();
            out.into_inner()
        };
        assert!(!jpeg_is_progressive(&baseline));
        let pos = baseline.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let mut progressive = baseline.clone();
        progressive[pos + 1] = 0xC2;
        assert!(jpeg_is_progressive(&progressive));
        assert!(!jpeg_is_progressive(b"\xFF\xD8\xFF"));
    }

    #[test]
    fn brightness_is_the_mean_sample_over_255() {
        assert_eq!(mean_brightness(&[]), 0.0);
        assert_eq!(mean_brightness(&[255, 255, 255]), 1.0);
        assert_eq!(mean_brightness(&[0, 51, 102]), 0.2);
        let grey = RgbImage::from_pixel(40, 30, image::Rgb([100, 150, 200]));
        let mut bytes = Cursor::new(Vec::new());
        grey.write_to(&mut bytes, ImageFormat::Png).unwrap();
        let bytes = bytes.into_inner();
        let spec = PreprocessSpec::default();
        let a = check(&bytes, 1_000_000).unwrap();
        let p = prepare(&bytes, &a, &spec).unwrap();
        assert!(
            (p.brightness - 150.0 / 255.0).abs() < 1e-9,
            "{}",
            p.brightness
        );
    }

    #[test]
    fn decode_detail_drops_hint() {
        assert_eq!(
            decode_detail("cannot decode image: cut short; hint: send a complete file"),
            "cut short"
        );
    }
}
