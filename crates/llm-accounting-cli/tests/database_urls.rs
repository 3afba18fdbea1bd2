//! Database URLs through the binary: a password never reaches stdout or stderr (errors for
//! bad URLs, `RUST_LOG=trace` against real servers), and bad URLs, unsupported schemes and
//! missing databases are configuration errors (exit 2), not "unavailable" (exit 5).

use llm_accounting_testkit::{Backend, Env, Run, TestDatabase};
use sea_orm::{ConnectionTrait, Database};

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Obviously fake passwords. PostgreSQL's test server trusts every local connection, so any
/// password gets in; MariaDB's is checked, for a user made by the test.
const FAKE_PG_PASSWORD: &str = "FAKE-pw-pg-5f2e";
const FAKE_MY_PASSWORD: &str = "FAKE-pw-my-9c4b";
const FAKE_BAD_PASSWORD: &str = "FAKE-pw-bad-1a7d";

/// An obviously fake key.
const KEY: &str = "sk-test-FAKE-0000000000000000000000000d8a";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `url` with `user:password@` as its userinfo.
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

/// Asserts that `password` is in neither output of `run`.
#[track_caller]
fn assert_hidden(run: &Run, password: &str) {
    assert!(
        !run.stderr.contains(password),
        "password on stderr: {run:#?}"
    );
    assert!(
        !run.stdout.contains(password),
        "password on stdout: {run:#?}"
    );
}

/// Every command that opens the database, with `RUST_LOG=trace`, against `url`.
fn every_command_at_trace(env: &Env, url: &str, password: &str) {
    let trace = [("RUST_LOG", "trace")];
    let keys = |args: &[&'static str]| -> Vec<&str> {
        let mut v = vec!["--db", url, "keys"];
        v.extend_from_slice(args);
        v
    };
    let runs = [
        env.run_with(
            &keys(&["store", "--service", "openai"]),
            Some(KEY.as_bytes()),
            &trace,
        ),
        env.run_with(&keys(&["get", "--service", "openai"]), None, &trace),
        env.run_with(&keys(&["list", "--versions"]), None, &trace),
        env.run_with(&keys(&["rewrap"]), None, &trace),
        env.run_with(&keys(&["audit"]), None, &trace),
        env.run_with(&keys(&["delete", "--service", "openai"]), None, &trace),
    ];
    for r in &runs {
        assert_eq!(r.code, 0, "{r:#?}");
        assert!(
            r.stderr.contains("TRACE") || r.stderr.contains("DEBUG"),
            "trace logging is on: {r:#?}"
        );
        assert_hidden(r, password);
    }
    assert_eq!(runs[1].stdout, format!("{KEY}\n"));
}

#[test]
fn trace_logging_against_postgres_never_shows_the_password() {
    let rt = runtime();
    let Some(db) = rt.block_on(TestDatabase::create(Backend::Postgres)) else {
        return;
    };
    let user = db
        .url()
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo.split(':').next().unwrap_or(userinfo).to_owned())
        .expect("a user in the test URL");
    let url = with_credentials(db.url(), &user, FAKE_PG_PASSWORD);
    let env = Env::new(BIN).secrets(&[FAKE_PG_PASSWORD]);
    every_command_at_trace(&env, &url, FAKE_PG_PASSWORD);
}

/// A MariaDB user with a password, dropped again when this is dropped.
struct MariaDbUser {
    admin_url: String,
    name: String,
}

