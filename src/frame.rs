//! Decoding camera frames into RGB, with one-line errors that name the file and the cause.

use image::ImageEncoder;
use std::path::Path;

/// An 8-bit RGB frame, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbFrame {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbFrame {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> crate::Result<Self> {
        crate::ensure!(
            width > 0 && height > 0,
            "zero-size image ({width}x{height})"
        );
        crate::ensure!(
            data.len() == width * height * 3,
            "RGB buffer holds {} bytes, expected {}x{}x3",
            data.len(),
            width,
            height
        );
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// A copy of the rectangle `[x0, x0+w) x [y0, y0+h)`.
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> RgbFrame {
        let mut data = Vec::with_capacity(w * h * 3);
        for y in y0..y0 + h {
            let start = (y * self.width + x0) * 3;
            data.extend_from_slice(&self.data[start..start + w * 3]);
        }
        RgbFrame {
            width: w,
            height: h,
            data,
        }
    }
}

/// Largest accepted image side, in pixels (width or height). Checked from the header, before
/// any pixel is decoded, so a tiny file claiming a huge image costs nothing.
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// Largest accepted image area: 2^25 pixels (8K UHD, 7680x4320, fits), 96 MiB as 8-bit RGB.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 25;
/// Largest accepted image file. A PNG of [`MAX_IMAGE_PIXELS`] at 16 bits per channel with alpha
/// and no compression is 256 MiB; the rest is headroom for chunk overhead.
pub const MAX_IMAGE_FILE_BYTES: u64 = 320 << 20;
/// Most memory one decoder may hold at once (the `image` crate's `max_alloc`): the decoded
/// image at up to 8 bytes per pixel for [`MAX_IMAGE_PIXELS`], plus headroom.
const MAX_DECODE_ALLOC: u64 = 384 << 20;

/// Whether `width x height` is within [`MAX_IMAGE_SIDE`] and [`MAX_IMAGE_PIXELS`]; the error
/// says which limit it breaks. Shared by images and video frames.
pub fn check_dimensions(width: u64, height: u64) -> crate::Result<()> {
    crate::ensure!(
        width > 0 && height > 0,
        "zero-size image ({width}x{height})"
    );
    crate::ensure!(
        width <= MAX_IMAGE_SIDE as u64 && height <= MAX_IMAGE_SIDE as u64,
        "image is {width}x{height}, over the limit of {MAX_IMAGE_SIDE} pixels per side"
    );
    crate::ensure!(
        width * height <= MAX_IMAGE_PIXELS,
        "image is {width}x{height} = {} pixels, over the limit of {MAX_IMAGE_PIXELS}",
        width * height
    );
    Ok(())
}

/// Decode an image file (PNG or JPEG, by content) into RGB.
pub fn load_rgb(path: &Path) -> crate::Result<RgbFrame> {
    let bytes = crate::fsio::read_limited(path, MAX_IMAGE_FILE_BYTES, "image")?;
    decode_rgb(&bytes).map_err(|e| crate::err!("{}: {e}", path.display()))
}

/// Decode an in-memory PNG or JPEG into RGB.
pub fn decode_rgb(bytes: &[u8]) -> crate::Result<RgbFrame> {
    let img = decode_checked(bytes)?;
    // `into_`: an 8-bit RGB decode (every JPEG and RGB PNG) moves its buffer, no full-size copy.
    let rgb = img.into_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    RgbFrame::new(w, h, rgb.into_raw())
}

/// Decode an 8-bit single-channel map (a label-id PNG) with the same checks and limits as
/// [`decode_rgb`]; returns `(width, height, values)`.
pub fn decode_luma(bytes: &[u8]) -> crate::Result<(usize, usize, Vec<u8>)> {
    let img = decode_checked(bytes)?;
    let gray = img.into_luma8();
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    Ok((w, h, gray.into_raw()))
}

/// A label-id map from a file: [`decode_luma`] behind the same file-size limit as images.
pub fn load_luma(path: &Path) -> crate::Result<(usize, usize, Vec<u8>)> {
    let bytes = crate::fsio::read_limited(path, MAX_IMAGE_FILE_BYTES, "image")?;
    decode_luma(&bytes).map_err(|e| crate::err!("{}: {e}", path.display()))
}

/// Format sniffing, the JPEG truncation check, the size limits read off the header, then the
/// decode itself under a memory bound.
fn decode_checked(bytes: &[u8]) -> crate::Result<image::DynamicImage> {
    crate::ensure!(!bytes.is_empty(), "empty file");
    let format = image::guess_format(bytes).map_err(|_| crate::err!("not a PNG or JPEG image"))?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        crate::bail!("not a PNG or JPEG image ({format:?})");
    }
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        crate::bail!("corrupt Jpeg image: truncated (no end-of-image marker after the last scan)");
    }
    let reader = |sides: Option<u32>| {
        let mut r = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
        let mut limits = image::Limits::default();
        limits.max_image_width = sides;
        limits.max_image_height = sides;
        limits.max_alloc = Some(MAX_DECODE_ALLOC);
        r.limits(limits);
        r
    };
    // The header alone first: a size over the limits is refused with our own message (the
    // decoder's would be "Image size exceeds limit") before anything is allocated for pixels.
    let (w, h) = reader(None)
        .into_dimensions()
        .map_err(|e| crate::err!("corrupt {format:?} image: {e}"))?;
    check_dimensions(w as u64, h as u64)?;
    // The decoder enforces the same sides again, in case its header read differs from ours.
    reader(Some(MAX_IMAGE_SIDE))
        .decode()
        .map_err(|e| crate::err!("corrupt {format:?} image: {e}"))
}

/// Write `frame` as a PNG at `path`, replaced whole or not at all ([`crate::fsio::write_atomic`]).
pub fn write_png(path: &Path, frame: &RgbFrame) -> crate::Result<()> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            &frame.data,
            frame.width as u32,
            frame.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| crate::err!("writing {}: {e}", path.display()))?;
    crate::fsio::write_atomic(path, &bytes)
}

/// JPEG decoders fill a cut-off scan with grey instead of failing, so check the structure: the
/// end-of-image marker (FF D9) must follow the last start-of-scan marker (FF DA). Inside scan
/// data 0xFF is always byte-stuffed, so neither marker can appear there by accident.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_garbage() {
        assert!(decode_rgb(b"").unwrap_err().to_string().contains("empty"));
        assert!(decode_rgb(b"hello world, not an image")
            .unwrap_err()
            .to_string()
            .contains("not a PNG or JPEG"));
    }

    #[test]
    fn truncated_png_is_an_error() {
        let mut png = Vec::new();
        let img = image::RgbImage::from_pixel(16, 16, image::Rgb([10, 20, 30]));
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("encode");
        let cut = &png[..png.len() / 2];
        let err = decode_rgb(cut).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn crop_takes_the_right_pixels() {
        let data: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        let f = RgbFrame::new(4, 3, data).expect("frame");
        let c = f.crop(1, 1, 2, 2);
        assert_eq!(c.data[..3], f.data[(4 + 1) * 3..(4 + 1) * 3 + 3]);
        assert_eq!(c.data[9..12], f.data[(2 * 4 + 2) * 3..(2 * 4 + 2) * 3 + 3]);
    }
}
