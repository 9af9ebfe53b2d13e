//! ROS 2 recordings in MCAP as a frame source: `sensor_msgs/msg/CompressedImage` (JPEG, PNG) and
//! `sensor_msgs/msg/Image` (rgb8, bgr8) messages in CDR, read in log order with the `mcap` crate.
//!
//! A message that does not decode (bad CDR, a length past its end, an unknown pixel encoding, an
//! image that does not decode) is an error for that frame only; the recording goes on. An MCAP
//! record that does not parse ends the readable part of the file: the frames after it are bad.

use crate::frame::{check_dimensions, decode_rgb, RgbFrame};
mod records;

pub use records::RECORD_LIMIT;
use records::{Channel, Messages};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The ROS 2 image message types read, by their MCAP schema name.
const COMPRESSED: &str = "sensor_msgs/msg/CompressedImage";
const RAW: &str = "sensor_msgs/msg/Image";

pub fn is_mcap(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("mcap"))
}

fn open(path: &Path) -> crate::Result<Messages> {
    Messages::open(path).map_err(|e| crate::err!("{}: {e}", path.display()))
}

fn is_image_schema(ch: &Channel) -> bool {
    ch.message_encoding == "cdr" && matches!(ch.schema.as_deref(), Some(COMPRESSED | RAW))
}

/// The image topic to replay and its message count. Without `topic`, the recording must have
/// exactly one image topic. Reads the whole file once (log order is what the replay follows).
pub fn probe(path: &Path, topic: Option<&str>) -> crate::Result<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut others: BTreeMap<String, String> = BTreeMap::new();
    let mut first_error = None;
    for m in open(path)? {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        if is_image_schema(&m.channel) {
            *counts.entry(m.channel.topic.clone()).or_default() += 1;
        } else {
            let what = m.channel.schema.as_deref().unwrap_or("no schema");
            others
                .entry(m.channel.topic.clone())
                .or_insert_with(|| format!("{what}, {}", m.channel.message_encoding));
        }
    }
    if let Some(e) = first_error {
        if counts.is_empty() {
            return Err(crate::err!("{}: {e}", path.display()));
        }
        log::warn!(
            "{}: {e}; replaying the image messages it holds",
            path.display()
        );
    }
    let listed = |m: &BTreeMap<String, usize>| m.keys().cloned().collect::<Vec<_>>().join(", ");
    match topic {
        Some(t) => match counts.get(t) {
            Some(&n) => Ok((t.to_string(), n)),
            None if others.contains_key(t) => Err(crate::err!(
                "{}: topic {t} is not an image topic ({}); image topics: [{}]",
                path.display(),
                others[t],
                listed(&counts)
            )),
            None => Err(crate::err!(
                "{}: no topic {t}; image topics: [{}]",
                path.display(),
                listed(&counts)
            )),
        },
        None => match counts.len() {
            1 => Ok(counts.into_iter().next().unwrap_or_default()),
            0 => Err(crate::err!(
                "{}: no {COMPRESSED} or {RAW} topic in CDR",
                path.display()
            )),
            _ => Err(crate::err!(
                "{}: {} image topics, choose one with --topic: [{}]",
                path.display(),
                counts.len(),
                listed(&counts)
            )),
        },
    }
}

/// The image messages of one topic, decoded in log order. Records that do not parse are skipped
/// here as [`probe`] skips them, so the n-th item is the n-th message it counted.
pub struct McapFrames {
    path: PathBuf,
    topic: String,
    reader: Messages,
}

/// One image message: its header stamp (ns since the epoch) and the frame.
#[derive(Debug)]
pub struct McapImage {
    pub stamp_ns: u64,
    pub frame: RgbFrame,
}

impl McapFrames {
    pub fn open(path: &Path, topic: &str) -> crate::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            topic: topic.to_string(),
            reader: open(path)?,
        })
    }
}

impl Iterator for McapFrames {
    type Item = crate::Result<McapImage>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.reader.next()? {
                Err(e) => log::debug!("{}: skipped: {e}", self.path.display()),
                Ok(m) if m.channel.topic == self.topic && is_image_schema(&m.channel) => {
                    let schema = m.channel.schema.as_deref().unwrap_or("");
                    return Some(decode_message(schema, &m.data).map_err(|e| {
                        crate::err!(
                            "{}: {} message {}: {e}",
                            self.path.display(),
                            self.topic,
                            m.sequence
                        )
                    }));
                }
                Ok(_) => continue,
            }
        }
    }
}

/// A CDR message body: the 4-byte encapsulation header, then fields aligned to their size
/// from the end of that header.
struct Cdr<'a> {
    body: &'a [u8],
    pos: usize,
    little: bool,
}

impl<'a> Cdr<'a> {
    fn new(data: &'a [u8]) -> crate::Result<Self> {
        crate::ensure!(data.len() >= 4, "{} bytes, no CDR header", data.len());
        let little = match (data[0], data[1]) {
            (0, 0) => false,
            (0, 1) => true,
            (a, b) => crate::bail!("CDR encapsulation {a:#04x} {b:#04x} is not plain CDR"),
        };
        Ok(Self {
            body: &data[4..],
            pos: 0,
            little,
        })
    }

