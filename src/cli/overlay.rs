//! Overlay PNGs: detection boxes with their scores drawn on the frame, for a person to look at.

use crate::detect::maskrcnn::MaskCrop;
use crate::detect::Detection;
use crate::frame::RgbFrame;
use std::path::Path;

/// 3x5 bitmap glyphs for the characters a score label needs.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b001, 0b001],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0, 0, 0, 0, 0b010],
        ':' => [0, 0b010, 0, 0b010, 0],
        _ => [0; 5],
    }
}

struct Canvas<'a> {
    f: &'a mut RgbFrame,
}

impl Canvas<'_> {
    fn put(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.f.width && (y as usize) < self.f.height {
            let i = (y as usize * self.f.width + x as usize) * 3;
            self.f.data[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, rgb: [u8; 3]) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.put(x, y, rgb);
            }
        }
    }

    fn rect(&mut self, b: [f32; 4], t: i64, rgb: [u8; 3]) {
        let [x0, y0, x1, y1] = b.map(|v| v.round() as i64);
        self.fill(x0, y0, x1 + 1, y0 + t, rgb);
        self.fill(x0, y1 - t + 1, x1 + 1, y1 + 1, rgb);
        self.fill(x0, y0, x0 + t, y1 + 1, rgb);
        self.fill(x1 - t + 1, y0, x1 + 1, y1 + 1, rgb);
    }

    /// Text on a filled background, glyphs scaled by `s`.
    fn text(&mut self, x: i64, y: i64, s: i64, txt: &str, fg: [u8; 3], bg: [u8; 3]) {
        let n = txt.chars().count() as i64;
        self.fill(x, y, x + n * 4 * s + s, y + 7 * s, bg);
        for (k, c) in txt.chars().enumerate() {
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        let (px, py) = (x + s + (k as i64 * 4 + col) * s, y + s + row as i64 * s);
                        self.fill(px, py, px + s, py + s, fg);
                    }
                }
            }
        }
    }
}

/// Colour by confidence: green when sure, amber in between, red when weak.
fn colour(score: f32) -> [u8; 3] {
    if score >= 0.7 {
        [40, 220, 60]
    } else if score >= 0.5 {
        [250, 190, 30]
    } else {
        [230, 50, 40]
    }
}

/// Tint the pixels of an instance mask with `rgb`, half transparent.
fn tint(img: &mut RgbFrame, m: &MaskCrop, rgb: [u8; 3]) {
    for y in 0..m.h {
        for x in 0..m.w {
            if m.bits[y * m.w + x] == 1 {
                let (gx, gy) = (m.x + x, m.y + y);
                if gx < img.width && gy < img.height {
                    let i = (gy * img.width + gx) * 3;
                    for (v, &t) in img.data[i..i + 3].iter_mut().zip(&rgb) {
                        *v = ((*v as u16 + t as u16) / 2) as u8;
                    }
                }
            }
        }
    }
}

/// Draw `dets` (and their masks, when given) on a copy of `frame`; save it as PNG at `out`.
/// Labels read `label:score` (label 1 = pedestrian / COCO person).
pub fn write_overlay(
    frame: &RgbFrame,
    dets: &[Detection],
    masks: &[MaskCrop],
    out: &Path,
) -> anyhow::Result<()> {
    let mut img = frame.clone();
    for (d, m) in dets.iter().zip(masks).rev() {
        tint(&mut img, m, colour(d.score));
    }
    let scale = ((frame.width.max(frame.height) / 500).max(1)) as i64;
    {
        let mut c = Canvas { f: &mut img };
        for d in dets.iter().rev() {
            let col = colour(d.score);
            c.rect(d.bbox, 2 * scale, col);
            let label = format!("{}:{:.2}", d.label, d.score);
            let ty = (d.bbox[1] as i64 - 7 * 2 * scale).max(0);
            c.text(d.bbox[0] as i64, ty, 2 * scale, &label, [0, 0, 0], col);
        }
    }
    Ok(crate::frame::write_png(out, &img)?)
}
