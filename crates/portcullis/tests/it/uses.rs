//! Limited keys: a key with N uses admits exactly N requests, however many
//! tasks or gateway processes race for them.

use crate::common::*;
use portcullis::auth::verifier::{KeyVerdict, Verifier};
use std::sync::Arc;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// Verifies `key` once from each of `tasks` tasks started together,
/// spreading them over `verifiers`; returns (admitted, rejection reasons).
async fn race(verifiers: &[Arc<Verifier>], key: &str, tasks: usize) -> (usize, Vec<&'static str>) {
    let barrier = Arc::new(Barrier::new(tasks));
    let mut set = JoinSet::new();
    for i in 0..tasks {
        let v = verifiers[i % verifiers.len()].clone();
        let key = key.to_owned();
        let barrier = barrier.clone();
        set.spawn(async move {
            barrier.wait().await;
            v.verify(&key).await
        });
    }
    let mut admitted = 0;
    let mut reasons = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.expect("task panicked") {
            Ok(KeyVerdict::Valid(_)) => admitted += 1,
            Ok(KeyVerdict::Rejected(r)) => reasons.push(r.reason()),
            Err(e) => panic!("a verification failed with a store error: {e}"),
        }
    }
    (admitted, reasons)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_uses_admit_five_of_twenty_concurrent_requests() {
    let env = Env::new().await;
    let mut s = spec("data:read");
    s.uses = Some(5);
    let created = env.create(&s).await;
    let key = created.key.expose().to_owned();

    let (admitted, reasons) = race(std::slice::from_ref(&env.verifier), &key, 20).await;
    assert_eq!(admitted, 5, "rejections: {reasons:?}");
    assert_eq!(reasons.len(), 15);
    assert!(reasons.iter().all(|r| *r == "key_used_up"), "{reasons:?}");

    assert_eq!(reason(&env.verifier, &key).await, "key_used_up");
    let rec = env.keys.show(&created.record.id).await.unwrap();
    assert_eq!(rec.remaining_uses, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_uses_are_shared_by_two_gateway_processes() {
    let env = Env::new().await;
    let mut s = spec("data:read");
    s.uses = Some(5);
    let created = env.create(&s).await;
    let key = created.key.expose().to_owned();
    // Two verifiers, each over its own separately opened store handle
    // (its own connection pool), as two gateway processes would have.
    let a = env.other_verifier().await;
    let b = env.other_verifier().await;

    let (admitted, reasons) = race(&[a.clone(), b.clone()], &key, 20).await;
    assert_eq!(admitted, 5, "rejections: {reasons:?}");
    assert!(reasons.iter().all(|r| *r == "key_used_up"), "{reasons:?}");

    assert_eq!(reason(&a, &key).await, "key_used_up");
    assert_eq!(reason(&b, &key).await, "key_used_up");
    assert_eq!(reason(&env.verifier, &key).await, "key_used_up");
    let rec = env.keys.show(&created.record.id).await.unwrap();
    assert_eq!(rec.remaining_uses, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uses_are_counted_when_the_key_is_already_cached_everywhere() {
    let env = Env::new().await;
    let mut s = spec("data:read");
    s.uses = Some(7);
    let created = env.create(&s).await;
    let key = created.key.expose().to_owned();
    let a = env.other_verifier().await;
    let b = env.other_verifier().await;
    // One use each: both now hold the key in their positive cache.
    valid(&a, &key).await;
    valid(&b, &key).await;

    let (admitted, reasons) = race(&[a.clone(), b.clone()], &key, 20).await;
    assert_eq!(admitted, 5, "rejections: {reasons:?}");
    assert!(reasons.iter().all(|r| *r == "key_used_up"), "{reasons:?}");
    assert_eq!(
        env.keys
            .show(&created.record.id)
            .await
            .unwrap()
            .remaining_uses,
        Some(0)
    );
}

#[tokio::test]
async fn sequential_uses_count_down() {
    let env = Env::new().await;
    let mut s = spec("data:read");
    s.uses = Some(2);
    let created = env.create(&s).await;
    let key = created.key.expose();
    valid(&env.verifier, key).await;
    assert_eq!(
        env.keys
            .show(&created.record.id)
            .await
            .unwrap()
            .remaining_uses,
        Some(1)
    );
    valid(&env.verifier, key).await;
    assert_eq!(reason(&env.verifier, key).await, "key_used_up");
    assert_eq!(reason(&env.verifier, key).await, "key_used_up");
    assert_eq!(
        env.keys
            .show(&created.record.id)
            .await
            .unwrap()
            .remaining_uses,
        Some(0)
    );
}

/// A refilled quota: spent within the day, refused with the time to the
/// refill, and back to its amount (not added to) at the next UTC midnight;
/// a cost spends several uses at once or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_refill_restores_the_amount_at_utc_midnight() {
    use portcullis::auth::verifier::KeyRejection;
    use portcullis_core::quota::{Refill, RefillPlan};
    let env = Env::new().await;
    let mut s = spec("data:read");
    s.refill = Some(RefillPlan {
        every: Refill::Daily,
        amount: 3,
    });
    let created = env.create(&s).await;
    assert_eq!(created.record.remaining_uses, Some(3));
    assert_eq!(created.record.refill.as_deref(), Some("day"));
    let key = created.key.expose().to_owned();

    let KeyVerdict::Valid(k) = env.verifier.verify_unspent(&key).await.unwrap() else {
        panic!("refused")
    };
    // A cost of 2, then a cost of 2 that does not fit: nothing is spent.
    assert!(env.verifier.spend(&k, 2).await.unwrap().is_none());
    let r = env.verifier.spend(&k, 2).await.unwrap().expect("refused");
    let now = env.clock().now();
    let KeyRejection::Exhausted {
        retry_after_secs, ..
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(
        retry_after_secs,
        u64::try_from(Refill::Daily.next_start(now) - now).unwrap()
    );
    assert_eq!(
        env.keys
            .show(&created.record.id)
            .await
            .unwrap()
            .remaining_uses,
        Some(1)
    );
    valid(&env.verifier, &key).await;
    assert_eq!(reason(&env.verifier, &key).await, "key_quota_exhausted");

    // Next day: back to 3, not 3 more.
    let to_midnight = Refill::Daily.next_start(now) - now;
    env.clock.advance(to_midnight);
    for _ in 0..3 {
        valid(&env.verifier, &key).await;
    }
    assert_eq!(reason(&env.verifier, &key).await, "key_quota_exhausted");
    assert_eq!(
        env.keys
            .show(&created.record.id)
            .await
            .unwrap()
            .remaining_uses,
        Some(0)
    );
    // Two days later, unused in between: still 3, not 6.
    env.clock.advance(2 * 86_400);
    for _ in 0..3 {
        valid(&env.verifier, &key).await;
    }
    assert_eq!(reason(&env.verifier, &key).await, "key_quota_exhausted");
}
