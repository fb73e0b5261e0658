//! The store contract, as checks any backend must pass: every check takes
//! a fresh, empty [`Store`] and talks to it only through the public API,
//! so a second backend runs the same suite with its own stores:
//!
//! ```ignore
//! store_contract::run_all(|| async { Subject { store: open_fresh_postgres().await,
//!     scratch: tempdir_path(), _keep: Box::new(guard) } }).await;
//! ```
//!
//! Here each check is also its own test against a SQLite file in a
//! temporary directory (`store_contract::sqlite::*`).

use portcullis::analytics::{Retention, Span, TopOrder, UsagePoint};
use portcullis::core::Outcome;
use portcullis::core::quota::{Refill, RefillPlan};
use portcullis::core::{KeyHash, Scopes};
use portcullis::store::identity::{
    NewClient, NewUser, RefreshGrant, RefreshOutcome, SessionRow, SigningKeyRow, signing_keys_hash,
    subject_hash,
};
use portcullis::store::usage::UsageRow;
use portcullis::store::{
    KeyChange, KeyFilter, KeySettings, LastAdmin, NewAudit, NewKey, Store, StoreError,
};
use std::future::Future;
use std::path::PathBuf;

/// A fresh store under test, with a directory a backup may be written to.
pub struct Subject {
    /// Empty, migrated.
    pub store: Store,
    /// A second handle on the same database, opened as another process
    /// (another gateway, the CLI) opens it: concurrency checks split
    /// their writers between the two.
    pub other: Store,
    /// A writable directory, empty.
    pub scratch: PathBuf,
    /// Whatever keeps the store alive (a temp dir, a throwaway database).
    pub _keep: Box<dyn std::any::Any + Send>,
}

/// A fixed moment (2030-03-17) the checks measure time from.
const T0: i64 = 1_900_000_000;

macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        /// Runs every check, each against a store `fresh` opens.
        pub async fn run_all<F, Fu>(fresh: F)
        where
            F: Fn() -> Fu,
            Fu: Future<Output = Subject>,
        {
            $( $check(fresh().await).await; )*
        }

        /// Each check against a SQLite file of its own.
        mod sqlite {
            /// The whole suite through the entry point another backend
            /// calls.
            #[tokio::test]
            async fn run_all() {
                super::run_all(super::sqlite_subject).await;
            }

            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::sqlite_subject().await).await;
                }
            )*
        }

        /// Each check against a database of its own on a private
        /// Postgres cluster (`pg_server.rs`).
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::postgres_subject().await).await;
                }
            )*
        }
    };
}

contract!(
    keys_insert_get_and_list,
    grant_by_hash_reads_and_counts,
    changes_log_and_audit_together,
    refused_changes_write_nothing,
    rotation_links_and_conflicts,
    consume_use_is_exact_under_concurrency,
    consume_use_refills_when_due,
    last_admin_is_protected,
    last_admin_holds_under_concurrency,
    settings_change_logs_and_keeps_an_admin,
    refresh_rotates_and_detects_reuse,
    client_revoke_cascades,
    user_disable_and_password_end_tokens,
    changes_since_is_ordered_and_monotonic,
    prune_drops_only_old_changes,
    signing_keys_and_secrets,
    backup_copies_every_table,
    usage_adds_from_two_writers,
    usage_rolls_minutes_up_to_hours_and_days,
    usage_prunes_each_span_by_its_retention,
    usage_top_orders_and_limits,
    usage_series_keeps_to_its_range,
);

async fn sqlite_subject() -> Subject {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("contract.db").display());
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch dir");
    Subject {
        store: Store::open(&url, true).await.expect("open store"),
        other: Store::open(&url, false).await.expect("open second handle"),
        scratch,
        _keep: Box::new(dir),
    }
}

async fn postgres_subject() -> Subject {
    let url = crate::pg_server::PgServer::shared().fresh_db();
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch dir");
    // The contract is about meaning, not load: waits long enough that a
    // loaded test machine never turns a check into a "busy" answer.
    let opts = portcullis::store::StoreOptions {
        connect_timeout: std::time::Duration::from_secs(20),
        statement_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    };
    let store = Store::open_with(&url, true, &opts)
        .await
        .expect("open store");
    Subject {
        store,
        other: Store::open_with(&url, false, &opts)
            .await
            .expect("open second handle"),
        scratch,
        _keep: Box::new(dir),
    }
}

fn scopes(s: &str) -> Scopes {
    Scopes::parse(s).expect("scopes")
}

pub(crate) fn key(id: &str, owner: &str, scope_list: &str) -> NewKey {
    NewKey {
        id: id.into(),
        hash: KeyHash::of(&format!("secret-of-{id}")),
        prefix: format!("pc_test_{id}"),
        env: "test".into(),
        owner: owner.into(),
        name: format!("name of {id}"),
        scopes: scopes(scope_list),
        created_at: T0,
        expires_at: None,
        remaining_uses: None,
        refill: None,
        refilled_at: 0,
        rate_limit: None,
        metadata: serde_json::json!({"k": id}),
        rotated_from: None,
    }
}

fn audit(action: &'static str, target: &str, at: i64) -> NewAudit {
    NewAudit {
        at,
        actor: "contract".into(),
        action,
        target: Some(target.into()),
        detail: serde_json::json!({}),
    }
}

pub(crate) async fn insert(store: &Store, k: &NewKey) {
    store
        .insert_key(k, &audit("key.create", &k.id, k.created_at))
        .await
        .expect("insert key");
}

/// The change-log entries after `seq`, and the newest sequence number.
async fn changes(store: &Store, seq: i64) -> (i64, Vec<KeyHash>) {
    store.changes_since(seq).await.expect("changes_since")
}

async fn audit_actions(store: &Store) -> Vec<String> {
    let mut all = store.list_audit(None, 1000).await.expect("list_audit");
    all.reverse();
    all.into_iter().map(|e| e.action).collect()
}

fn all_keys() -> KeyFilter {
    KeyFilter {
        include_revoked: true,
        limit: 100,
        ..KeyFilter::default()
    }
}

