//! The records of an MCAP file the replay needs (schemas, channels, messages), in file order.
//!
//! The `mcap` crate's sans-io reader does the framing: record lengths checked against a limit,
//! chunks decompressed (zstd, lz4) and their CRCs checked. The three records read here are parsed
//! by hand with every length checked against the record, because the crate's own parser reserves
//! a string's declared length before reading it (the fuzzer found a 694-byte file that made it
//! allocate 1 GB).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

/// Largest record accepted (a message, or a chunk's decompressed record): a 4K rgb8 image is
/// 25 MB. The reader holds at most one such record and one chunk's decompression state.
pub const RECORD_LIMIT: usize = 64 << 20;

/// Bytes asked of the file at a time: the reader's request is a size hint, and a corrupt length
/// must not become an allocation of that size.
const READ_STEP: usize = 64 << 10;

const SCHEMA: u8 = 0x03;
const CHANNEL: u8 = 0x04;
const MESSAGE: u8 = 0x05;

/// A channel with its schema's name.
#[derive(Debug)]
pub struct Channel {
    pub topic: String,
    pub message_encoding: String,
    /// `None`: the channel names no schema (id 0) or one not seen.
    pub schema: Option<String>,
}

/// One message.
pub struct Message {
    pub channel: Arc<Channel>,
    pub sequence: u32,
    pub data: Vec<u8>,
}

/// The messages of a recording in file order. A record that does not parse is an error for that
/// record and the reading goes on; a framing error (the crate's) ends the file.
pub struct Messages {
    file: BufReader<File>,
    reader: mcap::sans_io::LinearReader,
    known: Known,
    done: bool,
}

/// The schemas and channels seen so far.
#[derive(Default)]
struct Known {
    schemas: HashMap<u16, String>,
    channels: HashMap<u16, Arc<Channel>>,
}

impl Messages {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let options =
            mcap::sans_io::LinearReaderOptions::default().with_record_length_limit(RECORD_LIMIT);
        Ok(Self {
            file: BufReader::new(File::open(path)?),
            reader: mcap::sans_io::LinearReader::new_with_options(options),
            known: Known::default(),
            done: false,
        })
    }
}

impl Known {
    /// Take in a schema or channel record; a message record becomes a [`Message`] (its payload
    /// the only bytes copied out of the reader's buffer).
    fn take(&mut self, op: u8, body: &[u8]) -> Result<Option<Message>, String> {
        let mut r = Le(body);
        match op {
            SCHEMA => {
                let id = r.u16()?;
                let name = r.string()?;
                self.schemas.insert(id, name);
                Ok(None)
            }
            CHANNEL => {
                let id = r.u16()?;
                let schema_id = r.u16()?;
                let topic = r.string()?;
                let message_encoding = r.string()?;
                let schema = self.schemas.get(&schema_id).cloned();
                let ch = Channel {
                    topic,
                    message_encoding,
                    schema,
                };
                self.channels.insert(id, Arc::new(ch));
                Ok(None)
            }
            MESSAGE => {
                let channel_id = r.u16()?;
                let sequence = r.u32()?;
                let _log_time = r.take(8)?;
                let _publish_time = r.take(8)?;
                let channel =
                    self.channels.get(&channel_id).cloned().ok_or_else(|| {
                        format!("message {sequence} on unknown channel {channel_id}")
                    })?;
                Ok(Some(Message {
                    channel,
                    sequence,
                    data: r.0.to_vec(),
                }))
            }
            _ => Ok(None),
        }
    }
}

impl Iterator for Messages {
    type Item = Result<Message, String>;

    /// Feed the reader from the file as it asks, until a message (or an error) comes out.
    fn next(&mut self) -> Option<Self::Item> {
        use mcap::sans_io::LinearReadEvent;
        if self.done {
            return None;
        }
        loop {
            match self.reader.next_event()? {
                Ok(LinearReadEvent::ReadRequest(want)) => {
                    let buf = self.reader.insert(want.clamp(1, READ_STEP));
                    let got = loop {
                        match self.file.read(buf) {
                            Ok(n) => break n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                self.done = true;
                                return Some(Err(e.to_string()));
                            }
                        }
                    };
                    self.reader.notify_read(got);
                }
                Ok(LinearReadEvent::Record { data, opcode }) => {
                    match self.known.take(opcode, data) {
                        Ok(Some(m)) => return Some(Ok(m)),
                        Ok(None) => continue,
                        Err(e) => return Some(Err(format!("record {opcode:#04x}: {e}"))),
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.to_string()));
                }
            }
        }
    }
}

/// Little-endian fields of one record, each checked against what is left of it.
struct Le<'a>(&'a [u8]);

impl<'a> Le<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!(
                "a field of {n} bytes runs past the record's last {} bytes",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }
}
