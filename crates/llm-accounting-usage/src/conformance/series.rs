//! The conformance check of time series: per period and group, equal to summing each period.

use super::support::t;
use crate::series::summed_per_period;
use crate::{GroupBy, Money, Period, SeriesQuery, StatsQuery, UsageEvent, UsageStore};

/// Points land in the period of their events (UTC calendar), the first and last periods are
/// cut to the range, and every period, grouping and range gives what summing each period's
/// events gives.
pub async fn series_per_period(store: &dyn UsageStore) {
    // Across two hours, two days, a Monday (2026-01-12), a month and a year.
    let spread = [
        ("gpt", "2025-12-31T23:59:59.999999Z", 3),
        ("gpt", "2026-01-01T00:00:00Z", 5),
        ("claude", "2026-01-01T00:30:00Z", 7),
        ("gpt", "2026-01-01T01:15:00Z", 11),
        ("claude", "2026-01-11T23:00:00Z", 13),
        ("gpt", "2026-01-12T00:00:01Z", 17),
        ("gpt", "2026-01-31T12:00:00Z", 19),
        ("claude", "2026-02-01T00:00:00Z", 23),
        ("gpt", "2026-02-14T08:20:00Z", 29),
    ];
    let events: Vec<UsageEvent> = spread
        .iter()
        .map(|(model, at, micros)| {
            UsageEvent::new(*model, t(at))
                .user(if *micros > 10 { "alice" } else { "bob" })
                .tokens(*micros, 1)
                .cost(Money::from_micros(*micros))
        })
        .collect();
    store.insert_events(&events).await.unwrap();

    // Known points.
    let q = |period, by, since: &str, until: &str| SeriesQuery {
        since: t(since),
        until: t(until),
        period,
        by,
    };
    let days = store
        .series(&q(
            Period::Day,
            GroupBy::Nothing,
            "2025-12-31T12:00:00Z",
            "2026-01-02T00:00:00Z",
        ))
        .await
        .unwrap();
    let got: Vec<(String, u64, u64)> = days
        .iter()
        .map(|p| {
            (
                p.start.to_rfc3339(),
                p.totals.requests,
                p.totals.cost.micros(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("2025-12-31T00:00:00+00:00".to_owned(), 1, 3),
            ("2026-01-01T00:00:00+00:00".to_owned(), 3, 23),
        ],
        "days"
    );
    let weeks = store
        .series(&q(
            Period::Week,
            GroupBy::Model,
            "2026-01-05T00:00:00Z",
            "2026-01-19T00:00:00Z",
        ))
        .await
        .unwrap();
    let got: Vec<(String, Option<&str>, u64)> = weeks
        .iter()
        .map(|p| {
            (
                p.start.date_naive().to_string(),
                p.totals.group.as_deref(),
                p.totals.cost.micros(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("2026-01-05".to_owned(), Some("claude"), 13),
            ("2026-01-12".to_owned(), Some("gpt"), 17),
        ],
        "weeks from Monday"
    );
    let months = store
        .series(&q(
            Period::Month,
            GroupBy::Nothing,
            "2026-01-01T00:00:00Z",
            "2026-03-01T00:00:00Z",
        ))
        .await
        .unwrap();
    let got: Vec<(u64, u64)> = months
        .iter()
        .map(|p| (p.totals.requests, p.totals.cost.micros()))
        .collect();
    assert_eq!(
        got,
        [(6, 5 + 7 + 11 + 13 + 17 + 19), (2, 23 + 29)],
        "months"
    );

    // Every period and grouping, ranges cut inside hours and days: as summed per period,
    // and all points together as the range's totals.
    let ranges = [
        ("2025-12-31T23:30:00Z", "2026-02-14T08:20:00.000001Z"),
        ("2026-01-01T00:10:00Z", "2026-01-01T01:20:00Z"),
        ("2026-01-01T00:00:00Z", "2026-01-12T00:00:00Z"),
        ("2025-06-01T00:00:00Z", "2026-06-01T00:00:00Z"),
        ("2026-01-11T22:59:59Z", "2026-01-12T00:00:02Z"),
    ];
    for (since, until) in ranges {
        for period in Period::ALL {
            for by in [GroupBy::Nothing, GroupBy::Model, GroupBy::User] {
                let query = q(period, by, since, until);
                let Ok(expected) = summed_per_period(store, &query).await else {
                    continue; // more hours than a series may have
                };
                let got = store.series(&query).await.unwrap();
                assert_eq!(got, expected, "{period} by {by:?} over {since}..{until}");
                let total = store
                    .stats(&StatsQuery {
                        since: Some(query.since),
                        until: Some(query.until),
                        by: GroupBy::Nothing,
                        top: None,
                    })
                    .await
                    .unwrap();
                let sum: u64 = got.iter().map(|p| p.totals.cost.micros()).sum();
                assert_eq!(
                    sum,
                    total[0].cost.micros(),
                    "{period} over {since}..{until}"
                );
            }
        }
    }
    // A range the wrong way round is refused.
    assert!(
        store
            .series(&q(
                Period::Day,
                GroupBy::Nothing,
                "2026-02-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ))
            .await
            .is_err()
    );
    store.purge_before(t("2030-01-01T00:00:00Z")).await.unwrap();
}
