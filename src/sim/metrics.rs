//! Detection and presence metrics: AP at an IoU threshold (PASCAL VOC all-point interpolation),
//! precision/recall at a score, and presence confusion matrices.

use crate::detect::ops::nms::iou;
use serde::Serialize;

/// The q-quantile (0..=1) of sorted values, nearest rank; NaN when there are none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Summary of a set of durations (ms) or other values.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Percentiles {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let count = v.len();
        if count == 0 {
            return Self::default();
        }
        Self {
            count,
            mean: v.iter().sum::<f64>() / count as f64,
            p50: quantile(&v, 0.5),
            p95: quantile(&v, 0.95),
            p99: quantile(&v, 0.99),
            max: v[count - 1],
        }
    }
}

/// Presence confusion counts (positive = pedestrian present).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub tn: usize,
}

impl Confusion {
    pub fn add(&mut self, predicted: bool, actual: bool) {
        match (predicted, actual) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }
    pub fn total(&self) -> usize {
        self.tp + self.fp + self.fn_ + self.tn
    }
    pub fn accuracy(&self) -> f64 {
        (self.tp + self.tn) as f64 / self.total().max(1) as f64
    }
    pub fn recall(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fn_).max(1) as f64
    }
    pub fn precision(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fp).max(1) as f64
    }
}

impl std::fmt::Display for Confusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tp {} fp {} fn {} tn {} (accuracy {:.3}, recall {:.3}, precision {:.3})",
            self.tp,
            self.fp,
            self.fn_,
            self.tn,
            self.accuracy(),
            self.recall(),
            self.precision()
        )
    }
}

/// One scored detection on image `image`, box `[x1, y1, x2, y2]`.
#[derive(Clone, Debug)]
pub struct ScoredBox {
    pub image: usize,
    pub score: f32,
    pub bbox: [f32; 4],
}

/// Result of matching detections to ground truth.
#[derive(Clone, Debug, Serialize)]
pub struct ApReport {
    pub ap: f64,
    pub gt_boxes: usize,
    pub detections: usize,
    /// Precision and recall counting only detections scoring >= `at_score`.
    pub at_score: f32,
    pub precision: f64,
    pub recall: f64,
}

/// AP at `iou_thresh` over all images: detections sorted by score, each matched to the unmatched
/// ground-truth box of highest IoU on its image (a match to an already-taken box is a false
/// positive, as in VOC), AP = area under the monotone precision envelope at every recall step.
pub fn average_precision(
    dets: &[ScoredBox],
    gts: &[Vec<[f32; 4]>],
    iou_thresh: f32,
    at_score: f32,
) -> ApReport {
    let mut order: Vec<usize> = (0..dets.len()).collect();
    order.sort_by(|&a, &b| dets[b].score.total_cmp(&dets[a].score));
    let mut taken: Vec<Vec<bool>> = gts.iter().map(|g| vec![false; g.len()]).collect();
    let n_gt: usize = gts.iter().map(Vec::len).sum();
    let mut tp_flags = Vec::with_capacity(dets.len());
    for &i in &order {
        let d = &dets[i];
        let best = gts[d.image]
            .iter()
            .enumerate()
            .map(|(j, g)| (j, iou(&d.bbox, g)))
            .fold(None, |acc: Option<(usize, f32)>, (j, v)| match acc {
                Some((_, bv)) if bv >= v => acc,
                _ => Some((j, v)),
            });
        let hit = match best {
            Some((j, v)) if v >= iou_thresh && !taken[d.image][j] => {
                taken[d.image][j] = true;
                true
            }
            _ => false,
        };
        tp_flags.push(hit);
    }
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut prec = Vec::with_capacity(order.len());
    let mut rec = Vec::with_capacity(order.len());
    let (mut tp_at, mut fp_at) = (0usize, 0usize);
    for (k, &hit) in tp_flags.iter().enumerate() {
        if hit {
            tp += 1
        } else {
            fp += 1
        }
        if dets[order[k]].score >= at_score {
            (tp_at, fp_at) = (tp, fp);
        }
        prec.push(tp as f64 / (tp + fp) as f64);
        rec.push(tp as f64 / n_gt.max(1) as f64);
    }
    // Precision envelope from the right, then sum precision over recall increments.
    for k in (0..prec.len().saturating_sub(1)).rev() {
        prec[k] = prec[k].max(prec[k + 1]);
    }
    let mut ap = 0.0;
    let mut prev_r = 0.0;
    for (p, r) in prec.iter().zip(&rec) {
        ap += (r - prev_r) * p;
        prev_r = *r;
    }
    ApReport {
        ap,
        gt_boxes: n_gt,
        detections: dets.len(),
        at_score,
        precision: tp_at as f64 / (tp_at + fp_at).max(1) as f64,
        recall: tp_at as f64 / n_gt.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(image: usize, score: f32, x: f32) -> ScoredBox {
        ScoredBox {
            image,
            score,
            bbox: [x, 0.0, x + 10.0, 10.0],
        }
    }

    #[test]
    fn ap_by_hand() {
        // Two GT boxes on image 0, one on image 1.
        let gts = vec![
            vec![[0.0, 0.0, 10.0, 10.0], [50.0, 0.0, 60.0, 10.0]],
            vec![[0.0, 0.0, 10.0, 10.0]],
        ];
        // Ranked: TP, FP (duplicate of the first), TP, FP (nowhere).
        let dets = vec![
            d(0, 0.9, 0.0),
            d(0, 0.8, 1.0),
            d(1, 0.7, 0.0),
            d(1, 0.6, 200.0),
        ];
        let r = average_precision(&dets, &gts, 0.5, 0.75);
        // Recall steps 1/3 at precision 1, 2/3 at precision max(2/3, 2/4) = 2/3.
        let expect = (1.0 / 3.0) * 1.0 + (1.0 / 3.0) * (2.0 / 3.0);
        assert!((r.ap - expect).abs() < 1e-9, "{}", r.ap);
        // At score >= 0.75: one TP, one FP.
        assert!((r.precision - 0.5).abs() < 1e-9 && (r.recall - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn perfect_detector_scores_one() {
        let gts = vec![vec![[0.0, 0.0, 10.0, 10.0]]];
        let r = average_precision(&[d(0, 0.5, 0.0)], &gts, 0.5, 0.5);
        assert!((r.ap - 1.0).abs() < 1e-12);
    }

    #[test]
    fn confusion_counts() {
        let mut c = Confusion::default();
        for (p, a) in [
            (true, true),
            (true, false),
            (false, true),
            (false, false),
            (false, false),
        ] {
            c.add(p, a);
        }
        assert_eq!((c.tp, c.fp, c.fn_, c.tn), (1, 1, 1, 2));
        assert!((c.accuracy() - 0.6).abs() < 1e-12);
    }
}
