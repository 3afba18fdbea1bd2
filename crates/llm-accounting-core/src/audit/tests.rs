//! Tests of the audit trail's chain, heads and records.

use super::*;

fn chain(n: usize) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    for i in 0..n {
        let id = KeyIdentity::from_parts("openai", Some(&format!("u{i}")), None).expect("id");
        let (seq, hash) = out
            .last()
            .map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
        out.push(AuditRecord::chain(
            seq,
            &hash,
            AuditEvent::now("get", Some(&id), "-"),
        ));
    }
    out
}

#[test]
fn an_intact_chain_verifies() {
    assert_eq!(verify_chain(&chain(5)), Ok(5));
    assert_eq!(verify_chain(&[]), Ok(0));
}

/// A fixed cache-hit event at 2026-11-30T00:00:00.123456Z.
fn fixed_hit() -> AuditEvent {
    let id = KeyIdentity::from_parts("openai", Some("alice"), None).expect("id");
    let mut e = AuditEvent::now("get", Some(&id), "-").detail("cache hit");
    e.at = DateTime::from_timestamp_micros(1_795_996_800_123_456).expect("time");
    e
}

#[test]
fn a_single_event_hashes_as_before_aggregation_existed() {
    // Computed independently from the v1 encoding: rows written before aggregation rows
    // existed must still verify.
    assert_eq!(
        record_hash(1, GENESIS_HASH, &fixed_hit()),
        "fa2813ba3fcc71acc7522015212bad86697d7c8f32ffe2743a6f2676d4fa03d2"
    );
    let first = DateTime::from_timestamp_micros(1_795_996_795_123_456).expect("time");
    assert_eq!(
        record_hash(1, GENESIS_HASH, &fixed_hit().aggregated(42, first)),
        "e8cdb68d7d64480601b9cc32f494f12f8a2a1905856124864fadfdd97738a2a9",
        "an aggregated row's hash covers its count and first time"
    );
}

#[test]
fn an_edited_count_or_first_time_is_found() {
    let first = fixed_hit().at - chrono::Duration::seconds(5);
    let record = AuditRecord::chain(0, GENESIS_HASH, fixed_hit().aggregated(42, first));
    assert_eq!(verify_chain(std::slice::from_ref(&record)), Ok(1));
    let edits: [fn(&mut AuditEvent); 4] = [
        |e| e.count = 41,
        |e| e.count = 1,
        |e| e.first_at = None,
        |e| e.first_at = e.first_at.map(|t| t + chrono::Duration::microseconds(1)),
    ];
    for edit in edits {
        let mut edited = record.clone();
        edit(&mut edited.event);
        assert_eq!(
            verify_chain(&[edited.clone()]).map_err(|b| b.seq),
            Err(1),
            "{:?}",
            edited.event
        );
    }
    // Turning a single event into an aggregate is found too.
    let single = AuditRecord::chain(0, GENESIS_HASH, fixed_hit());
    let mut inflated = single.clone();
    inflated.event.count = 1000;
    assert!(verify_chain(&[inflated]).is_err());
}

#[test]
fn a_dropped_row_counts_and_spans_the_dropped_events() {
    let first = fixed_hit().at;
    let last = first + chrono::Duration::milliseconds(1500);
    let e = AuditEvent::dropped(17, first, last);
    assert_eq!(e.operation, DROPPED_OPERATION);
    assert_eq!(e.outcome, "dropped");
    assert_eq!((e.count, e.first_at, e.at), (17, Some(first), last));
    assert_eq!(e.detail.as_deref(), Some("17 events dropped"));
    assert!(e.is_aggregate() && e.identity.is_none());
}

