//! Branch keys on SQLite, PostgreSQL and MariaDB: the KMS calls they save (counted through the
//! metrics layer), and SQL edits of branch rows, each refused as the integrity error.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use llm_accounting::branch::{BranchKeyProvider, BranchKeyRecord, BranchKeyStore, Hierarchy};
use llm_accounting::layers::{self, KmsMetrics, LayerOptions};
use llm_accounting::{
    ApiKey, CacheOptions, Envelope, Error, KeyIdentity, KeyRepository, KmsProvider,
    LocalKmsProvider, ManagerOptions, RewrapOptions, SecureKeyManager,
};
use llm_accounting_testkit::TestDatabase;
use llm_accounting_testkit::database::Backend;
use sea_orm::Value;

/// A database and a local master key.
struct Store {
    db: TestDatabase,
    _dir: tempfile::TempDir,
    master_key: PathBuf,
}

impl Store {
    async fn all() -> Vec<Store> {
        TestDatabase::create_all()
            .await
            .into_iter()
            .map(|db| {
                let dir = tempfile::tempdir().expect("tempdir");
                let master_key = dir.path().join("master.key");
                Store {
                    db,
                    _dir: dir,
                    master_key,
                }
            })
            .collect()
    }

    fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// A fresh process: the metered local provider under a branch layer, a manager that reads
    /// the store on every get, in a sealed store.
    async fn manager(&self, hierarchy: Hierarchy) -> (SecureKeyManager, Arc<KmsMetrics>) {
        let local = LocalKmsProvider::open_or_create(&self.master_key).expect("master key");
        let metrics = Arc::new(KmsMetrics::new());
        let stacked = layers::stack(
            Arc::new(local),
            &LayerOptions::default(),
            Arc::clone(&metrics),
        );
        let repo = Arc::new(self.db.repository().await);
        let branch = Arc::new(BranchKeyProvider::new(
            stacked,
            Arc::clone(&repo) as Arc<dyn BranchKeyStore>,
            hierarchy,
            Duration::from_secs(600),
        ));
        let manager = SecureKeyManager::builder(Arc::clone(&branch) as _, repo)
            .branch_keys(branch)
            .options(ManagerOptions {
                cache: CacheOptions {
                    max_entries: 0,
                    refresh_interval: Duration::ZERO,
                    ..CacheOptions::default()
                },
                require_sealed: true,
                ..ManagerOptions::default()
            })
            .build();
        (manager, metrics)
    }

    async fn branch_rows(&self) -> Vec<BranchKeyRecord> {
        let repo = self.db.repository().await;
        repo.branch_keys(None, 100).await.expect("rows")
    }

    /// Runs `sql` with parameters (write `{}` for each).
    async fn sql(&self, sql: &str, values: Vec<Value>) {
        self.db.execute(sql, values).await;
    }

    /// Puts `row` back as it was.
    async fn restore(&self, row: &BranchKeyRecord) {
        self.sql(
            "UPDATE branch_keys SET wrapped = {}, commitment = {}, scope_value = {}, \
             scope_key = {}, version = {} WHERE branch_id = {} AND version = {}",
            vec![
                row.wrapped.ciphertext.clone().into(),
                row.commitment.clone().into(),
                row.scope.value().map(str::to_owned).into(),
                row.scope.lookup_key().into(),
                (row.version as i32).into(),
                row.branch_id.hyphenated().to_string().into(),
                (row.version as i32).into(),
            ],
        )
        .await;
    }
}

fn ident(service: &str, user: usize) -> KeyIdentity {
    KeyIdentity::from_parts(service, Some(&format!("user-{user:03}")), None).expect("valid")
}

fn secret(i: usize) -> ApiKey {
    ApiKey::new(format!("sk-test-FAKE-{i:06}-0000000000"))
}

#[track_caller]
fn refused<T: std::fmt::Debug>(what: &str, backend: Backend, result: llm_accounting::Result<T>) {
    assert!(
        matches!(result, Err(Error::Integrity { .. })),
        "{backend}: {what}: expected the integrity error, got {result:?}"
    );
}

#[tokio::test]
async fn two_hundred_keys_of_one_service_cost_two_kms_calls_cold() {
    for s in Store::all().await {
        let (writer, metrics) = s.manager(Hierarchy::Service).await;
        for i in 0..200 {
            writer
                .store(&ident("openai", i), &secret(i))
                .await
                .expect("store");
        }
        // The store's state key and the service's branch key.
        assert_eq!(metrics.snapshot().calls(), 2, "{}", s.backend());
        let warm = metrics.snapshot();
        writer
            .store(&ident("openai", 999), &secret(999))
            .await
            .expect("store");
        assert_eq!(
            metrics.snapshot().since(&warm).calls(),
            0,
            "{}",
            s.backend()
        );

        let (reader, metrics) = s.manager(Hierarchy::Service).await;
        for i in 0..200 {
            let got = reader.get(&ident("openai", i)).await.expect("get");
            assert_eq!(got.expose_secret(), secret(i).expose_secret());
        }
        assert_eq!(metrics.snapshot().calls(), 2, "{}", s.backend());

        // The same keys with the hierarchy off: one call per key once rewrapped.
        let (off, _) = s.manager(Hierarchy::Off).await;
        let r = off
            .rewrap(&RewrapOptions::default(), |_| {})
            .await
            .expect("rewrap");
        assert_eq!(r.done, 201, "{}", s.backend());
        let (reader, metrics) = s.manager(Hierarchy::Off).await;
        for i in 0..200 {
            reader.get(&ident("openai", i)).await.expect("get");
        }
        assert_eq!(metrics.snapshot().calls(), 201, "{}", s.backend());
    }
}

