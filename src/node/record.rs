//! `--record OUT.mcap`: the run's alerts as an MCAP file Foxglove (or the `mcap` tools) can open.
//!
//! Channels, JSON with a JSON-schema each:
//! - `/pedcache/alerts`: every alert, in the order the node published them, exactly the
//!   `--alerts` JSONL object;
//! - `/pedcache/latency`: per alert that has one, `{frame, type, latency_ms}` (capture -> alert),
//!   for a plot against the deadline.
//!
//! Log and publish times are when the alert reached the recorder, in ns since the Unix epoch.

use super::alert::{Alert, Envelope};
use super::clock::UnixTime;
use super::planner::Planner;
use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The alerts topic.
pub const ALERTS_TOPIC: &str = "/pedcache/alerts";
/// The per-alert latency topic.
pub const LATENCY_TOPIC: &str = "/pedcache/latency";

/// Schema names on the wire (the `title` of each JSON schema below).
pub(crate) const ALERT_SCHEMA_NAME: &str = "pedcache.alert/1";
pub(crate) const LATENCY_SCHEMA_NAME: &str = "pedcache.latency/1";

pub(crate) const ALERT_SCHEMA: &str = r#"{"title": "pedcache.alert/1", "type": "object",
 "properties": {"type": {"type": "string", "enum": ["EarlyAlert", "Detections", "FrameDropped", "BadFrame", "DeadlineMiss"]},
                "frame": {"type": "integer"}},
 "required": ["type", "frame"]}"#;
pub(crate) const LATENCY_SCHEMA: &str = r#"{"title": "pedcache.latency/1", "type": "object",
 "properties": {"frame": {"type": "integer"}, "type": {"type": "string"}, "latency_ms": {"type": "number"}},
 "required": ["frame", "type", "latency_ms"]}"#;

/// A planner that writes every alert into an MCAP file.
pub struct McapRecorder {
    path: PathBuf,
    writer: Option<mcap::Writer<BufWriter<std::fs::File>>>,
    alerts: u16,
    latency: u16,
    seq: u32,
    wall: UnixTime,
}

impl McapRecorder {
    /// Create `path` (its folder too) and the file's header, schemas and channels.
    pub fn create(path: &Path) -> crate::Result<Self> {
        let ctx = |e: &dyn std::fmt::Display| crate::err!("{}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ctx(&e))?;
        }
        let file = std::fs::File::create(path).map_err(|e| ctx(&e))?;
        let mut w = mcap::Writer::new(BufWriter::new(file)).map_err(|e| ctx(&e))?;
        let none = BTreeMap::new();
        let s = w
            .add_schema(ALERT_SCHEMA_NAME, "jsonschema", ALERT_SCHEMA.as_bytes())
            .map_err(|e| ctx(&e))?;
        let alerts = w
            .add_channel(s, ALERTS_TOPIC, "json", &none)
            .map_err(|e| ctx(&e))?;
        let s = w
            .add_schema(LATENCY_SCHEMA_NAME, "jsonschema", LATENCY_SCHEMA.as_bytes())
            .map_err(|e| ctx(&e))?;
        let latency = w
            .add_channel(s, LATENCY_TOPIC, "json", &none)
            .map_err(|e| ctx(&e))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(w),
            alerts,
            latency,
            seq: 0,
            wall: UnixTime::anchor(),
        })
    }
}

/// The `/pedcache/latency` message of an alert that has a latency (EarlyAlert, Detections).
pub(crate) fn latency_message(a: &Alert) -> crate::Result<Option<serde_json::Value>> {
    let ms = match a {
        Alert::EarlyAlert { latency_ms, .. } | Alert::Detections { latency_ms, .. } => *latency_ms,
        _ => return Ok(None),
    };
    let kind = serde_json::to_value(a)?
        .get("type")
        .cloned()
        .unwrap_or_default();
    Ok(Some(
        serde_json::json!({"frame": a.frame(), "type": kind, "latency_ms": ms}),
    ))
}

impl Planner for McapRecorder {
    fn on_alert(&mut self, msg: &Envelope, received: Instant) -> crate::Result<()> {
        let time = self.wall.ns(received);
        let (alerts, latency, seq) = (self.alerts, self.latency, self.seq);
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let ctx = |e: mcap::McapError| crate::err!("{}: {e}", self.path.display());
        let header = |channel_id| mcap::records::MessageHeader {
            channel_id,
            sequence: seq,
            log_time: time,
            publish_time: time,
        };
        w.write_to_known_channel(&header(alerts), &serde_json::to_vec(&msg.alert)?)
            .map_err(ctx)?;
        if let Some(body) = latency_message(&msg.alert)? {
            w.write_to_known_channel(&header(latency), &serde_json::to_vec(&body)?)
                .map_err(ctx)?;
        }
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        let ctx = |e: &dyn std::fmt::Display| crate::err!("{}: {e}", self.path.display());
        if let Some(mut w) = self.writer.take() {
            w.finish().map_err(|e| ctx(&e))?;
            let mut out = w.into_inner();
            std::io::Write::flush(&mut out).map_err(|e| ctx(&e))?;
            out.get_ref().sync_all().map_err(|e| ctx(&e))?;
        }
        Ok(())
    }

    fn stage(&self) -> &'static str {
        "mcap-recorder"
    }
}