async fn keys_insert_get_and_list(s: Subject) {
    let store = s.store;
    for (id, owner) in [("k1", "ann"), ("k2", "bob"), ("k3", "ann")] {
        insert(&store, &key(id, owner, "data:read")).await;
    }
    let k1 = store.get_key("k1").await.unwrap();
    assert_eq!(
        (k1.owner.as_str(), k1.scopes.as_str(), k1.env.as_str()),
        ("ann", "data:read", "test")
    );
    assert_eq!(k1.metadata, serde_json::json!({"k": "k1"}));
    assert!(!k1.disabled && k1.revoked_at.is_none() && k1.last_used_at.is_none());
    assert!(matches!(
        store.get_key("nope").await,
        Err(StoreError::NotFound)
    ));
    // A second key with the same id is refused.
    assert!(
        store
            .insert_key(&key("k1", "ann", "x"), &audit("key.create", "k1", T0))
            .await
            .is_err()
    );

    let ids =
        |v: Vec<portcullis::store::KeyRecord>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_keys(&all_keys()).await.unwrap()),
        ["k1", "k2", "k3"]
    );
    let ann = KeyFilter {
        owner: Some("ann".into()),
        ..all_keys()
    };
    assert_eq!(ids(store.list_keys(&ann).await.unwrap()), ["k1", "k3"]);
    let page = KeyFilter {
        after: Some("k1".into()),
        limit: 1,
        ..all_keys()
    };
    assert_eq!(ids(store.list_keys(&page).await.unwrap()), ["k2"]);

    let a = audit("key.revoke", "k2", T0 + 1);
    store
        .change_key("k2", KeyChange::Revoke(T0 + 1), LastAdmin::Protect, &a)
        .await
        .unwrap();
    let live = KeyFilter {
        include_revoked: false,
        ..all_keys()
    };
    assert_eq!(ids(store.list_keys(&live).await.unwrap()), ["k1", "k3"]);

    store
        .touch_last_used(&[("k1".into(), T0 + 5), ("k3".into(), T0 + 7)])
        .await
        .unwrap();
    // Never moves back.
    store
        .touch_last_used(&[("k1".into(), T0 + 2)])
        .await
        .unwrap();
    assert_eq!(
        store.get_key("k1").await.unwrap().last_used_at,
        Some(T0 + 5)
    );
    assert_eq!(
        store.get_key("k3").await.unwrap().last_used_at,
        Some(T0 + 7)
    );
}

async fn grant_by_hash_reads_and_counts(s: Subject) {
    let store = s.store;
    let mut k = key("k1", "ann", "data:read data:write");
    k.remaining_uses = Some(3);
    k.rate_limit = Some("10/minute".into());
    k.expires_at = Some(T0 + 100);
    insert(&store, &k).await;
    let before = store.key_lookups();
    let g = store.grant_by_hash(&k.hash).await.unwrap().unwrap();
    assert_eq!((g.key_id.as_str(), g.owner.as_str()), ("k1", "ann"));
    assert_eq!(g.scopes, scopes("data:read data:write"));
    assert_eq!(g.remaining_uses, Some(3));
    assert_eq!(g.expires_at, Some(T0 + 100));
    assert!(g.rate_limit.is_some() && !g.disabled && g.revoked_at.is_none());
    assert!(
        store
            .grant_by_hash(&KeyHash::of("unknown"))
            .await
            .unwrap()
            .is_none()
    );
    // Every lookup counts, on every clone.
    let _ = store.clone().grant_by_hash(&k.hash).await.unwrap();
    assert_eq!(store.key_lookups(), before + 3);
}

async fn changes_log_and_audit_together(s: Subject) {
    let store = s.store;
    let (start, _) = changes(&store, 0).await;
    let k = key("k1", "ann", "data:read");
    insert(&store, &k).await;
    let (seq, hashes) = changes(&store, start).await;
    assert_eq!(hashes, [k.hash]);

    let mut seq = seq;
    let steps = [
        (KeyChange::Disable, "key.disable"),
        (KeyChange::Enable, "key.enable"),
        (KeyChange::Revoke(T0 + 3), "key.revoke"),
    ];
    for (i, (change, action)) in steps.into_iter().enumerate() {
        let at = T0 + 1 + i64::try_from(i).unwrap();
        let rec = store
            .change_key("k1", change, LastAdmin::Protect, &audit(action, "k1", at))
            .await
            .unwrap();
        match change {
            KeyChange::Disable => assert!(rec.disabled),
            KeyChange::Enable => assert!(!rec.disabled),
            KeyChange::Revoke(t) => assert_eq!(rec.revoked_at, Some(t)),
        }
        let (next, hashes) = changes(&store, seq).await;
        assert_eq!(hashes, [k.hash], "{action} logs the key");
        assert!(next > seq);
        seq = next;
    }
    assert_eq!(
        audit_actions(&store).await,
        ["key.create", "key.disable", "key.enable", "key.revoke"]
    );
    let newest = &store.list_audit(None, 1).await.unwrap()[0];
    assert_eq!(newest.target.as_deref(), Some("k1"));
    assert_eq!(newest.actor, "contract");
    let older = store.list_audit(Some(newest.id), 10).await.unwrap();
    assert_eq!(older.len(), 3);
    assert!(older.windows(2).all(|w| w[0].id > w[1].id));
}

