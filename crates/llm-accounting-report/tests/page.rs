//! The page for a fixed data set: the SVG's structure against a stored snapshot, exact money
//! and counts, escaping of hostile names, an empty range, and nothing that could fetch.

use chrono::{DateTime, Utc};
use llm_accounting_report::{PageOptions, ReportQuery, gather, page};
use llm_accounting_usage::{
    GroupBy, LimitKind, MemoryUsageStore, Money, NewLimit, Scope, UsageEvent, UsageStore, Window,
    WindowUnit,
};

fn t(s: &str) -> DateTime<Utc> {
    if s.len() == 10 {
        return format!("{s}T00:00:00Z").parse().expect("date");
    }
    s.parse().expect("time")
}

/// Six days of calls by three models (one with a hostile name), two users, and two limits.
async fn fixture() -> MemoryUsageStore {
    let store = MemoryUsageStore::new();
    let mut events = Vec::new();
    for day in 1..=6u32 {
        for (i, model) in ["gpt-4o", "claude", "<script>alert(1)</script>"]
            .iter()
            .enumerate()
        {
            if (day + i as u32).is_multiple_of(3) {
                continue;
            }
            events.push(
                UsageEvent::new(*model, t(&format!("2026-03-0{day}T1{i}:00:00Z")))
                    .user(if i == 0 { "alice" } else { "bob" })
                    .project("search")
                    .tokens(100 * u64::from(day), 10 * (i as u64 + 1))
                    .cost(Money::from_micros(125_000 * u64::from(day) + i as u64)),
            );
        }
    }
    store.insert_events(&events).await.expect("insert");
    for (scope, kind, max) in [
        (
            Scope {
                user: Some("alice".into()),
                ..Scope::default()
            },
            LimitKind::Cost,
            2_000_000,
        ),
        (Scope::default(), LimitKind::Requests, 10),
    ] {
        store
            .add_limit(&NewLimit {
                scope,
                kind,
                max,
                window: Window::Fixed {
                    unit: WindowUnit::Month,
                    every: 1,
                },
            })
            .await
            .expect("limit");
    }
    store
}

fn query(since: &str, until: &str) -> ReportQuery {
    ReportQuery {
        since: t(since),
        until: t(until),
        by: GroupBy::Model,
        now: t("2026-03-07T12:00:00Z"),
    }
}

/// The charts' structure: one line per element of each chart, its name, class and tooltip
/// (coordinates left out: they are checked by rendering, in the CLI's browser test).
fn structure(html: &str) -> String {
    let mut out = String::new();
    for chart in html.split("<svg class=\"chart\"").skip(1) {
        let chart = &chart[..chart.find("</svg>").expect("closed")];
        out.push_str("svg\n");
        for element in chart.split('<').skip(1) {
            let name: String = element
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
                .collect();
            if name.starts_with('/') || name.is_empty() {
                continue;
            }
            let class = element
                .split("class=\"")
                .nth(1)
                .map(|c| &c[..c.find('"').expect("quote")]);
            let text = if name == "title" || name == "text" {
                element.split('>').nth(1).unwrap_or("")
            } else {
                ""
            };
            out.push_str(&format!(
                "  {name}{}{}\n",
                class.map(|c| format!(" .{c}")).unwrap_or_default(),
                if text.is_empty() {
                    String::new()
                } else {
                    format!(" {text:?}")
                }
            ));
        }
    }
    out
}

#[tokio::test]
async fn the_charts_match_their_snapshot() {
    let store = fixture().await;
    let report = gather(&store, None, &query("2026-03-01", "2026-03-07"))
        .await
        .expect("report");
    let html = page(&report, &PageOptions::default());
    let got = structure(&html);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/charts.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &got).expect("write the snapshot");
    }
    let want = std::fs::read_to_string(path).expect("snapshot (UPDATE_SNAPSHOTS=1 writes it)");
    assert_eq!(
        got, want,
        "the charts' structure changed (UPDATE_SNAPSHOTS=1 to accept)"
    );
}

