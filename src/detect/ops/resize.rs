//! Bilinear resizing with TensorFlow 1 `ResizeBilinear` semantics (align_corners = false,
//! half_pixel_centers = false): output pixel `d` samples input coordinate `d * in / out`, so the
//! top-left pixels line up and the image is never sampled past its last row/column.

use crate::frame::RgbFrame;

/// Per-axis sample positions: (lower index, upper index, fraction).
fn axis(in_len: usize, out_len: usize) -> Vec<(usize, usize, f32)> {
    let scale = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|d| {
            let src = d as f32 * scale;
            let lo = src.floor();
            let lo_i = (lo as usize).min(in_len - 1);
            (lo_i, (lo_i + 1).min(in_len - 1), src - lo)
        })
        .collect()
}

/// Resize an RGB frame to `out_h x out_w` and write it planar (CHW) into `dst` after mapping each
/// value with `map` (the detector's input normalisation). `dst.len()` must be `3 * out_h * out_w`.
pub fn resize_bilinear_tf1_chw(
    src: &RgbFrame,
    out_h: usize,
    out_w: usize,
    map: impl Fn(f32) -> f32,
    dst: &mut [f32],
) {
    assert_eq!(dst.len(), 3 * out_h * out_w, "resize destination size");
    let ys = axis(src.height, out_h);
    let xs = axis(src.width, out_w);
    let plane = out_h * out_w;
    let px = |y: usize, x: usize, c: usize| src.data[(y * src.width + x) * 3 + c] as f32;
    for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let tl = px(y0, x0, c);
                let tr = px(y0, x1, c);
                let bl = px(y1, x0, c);
                let br = px(y1, x1, c);
                let top = tl + (tr - tl) * fx;
                let bottom = bl + (br - bl) * fx;
                dst[c * plane + oy * out_w + ox] = map(top + (bottom - top) * fy);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_and_downscale_by_two_picks_even_pixels() {
        let data: Vec<u8> = (0..4 * 4 * 3).map(|v| (v * 5) as u8).collect();
        let f = RgbFrame::new(4, 4, data.clone()).unwrap();
        let mut out = vec![0f32; 3 * 16];
        resize_bilinear_tf1_chw(&f, 4, 4, |v| v, &mut out);
        assert_eq!(out[5], data[5 * 3] as f32);
        let mut half = vec![0f32; 3 * 4];
        resize_bilinear_tf1_chw(&f, 2, 2, |v| v, &mut half);
        // Output (1,1) samples input (2,2) exactly: no half-pixel shift.
        assert_eq!(half[3], data[(2 * 4 + 2) * 3] as f32);
    }

    #[test]
    fn upscale_interpolates_and_clamps_at_the_edge() {
        let f = RgbFrame::new(2, 1, vec![0, 0, 0, 100, 100, 100]).unwrap();
        let mut out = vec![0f32; 3 * 4];
        resize_bilinear_tf1_chw(&f, 1, 4, |v| v, &mut out);
        // x = 0, 0.5, 1.0, 1.5 -> 0, 50, 100, 100 (upper index clamped to the last column).
        assert_eq!(&out[..4], &[0.0, 50.0, 100.0, 100.0]);
    }
}