async fn refused_changes_write_nothing(s: Subject) {
    let store = s.store;
    insert(&store, &key("k1", "ann", "data:read")).await;
    let a = audit("key.revoke", "k1", T0 + 1);
    store
        .change_key("k1", KeyChange::Revoke(T0 + 1), LastAdmin::Protect, &a)
        .await
        .unwrap();
    let (seq, _) = changes(&store, 0).await;
    let audits = audit_actions(&store).await.len();
    let before = store.get_key("k1").await.unwrap();

    // Revocation is final.
    for change in [
        KeyChange::Enable,
        KeyChange::Disable,
        KeyChange::Revoke(T0 + 9),
    ] {
        assert!(matches!(
            store
                .change_key(
                    "k1",
                    change,
                    LastAdmin::Allow,
                    &audit("key.x", "k1", T0 + 2)
                )
                .await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert!(matches!(
        store
            .change_key(
                "nope",
                KeyChange::Disable,
                LastAdmin::Allow,
                &audit("key.x", "nope", T0)
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .insert_key(&key("k1", "ann", "x"), &audit("key.create", "k1", T0))
            .await
            .is_err()
    );
    assert_eq!(store.get_key("k1").await.unwrap(), before);
    assert_eq!(changes(&store, seq).await.1, []);
    assert_eq!(audit_actions(&store).await.len(), audits);
}

async fn rotation_links_and_conflicts(s: Subject) {
    let store = s.store;
    let mut old = key("old", "ann", "data:read");
    old.expires_at = Some(T0 + 30);
    insert(&store, &old).await;
    let (seq, _) = changes(&store, 0).await;

    let mut new = key("new", "ann", "data:read");
    new.rotated_from = Some("old".into());
    new.created_at = T0 + 10;
    // The grace would outlive the old key's own expiry: the earlier wins.
    let rec = store
        .rotate_key("old", &new, T0 + 60, &audit("key.rotate", "old", T0 + 10))
        .await
        .unwrap();
    assert_eq!(rec.id, "new");
    assert_eq!(rec.rotated_from.as_deref(), Some("old"));
    let was = store.get_key("old").await.unwrap();
    assert_eq!(was.rotated_to.as_deref(), Some("new"));
    assert_eq!(was.expires_at, Some(T0 + 30));
    let (seq, hashes) = changes(&store, seq).await;
    assert_eq!(hashes, [old.hash, new.hash]);
    assert_eq!(
        audit_actions(&store).await.last().map(String::as_str),
        Some("key.rotate")
    );

    let conflict = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Conflict(_)));
    // Rotated already.
    let again = key("again", "ann", "data:read");
    assert!(conflict(
        store
            .rotate_key("old", &again, T0 + 60, &audit("key.rotate", "old", T0 + 11))
            .await
    ));
    // Expired.
    let mut late = key("late", "ann", "data:read");
    late.created_at = T0 + 30;
    let mut short = key("short", "ann", "data:read");
    short.expires_at = Some(T0 + 30);
    insert(&store, &short).await;
    assert!(conflict(
        store
            .rotate_key(
                "short",
                &late,
                T0 + 90,
                &audit("key.rotate", "short", T0 + 30)
            )
            .await
    ));
    // Revoked.
    let a = audit("key.revoke", "new", T0 + 12);
    store
        .change_key("new", KeyChange::Revoke(T0 + 12), LastAdmin::Allow, &a)
        .await
        .unwrap();
    assert!(conflict(
        store
            .rotate_key("new", &late, T0 + 90, &audit("key.rotate", "new", T0 + 13))
            .await
    ));
    assert!(matches!(
        store
            .rotate_key("nope", &late, T0 + 90, &audit("key.rotate", "nope", T0))
            .await,
        Err(StoreError::NotFound)
    ));
    // None of the refused rotations inserted its key or logged anything
    // but the revoke and the insert of `short`.
    assert!(matches!(
        store.get_key("again").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.get_key("late").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(changes(&store, seq).await.1, [short.hash, new.hash]);

    // A key without expiry gets the grace end.
    insert(&store, &key("plain", "ann", "data:read")).await;
    let mut next = key("next", "ann", "data:read");
    next.created_at = T0 + 10;
    store
        .rotate_key(
            "plain",
            &next,
            T0 + 20,
            &audit("key.rotate", "plain", T0 + 10),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_key("plain").await.unwrap().expires_at,
        Some(T0 + 20)
    );
}

async fn consume_use_is_exact_under_concurrency(s: Subject) {
    let store = s.store;
    let mut k = key("k1", "ann", "data:read");
    k.remaining_uses = Some(25);
    insert(&store, &k).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = if i % 2 == 0 { &store } else { &s.other }.clone();
            tokio::spawn(async move { store.consume_use(&k.hash, 1, T0).await.unwrap() })
        })
        .collect();
    let mut spent = Vec::new();
    for t in tasks {
        if let Some(left) = t.await.unwrap() {
            spent.push(left);
        }
    }
    spent.sort_unstable();
    assert_eq!(spent, (0..25).collect::<Vec<_>>(), "each use once");
    assert_eq!(store.get_key("k1").await.unwrap().remaining_uses, Some(0));

    // A cost larger than what is left spends nothing.
    let mut k2 = key("k2", "ann", "data:read");
    k2.remaining_uses = Some(5);
    insert(&store, &k2).await;
    assert_eq!(store.consume_use(&k2.hash, 6, T0).await.unwrap(), None);
    assert_eq!(store.consume_use(&k2.hash, 5, T0).await.unwrap(), Some(0));
    assert_eq!(
        store.consume_use(&k2.hash, 0, T0).await.unwrap(),
        None,
        "cost 0 counts as 1"
    );
}

async fn consume_use_refills_when_due(s: Subject) {
    let store = s.store;
    let day = Refill::Daily.period_start(T0);
    let mut k = key("k1", "ann", "data:read");
    k.remaining_uses = Some(1);
    k.refill = Some(RefillPlan {
        every: Refill::Daily,
        amount: 3,
    });
    k.refilled_at = day;
    insert(&store, &k).await;
    assert_eq!(store.consume_use(&k.hash, 1, T0).await.unwrap(), Some(0));
    assert_eq!(store.consume_use(&k.hash, 1, T0).await.unwrap(), None);
    // The next day: refilled to 3, then one spent.
    let tomorrow = Refill::Daily.next_start(T0) + 5;
    assert_eq!(
        store.consume_use(&k.hash, 1, tomorrow).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        store.consume_use(&k.hash, 2, tomorrow).await.unwrap(),
        Some(0)
    );
    assert_eq!(store.consume_use(&k.hash, 1, tomorrow).await.unwrap(), None);
    let g = store.grant_by_hash(&k.hash).await.unwrap().unwrap();
    assert_eq!(g.refilled_at, Refill::Daily.period_start(tomorrow));

    // A monthly key asking for more than its refill gets nothing.
    let mut m = key("k2", "ann", "data:read");
    m.remaining_uses = Some(0);
    m.refill = Some(RefillPlan {
        every: Refill::Monthly,
        amount: 2,
    });
    m.refilled_at = Refill::Monthly.period_start(T0);
    insert(&store, &m).await;
    let next_month = Refill::Monthly.next_start(T0);
    assert_eq!(
        store.consume_use(&m.hash, 3, next_month).await.unwrap(),
        None
    );
    assert_eq!(
        store.consume_use(&m.hash, 2, next_month).await.unwrap(),
        Some(0)
    );
}

async fn last_admin_is_protected(s: Subject) {
    let store = s.store;
    insert(&store, &key("a1", "ops", "admin")).await;
    let revoke = |id: &'static str, guard: LastAdmin| {
        let store = store.clone();
        async move {
            store
                .change_key(
                    id,
                    KeyChange::Revoke(T0 + 1),
                    guard,
                    &audit("key.revoke", id, T0 + 1),
                )
                .await
        }
    };
    let disable = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .change_key(
                    id,
                    KeyChange::Disable,
                    LastAdmin::Protect,
                    &audit("key.disable", id, T0 + 1),
                )
                .await
        }
    };
    assert!(matches!(
        revoke("a1", LastAdmin::Protect).await,
        Err(StoreError::LastAdminKey)
    ));
    assert!(matches!(disable("a1").await, Err(StoreError::LastAdminKey)));

    // Keys that will not last do not count: expiring, used up, rotated
    // away, disabled, or without the exact scope.
    let mut expiring = key("x1", "ops", "admin");
    expiring.expires_at = Some(T0 + 3);
    let mut limited = key("x2", "ops", "admin");
    limited.remaining_uses = Some(5);
    let disabled = key("x3", "ops", "admin");
    let lookalike = key("x4", "ops", "administrator Admin");
    for k in [&expiring, &limited, &disabled, &lookalike] {
        insert(&store, k).await;
    }
    store
        .change_key(
            "x3",
            KeyChange::Disable,
            LastAdmin::Allow,
            &audit("key.disable", "x3", T0),
        )
        .await
        .unwrap();
    assert!(matches!(
        revoke("a1", LastAdmin::Protect).await,
        Err(StoreError::LastAdminKey)
    ));

    // A refilled admin key lasts; with it, a1 may go.
    let mut refilled = key("a2", "ops", "data:read admin");
    refilled.remaining_uses = Some(0);
    refilled.refill = Some(RefillPlan {
        every: Refill::Daily,
        amount: 10,
    });
    insert(&store, &refilled).await;
    revoke("a1", LastAdmin::Protect).await.unwrap();
    assert!(matches!(
        revoke("a2", LastAdmin::Protect).await,
        Err(StoreError::LastAdminKey)
    ));
    // Allow overrides; a key that is not an active admin key is never
    // protected.
    revoke("x4", LastAdmin::Protect).await.unwrap();
    revoke("a2", LastAdmin::Allow).await.unwrap();
    // Enabling is never refused.
    store
        .change_key(
            "x3",
            KeyChange::Enable,
            LastAdmin::Protect,
            &audit("key.enable", "x3", T0),
        )
        .await
        .unwrap();
}

