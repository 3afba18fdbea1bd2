//! Tampering with one stored record, column by column, on a SQLite file: every change to the
//! ciphertext, nonce, wrapped data key, context fields (id, service, user, project, version)
//! or provider reference is refused with the integrity error, never answered with another
//! value, and never reported as "no key".

use std::sync::Arc;

use llm_accounting::{
    ApiKey, CacheOptions, Error, KeyIdentity, LocalKmsProvider, ManagerOptions,
    SeaOrmKeyRepository, SecureKeyManager, StoreOptions,
};
use std::str::FromStr;

use sea_orm::sqlx::Connection;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

const KEY: &str = "sk-test-FAKE-tamper-0123456789abcdef";

/// (table, column, SQL expression giving a value one byte or one step away). The id edits
/// always change the last character (a UUID ending in `f` would otherwise be left as it was,
/// and the test would fail one run in sixteen).
const MUTATIONS: &[(&str, &str, &str)] = &[
    ("api_keys", "service", "'openaj'"),
    ("api_keys", "user_id", "'alicf'"),
    ("api_keys", "project", "'searci'"),
    (
        "api_keys",
        "id",
        "substr(id, 1, 35) || CASE substr(id, 36, 1) WHEN 'f' THEN 'e' ELSE 'f' END",
    ),
    ("api_keys", "current_version", "current_version + 1"),
    ("api_keys", "state", "'actove'"),
    (
        "api_key_versions",
        "key_id",
        "substr(key_id, 1, 35) || CASE substr(key_id, 36, 1) WHEN 'f' THEN 'e' ELSE 'f' END",
    ),
    ("api_key_versions", "version", "version + 1"),
    ("api_key_versions", "provider", "'locam'"),
    (
        "api_key_versions",
        "master_key_ref",
        "'v9' || substr(master_key_ref, 3)",
    ),
    ("api_key_versions", "state", "'currenu'"),
];

#[tokio::test]
async fn every_changed_column_of_a_record_is_an_integrity_error() {
    let id = KeyIdentity::from_parts("openai", Some("alice"), Some("search")).expect("id");
    for (table, column, expr) in MUTATIONS {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let repo = Arc::new(
            SeaOrmKeyRepository::connect(
                &url,
                &StoreOptions {
                    create_if_missing: true,
                    ..StoreOptions::default()
                },
            )
            .await
            .expect("open"),
        );
        let provider =
            Arc::new(LocalKmsProvider::open_or_create(dir.path().join("mk")).expect("mk"));
        let m = SecureKeyManager::builder(provider, repo.clone())
            .options(ManagerOptions {
                cache: CacheOptions {
                    max_entries: 0,
                    ..CacheOptions::default()
                },
                ..ManagerOptions::default()
            })
            .build();
        m.store(&id, &ApiKey::new(KEY.into())).await.expect("store");
        m.get(&id).await.expect("readable before tampering");

        // An attacker's own connection, without foreign-key checks.
        let options = SqliteConnectOptions::from_str(&url)
            .expect("url")
            .foreign_keys(false);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .expect("attacker connection");
        let changed = sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET {column} = {expr}"
        )))
        .execute(&mut conn)
        .await
        .expect("tamper")
        .rows_affected();
        conn.close().await.expect("close");
        assert_eq!(changed, 1, "{table}.{column}");
        match m.get(&id).await {
            Err(Error::Integrity { .. }) => {}
            other => panic!("{table}.{column} changed: expected Integrity, got {other:?}"),
        }
    }
}
