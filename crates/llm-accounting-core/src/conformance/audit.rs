//! The [`AuditLog`] conformance suite.
//!
//! It may run on a log that already holds rows (a shared database, or the suite run twice):
//! it never assumes the chain starts at 1 and tells its own events apart by a random tag in
//! their service, user and operation names. It expects no other writer during the run.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use futures_util::future::join_all;
use uuid::Uuid;

use crate::KeyIdentity;
use crate::audit::{
    AuditChain, AuditEvent, AuditFilter, AuditLog, AuditRecord, GENESIS_HASH, RecordRevision,
    record_hash, verify_chain,
};

/// Every record, oldest first.
async fn all(log: &dyn AuditLog) -> Vec<AuditRecord> {
    log.records(&AuditFilter::default())
        .await
        .expect("read every audit record")
}

/// (seq, hash) of the last record, or (0, genesis) for an empty log.
fn end(records: &[AuditRecord]) -> (u64, String) {
    records
        .last()
        .map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()))
}

/// The records `filter` selects.
async fn read(log: &dyn AuditLog, filter: AuditFilter) -> Vec<AuditRecord> {
    log.records(&filter)
        .await
        .expect("read filtered audit records")
}

/// The records after `seq`.
fn after(records: Vec<AuditRecord>, seq: u64) -> Vec<AuditRecord> {
    records.into_iter().filter(|r| r.seq > seq).collect()
}

fn events(records: &[AuditRecord]) -> Vec<AuditEvent> {
    records.iter().map(|r| r.event.clone()).collect()
}

/// Asserts that `records` follow the record (`seq`, `hash`) one by one, each hash correct.
fn assert_follows(records: &[AuditRecord], (mut seq, mut hash): (u64, String), what: &str) {
    for r in records {
        assert_eq!(r.seq, seq + 1, "{what}: sequence numbers are contiguous");
        assert_eq!(
            r.prev_hash, hash,
            "{what}: record {} links to its predecessor",
            r.seq
        );
        assert_eq!(
            r.hash,
            record_hash(r.seq, &r.prev_hash, &r.event),
            "{what}: record {} carries its own hash",
            r.seq
        );
        seq = r.seq;
        hash.clone_from(&r.hash);
    }
}

