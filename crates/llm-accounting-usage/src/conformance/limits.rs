//! The conformance checks of limits: round trip, every scope and kind, exemptions.

use super::support::{TTL, clear_limits, limit, t};
use crate::{
    KeyRef, LimitKind, QuotaDecision, QuotaRequest, ReserveOutcome, Scope, UsageEvent, UsageStore,
    Window, WindowUnit,
};

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
