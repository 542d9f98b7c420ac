//! Hostile input through real Prosody and real ejabberd (issue 12): one bad stanza costs its sender
//! one stanza error and nothing else. After each attack the service answers the next request, the
//! attacker's own requests are answered, and stratus never reconnected.

mod common;

use std::time::Duration;

use common::*;
use stratus::client::{Client, NS_CLIENT};
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const CAPS: &str = "http://jabber.org/protocol/caps";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

macro_rules! both_servers {
    ($($name:ident),* $(,)?) => {
        mod prosody { use super::*; $( #[tokio::test] async fn $name() { super::$name(Kind::Prosody).await } )* }
        mod ejabberd { use super::*; $( #[tokio::test] async fn $name() { super::$name(Kind::Ejabberd).await } )* }
    };
}

both_servers!(
    one_bad_stanza_one_bounce,
    prefixed_payload_comes_back_as_published,
    the_reader_never_waits_on_work,
    a_forged_answer_does_not_replace_the_real_one,
    a_flood_of_random_caps_hashes,
);

/// Sends raw XML on the client's stream (what a hostile client can write).
async fn send_raw(c: &Client, xml: String) {
    c.outbox().send_raw(xml).await.unwrap();
}

/// Waits for the error answering the stanza with this id.
async fn bounced(c: &mut Client, id: &str) -> Element {
    c.wait_for(T, |s| {
        s.get_attr("id") == Some(id) && s.get_attr("type") == Some("error")
    })
    .await
    .unwrap_or_else(|e| panic!("no error for {id}: {e}"))
}

/// RFC 6120 8.3.3.12: a stanza over a limit gets policy-violation (type modify) with text, and the
/// stream goes on: the attacker and another user are answered next.
async fn one_bad_stanza_one_bounce(kind: Kind) {
    let server = shared(kind);
    let lease = lease_domain(server);
    let d = lease.domain.as_str();
    let mut stratus = Stratus::start(server, d);
    let mut mallory = new_user(server, "mallory").await;
    let mut bob = new_user(server, "bob").await;

    let deep = format!(
        "<message to='{d}' id='deep'>{}{}</message>",
        "<a xmlns='urn:deep'>".repeat(200),
        "</a>".repeat(200)
    );
    let declarations: String = (0..200)
        .map(|i| format!("<p{i}:e xmlns:p{i}='urn:p{i}'/>"))
        .collect();
    let declarations = format!("<message to='{d}' id='ns'>{declarations}</message>");
    let attributes: String = (0..100).map(|i| format!(" a{i}='{i}'")).collect();
    let attributes =
        format!("<message to='{d}' id='attrs'><x xmlns='urn:x'{attributes}/></message>");
    let uri = format!(
        "<iq type='get' to='{d}' id='uri'><query xmlns='urn:{}'/></iq>",
        "u".repeat(4000)
    );
    for (id, stanza, limit) in [
        ("deep", deep, "nested deeper than 48"),
        ("ns", declarations, "more than 64 namespace declarations"),
        ("attrs", attributes, "more than 64 attributes"),
        ("uri", uri, "a namespace name longer than 1024 bytes"),
    ] {
        send_raw(&mallory, stanza).await;
        let err = bounced(&mut mallory, id).await;
        assert_eq!(err.get_attr("from"), Some(d), "{err}");
        assert_eq!(
            error_condition(&err).as_deref(),
            Some("policy-violation"),
            "{err}"
        );
        let e = err.get_child("error", NS_CLIENT).unwrap();
        assert_eq!(e.get_attr("type"), Some("modify"));
        let text = e.get_child("text", STANZAS).unwrap().text_content();
        assert!(text.contains(limit), "{id}: {text}");
        ping_answered(&mut mallory, d).await;
        ping_answered(&mut bob, d).await;
    }
    // A publish just under the servers' own limit for a client's stanza (256 KiB,
    // scripts/templates): the server accepts it and writes it again to us with its own additions;
    // stratus stores it and the publisher gets its answer.
    create_keeping_all(&mut mallory, d, "big").await;
    let envelope = format!(
        "<iq type='set' to='{d}' id='big'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='big'><item id='b1'><e xmlns='urn:big'></e></item></publish></pubsub></iq>"
    );
    let fill = 256 * 1024 - envelope.len() - 8;
    let big = envelope.replace(
        "<e xmlns='urn:big'></e>",
        &format!("<e xmlns='urn:big'>{}</e>", "x".repeat(fill)),
    );
    assert!(big.len() < 256 * 1024);
    send_raw(&mallory, big).await;
    let r = mallory
        .wait_for(T, |s| s.get_attr("id") == Some("big"))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    // No error answers an error (RFC 6120 8.3.1): the next thing mallory gets is the pong.
    send_raw(
        &mallory,
        format!(
            "<message type='error' to='{d}' id='e1'>{}</message>",
            "<a xmlns='urn:deep'>".repeat(100) + &"</a>".repeat(100)
        ),
    )
    .await;
    let pong = mallory
        .iq(iq("get", d, Element::new("ping", "urn:xmpp:ping")))
        .await
        .unwrap();
    assert_eq!(pong.get_attr("type"), Some("result"));
    assert!(
        !mallory.pending_contains(|s| s.get_attr("id") == Some("e1")),
        "an error was answered"
    );
    // Each skipped stanza was logged before its bounce, which mallory has read.
    let log = stratus.log_text();
    assert_eq!(log.matches("skipped a message").count(), 4, "{log}");
    assert_eq!(
        log.matches("connected to").count(),
        1,
        "stratus reconnected:\n{log}"
    );
    assert!(stratus.is_running());
}

/// XEP-0060 7.1 and 6.5: what was published comes back the same in the event and in the items,
/// prefixed attributes and xml:lang included (the event used to lose `xmlns:p`, the server closed
/// the stream, and the publisher never got its answer).
async fn prefixed_payload_comes_back_as_published(kind: Kind) {
    let server = shared(kind);
    let lease = lease_domain(server);
    let d = lease.domain.as_str();
    let mut stratus = Stratus::start(server, d);
    let mut alice = new_user(server, "alice").await;
    let mut bob = new_user(server, "bob").await;
    create_keeping_all(&mut alice, d, "prefixed").await;
    let sub = bob
        .iq(iq(
            "set",
            d,
            Element::new("pubsub", PS).child(
                Element::new("subscribe", PS)
                    .attr("node", "prefixed")
                    .attr("jid", bob.jid().to_string()),
            ),
        ))
        .await
        .unwrap();
    assert_eq!(sub.get_attr("type"), Some("result"), "{sub}");
    send_raw(
        &alice,
        format!(
            "<iq type='set' to='{d}' id='pub1'><pubsub xmlns='{PS}'><publish node='prefixed'>\
             <item id='i1'><e xmlns='urn:e' xmlns:p='urn:p' p:a='1' xml:lang='fr'>t&amp;&lt;<p:f q='2'/></e>\
             </item></publish></pubsub></iq>"
        ),
    )
    .await;
    let answer = alice
        .wait_for(T, |s| s.get_attr("id") == Some("pub1"))
        .await
        .expect("the publisher gets its answer");
    assert_eq!(answer.get_attr("type"), Some("result"), "{answer}");
    let check = |e: &Element| {
        assert!(e.is("e", "urn:e"), "{e}");
        assert_eq!(e.get_attr_ns("a", "urn:p"), Some("1"), "{e}");
        assert_eq!(e.get_attr("xml:lang"), Some("fr"), "{e}");
        assert_eq!(e.text_content(), "t&<");
        let f = e.get_child("f", "urn:p").expect("p:f");
        assert_eq!(f.get_attr("q"), Some("2"));
    };
    let event = bob
        .wait_for(T, |m| {
            m.name() == "message" && m.get_child("event", EVENT).is_some()
        })
        .await
        .unwrap();
    let item = event
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap();
    check(item.children().next().unwrap().children().next().unwrap());
    let items = bob
        .iq(iq(
            "get",
            d,
            Element::new("pubsub", PS).child(Element::new("items", PS).attr("node", "prefixed")),
        ))
        .await
        .unwrap();
    let payload = items
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("items", PS))
        .and_then(|i| i.children().next())
        .and_then(|i| i.children().next())
        .unwrap_or_else(|| panic!("{items}"));
    check(payload);
    let log = stratus.log_text();
    assert_eq!(
        log.matches("connected to").count(),
        1,
        "stratus reconnected:\n{log}"
    );
    let _ = stratus.is_running();
}

/// XEP-0060 6.5 items requests on a presence-access node need the owner's roster (XEP-0356),
/// which arrives on the same stream: 2,000 of them back to back must not stop the reader. Every
/// request gets one answer (served, refused, or resource-constraint), and a ping from another user
/// is answered meanwhile.
async fn the_reader_never_waits_on_work(kind: Kind) {
    let server = Server::start_private_pep(kind);
    let stratus = Stratus::start(&server, "pubsub.localhost");
    let d = "pubsub.localhost";
    let mut alice = new_user(&server, "alice").await;
    let mut mallory = new_user(&server, "mallory").await;
    let mut bob = new_user(&server, "bob").await;
    create_with_access(&mut alice, d, "friends", "presence").await;
    const N: usize = 2000;
    let mut flood = String::new();
    for i in 0..N {
        flood.push_str(&format!(
            "<iq type='get' to='{d}' id='f{i}'><pubsub xmlns='{PS}'><items node='friends'/></pubsub></iq>"
        ));
    }
    send_raw(&mallory, flood).await;
    ping_answered(&mut bob, d).await;
    let mut answered = 0;
    while answered < N {
        mallory
            .wait_for(Duration::from_secs(30), |s| {
                s.get_attr("id").is_some_and(|id| id.starts_with('f'))
                    && matches!(s.get_attr("type"), Some("result" | "error"))
            })
            .await
            .unwrap_or_else(|e| panic!("{answered} of {N} answered: {e}"));
        answered += 1;
    }
    let log = stratus.log_text();
    assert_eq!(
        log.matches("connected to").count(),
        1,
        "stratus reconnected:\n{log}"
    );
}

/// RFC 6120 8.1.3: stratus asks alice's resource for its XEP-0115 features; mallory, who learnt
/// the request's id, answers first without the `+notify` feature. That answer must not count: the
/// real one (with `+notify`) does, so alice's own resource receives her PEP event (XEP-0163 4).
async fn a_forged_answer_does_not_replace_the_real_one(kind: Kind) {
    let server = Server::start_private_pep(kind);
    let stratus = Stratus::start(&server, "pubsub.localhost");
    let mut alice = new_user(&server, "alice").await;
    let mut mallory = new_user(&server, "mallory").await;
    let node = "urn:example:tune";
    let ver = unique("ver");
    alice
        .send(
            &Element::new("presence", NS_CLIENT).child(
                Element::new("c", CAPS)
                    .attr("hash", "sha-1")
                    .attr("node", "https://stratus.test/client")
                    .attr("ver", ver.clone()),
            ),
        )
        .await
        .unwrap();
    let query = alice
        .wait_for(T, |s| {
            s.name() == "iq"
                && s.get_attr("from") == Some("pubsub.localhost")
                && s.get_child("query", DISCO_INFO).is_some()
        })
        .await
        .expect("stratus asks for the caps");
    let id = query.get_attr("id").unwrap().to_owned();
    let caps_node = query
        .get_child("query", DISCO_INFO)
        .and_then(|q| q.get_attr("node"))
        .unwrap()
        .to_owned();
    let answer = |features: &[&str]| {
        let mut q = Element::new("query", DISCO_INFO).attr("node", caps_node.clone());
        for f in features {
            q.push_child(Element::new("feature", DISCO_INFO).attr("var", *f));
        }
        Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr("id", id.clone())
            .attr("to", "pubsub.localhost")
            .child(q)
    };
    mallory.send(&answer(&["urn:nothing"])).await.unwrap();
    // mallory's forgery is on its way first; the server keeps one sender's order, not two, so
    // wait until mallory's server took it (an answered ping) before alice answers.
    ping_answered(&mut mallory, "pubsub.localhost").await;
    let plus_notify = format!("{node}+notify");
    alice.send(&answer(&[&plus_notify])).await.unwrap();
    let publish = Element::new("iq", NS_CLIENT).attr("type", "set").child(
        Element::new("pubsub", PS).child(
            Element::new("publish", PS).attr("node", node).child(
                Element::new("item", PS)
                    .attr("id", "current")
                    .child(Element::new("tune", node).text("x")),
            ),
        ),
    );
    // The features may reach stratus after the publish: publish until an event arrives.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = alice.iq(publish.clone()).await.unwrap();
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
        if alice
            .wait_for(Duration::from_millis(500), |m| {
                m.name() == "message" && m.get_child("event", EVENT).is_some()
            })
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event: the forged caps answer counted\n{}",
            stratus.log_text()
        );
    }
}

/// XEP-0115 5.4: mallory announces 300 random caps hashes one after the other and answers every
/// query with features that do not hash to them. Each is asked about once, the service keeps
/// answering, and stratus never reconnects (memory: scripts/bench-hostile.sh, docs/benchmarks.md;
/// what is cached: the unit tests of pep::presence).
async fn a_flood_of_random_caps_hashes(kind: Kind) {
    let server = Server::start_private_pep(kind);
    let stratus = Stratus::start(&server, "pubsub.localhost");
    let mut mallory = new_user(&server, "mallory").await;
    let caps = |ver: &str| {
        Element::new("presence", NS_CLIENT).child(
            Element::new("c", CAPS)
                .attr("hash", "sha-1")
                .attr("node", "https://flood.example")
                .attr("ver", ver),
        )
    };
    let mut answered = 0;
    for i in 0..300 {
        mallory.send(&caps(&format!("{i:028}=="))).await.unwrap();
        let q = mallory
            .wait_for(T, |s| {
                s.get_attr("from") == Some("pubsub.localhost")
                    && s.get_child("query", DISCO_INFO).is_some()
            })
            .await
            .expect("stratus asks about each new hash");
        let node = q
            .get_child("query", DISCO_INFO)
            .and_then(|q| q.get_attr("node"))
            .unwrap()
            .to_owned();
        let answer = Element::new("iq", NS_CLIENT)
            .attr("type", "result")
            .attr("id", q.get_attr("id").unwrap())
            .attr("to", "pubsub.localhost")
            .child(
                Element::new("query", DISCO_INFO)
                    .attr("node", node)
                    .child(Element::new("feature", DISCO_INFO).attr("var", format!("urn:f{i}"))),
            );
        mallory.send(&answer).await.unwrap();
        answered += 1;
    }
    assert_eq!(answered, 300);
    ping_answered(&mut mallory, "pubsub.localhost").await;
    let log = stratus.log_text();
    assert_eq!(
        log.matches("connected to").count(),
        1,
        "stratus reconnected:\n{log}"
    );
}
