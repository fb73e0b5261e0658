//! Failures: a store that cannot be opened is an error, never a panic, and
//! a change that fails half-way leaves nothing behind.
//!
//! A failure in the middle of a write is injected with a trigger (created
//! from a connection outside the library) that aborts every insert into
//! `audit_events` — the last statement of every key change.

use crate::common::*;
use portcullis::auth::keys::KeyError;
use portcullis::store::{KeyFilter, Store, StoreError};

const FAIL_AUDIT: &str = "CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'injected failure'); END";
const HEAL_AUDIT: &str = "DROP TRIGGER fail_audit";

async fn all_keys(env: &Env) -> Vec<portcullis::store::KeyRecord> {
    env.keys
        .list(&KeyFilter {
            include_revoked: true,
            limit: 1000,
            ..KeyFilter::default()
        })
        .await
        .unwrap()
}

async fn open_err(url: &str, create: bool) -> StoreError {
    match Store::open(url, create).await {
        Ok(_) => panic!("opening {url} should fail"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn unopenable_stores_are_errors() {
    let dir = tempfile::tempdir().unwrap();

    // The parent "directory" is a file.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let e = open_err(&format!("sqlite://{}/x.db", file.display()), true).await;
    assert!(matches!(e, StoreError::Database(_)), "{e:?}");

    // The parent directory does not exist.
    let e = open_err(
        &format!("sqlite://{}/missing/dir/x.db", dir.path().display()),
        true,
    )
    .await;
    assert!(matches!(e, StoreError::Database(_)), "{e:?}");

    // No file, and not asked to create one: nothing is created.
    let absent = dir.path().join("absent.db");
    open_err(&format!("sqlite://{}", absent.display()), false).await;
    assert!(!absent.exists());

    // A file that is not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a_u8; 8192]).unwrap();
    open_err(&format!("sqlite://{}", junk.display()), true).await;

    // A read-only directory. Root ignores permissions, so the case is only
    // meaningful when a probe write there fails.
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    set_mode(&ro, 0o555);
    let probe_fails = std::fs::write(ro.join("probe"), b"x").is_err();
    if probe_fails {
        open_err(&format!("sqlite://{}/x.db", ro.display()), true).await;
        assert!(!ro.join("x.db").exists());
    }
    set_mode(&ro, 0o755);

    // A file system that takes no new files, whoever we are.
    if cfg!(target_os = "linux") && std::path::Path::new("/proc/self").exists() {
        open_err("sqlite:///proc/portcullis-it.db", true).await;
    }

    // A Postgres server that is not there: an error (nothing listens on
    // the port), and the password does not reach the message.
    let port = crate::pg_server::free_port();
    let e = open_err(
        &format!("postgres://app:hunter2@127.0.0.1:{port}/portcullis"),
        true,
    )
    .await;
    assert!(matches!(e, StoreError::Database(_)), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    // Not a URL Postgres can parse: refused, without the password.
    let e = open_err("postgres://app:hunter2@[::1/portcullis", true).await;
    assert!(matches!(e, StoreError::UnsupportedUrl(_)), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(matches!(
        open_err("mysql://x", true).await,
        StoreError::UnsupportedUrl(_)
    ));
}

fn set_mode(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn a_failed_create_leaves_no_row() {
    let env = Env::new().await;
    env.raw(FAIL_AUDIT).await;
    match env.keys.create("test", &spec("data:read")).await {
        Err(KeyError::Store(_)) => {}
        other => panic!("expected a store error, got {other:?}"),
    }
    assert!(all_keys(&env).await.is_empty());
    assert_eq!(env.raw_count("SELECT COUNT(*) FROM api_keys").await, 0);
    assert_eq!(env.raw_count("SELECT COUNT(*) FROM key_changes").await, 0);
    assert_eq!(env.raw_count("SELECT COUNT(*) FROM audit_events").await, 0);

    // The failed transaction released its lock: another process can write.
    env.raw(HEAL_AUDIT).await;
    let cli = env.cli().await;
    cli.create("cli", &spec("data:read")).await.unwrap();
    let created = env.create(&spec("data:read")).await;
    valid(&env.verifier, created.key.expose()).await;
    assert_eq!(all_keys(&env).await.len(), 2);
}

#[tokio::test]
async fn a_failed_rotation_or_revocation_changes_nothing() {
    let env = Env::new().await;
    let created = env.create(&spec("data:read")).await;
    let key = created.key.expose().to_owned();
    let before = env.keys.show(&created.record.id).await.unwrap();
    valid(&env.verifier, &key).await;
    let changes = env.raw_count("SELECT COUNT(*) FROM key_changes").await;

    env.raw(FAIL_AUDIT).await;
    assert!(matches!(
        env.keys.rotate("test", &created.record.id, 60).await,
        Err(KeyError::Store(_))
    ));
    assert!(matches!(
        env.keys.revoke("test", &created.record.id).await,
        Err(KeyError::Store(_))
    ));
    assert!(matches!(
        env.keys
            .set_disabled("test", &created.record.id, true)
            .await,
        Err(KeyError::Store(_))
    ));
    assert_eq!(env.keys.show(&created.record.id).await.unwrap(), before);
    assert_eq!(all_keys(&env).await.len(), 1);
    assert_eq!(
        env.raw_count("SELECT COUNT(*) FROM key_changes").await,
        changes
    );
    env.verifier.sync_changes().await;
    valid(&env.verifier, &key).await;
    // A cold verifier reading the store agrees.
    let cold = env.other_verifier().await;
    valid(&cold, &key).await;

    env.raw(HEAL_AUDIT).await;
    env.keys
        .rotate("test", &created.record.id, 60)
        .await
        .unwrap();
    assert_eq!(all_keys(&env).await.len(), 2);
}

async fn open_in_dir_named(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join(name);
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("p.db");
    let url = format!("sqlite://{}", path.display());
    match Store::open(&url, true).await {
        Ok(s) => {
            s.ping().await.unwrap();
            assert!(path.exists(), "{name}: the file was made somewhere else");
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

#[tokio::test]
async fn store_paths_with_unusual_characters_open() {
    for name in [
        "with space",
        "per%25cent",
        "hash#mark",
        "semi;colon",
        "amp&ersand",
    ] {
        open_in_dir_named(name).await;
    }
}

#[tokio::test]
async fn store_path_with_a_question_mark_opens() {
    open_in_dir_named("question?mark").await;
}
