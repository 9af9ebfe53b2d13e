//! Ground truth from Cityscapes label maps: is a pedestrian visible in this frame?

use crate::sim::source::{cityscapes_ids, FrameRef};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Cityscapes label ids.
pub const PERSON: u8 = 24;
pub const RIDER: u8 = 25;

/// Where a frame's label map is, or where it would be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelMapPlace {
    Found(PathBuf),
    /// No file: the path it would have (in the `gtFine*` folder that mirrors the frame's folder
    /// when there is one, else beside the frame).
    Absent(PathBuf),
}

impl LabelMapPlace {
    pub fn path(&self) -> &Path {
        match self {
            LabelMapPlace::Found(p) | LabelMapPlace::Absent(p) => p,
        }
    }
}

/// Where the `*_gtFine_labelIds.png` of a `*_leftImg8bit.*` frame is or would be: beside it, or in
/// a `gtFine*` folder that mirrors the frame's `leftImg8bit*` folder
/// (`.../leftImg8bit_sequence/train/aachen/x` -> `.../gtFine*/train/aachen/x`). `None` for a frame
/// not named the Cityscapes way.
pub fn locate_label_map(frame: &Path) -> Option<LabelMapPlace> {
    let name = frame.file_name()?.to_str()?;
    let stem = name.split("_leftImg8bit").next()?;
    if stem.len() == name.len() {
        return None;
    }
    let file = format!("{stem}_gtFine_labelIds.png");
    let beside = frame.with_file_name(&file);
    if beside.exists() {
        return Some(LabelMapPlace::Found(beside));
    }
    // Walk up to the leftImg8bit* folder and look in its gtFine* siblings.
    let mirrors = (|| {
        let comps: Vec<&std::ffi::OsStr> = frame.parent()?.iter().collect();
        let k = comps
            .iter()
            .rposition(|c| c.to_str().is_some_and(|s| s.starts_with("leftImg8bit")))?;
        let base: PathBuf = comps[..k].iter().collect();
        let rest: PathBuf = comps[k + 1..].iter().collect();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let mut siblings: Vec<PathBuf> = std::fs::read_dir(&base)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("gtFine"))
            })
            .map(|g| g.join(&rest))
            .collect();
        siblings.sort();
        Some(siblings)
    })()
    .unwrap_or_default();
    if let Some(found) = mirrors.iter().map(|d| d.join(&file)).find(|p| p.exists()) {
        return Some(LabelMapPlace::Found(found));
    }
    Some(LabelMapPlace::Absent(
        mirrors
            .iter()
            .find(|d| d.is_dir())
            .map_or(beside, |d| d.join(&file)),
    ))
}

/// The `*_gtFine_labelIds.png` of a `*_leftImg8bit.*` frame, when it exists (see
/// [`locate_label_map`]).
pub fn label_map_for(frame: &Path) -> Option<PathBuf> {
    match locate_label_map(frame)? {
        LabelMapPlace::Found(p) => Some(p),
        LabelMapPlace::Absent(_) => None,
    }
}

/// Ground truth for one replayed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameTruth {
    /// No label map, and none is expected.
    Unlabelled,
    /// From its label map: at least the minimum number of person pixels?
    Pedestrian(bool),
    /// A label map is expected but missing, or it is there but unusable.
    Defect { label_map: PathBuf, cause: String },
}

/// Ground truth for every frame of a replay, read before the run (off the timed path).
///
/// When is a label map *expected*? Cityscapes ships two kinds of annotation: the `leftImg8bit`
/// package, where every frame is annotated in `gtFine`, and the `leftImg8bit_sequence` package,
/// where one frame of each 30-frame snippet (its 20th) is annotated and the other 29 have no
/// label map by design. Pseudo-labelled sets (like `../shared/data/cityscapes-seq/gtFine_pseudo`)
/// label every frame. So the rule is per sequence (`city_SSSSSS`): a sequence's ground truth is
/// *dense* when at least half of its replayed frames have a label map; in a dense sequence every
/// frame is expected to have one, and a frame without it is a defect ("label map missing").
/// In a sparse sequence (the official snippets, 1 of 30) a frame without a label map simply has
/// no ground truth. A label map that exists but does not decode, or whose size differs from its
/// frame's, is always a defect. Frames without Cityscapes names never have ground truth.
/// A defective frame still runs through the detector; it is left out of the presence figures.
pub fn index_ground_truth(frames: &[FrameRef], min_pixels: usize) -> Vec<FrameTruth> {
    use rayon::prelude::*;
    let places: Vec<Option<LabelMapPlace>> = frames
        .iter()
        .map(|f| match f {
            FrameRef::File(p) => locate_label_map(p),
            FrameRef::Video(..) | FrameRef::Mcap(..) => None,
        })
        .collect();
    // Per sequence: (frames, frames with a label map).
    let mut per_seq: HashMap<String, (usize, usize)> = HashMap::new();
    for (f, place) in frames.iter().zip(&places) {
        if let (Some((seq, _)), Some(place)) = (cityscapes_ids(f.path()), place) {
            let e = per_seq.entry(seq).or_default();
            e.0 += 1;
            e.1 += usize::from(matches!(place, LabelMapPlace::Found(_)));
        }
    }
    let dense = |f: &FrameRef| {
        cityscapes_ids(f.path())
            .and_then(|(seq, _)| per_seq.get(&seq))
            .is_some_and(|&(n, labelled)| labelled > 0 && 2 * labelled >= n)
    };
    frames
        .par_iter()
        .zip(places.par_iter())
        .map(|(f, place)| match place {
            None => FrameTruth::Unlabelled,
            Some(LabelMapPlace::Absent(p)) => {
                if dense(f) {
                    FrameTruth::Defect {
                        label_map: p.clone(),
                        cause: "label map missing (its sequence has label maps for most frames)"
                            .into(),
                    }
                } else {
                    FrameTruth::Unlabelled
                }
            }
            Some(LabelMapPlace::Found(p)) => match read_truth(p, f.path(), min_pixels) {
                Ok(t) => FrameTruth::Pedestrian(t),
                Err(cause) => FrameTruth::Defect {
                    label_map: p.clone(),
                    cause,
                },
            },
        })
        .collect()
}

