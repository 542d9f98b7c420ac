//! Multi-item publishes and retracts (XEP-0060 7.1, 7.2) and owner batches (8.8.2 subscriptions,
//! 8.9.2 affiliations) are all or nothing: a store that fails part way through leaves the node as
//! it was, nothing is acknowledged, and no notification goes out. Run on the embedded store, whose
//! fail point `batch` fires after the first entry was written inside the transaction.

use std::sync::Arc;

use super::error::PubSubError;
use super::model::*;
use super::service::{ItemSelection, Limits, NoRoster, PubSub};
use crate::jid::{BareJid, Jid};
use crate::storage::embedded::EmbeddedStore;
use crate::storage::{BATCH_LIMIT, Store};

fn jid(s: &str) -> Jid {
    Jid::parse(s).unwrap()
}

fn payload(n: u32) -> (Option<String>, String) {
    (Some(format!("i{n}")), format!("<e xmlns='urn:e'>{n}</e>"))
}

async fn ids(ps: &PubSub, node: &str) -> Vec<String> {
    let (page, _) = ps
        .items(
            &ServiceId::Host,
            &jid("owner@localhost/x"),
            node,
            ItemSelection::Newest(None),
        )
        .await
        .unwrap();
    page.items.into_iter().map(|i| i.id).collect()
}

/// A service on the memory store where owner@localhost created node `n`.
async fn memory_node() -> (PubSub, ServiceId, Jid) {
    let store: Arc<dyn Store> = Arc::new(crate::storage::memory::MemoryStore::default());
    let ps = PubSub::new(store, Limits::default(), Arc::new(NoRoster));
    let owner = jid("owner@localhost/x");
    ps.create(&ServiceId::Host, &owner, Some("n"), None)
        .await
        .unwrap();
    (ps, ServiceId::Host, owner)
}

#[tokio::test]
async fn a_failed_batch_changes_nothing_and_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let ps = PubSub::new(store.clone(), Limits::default(), Arc::new(NoRoster));
    let svc = ServiceId::Host;
    let owner = jid("owner@localhost/x");
    let bob = jid("bob@localhost/y");
    ps.create(&svc, &owner, Some("n"), None).await.unwrap();
    ps.subscribe(&svc, &bob, "n", &bob, SubOptions::default())
        .await
        .unwrap();
    ps.publish(&svc, &owner, "n", vec![payload(0)])
        .await
        .unwrap();

    // 7.1: three items in one request.
    store.fail_points().arm("batch", 0);
    let failed = ps
        .publish(&svc, &owner, "n", vec![payload(1), payload(2), payload(3)])
        .await;
    assert!(matches!(failed, Err(PubSubError::Storage(_))), "{failed:?}");
    assert_eq!(ids(&ps, "n").await, ["i0"]);
    assert_eq!(
        ps.last_item(&svc, "n").await.unwrap().map(|i| i.id),
        Some("i0".into()),
        "the last item is only what the store acknowledged"
    );

    // 7.2: two items in one retract.
    ps.publish(&svc, &owner, "n", vec![payload(1)])
        .await
        .unwrap();
    store.fail_points().arm("batch", 0);
    let failed = ps
        .retract(&svc, &owner, "n", vec!["i0".into(), "i1".into()], None)
        .await;
    assert!(matches!(failed, Err(PubSubError::Storage(_))), "{failed:?}");
    assert_eq!(ids(&ps, "n").await, ["i0", "i1"]);

    // 8.9.2: bob made outcast and carol publisher in one request.
    store.fail_points().arm("batch", 0);
    let failed = ps
        .set_node_affiliations(
            &svc,
            &owner,
            "n",
            vec![
                (
                    BareJid::parse("carol@localhost").unwrap(),
                    Affiliation::Publisher,
                ),
                (bob.to_bare(), Affiliation::Outcast),
            ],
        )
        .await;
    assert!(matches!(failed, Err(PubSubError::Storage(_))), "{failed:?}");
    assert_eq!(
        ps.node_affiliations(&svc, &owner, "n").await.unwrap(),
        vec![(owner.to_bare(), Affiliation::Owner)]
    );
    assert_eq!(
        ps.node_subscriptions(&svc, &owner, "n")
            .await
            .unwrap()
            .len(),
        1
    );

    // 8.8.2: bob's subscription removed and dave's added in one request.
    let dave = jid("dave@localhost");
    store.fail_points().arm("batch", 0);
    let failed = ps
        .set_node_subscriptions(
            &svc,
            &owner,
            "n",
            vec![
                (dave.clone(), Some(SubscriptionState::Subscribed), None),
                (bob.clone(), None, None),
            ],
        )
        .await;
    assert!(matches!(failed, Err(PubSubError::Storage(_))), "{failed:?}");
    let subs = ps.node_subscriptions(&svc, &owner, "n").await.unwrap();
    assert_eq!(
        subs.iter().map(|s| s.jid.to_string()).collect::<Vec<_>>(),
        [bob.to_string()]
    );

    // The same requests, storage working: each applies whole.
    let (published, notes) = ps
        .publish(&svc, &owner, "n", vec![payload(2), payload(3)])
        .await
        .unwrap();
    assert_eq!(published, ["i2", "i3"]);
    assert_eq!(notes.len(), 1, "one notification for the request");
    ps.retract(&svc, &owner, "n", vec!["i0".into(), "i1".into()], None)
        .await
        .unwrap();
    assert_eq!(ids(&ps, "n").await, ["i2", "i3"]);
    ps.set_node_subscriptions(
        &svc,
        &owner,
        "n",
        vec![
            (dave.clone(), Some(SubscriptionState::Subscribed), None),
            (bob.clone(), None, None),
        ],
    )
    .await
    .unwrap();
    let subs = ps.node_subscriptions(&svc, &owner, "n").await.unwrap();
    assert_eq!(
        subs.iter().map(|s| s.jid.clone()).collect::<Vec<_>>(),
        [dave]
    );
}

