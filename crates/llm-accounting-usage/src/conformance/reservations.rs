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

/// Reservations committed together ([`UsageStore::commit_many`]) each turn into their event,
/// whether the store writes them in one transaction or one by one; an invalid event in the
/// group commits nothing.
pub async fn commits_together(store: &dyn UsageStore) {
    let now = Utc::now();
    store
        .add_limit(&limit(
            Scope {
                user: Some("bob".into()),
                ..Scope::global()
            },
            LimitKind::Requests,
            3,
            Window::fixed(WindowUnit::Day, 1).unwrap(),
        ))
        .await
        .unwrap();
    let req = QuotaRequest::new("m").user(Some("bob")).tokens(10, 0);
    let mut held = Vec::new();
    for _ in 0..3 {
        let ReserveOutcome::Reserved(r) = store.reserve(&req, TTL, now).await.unwrap() else {
            panic!("three fit");
        };
        held.push(r.id);
    }
    assert!(denied(&store.check(&req, now).await.unwrap()), "three held");
    let bob = Scope {
        user: Some("bob".into()),
        ..Scope::global()
    };
    let window = (
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
    );
    // A bad event (a model name past the maximum) refuses the whole group.
    let bad = UsageEvent::new("m".repeat(300), now).user("bob");
    let good = |i: u64| UsageEvent::new("m", now).user("bob").tokens(i, 1);
    assert!(
        store
            .commit_many(&[(held[0], good(1)), (held[1], bad)])
            .await
            .is_err()
    );
    // (Had the group's first event been written, the totals below would count four calls.)
    assert!(denied(&store.check(&req, now).await.unwrap()), "still held");
    store
        .commit_many(&[(held[0], good(1)), (held[1], good(2)), (held[2], good(3))])
        .await
        .unwrap();
    let u = store.usage(&bob, window.0, window.1, now).await.unwrap();
    assert_eq!(
        (u.amounts.requests, u.amounts.input_tokens),
        (3, 6),
        "each estimate replaced by its call's usage, once"
    );
    assert!(denied(&store.check(&req, now).await.unwrap()), "three used");
    store.commit_many(&[]).await.unwrap();
    clear_limits(store).await;
    store
        .purge_before(now + chrono::Duration::days(1))
        .await
        .unwrap();
}

/// Requests decided together ([`UsageStore::reserve_many`]) are decided as one by one, in
/// order: each sees those granted before it, exempted calls included (they count against the
/// limits they are exempt from); a denial holds nothing.
pub async fn reserved_together(store: &dyn UsageStore) {
    let now = Utc::now();
    let day = Window::fixed(WindowUnit::Day, 1).unwrap();
    let carol = |user: &str| Scope {
        project: Some("together".into()),
        user: Some(user.into()),
        ..Scope::global()
    };
    let project = Scope {
        project: Some("together".into()),
        ..Scope::global()
    };
    store
        .add_limit(&limit(project.clone(), LimitKind::Requests, 3, day))
        .await
        .unwrap();
    store
        .add_limit(&limit(
            carol("vip"),
            LimitKind::Requests,
            crate::Limit::UNLIMITED,
            day,
        ))
        .await
        .unwrap();
    let ask = |user: &str| {
        QuotaRequest::new("m")
            .project(Some("together"))
            .user(Some(user))
    };
    let asks = [
        ask("eve"),
        ask("vip"),
        ask("vip"),
        ask("eve"),
        ask("vip"),
        ask("eve"),
    ];
    let outcomes = store.reserve_many(&asks, TTL, now).await.unwrap();
    let granted: Vec<bool> = outcomes
        .iter()
        .map(|o| matches!(o, ReserveOutcome::Reserved(_)))
        .collect();
    // eve (1 of 3), vip exempt (2), vip exempt (3), eve: 4 > 3 refused, vip exempt, eve
    // refused.
    assert_eq!(granted, [true, true, true, false, true, false]);
    let ReserveOutcome::Denied(d) = &outcomes[3] else {
        unreachable!()
    };
    assert_eq!(
        (d.usage, d.max),
        (3, 3),
        "the exempt calls count against the project"
    );
    assert!(denied(&store.check(&ask("eve"), now).await.unwrap()));
    assert!(store.reserve_many(&[], TTL, now).await.unwrap().is_empty());
    for o in outcomes {
        if let ReserveOutcome::Reserved(r) = o {
            assert!(store.release(r.id).await.unwrap());
        }
    }
    assert!(
        store.check(&ask("eve"), now).await.unwrap().is_allowed(),
        "released"
    );
    clear_limits(store).await;
}
