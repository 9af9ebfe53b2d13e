//! Video files as frame sources: ffmpeg decodes to raw RGB on a pipe and frames are read one at
//! a time, so a long video is never decoded up front.

use crate::frame::RgbFrame;
use std::io::Read;
use std::path::{Path, PathBuf};
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

/// Width, height and frame count (ffprobe).
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
    Ok((v[0], v[1], v[2]))
}

/// Frames of a video, decoded lazily.
pub struct VideoFrames {
    path: PathBuf,
    width: usize,
    height: usize,
    child: Option<Child>,
    index: usize,
}

impl VideoFrames {
    pub fn open(path: &Path) -> crate::Result<Self> {
        let (width, height, _) = probe(path)?;
        let child = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| crate::err!("{}: running ffmpeg: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            width,
            height,
            child: Some(child),
            index: 0,
        })
    }
}

impl Iterator for VideoFrames {
    type Item = (String, crate::Result<RgbFrame>);

    fn next(&mut self) -> Option<Self::Item> {
        let child = self.child.as_mut()?;
        let stdout = child.stdout.as_mut()?;
        let mut buf = vec![0u8; self.width * self.height * 3];
        let name = format!("{}#{:06}", self.path.display(), self.index);
        match stdout.read_exact(&mut buf) {
            Ok(()) => {
                self.index += 1;
                Some((name, RgbFrame::new(self.width, self.height, buf)))
            }
            Err(_) => {
                let _ = child.wait();
                self.child = None;
                None
            }
        }
    }
}

impl Drop for VideoFrames {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
