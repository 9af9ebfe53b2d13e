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

/// Most tiles one frame may become. Every tile is a full `3x300x300` network input (1 MiB of
/// f32) and a forward pass, so the count is what a frame's shape can ask for; 8 covers an 8:1
/// panorama. A frame narrower than that (`Auto` on 20000x1 would ask for 20000 tiles, 21 GB) is
/// refused rather than squashed.
pub const MAX_TILES: usize = 8;

/// The tiles for a `width x height` frame: squares of the short side (or wider, when a fixed
/// count needs it to cover the frame), evenly spaced along the long side, overlapping if needed.
/// More than [`MAX_TILES`] is an error naming the frame size.
pub fn plan(width: usize, height: usize, mode: TileMode) -> crate::Result<Vec<Tile>> {
    crate::ensure!(
        width > 0 && height > 0,
        "cannot tile an empty {width}x{height} frame"
    );
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
    crate::ensure!(
        n <= MAX_TILES,
        "a {width}x{height} frame needs {n} square tiles, over the limit of {MAX_TILES} \
         (aspect ratio above {MAX_TILES}:1)"
    );
    if n <= 1 {
        return Ok(vec![Tile {
            x: 0,
            y: 0,
            w: width,
            h: height,
        }]);
    }
    let side = short.max(long.div_ceil(n)).min(long);
    Ok((0..n)
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
        .collect())
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
        let t = plan(2048, 1024, TileMode::Auto).expect("plan");
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
        assert_eq!(plan(768, 576, TileMode::Auto).expect("plan").len(), 1);
        assert_eq!(
            plan(2048, 1024, TileMode::Fixed(1)).expect("plan"),
            vec![Tile {
                x: 0,
                y: 0,
                w: 2048,
                h: 1024
            }]
        );
        // 3:1 -> three tiles; tall frames tile vertically; uneven sizes overlap and cover.
        assert_eq!(plan(3000, 1000, TileMode::Auto).expect("plan").len(), 3);
        let tall = plan(500, 1200, TileMode::Auto).expect("plan");
        assert_eq!(tall.len(), 3);
        assert_eq!(tall[2].y + tall[2].h, 1200);
        let odd = plan(2500, 1000, TileMode::Auto).expect("plan");
        assert_eq!(odd.last().map(|t| t.x + t.w), Some(2500));
    }

    #[test]
    fn tile_count_is_bounded() {
        // 8:1 is the widest frame that tiles; one pixel more asks for a ninth tile.
        assert_eq!(
            plan(800, 100, TileMode::Auto).expect("8:1").len(),
            MAX_TILES
        );
        for (w, h) in [(801, 100), (20000, 1), (1, 20000)] {
            let e = plan(w, h, TileMode::Auto).unwrap_err().one_line();
            assert!(
                e.contains(&format!("{w}x{h}")) && e.contains("limit of 8"),
                "{e}"
            );
        }
        assert!(plan(0, 10, TileMode::Auto).is_err());
        // A fixed count within the limit works on any shape.
        assert_eq!(plan(20000, 1, TileMode::Fixed(2)).expect("fixed").len(), 2);
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