async fn settings_change_logs_and_keeps_an_admin(s: Subject) {
    let store = s.store;
    let k = key("k1", "ann", "data:read");
    insert(&store, &k).await;
    let (seq, _) = changes(&store, 0).await;
    let set = |id: &'static str, scope_list: &str, rate: Option<&str>, uses: Option<i64>| {
        let store = store.clone();
        let settings = KeySettings {
            scopes: Some(scopes(scope_list)),
            rate_limit: Some(rate.map(str::to_owned)),
            remaining_uses: Some(uses),
        };
        async move {
            store
                .update_key(
                    id,
                    &settings,
                    LastAdmin::Protect,
                    &audit("key.update", id, T0 + 1),
                )
                .await
        }
    };
    let rec = set("k1", "data:read data:write", Some("10/minute"), Some(3))
        .await
        .unwrap();
    assert_eq!(rec.scopes, "data:read data:write");
    assert_eq!(rec.rate_limit.as_deref(), Some("10/minute"));
    assert_eq!(rec.remaining_uses, Some(3));
    let (_, hashes) = changes(&store, seq).await;
    assert_eq!(
        hashes,
        [k.hash],
        "the change is logged, so caches drop the key"
    );
    let grant = store.grant_by_hash(&k.hash).await.unwrap().unwrap();
    assert!(grant.scopes.contains("data:write"));
    // A change that gives only the scopes leaves the uses as they are
    // then: a use spent after the admin read the key is not given back.
    assert_eq!(
        store.consume_use(&k.hash, 1, T0 + 1).await.unwrap(),
        Some(2)
    );
    let only_scopes = KeySettings {
        scopes: Some(scopes("data:read data:write extra")),
        ..KeySettings::default()
    };
    let rec = store
        .update_key(
            "k1",
            &only_scopes,
            LastAdmin::Protect,
            &audit("key.update", "k1", T0 + 1),
        )
        .await
        .unwrap();
    assert_eq!(rec.remaining_uses, Some(2), "the spent use stays spent");
    assert_eq!(
        rec.rate_limit.as_deref(),
        Some("10/minute"),
        "left as it was"
    );
    let rec = set("k1", "data:read", None, None).await.unwrap();
    assert_eq!((rec.rate_limit, rec.remaining_uses), (None, None));
    assert_eq!(
        audit_actions(&store).await,
        ["key.create", "key.update", "key.update", "key.update"]
    );

    // The last lasting admin key keeps the scope and unlimited uses;
    // refused changes write nothing.
    insert(&store, &key("a1", "ops", "admin")).await;
    assert!(matches!(
        set("a1", "data:read", None, None).await,
        Err(StoreError::LastAdminKey)
    ));
    assert!(matches!(
        set("a1", "admin", None, Some(5)).await,
        Err(StoreError::LastAdminKey)
    ));
    assert_eq!(store.get_key("a1").await.unwrap().scopes, "admin");
    set("a1", "admin data:read", Some("5/second"), None)
        .await
        .unwrap();
    insert(&store, &key("a2", "ops", "admin")).await;
    set("a1", "data:read", None, None).await.unwrap();

    // Revocation is final.
    store
        .change_key(
            "k1",
            KeyChange::Revoke(T0 + 2),
            LastAdmin::Protect,
            &audit("key.revoke", "k1", T0 + 2),
        )
        .await
        .unwrap();
    assert!(matches!(
        set("k1", "data:read", None, None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        set("nope", "data:read", None, None).await,
        Err(StoreError::NotFound)
    ));
}

async fn last_admin_holds_under_concurrency(s: Subject) {
    let store = s.store;
    let ids: [&'static str; 4] = ["a1", "a2", "a3", "a4"];
    for id in ids {
        insert(&store, &key(id, "ops", "admin")).await;
    }
    let tasks: Vec<_> = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let store = if i % 2 == 0 { &store } else { &s.other }.clone();
            tokio::spawn(async move {
                store
                    .change_key(
                        id,
                        KeyChange::Revoke(T0 + 1),
                        LastAdmin::Protect,
                        &audit("key.revoke", id, T0 + 1),
                    )
                    .await
            })
        })
        .collect();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => {}
            Err(StoreError::LastAdminKey) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 1, "exactly one admin key is left");
    let live = KeyFilter {
        include_revoked: false,
        limit: 10,
        ..KeyFilter::default()
    };
    assert_eq!(store.list_keys(&live).await.unwrap().len(), 1);
}

fn grant(family: &str, client: &str, subject: &str, kind: &str) -> RefreshGrant {
    RefreshGrant {
        family: family.into(),
        client_id: client.into(),
        subject: subject.into(),
        kind: kind.into(),
        scopes: scopes("data:read data:write"),
        created_at: T0,
        expires_at: T0 + 1000,
    }
}

