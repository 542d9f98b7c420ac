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
    c.send(&caps_presence(None, ver)).await.unwrap();
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
        if answer_caps_query(c, &q, features).await == "pubsub.localhost" {
            break;
        }
    }
}

/// Answers a disco#info query `q` for the client's caps with `features`; returns who asked.
pub async fn answer_caps_query(c: &mut Client, q: &Element, features: &[&str]) -> String {
    let mut query = disco_info(features);
    if let Some(node) = q
        .get_child("query", DISCO_INFO)
        .and_then(|q| q.get_attr("node"))
    {
        query.set_attr("node", node);
    }
    let from = q.get_attr("from").unwrap_or_default().to_owned();
    let reply = Element::new("iq", NS_CLIENT)
        .attr("type", "result")
        .attr("id", q.get_attr("id").unwrap_or_default())
        .attr("to", from.clone())
        .child(query);
    c.send(&reply).await.unwrap();
    from
}

/// Presence with XEP-0115 caps (directed when `to` is given).
pub fn caps_presence(to: Option<&str>, ver: &str) -> Element {
    Element::new("presence", NS_CLIENT)
        .attr_opt("to", to.map(str::to_owned))
        .child(
            Element::new("c", CAPS)
                .attr("hash", "sha-1")
                .attr("node", "https://stratus.test/client")
                .attr("ver", ver),
        )
}

/// What a client with these features answers to disco#info (XEP-0030 section 3.1).
pub fn disco_info(features: &[&str]) -> Element {
    let mut query = Element::new("query", DISCO_INFO).child(
        Element::new("identity", DISCO_INFO)
            .attr("category", "client")
            .attr("type", "pc"),
    );
    for f in features {
        query.push_child(Element::new("feature", DISCO_INFO).attr("var", *f));
    }
    query
}

/// Reads `c`'s stanzas until one matches `until`, answering every disco#info query for its caps
/// with `features` on the way (the servers' own caps modules ask too; a query that matches is
/// answered first); returns the match and who asked.
pub async fn answering_caps(
    c: &mut Client,
    features: &[&str],
    mut until: impl FnMut(&Element) -> bool,
) -> (Element, Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut askers = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let s = c
            .wait_for(left, |s| {
                until(s)
                    || (s.name() == "iq"
                        && s.get_attr("type") == Some("get")
                        && s.get_child("query", DISCO_INFO).is_some())
            })
            .await
            .unwrap_or_else(|e| panic!("{}: nothing awaited within 20 s: {e}", c.jid()));
        let query = s.name() == "iq" && s.get_child("query", DISCO_INFO).is_some();
        if !query {
            return (s, askers);
        }
        askers.push(answer_caps_query(c, &s, features).await);
        if until(&s) {
            return (s, askers);
        }
    }
}

/// XEP-0060 errors: the pubsub#errors condition of an error reply.
pub fn app_error(reply: &Element) -> Option<String> {
    reply
        .get_child("error", NS_CLIENT)?
        .children()
        .find(|c| c.ns() == "http://jabber.org/protocol/pubsub#errors")
        .map(|c| c.name().to_owned())
}

/// The account's disco#info once it shows every one of `features`, asked again every 100 ms for
/// up to 5 s: the server learns what stratus offers by asking it (XEP-0355, the delegation disco
/// nodes) after stratus connects, and says so only in its answers.
pub async fn account_info_with(c: &mut Client, features: &[&str]) -> Element {
    let me = bare(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let info = c
            .iq(super::iq("get", &me, Element::new("query", DISCO_INFO)))
            .await
            .unwrap();
        assert_eq!(info.get_attr("type"), Some("result"), "{info}");
        let q = info.get_child("query", DISCO_INFO).unwrap();
        let has = |var: &str| {
            q.children()
                .any(|f| f.name() == "feature" && f.get_attr("var") == Some(var))
        };
        if features.iter().all(|f| has(f)) {
            return info;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the account never showed {features:?}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
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
