//! Splitting wide (or tall) frames into square tiles, so a 2:1 street frame is not squashed into
//! the detector's square input, and merging tile detections back into frame pixels.

use crate::detect::ops::nms::nms;
use crate::detect::Detection;

/// How to tile a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileMode {
    /// Square tiles when the long side exceeds 1.5x the short side; one tile otherwise.
    Auto,
    /// Exactly this many tiles along the long side (1 = whole frame).
    Fixed(usize),
}

impl std::str::FromStr for TileMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TileMode::Auto),
            n => match n.parse::<usize>() {
                Ok(k) if (1..=8).contains(&k) => Ok(TileMode::Fixed(k)),
                _ => Err(format!("tiles must be auto or 1..8, got {s:?}")),
            },
        }
    }
}

/// A tile rectangle in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// Aspect ratio above which `Auto` tiles.
pub const TILE_ASPECT: f32 = 1.5;

/// The tiles for a `width x height` frame: squares of the short side (or wider, when a fixed
/// count needs it to cover the frame), evenly spaced along the long side, overlapping if needed.
pub fn plan(width: usize, height: usize, mode: TileMode) -> Vec<Tile> {
    let (long, short, horizontal) = if width >= height {
        (width, height, true)
    } else {
        (height, width, false)
    };
    let n = match mode {
        TileMode::Fixed(n) => n,
        TileMode::Auto if long as f32 > TILE_ASPECT * short as f32 => long.div_ceil(short),
        TileMode::Auto => 1,
    };
    if n <= 1 {
        return vec![Tile {
            x: 0,
            y: 0,
            w: width,
            h: height,
        }];
    }
    let side = short.max(long.div_ceil(n)).min(long);
    (0..n)
        .map(|i| {
            let off = ((i * (long - side)) as f64 / (n - 1) as f64).round() as usize;
            if horizontal {
                Tile {
                    x: off,
                    y: 0,
                    w: side,
                    h: height,
                }
            } else {
                Tile {
                    x: 0,
                    y: off,
                    w: width,
                    h: side,
                }
            }
        })
        .collect()
}

/// Merge per-tile detections (already in frame pixels) with cross-tile NMS.
pub fn merge(per_tile: Vec<Vec<Detection>>, iou: f32, max_out: usize) -> Vec<Detection> {
    if per_tile.len() == 1 {
        return per_tile.into_iter().flatten().collect();
    }
    let all: Vec<Detection> = per_tile.into_iter().flatten().collect();
    let boxes: Vec<[f32; 4]> = all.iter().map(|d| d.bbox).collect();
    let scores: Vec<f32> = all.iter().map(|d| d.score).collect();
    nms(&boxes, &scores, iou, f32::NEG_INFINITY, max_out)
        .into_iter()
        .map(|i| all[i].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cityscapes_frame_gets_two_square_tiles() {
        let t = plan(2048, 1024, TileMode::Auto);
        assert_eq!(
            t,
            vec![
                Tile {
                    x: 0,
                    y: 0,
                    w: 1024,
                    h: 1024
                },
                Tile {
                    x: 1024,
                    y: 0,
                    w: 1024,
                    h: 1024
                }
            ]
        );
        assert_eq!(plan(768, 576, TileMode::Auto).len(), 1);
        assert_eq!(
            plan(2048, 1024, TileMode::Fixed(1)),
            vec![Tile {
                x: 0,
                y: 0,
                w: 2048,
                h: 1024
            }]
        );
        // 3:1 -> three tiles; tall frames tile vertically; uneven sizes overlap and cover.
        assert_eq!(plan(3000, 1000, TileMode::Auto).len(), 3);
        let tall = plan(500, 1200, TileMode::Auto);
        assert_eq!(tall.len(), 3);
        assert_eq!(tall[2].y + tall[2].h, 1200);
        let odd = plan(2500, 1000, TileMode::Auto);
        assert_eq!(odd.last().map(|t| t.x + t.w), Some(2500));
    }

    #[test]
    fn merge_drops_duplicates_across_the_seam() {
        let d = |x1: f32, s: f32| Detection {
            bbox: [x1, 0.0, x1 + 100.0, 200.0],
            label: 1,
            score: s,
            mask_area: None,
        };
        let merged = merge(
            vec![vec![d(1000.0, 0.9)], vec![d(1005.0, 0.8), d(1500.0, 0.7)]],
            0.6,
            100,
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].score, 0.9);
    }
}
