//! SVG plots a person would rather look at than read: per exit, hit rate, cache accuracy and
//! (when labels exist) ground-truth accuracy against the confidence threshold (paper Fig. 2).

use super::calibration::ExitReport;

pub fn exit_curve_svg(e: &ExitReport) -> String {
    let (w, h, m) = (560.0, 360.0, 50.0);
    let x = |t: f32| m + (w - 2.0 * m) * t as f64;
    let y = |v: f64| h - m - (h - 2.0 * m) * v;
    let series = |f: &dyn Fn(&super::calibration::CurvePoint) -> Option<f64>| -> String {
        e.curve_val
            .iter()
            .filter_map(|p| f(p).map(|v| format!("{:.1},{:.1}", x(p.theta), y(v.clamp(0.0, 1.0)))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{m}\" y=\"24\" font-size=\"15\">exit {} — {} (validation)</text>\n",
        e.layer,
        e.head.clone().unwrap_or_default()
    );
    for k in 0..=10 {
        let v = k as f64 / 10.0;
        let (x2, yy, tx, ty) = (w - m, y(v), m - 6.0, y(v) + 4.0);
        s += &format!(
            "<line x1=\"{m}\" x2=\"{x2}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{v:.1}</text>\n"
        );
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{v:.1}</text>\n",
            x(v as f32),
            h - m + 16.0
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">confidence threshold</text>\n",
        w / 2.0,
        h - 12.0
    );
    let lines = [
        ("hit rate", "#1f77b4", series(&|p| Some(p.hit_rate))),
        (
            "cache accuracy",
            "#2ca02c",
            series(&|p| {
                if p.hit_rate > 0.0 {
                    Some(p.cache_accuracy)
                } else {
                    None
                }
            }),
        ),
        (
            "ground-truth accuracy",
            "#d62728",
            series(&|p| {
                if p.hit_rate > 0.0 {
                    p.gt_accuracy
                } else {
                    None
                }
            }),
        ),
    ];
    for (i, (name, col, pts)) in lines.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{pts}\"/>\n"
        );
        s += &format!(
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{col}\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            w - m - 150.0,
            40.0 + 16.0 * i as f64,
            w - m - 132.0,
            44.0 + 16.0 * i as f64
        );
    }
    if let Some(t) = e.threshold.as_ref().filter(|t| t.theta.is_finite()) {
        s += &format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{m}\" y2=\"{1}\" stroke=\"black\" stroke-dasharray=\"4 3\"/><text x=\"{2:.1}\" y=\"{3}\">θ = {4:.3}</text>\n",
            x(t.theta),
            h - m,
            x(t.theta) + 4.0,
            m + 12.0,
            t.theta
        );
    }
    s + "</svg>\n"
}