/// Pedestrian present per the label map at `labels` for `frame`; on failure, the cause.
fn read_truth(labels: &Path, frame: &Path, min_pixels: usize) -> Result<bool, String> {
    // The project's decoder: the same size limits as frames, checked before decoding.
    let (lw, lh, ids) = crate::frame::load_luma(labels)
        .map_err(|e| format!("label map unreadable: {}", e.one_line()))?;
    // A frame whose header does not read is reported as a bad frame by the source.
    if let Ok((w, h)) = image::image_dimensions(frame) {
        if (lw, lh) != (w as usize, h as usize) {
            return Err(format!("label map is {lw}x{lh}, its frame is {w}x{h}"));
        }
    }
    Ok(ids.iter().filter(|&&v| v == PERSON).count() >= min_pixels)
}

/// Ground truth for a region `(x, y, w, h)` of a frame, from its Cityscapes label map when
/// there is one: at least `min_pixels` person pixels inside the region.
pub fn region_gt(
    frame: &FrameRef,
    region: (usize, usize, usize, usize),
    min_pixels: usize,
) -> Option<bool> {
    let FrameRef::File(p) = frame else {
        return None;
    };
    let labels = label_map_for(p)?;
    let (width, height, ids) = crate::frame::load_luma(&labels).ok()?;
    let (x0, y0, w, h) = region;
    let mut n = 0;
    for y in y0..(y0 + h).min(height) {
        for x in x0..(x0 + w).min(width) {
            n += usize::from(ids[y * width + x] == PERSON);
        }
    }
    Some(n >= min_pixels)
}

/// Pixels of `label` in a label-id map.
pub fn count_label(path: &Path, label: u8) -> crate::Result<usize> {
    let (_, _, ids) = crate::frame::load_luma(path)?;
    Ok(ids.iter().filter(|&&v| v == label).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32, person_pixels: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if y * w + x < person_pixels { PERSON } else { 7 }])
        })
        .save(path)
        .unwrap();
    }

    #[test]
    fn label_maps_are_expected_only_in_densely_labelled_sequences() {
        let root = std::env::temp_dir().join(format!("pedcache-gt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let frames_dir = root.join("leftImg8bit_sequence/train/c");
        let labels_dir = root.join("gtFine/train/c");
        let frame =
            |s: usize, f: usize| frames_dir.join(format!("c_{s:06}_{f:06}_leftImg8bit.png"));
        let label =
            |s: usize, f: usize| labels_dir.join(format!("c_{s:06}_{f:06}_gtFine_labelIds.png"));
        for f in 0..4 {
            png(&frame(1, f), 8, 4, 0);
            png(&frame(2, f), 8, 4, 0);
        }
        // Sequence 1, dense: frames 0, 1, 3 labelled (0 with 5 person pixels, 1 with 2), 2 missing.
        png(&label(1, 0), 8, 4, 5);
        png(&label(1, 1), 8, 4, 2);
        png(&label(1, 3), 8, 4, 0);
        // Sequence 2, sparse (one annotated frame, like official leftImg8bit_sequence), whose label
        // map has the wrong size.
        png(&label(2, 1), 4, 4, 0);
        let mut refs: Vec<FrameRef> = (0..4).map(|f| FrameRef::File(frame(1, f))).collect();
        refs.extend((0..4).map(|f| FrameRef::File(frame(2, f))));
        // A frame not named the Cityscapes way never has ground truth.
        let plain = root.join("plain.png");
        png(&plain, 8, 4, 0);
        refs.push(FrameRef::File(plain));
        let t = index_ground_truth(&refs, 3);
        assert_eq!(t[0], FrameTruth::Pedestrian(true));
        assert_eq!(t[1], FrameTruth::Pedestrian(false));
        match &t[2] {
            FrameTruth::Defect { label_map, cause } => {
                assert_eq!(label_map, &label(1, 2));
                assert!(cause.contains("missing"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t[3], FrameTruth::Pedestrian(false));
        assert_eq!(t[4], FrameTruth::Unlabelled);
        match &t[5] {
            FrameTruth::Defect { label_map, cause } => {
                assert_eq!(label_map, &label(2, 1));
                assert_eq!(cause, "label map is 4x4, its frame is 8x4");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t[6], FrameTruth::Unlabelled);
        assert_eq!(t[7], FrameTruth::Unlabelled);
        assert_eq!(t[8], FrameTruth::Unlabelled);
        // An unreadable label map is a defect too.
        std::fs::write(label(1, 3), b"not a png").unwrap();
        let t = index_ground_truth(&refs, 3);
        assert!(
            matches!(&t[3], FrameTruth::Defect { cause, .. } if cause.starts_with("label map unreadable")),
            "{:?}",
            t[3]
        );
        std::fs::remove_dir_all(&root).ok();
    }
}
