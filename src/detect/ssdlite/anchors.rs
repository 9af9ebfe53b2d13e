//! SSD grid anchors as the TF Object Detection API's `MultipleGridAnchorGenerator` makes them for
//! this model: six square feature maps, anchors ordered (row, column, anchor), boxes as
//! normalised `[ymin, xmin, ymax, xmax]`, not clipped.

/// Feature-map sides at 300x300 input.
pub const GRID_SIDES: [usize; 6] = [19, 10, 5, 3, 2, 1];
/// Anchors per feature-map cell.
pub const ANCHORS_PER_CELL: [usize; 6] = [3, 6, 6, 6, 6, 6];
pub const NUM_ANCHORS: usize = 1917;

/// (scale, aspect ratio) pairs per layer. Scales are linear from 0.2 to 0.95 over the six layers;
/// the first layer uses the reduced set (0.1, 1), (0.2, 2), (0.2, 0.5); the others add an anchor
/// of scale sqrt(s_i * s_{i+1}) at ratio 1. The graph stores the ratio 1/3 as 0.3333.
fn layer_specs() -> Vec<Vec<(f32, f32)>> {
    let (min_s, max_s) = (0.2f32, 0.95f32);
    let n = GRID_SIDES.len();
    let scales: Vec<f32> = (0..n)
        .map(|i| min_s + (max_s - min_s) * i as f32 / (n - 1) as f32)
        .chain(std::iter::once(1.0))
        .collect();
    (0..n)
        .map(|i| {
            if i == 0 {
                vec![(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
            } else {
                let s = scales[i];
                let mut v: Vec<(f32, f32)> = [1.0, 2.0, 0.5, 3.0, 0.3333]
                    .iter()
                    .map(|&r| (s, r))
                    .collect();
                v.push(((s * scales[i + 1]).sqrt(), 1.0));
                v
            }
        })
        .collect()
}

/// All 1917 anchors.
pub fn generate() -> Vec<[f32; 4]> {
    let mut out = Vec::with_capacity(NUM_ANCHORS);
    for (side, specs) in GRID_SIDES.iter().zip(layer_specs()) {
        let stride = 1.0 / *side as f32;
        let offset = 0.5 * stride;
        for y in 0..*side {
            for x in 0..*side {
                let yc = y as f32 * stride + offset;
                let xc = x as f32 * stride + offset;
                for &(scale, ratio) in &specs {
                    let r = ratio.sqrt();
                    let (h, w) = (scale / r, scale * r);
                    out.push([yc - 0.5 * h, xc - 0.5 * w, yc + 0.5 * h, xc + 0.5 * w]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_and_layout() {
        let a = generate();
        assert_eq!(a.len(), NUM_ANCHORS);
        let per_layer: usize = GRID_SIDES
            .iter()
            .zip(ANCHORS_PER_CELL)
            .map(|(s, k)| s * s * k)
            .sum();
        assert_eq!(per_layer, NUM_ANCHORS);
        // The very last anchor is centred on the single 1x1 cell.
        let last = a[NUM_ANCHORS - 1];
        assert!(((last[0] + last[2]) / 2.0 - 0.5).abs() < 1e-6);
        // First anchor: scale 0.1 square centred at half a 19-cell.
        let c = 0.5 / 19.0;
        assert!((a[0][0] - (c - 0.05)).abs() < 1e-6 && (a[0][3] - (c + 0.05)).abs() < 1e-6);
    }
}