/// Runs every check against `log`, appending about 5,060 records.
pub async fn run(log: &dyn AuditLog) {
    let tag = Uuid::new_v4().simple().to_string();
    let tag = &tag[..12];
    let service = format!("conf-{tag}");
    let other_service = format!("conf-{tag}-b");
    let alice = format!("alice-{tag}");
    let bob = format!("bob-{tag}");
    // Operation names are short (at most 32 characters in the store).
    let op = format!("op-{tag}");
    let other_op = format!("op2-{tag}");
    let id = |service: &str, user: Option<&str>, project: Option<&str>| {
        KeyIdentity::from_parts(service, user, project).expect("valid identity")
    };

    // An empty append is a no-op.
    let before = all(log).await;
    verify_chain(&before).expect("the chain verifies before the suite writes");
    log.append(&[], &AuditChain::plain())
        .await
        .expect("an empty append succeeds");
    assert_eq!(all(log).await, before, "an empty append changes nothing");

    // Events with and without identity, provider, master key and detail; timestamps with
    // microseconds, one second apart, in the past so that `since` can pick among them.
    let base: DateTime<Utc> =
        Utc::now().trunc_subsecs(0) - Duration::hours(1) + Duration::microseconds(123_457);
    let at = |i: i64| base + Duration::seconds(i);
    let (record_a, record_b) = (Uuid::new_v4(), Uuid::new_v4());
    let full = AuditEvent {
        at: at(0),
        operation: op.clone(),
        identity: Some(id(&service, Some(&alice), Some("proj"))),
        principal: "alice@example.com".into(),
        outcome: "ok".into(),
        provider: Some("aws".into()),
        master_key_ref: Some("arn:aws:kms:us-east-1:123456789012:key/conformance".into()),
        detail: Some("cache miss, version 3 — déjà vu".into()),
        count: 1,
        first_at: None,
        record: Some(RecordRevision {
            id: record_a,
            revision: 3,
        }),
    };
    let bare = AuditEvent {
        at: at(1),
        operation: op.clone(),
        identity: None,
        principal: "-".into(),
        outcome: "unavailable".into(),
        provider: None,
        master_key_ref: None,
        detail: None,
        count: 1,
        first_at: None,
        record: None,
    };
    let service_only = AuditEvent {
        at: at(2),
        operation: other_op.clone(),
        identity: Some(id(&service, None, None)),
        principal: "-".into(),
        outcome: "not_found".into(),
        provider: None,
        master_key_ref: None,
        detail: Some(String::new()),
        count: 1,
        first_at: None,
        record: None,
    };
    let bob_other = AuditEvent {
        at: at(3),
        operation: op.clone(),
        identity: Some(id(&other_service, Some(&bob), None)),
        principal: "bob".into(),
        outcome: "ok".into(),
        provider: Some("gcp".into()),
        master_key_ref: Some("projects/p/locations/global/keyRings/r/cryptoKeys/k".into()),
        detail: None,
        // An aggregated row: 12 events, the first 1.5 s before the last (before `at(2)`, so
        // that the `since` check below shows `since` compares the last time).
        count: 12,
        first_at: Some(at(3) - Duration::microseconds(1_500_001)),
        // Both an aggregate and a record (not an outcome a manager writes; the log keeps it).
        record: Some(RecordRevision {
            id: record_b,
            revision: u64::from(u32::MAX) + 7,
        }),
    };
    let alice_other = AuditEvent {
        at: at(4),
        operation: other_op.clone(),
        identity: Some(id(&other_service, Some(&alice), None)),
        principal: "alice@example.com".into(),
        outcome: "disabled".into(),
        provider: None,
        master_key_ref: None,
        detail: Some("version 1".into()),
        count: 1,
        first_at: None,
        record: None,
    };
    let first_batch = [full.clone(), bare.clone(), service_only.clone()];
    let second_batch = [bob_other.clone(), alice_other.clone()];

    // Appended and read back in order, continuing the chain from its current end.
    let start = end(&before);
    log.append(&first_batch, &AuditChain::plain())
        .await
        .expect("append three events");
    let mine = after(all(log).await, start.0);
    assert_eq!(events(&mine), first_batch, "read back exactly, in order");
    assert_follows(&mine, start.clone(), "first append");
    log.append(&second_batch, &AuditChain::plain())
        .await
        .expect("append two events");
    let mine = after(all(log).await, start.0);
    let written: Vec<AuditEvent> = first_batch.iter().chain(&second_batch).cloned().collect();
    assert_eq!(
        events(&mine),
        written,
        "identity, provider, master key, detail, count and microsecond timestamps (first and \
         last) round-trip"
    );
    assert_follows(&mine, start.clone(), "second append");
    let everything = all(log).await;
    assert_eq!(
        verify_chain(&everything),
        Ok(everything.len() as u64),
        "the whole chain verifies"
    );

    // Each filter field filters; they combine; names compare exactly.
    let ours = |records: Vec<AuditRecord>| events(&after(records, start.0));
    let by_service = read(
        log,
        AuditFilter {
            service: Some(service.clone()),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(
        events(&by_service),
        [full.clone(), service_only.clone()],
        "service filter (records without identity never match)"
    );
    let by_user = read(
        log,
        AuditFilter {
            user: Some(alice.clone()),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(
        events(&by_user),
        [full.clone(), alice_other.clone()],
        "user filter"
    );
    let by_operation = read(
        log,
        AuditFilter {
            operation: Some(op.clone()),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(
        events(&by_operation),
        [full.clone(), bare.clone(), bob_other.clone()],
        "operation filter"
    );
    let since = read(
        log,
        AuditFilter {
            since: Some(at(2)),
            ..AuditFilter::default()
        },
    )
    .await;
    assert!(
        since.iter().all(|r| r.event.at >= at(2)),
        "since filter: nothing older"
    );
    assert_eq!(
        ours(since),
        [service_only.clone(), bob_other.clone(), alice_other.clone()],
        "since filter: at or after, to the microsecond"
    );
    let just_after = read(
        log,
        AuditFilter {
            since: Some(at(2) + Duration::microseconds(1)),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(
        ours(just_after),
        [bob_other.clone(), alice_other.clone()],
        "since filter: one microsecond later excludes the record at that time"
    );
    let combined = read(
        log,
        AuditFilter {
            service: Some(other_service.clone()),
            user: Some(alice.clone()),
            operation: Some(other_op.clone()),
            since: Some(at(4)),
        },
    )
    .await;
    assert_eq!(events(&combined), [alice_other], "filters combine");
    let none = read(
        log,
        AuditFilter {
            service: Some(other_service.clone()),
            user: Some(alice.clone()),
            operation: Some(op.clone()),
            ..AuditFilter::default()
        },
    )
    .await;
    assert!(none.is_empty(), "filters combine with AND: {none:?}");
    for filter in [
        AuditFilter {
            service: Some(service.to_uppercase()),
            ..AuditFilter::default()
        },
        AuditFilter {
            user: Some(alice.to_uppercase()),
            ..AuditFilter::default()
        },
        AuditFilter {
            operation: Some(op.to_uppercase()),
            ..AuditFilter::default()
        },
        AuditFilter {
            service: Some(format!("{service}%")),
            ..AuditFilter::default()
        },
        AuditFilter {
            service: Some(format!("conf-{}_", &tag[..11])),
            ..AuditFilter::default()
        },
    ] {
        let found = read(log, filter.clone()).await;
        assert!(
            found.is_empty(),
            "filters are exact and case-sensitive: {filter:?} found {found:?}"
        );
    }

    // The latest revision of each record named by an `ok` row, in one lookup; one row by
    // its number; the last row.
    let later_failure = AuditEvent {
        outcome: "integrity".into(),
        record: Some(RecordRevision {
            id: record_a,
            revision: 9,
        }),
        ..full.clone()
    };
    let later_ok = AuditEvent {
        record: Some(RecordRevision {
            id: record_a,
            revision: 5,
        }),
        ..full.clone()
    };
    log.append(&[later_ok.clone(), later_failure], &AuditChain::plain())
        .await
        .expect("append two record rows");
    let latest = log
        .latest_revisions(&[record_a, record_b, Uuid::new_v4()])
        .await
        .expect("latest revisions");
    assert_eq!(latest.len(), 2, "only records named by ok rows: {latest:?}");
    assert_eq!(latest[&record_a], 5, "the highest revision of an ok row");
    assert_eq!(
        latest[&record_b],
        u64::from(u32::MAX) + 7,
        "64-bit revisions"
    );
    assert!(
        log.latest_revisions(&[]).await.expect("none").is_empty(),
        "no ids, no revisions"
    );
    let everything = all(log).await;
    let last = everything.last().cloned();
    assert_eq!(log.last().await.expect("last"), last, "the last record");
    let third = &everything[everything.len() - 3];
    assert_eq!(
        log.record_at(third.seq).await.expect("record at").as_ref(),
        Some(third),
        "one record by its number"
    );
    assert_eq!(
        log.record_at(last.as_ref().map_or(0, |r| r.seq) + 1)
            .await
            .expect("record past the end"),
        None,
        "no record past the end"
    );
    assert_eq!(
        everything[everything.len() - 2].event,
        later_ok,
        "a record row round-trips"
    );

    // Concurrent appenders keep one unbroken chain; each batch stays together and in order.
    let concurrent_op = format!("op3-{tag}");
    let writers = 4;
    let batches = 5;
    let start = end(&all(log).await);
    let appends = (0..writers).map(|w| {
        let identity = id(&service, Some(&format!("w{w}-{tag}")), None);
        let concurrent_op = &concurrent_op;
        async move {
            for b in 0..batches {
                let event = |half: &str| {
                    let mut e = AuditEvent::now(concurrent_op, Some(&identity), "-");
                    e.detail = Some(format!("w{w} b{b} {half}"));
                    e
                };
                log.append(&[event("first"), event("second")], &AuditChain::plain())
                    .await
                    .expect("concurrent append");
            }
        }
    });
    join_all(appends).await;
    let everything = all(log).await;
    assert_eq!(
        verify_chain(&everything),
        Ok(everything.len() as u64),
        "concurrent appends keep one unbroken chain"
    );
    let mine = after(everything, start.0);
    assert_eq!(
        mine.len(),
        writers * batches * 2,
        "every concurrent append was kept"
    );
    assert_follows(&mine, start, "concurrent appends");
    for pair in mine.chunks(2) {
        let detail = |r: &AuditRecord| r.event.detail.clone().unwrap_or_default();
        let first = detail(&pair[0]);
        assert!(
            first.ends_with(" first") && detail(&pair[1]) == first.replace(" first", " second"),
            "a batch is appended as a whole, in order: {pair:?}"
        );
    }
    for w in 0..writers {
        let theirs = read(
            log,
            AuditFilter {
                user: Some(format!("w{w}-{tag}")),
                operation: Some(concurrent_op.clone()),
                ..AuditFilter::default()
            },
        )
        .await;
        let order: Vec<String> = theirs
            .iter()
            .filter_map(|r| r.event.detail.clone())
            .collect();
        let expected: Vec<String> = (0..batches)
            .flat_map(|b| [format!("w{w} b{b} first"), format!("w{w} b{b} second")])
            .collect();
        assert_eq!(order, expected, "one writer's appends stay in its order");
    }

    // One append larger than any database takes in one statement (5,000 rows: more than
    // SQLite's 32,766 or PostgreSQL's and MySQL's 65,535 parameters at 15 columns a row)
    // lands whole, in order, chained, aggregated rows included.
    let big_op = format!("op4-{tag}");
    let big: Vec<AuditEvent> = (0..5_000)
        .map(|i| {
            let identity = id(&service, Some(&format!("big{}-{tag}", i % 7)), None);
            let e = AuditEvent::now(&big_op, Some(&identity), "-").detail(format!("big {i}"));
            if i % 100 == 0 {
                e.aggregated(i + 2, at(0))
            } else {
                e
            }
        })
        .collect();
    let start = end(&all(log).await);
    log.append(&big, &AuditChain::plain())
        .await
        .expect("append 5,000 events at once");
    let everything = all(log).await;
    assert_eq!(
        verify_chain(&everything),
        Ok(everything.len() as u64),
        "a large append keeps the chain whole"
    );
    let mine = after(everything, start.0);
    assert_follows(&mine, start, "large append");
    assert_eq!(
        events(&mine),
        big,
        "every event of a large append, in order, exactly"
    );
}