/// A request beyond the batch bound is refused before anything is stored, saying the bound.
#[tokio::test]
async fn a_batch_beyond_the_bound_is_refused_whole() {
    let (ps, svc, owner) = memory_node().await;
    let many: Vec<_> = (0..=BATCH_LIMIT as u32).map(payload).collect();
    match ps.publish(&svc, &owner, "n", many).await {
        Err(PubSubError::LimitReached(why)) => {
            assert!(why.contains(&BATCH_LIMIT.to_string()), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(ids(&ps, "n").await.is_empty());
    let affs: Vec<_> = (0..=BATCH_LIMIT)
        .map(|n| {
            (
                BareJid::parse(&format!("u{n}@localhost")).unwrap(),
                Affiliation::Member,
            )
        })
        .collect();
    assert!(matches!(
        ps.set_node_affiliations(&svc, &owner, "n", affs).await,
        Err(PubSubError::LimitReached(_))
    ));
    assert_eq!(
        ps.node_affiliations(&svc, &owner, "n").await.unwrap().len(),
        1
    );
}

/// An id given twice in one publish: the later item is the one stored and notified, once.
#[tokio::test]
async fn an_id_repeated_in_one_publish_keeps_the_later_item() {
    let (ps, svc, owner) = memory_node().await;
    let (published, _) = ps
        .publish(
            &svc,
            &owner,
            "n",
            vec![
                (Some("a".into()), "<e xmlns='urn:e'>1</e>".into()),
                (Some("b".into()), "<e xmlns='urn:e'>2</e>".into()),
                (Some("a".into()), "<e xmlns='urn:e'>3</e>".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(published, ["b", "a"]);
    let (page, _) = ps
        .items(&svc, &owner, "n", ItemSelection::Newest(None))
        .await
        .unwrap();
    assert_eq!(
        page.items
            .iter()
            .map(|i| (i.id.as_str(), &*i.payload))
            .collect::<Vec<_>>(),
        [
            ("b", "<e xmlns='urn:e'>2</e>"),
            ("a", "<e xmlns='urn:e'>3</e>")
        ]
    );
}
