//! PEP helpers for the tests of one server (tests/pep.rs) and of two federated ones
//! (tests/federation.rs): presence subscriptions, caps, events.

use std::time::Duration;

use stratus::client::{Client, NS_CLIENT};
use stratus::xml::Element;

use super::T;

pub const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const CAPS: &str = "http://jabber.org/protocol/caps";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// `<pubsub><publish node><item id>PAYLOAD</item></publish>` with publish-options fields
/// (XEP-0060 7.1.5), none if empty.
pub fn publish_with_options(
    node: &str,
    id: &str,
    payload: Element,
    options: &[(&str, &str)],
) -> Element {
    const PS: &str = "http://jabber.org/protocol/pubsub";
    const DATA: &str = "jabber:x:data";
    let mut ps = Element::new("pubsub", PS).child(
        Element::new("publish", PS)
            .attr("node", node)
            .child(Element::new("item", PS).attr("id", id).child(payload)),
    );
    if !options.is_empty() {
        let mut x = Element::new("x", DATA).attr("type", "submit").child(
            Element::new("field", DATA)
                .attr("var", "FORM_TYPE")
                .attr("type", "hidden")
                .child(
                    Element::new("value", DATA)
                        .text("http://jabber.org/protocol/pubsub#publish-options"),
                ),
        );
        for (var, value) in options {
            x.push_child(
                Element::new("field", DATA)
                    .attr("var", *var)
                    .child(Element::new("value", DATA).text(*value)),
            );
        }
        ps.push_child(Element::new("publish-options", PS).child(x));
    }
    ps
}

/// Publishes to the client's own PEP service with publish-options fields; the publish must
/// succeed.
pub async fn publish(
    c: &mut Client,
    node: &str,
    id: &str,
    payload: Element,
    options: &[(&str, &str)],
) {
    let ps = publish_with_options(node, id, payload, options);
    let r = c
        .iq(Element::new("iq", NS_CLIENT).attr("type", "set").child(ps))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "publish to {node}: {r}");
}

pub fn bare(c: &Client) -> String {
    c.jid().to_bare().to_string()
}

/// `subscriber` subscribes to `owner`'s presence and `owner` approves (RFC 6121 3.1).
pub async fn presence_subscribe(subscriber: &mut Client, owner: &mut Client) {
    let owner_bare = bare(owner);
    let sub_bare = bare(subscriber);
    subscriber
        .send(
            &Element::new("presence", NS_CLIENT)
                .attr("to", owner_bare.clone())
                .attr("type", "subscribe"),
        )
        .await
        .unwrap();
    owner
        .wait_for(T, |p| {
            p.name() == "presence" && p.get_attr("type") == Some("subscribe")
        })
        .await
        .expect("subscription request");
    owner
        .send(
            &Element::new("presence", NS_CLIENT)
                .attr("to", sub_bare)
                .attr("type", "subscribed"),
        )
        .await
        .unwrap();
    subscriber
        .wait_for(T, |p| {
            p.name() == "presence" && p.get_attr("type") == Some("subscribed")
        })
        .await
        .expect("subscription approval");
}

/// Sends presence with XEP-0115 caps and answers every disco#info query for that caps node
/// (the component's, and the server's own caps module's) until the component has asked.
pub async fn online_with_caps(c: &mut Client, ver: &str, features: &[&str]) {
    c.send(
        &Element::new("presence", NS_CLIENT).child(
            Element::new("c", CAPS)
                .attr("hash", "sha-1")
                .attr("node", "https://stratus.test/client")
                .attr("ver", ver),
        ),
    )
    .await
    .unwrap();
    // The component asks once per caps hash (it may know the hash already from another user).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(q) = c
        .wait_for(
            deadline.saturating_duration_since(tokio::time::Instant::now()),
            |s| {
                s.name() == "iq"
                    && s.get_attr("type") == Some("get")
                    && s.get_child("query", DISCO_INFO).is_some()
            },
        )
        .await
    {
        let mut query = Element::new("query", DISCO_INFO)
            .attr_opt(
                "node",
                q.get_child("query", DISCO_INFO)
                    .unwrap()
                    .get_attr("node")
                    .map(str::to_owned),
            )
            .child(
                Element::new("identity", DISCO_INFO)
                    .attr("category", "client")
                    .attr("type", "pc"),
            );
        for f in features {
            query.push_child(Element::new("feature", DISCO_INFO).attr("var", *f));
        }
        let from = q.get_attr("from").unwrap_or_default().to_owned();
        let reply = Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr("id", q.get_attr("id").unwrap())
            .attr("to", from.clone())
            .child(query);
        c.send(&reply).await.unwrap();
        if from == "pubsub.localhost" {
            break;
        }
    }
}

pub fn pep_event_from<'a>(m: &'a Element, owner: &str, node: &str) -> Option<&'a Element> {
    if m.name() != "message" || m.get_attr("from") != Some(owner) {
        return None;
    }
    m.get_child("event", EVENT)?
        .get_child("items", EVENT)
        .filter(|i| i.get_attr("node") == Some(node))
}

/// RFC 6121 2.1.6: asking for the roster makes a resource "interested", so the server delivers
/// subscription requests and approvals to it; then initial presence.
pub async fn interested_and_online(c: &mut Client) {
    let roster = Element::new("iq", NS_CLIENT)
        .attr("type", "get")
        .child(Element::new("query", "jabber:iq:roster"));
    assert_eq!(c.iq(roster).await.unwrap().get_attr("type"), Some("result"));
    c.send_presence().await.unwrap();
}
