//! Skip or require: what a test does when a service it needs (a database server, moto,
//! drongo) cannot be reached.
//!
//! By default it prints a loud `*** SKIPPED ... ***` notice on stderr and returns without
//! checking anything; with `LLM_ACCOUNTING_REQUIRE_SERVICES=1` (set by `.ci/run`) it fails
//! instead, so that CI never passes by skipping.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Set to `1` to make a missing service fail the tests instead of skipping them.
pub const REQUIRE_SERVICES_ENV: &str = "LLM_ACCOUNTING_REQUIRE_SERVICES";

/// Variable holding the URL of moto's KMS server (`http://127.0.0.1:PORT`), exported by
/// `scripts/with-moto`.
pub const MOTO_URL_ENV: &str = "LLM_ACCOUNTING_TEST_MOTO_URL";

/// Variable holding the URL of drongo's Cloud KMS emulator (`http://127.0.0.1:PORT`), exported
/// by `scripts/with-drongo`.
pub const DRONGO_URL_ENV: &str = "LLM_ACCOUNTING_TEST_DRONGO_URL";

/// Variable holding the URL of a Redis server for the Redis engine's tests (default
/// `redis://127.0.0.1:6379`, which `.ci/run` starts).
pub const REDIS_URL_ENV: &str = "LLM_ACCOUNTING_TEST_REDIS_URL";

/// Whether `LLM_ACCOUNTING_REQUIRE_SERVICES=1`.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV).is_ok_and(|v| v == "1")
}

/// Reports that `what` cannot run because of `why`: panics when [`services_required`], else
/// prints a loud notice on stderr (the caller then skips).
///
/// # Panics
///
/// When `LLM_ACCOUNTING_REQUIRE_SERVICES=1`.
#[track_caller]
pub fn skip_or_fail(what: &str, why: &str) {
    if services_required() {
        panic!("{what}: {why}, and {REQUIRE_SERVICES_ENV}=1 requires it");
    }
    eprintln!(
        "\n*** SKIPPED {what}: {why}. With {REQUIRE_SERVICES_ENV}=1 this is a failure. ***\n"
    );
}

/// The URL in the variable `var` if a TCP connection to it succeeds. Otherwise reports (see
/// [`skip_or_fail`]) that `test` needs `service`, with `how` telling how to provide it, and
/// returns `None`.
///
/// # Panics
///
/// When the service is missing and `LLM_ACCOUNTING_REQUIRE_SERVICES=1`.
#[track_caller]
pub fn service_url(var: &str, service: &str, test: &str, how: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|u| !u.trim().is_empty());
    let problem = match &url {
        None => format!("{var} is not set"),
        Some(u) if !reachable(u) => format!("{service} is not reachable at {u}"),
        Some(_) => return url,
    };
    skip_or_fail(test, &format!("{problem}. {how}"));
    None
}

/// The URL of moto's KMS server, or `None` after a loud notice naming `test` (see
/// [`service_url`]).
///
/// # Panics
///
/// When moto is missing and `LLM_ACCOUNTING_REQUIRE_SERVICES=1`.
#[track_caller]
pub fn moto_url(test: &str) -> Option<String> {
    service_url(
        MOTO_URL_ENV,
        "moto",
        test,
        &format!(
            "Run scripts/test (it starts moto and sets {MOTO_URL_ENV}), or start moto yourself \
             (python3 scripts/moto_kms_server.py -H 127.0.0.1 -p 5000) and set {MOTO_URL_ENV}"
        ),
    )
}

/// The URL of drongo's Cloud KMS emulator, or `None` after a loud notice naming `test` (see
/// [`service_url`]).
///
/// # Panics
///
/// When drongo is missing and `LLM_ACCOUNTING_REQUIRE_SERVICES=1`.
#[track_caller]
pub fn drongo_url(test: &str) -> Option<String> {
    service_url(
        DRONGO_URL_ENV,
        "drongo",
        test,
        &format!(
            "Run scripts/test (it starts drongo and sets {DRONGO_URL_ENV}), or start drongo \
             yourself (pip install drongo google-crc32c; drongo server --host 127.0.0.1 --port \
             8089) and set {DRONGO_URL_ENV}"
        ),
    )
}

/// Whether a TCP connection to the URL's host and port succeeds within a second.
/// The URL of the Redis server for tests ([`REDIS_URL_ENV`], default
/// `redis://127.0.0.1:6379`) if it answers a TCP connection, or `None` after a loud notice
/// naming `test` (see [`skip_or_fail`]).
///
/// # Panics
///
/// When Redis is missing and `LLM_ACCOUNTING_REQUIRE_SERVICES=1`.
#[track_caller]
pub fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var(REDIS_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let host = url.rsplit_once('@').map_or(url.as_str(), |(_, h)| h);
    if reachable(host) {
        return Some(url);
    }
    skip_or_fail(
        test,
        &format!(
            "Redis is not reachable at {}. Start it (service redis-server start, or \
             redis-server --daemonize yes --bind 127.0.0.1 --port 6379) or set {REDIS_URL_ENV}",
            host.split('/').next().unwrap_or(host)
        ),
    );
    None
}

fn reachable(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let Ok(addrs) = host_port.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_is_a_tcp_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(reachable(&format!("http://127.0.0.1:{port}/path")));
        assert!(reachable(&format!("127.0.0.1:{port}")));
        drop(listener);
        assert!(!reachable(&format!("http://127.0.0.1:{port}")));
        assert!(!reachable("http://no such host"));
    }
}
