//! Conformance cases for concurrency and cut-off operations: writes racing a deletion, writers of
//! one item id at once, and a deletion stopped between two of its storage requests.

use futures_util::future::join_all;

use super::{bare, item, jid, record, sub};
use crate::pubsub::model::{Affiliation, Item, NodeConfig, ServiceId};
use crate::storage::{ItemQuery, Store, StoreError, SubscriptionChange};

/// Everything of node `n` a reader can see, and what the node's users see of it.
async fn assert_nothing_of(s: &dyn Store, node: &str, step: &str) {
    let svc = ServiceId::Host;
    let page = s.items(&svc, node, ItemQuery::Newest(100)).await.unwrap();
    assert!(page.items.is_empty(), "{step}: items {:?}", page.items);
    assert_eq!(page.count, 0, "{step}: item count");
    assert!(
        s.items_by_id(&svc, node, &["a".into(), "b".into()])
            .await
            .unwrap()
            .is_empty(),
        "{step}: items by id"
    );
    assert!(
        s.subscriptions(&svc, node).await.unwrap().is_empty(),
        "{step}: subscriptions"
    );
    for user in ["b@localhost", "b@localhost/r"] {
        assert!(
            s.user_subscriptions(&svc, &jid(user))
                .await
                .unwrap()
                .iter()
                .all(|(n, _)| n != node),
            "{step}: {user}'s subscriptions"
        );
    }
    assert!(
        s.user_affiliations(&svc, &bare("b@localhost"))
            .await
            .unwrap()
            .iter()
            .all(|(n, _)| n != node),
        "{step}: b's affiliations"
    );
}

/// A node with one item, a subscriber and a publisher, all belonging to b@localhost.
async fn populated(s: &dyn Store, node: &str) {
    let svc = ServiceId::Host;
    assert!(
        s.create_node(&svc, &record(node, "o@localhost"), &bare("o@localhost"))
            .await
            .unwrap()
    );
    s.put_items(&svc, node, &[item("a"), item("b")], None)
        .await
        .unwrap();
    s.put_subscription(&svc, node, &sub("b@localhost/r", "s1"))
        .await
        .unwrap();
    s.set_affiliation(&svc, node, &bare("b@localhost"), Affiliation::Publisher)
        .await
        .unwrap();
}

fn gone<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    assert_eq!(
        r.map(|_| ()),
        Err(StoreError::NodeGone),
        "{what} on a deleted node"
    );
}

/// A request that loaded a node before it was deleted writes nothing afterwards: each node-scoped
/// write fails with NodeGone and neither the node nor a part of it comes back.
pub async fn writes_to_a_deleted_node_fail(s: &dyn Store) {
    let svc = ServiceId::Host;
    populated(s, "n").await;
    assert!(s.delete_node(&svc, "n").await.unwrap());
    gone(s.put_item(&svc, "n", &item("c"), None).await, "publish");
    gone(
        s.put_items(&svc, "n", &[item("c"), item("d")], Some(1))
            .await,
        "publish batch",
    );
    // Retracting or purging what is absent from an absent node: either nothing happened (Ok
    // with nothing removed) or NodeGone; never a re-created node.
    match s.delete_items(&svc, "n", &["a".into()]).await {
        Ok(removed) => assert!(removed.is_empty(), "retract removed {removed:?}"),
        Err(e) => assert_eq!(e, StoreError::NodeGone, "retract"),
    }
    if let Err(e) = s.purge_items(&svc, "n").await {
        assert_eq!(e, StoreError::NodeGone, "purge");
    }
    gone(
        s.save_config(&svc, "n", &NodeConfig::host_default(5)).await,
        "configure",
    );
    gone(
        s.put_subscription(&svc, "n", &sub("b@localhost/r", "s2"))
            .await,
        "subscribe",
    );
    gone(
        s.change_subscriptions(
            &svc,
            "n",
            &[SubscriptionChange::Put(sub("b@localhost/x", "s3"))],
        )
        .await,
        "subscription batch",
    );
    gone(
        s.set_affiliation(&svc, "n", &bare("b@localhost"), Affiliation::Owner)
            .await,
        "affiliation",
    );
    assert!(
        s.load_node(&svc, "n").await.unwrap().is_none(),
        "no node re-created"
    );
    assert!(
        s.node_names(&svc, None, 10).await.unwrap().is_empty(),
        "no node listed"
    );
    assert_nothing_of(s, "n", "after the failed writes").await;
    // A new node of the name starts empty: the failed writes left nothing it would inherit.
    assert!(
        s.create_node(&svc, &record("n", "c@localhost"), &bare("c@localhost"))
            .await
            .unwrap()
    );
    assert_nothing_of(s, "n", "re-created").await;
    assert_eq!(
        s.affiliations(&svc, "n").await.unwrap(),
        vec![(bare("c@localhost"), Affiliation::Owner)]
    );
    assert_eq!(
        s.count_nodes_created_by(&svc, "o@localhost").await.unwrap(),
        0,
        "the old creator's count"
    );
}

