//! The conformance checks of events: round trip through stats and tail, purge.

use std::time::Duration;

use super::support::t;
use crate::{GroupBy, KeyRef, Money, StatsQuery, UsageEvent, UsageStore};

/// Events keep every field exactly (money to the micro-dollar) and come back in stats and tail.
pub async fn events_round_trip(store: &dyn UsageStore) {
    let mut e = UsageEvent::new("gpt-4o", t("2026-01-10T10:00:00.123456Z"))
        .service("openai")
        .user("alice")
        .project("p1")
        .caller("app")
        .tokens(100, 50)
        .cost("0.0125".parse().unwrap())
        .key(KeyRef {
            identity: "openai user=alice".into(),
            version: 3,
        });
    e.session = Some("s-1".into());
    e.cached_tokens = 7;
    e.reasoning_tokens = 9;
    e.execution_time = Some(Duration::from_micros(1_500_000));
    let f = UsageEvent::new("claude", t("2026-01-10T11:00:00Z"))
        .service("anthropic")
        .user("bob")
        .tokens(10, 5)
        .cost(Money::from_micros(1));
    store.insert_events(&[e.clone(), f.clone()]).await.unwrap();
    let tail = store.tail(10).await.unwrap();
    assert_eq!(
        tail,
        vec![f.clone(), e.clone()],
        "tail: newest first, every field kept"
    );
    assert_eq!(store.tail(1).await.unwrap(), vec![f.clone()]);

    let q = |by| StatsQuery {
        since: Some(t("2026-01-01T00:00:00Z")),
        until: Some(t("2026-02-01T00:00:00Z")),
        by,
        top: None,
    };
    let all = store.stats(&q(GroupBy::Nothing)).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].requests, 2);
    assert_eq!(all[0].prompt_tokens, 110);
    assert_eq!(all[0].completion_tokens, 55);
    assert_eq!(all[0].cached_tokens, 7);
    assert_eq!(all[0].reasoning_tokens, 9);
    assert_eq!(all[0].cost, Money::from_micros(12_501));
    let by_model = store.stats(&q(GroupBy::Model)).await.unwrap();
    assert_eq!(by_model.len(), 2);
    assert_eq!(
        by_model[0].group.as_deref(),
        Some("gpt-4o"),
        "highest cost first"
    );
    let by_key = store.stats(&q(GroupBy::Key)).await.unwrap();
    assert!(
        by_key
            .iter()
            .any(|r| r.group.as_deref() == Some("openai user=alice v3"))
    );
    assert!(by_key.iter().any(|r| r.group.is_none()));
    for by in [
        GroupBy::Service,
        GroupBy::User,
        GroupBy::Project,
        GroupBy::Caller,
    ] {
        let rows = store.stats(&q(by)).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), 2, "{by:?}");
    }
    let top = store
        .stats(&StatsQuery {
            top: Some(1),
            ..q(GroupBy::User)
        })
        .await
        .unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].group.as_deref(), Some("alice"));
    let outside = store
        .stats(&StatsQuery {
            since: Some(t("2026-02-01T00:00:00Z")),
            until: None,
            by: GroupBy::Nothing,
            top: None,
        })
        .await
        .unwrap();
    assert!(outside.iter().all(|r| r.requests == 0), "{outside:?}");
    assert_eq!(
        store.purge_before(t("2030-01-01T00:00:00Z")).await.unwrap(),
        2
    );
}

/// Purge deletes only events before the date.
pub async fn purge(store: &dyn UsageStore) {
    store
        .insert_events(&[
            UsageEvent::new("m", t("2026-01-01T00:00:00Z")),
            UsageEvent::new("m", t("2026-02-01T00:00:00Z")),
            UsageEvent::new("m", t("2026-03-01T00:00:00Z")),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.purge_before(t("2026-02-01T00:00:00Z")).await.unwrap(),
        1
    );
    let left = store.tail(10).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|e| e.at >= t("2026-02-01T00:00:00Z")));
    store.purge_before(t("2030-01-01T00:00:00Z")).await.unwrap();
}
