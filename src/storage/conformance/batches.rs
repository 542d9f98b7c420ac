//! Conformance cases for batches: each applies whole, or (failing part way) not at all.

use super::{bare, item, jid, record, sub};
use crate::jid::BareJid;
use crate::pubsub::model::{Affiliation, ServiceId, SubscriptionState};
use crate::storage::{ItemQuery, Store, SubscriptionChange};

/// What a test can see of one node: items (oldest first) with the count, affiliations, and
/// subscriptions, each sorted where the store gives no order.
#[allow(clippy::type_complexity)]
async fn node_view(
    s: &dyn Store,
    node: &str,
) -> (
    Vec<(String, String)>,
    u64,
    Vec<(BareJid, Affiliation)>,
    Vec<(String, String, SubscriptionState)>,
    Vec<(String, Affiliation)>,
    Vec<(String, String)>,
) {
    let svc = ServiceId::Host;
    let page = s.items(&svc, node, ItemQuery::Newest(100)).await.unwrap();
    let items = page
        .items
        .iter()
        .map(|i| (i.id.clone(), i.payload.to_string()))
        .collect();
    let mut affs = s.affiliations(&svc, node).await.unwrap();
    affs.sort();
    let mut subs: Vec<_> = s
        .subscriptions(&svc, node)
        .await
        .unwrap()
        .into_iter()
        .map(|x| (x.jid.to_string(), x.subid, x.state))
        .collect();
    subs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut user_affs = s
        .user_affiliations(&svc, &bare("b@localhost"))
        .await
        .unwrap();
    user_affs.sort();
    let mut user_subs: Vec<_> = s
        .user_subscriptions(&svc, &jid("b@localhost"))
        .await
        .unwrap()
        .into_iter()
        .map(|(n, x)| (n, x.subid))
        .collect();
    user_subs.sort();
    (items, page.count, affs, subs, user_affs, user_subs)
}

fn ids_of(view: &[(String, String)]) -> Vec<&str> {
    view.iter().map(|(id, _)| id.as_str()).collect()
}

