//! SecureKeyManager over the in-memory repository and an AES-GCM test provider: listing with
//! options (`list_with`: keys expiring soon, each key's versions, broken ones set apart).

use llm_accounting_core::{
    Error, KeyFilter, KeyRepository, ListOptions, ManagerOptions, SecureKeyManager, VersionRecord,
    WriteOptions,
};

mod common;

use common::{fixture, id, key};

/// Stores `service`'s key expiring in `days` days (never with `None`).
async fn store_expiring(manager: &SecureKeyManager, service: &str, days: Option<i64>) {
    let options = WriteOptions {
        expires_at: days.map(|d| chrono::Utc::now() + chrono::Duration::days(d)),
    };
    manager
        .store_with(
            &id(service, None),
            &key("sk-test-FAKE-list-000001"),
            &options,
        )
        .await
        .expect("store");
}

fn services(keys: &[llm_accounting_core::KeyRecord]) -> Vec<&str> {
    keys.iter().map(|k| k.identity.service()).collect()
}

#[tokio::test]
async fn expiring_within_keeps_the_keys_that_expire_by_then() {
    let f = fixture(ManagerOptions::default());
    store_expiring(&f.manager, "a-soon", Some(1)).await;
    store_expiring(&f.manager, "b-later", Some(30)).await;
    store_expiring(&f.manager, "c-never", None).await;
    let all = KeyFilter::default();

    let plain = f
        .manager
        .list_with(&all, &ListOptions::default())
        .await
        .expect("list");
    assert_eq!(services(&plain.keys), ["a-soon", "b-later", "c-never"]);
    assert_eq!(plain.matched, 3);
    assert!(plain.versions.is_empty());

    let week = ListOptions {
        expiring_within: Some(std::time::Duration::from_secs(7 * 86_400)),
        ..ListOptions::default()
    };
    let soon = f.manager.list_with(&all, &week).await.expect("list");
    assert_eq!(services(&soon.keys), ["a-soon"]);
    assert_eq!(soon.matched, 3, "counted before the expiry filter");

    let none = ListOptions {
        expiring_within: Some(std::time::Duration::from_secs(60)),
        ..ListOptions::default()
    };
    let listing = f.manager.list_with(&all, &none).await.expect("list");
    assert!(listing.keys.is_empty());
    assert_eq!(listing.matched, 3);
}

#[tokio::test]
async fn versions_come_in_key_order_and_a_key_that_fails_them_is_broken() {
    let f = fixture(ManagerOptions::default());
    for s in ["a", "b", "c"] {
        f.manager
            .store(&id(s, None), &key("sk-test-FAKE-list-000001"))
            .await
            .expect("store");
    }
    let b = f
        .manager
        .rotate(&id("b", None), &key("sk-test-FAKE-list-000002"))
        .await
        .expect("rotate");
    let with_versions = ListOptions {
        versions: true,
        ..ListOptions::default()
    };
    let listing = f
        .manager
        .list_with(&KeyFilter::default(), &with_versions)
        .await
        .expect("list");
    assert_eq!(services(&listing.keys), ["a", "b", "c"]);
    let counts: Vec<usize> = listing.versions.iter().map(Vec::len).collect();
    assert_eq!(counts, [1, 2, 1]);
    assert!(listing.broken.is_empty());

    // b's current version names another master key than its seal says: the key is listed,
    // but its versions do not verify.
    let current = f
        .repo
        .versions_of(b.key_id)
        .into_iter()
        .find(|v| v.version == b.version)
        .expect("current version");
    let moved = VersionRecord {
        master_key_ref: "another-mk".into(),
        ..current.clone()
    };
    assert!(
        f.repo
            .replace_wrapping(
                &moved,
                &current.provider,
                &current.master_key_ref,
                None,
                None
            )
            .await
            .expect("replace")
    );
    let listing = f
        .manager
        .list_with(&KeyFilter::default(), &with_versions)
        .await
        .expect("list");
    assert_eq!(services(&listing.keys), ["a", "c"]);
    assert_eq!(listing.versions.len(), 2);
    assert_eq!(listing.matched, 3);
    assert_eq!(listing.broken.len(), 1);
    assert_eq!(listing.broken[0].row.to_string(), id("b", None).to_string());
    assert_eq!(listing.broken[0].row.id, b.key_id.to_string());
    assert!(
        matches!(listing.broken[0].error, Error::Integrity { .. }),
        "{:?}",
        listing.broken[0].error
    );
}
