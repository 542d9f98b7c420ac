//! XEP-0033 multicast of notifications through real servers: ejabberd's mod_multicast fans out
//! one stanza per publish; Prosody has no multicast service and gets one message per subscriber;
//! a multicast service that refuses (ejabberd, for nomulticast.localhost) bounces the stanza and
//! stratus delivers it itself. Every subscriber gets every item exactly once, and never learns
//! who the other subscribers are (the addresses are `bcc`, XEP-0033 section 4.6.3).

mod common;

use common::*;
use stratus::client::Client;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const ADDRESS: &str = "http://jabber.org/protocol/address";

async fn subscribe(c: &mut Client, svc: &str, node: &str) {
    let jid = c.jid().to_string();
    let r = c
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", PS).child(
                Element::new("subscribe", PS)
                    .attr("node", node)
                    .attr("jid", jid),
            ),
        ))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
}

async fn publish(c: &mut Client, svc: &str, node: &str, id: &str) {
    let r = c.iq(iq("set", svc, publish_item(node, id))).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
}

/// Collects `want` events per subscriber (failing on a duplicate or an exposed address list);
/// returns each subscriber's item ids in arrival order.
async fn collect(subs: &mut [Client], svc: &str, want: usize) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for c in subs.iter_mut() {
        let mut ids: Vec<String> = Vec::new();
        while ids.len() < want {
            let m = c
                .wait_for(T, |e| e.name() == "message" && event_item_id(e).is_some())
                .await
                .unwrap_or_else(|e| panic!("{} got {ids:?}, then: {e}", c.jid()));
            assert_eq!(m.get_attr("from"), Some(svc), "{m}");
            assert_eq!(m.get_attr("type"), Some("headline"), "{m}");
            assert_eq!(m.get_attr("to"), Some(c.jid().to_string().as_str()), "{m}");
            // bcc addresses are removed by the service; nothing names the other subscribers.
            let addresses = m.get_child("addresses", ADDRESS);
            assert!(
                addresses.is_none_or(|a| a.children().next().is_none()),
                "addresses exposed: {m}"
            );
            ids.push(event_item_id(&m).unwrap().to_owned());
        }
        // Nothing more: every item arrived once.
        let extra = c
            .wait_for(std::time::Duration::from_millis(500), |e| {
                e.name() == "message" && event_item_id(e).is_some()
            })
            .await;
        assert!(extra.is_err(), "a duplicate notification: {extra:?}");
        all.push(ids);
    }
    all
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Starts stratus on `domain` (a leased one when None) with three subscribers and a publisher;
/// publishes one item before discovery finished (sent one by one), then `rest` after `ready`
/// appeared in the log. Returns each subscriber's item ids, the ids published, and the log.
async fn scenario(
    kind: Kind,
    domain: Option<&str>,
    ready: &str,
    rest: usize,
) -> (Vec<Vec<String>>, Vec<String>, String) {
    let server = shared(kind);
    let lease = domain.is_none().then(|| lease_domain(server));
    let svc = domain.map_or_else(|| lease.as_ref().unwrap().domain.clone(), str::to_owned);
    let mut stratus = Stratus::start(server, &svc);
    let mut owner = new_user(server, "mco").await;
    create_keeping_all(&mut owner, &svc, "mc").await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut c = new_user(server, "mcs").await;
        subscribe(&mut c, &svc, "mc").await;
        subs.push(c);
    }
    // The first notification for several subscribers at localhost starts discovery.
    publish(&mut owner, &svc, "mc", "i0").await;
    stratus.wait_log(ready, 1, T);
    let mut ids = vec!["i0".to_owned()];
    for i in 1..=rest {
        let id = format!("i{i}");
        publish(&mut owner, &svc, "mc", &id).await;
        ids.push(id);
    }
    let got = collect(&mut subs, &svc, ids.len()).await;
    for c in subs {
        c.close().await;
    }
    let log = stratus.log_text();
    log_has_no_panic(&log);
    (got, ids, log)
}

/// XEP-0033 section 2.2: the multicast service is found among the server's disco items; the
/// notifications after discovery go to it as one stanza and arrive once each, in order.
#[tokio::test]
async fn ejabberd_fans_out_through_mod_multicast() {
    let ready = "through its multicast service multicast.localhost";
    let (got, ids, log) = scenario(Kind::Ejabberd, None, ready, 5).await;
    for g in got {
        assert_eq!(g, ids);
    }
    // The five later notifications each went out as one stanza for the three subscribers.
    let through = log
        .lines()
        .filter(|l| l.contains("to 3 subscribers at localhost through multicast.localhost"))
        .count();
    assert_eq!(through, 5, "{log}");
}

/// Prosody has no XEP-0033 service: discovery says so and every subscriber gets its own message.
#[tokio::test]
async fn prosody_without_multicast_gets_one_message_each() {
    let ready = "localhost has no multicast service";
    let (got, ids, log) = scenario(Kind::Prosody, None, ready, 3).await;
    for g in got {
        assert_eq!(g, ids);
    }
    assert!(!log.contains(" through multicast"), "{log}");
}

/// XEP-0033 section 8: the service refuses (ejabberd's access rule denies nomulticast.localhost)
/// and bounces each stanza with its addresses; stratus resends every bounced notification to each
/// subscriber itself and stops using the service. Nothing is lost or doubled (the order of a
/// bounced notification and a later direct one may differ while the first refusal travels).
#[tokio::test]
async fn refused_multicast_is_delivered_one_by_one() {
    let ready = "through its multicast service multicast.localhost";
    let (got, ids, log) = scenario(Kind::Ejabberd, Some("nomulticast.localhost"), ready, 6).await;
    for g in got {
        assert_eq!(sorted(g), sorted(ids.clone()));
    }
    assert!(
        log.contains("multicast service multicast.localhost refused a notification (forbidden)"),
        "{log}"
    );
}
