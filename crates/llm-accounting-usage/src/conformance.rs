//! The conformance suite of [`UsageStore`]: every implementation's tests call [`run`] (or the
//! single checks) on a fresh, empty store. Panics on the first failure.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{
    GroupBy, KeyRef, LimitKind, Money, NewLimit, QuotaDecision, QuotaRequest, ReserveOutcome,
    Scope, StatsQuery, UsageEvent, UsageStore, Window, WindowUnit,
};

const TTL: Duration = Duration::from_secs(600);

mod load;
pub use load::{large_batches, racing_reservations_never_overshoot};

pub(crate) fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub(crate) fn limit(scope: Scope, kind: LimitKind, max: u64, window: Window) -> NewLimit {
    NewLimit {
        scope,
        kind,
        max,
        window,
    }
}

async fn clear_limits(store: &dyn UsageStore) {
    for l in store.limits().await.unwrap() {
        assert!(store.delete_limit(l.id).await.unwrap());
    }
}

fn denied(d: &QuotaDecision) -> bool {
    !d.is_allowed()
}

/// Every check, in order, on one empty store.
pub async fn run(store: Arc<dyn UsageStore>) {
    events_round_trip(&*store).await;
    limits_round_trip(&*store).await;
    every_scope_and_kind(&*store).await;
    fixed_windows_reset(&*store).await;
    rolling_window_across_boundary(&*store).await;
    exemptions_by_precedence(&*store).await;
    rolling_months_from_the_first(&*store).await;
    reservations_hold_commit_release(&*store).await;
    racing_reservations_never_overshoot(Arc::clone(&store), 40).await;
    large_batches(&*store).await;
    purge(&*store).await;
}

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

/// Limits are stored with every field and deleted by id.
pub async fn limits_round_trip(store: &dyn UsageStore) {
    let new = limit(
        Scope {
            service: Some("openai".into()),
            model: Some("gpt-4o".into()),
            user: Some("alice".into()),
            project: Some("p".into()),
            caller: Some("c".into()),
            key: Some("openai user=alice".into()),
            no_project: false,
        },
        LimitKind::Cost,
        12_500,
        Window::fixed(WindowUnit::Hour, 6).unwrap(),
    );
    let a = store.add_limit(&new).await.unwrap();
    let b = store
        .add_limit(&limit(
            Scope::global(),
            LimitKind::TotalTokens,
            5,
            Window::rolling(3600).unwrap(),
        ))
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    let listed = store.limits().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].scope, new.scope);
    assert_eq!(listed[0].kind, LimitKind::Cost);
    assert_eq!(listed[0].max, 12_500);
    assert_eq!(listed[0].window, new.window);
    assert_eq!(listed[1].window, Window::Rolling { seconds: 3600 });
    assert!(store.delete_limit(a.id).await.unwrap());
    assert!(!store.delete_limit(a.id).await.unwrap());
    clear_limits(store).await;
    assert!(store.limits().await.unwrap().is_empty());
}

