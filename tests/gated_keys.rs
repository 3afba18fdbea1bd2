//! Quota-gated key hand-out on SQLite, PostgreSQL and MariaDB: the quota is checked before
//! the key is read; a denial is `QuotaExceeded`, audited, and decrypts nothing; a hand-out's
//! usage is attributed to the key version that served it. Strict and local enforcement.

use std::sync::Arc;

use llm_accounting::usage::{
    Accounting, AccountingOptions, CallUsage, GroupBy, LimitKind, NewLimit, QuotaRequest, Scope,
    StatsQuery, Window, WindowUnit,
};
use llm_accounting::{ApiKey, AuditFilter, Enforcement, ErrorKind, KeyIdentity, Settings, Stack};
use llm_accounting_testkit::TestDatabase;

fn settings(db: &TestDatabase, dir: &tempfile::TempDir, enforcement: Enforcement) -> Settings {
    let mut settings = Settings::default();
    settings.database_url = Some(db.url().to_owned());
    settings.data_dir = Some(dir.path().to_owned());
    settings.create_if_missing = true;
    settings.accounting.enforcement = enforcement;
    settings
}

async fn gated(enforcement: Enforcement) {
    for db in TestDatabase::create_all().await {
        let dir = tempfile::tempdir().expect("dir");
        let stack = Stack::from_settings(&settings(&db, &dir, enforcement))
            .await
            .expect("build");
        let (manager, accounting) = (stack.manager(), stack.accounting().expect("accounting"));
        let id = KeyIdentity::from_parts("openai", Some("alice"), None).expect("id");
        manager
            .store(&id, &ApiKey::new("sk-test-FAKE-gated-0123456789".into()))
            .await
            .expect("store v1");
        manager
            .rotate(&id, &ApiKey::new("sk-test-FAKE-gated-v2-0123456".into()))
            .await
            .expect("rotate to v2");
        accounting
            .store()
            .add_limit(&NewLimit {
                scope: Scope {
                    user: Some("alice".into()),
                    model: Some("gpt-4o".into()),
                    ..Scope::global()
                },
                kind: LimitKind::Requests,
                max: 2,
                window: Window::fixed(WindowUnit::Day, 1).expect("window"),
            })
            .await
            .expect("limit");
        // Local enforcement reads limits at synchronisation.
        let accounting = if enforcement == Enforcement::Local {
            accounting.shutdown().await.expect("stop");
            Accounting::start(
                Arc::clone(accounting.store()),
                AccountingOptions::default().enforcement(enforcement),
            )
            .await
            .expect("restart")
        } else {
            accounting.clone()
        };
        let request = QuotaRequest::new("gpt-4o")
            .user(Some("alice"))
            .tokens(100, 0);
        for _ in 0..2 {
            let got = accounting
                .get_key(manager, &id, &request)
                .await
                .expect("within quota");
            assert_eq!(got.key.expose_secret(), "sk-test-FAKE-gated-v2-0123456");
            assert_eq!(got.version, 2);
            got.reservation
                .commit(CallUsage::new(120, 30, "0.0125".parse().expect("money")))
                .await
                .expect("commit");
        }
        manager.clear_cache();
        let denied = accounting
            .get_key(manager, &id, &request)
            .await
            .expect_err("the third is over the limit");
        assert_eq!(
            denied.kind(),
            ErrorKind::QuotaExceeded,
            "{}: {denied}",
            db.backend()
        );
        let line = denied.to_string();
        assert!(
            line.contains("usage 2/2") && line.contains("resets at"),
            "{line}"
        );
        assert_eq!(
            manager.cached_keys(),
            0,
            "a denied hand-out decrypts nothing"
        );
        // Another user's calls are not limited.
        let bob = KeyIdentity::from_parts("openai", Some("bob"), None).expect("id");
        manager
            .store(&bob, &ApiKey::new("sk-test-FAKE-bob-0123456789".into()))
            .await
            .expect("store bob");
        let b = accounting
            .get_key(
                manager,
                &bob,
                &QuotaRequest::new("gpt-4o").user(Some("bob")),
            )
            .await
            .expect("bob is within quota");
        b.reservation.release().await.expect("release");

        accounting.shutdown().await.expect("shutdown");
        manager.shutdown().await.expect("manager shutdown");
        let rows = manager
            .audit_records(&AuditFilter::default())
            .await
            .expect("audit");
        assert!(
            rows.iter().any(|r| r.event.operation == "get"
                && r.event.outcome == "quota_exceeded"
                && r.event
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains("limit #"))),
            "the denial is audited"
        );
        let by_key = accounting
            .store()
            .stats(&StatsQuery {
                since: None,
                until: None,
                by: GroupBy::Key,
                top: None,
            })
            .await
            .expect("stats");
        let row = by_key
            .iter()
            .find(|r| r.group.as_deref() == Some("service \"openai\", user \"alice\" v2"))
            .unwrap_or_else(|| panic!("usage attributed to version 2: {by_key:?}"));
        assert_eq!(row.requests, 2);
        assert_eq!(row.prompt_tokens, 240);
        assert_eq!(row.cost.micros(), 25_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_hand_out_strict() {
    gated(Enforcement::Strict).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_hand_out_local() {
    gated(Enforcement::Local).await;
}

/// The keys of one call: every reservation is held before any key is read, so a denial of
/// one key reads, decrypts and records nothing for the others; hand-outs are attributed to
/// the versions served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_keys_all_or_nothing() {
    let db = TestDatabase::create(llm_accounting_testkit::Backend::Sqlite)
        .await
        .expect("SQLite is always there");
    let dir = tempfile::tempdir().expect("dir");
    let stack = Stack::from_settings(&settings(&db, &dir, Enforcement::Strict))
        .await
        .expect("build");
    let (manager, accounting) = (stack.manager(), stack.accounting().expect("accounting"));
    let openai = KeyIdentity::new("openai").expect("id");
    let anthropic = KeyIdentity::new("anthropic").expect("id");
    for id in [&openai, &anthropic] {
        manager
            .store(
                id,
                &ApiKey::new(format!("sk-test-FAKE-{}-0123456789", id.service())),
            )
            .await
            .expect("store");
    }
    accounting
        .store()
        .add_limit(&NewLimit {
            scope: Scope {
                service: Some("anthropic".into()),
                ..Scope::global()
            },
            kind: LimitKind::Requests,
            max: 1,
            window: Window::fixed(WindowUnit::Day, 1).expect("window"),
        })
        .await
        .expect("limit");
    let ids = [openai.clone(), anthropic.clone()];
    let request = QuotaRequest::new("gpt-4o");
    let got = accounting
        .get_keys(manager, &ids, &request)
        .await
        .expect("within quota");
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].key.expose_secret(),
        "sk-test-FAKE-anthropic-0123456789"
    );
    for g in got {
        assert_eq!(g.version, 1);
        g.reservation
            .commit(CallUsage::default())
            .await
            .expect("commit");
    }
    manager.clear_cache();
    let denied = accounting
        .get_keys(manager, &ids, &request)
        .await
        .expect_err("anthropic is over its limit");
    assert_eq!(denied.kind(), ErrorKind::QuotaExceeded, "{denied}");
    assert_eq!(manager.cached_keys(), 0, "a denied call decrypts nothing");
    let invalid = accounting
        .get_keys(manager, &ids, &QuotaRequest::new(""))
        .await
        .expect_err("no model");
    assert_eq!(invalid.kind(), ErrorKind::InvalidInput, "{invalid}");

    accounting.shutdown().await.expect("shutdown");
    manager.shutdown().await.expect("manager shutdown");
    let by_key = accounting
        .store()
        .stats(&StatsQuery {
            since: None,
            until: None,
            by: GroupBy::Key,
            top: None,
        })
        .await
        .expect("stats");
    let requests = |group: &str| {
        by_key
            .iter()
            .find(|r| r.group.as_deref() == Some(group))
            .map_or(0, |r| r.requests)
    };
    assert_eq!(
        requests("service \"openai\" v1"),
        1,
        "the denied call recorded nothing: {by_key:?}"
    );
    assert_eq!(requests("service \"anthropic\" v1"), 1, "{by_key:?}");
    let rows = manager
        .audit_records(&AuditFilter::default())
        .await
        .expect("audit");
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.event.outcome == "quota_exceeded")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].event.identity.as_ref(), Some(&anthropic));
}
