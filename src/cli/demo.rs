//! `pedcache demo`: the demo scenario (`sim/demo.ron`) through the real-time node, exactly as
//! `pedcache replay --config sim/demo.ron` runs it: the default detector with its committed cache
//! exits (`calib/ssdlite-ped-vtest`) over the demo sequence (`sim/vtest`, made by
//! `sim/make_demo.sh`) at its camera rate against the per-frame deadline; prints the replay
//! summary and writes the report and the alert stream under `target/`.

use crate::cli::replay::{finish, replay_to_files, scenario, NodeFlags, ReplayArgs};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The demo scenario (RON); the flags below override it (its cache exits are
    /// calib/ssdlite-ped-vtest, its rate 17 fps; the whole sequence, 795 frames, takes ~47 s).
    #[arg(long, default_value = "sim/demo.ron")]
    pub config: PathBuf,
    /// Frames to replay instead of the scenario's (default: the demo sequence, sim/vtest).
    #[arg(long)]
    pub source: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long, default_value = "target/demo-report.json")]
    pub report: PathBuf,
    /// Every alert, one JSON object a line.
    #[arg(long, default_value = "target/demo-alerts.jsonl")]
    pub alerts: PathBuf,
}

pub fn run(a: DemoArgs) -> anyhow::Result<i32> {
    let replay_args = ReplayArgs {
        config: Some(a.config.clone()),
        model: None,
        standin_weights: false,
        source: a.source.iter().cloned().collect(),
        topic: None,
        node: a.node.clone(),
        queue: None,
        gt_min_pixels: None,
        sequences: Default::default(),
        retrain: false,
        report: a.report.clone(),
        alerts: Some(a.alerts.clone()),
        publish: None,
        record: None,
        foxglove: None,
        node_name: "pedcache".into(),
        publish_wait_ms: 0,
    };
    let hint = "scripts/demo.sh fetches the model and makes the demo sequence";
    let cfg = scenario(&replay_args)
        .map_err(|e| anyhow::anyhow!("{} ({hint})", crate::error::one_line(&e)))?;
    let rate = cfg
        .rate()
        .map_or_else(|| "as fast as possible".to_string(), |f| format!("{f} fps"));
    println!(
        "pedcache demo: {} over {} at {rate}, deadline {} ms, cache exits: {} ({}, {} threads)",
        cfg.model,
        cfg.sources
            .iter()
            .map(|s| s.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cfg.deadline_ms,
        cfg.calib
            .as_ref()
            .map_or_else(|| "none".to_string(), |c| c.display().to_string()),
        cfg.device,
        crate::runtime::threads(),
    );
    // The hint is for a replay that could not start (a missing model or calibration).
    let r = replay_to_files(&cfg, &a.report, Some(&a.alerts), Vec::new()).map_err(|e| {
        let e = crate::error::one_line(&e);
        match cfg.calib {
            Some(_) => anyhow::anyhow!("{e} (or run with --no-cache)"),
            None => anyhow::anyhow!("{e}"),
        }
    })?;
    finish(r, &a.report, Some(&a.alerts))
}
