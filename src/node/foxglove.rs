//! `--foxglove [HOST:PORT]`: the run, live in the Foxglove app, over the Foxglove WebSocket
//! protocol (the `foxglove` SDK's server).
//!
//! Channels:
//! - `/pedcache/alerts`: every alert as JSON (JSON-schema `pedcache.alert/1`), the `--alerts` object;
//! - `/pedcache/latency`: `{frame, type, latency_ms}` per `EarlyAlert`/`Detections`, for a plot
//!   against the deadline;
//! - `/pedcache/annotations`: `foxglove.ImageAnnotations` in frame pixels: each detection's box
//!   (a closed outline) with its score, and an early alert's exit and confidence as text.
//!
//! Serving never blocks perception: `log` only queues a message per connected client, and a slow
//! client's queue drops its oldest messages (the SDK's bounded backlog, sized here).

use super::alert::{Alert, Envelope};
use super::clock::UnixTime;
use super::planner::Planner;
use foxglove::messages::{
    points_annotation, Color, ImageAnnotations, Point2, PointsAnnotation, TextAnnotation, Timestamp,
};
use foxglove::{ChannelBuilder, PartialMetadata, RawChannel, Schema, WebSocketServerHandle};
use std::sync::Arc;
use std::time::Instant;

/// Where `--foxglove` serves when given no address (the Foxglove app's default connection).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8765";

/// Messages queued per client before its oldest are dropped.
const BACKLOG: usize = 1024;

/// A planner that serves the run's alerts, latencies and annotations to Foxglove clients.
pub struct FoxgloveLive {
    server: Option<WebSocketServerHandle>,
    alerts: Arc<RawChannel>,
    latency: Arc<RawChannel>,
    annotations: foxglove::Channel<ImageAnnotations>,
    wall: UnixTime,
    addr: String,
}

impl FoxgloveLive {
    /// Start serving on `addr` (`HOST:PORT`; port 0 picks a free one, see [`Self::port`]).
    pub fn start(addr: &str) -> crate::Result<Self> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                crate::err!("--foxglove {addr:?}: expected HOST:PORT, e.g. {DEFAULT_ADDR}")
            })?;
        let ctx = |e: foxglove::FoxgloveError| crate::err!("foxglove server on {addr}: {e}");
        let json = |name: &str, schema_name: &str, schema: &'static str| {
            ChannelBuilder::new(name)
                .message_encoding("json")
                .schema(Schema::new(schema_name, "jsonschema", schema.as_bytes()))
                .build_raw()
        };
        use super::record::{
            ALERTS_TOPIC, ALERT_SCHEMA, ALERT_SCHEMA_NAME, LATENCY_SCHEMA, LATENCY_SCHEMA_NAME,
            LATENCY_TOPIC,
        };
        let alerts = json(ALERTS_TOPIC, ALERT_SCHEMA_NAME, ALERT_SCHEMA).map_err(ctx)?;
        let latency = json(LATENCY_TOPIC, LATENCY_SCHEMA_NAME, LATENCY_SCHEMA).map_err(ctx)?;
        let annotations = ChannelBuilder::new("/pedcache/annotations").build::<ImageAnnotations>();
        let server = foxglove::WebSocketServer::new()
            .name("pedcache")
            .bind(host, port)
            .message_backlog_size(BACKLOG)
            .start_blocking()
            .map_err(ctx)?;
        Ok(Self {
            server: Some(server),
            alerts,
            latency,
            annotations,
            wall: UnixTime::anchor(),
            addr: addr.to_string(),
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.server.as_ref().map_or(0, WebSocketServerHandle::port)
    }
}

const BOX: Color = Color {
    r: 1.0,
    g: 0.25,
    b: 0.1,
    a: 1.0,
};
const TEXT: Color = Color {
    r: 1.0,
    g: 1.0,
    b: 1.0,
    a: 1.0,
};

