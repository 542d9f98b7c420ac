//! One identity per JID, through real Prosody and real ejabberd (issue 18).
//!
//! The servers prepare every JID they stamp (RFC 6122: nodeprep on the localpart, nameprep on
//! the domainpart, both with NFKC and case folding), so `ｃａｒｏｌ@LOCALHOST` and
//! `carol@localhost` are one account. Lists an owner writes (outcasts, members, owners) and
//! `jid` attributes of requests must be compared in that same prepared form, or an outcast
//! written in another form still gets in.

mod common;

use common::*;
use stratus::client::{Client, NS_CLIENT};
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";

/// The fullwidth form of an ASCII string (U+FF01..U+FF5E), which NFKC maps back to ASCII
/// (RFC 6122 appendix A.4 applies NFKC in nodeprep).
fn fullwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap(),
            other => other,
        })
        .collect()
}

fn account(c: &Client) -> String {
    c.jid().node().unwrap().to_owned()
}

fn assert_result(reply: &Element) {
    assert_eq!(reply.get_attr("type"), Some("result"), "{reply}");
}

fn assert_condition(reply: &Element, condition: &str) {
    assert_eq!(reply.get_attr("type"), Some("error"), "{reply}");
    assert_eq!(
        error_condition(reply).as_deref(),
        Some(condition),
        "{reply}"
    );
}

async fn create(c: &mut Client, svc: &str, node: &str, access: &str) {
    let form = config_form(&[("pubsub#access_model", access)]);
    let r = c
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", PS)
                .child(Element::new("create", PS).attr("node", node))
                .child(Element::new("configure", PS).child(form)),
        ))
        .await
        .unwrap();
    assert_result(&r);
}

async fn set_affiliation(owner: &mut Client, svc: &str, node: &str, jid: &str, aff: &str) {
    let r = owner
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", OWNER).child(
                Element::new("affiliations", OWNER)
                    .attr("node", node)
                    .child(
                        Element::new("affiliation", OWNER)
                            .attr("jid", jid)
                            .attr("affiliation", aff),
                    ),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
}

async fn subscribe_as(c: &mut Client, svc: &str, node: &str, jid: &str) -> Element {
    c.iq(iq(
        "set",
        svc,
        Element::new("pubsub", PS).child(
            Element::new("subscribe", PS)
                .attr("node", node)
                .attr("jid", jid),
        ),
    ))
    .await
    .unwrap()
}

async fn publish(c: &mut Client, svc: &str, node: &str, body: &str) {
    let item = Element::new("item", PS).child(Element::new("entry", "urn:example").text(body));
    let r = c
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", PS)
                .child(Element::new("publish", PS).attr("node", node).child(item)),
        ))
        .await
        .unwrap();
    assert_result(&r);
}

fn items_event(e: &Element) -> bool {
    e.name() == "message"
        && e.get_child("event", EVENT)
            .is_some_and(|ev| ev.get_child("items", EVENT).is_some())
}

/// XEP-0060 4.1 (an outcast may not subscribe) and 6.1.3.8 (`forbidden`), with the outcast
/// written fullwidth and upper-case: both name the account the server stamps in lower case.
async fn outcast_in_another_form_is_still_outcast(kind: Kind) {
    let e = env(kind).await;
    let svc = e.svc.as_str();
    let mut alice = new_user(e.server, "alice").await;
    let mut carol = new_user(e.server, "carol").await;
    let mut dave = new_user(e.server, "dave").await;
    create(&mut alice, svc, "forms", "open").await;
    let wide = format!("{}@localhost", fullwidth(&account(&carol)));
    set_affiliation(&mut alice, svc, "forms", &wide, "outcast").await;
    let upper = format!("{}@LocalHost", account(&dave).to_uppercase());
    set_affiliation(&mut alice, svc, "forms", &upper, "outcast").await;

    for who in [&mut carol, &mut dave] {
        let own = who.jid().to_string();
        let r = subscribe_as(who, svc, "forms", &own).await;
        assert_condition(&r, "forbidden");
    }
    // The owner's list names each outcast once, in the prepared form (XEP-0060 8.9.1).
    let list = alice
        .iq(iq(
            "get",
            svc,
            Element::new("pubsub", OWNER)
                .child(Element::new("affiliations", OWNER).attr("node", "forms")),
        ))
        .await
        .unwrap();
    let text = list.to_string();
    assert!(
        text.contains(&format!("{}@localhost", account(&carol))),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}@localhost", account(&dave))),
        "{text}"
    );
}