async fn refresh_rotates_and_detects_reuse(s: Subject) {
    let store = s.store;
    let h = |n: &str| KeyHash::of(&format!("refresh-{n}"));
    store
        .insert_refresh(&h("1"), &grant("f1", "cl_a", "ann", "user"))
        .await
        .unwrap();
    assert!(store.refresh_grant(&h("1"), T0).await.unwrap().is_some());

    // Someone else's token: refused without burning the family.
    let wrong = store
        .rotate_refresh(&h("1"), &h("x"), "cl_b", None, T0 + 1)
        .await
        .unwrap();
    assert_eq!(wrong, RefreshOutcome::Invalid);
    // Wider scopes: refused, nothing changed.
    let wide = scopes("data:read admin");
    let widened = store
        .rotate_refresh(&h("1"), &h("x"), "cl_a", Some(&wide), T0 + 1)
        .await
        .unwrap();
    assert_eq!(widened, RefreshOutcome::ScopeWidened);

    let narrow = scopes("data:read");
    let RefreshOutcome::Rotated(next) = store
        .rotate_refresh(&h("1"), &h("2"), "cl_a", Some(&narrow), T0 + 2)
        .await
        .unwrap()
    else {
        panic!("expected a rotation");
    };
    assert_eq!((next.family.as_str(), next.created_at), ("f1", T0 + 2));
    assert_eq!(next.scopes, narrow);
    assert_eq!(next.expires_at, T0 + 1000, "the family's expiry stays");
    assert!(
        store
            .refresh_grant(&h("1"), T0 + 2)
            .await
            .unwrap()
            .is_none(),
        "spent"
    );
    assert_eq!(
        store.refresh_grant(&h("2"), T0 + 2).await.unwrap(),
        Some(next)
    );

    // Reuse of the spent token revokes the whole family.
    let reused = store
        .rotate_refresh(&h("1"), &h("3"), "cl_a", None, T0 + 3)
        .await
        .unwrap();
    assert_eq!(reused, RefreshOutcome::Reused);
    assert!(
        store
            .refresh_grant(&h("2"), T0 + 3)
            .await
            .unwrap()
            .is_none()
    );
    let dead = store
        .rotate_refresh(&h("2"), &h("4"), "cl_a", None, T0 + 4)
        .await
        .unwrap();
    assert_eq!(dead, RefreshOutcome::Invalid);
    let unknown = store
        .rotate_refresh(&h("?"), &h("5"), "cl_a", None, T0)
        .await
        .unwrap();
    assert_eq!(unknown, RefreshOutcome::Invalid);

    // Expired.
    store
        .insert_refresh(&h("e"), &grant("f2", "cl_a", "ann", "user"))
        .await
        .unwrap();
    let expired = store
        .rotate_refresh(&h("e"), &h("6"), "cl_a", None, T0 + 1000)
        .await
        .unwrap();
    assert_eq!(expired, RefreshOutcome::Invalid);

    // Racing rotations of one token: one rotates, the other sees reuse.
    store
        .insert_refresh(&h("r"), &grant("f3", "", "ann", "user"))
        .await
        .unwrap();
    let (r, r1, r2) = (h("r"), h("r1"), h("r2"));
    let (a, b) = tokio::join!(
        store.rotate_refresh(&r, &r1, "", None, T0 + 5),
        s.other.rotate_refresh(&r, &r2, "", None, T0 + 5),
    );
    let mut got = [a.unwrap(), b.unwrap()].map(|o| matches!(o, RefreshOutcome::Rotated(_)));
    got.sort_unstable();
    assert_eq!(got, [false, true]);

    // Revocation by its client revokes the family; by another, nothing.
    store
        .insert_refresh(&h("v"), &grant("f4", "cl_a", "svc", "client"))
        .await
        .unwrap();
    assert!(!store.revoke_refresh(&h("v"), "cl_b", T0 + 6).await.unwrap());
    assert!(
        store
            .refresh_grant(&h("v"), T0 + 6)
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.revoke_refresh(&h("v"), "cl_a", T0 + 6).await.unwrap());
    assert!(
        !store.revoke_refresh(&h("v"), "cl_a", T0 + 7).await.unwrap(),
        "already"
    );
    assert!(
        store
            .refresh_grant(&h("v"), T0 + 7)
            .await
            .unwrap()
            .is_none()
    );
}

