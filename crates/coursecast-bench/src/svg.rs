//! A latency percentile plot as a small standalone SVG (x: percentile on a "nines"
//! scale, y: latency in ms on a log scale).

use std::fmt::Write as _;

use crate::stats::Latency;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 30.0;
const RIGHT: f64 = 20.0;
/// The x axis ends at 99.999 %.
const MAX_NINES: f64 = 5.0;

fn nines(q: f64) -> f64 {
    if q >= 1.0 { MAX_NINES } else { (-(1.0 - q).log10()).min(MAX_NINES) }
}

pub fn percentile_plot(title: &str, latency: &Latency) -> String {
    let points = latency.percentile_curve();
    let max_ms = points.iter().map(|p| p.1).fold(1.0f64, f64::max);
    let min_ms = points.iter().map(|p| p.1).filter(|v| *v > 0.0).fold(max_ms, f64::min).max(0.01);
    let (lo, hi) = (min_ms.log10().floor(), max_ms.log10().ceil().max(min_ms.log10().floor() + 1.0));
    let x = |q: f64| LEFT + nines(q) / MAX_NINES * (W - LEFT - RIGHT);
    let y = |ms: f64| {
        let v = (ms.max(min_ms).log10() - lo) / (hi - lo);
        H - BOTTOM - v * (H - TOP - BOTTOM)
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(svg, r#"<text x="{LEFT}" y="18" font-size="13">{}</text>"#, escape(title));
    for (q, label) in
        [(0.0, "0%"), (0.9, "90%"), (0.99, "99%"), (0.999, "99.9%"), (0.9999, "99.99%"), (0.99999, "99.999%")]
    {
        let px = x(q);
        let _ = write!(svg, r##"<line x1="{px}" y1="{TOP}" x2="{px}" y2="{}" stroke="#ddd"/>"##, H - BOTTOM);
        let _ = write!(svg, r#"<text x="{px}" y="{}" text-anchor="middle">{label}</text>"#, H - BOTTOM + 15.0);
    }
    let mut decade = lo;
    while decade <= hi {
        let ms = 10f64.powf(decade);
        let py = y(ms);
        let _ = write!(svg, r##"<line x1="{LEFT}" y1="{py}" x2="{}" y2="{py}" stroke="#ddd"/>"##, W - RIGHT);
        let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="end">{ms} ms</text>"#, LEFT - 5.0, py + 4.0);
        decade += 1.0;
    }
    let path: Vec<String> = points.iter().map(|&(q, ms)| format!("{:.1},{:.1}", x(q), y(ms))).collect();
    let _ = write!(svg, r##"<polyline points="{}" fill="none" stroke="#c33" stroke-width="2"/>"##, path.join(" "));
    let _ =
        write!(svg, r#"<text x="{}" y="{}" text-anchor="middle">percentile</text></svg>"#, (W + LEFT) / 2.0, H - 5.0);
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_curve() {
        let mut l = Latency::new();
        for us in 1..10_000 {
            l.record_micros(us * 10);
        }
        let svg = percentile_plot("fanout <test>", &l);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("polyline") && svg.contains("&lt;test&gt;"));
    }
}
