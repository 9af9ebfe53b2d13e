//! A replay over time, per bin of 50 frames: hit rate, FLOPs, audited agreement, the exit set's
//! version and latency; as report rows and as an SVG picture written next to the report.

use crate::node::learn::{LearnStats, BIN_FRAMES};
use crate::node::{FrameOutcome, FrameRecord};
use crate::sim::metrics::Percentiles;
use serde::Serialize;
use std::fmt::Write;

/// One bin of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineRow {
    /// One past the last source frame of the bin.
    pub frame_end: usize,
    /// Frames of the bin the node processed.
    pub frames: usize,
    /// Units answered by an exit, over units.
    pub hit_rate: f64,
    /// Mean analytic FLOPs per processed frame, and the full detector's for the same frames.
    pub mean_flops: f64,
    pub mean_full_flops: f64,
    /// Audited hits of the bin's frames that agreed with the full detector (`None`: none audited).
    pub audited_agreement: Option<f64>,
    /// The exit set's version on the bin's last processed frame.
    pub version: Option<u32>,
    pub latency_p50_ms: f64,
}

/// The timeline of `records` (in frame order), with the learner's audit bins.
pub fn timeline(
    records: &[&FrameRecord<FrameOutcome>],
    learn: Option<&LearnStats>,
) -> Vec<TimelineRow> {
    let mut rows = Vec::new();
    let mut i = 0;
    while i < records.len() {
        let bin = records[i].index / BIN_FRAMES;
        let mut j = i;
        while j < records.len() && records[j].index / BIN_FRAMES == bin {
            j += 1;
        }
        let part = &records[i..j];
        let units: usize = part.iter().map(|r| r.outcome.units).sum();
        let hits: usize = part
            .iter()
            .map(|r| r.outcome.hits.iter().sum::<usize>())
            .sum();
        let n = part.len() as f64;
        let audited = learn
            .and_then(|l| l.audit_bins.get(&bin))
            .filter(|(n, _)| *n > 0)
            .map(|&(n, agree)| agree as f64 / n as f64);
        rows.push(TimelineRow {
            frame_end: (bin + 1) * BIN_FRAMES,
            frames: part.len(),
            hit_rate: hits as f64 / units.max(1) as f64,
            mean_flops: part.iter().map(|r| r.outcome.flops as f64).sum::<f64>() / n,
            mean_full_flops: part
                .iter()
                .map(|r| r.outcome.full_flops as f64)
                .sum::<f64>()
                / n,
            audited_agreement: audited,
            version: part.last().and_then(|r| r.outcome.version),
            latency_p50_ms: Percentiles::of(part.iter().map(|r| r.latency_ms).collect()).p50,
        });
        i = j;
    }
    rows
}

/// The timeline as an SVG line chart: hit rate, FLOPs as a share of the full detector's and
/// audited agreement (0..1, left axis) against the frame, with a mark where the version changes.
pub fn timeline_svg(rows: &[TimelineRow], title: &str) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 360.0, 60.0, 170.0, 40.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let max_frame = rows.last().map_or(1, |r| r.frame_end).max(1) as f64;
    let x = |f: f64| left + pw * f / max_frame;
    let y = |v: f64| top + ph * (1.0 - v.clamp(0.0, 1.0));
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    for k in 0..=4 {
        let v = k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>",
            left + pw,
            left - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">frame</text>\
         <text x=\"{left}\" y=\"{}\">0</text><text x=\"{:.1}\" y=\"{}\" \
         text-anchor=\"end\">{max_frame}</text>",
        left + pw / 2.0,
        h - 12.0,
        top + ph + 16.0,
        left + pw,
        top + ph + 16.0
    );
    // Version changes as vertical marks.
    let mut last = None;
    for r in rows {
        if r.version != last {
            let fx = x((r.frame_end - BIN_FRAMES.min(r.frame_end)) as f64);
            let label = r.version.map_or("none".to_string(), |v| format!("v{v}"));
            let _ = writeln!(
                s,
                "<line x1=\"{fx:.1}\" x2=\"{fx:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#999\" \
                 stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\">{label}</text>",
                top + ph,
                fx + 3.0,
                top + 12.0
            );
            last = r.version;
        }
    }
    let series: [(&str, &str, Series); 3] = [
        ("hit rate", "#1f77b4", Box::new(|r| Some(r.hit_rate))),
        (
            "FLOPs / full",
            "#d62728",
            Box::new(|r| Some(r.mean_flops / r.mean_full_flops.max(1.0))),
        ),
        (
            "audited agreement",
            "#2ca02c",
            Box::new(|r| r.audited_agreement),
        ),
    ];
    for (k, (name, colour, value)) in series.iter().enumerate() {
        let pts: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                let mid = r.frame_end as f64 - BIN_FRAMES as f64 / 2.0;
                value(r).map(|v| format!("{:.1},{:.1}", x(mid.max(0.0)), y(v)))
            })
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                pts.join(" ")
            );
        }
        let ly = top + 16.0 + 20.0 * k as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" \
             stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
            w - right + 10.0,
            w - right + 30.0,
            w - right + 36.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One line of the chart: its value in a row, if any.
type Series = Box<dyn Fn(&TimelineRow) -> Option<f64>>;

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize, hits: usize, version: Option<u32>) -> FrameRecord<FrameOutcome> {
        FrameRecord {
            index,
            queue_ms: 0.0,
            perceive_ms: 1.0,
            latency_ms: index as f64,
            outcome: FrameOutcome {
                units: 2,
                hits: vec![hits],
                flops: if hits > 0 { 10 } else { 100 },
                full_flops: 100,
                version,
                ..Default::default()
            },
        }
    }

    #[test]
    fn bins_of_fifty_frames_count_by_hand() {
        let recs: Vec<_> = (0..120)
            .map(|i| record(i, usize::from(i >= 60) * 2, (i >= 60).then_some(1)))
            .collect();
        let refs: Vec<&_> = recs.iter().collect();
        let mut learn = LearnStats::default();
        learn.audit_bins.insert(1, (4, 3));
        let rows = timeline(&refs, Some(&learn));
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0].frame_end, rows[0].frames, rows[0].hit_rate),
            (50, 50, 0.0)
        );
        // Frames 50..100: 40 of 50 hit both units.
        assert!((rows[1].hit_rate - 0.8).abs() < 1e-12);
        assert!((rows[1].mean_flops - (10.0 * 40.0 + 100.0 * 10.0) / 50.0).abs() < 1e-9);
        assert_eq!(rows[1].audited_agreement, Some(0.75));
        assert_eq!(rows[1].version, Some(1));
        assert_eq!((rows[2].frame_end, rows[2].frames), (150, 20));
        assert_eq!(
            rows[2].latency_p50_ms,
            Percentiles::of((100..120).map(f64::from).collect()).p50
        );
        let svg = timeline_svg(&rows, "t <1>");
        assert!(svg.starts_with("<svg") && svg.contains("v1") && svg.contains("t &lt;1&gt;"));
    }
}