async fn client_revoke_cascades(s: Subject) {
    let store = s.store;
    let client = NewClient {
        client_id: "cl_a".into(),
        secret_hash: KeyHash::of("client secret"),
        name: "svc".into(),
        scopes: scopes("data:read"),
        grants: "client_credentials refresh_token".into(),
        created_at: T0,
    };
    let (seq, _) = changes(&store, 0).await;
    let rec = store
        .insert_client(&client, &audit("client.create", "cl_a", T0))
        .await
        .unwrap();
    assert_eq!((rec.client_id.as_str(), rec.revoked_at), ("cl_a", None));
    let (seq, hashes) = changes(&store, seq).await;
    assert_eq!(hashes, [subject_hash("client", "cl_a")]);
    let auth = store.client_auth("cl_a").await.unwrap().unwrap();
    assert!(!auth.revoked && auth.allows("refresh_token") && !auth.allows("password"));
    assert_eq!(auth.secret_hash, client.secret_hash);

    let h = |n: &str| KeyHash::of(&format!("refresh-{n}"));
    store
        .insert_refresh(&h("1"), &grant("f1", "cl_a", "svc", "client"))
        .await
        .unwrap();
    store
        .insert_refresh(&h("2"), &grant("f2", "cl_a", "ann", "user"))
        .await
        .unwrap();
    store
        .insert_refresh(&h("3"), &grant("f3", "cl_b", "ann", "user"))
        .await
        .unwrap();

    let rec = store
        .revoke_client("cl_a", &audit("client.revoke", "cl_a", T0 + 1))
        .await
        .unwrap();
    assert_eq!(rec.revoked_at, Some(T0 + 1));
    assert!(store.client_auth("cl_a").await.unwrap().unwrap().revoked);
    assert!(
        store
            .refresh_grant(&h("1"), T0 + 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .refresh_grant(&h("2"), T0 + 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .refresh_grant(&h("3"), T0 + 1)
            .await
            .unwrap()
            .is_some(),
        "other client's"
    );
    assert_eq!(
        changes(&store, seq).await.1,
        [subject_hash("client", "cl_a")]
    );
    assert_eq!(
        audit_actions(&store).await,
        ["client.create", "client.revoke"]
    );

    assert!(matches!(
        store
            .revoke_client("cl_a", &audit("client.revoke", "cl_a", T0 + 2))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .revoke_client("cl_zz", &audit("client.revoke", "cl_zz", T0 + 2))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        audit_actions(&store).await.len(),
        2,
        "refusals are not audited"
    );
    assert_eq!(store.list_clients().await.unwrap().len(), 1);
    assert!(store.client_auth("cl_zz").await.unwrap().is_none());
}

fn user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        scopes: scopes("data:read"),
        disabled: false,
        created_at: T0,
    }
}

async fn user_disable_and_password_end_tokens(s: Subject) {
    let store = s.store;
    store
        .insert_users(&[user("ann"), user("bob")], &audit("user.import", "2", T0))
        .await
        .unwrap();
    // All or nothing.
    assert!(matches!(
        store
            .insert_users(&[user("cid"), user("ann")], &audit("user.import", "2", T0))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let names: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["ann", "bob"]);
    assert_eq!(
        store.get_user("ann").await.unwrap().hash_algorithm,
        "argon2id"
    );

    let session = |n: &str| KeyHash::of(&format!("session-{n}"));
    let row = |who: &str| SessionRow {
        username: who.into(),
        created_at: T0,
        last_seen_at: T0,
        expires_at: T0 + 1000,
        revoked: false,
    };
    store
        .insert_session(&session("a"), &row("ann"))
        .await
        .unwrap();
    store
        .insert_session(&session("b"), &row("bob"))
        .await
        .unwrap();
    store
        .touch_sessions(&[(session("a"), T0 + 4)])
        .await
        .unwrap();
    assert_eq!(
        store
            .session(&session("a"))
            .await
            .unwrap()
            .unwrap()
            .last_seen_at,
        T0 + 4
    );
    let h = |n: &str| KeyHash::of(&format!("refresh-{n}"));
    store
        .insert_refresh(&h("a"), &grant("fa", "", "ann", "user"))
        .await
        .unwrap();
    store
        .insert_refresh(&h("b"), &grant("fb", "", "bob", "user"))
        .await
        .unwrap();

    let (seq, _) = changes(&store, 0).await;
    let rec = store
        .set_user_disabled("ann", true, &audit("user.disable", "ann", T0 + 5))
        .await
        .unwrap();
    assert!(rec.disabled && rec.updated_at == T0 + 5);
    let auth = store.user_auth("ann").await.unwrap().unwrap();
    assert!(auth.disabled);
    assert_eq!(auth.tokens_after, T0 + 5);
    assert!(store.session(&session("a")).await.unwrap().unwrap().revoked);
    assert!(
        store
            .refresh_grant(&h("a"), T0 + 5)
            .await
            .unwrap()
            .is_none()
    );
    // Bob keeps his.
    assert!(!store.session(&session("b")).await.unwrap().unwrap().revoked);
    assert!(
        store
            .refresh_grant(&h("b"), T0 + 5)
            .await
            .unwrap()
            .is_some()
    );
    let (seq, hashes) = changes(&store, seq).await;
    assert_eq!(hashes, [subject_hash("user", "ann")]);

    store
        .set_user_disabled("ann", false, &audit("user.enable", "ann", T0 + 6))
        .await
        .unwrap();
    let (seq, hashes) = changes(&store, seq).await;
    assert_eq!(hashes, [subject_hash("user", "ann")]);

    // A new password ends Bob's tokens too.
    store
        .set_password(
            "bob",
            "$2b$04$abcdefghijklmnopqrstuv",
            &audit("user.passwd", "bob", T0 + 7),
        )
        .await
        .unwrap();
    let bob = store.user_auth("bob").await.unwrap().unwrap();
    assert_eq!((bob.tokens_after, bob.disabled), (T0 + 7, false));
    assert!(store.session(&session("b")).await.unwrap().unwrap().revoked);
    assert!(
        store
            .refresh_grant(&h("b"), T0 + 7)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.get_user("bob").await.unwrap().hash_algorithm,
        "bcrypt"
    );
    assert_eq!(changes(&store, seq).await.1, [subject_hash("user", "bob")]);

    // A hash upgrade applies only over the hash it replaces.
    store
        .upgrade_hash("bob", "$2b$04$stale", "$argon2id$new", T0 + 8)
        .await
        .unwrap();
    assert_eq!(
        store.get_user("bob").await.unwrap().hash_algorithm,
        "bcrypt"
    );
    store
        .upgrade_hash(
            "bob",
            "$2b$04$abcdefghijklmnopqrstuv",
            "$argon2id$new",
            T0 + 8,
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_user("bob").await.unwrap().hash_algorithm,
        "argon2id"
    );

    assert!(matches!(
        store
            .set_password("zed", "x", &audit("user.passwd", "zed", T0))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .set_user_disabled("zed", true, &audit("user.disable", "zed", T0))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        audit_actions(&store).await,
        ["user.import", "user.disable", "user.enable", "user.passwd"]
    );

    // Ending a session logs it.
    let (seq, _) = changes(&store, 0).await;
    store
        .insert_session(&session("c"), &row("ann"))
        .await
        .unwrap();
    store.revoke_session(&session("c"), T0 + 9).await.unwrap();
    assert!(store.session(&session("c")).await.unwrap().unwrap().revoked);
    assert_eq!(changes(&store, seq).await.1, [session("c")]);
}

async fn changes_since_is_ordered_and_monotonic(s: Subject) {
    let store = s.store;
    assert_eq!(changes(&store, 0).await, (0, vec![]));
    for i in 0..3 {
        insert(&store, &key(&format!("h{i}"), "ann", "data:read")).await;
    }
    // The first poll (seq 0) of a store with history sees it.
    let (seq, hashes) = changes(&store, 0).await;
    assert_eq!(hashes.len(), 3);
    assert_eq!(changes(&store, seq).await, (seq, vec![]), "nothing new");

    // Concurrent writers: every change is seen exactly once, in sequence
    // order, by a poller that keeps its last sequence number.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { &store } else { &s.other }.clone();
            tokio::spawn(async move { insert(&store, &key(&format!("c{i:02}"), "ann", "x")).await })
        })
        .collect();
    let mut seen = Vec::new();
    let mut last = seq;
    for t in tasks {
        t.await.unwrap();
        let (next, hashes) = changes(&store, last).await;
        assert!(next >= last, "monotonic");
        last = next;
        seen.extend(hashes);
    }
    let (next, hashes) = changes(&store, last).await;
    assert!(next >= last);
    seen.extend(hashes);
    let mut want: Vec<_> = (0..20)
        .map(|i| key(&format!("c{i:02}"), "ann", "x").hash)
        .collect();
    let mut got = seen.clone();
    got.sort_unstable_by_key(|h| h.0);
    want.sort_unstable_by_key(|h| h.0);
    assert_eq!(got, want, "each change once");
    // And a fresh poller from the old point sees them in one ordered page.
    assert_eq!(changes(&store, seq).await.1, seen);
}

async fn prune_drops_only_old_changes(s: Subject) {
    let store = s.store;
    let mut early = key("early", "ann", "x");
    early.created_at = T0;
    let mut late = key("late", "ann", "x");
    late.created_at = T0 + 100;
    insert(&store, &early).await;
    insert(&store, &late).await;
    store.prune_changes(T0 + 50).await.unwrap();
    let (seq, hashes) = changes(&store, 0).await;
    assert_eq!(hashes, [late.hash]);
    store.prune_changes(T0 + 101).await.unwrap();
    // Pruning never moves the sequence back.
    insert(&store, &key("after", "ann", "x")).await;
    let (next, hashes) = changes(&store, seq).await;
    assert!(next > seq);
    assert_eq!(hashes.len(), 1);
    // The keys and their audit stay.
    assert_eq!(store.list_keys(&all_keys()).await.unwrap().len(), 3);
    assert_eq!(audit_actions(&store).await.len(), 3);
}

fn signing_key(kid: &str, at: i64) -> SigningKeyRow {
    SigningKeyRow {
        kid: kid.into(),
        alg: "EdDSA".into(),
        private_der: vec![1, 2, 3],
        public_jwk: format!("{{\"kid\":\"{kid}\"}}"),
        created_at: at,
        retired_at: None,
        drop_after: None,
    }
}

async fn signing_keys_and_secrets(s: Subject) {
    let store = s.store;
    let (seq, _) = changes(&store, 0).await;
    let add = |row: SigningKeyRow, only_if_none: bool| {
        let store = store.clone();
        async move {
            store
                .add_signing_key(
                    &row,
                    row.created_at + 50,
                    only_if_none,
                    &audit("jwt.rotate", &row.kid, row.created_at),
                )
                .await
                .unwrap()
        }
    };
    assert!(add(signing_key("k1", T0), true).await);
    assert!(!add(signing_key("k1b", T0), true).await, "one exists");
    let (seq, hashes) = changes(&store, seq).await;
    assert_eq!(hashes, [signing_keys_hash()]);
    assert!(add(signing_key("k2", T0 + 10), false).await);
    assert_eq!(changes(&store, seq).await.1, [signing_keys_hash()]);

    let live = store.signing_keys(T0 + 10).await.unwrap();
    let kids: Vec<_> = live.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k2", "k1"]);
    assert_eq!(
        (live[1].retired_at, live[1].drop_after),
        (Some(T0 + 10), Some(T0 + 60))
    );
    assert_eq!(live[0].retired_at, None);
    assert_eq!(live[0].private_der, [1, 2, 3]);
    let kids_later: Vec<_> = store
        .signing_keys(T0 + 60)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids_later, ["k2"], "k1 left the JWKS");
    assert_eq!(audit_actions(&store).await, ["jwt.rotate", "jwt.rotate"]);

    let first = store.secret("csrf", b"one", T0).await.unwrap();
    let second = store.secret("csrf", b"two", T0).await.unwrap();
    assert_eq!(
        (first.as_slice(), second.as_slice()),
        (&b"one"[..], &b"one"[..])
    );
}

