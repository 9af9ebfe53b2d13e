//! Retrainer tests on a synthetic drive: rounds, swaps, cancellation and failures.
use super::*;
use crate::cache::head::{CacheHead, HeadArch, SplitMix64};

const C: usize = 8;

/// A unit of a synthetic drive: class 1 ("pedestrian") iff channel 0's mean is positive;
/// the teacher is confident (0.95). Returns the pooled features `[C * 16]` and the target.
fn unit(rng: &mut SplitMix64) -> (Vec<f32>, Vec<f32>) {
    let cls = rng.below(2);
    let shift = if cls == 1 { 1.0 } else { -1.0 };
    let feats = (0..C * 16)
        .map(|k| {
            let noise = (rng.next_f64() * 2.0 - 1.0) as f32;
            if k < 16 {
                shift + 0.5 * noise
            } else {
                noise
            }
        })
        .collect();
    let target = if cls == 1 {
        vec![0.05, 0.95]
    } else {
        vec![0.95, 0.05]
    };
    (feats, target)
}

fn exit_with(head: CacheHead) -> Exit {
    Exit {
        stage: 0,
        layer: "synthetic".into(),
        head,
        temperature: 1.0,
        theta: 0.9,
        c1: 0,
    }
}

fn linear() -> HeadArch {
    HeadArch {
        grid: 1,
        convs: vec![],
        linears: vec![],
        classes: 2,
    }
}

/// The live exit on fresh units of the drive, judged against the rule that made them (not
/// against the teacher the retrainer saw): (share of units it hits at its threshold, share of
/// its hits that are right).
fn judge(live: &LiveExits, seed: u64) -> (f64, f64) {
    let set = live.load();
    let exits = &set.exits;
    let mut rng = SplitMix64::new(seed);
    let n = 200;
    let (mut x, mut truth) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (f, t) = unit(&mut rng);
        x.extend(f);
        truth.push(argmax(&t));
    }
    let x4 = Tensor::from_vec(x, (n, C, 4, 4), &Device::Cpu).unwrap();
    let e = &exits[0];
    let hits: Vec<bool> = e
        .predict_pooled(&x4)
        .unwrap()
        .iter()
        .zip(&truth)
        .filter(|(p, _)| p.hits(e.theta, ExitOn::Any, 1))
        .map(|(p, t)| p.class == *t)
        .collect();
    let right = hits.iter().filter(|&&r| r).count();
    (
        hits.len() as f64 / n as f64,
        right as f64 / hits.len().max(1) as f64,
    )
}

