//! The charts, as inline SVG: drawn by the server, so that a page shows them without
//! JavaScript, from `file://`, offline and in print. Colours are CSS classes (`s0`..`s8`,
//! `requests`, `denials`), so the page's light, dark and print styles choose them; every
//! mark carries a `<title>` (the browser's own tooltip).

use std::fmt::Write;

use chrono::{DateTime, Utc};
use llm_accounting_usage::{SeriesRow, StatsRow, series};

use crate::html::escape;

/// The drawing's size in SVG units (it scales to the page's width).
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 260.0;
/// Room for the y axis' labels, and under the bars for the x axis' labels.
const LEFT: f64 = 72.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 10.0;
const RIGHT: f64 = 8.0;

/// Stack classes: [`crate::data::STACKS`] groups and `(other)`.
pub const CLASSES: usize = 9;

/// The top of the y axis for values up to `max`: four times a round step (1, 2, 2.5 or 5
/// times a power of ten, 2.5 only where it stays whole), so that the four grid lines fall on
/// round values that are exact.
pub fn nice_ceiling(max: u64) -> u64 {
    let quarter = max.div_ceil(4).max(1);
    let mut power = 1u64;
    loop {
        let mut steps = vec![power, power.saturating_mul(2)];
        if power >= 10 {
            steps.push(power / 10 * 25);
        }
        steps.push(power.saturating_mul(5));
        steps.sort_unstable();
        if let Some(step) = steps.into_iter().find(|s| *s >= quarter) {
            return step.saturating_mul(4);
        }
        if power > u64::MAX / 10 {
            return u64::MAX;
        }
        power *= 10;
    }
}

/// Writes the frame: horizontal grid lines with their labels at 0, ¼, ½, ¾ and the top.
fn frame(out: &mut String, top: u64, show: &dyn Fn(u64) -> String) {
    let plot = HEIGHT - TOP - BOTTOM;
    for i in 0..=4u64 {
        let value = top / 4 * i;
        let y = TOP + plot - plot * (i as f64) / 4.0;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&show(value))
        );
    }
}

/// Writes the x axis' labels: at most about twelve days, evenly spaced.
fn day_labels(out: &mut String, days: &[DateTime<Utc>], slot: f64) {
    let every = days.len().div_ceil(12).max(1);
    for (i, d) in days.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let x = LEFT + slot * (i as f64 + 0.5);
        let _ = write!(
            out,
            r#"<text class="axis" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            HEIGHT - 8.0,
            d.format("%m-%d")
        );
    }
}

