//! Unit tests of `xmpp::multicast`.

use super::*;
use crate::pubsub::model::{Item, NotificationType, ServiceId};
use crate::pubsub::notify::{Event, Notification, Recipient};
use crate::xmpp::notify::{Body, render_multicast};

fn parse_one(xml: &str) -> Element {
    crate::xml::reader::parse_element(xml, crate::xml::reader::Limits::default()).unwrap()
}

fn info(extra: &str) -> Element {
    parse_one(&format!(
        "<query xmlns='{NS_DISCO_INFO}'><identity category='service' type='multicast'/>\
         <feature var='{NS_ADDRESS}'/>{extra}</query>"
    ))
}

fn limits_form(value: &str) -> String {
    format!(
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>\
         <value>{NS_ADDRESS}</value></field><field var='message'><value>{value}</value>\
         </field></x>"
    )
}

#[test]
fn limits_follow_xep_0033_and_0128() {
    // No form: the default; an advertised number is honoured up to our own cap.
    assert_eq!(multicast_limit(&info("")), Some(DEFAULT_LIMIT));
    assert_eq!(multicast_limit(&info(&limits_form("100"))), Some(100));
    assert_eq!(
        multicast_limit(&info(&limits_form("100000"))),
        Some(MAX_LIMIT)
    );
    assert_eq!(
        multicast_limit(&info(&limits_form("infinite"))),
        Some(MAX_LIMIT)
    );
    assert_eq!(multicast_limit(&info(&limits_form("1"))), None);
    // Without the feature, a form means nothing.
    let plain = parse_one(&format!(
        "<query xmlns='{NS_DISCO_INFO}'><feature var='{NS_DISCO_INFO}'/>{}</query>",
        limits_form("100")
    ));
    assert_eq!(multicast_limit(&plain), None);
}

fn notification(recipients: &[&str]) -> Notification {
    Notification {
        service: ServiceId::Host,
        node: "n<1>".into(),
        recipients: recipients
            .iter()
            .map(|j| Recipient {
                jid: Jid::parse(j).unwrap(),
                subids: vec![],
            })
            .collect(),
        event: Event::Items {
            items: vec![Item {
                id: "i1".into(),
                payload: "<entry xmlns='urn:x'>hi &amp; bye</entry>".into(),
                publisher: String::new(),
                published_ms: 0,
            }],
            payloads: true,
        },
        kind: NotificationType::Headline,
        only_available: false,
    }
}

/// Sends `n` through multicast.x as stratus does (kept, then rendered with its id); returns
/// the stanza as the service receives it.
fn sent_through(mc: &Multicast, n: &Notification) -> Element {
    let body = Body::of(n);
    let rs: Vec<&Recipient> = n.recipients.iter().collect();
    let seq = mc.retain(
        "multicast.x",
        body.kind,
        &body.xml,
        rs.iter().map(|r| r.jid.clone()),
    );
    let id = crate::xmpp::notify::multicast_id(body.kind, seq);
    let xml = render_multicast(&body, "pubsub.x", ("multicast.x", &id), &rs);
    let wrapped = parse_one(&format!("<w xmlns='{NS_COMPONENT}'>{xml}</w>"));
    assert_eq!(wrapped.children().count(), 1);
    wrapped.children().next().unwrap().clone()
}

/// The service's refusal (XEP-0033 section 8): the stanza back as type error, with or
/// without its address list (Prosody's `st.error_reply` copies no children).
fn bounce_of(msg: &Element, addresses: Option<&str>) -> Element {
    let mut xml = format!(
        "<message xmlns='{NS_COMPONENT}' from='multicast.x' to='pubsub.x' type='error' id='{}'>",
        msg.get_attr("id").unwrap()
    );
    if let Some(list) = addresses {
        xml.push_str(&format!(
            "<addresses xmlns='{NS_ADDRESS}'>{list}</addresses>"
        ));
    }
    xml.push_str(
        "<error type='cancel'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
    );
    parse_one(&xml)
}

fn resent_to(r: &Refusal) -> Vec<Element> {
    let wrapped = parse_one(&format!(
        "<w xmlns='{NS_COMPONENT}'>{}</w>",
        resend(r, "pubsub.x")
    ));
    wrapped.children().cloned().collect()
}

