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

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
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
pub fn list_frames(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if root.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    anyhow::ensure!(root.is_dir(), "{}: no such file or folder", root.display());
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