#[tokio::test]
async fn branch_rows_edited_in_the_database_are_integrity_errors() {
    for s in Store::all().await {
        let b = s.backend();
        let (m, _) = s.manager(Hierarchy::Service).await;
        let (a, c) = (ident("svc-a", 1), ident("svc-b", 1));
        m.store(&a, &secret(1)).await.expect("store");
        m.store(&c, &secret(2)).await.expect("store");
        let rows = s.branch_rows().await;
        assert_eq!(rows.len(), 2, "{b}");
        let row_of = |svc: &str| {
            rows.iter()
                .find(|r| r.scope.value() == Some(svc))
                .cloned()
                .expect("row")
        };
        let (ra, rb) = (row_of("svc-a"), row_of("svc-b"));
        let id_a = ra.branch_id.hyphenated().to_string();
        let get_a = || async { s.manager(Hierarchy::Service).await.0.get(&a).await };
        assert!(get_a().await.is_ok(), "{b}");

        // Swapped: branch a's row holds branch b's wrapped key and commitment.
        s.sql(
            "UPDATE branch_keys SET wrapped = {}, commitment = {} WHERE branch_id = {}",
            vec![
                rb.wrapped.ciphertext.clone().into(),
                rb.commitment.clone().into(),
                id_a.clone().into(),
            ],
        )
        .await;
        refused("a swapped branch row", b, get_a().await);
        s.restore(&ra).await;
        assert!(get_a().await.is_ok(), "{b}: restored");

        // Moved to another scope: new keys of that scope must not go under it.
        let other = llm_accounting::branch::BranchScope::new(
            llm_accounting::branch::ScopeKind::Service,
            Some("svc-c".into()),
        )
        .expect("scope");
        s.sql(
            "UPDATE branch_keys SET scope_value = {}, scope_key = {} WHERE branch_id = {}",
            vec![
                "svc-c".to_owned().into(),
                other.lookup_key().into(),
                id_a.clone().into(),
            ],
        )
        .await;
        refused("a branch row moved to another scope", b, get_a().await);
        let (fresh, _) = s.manager(Hierarchy::Service).await;
        refused(
            "a store under the moved row",
            b,
            fresh.store(&ident("svc-c", 1), &secret(3)).await,
        );
        assert!(
            matches!(
                fresh.get(&ident("svc-c", 1)).await,
                Err(Error::NotFound { .. })
            ),
            "{b}: the refused store wrote nothing"
        );
        s.restore(&ra).await;

        // An edited commitment, and an edited wrapped key.
        let mut bad = ra.commitment.clone();
        bad[0] ^= 1;
        s.sql(
            "UPDATE branch_keys SET commitment = {} WHERE branch_id = {}",
            vec![bad.into(), id_a.clone().into()],
        )
        .await;
        refused("an edited commitment", b, get_a().await);
        s.restore(&ra).await;
        let mut bad = ra.wrapped.ciphertext.clone();
        bad[20] ^= 1;
        s.sql(
            "UPDATE branch_keys SET wrapped = {} WHERE branch_id = {}",
            vec![bad.into(), id_a.clone().into()],
        )
        .await;
        refused("an edited wrapped branch key", b, get_a().await);
        s.restore(&ra).await;

        // Another version number: the data keys name a version that is not there.
        s.sql(
            "UPDATE branch_keys SET version = 2 WHERE branch_id = {}",
            vec![id_a.clone().into()],
        )
        .await;
        refused("a renumbered branch row", b, get_a().await);
        s.sql(
            "UPDATE branch_keys SET version = 1 WHERE branch_id = {}",
            vec![id_a.clone().into()],
        )
        .await;
        assert!(get_a().await.is_ok(), "{b}: restored");

        // A data key moved to branch b: its envelope and row name branch b's version 1.
        let repo = s.db.repository().await;
        let key = repo.find_key(&a).await.expect("find").expect("key");
        let version = repo
            .list_versions(key.id)
            .await
            .expect("versions")
            .pop()
            .expect("version");
        let mut env = Envelope::from_bytes(&version.envelope).expect("envelope");
        env.wrapped.master_key_ref = format!("branch/{}/v1", rb.branch_id.hyphenated());
        s.sql(
            "UPDATE api_key_versions SET envelope = {}, master_key_ref = {} WHERE key_id = {}",
            vec![
                env.to_bytes().expect("encode").into(),
                env.wrapped.master_key_ref.clone().into(),
                key.id.hyphenated().to_string().into(),
            ],
        )
        .await;
        refused("a data key moved to another branch", b, get_a().await);
        // Even below the seal, the branch layer refuses it: unwrapping under branch b fails.
        let local = LocalKmsProvider::open_or_create(&s.master_key).expect("master key");
        let layer = BranchKeyProvider::new(
            Arc::new(local),
            Arc::new(s.db.repository().await) as Arc<dyn BranchKeyStore>,
            Hierarchy::Service,
            Duration::from_secs(600),
        );
        let context = llm_accounting::EncryptionContext::new(key.id, a.clone(), version.version);
        assert!(
            matches!(
                layer.unwrap_key(&env.wrapped, &context).await,
                Err(Error::Integrity { .. })
            ),
            "{b}: unwrap under another branch"
        );
    }
}
