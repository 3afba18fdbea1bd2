//! The conformance checks of reservations: hold, commit, release, lapse.

use std::time::Duration;

use chrono::Utc;

use super::support::{TTL, clear_limits, denied, limit};
use crate::{
    LimitKind, QuotaRequest, ReserveOutcome, Scope, UsageEvent, UsageStore, Window, WindowUnit,
};

/// A reservation counts until committed (then the actual usage counts) or released; a lapsed
/// one stops counting.
pub async fn reservations_hold_commit_release(store: &dyn UsageStore) {
    let now = Utc::now();
    store
        .add_limit(&limit(
            Scope {
                user: Some("alice".into()),
                ..Scope::global()
            },
            LimitKind::InputTokens,
            1_000,
            Window::fixed(WindowUnit::Day, 1).unwrap(),
        ))
        .await
        .unwrap();
    let req = QuotaRequest::new("m").user(Some("alice")).tokens(600, 0);
    let ReserveOutcome::Reserved(a) = store.reserve(&req, TTL, now).await.unwrap() else {
        panic!("room for the first");
    };
    let ReserveOutcome::Denied(d) = store.reserve(&req, TTL, now).await.unwrap() else {
        panic!("the held 600 leave no room for 600 more");
    };
    assert_eq!(d.usage, 600);
    assert!(store.release(a.id).await.unwrap());
    assert!(!store.release(a.id).await.unwrap());
    let ReserveOutcome::Reserved(b) = store.reserve(&req, TTL, now).await.unwrap() else {
        panic!("released budget is free again");
    };
    let actual = UsageEvent::new("m", now).user("alice").tokens(300, 10);
    store.commit(b.id, &actual).await.unwrap();
    let u = store
        .usage(
            &Scope {
                user: Some("alice".into()),
                ..Scope::global()
            },
            now - chrono::Duration::hours(1),
            now + chrono::Duration::hours(1),
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        u.amounts.input_tokens, 300,
        "the actual usage replaced the estimate"
    );
    assert_eq!(u.amounts.requests, 1);
    // A reservation that lapsed stops counting.
    let ReserveOutcome::Reserved(_) = store
        .reserve(&req, Duration::from_secs(1), now)
        .await
        .unwrap()
    else {
        panic!("300 + 600 fit");
    };
    assert!(denied(&store.check(&req, now).await.unwrap()));
    assert!(
        store
            .check(&req, now + chrono::Duration::seconds(2))
            .await
            .unwrap()
            .is_allowed()
    );
    clear_limits(store).await;
    store
        .purge_before(now + chrono::Duration::days(1))
        .await
        .unwrap();
}
