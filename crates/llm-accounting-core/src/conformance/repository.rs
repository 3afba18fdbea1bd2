//! The [`KeyRepository`] conformance suite.

use chrono::{Duration, SubsecRound, Utc};
use uuid::Uuid;

use super::fixtures::{key, listed_keys, seal, version, write};
use crate::{
    Error, KeyFilter, KeyIdentity, KeyRepository, KeyState, StoreKeyRecord, VersionState,
    WrappedKey,
};

/// Runs every check against `repo`. Uses service names with a random suffix, so it can run on a
/// shared database; it deletes what it creates.
pub async fn run(repo: &dyn KeyRepository) {
    let tag = Uuid::new_v4().simple().to_string();
    let service = format!("conf-{}", &tag[..12]);
    let id = |u: Option<&str>, p: Option<&str>| {
        KeyIdentity::from_parts(&service, u, p).expect("valid identity")
    };

    // Create and read back.
    let none = id(None, None);
    assert!(repo.find_key(&none).await.expect("find").is_none());
    assert!(repo.load_current(&none).await.expect("load").is_none());
    let k = key(none.clone());
    let v1 = version(k.id, 1, 1);
    repo.create_key(&k, &v1, None).await.expect("create");
    let found = repo.find_key(&none).await.expect("find").expect("exists");
    assert_eq!(found.id, k.id);
    assert_eq!(found.identity, none);
    assert_eq!(found.state, KeyState::Active);
    assert_eq!(found.current_version, 1);
    assert_eq!(found.hint, k.hint);
    assert_eq!(found.created_at, k.created_at, "timestamps round-trip (ms)");
    let (lk, lv) = repo
        .load_current(&none)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(lk.id, k.id);
    assert_eq!(lv, v1, "the version row round-trips exactly");

    // Absent user/project cannot be duplicated, and differ from named ones.
    let dup = key(none.clone());
    match repo.create_key(&dup, &version(dup.id, 1, 2), None).await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("a second key for the same identity must conflict, got {other:?}"),
    }
    let global = id(Some("global"), None);
    let gk = key(global.clone());
    repo.create_key(&gk, &version(gk.id, 1, 3), None)
        .await
        .expect("user `global` is its own identity");
    let proj_only = id(None, Some("global"));
    let pk = key(proj_only.clone());
    repo.create_key(&pk, &version(pk.id, 1, 4), None)
        .await
        .expect("project-only identity");
    let full = id(Some("alice"), Some("proj"));
    let fk = key(full.clone());
    repo.create_key(&fk, &version(fk.id, 1, 5), None)
        .await
        .expect("full identity");
    let dup_full = key(full.clone());
    assert!(matches!(
        repo.create_key(&dup_full, &version(dup_full.id, 1, 6), None)
            .await,
        Err(Error::Conflict { .. })
    ));

    // Names are literal: SQL metacharacters, Unicode, case.
    for name in [
        "o'; DROP TABLE api_keys; --",
        "%",
        "_",
        "Ωμέγα 鍵",
        "ALICE",
        "alice\\",
    ] {
        let ident = id(Some(name), None);
        let kk = key(ident.clone());
        repo.create_key(&kk, &version(kk.id, 1, 7), None)
            .await
            .expect("literal name");
        let back = repo.find_key(&ident).await.expect("find").expect("exists");
        assert_eq!(back.identity.user(), Some(name));
    }
    assert!(
        repo.find_key(&id(Some("Alice"), None))
            .await
            .expect("find")
            .is_none(),
        "names are case-sensitive"
    );

    // A sealed record round-trips its revision and seal exactly.
    let sealed_id = id(Some("sealed"), None);
    let mut sk = key(sealed_id.clone());
    sk.revision = 7;
    sk.seal = Some(seal(0x5a, true));
    repo.create_key(&sk, &version(sk.id, 1, 11), None)
        .await
        .expect("create sealed");
    assert_eq!(
        repo.find_key(&sealed_id)
            .await
            .expect("find")
            .expect("exists"),
        sk,
        "revision and seal round-trip"
    );

    // Versions: optimistic concurrency, on the current version and on the revision.
    let mut v2 = version(k.id, 2, 8);
    v2.expires_at = Some(Utc::now().trunc_subsecs(3) + Duration::days(30));
    let retire_v1 = Utc::now().trunc_subsecs(3) + Duration::hours(1);
    match repo
        .add_version(k.id, 1, &v2, retire_v1, &write(0, None), None)
        .await
    {
        Err(Error::Conflict { .. }) => {}
        other => panic!("a stale expected revision must conflict, got {other:?}"),
    }
    repo.add_version(
        k.id,
        1,
        &v2,
        retire_v1,
        &write(1, Some(seal(2, true))),
        None,
    )
    .await
    .expect("add version 2");
    match repo
        .add_version(
            k.id,
            1,
            &version(k.id, 2, 9),
            retire_v1,
            &write(2, None),
            None,
        )
        .await
    {
        Err(Error::Conflict { .. }) => {}
        other => panic!("a stale expected version must conflict, got {other:?}"),
    }
    let moved_on = repo.find_key(&none).await.expect("find").expect("exists");
    assert_eq!(moved_on.revision, 2, "a new version moves the revision on");
    assert_eq!(
        moved_on.seal,
        Some(seal(2, true)),
        "and stores the new seal"
    );
    let (lk, lv) = repo
        .load_current(&none)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(lk.current_version, 2);
    assert_eq!(lv, v2);
    assert_eq!(
        lk.hint, v2.hint,
        "the key's hint follows its current version"
    );
    assert_eq!(lk.expires_at, v2.expires_at, "so does its expiry");

    // Versions: listed oldest first; the previous one retires when its grace ends.
    let listed = repo.list_versions(k.id).await.expect("list versions");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].version, 1);
    assert_eq!(listed[0].state, VersionState::Previous);
    assert_eq!(listed[0].retire_at, Some(retire_v1));
    assert_eq!(listed[0].envelope, v1.envelope);
    assert_eq!(listed[1], v2);
    assert_eq!(
        repo.retire_due(Some(k.id), retire_v1 - Duration::seconds(1))
            .await
            .expect("nothing due"),
        0
    );
    assert_eq!(
        repo.retire_due(Some(k.id), retire_v1)
            .await
            .expect("retire"),
        1
    );
    let listed = repo.list_versions(k.id).await.expect("list versions");
    assert_eq!(listed[0].state, VersionState::Retired);
    assert!(
        listed[0].envelope.is_empty(),
        "a retired version's envelope is wiped"
    );
    assert_eq!(listed[1].state, VersionState::Current);

    // Rewrap support: versions not under a target key, in order, and compare-and-set.
    let todo = repo
        .versions_to_rewrap("conformance", "mk-8", None, 1000)
        .await
        .expect("versions to rewrap");
    assert!(
        todo.iter().all(|(key, v)| v.master_key_ref != "mk-8"
            && v.state != VersionState::Retired
            && key.id == v.key_id),
        "{todo:?}"
    );
    let ours: Vec<_> = todo.iter().filter(|(key, _)| key.id == k.id).collect();
    assert!(
        ours.is_empty(),
        "only v2 (already under mk-8) is readable: {ours:?}"
    );
    let mut moved = v2.clone();
    moved.master_key_ref = "mk-new".into();
    moved.envelope = vec![42; 50];
    assert!(
        !repo
            .replace_wrapping(&moved, "conformance", "mk-other", None, None)
            .await
            .expect("cas"),
        "compare-and-set refuses a version under another key"
    );
    assert!(
        !repo
            .replace_wrapping(&moved, "conformance", "mk-8", Some(&write(1, None)), None)
            .await
            .expect("cas"),
        "compare-and-set refuses a record at another revision"
    );
    assert_eq!(
        repo.load_current(&none)
            .await
            .expect("load")
            .expect("exists")
            .1,
        v2,
        "and leaves the version as it was"
    );
    assert!(
        repo.replace_wrapping(
            &moved,
            "conformance",
            "mk-8",
            Some(&write(2, Some(seal(3, true)))),
            None
        )
        .await
        .expect("cas")
    );
    let rewrapped_key = repo.find_key(&none).await.expect("find").expect("exists");
    assert_eq!(
        (rewrapped_key.revision, rewrapped_key.seal),
        (3, Some(seal(3, true))),
        "the record moves with its version"
    );
    let (_, lv) = repo
        .load_current(&none)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(lv, moved);
    let todo = repo
        .versions_to_rewrap("conformance", "mk-8", None, 1000)
        .await
        .expect("versions to rewrap");
    let ours: Vec<_> = todo
        .iter()
        .filter(|(key, _)| key.id == k.id)
        .map(|(_, v)| (v.key_id, v.version))
        .collect();
    assert_eq!(ours, vec![(k.id, 2)]);
    let after_it = repo
        .versions_to_rewrap("conformance", "mk-8", Some((k.id, 2)), 1000)
        .await
        .expect("versions after");
    assert!(
        after_it
            .iter()
            .all(|(_, v)| (v.key_id, v.version) > (k.id, 2))
    );

    // State, with optimistic concurrency on the revision.
    let at = Utc::now().trunc_subsecs(3);
    assert!(
        !repo
            .set_state(k.id, KeyState::Disabled, at, &write(2, None), None)
            .await
            .expect("stale"),
        "a stale revision changes nothing"
    );
    assert_eq!(
        repo.find_key(&none)
            .await
            .expect("find")
            .expect("exists")
            .state,
        KeyState::Active
    );
    assert!(
        repo.set_state(
            k.id,
            KeyState::Disabled,
            at,
            &write(3, Some(seal(4, true))),
            None
        )
        .await
        .expect("disable")
    );
    assert_eq!(
        repo.find_key(&none)
            .await
            .expect("find")
            .expect("exists")
            .state,
        KeyState::Disabled
    );
    assert!(
        repo.set_state(k.id, KeyState::Active, at, &write(4, None), None)
            .await
            .expect("enable")
    );
    let enabled = repo.find_key(&none).await.expect("find").expect("exists");
    assert_eq!((enabled.revision, enabled.seal), (5, None));
    assert!(
        !repo
            .set_state(Uuid::new_v4(), KeyState::Active, at, &write(1, None), None)
            .await
            .expect("missing")
    );

    // Last used: batch, monotonic, unknown ids ignored.
    let t1 = Utc::now().trunc_subsecs(3);
    let t0 = t1 - Duration::seconds(30);
    repo.record_last_used(&[(k.id, t1), (Uuid::new_v4(), t1), (gk.id, t0)])
        .await
        .expect("record last used");
    repo.record_last_used(&[(k.id, t0)])
        .await
        .expect("older time");
    assert_eq!(
        repo.find_key(&none)
            .await
            .expect("find")
            .expect("exists")
            .last_used_at,
        Some(t1)
    );
    assert_eq!(
        repo.find_key(&global)
            .await
            .expect("find")
            .expect("exists")
            .last_used_at,
        Some(t0)
    );
    // A large batch (more than one transaction's worth) loses nothing at its edges or in
    // its middle.
    let t2 = t1 + Duration::seconds(1);
    let mut many: Vec<_> = (0..1_500).map(|_| (Uuid::new_v4(), t2)).collect();
    many[0] = (k.id, t2);
    many[1_499] = (gk.id, t2);
    many[750] = (k.id, t0);
    repo.record_last_used(&many)
        .await
        .expect("record 1,500 last uses");
    for identity in [&none, &global] {
        assert_eq!(
            repo.find_key(identity)
                .await
                .expect("find")
                .expect("exists")
                .last_used_at,
            Some(t2),
            "{identity}: the latest time of a large batch wins"
        );
    }

    // List with filters.
    let all = repo
        .list_keys(&KeyFilter {
            service: Some(service.clone()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 11, "every key of the service is listed");
    let alice = listed_keys(
        repo.list_keys(&KeyFilter {
            service: Some(service.clone()),
            user: Some("alice".into()),
            project: None,
        })
        .await
        .expect("list"),
    );
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].identity, full);

    // Records by id, unknown ids left out.
    let mut expected = Vec::new();
    for identity in [&none, &global] {
        expected.push(
            repo.find_key(identity)
                .await
                .expect("find")
                .expect("exists"),
        );
    }
    let mut by_id = repo
        .keys_by_id(&[k.id, gk.id, Uuid::new_v4()])
        .await
        .expect("by id");
    by_id.sort_by_key(|r| r.id);
    expected.sort_by_key(|r| r.id);
    assert_eq!(by_id, expected);
    assert!(repo.keys_by_id(&[]).await.expect("no ids").is_empty());
    assert!(!repo.is_empty().await.expect("is_empty"), "keys are stored");

    // Store keys: inserted once, read back exactly, rewrapped by compare-and-set.
    let name = format!("conf-{}", &tag[..12]);
    assert!(repo.store_key(&name).await.expect("read").is_none());
    let sk_row = StoreKeyRecord {
        name: name.clone(),
        store_id: Uuid::new_v4(),
        wrapped: WrappedKey::new("conformance", "mk-1", vec![9; 40]),
        created_at: Utc::now().trunc_subsecs(3),
    };
    assert!(repo.insert_store_key(&sk_row).await.expect("insert"));
    let other = StoreKeyRecord {
        store_id: Uuid::new_v4(),
        ..sk_row.clone()
    };
    assert!(
        !repo.insert_store_key(&other).await.expect("insert again"),
        "the first store key of a name stays"
    );
    assert_eq!(
        repo.store_key(&name).await.expect("read"),
        Some(sk_row.clone())
    );
    let rewrapped = WrappedKey::new("conformance", "mk-2", vec![8; 40]);
    assert!(
        !repo
            .replace_store_key_wrapping(&name, &rewrapped, "conformance", "mk-0")
            .await
            .expect("cas"),
        "compare-and-set refuses another master key"
    );
    assert!(
        repo.replace_store_key_wrapping(&name, &rewrapped, "conformance", "mk-1")
            .await
            .expect("cas")
    );
    assert_eq!(
        repo.store_key(&name)
            .await
            .expect("read")
            .map(|k| k.wrapped),
        Some(rewrapped)
    );

    // Delete removes the key and its versions; the identity can be reused.
    assert!(repo.delete_key(k.id, None).await.expect("delete"));
    assert!(
        repo.keys_by_id(&[k.id]).await.expect("by id").is_empty(),
        "a deleted key is not found by id"
    );
    assert!(!repo.delete_key(k.id, None).await.expect("delete again"));
    assert!(repo.find_key(&none).await.expect("find").is_none());
    assert!(repo.load_current(&none).await.expect("load").is_none());
    let again = key(none.clone());
    repo.create_key(&again, &version(again.id, 1, 10), None)
        .await
        .expect("recreate after delete");

    for k in listed_keys(
        repo.list_keys(&KeyFilter {
            service: Some(service.clone()),
            ..Default::default()
        })
        .await
        .expect("list"),
    ) {
        repo.delete_key(k.id, None).await.expect("cleanup");
    }

    super::batch::run(repo).await;
}