/// A limit at each scope (and a combination) counts only its own calls; each kind counts its
/// own amount.
pub async fn every_scope_and_kind(store: &dyn UsageStore) {
    let now = t("2026-05-20T12:00:00Z");
    let day = Window::fixed(WindowUnit::Day, 1).unwrap();
    let base = UsageEvent::new("gpt-4o", t("2026-05-20T08:00:00Z"))
        .service("openai")
        .user("alice")
        .project("p1")
        .caller("app")
        .tokens(100, 40)
        .cost("0.5".parse().unwrap())
        .key(KeyRef {
            identity: "openai".into(),
            version: 1,
        });
    store
        .insert_events(&[base.clone(), base.clone()])
        .await
        .unwrap();
    let matching = QuotaRequest::new("gpt-4o")
        .service(Some("openai"))
        .user(Some("alice"))
        .project(Some("p1"))
        .caller(Some("app"))
        .key(Some("openai"));
    let scopes: Vec<(&str, Scope, QuotaRequest)> = vec![
        ("global", Scope::global(), QuotaRequest::new("other")),
        (
            "service",
            Scope {
                service: Some("openai".into()),
                ..Scope::global()
            },
            QuotaRequest::new("gpt-4o").service(Some("mistral")),
        ),
        (
            "model",
            Scope {
                model: Some("gpt-4o".into()),
                ..Scope::global()
            },
            QuotaRequest::new("gpt-4o-mini"),
        ),
        (
            "user",
            Scope {
                user: Some("alice".into()),
                ..Scope::global()
            },
            QuotaRequest::new("gpt-4o").user(Some("bob")),
        ),
        (
            "project",
            Scope {
                project: Some("p1".into()),
                ..Scope::global()
            },
            QuotaRequest::new("gpt-4o").project(Some("p2")),
        ),
        (
            "caller",
            Scope {
                caller: Some("app".into()),
                ..Scope::global()
            },
            QuotaRequest::new("gpt-4o").caller(Some("batch")),
        ),
        (
            "key",
            Scope {
                key: Some("openai".into()),
                ..Scope::global()
            },
            QuotaRequest::new("gpt-4o").key(Some("openai user=bob")),
        ),
        (
            "user+model",
            Scope {
                user: Some("alice".into()),
                model: Some("gpt-4o".into()),
                ..Scope::global()
            },
            QuotaRequest::new("gpt-4o-mini").user(Some("alice")),
        ),
    ];
    for (name, scope, outside) in scopes {
        // Two requests used: a maximum of 2 refuses the next matching call.
        store
            .add_limit(&limit(scope.clone(), LimitKind::Requests, 2, day))
            .await
            .unwrap();
        let d = store.check(&matching, now).await.unwrap();
        let QuotaDecision::Denied(d) = d else {
            panic!("{name}: the matching call must be refused");
        };
        assert_eq!((d.usage, d.max), (2, 2), "{name}");
        assert_eq!(d.resets_at, t("2026-05-21T00:00:00Z"), "{name}");
        assert_eq!(d.limit.scope, scope, "{name}");
        if name != "global" {
            assert!(
                store.check(&outside, now).await.unwrap().is_allowed(),
                "{name}: a call outside the scope is not counted"
            );
        }
        clear_limits(store).await;
    }
    // Kinds: 200 input, 80 output, 280 total tokens, $1 used.
    for (kind, max, request, allowed) in [
        (
            LimitKind::InputTokens,
            250,
            matching.clone().tokens(50, 0),
            true,
        ),
        (
            LimitKind::InputTokens,
            250,
            matching.clone().tokens(51, 0),
            false,
        ),
        (LimitKind::OutputTokens, 80, matching.clone(), false),
        (
            LimitKind::OutputTokens,
            81,
            matching.clone().tokens(0, 1),
            true,
        ),
        (
            LimitKind::TotalTokens,
            290,
            matching.clone().tokens(5, 5),
            true,
        ),
        (
            LimitKind::TotalTokens,
            290,
            matching.clone().tokens(6, 5),
            false,
        ),
        (LimitKind::Cost, 1_000_000, matching.clone(), false),
        (
            LimitKind::Cost,
            1_500_000,
            matching.clone().cost("0.5".parse().unwrap()),
            true,
        ),
        (
            LimitKind::Cost,
            1_500_000,
            matching.clone().cost("0.500001".parse().unwrap()),
            false,
        ),
    ] {
        store
            .add_limit(&limit(Scope::global(), kind, max, day))
            .await
            .unwrap();
        let decision = store.check(&request, now).await.unwrap();
        assert_eq!(
            decision.is_allowed(),
            allowed,
            "{kind} max {max}: {decision:?}"
        );
        clear_limits(store).await;
    }
    store.purge_before(t("2030-01-01T00:00:00Z")).await.unwrap();
}

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

/// An unlimited limit exempts the calls in its scope from less specific limits and from
/// those as specific with a higher id, not from more specific ones; reservations obey it.
pub async fn exemptions_by_precedence(store: &dyn UsageStore) {
    let day = Window::fixed(WindowUnit::Day, 1).unwrap();
    let scope = |model: Option<&str>, user: Option<&str>| Scope {
        model: model.map(Into::into),
        user: user.map(Into::into),
        ..Scope::global()
    };
    let one = |s: Scope| limit(s, LimitKind::Requests, 1, day);
    let free = |s: Scope| limit(s, LimitKind::Requests, crate::Limit::UNLIMITED, day);
    for l in [
        one(Scope::global()),
        free(scope(None, Some("alice"))),
        one(scope(Some("m"), Some("alice"))),
        one(scope(Some("x"), None)),
        free(scope(None, Some("dan"))),
    ] {
        store.add_limit(&l).await.unwrap();
    }
    let listed = store.limits().await.unwrap();
    assert_eq!(listed.iter().filter(|l| l.is_unlimited()).count(), 2);
    store
        .insert_events(&[
            UsageEvent::new("m", t("2026-05-20T08:00:00Z")).user("alice"),
            UsageEvent::new("x", t("2026-05-20T08:00:00Z")).user("bob"),
        ])
        .await
        .unwrap();
    let now = t("2026-05-20T12:00:00Z");
    let decide = |model: &str, user: &str| QuotaRequest::new(model).user(Some(user.to_owned()));
    let limit_of = |d: QuotaDecision| match d {
        QuotaDecision::Denied(d) => Some(d.limit.scope.to_string()),
        QuotaDecision::Allowed => None,
    };
    for (model, user, refused_by) in [
        // The global limit (2 calls today, at most 1).
        ("y", "bob", Some("global")),
        // Exempt from the global limit...
        ("y", "alice", None),
        // ... not from one more specific than the exemption.
        ("m", "alice", Some("model=m user=alice")),
        // As specific as dan's exemption, and set before it.
        ("x", "dan", Some("model=x")),
        ("y", "dan", None),
    ] {
        let got = limit_of(store.check(&decide(model, user), now).await.unwrap());
        assert_eq!(got.as_deref(), refused_by, "{model} by {user}");
    }
    // A reservation of an exempt call holds nothing against the limits it skips.
    let ReserveOutcome::Reserved(r) = store
        .reserve(&decide("y", "alice"), TTL, now)
        .await
        .unwrap()
    else {
        panic!("exempt");
    };
    assert!(store.release(r.id).await.unwrap());
    clear_limits(store).await;
    store.purge_before(t("2030-01-01T00:00:00Z")).await.unwrap();
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
