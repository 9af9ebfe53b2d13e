//! Video files as frame sources: ffmpeg decodes to raw RGB on a pipe and frames are read one at
//! a time, so a long video is never decoded up front.
//!
//! What ffprobe reports is input: the frame size is held to the image limits
//! ([`crate::frame::check_dimensions`]) and the frame count to [`MAX_VIDEO_FRAMES`] before
//! anything is allocated from them. The raw stream reader ([`RawFrames`]) takes any byte source,
//! so it can be tested and fuzzed without ffmpeg.

use crate::frame::RgbFrame;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub fn is_video(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("avi" | "mp4" | "mkv" | "mov" | "webm" | "m4v")
    )
}

/// Most frames one video may have: a replay lists every frame up front, so the count ffprobe
/// reports is an allocation. A million frames is over 9 hours at 30 fps.
pub const MAX_VIDEO_FRAMES: usize = 1_000_000;

/// Width, height and frame count (ffprobe), within the image and frame-count limits.
pub fn probe(path: &Path) -> crate::Result<(usize, usize, usize)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=width,height,nb_read_packets",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .map_err(|e| {
            crate::err!(
                "{}: running ffprobe: {e} (install ffmpeg: scripts/deps.sh)",
                path.display()
            )
        })?;
    crate::ensure!(
        out.status.success(),
        "{}: not a readable video ({})",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<usize> = text
        .trim()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    crate::ensure!(
        v.len() == 3 && v[0] > 0 && v[1] > 0,
        "{}: ffprobe gave no video size ({text:?})",
        path.display()
    );
    check_probe(v[0], v[1], v[2])
        .map_err(|e| crate::err!("{}: {}", path.display(), e.one_line()))?;
    Ok((v[0], v[1], v[2]))
}

/// The limits on what ffprobe reported.
fn check_probe(width: usize, height: usize, frames: usize) -> crate::Result<()> {
    crate::frame::check_dimensions(width as u64, height as u64)
        .map_err(|e| crate::err!("video frames: {}", e.one_line()))?;
    crate::ensure!(
        frames <= MAX_VIDEO_FRAMES,
        "video has {frames} frames, over the limit of {MAX_VIDEO_FRAMES}"
    );
    Ok(())
}

/// Frames of a raw `rgb24` stream (what `ffmpeg -f rawvideo -pix_fmt rgb24 -` writes): each frame
/// is exactly `width * height * 3` bytes, one after the other. The stream ending on a frame
/// boundary ends the frames; ending inside one is a truncated frame, reported once.
pub struct RawFrames<R> {
    reader: Option<R>,
    label: String,
    width: usize,
    height: usize,
    index: usize,
}

impl<R: std::io::Read> RawFrames<R> {
    /// Frames of `width x height` from `reader`; `label` names the stream in frame names
    /// (`label#000012`) and errors. The size must be within the image limits.
    pub fn new(reader: R, width: usize, height: usize, label: &str) -> crate::Result<Self> {
        crate::frame::check_dimensions(width as u64, height as u64)
            .map_err(|e| crate::err!("{label}: video frames: {}", e.one_line()))?;
        Ok(Self {
            reader: Some(reader),
            label: label.to_string(),
            width,
            height,
            index: 0,
        })
    }

    /// Frames read so far.
    pub fn frames_read(&self) -> usize {
        self.index
    }
}

impl<R: std::io::Read> Iterator for RawFrames<R> {
    type Item = (String, crate::Result<RgbFrame>);

    fn next(&mut self) -> Option<Self::Item> {
        let reader = self.reader.as_mut()?;
        let name = format!("{}#{:06}", self.label, self.index);
        let need = self.width * self.height * 3;
        let mut buf = vec![0u8; need];
        let mut got = 0;
        while got < need {
            match reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.reader = None;
                    return Some((
                        name.clone(),
                        Err(crate::err!("{name}: reading the decoded stream: {e}")),
                    ));
                }
            }
        }
        if got == 0 {
            self.reader = None;
            return None;
        }
        if got < need {
            self.reader = None;
            return Some((
                name.clone(),
                Err(crate::err!(
                    "{name}: truncated frame ({got} of {need} bytes; the decoder stopped early)"
                )),
            ));
        }
        self.index += 1;
        Some((name, RgbFrame::new(self.width, self.height, buf)))
    }
}

/// Frames of a video, decoded lazily.
pub struct VideoFrames {
    child: Child,
    frames: RawFrames<std::process::ChildStdout>,
}

impl VideoFrames {
    pub fn open(path: &Path) -> crate::Result<Self> {
        let (width, height, _) = probe(path)?;
        let mut child = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| crate::err!("{}: running ffmpeg: {e}", path.display()))?;
        let stdout = match child.stdout.take() {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                crate::bail!("{}: ffmpeg has no output pipe", path.display());
            }
        };
        let frames = RawFrames::new(stdout, width, height, &path.display().to_string())?;
        Ok(Self { child, frames })
    }
}

impl Iterator for VideoFrames {
    type Item = (String, crate::Result<RgbFrame>);

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.frames.next();
        if item.is_none() {
            let _ = self.child.wait();
        }
        item
    }
}

impl Drop for VideoFrames {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_stream_frames_and_a_truncated_tail() {
        // Three 2x1 frames (6 bytes each), then 4 bytes of a fourth.
        let bytes: Vec<u8> = (0..22).collect();
        let mut it = RawFrames::new(&bytes[..], 2, 1, "v.avi").expect("reader");
        for k in 0..3 {
            let (name, f) = it.next().expect("frame");
            assert_eq!(name, format!("v.avi#{k:06}"));
            assert_eq!(
                f.expect("decoded").data,
                (6 * k..6 * k + 6).collect::<Vec<u8>>()
            );
        }
        let (_, last) = it.next().expect("truncated frame reported");
        let e = last.unwrap_err().one_line();
        assert!(
            e.contains("v.avi#000003") && e.contains("4 of 6 bytes"),
            "{e}"
        );
        assert!(it.next().is_none());
        assert_eq!(it.frames_read(), 3);
        // Ending on a frame boundary ends cleanly.
        let mut it = RawFrames::new(&bytes[..12], 2, 1, "v").expect("reader");
        assert_eq!(it.by_ref().count(), 2);
    }

    #[test]
    fn probed_sizes_and_counts_are_bounded() {
        assert!(check_probe(1920, 1080, 10_000).is_ok());
        let e = check_probe(20000, 1, 10).unwrap_err().one_line();
        assert!(e.contains("20000x1") && e.contains("16384"), "{e}");
        let e = check_probe(16384, 16384, 10).unwrap_err().one_line();
        assert!(e.contains("pixels"), "{e}");
        let e = check_probe(640, 480, MAX_VIDEO_FRAMES + 1)
            .unwrap_err()
            .one_line();
        assert!(e.contains("frames") && e.contains("limit"), "{e}");
        assert!(RawFrames::new(&[][..], 1 << 20, 1, "v").is_err());
    }
}
