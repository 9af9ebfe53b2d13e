//! Listing the frames of a sequence folder in replay order.

use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> crate::Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| crate::err!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| crate::err!("reading {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Frames under `root`, recursively. If any file follows the Cityscapes naming
/// (`*_leftImg8bit.png|jpg`), only those are taken (label maps and other files beside them are
/// not frames); otherwise every PNG/JPEG is. Sorted by file name, which for Cityscapes names
/// (`city_SSSSSS_FFFFFF_leftImg8bit`) is city, sequence, frame order.
pub fn list_frames(root: &Path) -> crate::Result<Vec<PathBuf>> {
    if root.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    crate::ensure!(root.is_dir(), "{}: no such file or folder", root.display());
    let mut all = Vec::new();
    walk(root, &mut all)?;
    let cityscapes: Vec<PathBuf> = all
        .iter()
        .filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.ends_with("_leftImg8bit"))
        })
        .cloned()
        .collect();
    let mut frames = if cityscapes.is_empty() {
        all
    } else {
        cityscapes
    };
    frames.sort_by(|a, b| a.file_name().cmp(&b.file_name()).then_with(|| a.cmp(b)));
    Ok(frames)
}

/// `city_SSSSSS_FFFFFF_leftImg8bit.*` -> ("city_SSSSSS", FFFFFF).
pub fn cityscapes_ids(p: &Path) -> Option<(String, usize)> {
    let stem = p.file_name()?.to_str()?.split("_leftImg8bit").next()?;
    let (seq, frame) = stem.rsplit_once('_')?;
    Some((seq.to_string(), frame.parse().ok()?))
}

/// Which frames of the listed sources to use.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Fraction range of the whole list, e.g. (0.0, 0.6).
    pub part: Option<(f64, f64)>,
    /// Frame-number range within each Cityscapes sequence, half-open.
    pub seq_frames: Option<(usize, usize)>,
    /// Only these sequences (Cityscapes `city_SSSSSS`), when not empty.
    pub only_seq: Vec<String>,
    pub not_seq: Vec<String>,
}

/// Parse "A..B" into a pair.
pub fn parse_range<T: std::str::FromStr>(s: &str) -> crate::Result<(T, T)> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| crate::err!("expected a range A..B, got {s:?}"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<T>()
            .map_err(|_| crate::err!("bad number {v:?} in range {s:?}"))
    };
    Ok((p(a)?, p(b)?))
}

/// One frame to read: a file, or frame `index` of a video.
#[derive(Clone, Debug, PartialEq)]
pub enum FrameRef {
    File(PathBuf),
    Video(PathBuf, usize),
}

impl FrameRef {
    pub fn name(&self) -> String {
        match self {
            FrameRef::File(p) => p.display().to_string(),
            FrameRef::Video(p, i) => format!("{}#{i:06}", p.display()),
        }
    }
    pub fn path(&self) -> &Path {
        match self {
            FrameRef::File(p) | FrameRef::Video(p, _) => p,
        }
    }
}

/// All frames of the sources (folders, image files, videos) after the selection, in order.
pub fn select_frames(sources: &[PathBuf], sel: &Selection) -> crate::Result<Vec<FrameRef>> {
    let mut all = Vec::new();
    for s in sources {
        if s.is_file() && crate::sim::video::is_video(s) {
            let (_, _, n) = crate::sim::video::probe(s)?;
            all.extend((0..n).map(|i| FrameRef::Video(s.clone(), i)));
        } else {
            all.extend(list_frames(s)?.into_iter().map(FrameRef::File));
        }
    }
    let n = all.len();
    let mut out = Vec::new();
    for (i, f) in all.into_iter().enumerate() {
        if let Some((a, b)) = sel.part {
            let pos = i as f64 / n.max(1) as f64;
            if pos < a || pos >= b {
                continue;
            }
        }
        let ids = cityscapes_ids(f.path());
        if let (Some((lo, hi)), Some((_, fr))) = (sel.seq_frames, ids.as_ref()) {
            if *fr < lo || *fr >= hi {
                continue;
            }
        }
        if let Some((seq, _)) = ids.as_ref() {
            if (!sel.only_seq.is_empty() && !sel.only_seq.contains(seq))
                || sel.not_seq.contains(seq)
            {
                continue;
            }
        }
        out.push(f);
    }
    Ok(out)
}

/// Decode the frames in order; videos are streamed through one ffmpeg process each.
pub fn read_frames(
    frames: &[FrameRef],
) -> impl Iterator<Item = (FrameRef, crate::Result<crate::frame::RgbFrame>)> + '_ {
    let mut video: Option<(PathBuf, crate::sim::video::VideoFrames, usize)> = None;
    frames.iter().map(move |f| {
        let r = match f {
            FrameRef::File(p) => crate::frame::load_rgb(p),
            FrameRef::Video(p, i) => (|| {
                if video
                    .as_ref()
                    .is_none_or(|(vp, _, next)| vp != p || *next > *i)
                {
                    video = Some((p.clone(), crate::sim::video::VideoFrames::open(p)?, 0));
                }
                let (_, it, next) = video.as_mut().ok_or_else(|| crate::err!("video"))?;
                loop {
                    let (_, frame) = it
                        .next()
                        .ok_or_else(|| crate::err!("{}: frame {i} missing", p.display()))?;
                    *next += 1;
                    if *next > *i {
                        return frame;
                    }
                }
            })(),
        };
        (f.clone(), r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cityscapes_names_win_and_sort_by_sequence_then_frame() {
        let dir = std::env::temp_dir().join(format!("pedcache-src-{}", std::process::id()));
        let sub = dir.join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        for n in [
            "x_000002_000001_leftImg8bit.png",
            "x_000001_000010_leftImg8bit.jpg",
            "x_000001_000002_leftImg8bit.png",
            "x_000001_000002_gtFine_labelIds.png",
            "notes.txt",
        ] {
            std::fs::write(sub.join(n), b"").unwrap();
        }
        let names: Vec<String> = list_frames(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "x_000001_000002_leftImg8bit.png",
                "x_000001_000010_leftImg8bit.jpg",
                "x_000002_000001_leftImg8bit.png"
            ]
        );
        std::fs::remove_dir_all(&dir).ok();
        assert!(list_frames(&dir).is_err());
    }
}
