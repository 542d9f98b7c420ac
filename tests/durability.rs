//! Acknowledged means durable: publish through a real server, SIGKILL stratus, restart it on the
//! same data directory, and find every acknowledged item and every subscription (the embedded
//! store commits with fsync before the IQ result is sent).

mod common;

use common::*;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";

async fn survives_sigkill(kind: Kind) {
    let server = shared(kind);
    let lease = lease_domain(server);
    let data = tempfile::tempdir().unwrap();
    let svc = lease.domain.clone();
    let mut stratus = Stratus::spawn_with_data(&server.component_addr(), &svc, data.path());
    stratus.wait_log("connected to", 1, T);
    let mut alice = new_user(server, "alice").await;
    let mut bob = new_user(server, "bob").await;
    create_keeping_all(&mut alice, &svc, "durable").await;
    let bob_jid = bob.jid().to_string();
    let sub = bob
        .iq(iq(
            "set",
            &svc,
            Element::new("pubsub", PS).child(
                Element::new("subscribe", PS)
                    .attr("node", "durable")
                    .attr("jid", bob_jid.clone()),
            ),
        ))
        .await
        .unwrap();
    assert_eq!(sub.get_attr("type"), Some("result"), "{sub}");
    let mut acked = Vec::new();
    for i in 0..50 {
        let id = format!("item-{i}");
        let publish = Element::new("pubsub", PS).child(
            Element::new("publish", PS).attr("node", "durable").child(
                Element::new("item", PS)
                    .attr("id", id.clone())
                    .child(Element::new("n", "urn:test").text(i.to_string())),
            ),
        );
        let r = alice.iq(iq("set", &svc, publish)).await.unwrap();
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
        acked.push(id);
    }
    stratus.signal("KILL");
    let (code, _) = stratus.wait_exit(T);
    assert_eq!(code, None, "killed by a signal");
    drop(stratus);

    let mut again = Stratus::spawn_with_data(&server.component_addr(), &svc, data.path());
    again.wait_log("connected to", 1, std::time::Duration::from_secs(30));
    ping_until_answered(&mut alice, &svc).await;
    let items = get_items(&mut alice, &svc, "durable").await;
    let got = item_ids(&items);
    assert_eq!(got, acked, "every acknowledged item, in order");
    // The subscription survived: the owner sees it and bob gets the next event.
    let subs = alice
        .iq(iq(
            "get",
            &svc,
            Element::new("pubsub", OWNER)
                .child(Element::new("subscriptions", OWNER).attr("node", "durable")),
        ))
        .await
        .unwrap();
    assert!(subs.to_string().contains(&bob_jid), "{subs}");
    assert_eq!(
        alice
            .iq(iq("set", &svc, publish_item("durable", "after")))
            .await
            .unwrap()
            .get_attr("type"),
        Some("result")
    );
    let ev = bob.wait_for(T, |m| event_item_id(m) == Some("after")).await;
    assert!(
        ev.is_ok(),
        "the subscriber still gets events after the restart"
    );
}

#[tokio::test]
async fn sigkill_loses_nothing_acknowledged_prosody() {
    survives_sigkill(Kind::Prosody).await;
}

#[tokio::test]
async fn sigkill_loses_nothing_acknowledged_ejabberd() {
    survives_sigkill(Kind::Ejabberd).await;
}
