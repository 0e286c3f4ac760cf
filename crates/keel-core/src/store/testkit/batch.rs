//! Conformance cases: bulk admission (all or nothing, keyed or not) and the completions of a
//! batch call, committed together but judged one by one.

use super::events::put;
use super::keys::{key_claim, reply};
use super::*;

pub async fn bulk_enqueue_admits_all_or_none(store: &dyn Store) {
    let stored =
        store.enqueue_all(vec![new_inv("01A", "f", T0), new_inv("01B", "f", T0), new_inv("01C", "f", T0)]).await;
    let ids: Vec<_> = stored.unwrap().into_iter().map(|i| (i.id, i.status)).collect();
    assert_eq!(
        ids,
        [("01A".into(), Status::Queued), ("01B".into(), Status::Queued), ("01C".into(), Status::Queued)],
        "answered in order"
    );
    let leased = store.lease(lease_req("f", T0, 10)).await.unwrap();
    assert_eq!(leased.invocations.len(), 3, "each one is work of its own");

    // 01A exists: the whole admission is refused, 01D included.
    let refused = store.enqueue_all(vec![new_inv("01D", "f", T0), new_inv("01A", "f", T0)]).await;
    assert!(matches!(refused, Err(Error::InvalidState(_))), "{refused:?}");
    assert!(store.get("01D").await.unwrap().is_none(), "nothing of a refused bulk admission is stored");
    assert!(store.enqueue_all(Vec::new()).await.unwrap().is_empty());

    // Large admissions (a store may write them many rows a statement): 123 stored in order; one
    // stored before or one twice refuses all 123, naming it.
    let many = |prefix: &str| -> Vec<NewInvocation> {
        (0..123).map(|n| new_inv(&format!("{prefix}{n:03}"), "g", T0)).collect()
    };
    let stored = store.enqueue_all(many("02A")).await.unwrap();
    assert_eq!(
        stored.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        (0..123).map(|n| format!("02A{n:03}")).collect::<Vec<_>>()
    );
    assert_eq!(store.get("02A122").await.unwrap().map(|i| i.status), Some(Status::Queued));
    let mut again = many("02B");
    again[77] = new_inv("02A077", "g", T0);
    match store.enqueue_all(again).await {
        Err(Error::InvalidState(why)) => assert!(why.contains("02A077"), "{why}"),
        other => panic!("{other:?}"),
    }
    let mut twice = many("02C");
    twice[61] = new_inv("02C060", "g", T0);
    match store.enqueue_all(twice).await {
        Err(Error::InvalidState(why)) => assert!(why.contains("02C060"), "{why}"),
        other => panic!("{other:?}"),
    }
    for id in ["02B000", "02B076", "02B122", "02C000", "02C059", "02C122"] {
        assert!(store.get(id).await.unwrap().is_none(), "{id}: nothing of a refused bulk admission is stored");
    }
}