#[test]
fn deleted_inserted_and_edited_rows_are_named() {
    let mut deleted = chain(5);
    deleted.remove(2);
    assert_eq!(verify_chain(&deleted).map_err(|b| b.seq), Err(3));

    // A deleted row with the later ones renumbered: the hash link breaks.
    let mut renumbered = chain(5);
    renumbered.remove(2);
    for (i, r) in renumbered.iter_mut().enumerate() {
        r.seq = i as u64 + 1;
    }
    assert_eq!(verify_chain(&renumbered).map_err(|b| b.seq), Err(3));

    let mut inserted = chain(5);
    let forged = AuditRecord::chain(
        2,
        "f".repeat(64).as_str(),
        AuditEvent::now("get", None, "-"),
    );
    inserted.insert(2, forged);
    assert!(verify_chain(&inserted).is_err());

    let mut edited = chain(5);
    edited[3].event.outcome = "not_found".into();
    let b = verify_chain(&edited).expect_err("edited");
    assert_eq!(b.seq, 4);
    assert!(b.to_string().contains("changed"), "{b}");

    // Editing and re-hashing one row breaks the link of the next.
    let mut rehashed = chain(5);
    rehashed[1].event.principal = "mallory".into();
    rehashed[1].hash = record_hash(2, &rehashed[1].prev_hash, &rehashed[1].event);
    assert_eq!(verify_chain(&rehashed).map_err(|b| b.seq), Err(3));
}

fn keyed_chain(key: u8, events: usize) -> Vec<AuditRecord> {
    keyed_chain_of(key, events, "op")
}

