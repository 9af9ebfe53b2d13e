//! Greedy non-maximum suppression with TensorFlow's `NonMaxSuppressionV3` semantics: candidates
//! must score strictly above the threshold, are visited by score (ties: lower index first), and a
//! box is dropped when its IoU with a kept box is strictly greater than the IoU threshold.

/// IoU of two boxes given as `[a1, b1, a2, b2]` corners; corner order within an axis does not
/// matter (TF normalises with min/max). Degenerate boxes have IoU 0 with everything.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let (a_lo0, a_hi0) = (a[0].min(a[2]), a[0].max(a[2]));
    let (a_lo1, a_hi1) = (a[1].min(a[3]), a[1].max(a[3]));
    let (b_lo0, b_hi0) = (b[0].min(b[2]), b[0].max(b[2]));
    let (b_lo1, b_hi1) = (b[1].min(b[3]), b[1].max(b[3]));
    let area_a = (a_hi0 - a_lo0) * (a_hi1 - a_lo1);
    let area_b = (b_hi0 - b_lo0) * (b_hi1 - b_lo1);
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let i0 = (a_hi0.min(b_hi0) - a_lo0.max(b_lo0)).max(0.0);
    let i1 = (a_hi1.min(b_hi1) - a_lo1.max(b_lo1)).max(0.0);
    let inter = i0 * i1;
    inter / (area_a + area_b - inter)
}

/// Indices of the kept boxes, best first.
pub fn nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    iou_thresh: f32,
    score_thresh: f32,
    max_out: usize,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len().min(scores.len()))
        .filter(|&i| scores[i] > score_thresh)
        .collect();
    // Stable sort by descending score keeps the lower index first among ties.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut keep: Vec<usize> = Vec::new();
    for i in order {
        if keep.len() >= max_out {
            break;
        }
        if keep
            .iter()
            .all(|&k| iou(&boxes[k], &boxes[i]) <= iou_thresh)
        {
            keep.push(i);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_by_hand() {
        let a = [0.0, 0.0, 2.0, 2.0];
        let b = [1.0, 1.0, 3.0, 3.0];
        assert!((iou(&a, &b) - 1.0 / 7.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[5.0, 5.0, 6.0, 6.0]), 0.0);
        assert_eq!(iou(&a, &[1.0, 1.0, 1.0, 3.0]), 0.0);
        // Flipped corners describe the same box.
        assert!((iou(&a, &[2.0, 2.0, 0.0, 0.0]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn keeps_best_and_suppresses_overlaps_above_threshold_only() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 9.0], // IoU 0.9 with #0
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 10.0, 5.0], // IoU 0.5 with #0: kept at threshold 0.5
        ];
        let scores = [0.95, 0.9, 0.5, 0.4];
        assert_eq!(nms(&boxes, &scores, 0.5, 0.0, 10), vec![0, 2, 3]);
        assert_eq!(nms(&boxes, &scores, 0.5, 0.45, 10), vec![0, 2]);
        assert_eq!(nms(&boxes, &scores, 0.5, 0.0, 1), vec![0]);
    }

    #[test]
    fn ties_prefer_lower_index() {
        let boxes = [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]];
        assert_eq!(nms(&boxes, &[0.7, 0.7], 0.5, 0.0, 10), vec![0]);
    }
}
