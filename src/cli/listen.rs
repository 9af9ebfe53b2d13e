//! `pedcache listen`: a planner in another process, receiving a node's alerts over Zenoh.

use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ListenArgs {
    /// The node's endpoint (`replay --publish zenoh=ENDPOINT`), e.g. `tcp/127.0.0.1:7447`;
    /// retried until the node is up.
    #[arg(long)]
    pub connect: String,
    /// The node's name (`replay --node`).
    #[arg(long, default_value = "pedcache")]
    pub node: String,
    /// Record every alert as one JSON line (the wire message plus `received_unix_ns`,
    /// `end_to_end_ms`, `transport_ms`) instead of printing a line per alert.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Exit 0 after this many seconds without an alert (default: run until Ctrl-C).
    #[arg(long)]
    pub idle: Option<f64>,
}

pub fn run(a: ListenArgs) -> anyhow::Result<i32> {
    let idle = match a.idle {
        Some(s) if s.is_finite() && s > 0.0 => Some(std::time::Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--idle {s}: expected a number of seconds > 0"),
        None => None,
    };
    let mut out: Option<std::io::BufWriter<std::fs::File>> = match &a.jsonl {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        )),
        None => None,
    };
    let stop = crate::cli::stop_on_signals();
    let opts = crate::node::zenoh::ListenOptions {
        connect: &a.connect,
        node: &a.node,
        idle,
        stop: &stop,
    };
    eprintln!(
        "listening for {} at {}",
        crate::node::zenoh::alerts_key(&a.node),
        a.connect
    );
    let n = crate::node::zenoh::listen(&opts, |r| {
        match out.as_mut() {
            Some(f) => {
                serde_json::to_writer(&mut *f, r)?;
                // A line per alert reaches the file at once: a killed listener keeps what it got.
                f.write_all(b"\n")
                    .and_then(|()| f.flush())
                    .map_err(|e| crate::err!("writing alerts: {e}"))?;
            }
            None => {
                let e2e = r
                    .end_to_end_ms
                    .map_or_else(|| "-".to_string(), |ms| format!("{ms:.2} ms"));
                let alert = serde_json::to_string(&r.wire.alert)?;
                println!("#{} capture->received {e2e}: {alert}", r.wire.seq);
            }
        }
        Ok(())
    })?;
    eprintln!("{n} alerts received");
    Ok(0)
}
