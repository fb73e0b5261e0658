//! `Store::copy_to` (`portcullis store copy`): a store filled through the
//! public API (keys in every state, users, clients, refresh tokens,
//! sessions, signing keys, secrets, audit events) reaches another store
//! whole, SQLite to SQLite and SQLite to Postgres and back; the copy
//! verifies the same keys; a second copy writes nothing; a destination
//! that holds other rows is refused before anything is written.

use crate::common::{T0, rejected, scopes, valid};
use crate::pg_server::PgServer;
use portcullis::auth::keys::{KeyService, KeySpec};
use portcullis::auth::verifier::{KeyRejection, Verifier, VerifierConfig};
use portcullis::clock::ManualClock;
use portcullis::core::KeyHash;
use portcullis::core::quota::{Refill, RefillPlan};
use portcullis::store::dump::{CopyError, CopyReport};
use portcullis::store::identity::{
    NewClient, NewUser, RefreshGrant, RefreshOutcome, SessionRow, SigningKeyRow,
};
use portcullis::store::{KeyFilter, NewAudit, Store};

/// The keys a filled store holds, as plaintext (only the test knows it).
struct Filled {
    /// Valid now: plain, limited with a refill, expiring, rotated (both
    /// the old one in its grace and the new one).
    valid: Vec<String>,
    /// Revoked.
    revoked: String,
    /// Disabled.
    disabled: String,
    /// The limited key's id (one use spent).
    limited_id: String,
}

/// Rows per table after [`fill`].
const COUNTS: &[(&str, u64)] = &[
    ("api_keys", 7),
    ("users", 2),
    ("oauth_clients", 2),
    ("refresh_tokens", 3),
    ("sessions", 2),
    ("signing_keys", 2),
    ("secrets", 1),
    ("audit_events", 16),
    // Two minute counts, each in its minute, hour and day row.
    ("usage", 6),
];

fn audit(action: &'static str, target: &str) -> NewAudit {
    NewAudit {
        at: T0,
        actor: "cli".into(),
        action,
        target: Some(target.into()),
        // Not ASCII, nested: JSON travels as the text the store wrote.
        detail: serde_json::json!({"why": "déménagement ✓", "n": [1, {"x": null}]}),
    }
}

fn refresh(n: &str) -> KeyHash {
    KeyHash::of(&format!("refresh-{n}"))
}

fn session(n: &str) -> KeyHash {
    KeyHash::of(&format!("session-{n}"))
}