    fn take(&mut self, n: usize, align: usize) -> crate::Result<&'a [u8]> {
        let start = self.pos.next_multiple_of(align);
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.body.len())
            .ok_or_else(|| {
                crate::err!(
                    "a field of {n} bytes at {start} runs past the message's {} bytes",
                    self.body.len()
                )
            })?;
        self.pos = end;
        Ok(&self.body[start..end])
    }

    fn u32(&mut self) -> crate::Result<u32> {
        let b: [u8; 4] = self
            .take(4, 4)?
            .try_into()
            .map_err(|_| crate::err!("u32"))?;
        Ok(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn u8(&mut self) -> crate::Result<u8> {
        Ok(self.take(1, 1)?[0])
    }

    /// A sequence of bytes: a u32 length, then the bytes.
    fn bytes(&mut self) -> crate::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n, 1)
    }

    /// A string: its length counts the terminating NUL.
    fn string(&mut self) -> crate::Result<&'a str> {
        let b = self.bytes()?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        std::str::from_utf8(b).map_err(|_| crate::err!("a string field is not UTF-8"))
    }

    /// `std_msgs/Header`: stamp (sec: int32, nanosec: uint32) and frame_id; the stamp in ns.
    fn header(&mut self) -> crate::Result<u64> {
        let sec = self.u32()? as i32;
        let nanosec = self.u32()?;
        let _frame_id = self.string()?;
        crate::ensure!(sec >= 0, "header stamp {sec} s is before the epoch");
        Ok(sec as u64 * 1_000_000_000 + u64::from(nanosec))
    }
}

/// Decode one image message of schema `schema` (see the module doc).
pub fn decode_message(schema: &str, data: &[u8]) -> crate::Result<McapImage> {
    let mut c = Cdr::new(data)?;
    let stamp_ns = c.header()?;
    let frame = match schema {
        COMPRESSED => {
            let format = c.string()?.to_string();
            let bytes = c.bytes()?;
            decode_rgb(bytes).map_err(|e| crate::err!("format {format:?}: {}", e.one_line()))?
        }
        RAW => {
            let height = c.u32()? as usize;
            let width = c.u32()? as usize;
            let encoding = c.string()?.to_string();
            let _is_bigendian = c.u8()?;
            let step = c.u32()? as usize;
            let data = c.bytes()?;
            check_dimensions(width as u64, height as u64)?;
            let bgr = match encoding.as_str() {
                "rgb8" => false,
                "bgr8" => true,
                other => crate::bail!("pixel encoding {other:?} (rgb8 and bgr8 are read)"),
            };
            crate::ensure!(
                step >= width * 3,
                "step {step} is below width {width} x 3 bytes"
            );
            crate::ensure!(
                data.len() >= step * height.saturating_sub(1) + width * 3 || height == 0,
                "{} data bytes for {height} rows of step {step}",
                data.len()
            );
            let mut rgb = Vec::with_capacity(width * height * 3);
            for row in 0..height {
                let line = &data[row * step..row * step + width * 3];
                if bgr {
                    for px in line.chunks_exact(3) {
                        rgb.extend_from_slice(&[px[2], px[1], px[0]]);
                    }
                } else {
                    rgb.extend_from_slice(line);
                }
            }
            RgbFrame::new(width, height, rgb)?
        }
        other => crate::bail!("schema {other} is not an image message"),
    };
    Ok(McapImage { stamp_ns, frame })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CDR little-endian body built field by field, aligned as the spec says.
    struct Enc(Vec<u8>);
    impl Enc {
        fn new() -> Self {
            Enc(vec![0, 1, 0, 0])
        }
        fn align(&mut self, n: usize) {
            while !(self.0.len() - 4).is_multiple_of(n) {
                self.0.push(0);
            }
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.align(4);
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn string(&mut self, s: &str) -> &mut Self {
            self.u32(s.len() as u32 + 1);
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn bytes(&mut self, b: &[u8]) -> &mut Self {
            self.u32(b.len() as u32);
            self.0.extend_from_slice(b);
            self
        }
    }

    fn raw(encoding: &str, step: u32, data: &[u8]) -> Vec<u8> {
        let mut e = Enc::new();
        e.u32(7).u32(5).string("cam").u32(2).u32(2).string(encoding);
        e.0.push(0);
        e.u32(step).bytes(data);
        e.0
    }

    #[test]
    fn raw_bgr8_rows_with_padding_come_out_rgb() {
        // 2x2, step 8 (2 padding bytes per row).
        let data = [1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0];
        let m = decode_message(RAW, &raw("bgr8", 8, &data)).unwrap();
        assert_eq!(m.stamp_ns, 7_000_000_005);
        assert_eq!(m.frame.data, [3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]);
        let m = decode_message(RAW, &raw("rgb8", 6, &data[..12])).unwrap();
        assert_eq!(m.frame.data, data[..12]);
    }

    #[test]
    fn bad_messages_are_one_line_errors() {
        let short = decode_message(RAW, &raw("rgb8", 6, &[0; 11])).unwrap_err();
        assert!(short.to_string().contains("11 data bytes"), "{short}");
        let enc = decode_message(RAW, &raw("mono16", 6, &[0; 12])).unwrap_err();
        assert!(enc.to_string().contains("mono16"), "{enc}");
        // An inflated length field: no allocation, an error naming the overrun.
        let mut m = raw("rgb8", 6, &[0; 12]);
        let n = m.len();
        m[n - 16..n - 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = decode_message(RAW, &m).unwrap_err();
        assert!(e.to_string().contains("runs past"), "{e}");
        for cut in 0..m.len() {
            assert!(decode_message(RAW, &m[..cut]).is_err(), "cut at {cut}");
        }
        let mut c = Enc::new();
        c.u32(1)
            .u32(0)
            .string("cam")
            .string("jpeg")
            .bytes(b"not a jpeg");
        let e = decode_message(COMPRESSED, &c.0).unwrap_err();
        assert!(e.to_string().contains("format \"jpeg\""), "{e}");
    }
}