#[tokio::test]
async fn money_counts_names_and_limits_are_exact_and_escaped() {
    let store = fixture().await;
    let report = gather(&store, None, &query("2026-03-01", "2026-03-07"))
        .await
        .expect("report");
    // Totals as the store's own statistics give them.
    let stats = store
        .stats(&llm_accounting_usage::StatsQuery {
            since: Some(t("2026-03-01T00:00:00Z")),
            until: Some(t("2026-03-07T00:00:00Z")),
            by: GroupBy::Nothing,
            top: None,
        })
        .await
        .expect("stats");
    assert_eq!(report.totals, stats[0]);
    let html = page(&report, &PageOptions::default());
    assert!(
        html.contains(&format!("id=\"total-cost\">${}</div>", stats[0].cost)),
        "exact spend"
    );
    assert!(html.contains(&format!(
        "id=\"total-requests\">{}</div>",
        stats[0].requests
    )));
    // The hostile model name is text, never markup.
    assert!(!html.contains("<script>alert"), "unescaped name");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(
        html.matches("<script>").count(),
        1,
        "only the page's own script"
    );
    // Every limit, with its current window's usage and when it frees up, in UTC.
    assert!(html.contains("#1 cost"), "{html}");
    assert!(html.contains("2026-04-01 00:00 UTC"));
    assert_eq!(report.limits.len(), 2);
    assert_eq!(report.limits[1].used, report.totals.requests);
    // Nothing that could fetch: no src, no external href, a policy that forbids it.
    for needle in ["src=", "href=", "http://", "https://", "@import", "url("] {
        let hits: Vec<&str> = html
            .match_indices(needle)
            .map(|(i, _)| &html[i.saturating_sub(20)..(i + 40).min(html.len())])
            .filter(|ctx| !ctx.contains("http://www.w3.org/2000/svg"))
            .collect();
        assert!(hits.is_empty(), "{needle}: {hits:?}");
    }
    assert!(html.contains("default-src 'none'"));
    // Light, dark and print.
    assert!(html.contains("@media (prefers-color-scheme: dark)"));
    assert!(html.contains("@media print"));
}

#[tokio::test]
async fn an_empty_range_says_so_and_draws_no_chart() {
    let store = fixture().await;
    let report = gather(&store, None, &query("2025-01-01", "2025-02-01"))
        .await
        .expect("report");
    assert!(report.is_empty());
    let html = page(&report, &PageOptions::default());
    assert!(
        html.contains("No usage was recorded from 2025-01-01 00:00 UTC to 2025-02-01 00:00 UTC")
    );
    assert!(!html.contains("<svg class=\"chart\""));
    // The limits are still shown.
    assert!(html.contains("id=\"limits\""));
    // A range the wrong way round, or too long, is refused.
    assert!(
        gather(&store, None, &query("2025-02-01", "2025-01-01"))
            .await
            .is_err()
    );
    assert!(
        gather(&store, None, &query("1990-01-01", "2025-01-01"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_page_stays_small_whatever_the_number_of_events() {
    // A year of days, each with many groups: the page is bounded by days x stacks.
    let store = MemoryUsageStore::new();
    let mut events = Vec::new();
    for day in 0..365i64 {
        for g in 0..40 {
            events.push(
                UsageEvent::new(
                    format!("model-{g}"),
                    t("2025-01-01T06:00:00Z") + chrono::Duration::days(day),
                )
                .user(format!("user-{g}"))
                .tokens(10, 10)
                .cost(Money::from_micros(1_000 + g)),
            );
        }
    }
    store.insert_events(&events).await.expect("insert");
    let report = gather(&store, None, &query("2025-01-01", "2026-01-01"))
        .await
        .expect("report");
    let html = page(&report, &PageOptions::default());
    assert!(html.len() < 3 * 1024 * 1024, "{} bytes", html.len());
    // Eight models and (other) per day, no more.
    assert!(report.series.iter().all(|p| p.totals.group.is_some()));
    let groups: std::collections::BTreeSet<_> = report
        .series
        .iter()
        .map(|p| p.totals.group.clone())
        .collect();
    assert_eq!(groups.len(), 9, "{groups:?}");
    assert_eq!(report.top_users.len(), 10);
}
