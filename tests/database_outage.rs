//! A database server that goes away and comes back: reads and writes fail as "unavailable"
//! (never "not found"), cached keys stop being served once they cannot be checked, and the
//! same manager works again when the server is back, without a restart.
//!
//! The outage is a TCP proxy in front of the real PostgreSQL / MySQL server that this test
//! switches off (cutting every connection and refusing new ones) and on again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llm_accounting::{
    ApiKey, CacheOptions, Error, KeyIdentity, LocalKmsProvider, ManagerOptions,
    SeaOrmKeyRepository, SecureKeyManager, StoreOptions,
};
use llm_accounting_testkit::{Backend, TestDatabase};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// A loopback TCP proxy that can be switched off and on.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let down = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = tokio::spawn({
            let down = Arc::clone(&down);
            let links = Arc::clone(&links);
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        drop(inbound); // refused: closed at once
                        continue;
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().await.push(link);
                }
            }
        });
        Proxy {
            addr,
            down,
            links,
            acceptor,
        }
    }

    /// Cuts every open connection and refuses new ones.
    async fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// `scheme://auth@host:port/db` -> (host:port, the URL with host:port replaced by `via`).
fn reroute(url: &str, via: SocketAddr) -> (SocketAddr, String) {
    let start = url.find('@').map(|i| i + 1).expect("URL with user");
    let end = start + url[start..].find('/').expect("URL with database");
    let target: SocketAddr = url[start..end]
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("numeric host:port in the test URL");
    (target, format!("{}{via}{}", &url[..start], &url[end..]))
}

fn key(s: &str) -> ApiKey {
    ApiKey::new(format!("sk-test-FAKE-{s}-0123456789"))
}

fn is_unavailable<T: std::fmt::Debug>(r: &llm_accounting::Result<T>) -> bool {
    matches!(r, Err(Error::DatabaseUnavailable { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_and_the_manager_recovers() {
    for backend in [Backend::Postgres, Backend::MySql] {
        if !Backend::all().contains(&backend) {
            continue;
        }
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        db.repository().await; // migrations applied directly
        let (target, _) = reroute(db.url(), "127.0.0.1:1".parse().expect("addr"));
        let proxy = Proxy::start(target).await;
        let (_, url) = reroute(db.url(), proxy.addr);

        let dir = tempfile::tempdir().expect("tempdir");
        let provider =
            LocalKmsProvider::open_or_create(dir.path().join("master.key")).expect("master key");
        let options = StoreOptions {
            connect_timeout: Duration::from_secs(2),
            ..StoreOptions::default()
        };
        let repo = SeaOrmKeyRepository::connect(&url, &options)
            .await
            .expect("open through the proxy");
        let refresh = Duration::from_millis(200);
        let m = SecureKeyManager::builder(Arc::new(provider), Arc::new(repo))
            .options(ManagerOptions {
                cache: CacheOptions {
                    refresh_interval: refresh,
                    ..CacheOptions::default()
                },
                ..ManagerOptions::default()
            })
            .build();
        let cached = KeyIdentity::from_parts("openai", Some("dana"), None).expect("id");
        let never_stored = KeyIdentity::from_parts("openai", Some("erin"), None).expect("id");
        m.store(&cached, &key("before")).await.expect("store");
        m.get(&cached).await.expect("get");

        proxy.go_down().await;
        let r = m.get(&never_stored).await;
        assert!(
            is_unavailable(&r),
            "{backend}: an outage is not 'not found': {r:?}"
        );
        let r = m.store(&never_stored, &key("during")).await;
        assert!(is_unavailable(&r), "{backend}: {r:?}");
        // The cached key cannot be checked any more: after three refresh intervals it is not
        // served (it could have been revoked meanwhile).
        tokio::time::sleep(refresh * 4).await;
        let r = m.get(&cached).await;
        assert!(is_unavailable(&r), "{backend}: stale cache served: {r:?}");

        proxy.come_back();
        let start = Instant::now();
        let got = loop {
            match m.get(&cached).await {
                Ok(k) => break k,
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    eprintln!("{backend}: not back yet: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{backend}: did not recover: {e}"),
            }
        };
        eprintln!("{backend}: recovered after {:?}", start.elapsed());
        assert_eq!(got.expose_secret(), key("before").expose_secret());
        m.store(&never_stored, &key("after"))
            .await
            .expect("store after recovery");
        assert_eq!(
            m.get(&never_stored).await.expect("get").expose_secret(),
            key("after").expose_secret()
        );
    }
}
