//! Decoding camera frames into RGB, with one-line errors that name the file and the cause.

use std::path::Path;

/// An 8-bit RGB frame, row-major, 3 bytes per pixel.
#[derive(Clone, Debug)]
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

/// Decode an image file (PNG or JPEG, by content) into RGB.
pub fn load_rgb(path: &Path) -> crate::Result<RgbFrame> {
    let bytes = std::fs::read(path).map_err(|e| crate::err!("{}: {e}", path.display()))?;
    decode_rgb(&bytes).map_err(|e| crate::err!("{}: {e}", path.display()))
}

/// Decode an in-memory PNG or JPEG into RGB.
pub fn decode_rgb(bytes: &[u8]) -> crate::Result<RgbFrame> {
    crate::ensure!(!bytes.is_empty(), "empty file");
    let format = image::guess_format(bytes).map_err(|_| crate::err!("not a PNG or JPEG image"))?;
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        crate::bail!("corrupt Jpeg image: truncated (no end-of-image marker after the last scan)");
    }
    let img = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| crate::err!("corrupt {format:?} image: {e}"))?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    RgbFrame::new(w, h, rgb.into_raw())
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
