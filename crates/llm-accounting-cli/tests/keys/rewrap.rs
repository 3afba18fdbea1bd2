//! `keys rewrap` interrupted and resumed.

use std::process::Stdio;

use llm_accounting_testkit::Env;

use super::{BIN, runtime};

/// `keys rewrap` killed with SIGKILL at several points, then run again: it finishes, and every
/// one of 5,000 keys decrypts under the new master key.
#[cfg(unix)]
#[test]
fn rewrap_survives_sigkill_and_resumes() {
    use llm_accounting::{KeyIdentity, LocalKmsProvider, SeaOrmKeyRepository, SecureKeyManager};
    const N: usize = 5000;
    let env = Env::new(BIN);
    let mk = env.dir().join("master.key");
    let rt = runtime();
    let db_url = format!("sqlite://{}", env.db_path().display());
    let value = |i: usize| format!("sk-test-FAKE-{i:06}-0123456789abcdef");
    let id =
        |i: usize| KeyIdentity::from_parts("bulk", Some(&format!("u{i:05}")), None).expect("id");
    rt.block_on(async {
        let provider = LocalKmsProvider::open_or_create(&mk).expect("mk");
        let creating = llm_accounting::StoreOptions {
            create_if_missing: true,
            ..Default::default()
        };
        let repo = SeaOrmKeyRepository::connect(&db_url, &creating)
            .await
            .expect("db");
        let m = SecureKeyManager::new(std::sync::Arc::new(provider), std::sync::Arc::new(repo));
        for i in 0..N {
            m.store(&id(i), &llm_accounting::ApiKey::new(value(i)))
                .await
                .expect("store");
        }
    });
    let r = env.run(&["master-key", "add-version"]).ok();
    assert!(r.stderr.contains("added master key v2"), "{r:#?}");
    let r = env.run(&["keys", "rewrap", "--check"]).code(1);
    assert!(
        r.stderr
            .contains(&format!("{N} version(s) not under local v2")),
        "{r:#?}"
    );

    let spawn = || {
        env.command(&["keys", "rewrap", "--batch-size", "50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rewrap")
    };
    let mut kills = 0;
    for delay_ms in [150u64, 400, 700, 1000] {
        let mut child = spawn();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().expect("poll").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
        // Whatever the point of the kill, every key still reads (old or new master key).
        for i in (0..N).step_by(250) {
            let r = env.run(&[
                "keys",
                "get",
                "--service",
                "bulk",
                "--user",
                &format!("u{i:05}"),
            ]);
            assert_eq!(
                r.stdout.trim_end(),
                value(i),
                "after kill at {delay_ms} ms: {r:#?}"
            );
        }
    }
    assert!(
        kills >= 1,
        "the rewrap was never interrupted; make N larger"
    );
    let r = env.run(&["keys", "rewrap"]).ok();
    assert!(r.stderr.contains("failed 0"), "{r:#?}");
    env.run(&["keys", "rewrap", "--check"]).ok();

    // Every key decrypts, and only the new master key is needed.
    rt.block_on(async {
        let provider = LocalKmsProvider::open(&mk)
            .expect("mk")
            .with_min_version(2)
            .expect("min version");
        let repo = SeaOrmKeyRepository::connect(&db_url, &Default::default())
            .await
            .expect("db");
        let m = SecureKeyManager::new(std::sync::Arc::new(provider), std::sync::Arc::new(repo));
        for i in 0..N {
            assert_eq!(m.get(&id(i)).await.expect("get").expose_secret(), value(i));
        }
    });
}