fn feed(live: &Arc<LiveExits>, cfg: RetrainConfig, n: usize, seed: u64) -> RetrainStats {
    let mut r = Retrainer::spawn(live.clone(), ExitOn::Any, 1, cfg).unwrap();
    let mut rng = SplitMix64::new(seed);
    for i in 0..n {
        let (f, t) = unit(&mut rng);
        // Offer until taken: the test wants every sample in, in order.
        while !r.offer(i as u64, vec![f.clone()], t.clone()) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    r.finish().unwrap()
}

#[test]
fn retrains_an_untrained_exit_and_swaps_it_in() {
    let head = CacheHead::new(linear(), C, 3, &Device::Cpu).unwrap();
    let live = Arc::new(LiveExits::new(LiveSet {
        version: None,
        exits: vec![exit_with(head)],
    }));
    let (hit_rate_before, _) = judge(&live, 99);
    let old = live.load();
    let cfg = RetrainConfig {
        min_samples: 100,
        ..RetrainConfig::default()
    };
    let stats = feed(&live, cfg, 300, 1);
    assert!(stats.rounds >= 1, "{stats:?}");
    assert!(stats.swaps >= 1, "{stats:?}");
    assert_eq!(stats.samples, 300);
    assert!(stats.error.is_none(), "{stats:?}");
    let (hit_rate, hit_accuracy) = judge(&live, 99);
    assert!(
        !Arc::ptr_eq(&old, &live.load()),
        "the live set was replaced"
    );
    assert!(
        hit_rate > 0.9 && hit_rate > hit_rate_before + 0.3,
        "hit rate {hit_rate_before} -> {hit_rate}"
    );
    assert!(hit_accuracy > 0.99, "{hit_accuracy}");
}

#[test]
fn keeps_the_live_exit_when_the_candidate_is_worse() {
    // A well-trained live exit; then rounds whose training is cut to zero epochs, so each
    // candidate is its untrained initialisation: no more hits within the budget, it stays out.
    let head = CacheHead::new(linear(), C, 3, &Device::Cpu).unwrap();
    let live = Arc::new(LiveExits::new(LiveSet {
        version: None,
        exits: vec![exit_with(head)],
    }));
    let cfg = RetrainConfig {
        min_samples: 100,
        ..RetrainConfig::default()
    };
    feed(&live, cfg.clone(), 300, 1);
    let good = live.load();
    let good = (good, judge(&live, 99));
    assert!(good.1 .0 > 0.9 && good.1 .1 > 0.99, "{:?}", good.1);
    let crippled = RetrainConfig {
        train: TrainConfig {
            epochs: 0,
            ..cfg.train.clone()
        },
        ..cfg
    };
    let stats = feed(&live, crippled, 300, 2);
    assert!(stats.rounds >= 1, "{stats:?}");
    assert_eq!(stats.swaps, 0, "{stats:?}");
    let r = stats.last_round.unwrap();
    assert!(
        r.candidate_hits <= r.live_hits || r.candidate_errors as f64 > 0.02 * r.held_out as f64,
        "{r:?}"
    );
    assert!(Arc::ptr_eq(&good.0, &live.load()));
    assert_eq!(judge(&live, 99), good.1);
}

#[test]
fn adoption_follows_the_tolerance() {
    // 100 held-out units, X = 0.02: live within budget (1 error) -> more hits within budget.
    assert!(adopt((1, 50), (2, 60), 100, 0.02));
    assert!(!adopt((1, 50), (3, 90), 100, 0.02), "over budget");
    assert!(!adopt((1, 50), (0, 50), 100, 0.02), "no more hits");
    // Live over budget (5 errors): fewer errors win, even with fewer hits.
    assert!(adopt((5, 80), (3, 40), 100, 0.02));
    assert!(!adopt((5, 80), (5, 90), 100, 0.02));
}

#[test]
fn unconfident_teachers_are_not_learned_from() {
    let head = CacheHead::new(linear(), C, 3, &Device::Cpu).unwrap();
    let live = Arc::new(LiveExits::new(LiveSet {
        version: None,
        exits: vec![exit_with(head)],
    }));
    let mut r = Retrainer::spawn(live, ExitOn::Any, 1, RetrainConfig::default()).unwrap();
    assert!(!r.offer(0, vec![vec![0.0; C * 16]], vec![0.4, 0.6]));
    assert!(r.offer(1, vec![vec![0.0; C * 16]], vec![0.05, 0.95]));
    let stats = r.finish().unwrap();
    assert_eq!((stats.samples, stats.unconfident, stats.rounds), (1, 1, 0));
}

#[test]
fn stopping_cancels_a_round_in_progress() {
    let head = CacheHead::new(linear(), C, 3, &Device::Cpu).unwrap();
    let live = Arc::new(LiveExits::new(LiveSet {
        version: None,
        exits: vec![exit_with(head)],
    }));
    let old = live.load();
    // A round that would train for a very long time, started by the 60th unit.
    let cfg = RetrainConfig {
        min_samples: 60,
        train: TrainConfig {
            epochs: 1_000_000,
            patience: 1_000_000,
            batch: 1,
            ..TrainConfig::default()
        },
        ..RetrainConfig::default()
    };
    let mut r = Retrainer::spawn(live.clone(), ExitOn::Any, 1, cfg).unwrap();
    let mut rng = SplitMix64::new(5);
    for i in 0..60 {
        let (f, t) = unit(&mut rng);
        assert!(r.offer(i, vec![f], t), "the queue (256) takes 60 units");
    }
    // Every unit taken: the thread is in the round.
    while r.shared.stats.lock().unwrap().samples < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stop = StopFlag::new();
    stop.stop();
    let (tx, rx) = std::sync::mpsc::channel();
    // A grace far beyond the hang guard below: only a real cancellation returns in time.
    std::thread::spawn(move || {
        let _ = tx.send(r.stop(&stop, Duration::from_secs(3600)));
    });
    let stats = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("stop returned")
        .unwrap();
    assert_eq!((stats.samples, stats.rounds), (60, 0), "{stats:?}");
    assert!(stats.error.is_none(), "a cancelled round is not an error");
    assert!(Arc::ptr_eq(&old, &live.load()), "nothing swapped in");
}

#[test]
fn a_panicking_round_is_reported_as_the_retrainers_failure() {
    let head = CacheHead::new(linear(), C, 3, &Device::Cpu).unwrap();
    let live = Arc::new(LiveExits::new(LiveSet {
        version: None,
        exits: vec![exit_with(head)],
    }));
    let cfg = RetrainConfig {
        min_samples: 60,
        ..RetrainConfig::default()
    };
    let mut r = Retrainer::spawn(live, ExitOn::Any, 1, cfg).unwrap();
    // Units without their input at the exit: the round indexes past them and panics.
    for i in 0..60 {
        assert!(r.offer(i, Vec::new(), vec![0.05, 0.95]));
    }
    let guard = std::time::Instant::now();
    let e = loop {
        if let Err(e) = r.check() {
            break e;
        }
        assert!(
            guard.elapsed() < Duration::from_secs(60),
            "no failure reported"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        matches!(
            e,
            crate::Error::Stage {
                stage: "retrainer",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.one_line()
            .starts_with("retrainer stage failed: panicked: "),
        "{e}"
    );
    assert!(
        r.stop(&StopFlag::new(), Duration::ZERO).is_err(),
        "stop reports it too"
    );
}