async fn backup_copies_every_table(s: Subject) {
    let store = s.store;
    insert(&store, &key("k1", "ann", "x")).await;
    store
        .insert_users(&[user("ann")], &audit("user.import", "1", T0))
        .await
        .unwrap();
    let to = s.scratch.join("backup.db");
    let counts = match store.backup(&to).await {
        // A backend with no file backup says so (Postgres: pg_dump).
        Err(StoreError::Unsupported(_)) => return,
        r => r.unwrap(),
    };
    let count = |t: &str| counts.iter().find(|(n, _)| n == t).map(|(_, c)| *c);
    assert_eq!(count("api_keys"), Some(1));
    assert_eq!(count("users"), Some(1));
    assert_eq!(count("audit_events"), Some(2));
    assert_eq!(count("key_changes"), Some(2));
    assert_eq!(Store::inspect_backup(&to).await.unwrap(), counts);
    // Writers carry on after a backup.
    insert(&store, &key("k2", "ann", "x")).await;
    store.ping().await.unwrap();
}

// ---- per-key usage (analytics) ----

fn usage_row(minute: i64, key: &str, subject: &str, o: Outcome, n: u64) -> UsageRow {
    UsageRow {
        minute,
        key_id: key.into(),
        subject: subject.into(),
        outcome: o,
        count: n,
    }
}

/// Sum of one outcome over a series.
fn sum_of(points: &[UsagePoint], o: Outcome) -> u64 {
    points.iter().map(|p| p.counts.get(o)).sum()
}

async fn usage_adds_from_two_writers(s: Subject) {
    // Two gateways (two handles) flush the same buckets concurrently:
    // additive upserts sum, none is lost or doubled.
    let rows = vec![
        usage_row(T0, "key_a", "ann", Outcome::Valid, 3),
        usage_row(T0, "key_a", "ann", Outcome::RateLimited, 1),
        usage_row(T0 + 60, "key_b", "bob", Outcome::Valid, 2),
    ];
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            s.store.clone()
        } else {
            s.other.clone()
        };
        let rows = rows.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                store.record_usage(&rows).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let a = s
        .store
        .usage_series("key_a", Span::Minute, T0 - 3_600, T0 + 3_600)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].start, Span::Minute.start_of(T0));
    assert_eq!(a[0].counts.get(Outcome::Valid), 3 * 40);
    assert_eq!(a[0].counts.get(Outcome::RateLimited), 40);
    assert_eq!(a[0].counts.refused(), 40);
    let b = s
        .other
        .usage_series("key_b", Span::Day, T0 - 86_400, T0 + 86_400)
        .await
        .unwrap();
    assert_eq!(sum_of(&b, Outcome::Valid), 2 * 40);
    // An empty batch writes nothing and is no error.
    s.store.record_usage(&[]).await.unwrap();
}