/// Fills `store` through the public API, every table and every state.
async fn fill(store: &Store) -> Filled {
    let keys = KeyService::new(store.clone(), ManualClock::new(T0), None);
    let spec = |name: &str| KeySpec::new(name, "alice", scopes("data:read data:write"));
    let plain = keys.create("cli", &spec("plain")).await.unwrap();
    let limited = keys
        .create(
            "cli",
            &KeySpec {
                uses: Some(5),
                refill: Some(RefillPlan {
                    every: Refill::Daily,
                    amount: 5,
                }),
                rate_limit: Some("100/minute".into()),
                metadata: serde_json::json!({"team": "Zürich", "tier": 2, "tags": ["a", "b"]}),
                ..spec("limited")
            },
        )
        .await
        .unwrap();
    let expiring = keys
        .create(
            "cli",
            &KeySpec {
                expires_in: Some(86_400),
                env: "test".into(),
                ..spec("expiring")
            },
        )
        .await
        .unwrap();
    let revoked = keys.create("cli", &spec("revoked")).await.unwrap();
    keys.revoke("cli", &revoked.record.id).await.unwrap();
    let disabled = keys.create("cli", &spec("disabled")).await.unwrap();
    keys.set_disabled("cli", &disabled.record.id, true)
        .await
        .unwrap();
    let old = keys.create("cli", &spec("rotated")).await.unwrap();
    let new = keys.rotate("cli", &old.record.id, 3600).await.unwrap();
    assert_eq!(
        store.consume_use(&limited.key.hash(), 1, T0).await.unwrap(),
        Some(4)
    );
    store
        .touch_last_used(&[(plain.record.id.clone(), T0 + 5)])
        .await
        .unwrap();

    let user = |name: &str, hash: &str| NewUser {
        username: name.into(),
        password_hash: hash.into(),
        scopes: scopes("data:read"),
        disabled: false,
        created_at: T0,
    };
    store
        .insert_users(
            &[
                user("ann", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
                user(
                    "bob",
                    "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
                ),
            ],
            &audit("user.import", "2"),
        )
        .await
        .unwrap();
    store
        .set_user_disabled("bob", true, &audit("user.disable", "bob"))
        .await
        .unwrap();
    for (id, name) in [("cl_live", "live client"), ("cl_gone", "gone client")] {
        let client = NewClient {
            client_id: id.into(),
            secret_hash: KeyHash::of(&format!("secret of {id}")),
            name: name.into(),
            scopes: scopes("data:read"),
            grants: "client_credentials refresh_token".into(),
            created_at: T0,
        };
        store
            .insert_client(&client, &audit("client.create", id))
            .await
            .unwrap();
    }
    store
        .revoke_client("cl_gone", &audit("client.revoke", "cl_gone"))
        .await
        .unwrap();
    let grant = RefreshGrant {
        family: "fam1".into(),
        client_id: "cl_live".into(),
        subject: "ann".into(),
        kind: "user".into(),
        scopes: scopes("data:read"),
        created_at: T0,
        expires_at: T0 + 86_400,
    };
    store.insert_refresh(&refresh("1"), &grant).await.unwrap();
    let rotated = store
        .rotate_refresh(&refresh("1"), &refresh("2"), "cl_live", None, T0 + 1)
        .await
        .unwrap();
    assert!(matches!(rotated, RefreshOutcome::Rotated(_)));
    let other = RefreshGrant {
        family: "fam2".into(),
        client_id: String::new(),
        ..grant
    };
    store.insert_refresh(&refresh("3"), &other).await.unwrap();

    for n in ["live", "ended"] {
        let row = SessionRow {
            username: "ann".into(),
            created_at: T0,
            last_seen_at: T0,
            expires_at: T0 + 43_200,
            revoked: false,
        };
        store.insert_session(&session(n), &row).await.unwrap();
    }
    store
        .touch_sessions(&[(session("live"), T0 + 30)])
        .await
        .unwrap();
    store
        .revoke_session(&session("ended"), T0 + 40)
        .await
        .unwrap();

    for (kid, at) in [("sk1", T0), ("sk2", T0 + 100)] {
        let row = SigningKeyRow {
            kid: kid.into(),
            alg: "EdDSA".into(),
            // Every byte value, NUL and 0xFF included.
            private_der: (0..=255u8).rev().chain(0..=255).collect(),
            public_jwk: format!("{{\"kid\":\"{kid}\",\"kty\":\"OKP\"}}"),
            created_at: at,
            retired_at: None,
            drop_after: None,
        };
        store
            .add_signing_key(&row, at + 900, false, &audit("jwt.rotate", kid))
            .await
            .unwrap();
    }
    store
        .secret("csrf_hmac", &[0, 1, 2, 254, 255], T0)
        .await
        .unwrap();
    let usage = |outcome, count| portcullis::store::usage::UsageRow {
        minute: T0,
        key_id: plain.record.id.clone(),
        subject: "alice".into(),
        outcome,
        count,
    };
    store
        .record_usage(&[
            usage(portcullis::core::Outcome::Valid, 41),
            usage(portcullis::core::Outcome::RateLimited, 1 << 40),
        ])
        .await
        .unwrap();

    Filled {
        valid: vec![
            plain.key.expose().to_owned(),
            limited.key.expose().to_owned(),
            expiring.key.expose().to_owned(),
            old.key.expose().to_owned(),
            new.key.expose().to_owned(),
        ],
        revoked: revoked.key.expose().to_owned(),
        disabled: disabled.key.expose().to_owned(),
        limited_id: limited.record.id.clone(),
    }
}

fn all_keys() -> KeyFilter {
    KeyFilter {
        include_revoked: true,
        limit: 1000,
        ..KeyFilter::default()
    }
}

/// Everything the public API shows of a store, for comparing two.
async fn view(store: &Store) -> Vec<String> {
    let mut out = vec![
        format!("{:?}", store.list_keys(&all_keys()).await.unwrap()),
        format!("{:?}", store.list_users().await.unwrap()),
        format!("{:?}", store.list_clients().await.unwrap()),
        format!("{:?}", store.list_audit(None, 1000).await.unwrap()),
    ];
    for name in ["ann", "bob"] {
        let u = store.user_auth(name).await.unwrap().unwrap();
        out.push(format!(
            "{} {} {} {}",
            u.username, u.password_hash, u.disabled, u.tokens_after
        ));
    }
    for id in ["cl_live", "cl_gone"] {
        out.push(format!("{:?}", store.client_auth(id).await.unwrap()));
    }
    for n in ["1", "2", "3"] {
        out.push(format!(
            "{:?}",
            store.refresh_grant(&refresh(n), T0 + 2).await.unwrap()
        ));
    }
    for n in ["live", "ended"] {
        out.push(format!("{:?}", store.session(&session(n)).await.unwrap()));
    }
    for k in store.signing_keys(T0).await.unwrap() {
        out.push(format!(
            "{} {} {:?} {} {} {:?} {:?}",
            k.kid, k.alg, k.private_der, k.public_jwk, k.created_at, k.retired_at, k.drop_after
        ));
    }
    out.push(format!(
        "{:?}",
        store.secret("csrf_hmac", b"not this", T0).await.unwrap()
    ));
    out
}

fn check_counts(report: &CopyReport) {
    let counts: Vec<(&str, u64)> = report.tables.iter().map(|t| (t.table, t.rows)).collect();
    assert_eq!(counts, COUNTS);
    assert_eq!(report.rows, COUNTS.iter().map(|(_, n)| n).sum::<u64>());
    assert!(report.tables.iter().all(|t| t.sha256.len() == 64));
    assert_eq!(report.sha256.len(), 64);
}

/// Copies `source` (filled as `filled` says) into the empty `dest` and
/// checks everything arrived and works there; returns the report.
async fn copy_and_check(source: &Store, filled: &Filled, dest: &Store) -> CopyReport {
    let report = source.copy_to(dest).await.expect("copy");
    check_counts(&report);
    assert_eq!(report.new, report.rows, "everything was new");
    assert_eq!(view(dest).await, view(source).await);

    // Again: nothing new, the same sums.
    let again = source.copy_to(dest).await.expect("second copy");
    assert_eq!(again.new, 0);
    assert!(again.tables.iter().all(|t| t.new == 0));
    assert_eq!(
        (again.rows, &again.sha256, &again.tables[0].sha256),
        (report.rows, &report.sha256, &report.tables[0].sha256)
    );

    // The limited key kept its spent use (verifying it below spends
    // another).
    let limited = dest.get_key(&filled.limited_id).await.unwrap();
    assert_eq!(limited.remaining_uses, Some(4));

    // The keys verify on the copy as on the source; the refused stay
    // refused, for the same reasons.
    let v = Verifier::new(
        dest.clone(),
        ManualClock::new(T0),
        VerifierConfig::default(),
    )
    .await
    .unwrap();
    for key in &filled.valid {
        valid(&v, key).await;
    }
    for key in [&filled.revoked, &filled.disabled] {
        assert!(matches!(
            rejected(&v, key).await,
            KeyRejection::State { .. }
        ));
    }

    // Verifying the limited key on the copy spent one of its uses there:
    // the copy has moved on, and copying again is refused, naming it.
    let e = source.copy_to(dest).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "api_keys: 1 row with the same id but other values (first: id \"{}\")",
            filled.limited_id
        )),
        "{e}"
    );

    // The next audit event on the copy follows the copied ones (the
    // destination's id generator moved past them).
    let last = dest.list_audit(None, 1).await.unwrap()[0].id;
    let keys = KeyService::new(dest.clone(), ManualClock::new(T0), None);
    keys.create("cli", &KeySpec::new("after", "alice", scopes("x")))
        .await
        .unwrap();
    assert_eq!(dest.list_audit(None, 1).await.unwrap()[0].id, last + 1);

    // The spent refresh token is still spent: presenting it is reuse.
    let reuse = dest
        .rotate_refresh(&refresh("1"), &refresh("4"), "cl_live", None, T0 + 3)
        .await
        .unwrap();
    assert_eq!(reuse, RefreshOutcome::Reused);
    report
}

