//! Throwaway databases for tests (features `sqlite`, `postgres`, `mysql`).
//!
//! [`TestDatabase::create`] makes a fresh database on the server named by
//! `LLM_ACCOUNTING_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) or
//! `LLM_ACCOUNTING_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`), or a SQLite
//! file in a temporary directory, and drops it again when dropped, so that test runs cannot
//! collide. When a server cannot be reached the test is skipped with a loud message on
//! stderr, unless `LLM_ACCOUNTING_REQUIRE_SERVICES=1`, in which case it fails (see
//! [`crate::services`]).

use std::fmt;
use std::time::Duration;

use llm_accounting_store::{SeaOrmKeyRepository, StoreOptions};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use sea_orm::sqlx::{self, Connection};

use crate::services::skip_or_fail;

/// Admin URL of the PostgreSQL server the tests use.
pub const POSTGRES_URL_ENV: &str = "LLM_ACCOUNTING_TEST_POSTGRES_URL";
/// Admin URL of the MySQL/MariaDB server the tests use.
pub const MYSQL_URL_ENV: &str = "LLM_ACCOUNTING_TEST_MYSQL_URL";

/// A database kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
}

impl Backend {
    /// Every backend this build supports: those whose feature is on (a crate's `sqlite`,
    /// `postgres` and `mysql` features turn on the testkit's of the same name).
    pub fn all() -> Vec<Backend> {
        let mut all = Vec::new();
        if cfg!(feature = "sqlite") {
            all.push(Backend::Sqlite);
        }
        if cfg!(feature = "postgres") {
            all.push(Backend::Postgres);
        }
        if cfg!(feature = "mysql") {
            all.push(Backend::MySql);
        }
        all
    }

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }

    fn admin_url(self) -> Option<String> {
        let (var, default) = match self {
            Backend::Sqlite => return None,
            Backend::Postgres => (POSTGRES_URL_ENV, "postgres://postgres@127.0.0.1:5432/test"),
            Backend::MySql => (MYSQL_URL_ENV, "mysql://root@127.0.0.1:3306/test"),
        };
        Some(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fresh, empty database that is dropped with this value.
pub struct TestDatabase {
    backend: Backend,
    url: String,
    name: String,
    admin_url: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("backend", &self.backend)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// A new database of `backend`, or `None` when its server is unreachable and services are
    /// not required (a loud message says so).
    ///
    /// # Panics
    ///
    /// When the server is unreachable and `LLM_ACCOUNTING_REQUIRE_SERVICES=1`, or when the
    /// database cannot be created.
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        let name = format!("lla_t_{}", uuid::Uuid::new_v4().simple());
        let Some(admin_url) = backend.admin_url() else {
            let dir = tempfile::tempdir().expect("temporary directory");
            let url = format!("sqlite://{}", dir.path().join("keys.db").display());
            return Some(TestDatabase {
                backend,
                url,
                name,
                admin_url: None,
                _dir: Some(dir),
            });
        };
        if let Err(e) = admin_execute(backend, &admin_url, &format!("CREATE DATABASE {name}")).await
        {
            skip_or_fail(
                &format!("{backend} at {}", redact(&admin_url)),
                &format!("unavailable ({e})"),
            );
            return None;
        }
        let url = replace_database(&admin_url, &name);
        Some(TestDatabase {
            backend,
            url,
            name,
            admin_url: Some(admin_url),
            _dir: None,
        })
    }

    /// A new database of every backend in [`Backend::all`] whose server can be reached (see
    /// [`TestDatabase::create`]).
    ///
    /// # Panics
    ///
    /// When a server is unreachable and `LLM_ACCOUNTING_REQUIRE_SERVICES=1`, or when a
    /// database cannot be created.
    pub async fn create_all() -> Vec<TestDatabase> {
        let mut out = Vec::new();
        for backend in Backend::all() {
            if let Some(db) = TestDatabase::create(backend).await {
                out.push(db);
            }
        }
        out
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL (for `LLM_ACCOUNTING_DATABASE_URL` or `--db`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Options suited to tests: short timeouts, and the SQLite file created on first open.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            connect_timeout: Duration::from_secs(10),
            create_if_missing: true,
            ..StoreOptions::default()
        }
    }

    /// Opens a repository on this database (migrations applied).
    ///
    /// # Panics
    ///
    /// When it cannot be opened.
    pub async fn repository(&self) -> SeaOrmKeyRepository {
        SeaOrmKeyRepository::connect(&self.url, &self.options())
            .await
            .unwrap_or_else(|e| panic!("open {} test database: {e}", self.backend))
    }

    /// Runs `sql` on its own connection (an attacker's, say), with one parameter per `{}`
    /// (written `$1`, `$2`, ... on PostgreSQL, `?` elsewhere).
    ///
    /// # Panics
    ///
    /// When the statement fails, naming the backend and the statement.
    pub async fn execute(&self, sql: &str, values: Vec<sea_orm::Value>) {
        use sea_orm::ConnectionTrait;
        let mut text = String::with_capacity(sql.len());
        for (i, part) in sql.split("{}").enumerate() {
            if i > 0 {
                if self.backend == Backend::Postgres {
                    text.push_str(&format!("${i}"));
                } else {
                    text.push('?');
                }
            }
            text.push_str(part);
        }
        let repo = self.repository().await;
        let conn = repo.connection();
        conn.execute_raw(sea_orm::Statement::from_sql_and_values(
            conn.get_database_backend(),
            text,
            values,
        ))
        .await
        .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.backend));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(admin_url) = self.admin_url.clone() else {
            return;
        };
        let backend = self.backend;
        let sql = match backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        // Drop may run inside a runtime (or while panicking): use a thread of our own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(admin_execute(backend, &admin_url, &sql))
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs one statement on the admin database.
async fn admin_execute(backend: Backend, admin_url: &str, sql: &str) -> Result<(), String> {
    let run = async {
        match backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres => async {
                let mut c = sqlx::PgConnection::connect(admin_url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut c)
                    .await?;
                c.close().await
            }
            .await
            .map_err(|e: sqlx::Error| e.to_string()),
            #[cfg(feature = "mysql")]
            Backend::MySql => async {
                let mut c = sqlx::MySqlConnection::connect(admin_url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut c)
                    .await?;
                c.close().await
            }
            .await
            .map_err(|e: sqlx::Error| e.to_string()),
            _ => {
                let _ = (admin_url, sql);
                Err(format!("{backend} is not compiled in"))
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(result) => result,
        Err(_) => Err("timed out after 10 s".into()),
    }
}

/// `scheme://auth@host/db?query` with `db` replaced.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{database}?{q}"),
        None => format!("{host_part}/{database}"),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    match url[scheme_end..].find('@') {
        Some(at) => {
            let auth = &url[scheme_end..scheme_end + at];
            let user = auth.split(':').next().unwrap_or("");
            format!(
                "{}{user}@{}",
                &url[..scheme_end],
                &url[scheme_end + at + 1..]
            )
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            replace_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            replace_database("mysql://root@h/test?ssl-mode=disabled", "x"),
            "mysql://root@h/x?ssl-mode=disabled"
        );
        assert_eq!(replace_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u@h/db");
    }
}