async fn usage_rolls_minutes_up_to_hours_and_days(s: Subject) {
    let day = Span::Day.start_of(T0);
    // Minutes across three hours of one day, written in several batches,
    // some minutes twice.
    let mut rows = Vec::new();
    for (i, m) in [0i64, 1, 59, 60, 61, 130, 130].iter().enumerate() {
        let o = if i % 3 == 0 {
            Outcome::Revoked
        } else {
            Outcome::Valid
        };
        rows.push(usage_row(day + m * 60 + 7, "key_r", "ann", o, i as u64 + 1));
    }
    for chunk in rows.chunks(3) {
        s.store.record_usage(chunk).await.unwrap();
    }
    let (from, to) = (day, day + 86_400);
    let minutes = s
        .store
        .usage_series("key_r", Span::Minute, from, to)
        .await
        .unwrap();
    let hours = s
        .store
        .usage_series("key_r", Span::Hour, from, to)
        .await
        .unwrap();
    let days = s
        .store
        .usage_series("key_r", Span::Day, from, to)
        .await
        .unwrap();
    assert_eq!(minutes.len(), 6, "minute 130 twice is one bucket");
    assert_eq!(hours.len(), 3);
    assert_eq!(days.len(), 1);
    for o in [Outcome::Valid, Outcome::Revoked] {
        let m = sum_of(&minutes, o);
        assert!(m > 0);
        assert_eq!(m, sum_of(&hours, o), "{o}: minutes vs hours");
        assert_eq!(m, sum_of(&days, o), "{o}: minutes vs days");
    }
    // Each hour is the sum of its minutes.
    for h in &hours {
        let inside: u64 = minutes
            .iter()
            .filter(|m| m.start >= h.start && m.start < h.start + 3_600)
            .map(|m| m.counts.total())
            .sum();
        assert_eq!(inside, h.counts.total());
    }
    assert_eq!(days[0].start, day);
    assert_eq!(days[0].counts.total(), 28);
}

async fn usage_prunes_each_span_by_its_retention(s: Subject) {
    let now = Span::Day.start_of(T0) + 12 * 3_600;
    let rows = [
        usage_row(now - 3 * 86_400, "key_p", "", Outcome::Valid, 1),
        usage_row(now - 2 * 3_600, "key_p", "", Outcome::Valid, 1),
        usage_row(now - 60, "key_p", "", Outcome::Valid, 1),
    ];
    s.store.record_usage(&rows).await.unwrap();
    let retention = Retention {
        minutes: std::time::Duration::from_secs(3_600),
        hours: std::time::Duration::from_secs(86_400),
        days: std::time::Duration::from_secs(10 * 86_400),
    };
    let deleted = s.store.prune_usage(&retention, now).await.unwrap();
    // Minutes: two older than an hour; hours: one older than a day.
    assert_eq!(deleted, 3);
    let all = |span| s.store.usage_series("key_p", span, 0, now + 86_400);
    let minutes = all(Span::Minute).await.unwrap();
    assert_eq!(
        minutes.iter().map(|p| p.start).collect::<Vec<_>>(),
        [Span::Minute.start_of(now - 60)]
    );
    assert_eq!(all(Span::Hour).await.unwrap().len(), 2);
    assert_eq!(sum_of(&all(Span::Day).await.unwrap(), Outcome::Valid), 3);
    // Again: nothing left to delete.
    assert_eq!(s.store.prune_usage(&retention, now).await.unwrap(), 0);
}

async fn usage_top_orders_and_limits(s: Subject) {
    let m = T0;
    s.store
        .record_usage(&[
            usage_row(m, "key_busy", "ann", Outcome::Valid, 50),
            usage_row(m, "key_busy", "ann", Outcome::RateLimited, 2),
            usage_row(m, "key_bad", "bob", Outcome::Valid, 1),
            usage_row(m, "key_bad", "bob", Outcome::InsufficientScope, 9),
            // Refusals before the subject was known: the same key.
            usage_row(m, "key_bad", "", Outcome::Revoked, 4),
            usage_row(m, "key_quiet", "cy", Outcome::Valid, 3),
            // A user's own rows: one entry per subject.
            usage_row(m, "", "alice", Outcome::Valid, 20),
            usage_row(m, "", "dave", Outcome::Valid, 5),
            // Outside the range.
            usage_row(m + 7_200, "key_quiet", "cy", Outcome::Valid, 1_000),
        ])
        .await
        .unwrap();
    let (from, to) = (m - 60, m + 60);
    let top = s
        .store
        .usage_top(Span::Minute, from, to, TopOrder::Requests, 10)
        .await
        .unwrap();
    let names: Vec<(&str, &str, u64)> = top
        .iter()
        .map(|t| (t.key_id.as_str(), t.subject.as_str(), t.counts.total()))
        .collect();
    assert_eq!(
        names,
        [
            ("key_busy", "ann", 52),
            ("", "alice", 20),
            ("key_bad", "bob", 14),
            ("", "dave", 5),
            ("key_quiet", "cy", 3),
        ]
    );
    let bad = &top[2];
    assert_eq!(bad.counts.get(Outcome::Revoked), 4);
    assert_eq!(bad.counts.get(Outcome::InsufficientScope), 9);
    let refusals = s
        .store
        .usage_top(Span::Hour, from, to, TopOrder::Refusals, 2)
        .await
        .unwrap();
    assert_eq!(
        refusals
            .iter()
            .map(|t| (t.key_id.as_str(), t.counts.refused()))
            .collect::<Vec<_>>(),
        [("key_bad", 13), ("key_busy", 2)]
    );
    assert!(
        s.store
            .usage_top(Span::Minute, to, from, TopOrder::Requests, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn usage_series_keeps_to_its_range(s: Subject) {
    let h = Span::Hour.start_of(T0);
    s.store
        .record_usage(&[
            usage_row(h - 60, "key_s", "ann", Outcome::Valid, 1),
            usage_row(h, "key_s", "ann", Outcome::Valid, 2),
            usage_row(h + 59, "key_s", "ann", Outcome::Valid, 4),
            usage_row(h + 120, "key_s", "ann", Outcome::Valid, 8),
            usage_row(h + 120, "key_other", "ann", Outcome::Valid, 16),
        ])
        .await
        .unwrap();
    let starts = |v: Vec<UsagePoint>| {
        v.iter()
            .map(|p| (p.start - h, p.counts.total()))
            .collect::<Vec<_>>()
    };
    // `from` inside a bucket takes the whole bucket; `to` is exclusive.
    let v = s
        .store
        .usage_series("key_s", Span::Minute, h + 30, h + 120)
        .await
        .unwrap();
    assert_eq!(starts(v), [(0, 6)]);
    let v = s
        .store
        .usage_series("key_s", Span::Minute, h - 1, h + 121)
        .await
        .unwrap();
    assert_eq!(starts(v), [(-60, 1), (0, 6), (120, 8)]);
    let v = s
        .store
        .usage_series("key_s", Span::Hour, h, h + 1)
        .await
        .unwrap();
    assert_eq!(starts(v), [(0, 14)]);
    assert!(
        s.store
            .usage_series("key_s", Span::Minute, h + 120, h + 120)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.store
            .usage_series("key_nobody", Span::Day, 0, h + 86_400)
            .await
            .unwrap()
            .is_empty()
    );
}