/// What an alert draws on its frame (None for alerts about frames without a result).
fn annotations_of(alert: &Alert, stamp: Timestamp) -> Option<ImageAnnotations> {
    let text = |x: f64, y: f64, text: String| TextAnnotation {
        timestamp: Some(stamp),
        position: Some(Point2 { x, y }),
        text,
        font_size: 14.0,
        text_color: Some(TEXT),
        background_color: Some(Color { a: 0.6, ..BOX }),
        metadata: Vec::new(),
    };
    match alert {
        Alert::Detections { boxes, scores, .. } => {
            let mut a = ImageAnnotations::default();
            for (b, s) in boxes.iter().zip(scores) {
                let [x1, y1, x2, y2] = b.map(f64::from);
                a.points.push(PointsAnnotation {
                    timestamp: Some(stamp),
                    r#type: points_annotation::Type::LineLoop as i32,
                    points: [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
                        .map(|(x, y)| Point2 { x, y })
                        .to_vec(),
                    outline_color: Some(BOX),
                    outline_colors: Vec::new(),
                    fill_color: None,
                    thickness: 2.0,
                    metadata: Vec::new(),
                });
                a.texts.push(text(x1, y1, format!("{s:.2}")));
            }
            Some(a)
        }
        Alert::EarlyAlert {
            exit,
            confidence,
            pedestrian,
            ..
        } => {
            let what = if *pedestrian { "pedestrian" } else { "clear" };
            let mut a = ImageAnnotations::default();
            a.texts
                .push(text(8.0, 8.0, format!("{what} ({exit}, {confidence:.2})")));
            Some(a)
        }
        _ => None,
    }
}

impl Planner for FoxgloveLive {
    fn on_alert(&mut self, msg: &Envelope, received: Instant) -> crate::Result<()> {
        let ns = self.wall.ns(received);
        let meta = PartialMetadata { log_time: Some(ns) };
        self.alerts
            .log_with_meta(&serde_json::to_vec(&msg.alert)?, meta);
        if let Some(body) = super::record::latency_message(&msg.alert)? {
            self.latency
                .log_with_meta(&serde_json::to_vec(&body)?, meta);
        }
        let at = self.wall.ns(msg.capture.unwrap_or(received));
        let stamp = Timestamp::new((at / 1_000_000_000) as u32, (at % 1_000_000_000) as u32);
        if let Some(a) = annotations_of(&msg.alert, stamp) {
            self.annotations.log_with_time(&a, ns);
        }
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        if let Some(s) = self.server.take() {
            s.stop().wait_blocking();
        }
        log::info!("foxglove server on {} stopped", self.addr);
        Ok(())
    }

    fn stage(&self) -> &'static str {
        "foxglove"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_become_closed_outlines_and_early_alerts_text() {
        let stamp = Timestamp::new(1, 2);
        let det = Alert::Detections {
            frame: 3,
            boxes: vec![[10.0, 20.0, 30.0, 60.0]],
            scores: vec![0.875],
            labels: vec![1],
            pedestrians: 1,
            latency_ms: 12.0,
        };
        let a = annotations_of(&det, stamp).unwrap();
        assert_eq!(a.points.len(), 1);
        let corners: Vec<(f64, f64)> = a.points[0].points.iter().map(|p| (p.x, p.y)).collect();
        assert_eq!(
            corners,
            [(10.0, 20.0), (30.0, 20.0), (30.0, 60.0), (10.0, 60.0)]
        );
        assert_eq!(a.points[0].r#type, points_annotation::Type::LineLoop as i32);
        assert_eq!(a.texts[0].text, "0.88");
        let early = Alert::EarlyAlert {
            frame: 4,
            exit: "expanded_conv_2".into(),
            version: Some(1),
            class: 1,
            pedestrian: true,
            confidence: 0.93,
            latency_ms: 5.0,
        };
        let a = annotations_of(&early, stamp).unwrap();
        assert!(a.points.is_empty());
        assert_eq!(a.texts[0].text, "pedestrian (expanded_conv_2, 0.93)");
        let dropped = Alert::FrameDropped { frame: 5 };
        assert!(annotations_of(&dropped, stamp).is_none());
    }
}
