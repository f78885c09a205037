//! The one chart: saga latency (p50 and p99) against offered load, as a small SVG.

use super::Point;
use std::fmt::Write;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const MARGIN: f64 = 60.0;

pub fn svg(points: &[Point]) -> String {
    let max_x = points.iter().map(|p| p.offered).fold(1.0, f64::max);
    let max_y = points.iter().map(|p| p.p99_ms).fold(1.0, f64::max);
    let x = |v: f64| MARGIN + v / max_x * (WIDTH - 2.0 * MARGIN);
    let y = |v: f64| HEIGHT - MARGIN - v / max_y * (HEIGHT - 2.0 * MARGIN);
    let line = |value: fn(&Point) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.offered), y(value(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="24" text-anchor="middle" font-size="14">Order-to-payment saga latency against offered load</text>
<line x1="{MARGIN}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>
<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{bottom}" stroke="black"/>
<text x="{cx}" y="{xlabel}" text-anchor="middle">offered load (sagas/s), up to {max_x:.0}</text>
<text x="16" y="{cy}" transform="rotate(-90 16 {cy})" text-anchor="middle">latency (ms), up to {max_y:.0}</text>
<polyline points="{p50}" fill="none" stroke="#1f77b4" stroke-width="2"/>
<polyline points="{p99}" fill="none" stroke="#d62728" stroke-width="2"/>
<text x="{legend}" y="{MARGIN}" fill="#1f77b4">p50</text>
<text x="{legend}" y="{legend2}" fill="#d62728">p99</text>
"##,
        cx = WIDTH / 2.0,
        cy = HEIGHT / 2.0,
        bottom = HEIGHT - MARGIN,
        right = WIDTH - MARGIN,
        xlabel = HEIGHT - 20.0,
        p50 = line(|p| p.p50_ms),
        p99 = line(|p| p.p99_ms),
        legend = WIDTH - MARGIN - 30.0,
        legend2 = MARGIN + 16.0,
    );
    for p in points {
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"#,
            x(p.offered),
            y(p.p50_ms),
            x(p.offered),
            HEIGHT - MARGIN + 16.0,
            p.offered
        );
    }
    svg.push_str("</svg>\n");
    svg
}
