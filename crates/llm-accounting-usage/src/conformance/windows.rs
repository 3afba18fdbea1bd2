//! The conformance checks of windows: fixed windows reset, rolling windows and months.

use super::support::{clear_limits, denied, limit, t};
use crate::{
    LimitKind, QuotaDecision, QuotaRequest, Scope, UsageEvent, UsageStore, Window, WindowUnit,
};

/// Usage in an earlier fixed window does not count; the denial names the window's end.
pub async fn fixed_windows_reset(store: &dyn UsageStore) {
    let six_hours = Window::fixed(WindowUnit::Hour, 6).unwrap();
    store
        .add_limit(&limit(Scope::global(), LimitKind::Requests, 1, six_hours))
        .await
        .unwrap();
    store
        .insert_events(&[UsageEvent::new("m", t("2026-05-20T11:59:59.999999Z"))])
        .await
        .unwrap();
    let req = QuotaRequest::new("m");
    let QuotaDecision::Denied(d) = store.check(&req, t("2026-05-20T11:00:00Z")).await.unwrap()
    else {
        panic!("same window");
    };
    assert_eq!(d.resets_at, t("2026-05-20T12:00:00Z"));
    assert!(
        store
            .check(&req, t("2026-05-20T12:00:00Z"))
            .await
            .unwrap()
            .is_allowed()
    );
    // Month windows.
    clear_limits(store).await;
    store
        .add_limit(&limit(
            Scope::global(),
            LimitKind::Requests,
            1,
            Window::fixed(WindowUnit::Month, 1).unwrap(),
        ))
        .await
        .unwrap();
    assert!(denied(
        &store.check(&req, t("2026-05-31T23:59:59Z")).await.unwrap()
    ));
    assert!(
        store
            .check(&req, t("2026-06-01T00:00:00Z"))
            .await
            .unwrap()
            .is_allowed()
    );
    clear_limits(store).await;
    store.purge_before(t("2030-01-01T00:00:00Z")).await.unwrap();
}

/// With a global limit of `max` requests over `window` and one event at each of `events`:
/// a call at `denied_at` is refused (`why` otherwise), naming `resets_at`, and a call at
/// `allowed_at` goes through. The limit reads back with its window; the store is left empty.
async fn window_holds_until(
    store: &dyn UsageStore,
    (max, window): (u64, Window),
    events: &[&str],
    (denied_at, resets_at, allowed_at): (&str, &str, &str),
    why: &str,
) {
    store
        .add_limit(&limit(Scope::global(), LimitKind::Requests, max, window))
        .await
        .unwrap();
    assert_eq!(store.limits().await.unwrap()[0].window, window);
    let events: Vec<UsageEvent> = events
        .iter()
        .map(|at| UsageEvent::new("m", t(at)))
        .collect();
    store.insert_events(&events).await.unwrap();
    let req = QuotaRequest::new("m");
    let QuotaDecision::Denied(d) = store.check(&req, t(denied_at)).await.unwrap() else {
        panic!("{why}");
    };
    assert_eq!(d.resets_at, t(resets_at));
    assert!(store.check(&req, t(allowed_at)).await.unwrap().is_allowed());
    clear_limits(store).await;
    store.purge_before(t("2030-01-01T00:00:00Z")).await.unwrap();
}

/// A rolling window counts the last duration, across calendar boundaries, and resets when
/// its oldest usage leaves it.
pub async fn rolling_window_across_boundary(store: &dyn UsageStore) {
    window_holds_until(
        store,
        (2, Window::rolling(24 * 3600).unwrap()),
        &["2026-05-20T22:00:00Z", "2026-05-21T01:00:00Z"],
        (
            "2026-05-21T10:00:00Z",
            "2026-05-21T22:00:00Z",
            "2026-05-21T22:00:01Z",
        ),
        "both events are in the last 24 hours, across midnight",
    )
    .await;
}

/// A window of months from the first: usage from the first of last month counts until the
/// end of this one.
pub async fn rolling_months_from_the_first(store: &dyn UsageStore) {
    window_holds_until(
        store,
        (1, Window::rolling_months(1).unwrap()),
        &["2026-04-01T00:00:00Z"],
        (
            "2026-05-31T23:00:00Z",
            "2026-06-01T00:00:00Z",
            "2026-06-01T00:00:00Z",
        ),
        "April counts in May",
    )
    .await;
}
