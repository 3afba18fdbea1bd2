//! The conformance checks under load: racing reservations, large batches.

use std::sync::Arc;

use chrono::{TimeZone, Utc};

use super::support::{TTL, limit, t};
use crate::{
    GroupBy, LimitKind, Money, QuotaRequest, ReserveOutcome, Scope, StatsQuery, UsageEvent,
    UsageStore, Window, WindowUnit,
};

/// `tasks` tasks race for a limit with room for 7: exactly 7 get a reservation.
pub async fn racing_reservations_never_overshoot(store: Arc<dyn UsageStore>, tasks: usize) {
    let now = Utc::now();
    let l = store
        .add_limit(&limit(
            Scope {
                model: Some("race".into()),
                ..Scope::global()
            },
            LimitKind::Requests,
            10,
            Window::fixed(WindowUnit::Day, 1).unwrap(),
        ))
        .await
        .unwrap();
    store
        .insert_events(&vec![UsageEvent::new("race", now); 3])
        .await
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let req = QuotaRequest::new("race");
            loop {
                match store.reserve(&req, TTL, Utc::now()).await {
                    Ok(ReserveOutcome::Reserved(r)) => {
                        // Half of the winners commit at once, while others still reserve:
                        // a reservation becoming an event must never be counted as neither.
                        if r.id.as_u128() % 2 == 0 {
                            let event = UsageEvent::new("race", Utc::now());
                            loop {
                                match store.commit(r.id, &event).await {
                                    Ok(()) => return Some(None),
                                    Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                                    Err(e) => panic!("commit failed: {e}"),
                                }
                            }
                        }
                        return Some(Some(r.id));
                    }
                    Ok(ReserveOutcome::Denied(_)) => return None,
                    // Busy (a deadlock victim, a lock timeout): try again.
                    Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                    Err(e) => panic!("reserve failed: {e}"),
                }
            }
        }));
    }
    let mut won = Vec::new();
    for h in handles {
        if let Some(held) = h.await.unwrap() {
            won.push(held);
        }
    }
    assert_eq!(won.len(), 7, "exactly the room left is reserved");
    for id in won.into_iter().flatten() {
        assert!(store.release(id).await.unwrap());
    }
    assert!(store.delete_limit(l.id).await.unwrap());
    store
        .purge_before(now + chrono::Duration::days(1))
        .await
        .unwrap();
}

/// More events than one statement may carry go in one call.
pub async fn large_batches(store: &dyn UsageStore) {
    let at = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
    let events: Vec<UsageEvent> = (0..12_345u64)
        .map(|i| {
            UsageEvent::new(
                "bulk",
                at + chrono::Duration::milliseconds(i64::try_from(i).unwrap()),
            )
            .tokens(i, 1)
            .cost(Money::from_micros(i))
        })
        .collect();
    store.insert_events(&events).await.unwrap();
    let rows = store
        .stats(&StatsQuery {
            since: None,
            until: None,
            by: GroupBy::Model,
            top: None,
        })
        .await
        .unwrap();
    let bulk = rows
        .iter()
        .find(|r| r.group.as_deref() == Some("bulk"))
        .unwrap();
    assert_eq!(bulk.requests, 12_345);
    assert_eq!(bulk.prompt_tokens, 12_344 * 12_345 / 2);
    assert_eq!(bulk.cost.micros(), 12_344 * 12_345 / 2);
    // An invalid event refuses the whole batch.
    let mut bad = events[..3].to_vec();
    bad[1].model = String::new();
    assert!(store.insert_events(&bad).await.is_err());
    store.purge_before(t("2030-01-01T00:00:00Z")).await.unwrap();
}
