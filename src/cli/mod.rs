//! Subcommands of the `pedcache` binary.

pub mod bench;
pub mod bounds;
pub mod calibrate;
pub mod convert;
pub mod demo;
pub mod detect;
pub mod evaluate;
#[cfg(feature = "zenoh")]
pub mod listen;
pub mod overlay;
pub mod replay;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "pedcache",
    version,
    about = "Early pedestrian alerts from cache exits on a frozen detector"
)]
pub struct Cli {
    /// Compute threads (0 = all cores).
    #[arg(long, global = true, default_value_t = 0, value_parser = bounds::threads)]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a detector on images and write the detections as JSON.
    Detect(detect::DetectArgs),
    /// Convert the TensorFlow SSDLite frozen graph (GraphDef .pb) into safetensors.
    ConvertTf(convert::ConvertArgs),
    /// Run the demo: the default detector over the demo sequence, with a summary table.
    Demo(demo::DemoArgs),
    /// Calibrate cache exits for a detector from unlabeled frames.
    Calibrate(calibrate::CalibrateArgs),
    /// Run the cache-enabled and the full detector side by side on frames.
    Evaluate(evaluate::EvaluateArgs),
    /// Replay sequences through the real-time node against a per-frame deadline.
    Replay(Box<replay::ReplayArgs>),
    /// Benchmarks of the compute engine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Receive a node's alerts over Zenoh (`replay --publish zenoh=ENDPOINT`), as a planner in
    /// another process would.
    #[cfg(feature = "zenoh")]
    Listen(listen::ListenArgs),
    /// Decode an image with the project's own decoder and write it as PNG (for reference scripts,
    /// so that both sides of a parity test see identical pixels).
    Decode {
        input: PathBuf,
        #[arg(long)]
        png: PathBuf,
    },
}

/// The process's stop flag, set by Ctrl-C (SIGINT) or SIGTERM (the handler is installed on the
/// first call).
pub fn stop_on_signals() -> crate::node::StopFlag {
    static STOP: std::sync::OnceLock<crate::node::StopFlag> = std::sync::OnceLock::new();
    STOP.get_or_init(|| {
        let stop = crate::node::StopFlag::new();
        let s = stop.clone();
        if let Err(e) = ctrlc::set_handler(move || s.stop()) {
            log::warn!("no Ctrl-C / SIGTERM handler: {e}");
        }
        stop
    })
    .clone()
}

/// A clap error as the one line the command line promises: the message and its details
/// (e.g. which arguments are missing), without usage and help hints.
pub fn one_line_usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run one command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    crate::runtime::init_threads(cli.threads);
    crate::runtime::kernels().map_err(anyhow::Error::msg)?;
    match cli.command {
        Command::Detect(a) => detect::run(a),
        Command::ConvertTf(a) => convert::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(c) => bench::run(c),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Replay(a) => replay::run(*a),
        #[cfg(feature = "zenoh")]
        Command::Listen(a) => listen::run(a),
        Command::Decode { input, png } => {
            let f = crate::frame::load_rgb(&input)?;
            crate::frame::write_png(&png, &f)?;
            Ok(0)
        }
    }
}