impl MariaDbUser {
    fn create(rt: &tokio::runtime::Runtime, db: &TestDatabase, password: &str) -> Self {
        let name = format!("lla_u_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let database = db.url().rsplit('/').next().expect("database").to_owned();
        let user = MariaDbUser {
            admin_url: db.url().to_owned(),
            name,
        };
        user.execute(
            rt,
            &[
                format!("CREATE USER '{}'@'%' IDENTIFIED BY '{password}'", user.name),
                format!("GRANT ALL ON `{database}`.* TO '{}'@'%'", user.name),
            ],
        );
        user
    }

    fn execute(&self, rt: &tokio::runtime::Runtime, statements: &[String]) {
        rt.block_on(async {
            let conn = Database::connect(&self.admin_url).await.expect("admin");
            for sql in statements {
                conn.execute_unprepared(sql).await.expect("admin statement");
            }
        });
    }
}

impl Drop for MariaDbUser {
    fn drop(&mut self) {
        let rt = runtime();
        self.execute(&rt, &[format!("DROP USER IF EXISTS '{}'@'%'", self.name)]);
    }
}

#[test]
fn trace_logging_against_mariadb_never_shows_the_password() {
    let rt = runtime();
    let Some(db) = rt.block_on(TestDatabase::create(Backend::MySql)) else {
        return;
    };
    let user = MariaDbUser::create(&rt, &db, FAKE_MY_PASSWORD);
    let url = with_credentials(db.url(), &user.name, FAKE_MY_PASSWORD);
    let env = Env::new(BIN).secrets(&[FAKE_MY_PASSWORD]);
    every_command_at_trace(&env, &url, FAKE_MY_PASSWORD);
    // `mariadb://` is the same database.
    let mariadb = url.replacen("mysql://", "mariadb://", 1);
    assert!(mariadb.starts_with("mariadb://"), "{mariadb}");
    every_command_at_trace(&env, &mariadb, FAKE_MY_PASSWORD);
    // A wrong password is a configuration error, and neither password shows.
    let wrong = with_credentials(db.url(), &user.name, FAKE_BAD_PASSWORD);
    let r = env
        .run_with(
            &["--db", &wrong, "keys", "list"],
            None,
            &[("RUST_LOG", "trace")],
        )
        .code(2);
    assert!(r.stderr.contains("refused the credentials"), "{r:#?}");
    assert_hidden(&r, FAKE_BAD_PASSWORD);
    assert_hidden(&r, FAKE_MY_PASSWORD);
}

/// Malformed URLs, unsupported schemes and missing databases: exit 2, one line, no password,
/// at any log level.
#[test]
fn bad_urls_and_missing_databases_are_configuration_errors() {
    let p = FAKE_BAD_PASSWORD;
    let env = Env::new(BIN).secrets(&[p]);
    let mut cases = vec![
        (
            format!("oracle://app:{p}@db/keys"),
            "unsupported database URL scheme",
        ),
        (
            format!("app:{p}@db/keys"),
            "unsupported database URL scheme `app:`",
        ),
        (p.to_owned(), "does not start with a scheme"),
        (
            format!("postgres://app:{p}@127.0.0.1:notaport/keys"),
            "invalid PostgreSQL database URL",
        ),
        (
            format!("mysql://app:{p}@127.0.0.1:99999/keys"),
            "invalid MySQL database URL",
        ),
        (
            format!("mariadb://app:{p}@[::1/keys"),
            "invalid MySQL database URL",
        ),
        (
            format!(
                "sqlite://{}",
                env.dir().join("no-dir").join("k.db").display()
            ),
            "does not exist",
        ),
    ];
    let rt = runtime();
    for backend in [Backend::Postgres, Backend::MySql] {
        if let Some(db) = rt.block_on(TestDatabase::create(backend)) {
            let (base, _) = db.url().rsplit_once('/').expect("database");
            cases.push((
                format!("{base}/lla_no_such_database_8e1f"),
                "does not exist",
            ));
        }
    }
    for (url, expected) in &cases {
        for log in ["warn", "trace"] {
            let r = env
                .run_with(&["--db", url, "keys", "list"], None, &[("RUST_LOG", log)])
                .code(2);
            assert!(
                r.stderr
                    .lines()
                    .any(|l| l.starts_with("error: ") && l.contains(expected)),
                "{url}: {r:#?}"
            );
            assert_hidden(&r, p);
            if log == "warn" {
                assert_eq!(r.stderr.lines().count(), 1, "one line: {r:#?}");
            }
        }
    }
}
