//! The counters against the sums they replace: a seeded random run of writes, reservations,
//! commits, releases, purges and limit changes, on every database, after each step of which
//! every limit's counted usage must equal the sum of its window's events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use llm_accounting_testkit::TestDatabase;
use llm_accounting_usage::{
    GroupBy, LimitKind, NewLimit, QuotaRequest, ReserveOutcome, Scope, StatsQuery, UsageEvent,
    UsageStore, Window, WindowUnit,
};

use super::super::SeaOrmUsageStore;
use super::super::query;
use crate::StoreOptions;

/// A small deterministic generator (a 64-bit LCG): the same run every time.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

fn windows() -> Vec<Window> {
    vec![
        Window::fixed(WindowUnit::Day, 1).expect("ok"),
        Window::fixed(WindowUnit::Hour, 6).expect("ok"),
        Window::fixed(WindowUnit::Minute, 7).expect("ok"),
        Window::fixed(WindowUnit::Month, 1).expect("ok"),
        Window::rolling(3_600).expect("ok"),
        Window::rolling(86_400).expect("ok"),
        Window::rolling(45).expect("ok"),
        Window::rolling_months(1).expect("ok"),
    ]
}

fn scopes() -> Vec<Scope> {
    vec![
        Scope::global(),
        Scope {
            model: Some("m1".into()),
            ..Scope::global()
        },
        Scope {
            user: Some("u1".into()),
            model: Some("m2".into()),
            ..Scope::global()
        },
    ]
}

fn event(rng: &mut Lcg, at: DateTime<Utc>) -> UsageEvent {
    let model = ["m1", "m2", "m3"][usize::try_from(rng.next(3)).unwrap_or(0)];
    let mut e = UsageEvent::new(model, at).tokens(rng.next(1_000), rng.next(500));
    if rng.next(2) == 0 {
        e = e.user("u1");
    }
    e.cost = llm_accounting_usage::Money::from_micros(rng.next(20_000));
    e
}

/// Every limit's counted usage at `now` equals the sum of its window's events.
async fn counters_match_sums(store: &SeaOrmUsageStore, now: DateTime<Utc>, step: usize) {
    let backend = store.backend();
    for limit in store.limits().await.expect("limits") {
        let counted = super::usage(
            &store.db,
            backend,
            store.schema.events(),
            &limit,
            now,
            false,
        )
        .await
        .expect("counted");
        let (since, until) = limit.window.bounds(now);
        let summed = query::usage(
            &store.db,
            backend,
            store.schema.events(),
            &limit.scope,
            since,
            until,
        )
        .await
        .expect("summed");
        assert_eq!(
            (counted.amounts, counted.oldest),
            (summed.amounts, summed.oldest),
            "{backend:?}, step {step}, limit {} ({} per {})",
            limit.id,
            limit.scope,
            limit.window
        );
    }
}

