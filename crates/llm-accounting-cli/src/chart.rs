//! Bar charts in the terminal (`usage stats --period P --chart`): one line per period, the
//! bar stacked by group, within the terminal's width.
//!
//! On a terminal without `NO_COLOR`: full blocks, coloured per group. Otherwise (a pipe, a
//! file, `NO_COLOR`): plain ASCII, one character per group (`#`, `=`, `+`, ...), with a
//! legend naming them.

use chrono::{DateTime, Utc};
use llm_accounting::usage::{Period, SeriesRow, StatsRow, series};

/// What the bars measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Measure {
    /// Cost in USD.
    Cost,
    /// Calls.
    Requests,
    /// Prompt plus completion tokens.
    Tokens,
}

impl Measure {
    /// The amount of `row` this measures (cost in micro-dollars).
    fn of(self, row: &StatsRow) -> u64 {
        match self {
            Measure::Cost => row.cost.micros(),
            Measure::Requests => row.requests,
            Measure::Tokens => row.prompt_tokens.saturating_add(row.completion_tokens),
        }
    }

    /// `amount` as the chart prints it.
    fn show(self, amount: u64) -> String {
        match self {
            Measure::Cost => format!("${}", llm_accounting::usage::Money::from_micros(amount)),
            Measure::Requests | Measure::Tokens => amount.to_string(),
        }
    }
}

/// How bars are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    /// Full blocks in ANSI colours (else ASCII characters).
    pub(crate) color: bool,
    /// Characters a line may take.
    pub(crate) width: usize,
}

impl Style {
    /// Colour on a terminal unless `NO_COLOR` is set (to anything non-empty); the width of
    /// the terminal, or 80 columns into a pipe or a file.
    pub(crate) fn detect() -> Style {
        use std::io::IsTerminal;
        let terminal = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: terminal && !no_color,
            width: crate::print::width().map_or(80, usize::from),
        }
    }
}

/// The characters that tell groups apart without colour, in the order of the legend.
const ASCII: [char; 10] = ['#', '=', '+', '*', '%', '@', 'o', 'x', '~', ':'];

/// ANSI foreground colours, in the order of the legend.
const COLORS: [u8; 10] = [34, 33, 32, 35, 36, 31, 94, 93, 92, 95];

/// Narrowest bar drawn: below it the labels are cut instead.
const MIN_BAR: usize = 10;

/// The label of a period's start: `2026-03-18 13:00Z`, `2026-03-18`, `2026-03` or `2026`
/// (weeks by their Monday).
pub(crate) fn label(period: Period, start: DateTime<Utc>) -> String {
    match period {
        Period::Hour => start.format("%Y-%m-%d %H:00Z").to_string(),
        Period::Day | Period::Week => start.format("%Y-%m-%d").to_string(),
        Period::Month => start.format("%Y-%m").to_string(),
        Period::Year => start.format("%Y").to_string(),
    }
}

/// The chart of `points` over the periods starting at `starts` (every period of the range,
/// those without events drawn empty), stacked by group, with a legend when there are groups.
pub(crate) fn render(
    period: Period,
    starts: &[DateTime<Utc>],
    points: &[SeriesRow],
    measure: Measure,
    style: Style,
) -> String {
    // Groups in order of their total, the largest first (drawn first, from the left).
    let series::Stacks {
        groups,
        periods: mut per_period,
    } = series::stacks(points, |r| measure.of(r));
    let rows: Vec<(String, Vec<u64>, u64)> = starts
        .iter()
        .map(|s| {
            let parts = per_period
                .remove(s)
                .unwrap_or_else(|| vec![0; groups.len()]);
            let total = parts.iter().sum();
            (label(period, *s), parts, total)
        })
        .collect();
    let max = rows.iter().map(|r| r.2).max().unwrap_or(0);
    let label_width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|r| measure.show(r.2).chars().count())
        .max()
        .unwrap_or(0);
    // `LABEL |BAR| VALUE`
    let bar_width = style
        .width
        .saturating_sub(label_width + value_width + 4)
        .max(MIN_BAR);
    let mut out = Vec::with_capacity(rows.len() + 2);
    for (label, parts, total) in &rows {
        let mut bar = String::new();
        let mut drawn = 0usize;
        let mut so_far = 0u64;
        for (i, part) in parts.iter().enumerate() {
            so_far += part;
            // Cumulative rounding: the stack's length is the total's, whatever the parts.
            let end = cells(so_far, max, bar_width);
            let n = end.saturating_sub(drawn);
            if n > 0 {
                bar.push_str(&paint(i, n, style.color));
            }
            drawn = end;
        }
        bar.push_str(&" ".repeat(bar_width - drawn));
        out.push(format!(
            "{label:<label_width$} |{bar}| {:>value_width$}",
            measure.show(*total)
        ));
    }
    let named = !(groups.len() == 1 && groups[0].is_none());
    if named && !groups.is_empty() {
        let legend: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                format!(
                    "{} {}",
                    paint(i, 1, style.color),
                    crate::escape::text(g.as_deref().unwrap_or("-"))
                )
            })
            .collect();
        out.push(String::new());
        out.push(legend.join("  "));
    }
    out.join("\n")
}

