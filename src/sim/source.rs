//! Recorded sequences: listing the frames of sequence folders and videos in replay order,
//! selecting some of them, decoding them, and replaying them as the node's frame source
//! ([`SequenceSource`], paced at a camera rate by [`Paced`]).

use crate::frame::RgbFrame;
use crate::node::{FrameSource, InputDefect, SourceCtx, SourceItem};
use crate::sim::groundtruth::FrameTruth;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// The image topic of MCAP sources (`None`: their only image topic).
    pub topic: Option<String>,
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
    /// Image message `index` (counting that topic's messages in log order) of an MCAP file.
    Mcap(PathBuf, std::sync::Arc<str>, usize),
}

impl FrameRef {
    pub fn name(&self) -> String {
        match self {
            FrameRef::File(p) => p.display().to_string(),
            FrameRef::Video(p, i) => format!("{}#{i:06}", p.display()),
            FrameRef::Mcap(p, t, i) => format!("{}#{t}#{i:06}", p.display()),
        }
    }
    pub fn path(&self) -> &Path {
        match self {
            FrameRef::File(p) | FrameRef::Video(p, _) | FrameRef::Mcap(p, _, _) => p,
        }
    }
}

/// All frames of the sources (folders, image files, videos, MCAP recordings) after the
/// selection, in order.
pub fn select_frames(sources: &[PathBuf], sel: &Selection) -> crate::Result<Vec<FrameRef>> {
    let mut all = Vec::new();
    for s in sources {
        if crate::sim::mcap::is_mcap(s) {
            let (topic, n) = crate::sim::mcap::probe(s, sel.topic.as_deref())?;
            let topic: std::sync::Arc<str> = topic.into();
            all.extend((0..n).map(|i| FrameRef::Mcap(s.clone(), topic.clone(), i)));
        } else if s.is_file() && crate::sim::video::is_video(s) {
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

/// The video or recording a sequence is reading, and the index of its next frame: a video
/// streams through one ffmpeg process, a recording through one reader (reopened only to go
/// back).
#[derive(Default)]
struct Open {
    video: Option<(PathBuf, crate::sim::video::VideoFrames, usize)>,
    mcap: Option<(PathBuf, crate::sim::mcap::McapFrames, usize)>,
}

/// Item `i` of a streamed source held in `slot` (its path, reader, index of its next item):
/// the reader is (re)opened with `open` when the slot holds another file or has gone past `i`,
/// then advanced to `i`.
fn streamed<R: Iterator>(
    slot: &mut Option<(PathBuf, R, usize)>,
    p: &Path,
    i: usize,
    open: impl FnOnce() -> crate::Result<R>,
    missing: impl Fn() -> crate::Error,
) -> crate::Result<R::Item> {
    if slot
        .as_ref()
        .is_none_or(|(sp, _, next)| sp != p || *next > i)
    {
        *slot = Some((p.to_path_buf(), open()?, 0));
    }
    let (_, it, next) = slot
        .as_mut()
        .ok_or_else(|| crate::err!("{}", p.display()))?;
    loop {
        let item = it.next().ok_or_else(&missing)?;
        *next += 1;
        if *next > i {
            return Ok(item);
        }
    }
}

/// Decode one frame.
fn read_one(open: &mut Open, f: &FrameRef) -> crate::Result<crate::frame::RgbFrame> {
    use crate::sim::{mcap::McapFrames, video::VideoFrames};
    match f {
        FrameRef::File(p) => crate::frame::load_rgb(p),
        FrameRef::Video(p, i) => {
            let missing = || crate::err!("{}: frame {i} missing", p.display());
            streamed(&mut open.video, p, *i, || VideoFrames::open(p), missing)?.1
        }
        FrameRef::Mcap(p, topic, i) => {
            let missing = || crate::err!("{}: {topic} message {i} missing", p.display());
            let reader = || McapFrames::open(p, topic);
            Ok(streamed(&mut open.mcap, p, *i, reader, missing)??.frame)
        }
    }
}

/// Decode the frames in order; videos and recordings are streamed, one reader each.
pub fn read_frames(
    frames: &[FrameRef],
) -> impl Iterator<Item = (FrameRef, crate::Result<crate::frame::RgbFrame>)> + '_ {
    let mut open = Open::default();
    frames
        .iter()
        .map(move |f| (f.clone(), read_one(&mut open, f)))
}

/// A recorded sequence as the node's frame source: frames decoded in order, each stamped with
/// its capture time as it is pulled (before decoding, as a camera's exposure precedes its
/// readout). A frame that does not decode, or whose size differs from the sequence's (its first
/// good frame), is a bad frame with its path and cause. `truth[i]`, when given, is frame i's
/// ground truth: a defective label map travels with its (good) frame as an [`InputDefect`].
pub struct SequenceSource {
    frames: Vec<FrameRef>,
    truth: Vec<FrameTruth>,
    next: usize,
    open: Open,
    size: Option<(usize, usize)>,
    decode_ms: DecodeTimes,
}

/// Milliseconds the source spent reading and decoding each good frame, in source order; shared
/// with whoever reports on the run (the source itself moves into the node's thread).
pub type DecodeTimes = std::sync::Arc<std::sync::Mutex<Vec<f64>>>;

impl SequenceSource {
    pub fn new(frames: Vec<FrameRef>, truth: Vec<FrameTruth>) -> Self {
        Self {
            frames,
            truth,
            next: 0,
            open: Open::default(),
            size: None,
            decode_ms: DecodeTimes::default(),
        }
    }

    /// The per-frame decode times this source records as it runs.
    pub fn decode_times(&self) -> DecodeTimes {
        self.decode_ms.clone()
    }
}

impl FrameSource for SequenceSource {
    type Payload = RgbFrame;

    fn next_item(&mut self, ctx: &SourceCtx<'_>) -> crate::Result<Option<SourceItem<RgbFrame>>> {
        if ctx.is_stopped() {
            return Ok(None);
        }
        let Some(fref) = self.frames.get(self.next) else {
            return Ok(None);
        };
        let i = self.next;
        self.next += 1;
        let capture = ctx.now();
        let path = fref.name();
        let started = std::time::Instant::now();
        let read = read_one(&mut self.open, fref);
        if read.is_ok() {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            self.decode_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ms);
        }
        Ok(Some(match read {
            Err(e) => {
                let cause = e.one_line();
                // The decoder's message starts with the path; the alert carries it apart.
                let cause = cause
                    .strip_prefix(&format!("{path}: "))
                    .map(str::to_string)
                    .unwrap_or(cause);
                SourceItem::Bad { path, cause }
            }
            Ok(f) => match self.size {
                Some((w, h)) if (w, h) != (f.width, f.height) => SourceItem::Bad {
                    path,
                    cause: format!("frame is {}x{}, the sequence is {w}x{h}", f.width, f.height),
                },
                _ => {
                    self.size = Some((f.width, f.height));
                    let defects = match self.truth.get(i) {
                        Some(FrameTruth::Defect { label_map, cause }) => vec![InputDefect {
                            path: label_map.display().to_string(),
                            cause: cause.clone(),
                        }],
                        _ => Vec::new(),
                    };
                    SourceItem::Frame {
                        path,
                        capture: Some(capture),
                        payload: f,
                        defects,
                    }
                }
            },
        }))
    }
}

/// A source paced at a camera rate: item `i` is pulled at `t0 + i / fps` on the node's clock,
/// `t0` when the first is asked for. Waiting ends early when the node stops.
pub struct Paced<S> {
    inner: S,
    fps: f64,
    t0: Option<Instant>,
    i: u64,
}

impl<S> Paced<S> {
    /// `fps` must be positive and finite (a scenario holds it to [`crate::sim::scenario::FPS`]).
    pub fn new(inner: S, fps: f64) -> crate::Result<Self> {
        crate::ensure!(
            fps.is_finite() && fps > 0.0,
            "camera rate must be a positive number of frames/s, got {fps:?}"
        );
        Ok(Self {
            inner,
            fps,
            t0: None,
            i: 0,
        })
    }
}

impl<S: FrameSource> FrameSource for Paced<S> {
    type Payload = S::Payload;

    fn next_item(&mut self, ctx: &SourceCtx<'_>) -> crate::Result<Option<SourceItem<S::Payload>>> {
        let t0 = *self.t0.get_or_insert_with(|| ctx.now());
        let due = Duration::try_from_secs_f64(self.i as f64 / self.fps)
            .ok()
            .and_then(|d| t0.checked_add(d))
            .ok_or_else(|| crate::err!("frame {} at {} fps is too far ahead", self.i, self.fps))?;
        if !ctx.sleep_until(due) {
            return Ok(None);
        }
        self.i += 1;
        self.inner.next_item(ctx)
    }
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

    #[test]
    fn paced_items_are_due_at_the_camera_rate_on_the_nodes_clock() {
        use crate::node::{Clock, ManualClock, StopFlag};
        let clock = ManualClock::new();
        let t0 = clock.now();
        let stop = StopFlag::new();
        let ctx = SourceCtx {
            stop: &stop,
            clock: &clock,
        };
        let items = (0..4).map(|i| SourceItem::frame(format!("f{i}"), None, i));
        let mut src = Paced::new(crate::node::IterSource(items), 20.0).unwrap();
        let mut due = Vec::new();
        while src.next_item(&ctx).unwrap().is_some() {
            due.push((clock.now() - t0).as_millis());
        }
        assert_eq!(due, [0, 50, 100, 150]);
        stop.stop();
        let mut src = Paced::new(
            crate::node::IterSource(std::iter::repeat(SourceItem::frame("x", None, 0))),
            1.0,
        )
        .unwrap();
        assert!(
            src.next_item(&ctx).unwrap().is_none(),
            "a stopped node pulls nothing"
        );
        assert!(Paced::new(
            crate::node::IterSource(std::iter::empty::<SourceItem<u8>>()),
            0.0
        )
        .is_err());
    }
}