/// Each batch applies in order, as its single operations would one after another.
pub async fn batches_apply_whole(s: &dyn Store) {
    let svc = ServiceId::Host;
    s.create_node(&svc, &record("n", "o@localhost"), &bare("o@localhost"))
        .await
        .unwrap();
    s.put_item(&svc, "n", &item("a"), None).await.unwrap();
    s.put_item(&svc, "n", &item("b"), None).await.unwrap();
    let mut a2 = item("a");
    a2.payload = "<entry xmlns='urn:test'>a2</entry>".into();
    let evicted = s
        .put_items(&svc, "n", &[a2, item("c"), item("d")], Some(3))
        .await
        .unwrap();
    assert_eq!(
        evicted,
        vec!["b".to_owned()],
        "step: trimmed to 3, oldest first"
    );
    let (items, count, ..) = node_view(s, "n").await;
    assert_eq!(
        ids_of(&items),
        vec!["a", "c", "d"],
        "step: replaced a moved to the newest"
    );
    assert_eq!(items[0].1, "<entry xmlns='urn:test'>a2</entry>");
    assert_eq!(count, 3);

    let removed = s
        .delete_items(&svc, "n", &["c".into(), "missing".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(
        removed,
        vec!["c".to_owned(), "a".to_owned()],
        "step: only present ids"
    );
    let (items, count, ..) = node_view(s, "n").await;
    assert_eq!((ids_of(&items), count), (vec!["d"], 1));

    s.set_affiliations(
        &svc,
        "n",
        &[
            (bare("b@localhost"), Affiliation::Publisher),
            (bare("c@localhost"), Affiliation::Outcast),
        ],
    )
    .await
    .unwrap();
    s.set_affiliations(
        &svc,
        "n",
        &[
            (bare("c@localhost"), Affiliation::None),
            (bare("d@localhost"), Affiliation::Member),
        ],
    )
    .await
    .unwrap();
    let (_, _, affs, _, user_affs, _) = node_view(s, "n").await;
    assert_eq!(
        affs,
        vec![
            (bare("b@localhost"), Affiliation::Publisher),
            (bare("d@localhost"), Affiliation::Member),
            (bare("o@localhost"), Affiliation::Owner),
        ]
    );
    assert_eq!(user_affs, vec![("n".into(), Affiliation::Publisher)]);

    s.change_subscriptions(
        &svc,
        "n",
        &[
            SubscriptionChange::Put(sub("b@localhost/x", "1")),
            SubscriptionChange::Put(sub("e@localhost", "2")),
        ],
    )
    .await
    .unwrap();
    let mut pending = sub("b@localhost/x", "1");
    pending.state = SubscriptionState::Pending;
    s.change_subscriptions(
        &svc,
        "n",
        &[
            SubscriptionChange::Put(pending),
            SubscriptionChange::Delete {
                jid: jid("e@localhost"),
                subid: "2".into(),
            },
            SubscriptionChange::Delete {
                jid: jid("f@localhost"),
                subid: "9".into(),
            },
        ],
    )
    .await
    .unwrap();
    let (_, _, _, subs, _, user_subs) = node_view(s, "n").await;
    assert_eq!(
        subs,
        vec![(
            "b@localhost/x".into(),
            "1".into(),
            SubscriptionState::Pending
        )]
    );
    assert_eq!(user_subs, vec![("n".into(), "1".into())]);
}

/// A batch that fails part way (the backend's fail point `batch`: memory before its first entry,
/// embedded after it inside the transaction, aws at the transaction after the S3 uploads) returns
/// Err and leaves every index as it was; the same batch then applies whole.
#[cfg(test)]
pub async fn failed_batch_changes_nothing(s: &dyn Store) {
    let svc = ServiceId::Host;
    s.create_node(&svc, &record("n", "o@localhost"), &bare("o@localhost"))
        .await
        .unwrap();
    s.put_items(&svc, "n", &[item("x"), item("y")], None)
        .await
        .unwrap();
    s.set_affiliation(&svc, "n", &bare("b@localhost"), Affiliation::Member)
        .await
        .unwrap();
    s.put_subscription(&svc, "n", &sub("b@localhost", "1"))
        .await
        .unwrap();
    let before = node_view(s, "n").await;

    let mut y2 = item("y");
    y2.payload = "<entry xmlns='urn:test'>y2</entry>".into();
    let publish = [item("x2"), y2, item("z")];
    s.fail_points().arm("batch", 0);
    assert!(s.put_items(&svc, "n", &publish, Some(3)).await.is_err());
    assert!(
        !s.fail_points().is_armed("batch"),
        "the fail point was reached"
    );
    assert_eq!(node_view(s, "n").await, before, "step: failed publish");

    let retract = ["x".to_owned(), "y".to_owned()];
    s.fail_points().arm("batch", 0);
    assert!(s.delete_items(&svc, "n", &retract).await.is_err());
    assert_eq!(node_view(s, "n").await, before, "step: failed retract");

    let affs = [
        (bare("b@localhost"), Affiliation::Outcast),
        (bare("c@localhost"), Affiliation::Publisher),
    ];
    s.fail_points().arm("batch", 0);
    assert!(s.set_affiliations(&svc, "n", &affs).await.is_err());
    assert_eq!(node_view(s, "n").await, before, "step: failed affiliations");

    let subs = [
        SubscriptionChange::Delete {
            jid: jid("b@localhost"),
            subid: "1".into(),
        },
        SubscriptionChange::Put(sub("b@localhost/y", "2")),
    ];
    s.fail_points().arm("batch", 0);
    assert!(s.change_subscriptions(&svc, "n", &subs).await.is_err());
    assert_eq!(
        node_view(s, "n").await,
        before,
        "step: failed subscriptions"
    );

    // Nothing half-done stands in the way of the retries.
    assert!(s.put_items(&svc, "n", &publish, Some(3)).await.is_ok());
    let (items, count, ..) = node_view(s, "n").await;
    assert_eq!((ids_of(&items), count), (vec!["x2", "y", "z"], 3));
    assert_eq!(items[1].1, "<entry xmlns='urn:test'>y2</entry>");
    s.set_affiliations(&svc, "n", &affs).await.unwrap();
    s.change_subscriptions(&svc, "n", &subs).await.unwrap();
    let (_, _, affs, subs, user_affs, user_subs) = node_view(s, "n").await;
    assert_eq!(affs.len(), 3);
    assert_eq!(user_affs, vec![("n".into(), Affiliation::Outcast)]);
    assert_eq!(
        subs,
        vec![(
            "b@localhost/y".into(),
            "2".into(),
            SubscriptionState::Subscribed
        )]
    );
    assert_eq!(user_subs, vec![("n".into(), "2".into())]);
    let removed = s
        .delete_items(&svc, "n", &["x2".into(), "z".into()])
        .await
        .unwrap();
    assert_eq!(removed.len(), 2);
    let (items, count, ..) = node_view(s, "n").await;
    assert_eq!((ids_of(&items), count), (vec!["y"], 1));
}