pub async fn keyed_bulk_enqueue_admits_once_and_replays(store: &dyn Store) {
    let first = store
        .enqueue_all_keyed(
            vec![new_inv("01A", "f", T0), new_inv("01B", "f", T0)],
            key_claim("k1", "fp", "h1", T0),
            reply("ab"),
        )
        .await
        .unwrap();
    assert_eq!(first, KeyDecision::Claim);
    assert_eq!(store.get("01B").await.unwrap().unwrap().status, Status::Queued);
    let again = store
        .enqueue_all_keyed(vec![new_inv("01C", "f", T0)], key_claim("k1", "fp", "h2", T0 + 5), reply("c"))
        .await
        .unwrap();
    assert_eq!(again, KeyDecision::Replay(reply("ab")), "the first answer, whole");
    assert!(store.get("01C").await.unwrap().is_none(), "a replay admits nothing");
    let other = store
        .enqueue_all_keyed(vec![new_inv("01D", "f", T0)], key_claim("k1", "other", "h3", T0 + 5), reply("d"))
        .await
        .unwrap();
    assert_eq!(other, KeyDecision::Mismatch);
    assert!(store.get("01D").await.unwrap().is_none());
    // An invocation that cannot be stored refuses the batch and its key record with it.
    let refused = store
        .enqueue_all_keyed(
            vec![new_inv("01E", "f", T0), new_inv("01A", "f", T0)],
            key_claim("k2", "fp", "h4", T0),
            reply("e"),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(store.get("01E").await.unwrap().is_none());
    let retried =
        store.enqueue_all_keyed(vec![new_inv("01F", "f", T0)], key_claim("k2", "fp", "h5", T0), reply("f")).await;
    assert_eq!(retried.unwrap(), KeyDecision::Claim, "the refused admission left no key record");
}

pub async fn batch_completions_commit_together_judged_each_alone(store: &dyn Store) {
    store.kv_write(put("docs", "d", "1", Precondition::None), T0).await.unwrap();
    let ids = ["01A", "01B", "01C", "01D", "01E"];
    store.enqueue_all(ids.iter().map(|id| new_inv(id, "f", T0)).collect()).await.unwrap();
    let leased = store.lease(lease_req("f", T0, 10)).await.unwrap().invocations;
    assert_eq!(leased.len(), 5);
    let now = T0 + 30;
    let retry = Completion {
        attempt: Some(Attempt { error: Some("busy".into()), ..attempt(1, Outcome::Transient, Some(200)) }),
        next: Transition::Retry { due_at: T0 + 1_000, delay_ms: 970, error: "busy".into() },
        ..success("01B", "node-a", now, "{}")
    };
    let effects =
        |version| CommitEffects { kv: vec![put("docs", "d", "2", Precondition::IfVersion(version))], events: vec![] };
    let conflict = Completion { effects: Some(effects(9)), ..success("01D", "node-a", now, "{}") };
    let applied = Completion { effects: Some(effects(1)), ..success("01E", "node-a", now, "{\"e\":1}") };
    let answers = store
        .complete_all(
            vec![
                success("01A", "node-a", now, "{\"a\":1}"),
                retry,
                success("01C", "node-b", now, "{}"),
                conflict,
                applied,
            ],
            Urgency::Now,
        )
        .await
        .expect("the transaction commits");
    assert!(answers[0].is_ok() && answers[1].is_ok() && answers[4].is_ok(), "{answers:?}");
    assert!(matches!(answers[2], Err(Error::LeaseLost(_))), "{:?}", answers[2]);
    assert!(matches!(answers[3], Err(Error::PreconditionFailed(_))), "{:?}", answers[3]);

    let a = store.get("01A").await.unwrap().unwrap();
    assert_eq!((a.status, a.response), (Status::Succeeded, Some(ok_response("{\"a\":1}"))));
    assert_eq!(a.attempts, vec![attempt(1, Outcome::Success, Some(200))]);
    let b = store.get("01B").await.unwrap().unwrap();
    assert_eq!((b.status, b.due_at, b.attempt_count), (Status::Retrying, Some(T0 + 1_000), 1));
    for refused in ["01C", "01D"] {
        let inv = store.get(refused).await.unwrap().unwrap();
        assert_eq!((inv.status, inv.attempt_count), (Status::Running, 0), "{refused}: nothing of it was written");
        assert!(inv.attempts.is_empty());
    }
    assert_eq!(store.get("01E").await.unwrap().unwrap().status, Status::Succeeded);
    let doc = store.kv_get("docs", "d").await.unwrap().unwrap();
    assert_eq!((doc.version, &doc.value[..]), (2, &b"2"[..]), "01E's effects applied once, 01D's not at all");

    // Completing again changes nothing: every lease is gone.
    let again = store.complete_all(vec![success("01A", "node-a", now, "{}")], Urgency::Unhurried).await.unwrap();
    assert!(matches!(again[..], [Err(Error::LeaseLost(_))]), "{again:?}");
    assert!(store.complete_all(Vec::new(), Urgency::Now).await.unwrap().is_empty());
}
