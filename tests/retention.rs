//! Retention (issue 16): `pubsub#item_expire` (XEP-0060 16.4.3) really expires. An expired item
//! is deleted from the store: items, RSM counts and the last item no longer see it, and
//! subscribers get a retract notification where `pubsub#notify_retract` says so (7.2.2.1).

mod common;

use std::sync::Arc;

use common::*;
use stratus::jid::Jid;
use stratus::pubsub::model::{AccessModel, ServiceId, SubOptions};
use stratus::pubsub::notify::Event;
use stratus::pubsub::service::NoRoster;
use stratus::pubsub::{
    ConfigChange, ConfigPatch, ItemSelection, Limits, NodeName, PubSub, Request,
};
use stratus::storage::memory::MemoryStore;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const RSM: &str = "http://jabber.org/protocol/rsm";

fn jid(s: &str) -> Jid {
    Jid::parse(s).unwrap()
}

/// On the core, with the clock passed in: nothing expires before its time; at its time the item
/// is gone from the store and a reader subscribed to the node is the recipient of the retract.
/// An item published again under the same id is not expired by the old schedule.
#[tokio::test]
async fn expired_items_are_deleted_and_retracted() {
    let ps = PubSub::new(
        Arc::new(MemoryStore::default()),
        Limits::default(),
        Arc::new(NoRoster),
    );
    let svc = ServiceId::Host;
    let (alice, bob) = (jid("alice@localhost/r"), jid("bob@localhost/r"));
    let node = NodeName::new("news").unwrap();
    ps.execute(
        &svc,
        &alice,
        Request::Create {
            node: Some(node.clone()),
            config: Some(ConfigPatch {
                changes: vec![
                    ConfigChange::ItemExpire(Some(2)),
                    ConfigChange::AccessModel(AccessModel::Open),
                ],
                unknown: Vec::new(),
            }),
        },
    )
    .await
    .unwrap();
    ps.subscribe(&svc, &bob, "news", &bob, SubOptions::default())
        .await
        .unwrap();
    ps.publish(
        &svc,
        &alice,
        "news",
        vec![(Some("a".into()), "<x xmlns='urn:e'/>".into())],
    )
    .await
    .unwrap();
    let published = stratus::pubsub::model::now_ms();
    assert!(ps.expire_due(published).await.is_empty(), "not due yet");
    assert_eq!(ps.last_item(&svc, "news").await.unwrap().unwrap().id, "a");

    let notes = ps.expire_due(published + 2_500).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(matches!(&notes[0].event, Event::Retract { ids } if ids == &["a".to_string()]));
    assert!(
        notes[0].recipients.iter().any(|r| r.jid == bob),
        "{notes:?}"
    );
    let (page, _) = ps
        .items(&svc, &alice, "news", ItemSelection::Newest(None))
        .await
        .unwrap();
    assert!(page.items.is_empty() && page.count == 0, "{page:?}");
    assert!(ps.last_item(&svc, "news").await.unwrap().is_none());
    assert!(ps.next_expiry_ms().is_none());

    // Republished under the same id: only the new publication's schedule counts.
    ps.publish(
        &svc,
        &alice,
        "news",
        vec![(Some("b".into()), "<x xmlns='urn:e'/>".into())],
    )
    .await
    .unwrap();
    let first = ps
        .last_item(&svc, "news")
        .await
        .unwrap()
        .unwrap()
        .published_ms;
    // The republication must carry a later time than the first: wait for the clock to tick.
    while stratus::pubsub::model::now_ms() <= first {
        std::hint::spin_loop();
    }
    ps.publish(
        &svc,
        &alice,
        "news",
        vec![(Some("b".into()), "<y xmlns='urn:e'/>".into())],
    )
    .await
    .unwrap();
    // The first publication is due at first + 2 s; the republication later.
    let notes = ps.expire_due(first + 2_000).await;
    assert!(
        notes.is_empty(),
        "the replaced publication's schedule expired the new one"
    );
    assert_eq!(ps.last_item(&svc, "news").await.unwrap().unwrap().id, "b");
}

/// Through real servers: an item with item_expire=2; the subscriber gets the retract (7.2.2.1)
/// once it expires, and then the node's items are empty with an RSM count of 0 (6.5.4).
async fn expiry_through_the_server(kind: Kind) {
    let e = env(kind).await;
    let svc = e.svc.as_str();
    let mut alice = new_user(e.server, "exa").await;
    let mut bob = new_user(e.server, "exb").await;
    let r = alice
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", PS)
                .child(Element::new("create", PS).attr("node", "short"))
                .child(
                    Element::new("configure", PS)
                        .child(config_form(&[("pubsub#item_expire", "2")])),
                ),
        ))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let bob_jid = bob.jid().to_string();
    let r = bob
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", PS).child(
                Element::new("subscribe", PS)
                    .attr("node", "short")
                    .attr("jid", bob_jid),
            ),
        ))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let r = alice
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", PS).child(
                Element::new("publish", PS).attr("node", "short").child(
                    Element::new("item", PS)
                        .attr("id", "brief")
                        .child(Element::new("x", "urn:example")),
                ),
            ),
        ))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let retract = bob
        .wait_for(T, |m| {
            m.get_child("event", EVENT)
                .and_then(|ev| ev.get_child("items", EVENT))
                .and_then(|i| i.get_child("retract", EVENT))
                .is_some_and(|r| r.get_attr("id") == Some("brief"))
        })
        .await;
    assert!(retract.is_ok(), "no retract for the expired item");
    let items = alice
        .iq(iq(
            "get",
            svc,
            Element::new("pubsub", PS)
                .child(Element::new("items", PS).attr("node", "short"))
                .child(Element::new("set", RSM).child(Element::new("max", RSM).text("10"))),
        ))
        .await
        .unwrap();
    let pubsub = items.get_child("pubsub", PS).expect("a result");
    assert_eq!(
        pubsub.get_child("items", PS).unwrap().children().count(),
        0,
        "{items}"
    );
    let count = pubsub
        .get_child("set", RSM)
        .and_then(|s| s.get_child("count", RSM))
        .map(|c| c.text_content());
    assert_eq!(count.as_deref(), Some("0"), "{items}");
}

#[tokio::test]
async fn expiry_through_prosody() {
    expiry_through_the_server(Kind::Prosody).await;
}

#[tokio::test]
async fn expiry_through_ejabberd() {
    expiry_through_the_server(Kind::Ejabberd).await;
}