/// Statistics from the rollups equal those summed from the events, for a period with
/// random ends (or none) and every grouping.
async fn rollups_match_sums(
    store: &SeaOrmUsageStore,
    rng: &mut Lcg,
    now: DateTime<Utc>,
    step: usize,
) {
    let at = |rng: &mut Lcg| {
        (rng.next(5) > 0).then(|| {
            now - chrono::Duration::seconds(i64::try_from(rng.next(4 * 86_400)).unwrap_or(0))
        })
    };
    let (a, b) = (at(rng), at(rng));
    let (since, until) = match (a, b) {
        (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
        other => other,
    };
    for by in [
        GroupBy::Nothing,
        GroupBy::Model,
        GroupBy::User,
        GroupBy::Key,
        GroupBy::Project,
    ] {
        let q = StatsQuery {
            since,
            until,
            by,
            top: None,
        };
        let from_rollups = store.stats(&q).await.expect("stats");
        let mut summed = query::stats(&store.db, store.backend(), &super::super::columns::OWN, &q)
            .await
            .expect("summed");
        if by != GroupBy::Nothing {
            summed.retain(|r| r.requests > 0);
        }
        assert_eq!(from_rollups, summed, "step {step}, {q:?}");
    }
}

async fn run(db: &TestDatabase) {
    let theirs = db.options();
    let options = StoreOptions {
        create_if_missing: true,
        schema: theirs.schema.clone(),
        ..StoreOptions::default()
    };
    let store = SeaOrmUsageStore::connect(db.url(), &options)
        .await
        .expect("open");
    for scope in scopes() {
        for window in windows() {
            store
                .add_limit(&NewLimit {
                    scope: scope.clone(),
                    kind: LimitKind::Requests,
                    max: 1_000_000_000,
                    window,
                })
                .await
                .expect("limit");
        }
    }
    let mut rng = Lcg(7);
    // Past the limits' settling time, so that counters are stored.
    let mut now = Utc::now() + chrono::Duration::minutes(1);
    for step in 0..80 {
        now += chrono::Duration::seconds(i64::try_from(rng.next(1_500)).unwrap_or(0));
        match rng.next(10) {
            0..=2 => {
                let batch: Vec<UsageEvent> = (0..=rng.next(4))
                    .map(|_| {
                        let back = i64::try_from(rng.next(3 * 86_400)).unwrap_or(0);
                        event(&mut rng, now - chrono::Duration::seconds(back))
                    })
                    .collect();
                store.insert_events(&batch).await.expect("insert");
            }
            3..=6 => {
                let e = event(&mut rng, now);
                let mut request = QuotaRequest::new(e.model.clone()).user(e.user.clone());
                request.input_tokens = e.prompt_tokens;
                let ReserveOutcome::Reserved(held) = store
                    .reserve(&request, Duration::from_secs(60), now)
                    .await
                    .expect("reserve")
                else {
                    panic!("the limits are far from reached");
                };
                if rng.next(4) == 0 {
                    store.release(held.id).await.expect("release");
                } else {
                    store.commit(held.id, &e).await.expect("commit");
                }
            }
            7 | 8 => {
                let request = QuotaRequest::new("m2").user(Some("u1"));
                assert!(
                    store
                        .check(&request, now)
                        .await
                        .expect("check")
                        .is_allowed()
                );
            }
            _ if rng.next(3) == 0 => {
                store
                    .purge_before(now - chrono::Duration::hours(30))
                    .await
                    .expect("purge");
            }
            _ => {
                // A limit replaced by one of another window.
                let limits = store.limits().await.expect("limits");
                let old = &limits[usize::try_from(rng.next(limits.len() as u64)).unwrap_or(0)];
                assert!(store.delete_limit(old.id).await.expect("delete"));
                let windows = windows();
                store
                    .add_limit(&NewLimit {
                        scope: old.scope.clone(),
                        kind: LimitKind::Requests,
                        max: 1_000_000_000,
                        window: windows
                            [usize::try_from(rng.next(windows.len() as u64)).unwrap_or(0)],
                    })
                    .await
                    .expect("limit");
            }
        }
        counters_match_sums(&store, now, step).await;
        rollups_match_sums(&store, &mut rng, now, step).await;
    }
    // Rollups built at open for events written before they existed are the same.
    let before: Vec<_> = {
        let q = StatsQuery {
            since: None,
            until: None,
            by: GroupBy::User,
            top: None,
        };
        store.stats(&q).await.expect("stats")
    };
    use sea_orm::ConnectionTrait;
    store
        .db
        .execute_unprepared("DELETE FROM usage_counter_marks WHERE name = 'usage_rollups'")
        .await
        .expect("unmark");
    store
        .db
        .execute_unprepared("DELETE FROM usage_rollups")
        .await
        .expect("forget");
    let reopened = SeaOrmUsageStore::connect(db.url(), &options)
        .await
        .expect("reopen");
    let q = StatsQuery {
        since: None,
        until: None,
        by: GroupBy::User,
        top: None,
    };
    assert_eq!(reopened.stats(&q).await.expect("stats"), before);
    rollups_match_sums(&reopened, &mut rng, now, 999).await;
    // The counters were stored, not only computed.
    let rows = query::one(
        &store.db,
        store.backend(),
        &sea_orm::sea_query::Query::select()
            .expr(sea_orm::sea_query::Expr::cust("COUNT(*)"))
            .from(super::TABLE)
            .to_owned(),
        "count",
    )
    .await
    .expect("count")
    .expect("a row");
    let n: i64 = rows.try_get_by_index(0).expect("a count");
    assert!(n > 10, "{n} counter rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_equal_the_sums_they_replace_on_every_database() {
    for db in TestDatabase::create_all().await {
        let started = std::time::Instant::now();
        run(&db).await;
        eprintln!("{}: {:?}", db.backend(), started.elapsed());
    }
}