async fn sqlite(dir: &tempfile::TempDir, name: &str) -> Store {
    let url = format!("sqlite://{}", dir.path().join(name).display());
    Store::open(&url, true).await.unwrap()
}

async fn postgres() -> Store {
    Store::open(&PgServer::shared().fresh_db(), true)
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_to_sqlite_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let source = sqlite(&dir, "source.db").await;
    let filled = fill(&source).await;
    copy_and_check(&source, &filled, &sqlite(&dir, "dest.db").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_and_back_keeps_everything_with_the_same_sums() {
    let dir = tempfile::tempdir().unwrap();
    let source = sqlite(&dir, "source.db").await;
    let filled = fill(&source).await;
    let on_sqlite = source
        .copy_to(&sqlite(&dir, "plain.db").await)
        .await
        .unwrap();

    let pg = postgres().await;
    let on_pg = copy_and_check(&source, &filled, &pg).await;
    // The same rows sum the same on either database: the checksum is of
    // what each returned, so nothing changed on the way.
    assert_eq!(on_pg, on_sqlite);

    // And back: a copy of the Postgres store into SQLite sums the same
    // as the Postgres store did when the copy started.
    let back = sqlite(&dir, "back.db").await;
    let before = pg
        .copy_to(&sqlite(&dir, "snapshot.db").await)
        .await
        .unwrap();
    let returned = pg.copy_to(&back).await.unwrap();
    assert_eq!(returned.sha256, before.sha256);
    assert_eq!(view(&back).await, view(&pg).await);
}

/// A destination holding rows the source lacks, or other values under a
/// key the source has, is refused with the tables named, and nothing is
/// written.
async fn conflicts_are_refused(dest: Store, extra: Store) {
    let dir = tempfile::tempdir().unwrap();
    let source = sqlite(&dir, "source.db").await;
    fill(&source).await;

    // Another "ann" (and so another first audit event).
    let ann = NewUser {
        username: "ann".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXI$b3RoZXI".into(),
        scopes: scopes("admin"),
        disabled: false,
        created_at: T0,
    };
    dest.insert_users(&[ann], &audit("user.import", "1"))
        .await
        .unwrap();
    let keys_before = dest.list_keys(&all_keys()).await.unwrap();
    let e = source.copy_to(&dest).await.unwrap_err();
    let CopyError::DestinationDiffers(what) = &e else {
        panic!("expected DestinationDiffers, got {e:?}");
    };
    assert!(
        what.contains(
            "users: 1 row with the same username but other values (first: username \"ann\")"
        ),
        "{what}"
    );
    assert!(what.contains("audit_events: "), "{what}");
    assert!(!what.contains("api_keys"), "{what}");
    assert!(e.to_string().contains("nothing was copied"), "{e}");
    assert_eq!(dest.list_keys(&all_keys()).await.unwrap(), keys_before);
    assert_eq!(dest.list_users().await.unwrap().len(), 1);

    // A row the source does not have (a gateway served from it first and
    // made its own CSRF secret).
    extra.secret("csrf_hmac", b"its own", T0).await.unwrap();
    let e = source.copy_to(&extra).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the destination already holds rows that differ from the source's (secrets: 1 row with the same name but other values (first: name \"csrf_hmac\")); nothing was copied: copy into an empty store, one no gateway has served from"
    );
    assert!(extra.list_keys(&all_keys()).await.unwrap().is_empty());
    extra.secret("other", b"x", T0).await.unwrap();
    let e = source.copy_to(&extra).await.unwrap_err().to_string();
    assert!(
        e.contains(
            "secrets: 1 row with the same name but other values, 1 row the source does not have"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_differing_sqlite_destination_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    conflicts_are_refused(sqlite(&dir, "a.db").await, sqlite(&dir, "b.db").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_differing_postgres_destination_is_refused() {
    conflicts_are_refused(postgres().await, postgres().await).await;
}

/// A column the copy does not list (a migration the dump was not taught)
/// stops the copy instead of being left behind.
#[tokio::test]
async fn a_column_the_copy_does_not_know_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = sqlite(&dir, "source.db").await;
    fill(&source).await;
    crate::common::raw_exec(
        &dir.path().join("source.db"),
        "ALTER TABLE users ADD COLUMN nickname TEXT",
    )
    .await;
    let dest = sqlite(&dir, "dest.db").await;
    let e = source.copy_to(&dest).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("a table or column this version's copy does not know"),
        "{e}"
    );
    assert!(dest.list_keys(&all_keys()).await.unwrap().is_empty());
}