fn keyed_chain_of(key: u8, events: usize, op: &str) -> Vec<AuditRecord> {
    let chain = AuditChain::keyed(&[key; 32]);
    let mut out: Vec<AuditRecord> = Vec::new();
    for i in 0..events {
        let (seq, hash) = out
            .last()
            .map_or((0, GENESIS_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
        let e = AuditEvent::now(&format!("{op}{i}"), None, "-");
        out.push(chain.link(seq, &hash, e));
    }
    out
}

#[test]
fn a_keyed_chain_needs_the_key_and_cannot_be_recomputed_without_it() {
    let key = AuditChain::keyed(&[7; 32]);
    let rows = keyed_chain(7, 5);
    assert_eq!(verify_chain_with(&rows, &key), Ok(5));
    // Without the key, or under another one, it does not verify.
    assert!(verify_chain(&rows).is_err());
    assert!(verify_chain_with(&rows, &AuditChain::keyed(&[8; 32])).is_err());

    // An attacker edits row 3 and recomputes every hash from there on, in plain SHA-256:
    // a sealed store refuses the plain rows after keyed ones.
    let mut forged = rows.clone();
    forged[2].event.outcome = "not_found".into();
    for i in 2..forged.len() {
        let prev = forged[i - 1].hash.clone();
        forged[i].prev_hash.clone_from(&prev);
        forged[i].hash = record_hash(forged[i].seq, &prev, &forged[i].event);
    }
    assert_eq!(verify_chain_with(&forged, &key).map_err(|b| b.seq), Err(3));
    // Or recomputes the whole chain in plain SHA-256: no record carries a MAC any more.
    let plain = chain(5);
    let b = verify_chain_with(&plain, &key).expect_err("all plain in a sealed store");
    assert!(b.reason.contains("MAC"), "{b}");
}

#[test]
fn a_plain_prefix_from_before_sealing_is_protected_by_the_keyed_row_after_it() {
    let key = AuditChain::keyed(&[7; 32]);
    let mut rows = chain(3);
    let last = rows.last().cloned().expect("rows");
    rows.push(key.link(last.seq, &last.hash, AuditEvent::now("seal", None, "-")));
    rows.push(key.link(4, &rows[3].hash.clone(), AuditEvent::now("get", None, "-")));
    assert_eq!(verify_chain_with(&rows, &key), Ok(5));
    // Editing a plain row, even with its plain hash recomputed, breaks the keyed link.
    let mut edited = rows.clone();
    edited[1].event.outcome = "forbidden".into();
    edited[1].hash = record_hash(2, &edited[1].prev_hash, &edited[1].event);
    assert!(verify_chain_with(&edited, &key).is_err());
    // A plain row after the keyed ones is refused like a wrong one.
    let mut tail = rows.clone();
    let l = tail.last().cloned().expect("rows");
    tail.push(AuditRecord::chain(
        l.seq,
        &l.hash,
        AuditEvent::now("get", None, "-"),
    ));
    assert_eq!(verify_chain_with(&tail, &key).map_err(|b| b.seq), Err(6));
}

#[test]
fn the_head_catches_a_cut_or_replaced_trail() {
    let rows = keyed_chain(7, 6);
    let head = AuditHead::of(&rows);
    assert_eq!(AuditHead::of(&[]).to_string(), format!("0:{GENESIS_HASH}"));
    assert!(AuditHead::of(&[]).to_string().parse::<AuditHead>().is_ok());
    assert_eq!(head.to_string(), format!("6:{}", rows[5].hash));
    let parsed: AuditHead = head.to_string().parse().expect("parses back");
    assert_eq!(parsed, head);
    parsed.check(&rows).expect("still there");
    // Later records do not disturb an older head.
    let mut longer = rows.clone();
    let l = longer.last().cloned().expect("rows");
    longer.push(AuditChain::keyed(&[7; 32]).link(l.seq, &l.hash, AuditEvent::now("x", None, "-")));
    parsed.check(&longer).expect("an older head is still found");
    // Cut short before it.
    assert!(parsed.check(&rows[..4]).is_err());
    // Replaced: a whole new chain (under the same key, even) of the same length.
    let other = keyed_chain_of(7, 6, "other");
    assert!(parsed.check(&other).is_err());
    for bad in [
        "",
        "6",
        "6:",
        "x:00",
        "0:aa",
        "6:ABC",
        &format!("6:{}", "A".repeat(64)),
        &format!("0:{}", "a".repeat(64)),
    ] {
        assert!(bad.parse::<AuditHead>().is_err(), "{bad:?}");
    }
}

#[test]
fn chain_debug_hides_the_key() {
    assert_eq!(
        format!("{:?}", AuditChain::keyed(&[9; 32])),
        "AuditChain(keyed, [REDACTED])"
    );
    assert_eq!(format!("{:?}", AuditChain::plain()), "AuditChain(plain)");
}

#[test]
fn a_record_and_its_revision_are_under_the_hash() {
    let id = uuid::Uuid::from_u128(0x1234);
    let plain = fixed_hit();
    let named = fixed_hit().record(id, 7);
    // Rows that name no record keep the hash they had before records were named.
    assert_eq!(
        record_hash(1, GENESIS_HASH, &plain),
        "fa2813ba3fcc71acc7522015212bad86697d7c8f32ffe2743a6f2676d4fa03d2"
    );
    let record = AuditRecord::chain(0, GENESIS_HASH, named.clone());
    assert_eq!(verify_chain(std::slice::from_ref(&record)), Ok(1));
    let edits: [fn(&mut AuditEvent); 3] = [
        |e| e.record = None,
        |e| e.record = e.record.map(|r| RecordRevision { revision: 6, ..r }),
        |e| {
            e.record = e.record.map(|r| RecordRevision {
                id: uuid::Uuid::from_u128(0x1235),
                ..r
            });
        },
    ];
    for edit in edits {
        let mut edited = record.clone();
        edit(&mut edited.event);
        assert!(
            verify_chain(&[edited.clone()]).is_err(),
            "an edited record or revision is found: {:?}",
            edited.event.record
        );
    }
    // The record's fields cannot pass for an aggregate's (a tag of their own comes first).
    let first = DateTime::from_timestamp_micros(7).expect("time");
    let aggregate = fixed_hit().aggregated(1234, first);
    assert_ne!(
        record_hash(1, GENESIS_HASH, &aggregate),
        record_hash(1, GENESIS_HASH, &named)
    );
}
