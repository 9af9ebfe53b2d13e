//! Alerts to other processes over Zenoh: [`ZenohPublisher`] is a planner that puts every alert on
//! `pedcache/<node>/alerts` as a JSON [`WireAlert`]; [`listen`] is the other end.
//!
//! Both sides run Zenoh in peer mode with explicit endpoints only: the node listens on the one
//! endpoint it is given, the listener connects to it (retrying until the node is up); multicast
//! scouting is off, so nothing is announced beyond the endpoints named.
//!
//! Publishing never blocks perception or the alert bus: `on_alert` hands the message to the
//! publisher's own thread through a bounded queue, and a message that does not fit is dropped and
//! counted; the Zenoh put itself drops under congestion rather than waiting.

use super::alert::{Alert, Envelope};
use super::clock::{unix_ns, UnixTime};
use super::planner::Planner;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime};
use zenoh::Wait;

/// The `schema` of every message; bumped when a field changes meaning or goes away.
pub const SCHEMA: &str = "pedcache.alert/1";

/// Alerts waiting for the publisher thread; more are dropped and counted.
const QUEUE: usize = 256;

/// One alert on the wire (`pedcache/<node>/alerts`, JSON). Times are nanoseconds since the Unix
/// epoch on the node's machine, so a listener on the same machine (or one with a synchronised
/// clock) can tell end-to-end latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireAlert {
    /// [`SCHEMA`].
    pub schema: String,
    /// The node's name (`--node`).
    pub node: String,
    /// 0, 1, 2, ... per alert published by this node run; a gap is a dropped message.
    pub seq: u64,
    /// When the frame was captured (`None` for reports about inputs that could not be read).
    pub capture_unix_ns: Option<u64>,
    /// When the publisher handed it to Zenoh.
    pub published_unix_ns: u64,
    /// The alert, as in the `--alerts` JSONL.
    pub alert: Alert,
}

/// The key alerts of node `node` go to.
pub fn alerts_key(node: &str) -> String {
    format!("pedcache/{node}/alerts")
}

/// A Zenoh peer config with only the given endpoints and multicast scouting off.
fn peer_config(listen: &[&str], connect: &[&str]) -> crate::Result<zenoh::Config> {
    let mut c = zenoh::Config::default();
    let list = |v: &[&str]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    for (key, value) in [
        ("mode", "\"peer\"".to_string()),
        ("listen/endpoints", list(listen)),
        ("connect/endpoints", list(connect)),
        ("scouting/multicast/enabled", "false".into()),
        // Retry an endpoint that is not up yet every 50-200 ms, in the background (a zero
        // timeout would try once; exit_on_failure would make `open` wait).
        ("connect/timeout_ms", "-1".into()),
        ("connect/exit_on_failure", "false".into()),
        (
            "connect/retry",
            "{period_init_ms: 50, period_max_ms: 200, period_increase_factor: 2}".into(),
        ),
    ] {
        c.insert_json5(key, &value)
            .map_err(|e| crate::err!("zenoh config {key} = {value}: {e}"))?;
    }
    Ok(c)
}

/// A planner that publishes every alert on Zenoh.
pub struct ZenohPublisher {
    tx: Option<Sender<Envelope>>,
    dropped: usize,
    worker: Option<std::thread::JoinHandle<crate::Result<u64>>>,
    endpoint: String,
}

