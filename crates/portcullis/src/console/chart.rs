//! Charts drawn by the server as inline SVG: no script, no chart library,
//! nothing for the CSP to allow. Colours come from classes in the
//! stylesheet (`o-<outcome>`), never from style attributes. Every chart
//! carries its numbers as text too (`<title>` per bar, a legend with
//! totals, a table in `<details>`), for screen readers and for tests.

use crate::analytics::{OutcomeCounts, Span, UsagePoint};
use maud::{Markup, html};
use portcullis_core::Outcome;

/// Buckets from `from` to `to` (bucket starts), one per `span`, with the
/// points' counts and zeros where the store has none.
pub(crate) fn filled(points: &[UsagePoint], span: Span, from: i64, to: i64) -> Vec<UsagePoint> {
    let step = span.seconds();
    let mut out = Vec::new();
    let mut t = span.start_of(from);
    let mut it = points.iter().peekable();
    while t <= to && out.len() < 2_000 {
        let mut counts = OutcomeCounts::default();
        while let Some(p) = it.peek() {
            if p.start < t {
                it.next();
            } else if p.start == t {
                counts = p.counts;
                it.next();
                break;
            } else {
                break;
            }
        }
        out.push(UsagePoint { start: t, counts });
        t += step;
    }
    out
}

/// A small line of requests per bucket, for a row of the keys list.
pub(crate) fn sparkline(points: &[UsagePoint], what: &str) -> Markup {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    let totals: Vec<u64> = points.iter().map(|p| p.counts.total()).collect();
    let sum: u64 = totals.iter().sum();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = totals.len().max(2) as f64 - 1.0;
    let pts: Vec<String> = totals
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = i as f64 * W / n;
            let y = H - 2.0 - (*v as f64 / max) * (H - 4.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let label = format!("{sum} requests {what}");
    html! {
        svg.spark viewBox="0 0 120 28" role="img" aria-label=(label) data-total=(sum) {
            title { (label) }
            line.base x1="0" y1="27" x2="120" y2="27" {}
            @if !pts.is_empty() {
                polyline points=(pts.join(" ")) {}
            }
        }
    }
}

fn label_time(t: i64, span: Span) -> String {
    let s = portcullis_core::time::rfc3339(t);
    match span {
        Span::Day => s.get(5..10).unwrap_or(&s).to_owned(),
        _ => s.get(11..16).unwrap_or(&s).to_owned(),
    }
}

/// The largest of `max` rounded up to 1, 2 or 5 times a power of ten.
fn nice(max: u64) -> u64 {
    let mut p = 1u64;
    loop {
        for m in [1, 2, 5] {
            let v = p.saturating_mul(m);
            if v >= max {
                return v;
            }
        }
        if p > u64::MAX / 10 {
            return max;
        }
        p *= 10;
    }
}

/// Totals per outcome over `points`.
pub(crate) fn totals(points: &[UsagePoint]) -> OutcomeCounts {
    let mut t = OutcomeCounts::default();
    for p in points {
        for (o, n) in p.counts.iter() {
            if n > 0 {
                t.add(o, n);
            }
        }
    }
    t
}

/// The outcome chart of a key: one stacked bar per bucket, valid first,
/// then each refusal in [`Outcome::ALL`] order.
pub(crate) fn outcome_chart(points: &[UsagePoint], span: Span) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 240.0;
    const LEFT: f64 = 48.0;
    const BOTTOM: f64 = 22.0;
    const TOP: f64 = 8.0;
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - BOTTOM - TOP;
    let max = nice(
        points
            .iter()
            .map(|p| p.counts.total())
            .max()
            .unwrap_or(0)
            .max(1),
    );
    let bw = plot_w / points.len().max(1) as f64;
    let gap = if bw > 4.0 { 1.0 } else { 0.0 };
    let y_of = |v: u64| TOP + plot_h - (v as f64 / max as f64) * plot_h;
    let all = totals(points);
    let label_at: Vec<usize> = match points.len() {
        0 => vec![],
        1 => vec![0],
        n => vec![0, n / 2, n - 1],
    };
    // (class, x, y, width, height, title) of every bar segment.
    let mut rects: Vec<(String, f64, f64, f64, f64, String)> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let x = LEFT + i as f64 * bw;
        let mut base = 0u64;
        for (o, n) in p.counts.iter().filter(|(_, n)| *n > 0) {
            let (y0, y1) = (y_of(base), y_of(base.saturating_add(n)));
            rects.push((
                format!("o-{}", o.as_str()),
                x,
                y1,
                (bw - gap).max(0.5),
                (y0 - y1).max(0.5),
                format!(
                    "{}: {n} {}",
                    portcullis_core::time::rfc3339(p.start),
                    o.as_str()
                ),
            ));
            base = base.saturating_add(n);
        }
    }
    let summary = format!(
        "Decisions per {span}: {} in all, {} valid, {} refused",
        all.total(),
        all.get(Outcome::Valid),
        all.refused()
    );
    html! {
        figure.chart-figure {
            svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(summary)
                data-valid=(all.get(Outcome::Valid)) data-refused=(all.refused()) {
                title { (summary) }
                @for g in [0u64, max / 2, max] {
                    line.grid x1=(LEFT) x2=(W - 8.0) y1=(format!("{:.1}", y_of(g))) y2=(format!("{:.1}", y_of(g))) {}
                    text x=(LEFT - 6.0) y=(format!("{:.1}", y_of(g) + 4.0)) text-anchor="end" { (g) }
                }
                @for r in &rects {
                    rect class=(r.0) x=(format!("{:.1}", r.1)) y=(format!("{:.1}", r.2))
                        width=(format!("{:.1}", r.3)) height=(format!("{:.1}", r.4)) {
                        title { (r.5) }
                    }
                }
                @for i in &label_at {
                    @if let Some(p) = points.get(*i) {
                        text x=(format!("{:.1}", LEFT + *i as f64 * bw + bw / 2.0)) y=(H - 6.0)
                            text-anchor=(if *i == 0 { "start" } else if *i + 1 == points.len() { "end" } else { "middle" }) {
                            (label_time(p.start, span))
                        }
                    }
                }
            }
            figcaption {
                ul.legend {
                    @for (o, n) in all.iter().filter(|(o, n)| *n > 0 || *o == Outcome::Valid) {
                        li data-outcome=(o.as_str()) data-count=(n) {
                            span class=(format!("sw o-{}", o.as_str())) {}
                            (o.as_str()) " " strong { (n) }
                        }
                    }
                }
            }
            details {
                summary { "The numbers" }
                div.table-wrap {
                    table {
                        thead { tr { th { "Bucket (UTC)" } th.num { "Valid" } th.num { "Refused" } th { "Refusals" } } }
                        tbody {
                            @for p in points.iter().filter(|p| !p.counts.is_empty()) {
                                tr {
                                    td { (portcullis_core::time::rfc3339(p.start)) }
                                    td.num { (p.counts.get(Outcome::Valid)) }
                                    td.num { (p.counts.refused()) }
                                    td {
                                        @for (o, n) in p.counts.iter().filter(|(o, n)| *n > 0 && o.is_refusal()) {
                                            (o.as_str()) " " (n) " "
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(start: i64, valid: u64, revoked: u64) -> UsagePoint {
        let mut counts = OutcomeCounts::default();
        counts.add(Outcome::Valid, valid);
        counts.add(Outcome::Revoked, revoked);
        UsagePoint { start, counts }
    }

    #[test]
    fn buckets_are_filled_with_zeros() {
        let f = filled(&[point(120, 3, 0), point(240, 1, 2)], Span::Minute, 60, 300);
        let starts: Vec<i64> = f.iter().map(|p| p.start).collect();
        assert_eq!(starts, [60, 120, 180, 240, 300]);
        let totals: Vec<u64> = f.iter().map(|p| p.counts.total()).collect();
        assert_eq!(totals, [0, 3, 0, 3, 0]);
    }

    #[test]
    fn charts_say_their_numbers() {
        let f = filled(&[point(120, 3, 0), point(240, 1, 2)], Span::Minute, 60, 300);
        let svg = outcome_chart(&f, Span::Minute).into_string();
        assert!(svg.contains(r#"data-valid="4""#), "{svg}");
        assert!(svg.contains(r#"data-refused="2""#), "{svg}");
        assert!(svg.contains("o-revoked"), "{svg}");
        assert!(!svg.contains("style="), "{svg}");
        let s = sparkline(&f, "in the last hour").into_string();
        assert!(s.contains(r#"data-total="6""#), "{s}");
    }

    #[test]
    fn nice_rounds_up() {
        assert_eq!(nice(1), 1);
        assert_eq!(nice(3), 5);
        assert_eq!(nice(11), 20);
        assert_eq!(nice(500), 500);
        assert_eq!(nice(501), 1000);
    }
}