/// A stacked bar per day: the groups of `points` ([`series::stacks`]), measured by `measure`,
/// shown by `show`; `what` names the chart for screen readers.
pub fn stacked_days(
    what: &str,
    days: &[DateTime<Utc>],
    points: &[SeriesRow],
    measure: fn(&StatsRow) -> u64,
    show: &dyn Fn(u64) -> String,
) -> String {
    let series::Stacks {
        groups: order,
        periods: per_day,
    } = series::stacks(points, measure);
    let max = per_day
        .values()
        .map(|v| v.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let top = nice_ceiling(max);
    let plot = HEIGHT - TOP - BOTTOM;
    let slot = (WIDTH - LEFT - RIGHT) / days.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut out = svg_open(what);
    frame(&mut out, top, show);
    for (d, day) in days.iter().enumerate() {
        let Some(parts) = per_day.get(day) else {
            continue;
        };
        let x = LEFT + slot * d as f64 + (slot - bar) / 2.0;
        let mut base = 0u64;
        for (i, part) in parts.iter().enumerate().filter(|(_, p)| **p > 0) {
            let y0 = plot * (base as f64) / (top as f64);
            base += part;
            let y1 = plot * (base as f64) / (top as f64);
            let name = order[i].as_deref().unwrap_or("-");
            let _ = write!(
                out,
                r#"<rect class="mark s{}" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}"><title>{} {}: {}</title></rect>"#,
                i.min(CLASSES - 1),
                TOP + plot - y1,
                (y1 - y0).max(0.5),
                day.format("%Y-%m-%d"),
                escape(name),
                escape(&show(*part))
            );
        }
    }
    day_labels(&mut out, days, slot);
    out.push_str("</svg>");
    out
}

/// Requests per day, and beside each the day's quota denials.
pub fn activity_days(days: &[DateTime<Utc>], activity: &[crate::data::DayActivity]) -> String {
    let max = activity
        .iter()
        .map(|a| a.requests.max(a.denials))
        .max()
        .unwrap_or(0);
    let top = nice_ceiling(max);
    let plot = HEIGHT - TOP - BOTTOM;
    let slot = (WIDTH - LEFT - RIGHT) / days.len().max(1) as f64;
    let bar = (slot * 0.4).max(0.5);
    let mut out = svg_open("Requests and quota denials per day");
    frame(&mut out, top, &|n| n.to_string());
    for (d, a) in activity.iter().enumerate() {
        let x = LEFT + slot * d as f64 + slot * 0.1;
        for (class, n, dx) in [("requests", a.requests, 0.0), ("denials", a.denials, bar)] {
            if n == 0 {
                continue;
            }
            let h = (plot * (n as f64) / (top as f64)).max(0.5);
            let _ = write!(
                out,
                r#"<rect class="mark {class}" x="{:.1}" y="{:.1}" width="{bar:.1}" height="{h:.1}"><title>{} {class}: {n}</title></rect>"#,
                x + dx,
                TOP + plot - h,
                a.day.format("%Y-%m-%d"),
            );
        }
    }
    day_labels(&mut out, days, slot);
    out.push_str("</svg>");
    out
}

/// A horizontal gauge of `value` out of `max` (a table cell's bar). With `warn`, coloured
/// `near` from 80% and `full` at the maximum (a limit); otherwise plain (a share).
pub fn gauge(value: u64, max: u64, label: &str, warn: bool) -> String {
    let fraction = if max == 0 {
        if value > 0 { 1.0 } else { 0.0 }
    } else {
        (value as f64 / max as f64).min(1.0)
    };
    let class = if !warn {
        "fill"
    } else if max > 0 && value >= max {
        "full"
    } else if fraction >= 0.8 {
        "near"
    } else {
        "fill"
    };
    format!(
        r#"<svg class="gauge" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label="{label}"><rect class="track" x="0" y="0" width="100" height="10"/><rect class="mark {class}" x="0" y="0" width="{:.2}" height="10"><title>{label}</title></rect></svg>"#,
        (fraction * 100.0).max(if value > 0 { 0.5 } else { 0.0 }),
        label = escape(label),
    )
}

/// The opening tag of a chart.
fn svg_open(what: &str) -> String {
    format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(what)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0), 4);
        assert_eq!(nice_ceiling(2), 4);
        assert_eq!(nice_ceiling(5), 8);
        assert_eq!(nice_ceiling(7), 8);
        assert_eq!(nice_ceiling(9), 20);
        assert_eq!(nice_ceiling(84_000), 100_000);
        assert_eq!(nice_ceiling(101), 200);
        assert_eq!(nice_ceiling(2_000_001), 4_000_000);
        for max in [1u64, 3, 17, 99, 1234, 987_654_321] {
            let top = nice_ceiling(max);
            assert!(top >= max && top.is_multiple_of(4), "{max}: {top}");
        }
    }

    #[test]
    fn gauges_mark_what_is_near_or_at_the_maximum() {
        assert!(
            gauge(10, 100, "x", true).contains(r#"class="mark fill" x="0" y="0" width="10.00""#)
        );
        assert!(gauge(85, 100, "x", true).contains("mark near"));
        assert!(gauge(100, 100, "x", true).contains("mark full"));
        assert!(gauge(100, 100, "x", false).contains("mark fill"));
        assert!(gauge(250, 100, "x", true).contains(r#"width="100.00""#));
        assert!(gauge(1, 0, "<b>", true).contains("&lt;b&gt;"));
    }
}