fn version(id: &str, v: usize) -> Item {
    let mut it = item(id);
    it.payload = format!("<entry xmlns='urn:test'>{v}</entry>").into();
    it.published_ms = v as u64;
    it
}

/// Writers of one item id at once (two clients publishing `current`): one item stays, holding
/// one of the payloads written, and the count says 1; a retract then leaves none.
pub async fn same_id_writers_leave_one_item(s: &dyn Store) {
    let svc = ServiceId::Host;
    s.create_node(&svc, &record("n", "o@localhost"), &bare("o@localhost"))
        .await
        .unwrap();
    s.put_item(&svc, "n", &item("other"), None).await.unwrap();
    let writes = (0..8).map(|v| {
        let svc = svc.clone();
        async move { s.put_item(&svc, "n", &version("current", v), None).await }
    });
    for r in join_all(writes).await {
        r.unwrap();
    }
    let page = s.items(&svc, "n", ItemQuery::Newest(100)).await.unwrap();
    let current: Vec<_> = page.items.iter().filter(|i| i.id == "current").collect();
    assert_eq!(current.len(), 1, "one item 'current': {:?}", page.items);
    assert!(
        (0..8).any(|v| *current[0].payload == *format!("<entry xmlns='urn:test'>{v}</entry>")),
        "a payload that was written"
    );
    assert_eq!(page.count, 2, "count");
    assert_eq!(page.items.len(), 2);
    assert!(s.delete_item(&svc, "n", "current").await.unwrap());
    let page = s.items(&svc, "n", ItemQuery::Newest(100)).await.unwrap();
    assert_eq!(super::ids(&page.items), vec!["other"], "after retract");
    assert_eq!(page.count, 1, "count after retract");
    assert!(
        s.items_by_id(&svc, "n", &["current".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

/// Retracts of one id at once remove it once: one of them reports it, the count goes down by one.
pub async fn concurrent_retracts_count_once(s: &dyn Store) {
    let svc = ServiceId::Host;
    s.create_node(&svc, &record("n", "o@localhost"), &bare("o@localhost"))
        .await
        .unwrap();
    s.put_items(&svc, "n", &[item("a"), item("b")], None)
        .await
        .unwrap();
    let retracts = (0..6).map(|_| {
        let svc = svc.clone();
        async move { s.delete_item(&svc, "n", "a").await }
    });
    let removed = join_all(retracts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .filter(|r| *r)
        .count();
    assert_eq!(removed, 1, "retracts that removed the item");
    let page = s.items(&svc, "n", ItemQuery::Newest(10)).await.unwrap();
    assert_eq!(super::ids(&page.items), vec!["b"]);
    assert_eq!(page.count, 1, "count");
}

/// Publishes racing the node's deletion: each either lands before it (and goes with the node) or
/// fails with NodeGone; afterwards nothing of the node is left.
pub async fn publish_racing_delete(s: &dyn Store) {
    let svc = ServiceId::Host;
    populated(s, "n").await;
    let publishes = (0..6).map(|v| {
        let svc = svc.clone();
        async move {
            s.put_item(&svc, "n", &version(&format!("p{v}"), v), None)
                .await
        }
    });
    let delete = async { s.delete_node(&svc, "n").await };
    let (results, deleted) = futures_util::future::join(join_all(publishes), delete).await;
    assert!(deleted.unwrap(), "the deletion");
    for r in results {
        if let Err(e) = r {
            assert_eq!(e, StoreError::NodeGone, "a publish racing the deletion");
        }
    }
    assert!(s.load_node(&svc, "n").await.unwrap().is_none());
    assert_nothing_of(s, "n", "after the race").await;
    assert!(
        s.create_node(&svc, &record("n", "c@localhost"), &bare("c@localhost"))
            .await
            .unwrap()
    );
    assert_nothing_of(s, "n", "re-created after the race").await;
}

/// A deletion cut off between two of its storage requests (a crash, an outage) is finished by
/// `recover` or by the next creation of the name: the node reads as gone from the moment the
/// deletion was acknowledged or failed, and a new node of the same name inherits nothing. On a
/// backend that deletes in one transaction the point is never reached and the deletion is whole.
#[cfg(test)]
pub async fn cut_off_deletion_leaves_nothing(s: &dyn Store) {
    let svc = ServiceId::Host;
    for (round, point) in ["delete_node.tombstoned", "delete_node.cleaning"]
        .into_iter()
        .enumerate()
    {
        let name = format!("n{round}");
        populated(s, &name).await;
        s.fail_points().arm(point, 0);
        match s.delete_node(&svc, &name).await {
            Ok(deleted) => {
                assert!(deleted, "{point}: deleted");
                assert!(
                    s.fail_points().is_armed(point),
                    "{point}: fired, but the deletion reported success"
                );
            }
            Err(e) => assert!(
                matches!(e, StoreError::Unavailable(_)),
                "{point}: the injected outage, got {e:?}"
            ),
        }
        let fired = !s.fail_points().is_armed(point);
        assert!(
            s.load_node(&svc, &name).await.unwrap().is_none(),
            "{point}: the node reads as gone"
        );
        assert!(
            !s.node_names(&svc, None, 10).await.unwrap().contains(&name),
            "{point}: not listed"
        );
        // Even before the remains are cleared, nothing of the old node is served.
        let page = s.items(&svc, &name, ItemQuery::Newest(10)).await.unwrap();
        assert!(page.items.is_empty(), "{point}: items served");
        if fired && round == 0 {
            // Recovery at the next start finishes the first; the second is finished by the
            // creation of a new node of the name.
            let finished = s.recover().await.unwrap();
            assert_eq!(finished, 1, "{point}: recover finishes the deletion");
        }
        if !fired {
            // Disarm what never fired (a one-transaction deletion), for the next round.
            let _ = s.fail_points().check(point);
        }
        assert!(
            s.create_node(&svc, &record(&name, "c@localhost"), &bare("c@localhost"))
                .await
                .unwrap()
        );
        assert_nothing_of(s, &name, point).await;
        assert_eq!(
            s.affiliations(&svc, &name).await.unwrap(),
            vec![(bare("c@localhost"), Affiliation::Owner)],
            "{point}: only the new owner"
        );
    }
    assert_eq!(s.recover().await.unwrap(), 0, "nothing left to recover");
    assert_eq!(
        s.count_nodes_created_by(&svc, "o@localhost").await.unwrap(),
        0,
        "the old creator's count"
    );
    assert_eq!(
        s.count_nodes_created_by(&svc, "c@localhost").await.unwrap(),
        2,
        "the new creator's count"
    );
}

/// A publish stopped between two of its storage requests (a crash: the fail point fails the
/// operation there and nothing after it runs): after it, every item served once, the count equal
/// to the items, max_items held, and the next publish works. On a backend whose publish is one
/// transaction the points never fire and the publish succeeds.
#[cfg(test)]
pub async fn cut_off_publish_keeps_invariants(s: &dyn Store) {
    let svc = ServiceId::Host;
    for (round, point) in ["put_items.uploaded", "put_items.committed"]
        .into_iter()
        .enumerate()
    {
        let name = format!("p{round}");
        assert!(
            s.create_node(&svc, &record(&name, "o@localhost"), &bare("o@localhost"))
                .await
                .unwrap()
        );
        s.put_items(&svc, &name, &[item("a"), item("b")], Some(2))
            .await
            .unwrap();
        s.fail_points().arm(point, 0);
        let cut = s.put_items(&svc, &name, &[item("c")], Some(2)).await;
        let fired = !s.fail_points().is_armed(point);
        if !fired {
            let _ = s.fail_points().check(point);
            assert!(cut.is_ok(), "{point}: {cut:?}");
        } else {
            assert!(
                matches!(cut, Err(StoreError::Unavailable(_))),
                "{point}: the injected outage, got {cut:?}"
            );
        }
        let page = s.items(&svc, &name, ItemQuery::Newest(10)).await.unwrap();
        let got: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
        // Before its transaction nothing of the publish is visible; after it, all of it.
        let expected = if fired && round == 0 {
            vec!["a", "b"]
        } else {
            vec!["b", "c"]
        };
        assert_eq!(got, expected, "{point}: the items served");
        assert_eq!(page.count, 2, "{point}: the count");
        let by_id = s
            .items_by_id(&svc, &name, &["a".into(), "b".into(), "c".into()])
            .await
            .unwrap();
        assert_eq!(
            by_id.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            expected,
            "{point}: no dangling id entry"
        );
        // The next publish works and keeps max_items.
        s.put_items(&svc, &name, &[item("d")], Some(2))
            .await
            .unwrap();
        let page = s.items(&svc, &name, ItemQuery::Newest(10)).await.unwrap();
        let got: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(got, [expected[1], "d"], "{point}: after the next publish");
        assert_eq!(page.count, 2, "{point}: the count after");
    }
}

/// On a store other instances share, every change moves the node's version another instance
/// checks its caches against: configuration, affiliations and subscriptions move `config`,
/// items move `items`, and a deleted node reads as gone. Stores of one instance keep none.
pub async fn versions_move_with_every_change(s: &dyn Store) {
    use crate::storage::{Freshness, NodeVersion};
    if !s.shared() {
        return;
    }
    let svc = ServiceId::Host;
    let at = || async {
        match s.node_version(&svc, "v").await.unwrap() {
            Freshness::At(v) => v,
            Freshness::Gone => panic!("the node is there"),
        }
    };
    assert!(
        s.create_node(&svc, &record("v", "o@localhost"), &bare("o@localhost"))
            .await
            .unwrap()
    );
    let mut last: NodeVersion = at().await;
    macro_rules! moved {
        ($what:literal, $field:ident, $change:expr) => {{
            $change.await.unwrap();
            let now = at().await;
            assert_ne!(now.$field, last.$field, "{}: the version moves", $what);
            last = now;
        }};
    }
    moved!(
        "affiliation",
        config,
        s.set_affiliations(&svc, "v", &[(bare("p@localhost"), Affiliation::Publisher)])
    );
    moved!(
        "subscription",
        config,
        s.put_subscription(&svc, "v", &sub("b@localhost/r", "s1"))
    );
    moved!(
        "unsubscription",
        config,
        s.delete_subscription(&svc, "v", &jid("b@localhost/r"), "s1")
    );
    moved!(
        "configuration",
        config,
        s.save_config(&svc, "v", &NodeConfig::host_default(1024))
    );
    let before_items = last.config;
    moved!(
        "publish",
        items,
        s.put_items(&svc, "v", &[item("a"), item("b")], None)
    );
    moved!("retract", items, s.delete_items(&svc, "v", &["a".into()]));
    moved!("purge", items, s.purge_items(&svc, "v"));
    assert_eq!(
        last.config, before_items,
        "items leave the config version alone"
    );
    assert!(s.delete_node(&svc, "v").await.unwrap());
    assert_eq!(
        s.node_version(&svc, "v").await.unwrap(),
        Freshness::Gone,
        "a deleted node"
    );
}

/// A publish whose transaction was applied but whose answer was lost (a cut connection; the
/// SDK's retry then finds its own conditions failed) keeps its payload: the item stays readable,
/// once, and nothing dangles. On a backend of one transaction the points never fire.
#[cfg(test)]
pub async fn lost_answers_keep_payloads(s: &dyn Store) {
    let svc = ServiceId::Host;
    assert!(
        s.create_node(&svc, &record("l", "o@localhost"), &bare("o@localhost"))
            .await
            .unwrap()
    );
    // Retried after the lost answer: acknowledged once.
    s.fail_points().arm("put_items.answer_lost", 0);
    s.put_items(&svc, "l", &[item("a")], None).await.unwrap();
    let _ = s.fail_points().check("put_items.answer_lost");
    // Reported as failed, though applied: not acknowledged, but what is stored stays whole.
    s.fail_points().arm("put_items.ambiguous", 0);
    let ambiguous = s.put_items(&svc, "l", &[item("b")], None).await;
    let fired = !s.fail_points().is_armed("put_items.ambiguous");
    if !fired {
        let _ = s.fail_points().check("put_items.ambiguous");
        ambiguous.unwrap();
    }
    s.settle().await;
    let page = s.items(&svc, "l", ItemQuery::Newest(10)).await.unwrap();
    let got: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(got, ["a", "b"], "both applied, each once");
    assert_eq!(page.count, 2);
    assert!(
        page.items.iter().all(|i| i.payload.contains("urn:test")),
        "the payloads are there: {:?}",
        page.items
    );
    // A normal replacement afterwards deletes only the old payload.
    s.put_items(&svc, "l", &[item("a")], None).await.unwrap();
    s.settle().await;
    let page = s.items(&svc, "l", ItemQuery::Newest(10)).await.unwrap();
    let got: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(got, ["b", "a"]);
}

/// A purge stopped between two of its batches (aws removes at most 49 items per transaction):
/// the oldest items are gone, the rest are served whole and counted right, and purging again
/// finishes. A backend that purges in one transaction never fires the point.
#[cfg(test)]
pub async fn cut_off_purge_keeps_invariants(s: &dyn Store) {
    let svc = ServiceId::Host;
    assert!(
        s.create_node(&svc, &record("g", "o@localhost"), &bare("o@localhost"))
            .await
            .unwrap()
    );
    let ids: Vec<String> = (0..60).map(|i| format!("i{i:02}")).collect();
    for chunk in ids.chunks(30) {
        let batch: Vec<Item> = chunk.iter().map(|id| item(id)).collect();
        s.put_items(&svc, "g", &batch, None).await.unwrap();
    }
    s.fail_points().arm("purge.batch", 0);
    let cut = s.purge_items(&svc, "g").await;
    let fired = !s.fail_points().is_armed("purge.batch");
    if fired {
        assert!(matches!(cut, Err(StoreError::Unavailable(_))), "{cut:?}");
        let page = s.items(&svc, "g", ItemQuery::Newest(100)).await.unwrap();
        assert!(!page.items.is_empty(), "stopped before the end");
        assert_eq!(page.count, page.items.len() as u64, "the count");
        let kept: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
        let tail: Vec<&str> = ids[ids.len() - kept.len()..]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(kept, tail, "the oldest go first; the rest are whole");
        assert!(
            s.items_by_id(&svc, "g", &[ids[0].clone()])
                .await
                .unwrap()
                .is_empty(),
            "no dangling id entry"
        );
        s.purge_items(&svc, "g").await.unwrap();
    } else {
        let _ = s.fail_points().check("purge.batch");
        cut.unwrap();
    }
    let page = s.items(&svc, "g", ItemQuery::Newest(100)).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.count, 0);
    s.put_items(&svc, "g", &[item("after")], None)
        .await
        .unwrap();
    assert_eq!(
        s.items(&svc, "g", ItemQuery::Newest(10))
            .await
            .unwrap()
            .count,
        1
    );
}