/// Cells of a bar of `width` for `amount` out of `max` (rounded to nearest).
fn cells(amount: u64, max: u64, width: usize) -> usize {
    if max == 0 {
        return 0;
    }
    let scaled = u128::from(amount) * width as u128 * 2 / u128::from(max);
    usize::try_from(scaled.div_ceil(2))
        .unwrap_or(width)
        .min(width)
}

/// `n` cells of group `i`: a coloured block run, or its ASCII character (groups past the
/// tenth reuse them).
fn paint(i: usize, n: usize, color: bool) -> String {
    if color {
        format!(
            "\x1b[{}m{}\x1b[0m",
            COLORS[i % COLORS.len()],
            "\u{2588}".repeat(n)
        )
    } else {
        ASCII[i % ASCII.len()].to_string().repeat(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_accounting::usage::Money;

    fn point(start: &str, group: Option<&str>, micros: u64) -> SeriesRow {
        SeriesRow {
            start: start.parse().expect("time"),
            totals: StatsRow {
                group: group.map(str::to_owned),
                requests: 1,
                prompt_tokens: 2,
                completion_tokens: 3,
                cached_tokens: 0,
                reasoning_tokens: 0,
                cost: Money::from_micros(micros),
            },
        }
    }

    #[test]
    fn bars_scale_to_the_largest_period_within_the_width() {
        let d = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        let starts = [
            d("2026-01-01T00:00:00Z"),
            d("2026-01-02T00:00:00Z"),
            d("2026-01-03T00:00:00Z"),
        ];
        let points = [
            point("2026-01-01T00:00:00Z", None, 1_000_000),
            point("2026-01-03T00:00:00Z", None, 500_000),
        ];
        let style = Style {
            color: false,
            width: 40,
        };
        let text = render(Period::Day, &starts, &points, Measure::Cost, style);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for l in &lines {
            assert_eq!(l.chars().count(), 40, "{l:?}");
        }
        assert!(lines[0].starts_with("2026-01-01 |####"), "{text}");
        // 40 = label 10 + " |" + bar + "| " + value 4 ("$0.5", the widest).
        assert!(lines[0].ends_with("|   $1"), "{text}");
        assert_eq!(lines[0].matches('#').count(), 22);
        assert_eq!(lines[1].matches('#').count(), 0, "an empty day");
        assert_eq!(lines[2].matches('#').count(), 11, "half: {text}");
        assert!(text.is_ascii());
    }

    #[test]
    fn stacks_name_their_groups_and_colour_only_when_asked() {
        let d = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        let starts = [d("2026-01-01T00:00:00Z")];
        let points = [
            point("2026-01-01T00:00:00Z", Some("gpt-4o"), 300),
            point("2026-01-01T00:00:00Z", Some("claude"), 100),
        ];
        let plain = Style {
            color: false,
            width: 60,
        };
        let text = render(Period::Month, &starts, &points, Measure::Cost, plain);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("2026-01 |###"), "{text}");
        let hashes = lines[0].matches('#').count();
        let equals = lines[0].matches('=').count();
        // 60 = label 7 + 4 + value 7 ("$0.0004"): a bar of 42, three quarters gpt-4o
        // (31.5, rounded up).
        assert_eq!((hashes, equals), (32, 10), "{text}");
        assert_eq!(lines[2], "# gpt-4o  = claude");
        let colored = render(
            Period::Month,
            &starts,
            &points,
            Measure::Requests,
            Style {
                color: true,
                width: 60,
            },
        );
        assert!(colored.contains("\x1b[34m\u{2588}"), "{colored:?}");
        assert!(colored.contains("\x1b[33m\u{2588}"), "{colored:?}");
    }

    #[test]
    fn labels_name_the_period() {
        let at: DateTime<Utc> = "2026-03-16T13:00:00Z".parse().expect("time");
        assert_eq!(label(Period::Hour, at), "2026-03-16 13:00Z");
        assert_eq!(label(Period::Week, at), "2026-03-16");
        assert_eq!(label(Period::Month, at), "2026-03");
        assert_eq!(label(Period::Year, at), "2026");
    }
}
