//! torchvision's `models/detection/anchor_utils.py` `AnchorGenerator`, exactly.
//!
//! * Cell anchors (`generate_anchors`): in `f32`, `h_ratio = sqrt(ratio)`, `w_ratio = 1 / h_ratio`,
//!   `ws = w_ratio * size`, `hs = h_ratio * size`, anchor `[-ws, -hs, ws, hs] / 2` rounded half to
//!   even (`torch.round`). Order: ratio-major, then size.
//! * Grid anchors (`grid_anchors`): for every feature position, row-major (y then x), every cell
//!   anchor shifted by `(x * stride_w, y * stride_h)`. The shift is an integer converted to `f32`
//!   and added to the cell anchor.
//! * Strides (`forward`): `padded_image_size // feature_size` per axis, integer division — e.g. an
//!   800x1088 batch with a 13x17 `pool` level gets strides (61, 64), not 64x64.

/// Per-level anchor sizes and aspect ratios (`height / width`), as `AnchorGenerator(sizes,
/// aspect_ratios)`.
#[derive(Clone, Debug, PartialEq)]
pub struct AnchorGenerator {
    pub sizes: Vec<Vec<f32>>,
    pub ratios: Vec<Vec<f32>>,
}

impl AnchorGenerator {
    /// `maskrcnn_resnet50_fpn`'s `_default_anchorgen()`: sizes 32..512 (one per FPN level),
    /// ratios (0.5, 1, 2) on every level.
    pub fn maskrcnn_default() -> Self {
        AnchorGenerator {
            sizes: [32.0, 64.0, 128.0, 256.0, 512.0]
                .iter()
                .map(|&s| vec![s])
                .collect(),
            ratios: vec![vec![0.5, 1.0, 2.0]; 5],
        }
    }

    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.sizes.len()
    }

    /// Anchors per feature position on `level` (`num_anchors_per_location()[level]`).
    pub fn num_anchors(&self, level: usize) -> usize {
        self.sizes[level].len() * self.ratios[level].len()
    }

    /// `cell_anchors[level]`: zero-centred `[x1, y1, x2, y2]`, ratio-major.
    pub fn cell_anchors(&self, level: usize) -> Vec<[f32; 4]> {
        let sizes = &self.sizes[level];
        let mut out = Vec::with_capacity(self.num_anchors(level));
        for &r in &self.ratios[level] {
            let h_ratio = r.sqrt();
            let w_ratio = 1.0 / h_ratio;
            for &s in sizes {
                let ws = w_ratio * s;
                let hs = h_ratio * s;
                out.push([
                    (-ws / 2.0).round_ties_even(),
                    (-hs / 2.0).round_ties_even(),
                    (ws / 2.0).round_ties_even(),
                    (hs / 2.0).round_ties_even(),
                ]);
            }
        }
        out
    }

    /// Anchors of `level` for a `grid_h x grid_w` feature map with the given strides, in
    /// torchvision's order: position-major (row, then column), then cell anchor.
    pub fn grid_anchors(
        &self,
        level: usize,
        grid_h: usize,
        grid_w: usize,
        stride_h: usize,
        stride_w: usize,
    ) -> Vec<[f32; 4]> {
        let cell = self.cell_anchors(level);
        let mut out = Vec::with_capacity(grid_h * grid_w * cell.len());
        for y in 0..grid_h {
            let sy = (y * stride_h) as f32;
            for x in 0..grid_w {
                let sx = (x * stride_w) as f32;
                for a in &cell {
                    out.push([sx + a[0], sy + a[1], sx + a[2], sy + a[3]]);
                }
            }
        }
        out
    }

    /// All anchors for one image of a batch padded to `image_size = (h, w)` with feature maps of
    /// sizes `grid_sizes` (one per level): strides by integer division, levels concatenated in
    /// order (what `AnchorGenerator.forward` returns per image).
    pub fn anchors_for(
        &self,
        image_size: (usize, usize),
        grid_sizes: &[(usize, usize)],
    ) -> Vec<[f32; 4]> {
        assert_eq!(
            grid_sizes.len(),
            self.num_levels(),
            "one grid size per level"
        );
        let mut out = Vec::new();
        for (level, &(gh, gw)) in grid_sizes.iter().enumerate() {
            let (sh, sw) = strides(image_size, (gh, gw));
            out.extend(self.grid_anchors(level, gh, gw, sh, sw));
        }
        out
    }
}

/// `image_size // grid_size` per axis (torchvision's anchor strides).
pub fn strides(image_size: (usize, usize), grid_size: (usize, usize)) -> (usize, usize) {
    (image_size.0 / grid_size.0, image_size.1 / grid_size.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ops::tv_boxes::tv_fixture::Fixture;

    #[test]
    fn cell_anchors_by_hand() {
        let g = AnchorGenerator::maskrcnn_default();
        // size 32: ratio 0.5 -> w = 32 / sqrt(0.5) = 45.25, h = 22.63 -> halves 22.6, 11.3.
        assert_eq!(
            g.cell_anchors(0),
            vec![
                [-23.0, -11.0, 23.0, 11.0],
                [-16.0, -16.0, 16.0, 16.0],
                [-11.0, -23.0, 11.0, 23.0]
            ]
        );
        // Half-to-even: a 5-wide anchor has halves 2.5 -> 2.
        let odd = AnchorGenerator {
            sizes: vec![vec![5.0]],
            ratios: vec![vec![1.0]],
        };
        assert_eq!(odd.cell_anchors(0), vec![[-2.0, -2.0, 2.0, 2.0]]);
        let a = g.grid_anchors(0, 2, 3, 4, 4);
        assert_eq!(a.len(), 18);
        assert_eq!(a[3], [4.0 - 23.0, -11.0, 4.0 + 23.0, 11.0]); // (y 0, x 1), first anchor
        assert_eq!(a[9 + 4], [4.0 - 16.0, 4.0 - 16.0, 4.0 + 16.0, 4.0 + 16.0]);
        assert_eq!(strides((800, 1088), (13, 17)), (61, 64));
    }

    #[test]
    fn matches_torchvision() {
        let fx = Fixture::load("anchors");
        let g = AnchorGenerator::maskrcnn_default();
        for level in 0..5 {
            let (want, _) = fx.f32s(&format!("cell_{level}"));
            assert_eq!(
                g.cell_anchors(level).as_flattened(),
                &want[..],
                "cell {level}"
            );
        }
        for case in fx.meta_usizes("cases") {
            let img = fx.meta_usizes(&format!("image_{case}"));
            let grids = fx.meta_usizes(&format!("grids_{case}"));
            let levels = fx.meta_usizes(&format!("levels_{case}"));
            let grids: Vec<(usize, usize)> = grids.chunks(2).map(|c| (c[0], c[1])).collect();
            for &level in &levels {
                let (gh, gw) = grids[level];
                let (sh, sw) = strides((img[0], img[1]), (gh, gw));
                let got = g.grid_anchors(level, gh, gw, sh, sw);
                let (want, _) = fx.f32s(&format!("anchors_{case}_{level}"));
                assert_eq!(got.as_flattened(), &want[..], "case {case} level {level}");
            }
            if levels.len() == grids.len() {
                let all = g.anchors_for((img[0], img[1]), &grids);
                let n: usize = levels
                    .iter()
                    .map(|&l| fx.f32s(&format!("anchors_{case}_{l}")).0.len() / 4)
                    .sum();
                assert_eq!(all.len(), n);
            }
        }
    }
}
