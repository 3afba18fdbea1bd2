//! The batch part of the [`KeyRepository`] conformance suite (run by
//! [`super::repository::run`]): batched reads in order, batched writes all or nothing,
//! across the chunks a database splits them into.

use chrono::{Duration, SubsecRound, Utc};
use uuid::Uuid;

use super::fixtures::{key, listed_keys, version, write};
use crate::{Error, KeyChange, KeyFilter, KeyIdentity, KeyRepository, VersionState};

/// More keys than one INSERT or one `IN (...)` list carries on any database, so that a
/// batch crosses chunk boundaries.
const MANY: usize = 1_200;

/// Runs the batch checks against `repo` under a service of its own; deletes what it creates.
pub(super) async fn run(repo: &dyn KeyRepository) {
    let tag = Uuid::new_v4().simple().to_string();
    let service = format!("conf-batch-{}", &tag[..12]);
    let id = |u: String| KeyIdentity::from_parts(&service, Some(&u), None).expect("identity");

    assert!(
        repo.load_current_many(&[])
            .await
            .expect("empty read")
            .is_empty()
    );
    repo.write_batch(&[], &[]).await.expect("an empty batch");

    // A large batch of new keys, in one transaction, read back in order.
    let identities: Vec<KeyIdentity> = (0..MANY).map(|i| id(format!("u{i:05}"))).collect();
    let creates: Vec<KeyChange> = identities
        .iter()
        .enumerate()
        .map(|(i, identity)| {
            let k = key(identity.clone());
            let first = version(k.id, 1, u8::try_from(i % 251).expect("tag"));
            KeyChange::Create { key: k, first }
        })
        .collect();
    repo.write_batch(&creates, &[])
        .await
        .expect("write a large batch");
    let mut asked = identities.clone();
    asked.insert(1, id("absent".into()));
    asked.reverse();
    let loaded = repo.load_current_many(&asked).await.expect("read many");
    assert_eq!(loaded.len(), asked.len(), "one result per identity");
    for (identity, found) in asked.iter().zip(&loaded) {
        match found {
            None => assert_eq!(
                identity.user(),
                Some("absent"),
                "only the absent one is missing"
            ),
            Some(Ok((k, v))) => {
                assert_eq!(&k.identity, identity, "results come in the order asked");
                let created = creates
                    .iter()
                    .find(|c| c.identity() == identity)
                    .expect("created");
                let KeyChange::Create { first, .. } = created else {
                    panic!("only creates")
                };
                assert_eq!(v, first, "the version row round-trips exactly");
            }
            Some(Err(e)) => panic!("{identity}: {e}"),
        }
    }

    // A batch with one identity that exists writes nothing, and names it.
    let fresh = id("fresh".into());
    let fk = key(fresh.clone());
    let dup = key(identities[7].clone());
    let batch = vec![
        KeyChange::Create {
            first: version(fk.id, 1, 1),
            key: fk,
        },
        KeyChange::Create {
            first: version(dup.id, 1, 2),
            key: dup,
        },
    ];
    match repo.write_batch(&batch, &[]).await {
        Err(Error::Conflict { identity }) => assert_eq!(identity, identities[7].to_string()),
        other => panic!("an existing identity in a batch must conflict, got {other:?}"),
    }
    assert!(
        repo.find_key(&fresh).await.expect("find").is_none(),
        "a refused batch writes nothing"
    );

    // New versions: all or nothing on the expected revision.
    let (k0, v0) = loaded_at(repo, &identities[0]).await;
    let (k1, _) = loaded_at(repo, &identities[1]).await;
    let retire = Utc::now().trunc_subsecs(3) + Duration::hours(1);
    let add = |k: &crate::KeyRecord, expected_revision: u64, tag: u8| KeyChange::AddVersion {
        identity: k.identity.clone(),
        expected_current: 1,
        version: version(k.id, 2, tag),
        previous_retire_at: retire,
        write: write(expected_revision, None),
    };
    let fk = key(fresh.clone());
    let stale = vec![
        KeyChange::Create {
            first: version(fk.id, 1, 3),
            key: fk,
        },
        add(&k0, k0.revision, 4),
        add(&k1, k1.revision + 5, 5),
    ];
    match repo.write_batch(&stale, &[]).await {
        Err(Error::Conflict { identity }) => assert_eq!(identity, identities[1].to_string()),
        other => panic!("a stale revision in a batch must conflict, got {other:?}"),
    }
    assert_eq!(loaded_at(repo, &identities[0]).await.1, v0, "nothing moved");
    assert!(repo.find_key(&fresh).await.expect("find").is_none());

    // Two changes of one key are refused before anything is written.
    let twice = vec![add(&k0, k0.revision, 6), add(&k0, k0.revision, 7)];
    assert!(matches!(
        repo.write_batch(&twice, &[]).await,
        Err(Error::InvalidInput { .. })
    ));

    // A mixed batch applies every change.
    let fk = key(fresh.clone());
    let mixed = vec![
        add(&k0, k0.revision, 8),
        KeyChange::Create {
            first: version(fk.id, 1, 9),
            key: fk,
        },
        add(&k1, k1.revision, 10),
    ];
    repo.write_batch(&mixed, &[]).await.expect("mixed batch");
    for k in [&k0, &k1] {
        let (now, current) = loaded_at(repo, &k.identity).await;
        assert_eq!(now.current_version, 2);
        assert_eq!(now.revision, k.revision + 1);
        let versions = repo.list_versions(k.id).await.expect("versions");
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0].state, VersionState::Previous);
        assert_eq!(versions[0].retire_at, Some(retire));
        assert_eq!(current.version, 2);
    }
    assert!(repo.find_key(&fresh).await.expect("find").is_some());

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
}

async fn loaded_at(
    repo: &dyn KeyRepository,
    identity: &KeyIdentity,
) -> (crate::KeyRecord, crate::VersionRecord) {
    repo.load_current(identity)
        .await
        .expect("load")
        .expect("exists")
}
