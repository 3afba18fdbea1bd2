//! The local provider against the core conformance suite, plus file handling.

use llm_accounting_core::{DataKey, Error, KmsProvider};
use llm_accounting_kms_local::LocalKmsProvider;
use llm_accounting_testkit::ctx;

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = LocalKmsProvider::open_or_create(dir.path().join("master.key")).expect("open");
    llm_accounting_core::conformance::provider::run(&provider).await;
}

#[tokio::test]
async fn conformance_over_branch_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = LocalKmsProvider::open_or_create(dir.path().join("master.key")).expect("open");
    llm_accounting_core::conformance::branch::run(std::sync::Arc::new(provider)).await;
}

#[cfg(unix)]
#[test]
fn created_private_and_refused_when_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub").join("master.key");
    LocalKmsProvider::open_or_create(&path).expect("create");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(path.parent().expect("parent"))
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
    for bad in [0o640, 0o604, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).expect("chmod");
        let err = LocalKmsProvider::open(&path).expect_err("must refuse");
        assert!(
            matches!(&err, Error::Config { message, .. } if message.contains("chmod 600")),
            "{err}"
        );
    }
}

/// An existing master key file is checked, not only a created one: writable by group or
/// others, or owned by another user, it is refused with the path and the fix.
#[cfg(unix)]
#[test]
fn existing_file_writable_by_others_or_owned_by_another_user_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.key");
    LocalKmsProvider::open_or_create(&path).expect("create");
    for bad in [0o620, 0o602, 0o622] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).expect("chmod");
        for err in [
            LocalKmsProvider::open(&path).expect_err("must refuse"),
            LocalKmsProvider::open_or_create(&path).expect_err("must refuse, not recreate"),
        ] {
            assert!(
                matches!(&err, Error::Config { message, .. }
                    if message.contains(&path.display().to_string())
                        && message.contains("written by group or others")
                        && message.contains("chmod 600")),
                "{err}"
            );
        }
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    LocalKmsProvider::open(&path).expect("0600 again: accepted");
    // Another owner (only root can give a file away; otherwise there is nothing to try).
    if std::os::unix::fs::chown(&path, Some(65534), None).is_ok() {
        let err = LocalKmsProvider::open(&path).expect_err("another user's file");
        assert!(
            matches!(&err, Error::Config { message, .. }
                if message.contains("owned by another user")
                    && message.contains(&path.display().to_string())),
            "{err}"
        );
    }
}

#[tokio::test]
async fn reopening_gives_the_same_key_and_another_file_does_not_unwrap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.key");
    let a = LocalKmsProvider::open_or_create(&path).expect("create");
    let dek = DataKey::generate().expect("rng");
    let c = ctx("openai", Some("alice"), 1);
    let wrapped = a.wrap_key(&dek, &c).await.expect("wrap");
    let again = LocalKmsProvider::open_or_create(&path).expect("reopen");
    let back = again.unwrap_key(&wrapped, &c).await.expect("unwrap");
    assert_eq!(back.expose_secret(), dek.expose_secret());

    let other = LocalKmsProvider::open_or_create(dir.path().join("other.key")).expect("create");
    assert!(matches!(
        other.unwrap_key(&wrapped, &c).await,
        Err(Error::Integrity { .. })
    ));
    // Even with the reference forged to the other file's key, the bytes do not authenticate.
    let mut forged = wrapped.clone();
    forged.master_key_ref = other.master_key_ref();
    assert!(matches!(
        other.unwrap_key(&forged, &c).await,
        Err(Error::Integrity { .. })
    ));
}

#[tokio::test]
async fn new_versions_wrap_and_old_versions_still_unwrap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.key");
    let v1 = LocalKmsProvider::open_or_create(&path).expect("create");
    let c = ctx("openai", Some("alice"), 1);
    let dek = DataKey::generate().expect("rng");
    let old = v1.wrap_key(&dek, &c).await.expect("wrap");
    let new_ref = LocalKmsProvider::add_master_key_version(&path).expect("add");
    assert!(new_ref.starts_with("v2:"), "{new_ref}");
    let v2 = LocalKmsProvider::open(&path).expect("open");
    assert_eq!(v2.master_key_refs().len(), 2);
    assert_eq!(v2.master_key_ref(), new_ref);
    let fresh = v2.wrap_key(&dek, &c).await.expect("wrap");
    assert_eq!(fresh.master_key_ref, new_ref);
    assert_ne!(fresh.master_key_ref, old.master_key_ref);
    for w in [&old, &fresh] {
        let back = v2.unwrap_key(w, &c).await.expect("unwrap");
        assert_eq!(back.expose_secret(), dek.expose_secret());
    }
}

#[test]
fn malformed_files_are_clear_errors_and_debug_is_redacted() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.key");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).expect("create");
    f.write_all(b"v1 not-base64!!\n").expect("write");
    let err = LocalKmsProvider::open(&path).expect_err("malformed");
    assert!(err.to_string().contains("not base64"), "{err}");

    let good = LocalKmsProvider::open_or_create(dir.path().join("good.key")).expect("create");
    let text = std::fs::read_to_string(good.path()).expect("read");
    let b64 = text
        .lines()
        .find(|l| l.starts_with("v1 "))
        .expect("key line")
        .split(' ')
        .nth(1)
        .expect("b64");
    let dbg = format!("{good:?}");
    assert!(dbg.contains("REDACTED"), "{dbg}");
    assert!(!dbg.contains(b64), "Debug must not show the master key");
}