/// XEP-0060 4.5 (whitelist) and 8.9.2: a member added in fullwidth capitals is the member who
/// logs in.
async fn whitelist_given_in_another_form(kind: Kind) {
    let e = env(kind).await;
    let svc = e.svc.as_str();
    let mut alice = new_user(e.server, "alice").await;
    let mut erin = new_user(e.server, "erin").await;
    let mut frank = new_user(e.server, "frank").await;
    create(&mut alice, svc, "club", "whitelist").await;
    let wide = format!("{}@LOCALHOST", fullwidth(&account(&erin).to_uppercase()));
    set_affiliation(&mut alice, svc, "club", &wide, "member").await;
    let own = erin.jid().to_string();
    assert_result(&subscribe_as(&mut erin, svc, "club", &own).await);
    let own = frank.jid().to_string();
    // XEP-0060 6.1.3.4: not on the whitelist.
    assert_condition(
        &subscribe_as(&mut frank, svc, "club", &own).await,
        "not-allowed",
    );
    publish(&mut alice, svc, "club", "for members").await;
    let got = erin
        .wait_for(T, items_event)
        .await
        .expect("the member written in another form receives the item");
    assert!(got.to_string().contains("for members"), "{got}");
}

/// XEP-0060 6.1.3.1 compares the `jid` attribute with the sender's bare JID: the same account
/// written in another form is not a mismatch, and the subscription is the account's (the
/// reply's `jid` is the prepared form, and publishes reach it). A `jid` that is not a JID is
/// `jid-malformed` (RFC 6120 8.3.3.8).
async fn subscribe_with_unprepared_jid(kind: Kind) {
    let e = env(kind).await;
    let svc = e.svc.as_str();
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, svc, "news", "open").await;
    let shouted = format!(
        "{}@LOCALHOST/{}",
        fullwidth(&account(&bob).to_uppercase()),
        bob.jid().resource().unwrap()
    );
    let r = subscribe_as(&mut bob, svc, "news", &shouted).await;
    assert_result(&r);
    let sub = r
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("subscription", PS))
        .expect("a subscription in the result");
    assert_eq!(
        sub.get_attr("jid"),
        Some(bob.jid().to_string().as_str()),
        "{r}"
    );
    publish(&mut alice, svc, "news", "hello").await;
    bob.wait_for(T, items_event)
        .await
        .expect("the subscription made in another form receives items");

    let r = subscribe_as(&mut bob, svc, "news", "bob@@localhost").await;
    assert_condition(&r, "jid-malformed");
    assert_eq!(
        r.get_child("error", NS_CLIENT)
            .and_then(|e| e.get_attr("type")),
        Some("modify"),
        "{r}"
    );
    // The stream goes on; the notification went out before the publish was answered, so by
    // now a second subscription would have had its event too.
    ping_answered(&mut bob, svc).await;
    assert!(
        !bob.pending_contains(items_event),
        "one subscription, one event"
    );
}

macro_rules! both_servers {
    ($($name:ident),* $(,)?) => {
        mod prosody { use super::*; $( #[tokio::test] async fn $name() { super::$name(Kind::Prosody).await } )* }
        mod ejabberd { use super::*; $( #[tokio::test] async fn $name() { super::$name(Kind::Ejabberd).await } )* }
    };
}

both_servers!(
    outcast_in_another_form_is_still_outcast,
    whitelist_given_in_another_form,
    subscribe_with_unprepared_jid,
);
