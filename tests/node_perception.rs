//! Perception's timing logic on an injected clock: under `alert_then_continue`, a frame a cache
//! exit resolved still runs the full detector only when the running estimate of a full pass fits
//! in what is left of the deadline. The toy detector spends a known time per stage, so every
//! latency is exact and nothing depends on the machine.

mod toy;

use candle_core::Device;
use pedcache::cache::enabled::Exit;
use pedcache::cache::head::{CacheHead, HeadArch};
use pedcache::cache::ExitOn;
use pedcache::node::{
    Alert, CacheExits, Clock, Frame, FrameCtx, HitPolicy, ManualClock, Perception,
    PerceptionConfig, StopFlag,
};
use std::sync::Arc;
use std::time::Duration;
use toy::Toy;

/// An exit after the toy's first stage that answers every unit (threshold 0, any class).
fn always_hits() -> CacheExits {
    let arch = HeadArch {
        grid: 1,
        convs: vec![],
        linears: vec![],
        classes: 2,
    };
    CacheExits {
        model: "toy".into(),
        exits: vec![Exit {
            stage: 0,
            layer: "first".into(),
            head: CacheHead::new(arch, 1, 7, &Device::Cpu).unwrap(),
            temperature: 1.0,
            theta: 0.0,
            c1: 0,
        }],
        policy: ExitOn::Any,
        positive: 1,
        tolerance: 0.02,
        version: None,
    }
}

/// Two frames through perception with a deadline of `deadline_ms`, each stage of the toy (and
/// the rest of its network) taking 30 ms: per frame, its alerts and whether full detection was
/// skipped for lack of time.
fn two_frames(deadline_ms: u64) -> Vec<(Vec<Alert>, bool)> {
    let clock = Arc::new(ManualClock::new());
    let toy = Toy {
        cost: Some((clock.clone(), Duration::from_millis(30))),
        ..Toy::default()
    };
    let cfg = PerceptionConfig {
        policy: HitPolicy::AlertThenContinue,
        deadline: Duration::from_millis(deadline_ms),
        ..PerceptionConfig::default()
    };
    let mut p = Perception::new(toy, Some(always_hits()), cfg).unwrap();
    let never = StopFlag::new();
    let mut out = Vec::new();
    for index in 0..2 {
        let frame = Frame {
            index,
            capture: clock.now(),
            path: format!("toy#{index}"),
            payload: toy::frame(200),
        };
        let mut alerts = Vec::new();
        let mut publish = |a: Alert| alerts.push(a);
        let mut ctx = FrameCtx::new(&mut publish, &never, &*clock);
        let o = p.process_with(&frame, &mut ctx).unwrap();
        assert_eq!(o.hits, vec![1], "the exit answered the frame");
        let ran_full = usize::from(!o.continue_skipped);
        assert_eq!(
            o.full_units, ran_full,
            "full detection counted on its one unit"
        );
        out.push((alerts, o.continue_skipped));
    }
    p.stop(&never).unwrap();
    out
}

fn latencies(alerts: &[Alert]) -> Vec<(&'static str, f64)> {
    alerts
        .iter()
        .map(|a| match a {
            Alert::EarlyAlert { latency_ms, .. } => ("early", *latency_ms),
            Alert::Detections { latency_ms, .. } => ("detections", *latency_ms),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn full_detection_after_a_hit_runs_only_when_its_estimate_fits_the_deadline() {
    // Frame 0: the exit answers after stage 1 (30 ms); with no estimate yet, the full pass runs
    // (both stages and the rest: 90 ms more) and becomes the estimate. Frame 1: 30 ms + 90 ms
    // estimated = 120 ms.
    let fits = two_frames(120);
    for (alerts, skipped) in &fits {
        assert_eq!(latencies(alerts), [("early", 30.0), ("detections", 120.0)]);
        assert!(!skipped);
    }
    let tight = two_frames(119);
    assert_eq!(
        latencies(&tight[0].0),
        [("early", 30.0), ("detections", 120.0)]
    );
    assert!(!tight[0].1, "no estimate yet: it runs");
    assert_eq!(latencies(&tight[1].0), [("early", 30.0)]);
    assert!(tight[1].1, "120 ms would not fit in 119: skipped");
}