impl ZenohPublisher {
    /// Open a peer listening on `endpoint` (e.g. `tcp/127.0.0.1:7447`) and publish node `node`'s
    /// alerts. With `wait` > 0, wait up to that long for a subscriber to match before returning
    /// (alerts published before one is connected are not stored anywhere).
    pub fn open(endpoint: &str, node: &str, wait: Duration) -> crate::Result<Self> {
        crate::ensure!(
            !node.is_empty()
                && node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
            "--node {node:?}: use letters, digits, '-' and '_'"
        );
        let ctx = |e: zenoh::Error| crate::err!("zenoh on {endpoint}: {e}");
        let session = zenoh::open(peer_config(&[endpoint], &[])?)
            .wait()
            .map_err(ctx)?;
        let publisher = session
            .declare_publisher(alerts_key(node))
            .congestion_control(zenoh::qos::CongestionControl::Drop)
            .wait()
            .map_err(ctx)?;
        let started = Instant::now();
        while started.elapsed() < wait {
            if publisher.matching_status().wait().map_err(ctx)?.matching() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (tx, rx) = bounded::<Envelope>(QUEUE);
        let node = node.to_string();
        let worker = std::thread::Builder::new()
            .name("zenoh-publisher".into())
            .spawn(move || publish_loop(rx, &publisher, &node, session))
            .map_err(|e| crate::err!("starting the zenoh publisher: {e}"))?;
        Ok(Self {
            tx: Some(tx),
            dropped: 0,
            worker: Some(worker),
            endpoint: endpoint.to_string(),
        })
    }

    /// Alerts dropped so far because the publisher thread was behind.
    pub fn dropped(&self) -> usize {
        self.dropped
    }
}

/// The publisher thread: stamp and put each alert until the planner closes the queue.
fn publish_loop(
    rx: Receiver<Envelope>,
    publisher: &zenoh::pubsub::Publisher<'_>,
    node: &str,
    session: zenoh::Session,
) -> crate::Result<u64> {
    let wall = UnixTime::anchor();
    let mut seq = 0u64;
    for msg in rx {
        let wire = WireAlert {
            schema: SCHEMA.into(),
            node: node.into(),
            seq,
            capture_unix_ns: msg.capture.map(|t| wall.ns(t)),
            published_unix_ns: unix_ns(SystemTime::now()),
            alert: msg.alert,
        };
        let bytes = serde_json::to_vec(&wire)?;
        publisher
            .put(bytes)
            .wait()
            .map_err(|e| crate::err!("zenoh put: {e}"))?;
        seq += 1;
    }
    session
        .close()
        .wait()
        .map_err(|e| crate::err!("closing zenoh: {e}"))?;
    Ok(seq)
}

impl Planner for ZenohPublisher {
    fn on_alert(&mut self, msg: &Envelope, _received: Instant) -> crate::Result<()> {
        if let Some(tx) = &self.tx {
            match tx.try_send(msg.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped += 1;
                }
                Err(TrySendError::Disconnected(_)) => {
                    // The thread ended with an error; `finish` reports it.
                    self.tx = None;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> crate::Result<()> {
        self.tx = None;
        let sent = match self.worker.take().map(|w| w.join()) {
            Some(Ok(r)) => r?,
            Some(Err(_)) => crate::bail!("the zenoh publisher thread panicked"),
            None => 0,
        };
        let dropped = self.dropped();
        log::info!(
            "zenoh {}: {sent} alerts published, {dropped} dropped",
            self.endpoint
        );
        if dropped > 0 {
            eprintln!(
                "zenoh {}: {dropped} alerts dropped (publisher behind)",
                self.endpoint
            );
        }
        Ok(())
    }

    fn stage(&self) -> &'static str {
        "zenoh-publisher"
    }
}

/// What [`listen`] does with each alert.
pub struct ListenOptions<'a> {
    /// The node's endpoint.
    pub connect: &'a str,
    /// The node's name (its key is `pedcache/<node>/alerts`).
    pub node: &'a str,
    /// Exit after this long without an alert (`None`: never).
    pub idle: Option<Duration>,
    /// Stop when set (Ctrl-C).
    pub stop: &'a super::StopFlag,
}

/// One alert as the listener received it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Received {
    /// When it arrived, ns since the Unix epoch.
    pub received_unix_ns: u64,
    /// Capture -> received, ms (`None` for alerts without a capture time).
    pub end_to_end_ms: Option<f64>,
    /// Published -> received, ms.
    pub transport_ms: f64,
    /// The message as published.
    #[serde(flatten)]
    pub wire: WireAlert,
}

/// Subscribe to node `node`'s alerts at `connect` (retrying until it is up) and call `each` for
/// every one, until `idle` passes without an alert or `stop` is set. A message that is not a
/// [`WireAlert`] of this schema is skipped with a warning. Returns how many were received.
pub fn listen(
    o: &ListenOptions<'_>,
    mut each: impl FnMut(&Received) -> crate::Result<()>,
) -> crate::Result<u64> {
    let ctx = |e: zenoh::Error| crate::err!("zenoh to {}: {e}", o.connect);
    let session = zenoh::open(peer_config(&[], &[o.connect])?)
        .wait()
        .map_err(ctx)?;
    let sub = session
        .declare_subscriber(alerts_key(o.node))
        .wait()
        .map_err(ctx)?;
    let mut last = Instant::now();
    let mut n = 0u64;
    while !o.stop.is_stopped() {
        if o.idle.is_some_and(|idle| last.elapsed() >= idle) {
            break;
        }
        let Some(sample) = sub
            .recv_timeout(Duration::from_millis(50))
            .map_err(|e| crate::err!("zenoh to {}: {e}", o.connect))?
        else {
            continue;
        };
        let now = unix_ns(SystemTime::now());
        last = Instant::now();
        let bytes = sample.payload().to_bytes();
        let wire: WireAlert = match serde_json::from_slice(&bytes) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("{}: not a pedcache alert ({e}), skipped", sample.key_expr());
                continue;
            }
        };
        if wire.schema != SCHEMA {
            log::warn!(
                "{}: schema {:?}, expected {SCHEMA}, skipped",
                sample.key_expr(),
                wire.schema
            );
            continue;
        }
        let ms = |from: u64| now.saturating_sub(from) as f64 / 1e6;
        let r = Received {
            received_unix_ns: now,
            end_to_end_ms: wire.capture_unix_ns.map(ms),
            transport_ms: ms(wire.published_unix_ns),
            wire,
        };
        each(&r)?;
        n += 1;
    }
    session
        .close()
        .wait()
        .map_err(|e| crate::err!("closing zenoh: {e}"))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_alert_round_trips_with_its_schema() {
        let w = WireAlert {
            schema: SCHEMA.into(),
            node: "car7".into(),
            seq: 3,
            capture_unix_ns: Some(1_700_000_000_000_000_000),
            published_unix_ns: 1_700_000_000_002_000_000,
            alert: Alert::BadFrame {
                frame: 4,
                path: "x.png".into(),
                cause: "truncated".into(),
            },
        };
        let text = serde_json::to_string(&w).unwrap();
        assert!(text.contains("\"schema\":\"pedcache.alert/1\""), "{text}");
        assert!(text.contains("\"type\":\"BadFrame\""), "{text}");
        assert_eq!(serde_json::from_str::<WireAlert>(&text).unwrap(), w);
        assert_eq!(alerts_key("car7"), "pedcache/car7/alerts");
    }

    #[test]
    fn node_names_that_would_change_the_key_are_refused() {
        for bad in ["", "a/b", "a*", "x y"] {
            let e = ZenohPublisher::open("tcp/127.0.0.1:1", bad, Duration::ZERO).err();
            assert!(
                e.is_some_and(|e| e.to_string().contains("--node")),
                "{bad:?}"
            );
        }
    }
}
