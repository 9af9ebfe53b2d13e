//! Box coding for anchor-based detectors ("Faster R-CNN" coder: centre offsets scaled by the
//! anchor size, log-space sizes), with per-coordinate scale factors.

/// Decode one encoding `[ty, tx, th, tw]` against an anchor `[ymin, xmin, ymax, xmax]`, TF order.
/// `scales` divide the encodings first (SSD uses 10, 10, 5, 5).
#[inline]
pub fn decode_yxhw(rel: [f32; 4], anchor: [f32; 4], scales: [f32; 4]) -> [f32; 4] {
    let ha = anchor[2] - anchor[0];
    let wa = anchor[3] - anchor[1];
    let yca = anchor[0] + ha / 2.0;
    let xca = anchor[1] + wa / 2.0;
    let ty = rel[0] / scales[0];
    let tx = rel[1] / scales[1];
    let th = rel[2] / scales[2];
    let tw = rel[3] / scales[3];
    let w = tw.exp() * wa;
    let h = th.exp() * ha;
    let yc = ty * ha + yca;
    let xc = tx * wa + xca;
    [yc - h / 2.0, xc - w / 2.0, yc + h / 2.0, xc + w / 2.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_encoding_returns_the_anchor() {
        let a = [0.1, 0.2, 0.5, 0.4];
        let d = decode_yxhw([0.0; 4], a, [10.0, 10.0, 5.0, 5.0]);
        for (x, y) in d.iter().zip(a) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn shift_and_scale() {
        // ty = 10 -> shift by one anchor height; th = 5*ln 2 -> double the height.
        let a = [0.0, 0.0, 1.0, 1.0];
        let d = decode_yxhw([10.0, 0.0, 5.0 * 2f32.ln(), 0.0], a, [10.0, 10.0, 5.0, 5.0]);
        assert!(
            (d[0] - 0.5).abs() < 1e-5 && (d[2] - 2.5).abs() < 1e-5,
            "{d:?}"
        );
        assert!((d[1] - 0.0).abs() < 1e-6 && (d[3] - 1.0).abs() < 1e-6);
    }
}
