//! File I/O every layer shares: reads bounded by a size limit, and writes that survive a crash.
//!
//! Reads: a file is read whole only after its size is checked against the limit its format
//! documents (README "Input limits"), and the read itself stops past the limit, so a special file
//! (`/dev/zero`) or one that grows while being read cannot make us allocate without bound.
//!
//! Writes: [`write_atomic`] is the one way outputs reach the disk (calibrations, reports, JSON,
//! converted weights, plots). The bytes go to a temporary file in the target's directory, are
//! synced, renamed over the target, and the directory is synced. A crash (power loss, SIGKILL)
//! at any point leaves the target either as it was or complete: never torn, never empty.

use crate::Error;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// All of `path`, refused with a one-line error naming the file when it holds more than `max`
/// bytes; `what` names the kind of file in that error ("image", "weights file").
pub fn read_limited(path: &Path, max: u64, what: &str) -> crate::Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let too_big = |n: u64| {
        crate::err!(
            "{}: {what} is {n} bytes, over the limit of {max} bytes",
            path.display()
        )
    };
    if len > max {
        return Err(too_big(len));
    }
    // The metadata length is a hint (0 for pipes and special files); `take` is the bound.
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A whole text file under the same bound as [`read_limited`], checked to be UTF-8.
pub fn read_text_limited(path: &Path, max: u64, what: &str) -> crate::Result<String> {
    let bytes = read_limited(path, max, what)?;
    String::from_utf8(bytes).map_err(|e| {
        crate::err!(
            "{}: {what} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Replace `path` with `bytes` so that a crash leaves either the old file or the new one.
///
/// Creates the parent directory if needed. The temporary file (`.NAME.tmp-PID-N` beside the
/// target) is removed on failure; after a crash one may remain, and is never read.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// [`write_atomic`] for a writer that streams its output: `fill` writes the whole content.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> crate::Result<()> {
    let shown = path.display();
    let Some(name) = path.file_name() else {
        crate::bail!("writing {shown}: not a file path");
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| crate::err!("writing {shown}: cannot create {}: {e}", dir.display()))?;
    // Unique per process and call, so concurrent writers of one target never share a temp file.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        {
            let mut w = std::io::BufWriter::new(&mut f);
            fill(&mut w)?;
            w.flush()?;
        }
        // The data must be on disk before the rename makes it the target: otherwise a crash
        // after the rename can leave a complete name over incomplete data.
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename itself lives in the directory; sync it so the new name survives a crash.
        sync_dir(&dir)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        crate::bail!("writing {shown}: {e}");
    }
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    // Directories cannot be opened for syncing here; the rename is as durable as the OS makes it.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pedcache-fsio-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn read_limited_refuses_files_over_the_limit_by_name() {
        let d = dir("read");
        let p = d.join("big.bin");
        std::fs::write(&p, [7u8; 100]).expect("write");
        assert_eq!(
            read_limited(&p, 100, "blob").expect("at the limit").len(),
            100
        );
        let e = read_limited(&p, 99, "blob").unwrap_err().one_line();
        assert!(
            e.contains("big.bin") && e.contains("100 bytes") && e.contains("99"),
            "{e}"
        );
        // A special file with no length is still bounded by the read.
        let e = read_limited(Path::new("/dev/zero"), 1000, "blob")
            .unwrap_err()
            .one_line();
        assert!(e.contains("1001 bytes"), "{e}");
        let e = read_limited(&d.join("missing"), 10, "blob")
            .unwrap_err()
            .one_line();
        assert!(e.contains("missing") && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_files() {
        let d = dir("write");
        let p = d.join("sub/out.json");
        write_atomic(&p, b"first").expect("write");
        write_atomic(&p, b"second").expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"second");
        let names: Vec<String> = std::fs::read_dir(d.join("sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["out.json"]);
        // A failing writer leaves the old file and no temp file.
        let e = write_atomic_with(&p, |w| {
            w.write_all(b"part")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err()
        .one_line();
        assert!(e.contains("out.json") && e.contains("disk full"), "{e}");
        assert_eq!(std::fs::read(&p).expect("read"), b"second");
        assert_eq!(std::fs::read_dir(d.join("sub")).expect("list").count(), 1);
        std::fs::remove_dir_all(&d).ok();
    }
}
