//! Database URLs: malformed ones, unsupported schemes, missing server databases and refused
//! credentials are configuration errors, `mariadb://` is MySQL, and no error shows the
//! URL's password.

use std::time::Duration;

use llm_accounting_core::{Error, error_chain};
use llm_accounting_store::{SeaOrmKeyRepository, StoreOptions, redact_url};

/// An obviously fake password, put in every URL below.
const FAKE_PASSWORD: &str = "FAKE-pw-7c1d";

fn quick() -> StoreOptions {
    StoreOptions {
        connect_timeout: Duration::from_secs(3),
        ..StoreOptions::default()
    }
}

/// The configuration error `url` gives, checked to hold no password.
async fn config_error(url: &str, options: &StoreOptions) -> String {
    match SeaOrmKeyRepository::connect(url, options).await {
        Err(e @ Error::Config { .. }) => {
            let chain = error_chain(&e);
            assert!(!chain.contains(FAKE_PASSWORD), "{url}: {chain}");
            assert!(!format!("{e:?}").contains(FAKE_PASSWORD), "{url}: {e:?}");
            chain
        }
        other => panic!("{url}: expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_urls_are_config_errors_without_the_password() {
    let p = FAKE_PASSWORD;
    let mut urls = vec![
        format!("oracle://app:{p}@db/keys"),
        format!("app:{p}@db/keys"),
        format!("//app:{p}@db/keys"),
        p.to_owned(),
    ];
    if cfg!(feature = "postgres") {
        urls.push(format!("postgres://app:{p}@127.0.0.1:notaport/keys"));
        urls.push(format!("postgres://app:{p}@[::1/keys"));
        urls.push(format!("postgres://app:{p}@db/keys?sslmode=sometimes"));
    }
    if cfg!(feature = "mysql") {
        urls.push(format!("mysql://app:{p}@127.0.0.1:99999/keys"));
        urls.push(format!("mariadb://app:{p}@127.0.0.1:notaport/keys"));
        urls.push(format!("mysql://app:{p}@db/keys?ssl-mode=sometimes"));
    }
    for url in &urls {
        config_error(url, &quick()).await;
    }
}

#[test]
fn redacted_urls_hide_passwords() {
    let url = format!("postgres://app:{FAKE_PASSWORD}@db/keys?password={FAKE_PASSWORD}");
    let shown = redact_url(&url);
    assert!(!shown.contains(FAKE_PASSWORD), "{shown}");
    assert_eq!(
        shown,
        "postgres://app:[REDACTED]@db/keys?password=[REDACTED]"
    );
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod servers {
    use llm_accounting_core::KeyRepository;
    use llm_accounting_testkit::{Backend, TestDatabase};

    use super::*;

    /// The server's URL with `database` instead of the test database.
    fn with_database(url: &str, database: &str) -> String {
        let (base, _) = url.rsplit_once('/').expect("a database in the URL");
        format!("{base}/{database}")
    }

    #[tokio::test]
    async fn a_missing_server_database_is_a_config_error() {
        for backend in [Backend::Postgres, Backend::MySql] {
            if !Backend::all().contains(&backend) {
                continue;
            }
            let Some(db) = TestDatabase::create(backend).await else {
                continue;
            };
            let url = with_database(db.url(), "lla_no_such_database_3f9a");
            let message = config_error(&url, &quick()).await;
            assert!(message.contains("does not exist"), "{backend}: {message}");
        }
    }

    /// `mariadb://` is MySQL's protocol: accepted, given to the driver as `mysql://`.
    #[cfg(feature = "mysql")]
    #[tokio::test]
    async fn mariadb_urls_are_accepted_as_mysql() {
        let Some(db) = TestDatabase::create(Backend::MySql).await else {
            return;
        };
        let url = db.url().replacen("mysql://", "mariadb://", 1);
        assert!(url.starts_with("mariadb://"), "{url}");
        let repo = SeaOrmKeyRepository::connect(&url, &db.options())
            .await
            .expect("mariadb:// opens");
        assert!(repo.list_keys(&Default::default()).await.is_ok());
    }

    /// Credentials the server refuses are a configuration error, and the message holds no
    /// password.
    #[cfg(feature = "mysql")]
    #[tokio::test]
    async fn refused_credentials_are_a_config_error() {
        let Some(db) = TestDatabase::create(Backend::MySql).await else {
            return;
        };
        let (scheme, rest) = db.url().split_once("://").expect("scheme");
        let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
        let url = format!("{scheme}://lla_nobody:{FAKE_PASSWORD}@{rest}");
        let message = config_error(&url, &quick()).await;
        assert!(message.contains("refused the credentials"), "{message}");
    }
}