#[test]
fn multicast_message_carries_bcc_addresses_and_survives_a_bounce() {
    let mc = Multicast::new("pubsub.x", Arc::default());
    let n = notification(&["a@x/r1", "b@x/r'2"]);
    let msg = sent_through(&mc, &n);
    assert_eq!(msg.get_attr("to"), Some("multicast.x"));
    assert_eq!(msg.get_attr("type"), Some("headline"));
    let addrs: Vec<(&str, &str)> = msg
        .get_child("addresses", NS_ADDRESS)
        .unwrap()
        .children()
        .map(|a| (a.get_attr("type").unwrap(), a.get_attr("jid").unwrap()))
        .collect();
    assert_eq!(addrs, vec![("bcc", "a@x/r1"), ("bcc", "b@x/r'2")]);

    // Refused without its addresses: what was kept is resent to every address, each with
    // the event and the original type, without addresses or error.
    let bounce = bounce_of(&msg, None);
    // A bounce counts only from the service the stanza went to.
    let stranger = refusal(&bounce, &mc, "elsewhere.x").unwrap();
    assert!(stranger.to.is_empty(), "{stranger:?}");
    let r = refusal(&bounce, &mc, "multicast.x").unwrap();
    assert!(r.whole);
    assert_eq!(r.why, "forbidden");
    let msgs = resent_to(&r);
    assert_eq!(msgs.len(), 2);
    for (m, to) in msgs.iter().zip(["a@x/r1", "b@x/r'2"]) {
        assert_eq!(m.get_attr("to"), Some(to));
        assert_eq!(m.get_attr("from"), Some("pubsub.x"));
        assert_eq!(m.get_attr("type"), Some("headline"));
        assert!(m.get_child("addresses", NS_ADDRESS).is_none());
        assert!(m.get_child("error", NS_COMPONENT).is_none());
        let item = m
            .get_child("event", super::super::notify::NS_EVENT)
            .and_then(|e| e.children().next())
            .and_then(|items| items.children().next())
            .unwrap();
        assert_eq!(item.get_attr("id"), Some("i1"));
        assert_eq!(item.children().next().unwrap().text_content(), "hi & bye");
    }
    // Taken once: the same bounce again resends nothing (its addresses were never listed).
    assert!(refusal(&bounce, &mc, "multicast.x").unwrap().to.is_empty());
    // A message that is not one of ours is left alone.
    let other = parse_one(&format!(
        "<message xmlns='{NS_COMPONENT}' type='error' id='x'><addresses xmlns='{NS_ADDRESS}'/></message>"
    ));
    assert!(refusal(&other, &mc, "multicast.x").is_none());
}

/// A service that refuses some addresses lists them undelivered: only those are resent, only
/// if the stanza was sent to them, and the service stays in use.
#[test]
fn a_partial_refusal_resends_only_the_refused_addresses() {
    let mc = Multicast::new("pubsub.x", Arc::default());
    let n = notification(&["a@x/r1", "b@x/r2", "c@x/r3"]);
    let msg = sent_through(&mc, &n);
    let bounce = bounce_of(
        &msg,
        Some(
            "<address type='bcc' jid='b@x/r2'/><address type='bcc' jid='a@x/r1' delivered='true'/>\
             <address type='bcc' jid='intruder@x/r'/>",
        ),
    );
    let r = refusal(&bounce, &mc, "multicast.x").unwrap();
    assert!(!r.whole);
    let to: Vec<String> = r.to.iter().map(|j| j.to_string()).collect();
    assert_eq!(to, vec!["b@x/r2"]);
    assert_eq!(resent_to(&r).len(), 1);
}

#[test]
fn kept_stanzas_are_bounded() {
    let mc = Multicast::new("pubsub.x", Arc::default());
    let body: Arc<str> = "x".repeat(1 << 20).into();
    let first = mc.retain("m", "headline", &body, std::iter::empty());
    for _ in 0..40 {
        mc.retain("m", "headline", &body, std::iter::empty());
    }
    assert!(mc.take(first, "m").is_none(), "the oldest went first");
    let r = mc.retained.lock().unwrap();
    assert!(r.bytes <= RETAIN_BYTES + body.len() + 64, "{}", r.bytes);
}

/// On connecting, discovery starts for the server's own domain (XEP-0033 section 2.1:
/// disco#info to the domain first), without waiting for a first notification.
#[tokio::test]
async fn discovery_of_the_parent_domain_starts_on_connect() {
    let (out, queue) = Outbox::new(16, NS_COMPONENT);
    let mc = Arc::new(Multicast::new("pubsub.example.org", Arc::default()));
    mc.discover_parent(&out);
    let sent = tokio::time::timeout(Duration::from_secs(1), queue.lock().await.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        sent.contains("to='example.org'") && sent.contains(NS_DISCO_INFO),
        "{sent}"
    );
    // While it runs, the domain is not asked again, and a one-label domain has no parent.
    mc.discover_parent(&out);
    let single = Arc::new(Multicast::new("localhost", Arc::default()));
    single.discover_parent(&out);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(queue.lock().await.try_recv().is_err());
}

#[tokio::test]
async fn no_barrier_when_the_service_is_our_own_server() {
    let (out, queue) = Outbox::new(16, NS_COMPONENT);
    let mc = Multicast::new("pubsub.example.org", Arc::default());
    let started = std::time::Instant::now();
    mc.barrier(&out, "example.org").await;
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(queue.lock().await.try_recv().is_err());
    // Another server's domain, or a service beside it, is still waited for.
    let waiting = tokio::spawn(async move { mc.barrier(&out, "multicast.example.org").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = queue.lock().await.try_recv().unwrap();
    assert!(sent.contains("to='multicast.example.org'"), "{sent}");
    waiting.abort();
}

#[tokio::test]
async fn an_unanswered_barrier_is_not_waited_for_again() {
    let (out, queue) = Outbox::new(16, NS_COMPONENT);
    let mc = Multicast::new("pubsub.x", Arc::default());
    let started = std::time::Instant::now();
    mc.barrier(&out, "multicast.x").await;
    assert!(started.elapsed() >= BARRIER_TIMEOUT);
    let sent = queue.lock().await.try_recv().unwrap();
    assert!(
        sent.contains("to='multicast.x'") && sent.contains("urn:xmpp:ping"),
        "{sent}"
    );
    // The next publish is answered at once, without asking the silent service again.
    let started = std::time::Instant::now();
    mc.barrier(&out, "multicast.x").await;
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(queue.lock().await.try_recv().is_err());
    // A new connection may be to a server that answers: it is asked again.
    mc.reset();
    let waiting = tokio::spawn(async move { mc.barrier(&out, "multicast.x").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(queue.lock().await.try_recv().is_ok());
    waiting.abort();
}
