//! XEP-0033 multicast of notifications through real servers: ejabberd's mod_multicast fans out
//! one stanza per publish; Prosody has no multicast service and gets one message per subscriber,
//! unless it loads the project's module (contrib/prosody, contrib/ejabberd), which makes the
//! domain itself the service; a multicast service that refuses (ejabberd, for
//! nomulticast.localhost) bounces the stanza and stratus delivers it itself. Every subscriber
//! gets every item exactly once, and never learns who the other subscribers are (the addresses
//! are `bcc`, XEP-0033 section 4.6.3).

mod common;

use common::*;
use stratus::client::{Client, NS_CLIENT};
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
/// stratus discovers the server's multicast service on connecting (`ready` in its log) and
/// `count` items are published. Returns each subscriber's item ids, the ids published, and the
/// log.
async fn scenario(
    server: &Server,
    domain: Option<&str>,
    ready: &str,
    count: usize,
) -> (Vec<Vec<String>>, Vec<String>, String) {
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
    // Discovery of localhost (the domain stratus's own domain is under) started on connecting,
    // before any notification.
    stratus.wait_log(ready, 1, T);
    let mut ids = Vec::new();
    for i in 0..count {
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

/// XEP-0033 section 2.2: the multicast service is found among the server's disco items, as
/// soon as stratus connects; every notification goes to it as one stanza and arrives once
/// each, in order.
#[tokio::test]
async fn ejabberd_fans_out_through_mod_multicast() {
    let ready = "through its multicast service multicast.localhost";
    let (got, ids, log) = scenario(shared(Kind::Ejabberd), None, ready, 6).await;
    for g in got {
        assert_eq!(g, ids);
    }
    // Each notification went out as one stanza for the three subscribers, the first one too.
    let through = log
        .lines()
        .filter(|l| l.contains("to 3 subscribers at localhost through multicast.localhost"))
        .count();
    assert_eq!(through, 6, "{log}");
}

/// Prosody has no XEP-0033 service: discovery says so and every subscriber gets its own message.
#[tokio::test]
async fn prosody_without_multicast_gets_one_message_each() {
    let ready = "localhost has no multicast service";
    let (got, ids, log) = scenario(shared(Kind::Prosody), None, ready, 4).await;
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
    let (got, ids, log) = scenario(
        shared(Kind::Ejabberd),
        Some("nomulticast.localhost"),
        ready,
        6,
    )
    .await;
    for g in got {
        assert_eq!(sorted(g), sorted(ids.clone()));
    }
    assert!(
        log.contains("multicast service multicast.localhost refused a notification (forbidden)"),
        "{log}"
    );
}

/// With the project's module (contrib/prosody/mod_stratus_multicast.lua,
/// contrib/ejabberd/mod_stratus_multicast.erl), the server's domain is its own multicast service
/// (XEP-0033 section 2.1, found on the domain's disco#info with its limit): every notification
/// goes to it as one stanza and every subscriber gets each item once, in order, without the
/// address list (section 4.6.3).
async fn module_fans_out_one_stanza_per_publish(kind: Kind) {
    let server = Server::start_private_multicast(kind);
    let ready = "through its multicast service localhost (XEP-0033, up to 99 addresses";
    let (got, ids, log) = scenario(&server, None, ready, 6).await;
    for g in got {
        assert_eq!(g, ids);
    }
    let through = log
        .lines()
        .filter(|l| l.contains("to 3 subscribers at localhost through localhost"))
        .count();
    assert_eq!(through, 6, "{log}");
    server.stop();
}

#[tokio::test]
async fn prosody_with_the_module_fans_out_one_stanza_per_publish() {
    module_fans_out_one_stanza_per_publish(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_with_the_module_fans_out_one_stanza_per_publish() {
    module_fans_out_one_stanza_per_publish(Kind::Ejabberd).await;
}

/// XEP-0033 section 8 through the project's Prosody module: `multicast_senders` leaves this
/// component out, so the module refuses every stanza whole (`forbidden`). Nothing is lost or
/// doubled: stratus resends each refused notification to every subscriber from the copy it kept
/// (issue 18), and goes one by one after the first refusal.
#[tokio::test]
async fn prosody_module_refusing_whole_stanzas_loses_nothing() {
    let server = Server::start_private_multicast(Kind::Prosody);
    let ready = "through its multicast service localhost (XEP-0033, up to 99 addresses";
    let (got, ids, log) = scenario(&server, Some("nomulticast.localhost"), ready, 6).await;
    for g in got {
        assert_eq!(sorted(g), sorted(ids.clone()));
    }
    assert!(
        log.contains("multicast service localhost refused a notification (forbidden)"),
        "{log}"
    );
    server.stop();
}

fn multicast(from: &str, id: &str, addresses: &[(&str, &str)], extra: &str) -> String {
    let list: String = addresses
        .iter()
        .map(|(kind, jid)| format!("<address type='{kind}' jid='{jid}'{extra}/>"))
        .collect();
    format!(
        "<message from='{from}' to='localhost' id='{id}' type='headline'><body>{id}</body>\
         <addresses xmlns='{ADDRESS}'>{list}</addresses></message>"
    )
}

/// Waits for the error answer to stanza `id`; returns its condition and the addresses it
/// refuses (XEP-0033 section 8: listed, so that the sender can deliver them another way).
async fn refusal(c: &mut RawComponent, id: &str) -> (String, Vec<String>) {
    let e = c.reply(id).await;
    assert_eq!(e.get_attr("type"), Some("error"), "{e}");
    let listed = e
        .get_child("addresses", ADDRESS)
        .map(|a| {
            a.children()
                .filter_map(|x| x.get_attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (error_condition(&e).unwrap_or_default(), listed)
}

async fn body_for(c: &mut Client, id: &str) -> Element {
    c.wait_for(T, |e| e.get_attr("id") == Some(id))
        .await
        .unwrap_or_else(|_| panic!("{id} was not delivered"))
}

async fn nothing_for(c: &mut Client, what: &str) {
    let got = c
        .wait_for(std::time::Duration::from_millis(700), |e| {
            e.name() == "message" && e.get_child("body", NS_CLIENT).is_some()
        })
        .await;
    assert!(got.is_err(), "{what}: {got:?}");
}

/// The module's rules, with the conditions of XEP-0033 section 8: a sender that may not use the
/// service (a user) gets `forbidden` and a stanza over the limit `not-acceptable`, refused whole
/// with every address listed; an address it cannot deliver (another domain: `forbidden`; not a
/// JID: `jid-malformed`) is refused alone, listed in the error, and every other address gets its
/// copy (issue 18: one bad address must not cost 98 subscribers their notification). A
/// delivered copy carries the to/cc addresses marked delivered='true' and no bcc (steps 6 to 8),
/// and an address already marked delivered is not delivered again.
async fn module_follows_xep_0033_rules(kind: Kind) {
    let server = Server::start_private_multicast(kind);
    let mut comp = RawComponent::connect(&server, "pubsub.localhost").await;
    let mut a = new_user(&server, "mra").await;
    let mut b = new_user(&server, "mrb").await;
    let mut user = new_user(&server, "mru").await;
    let (ja, jb) = (a.jid().to_string(), b.jid().to_string());

    // Section 2.1: the domain advertises the feature and its limit (XEP-0128 form).
    comp.send(
        "<iq type='get' id='d1' from='pubsub.localhost' to='localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let info = comp.reply("d1").await;
    let limit = stratus::xmpp::multicast::multicast_limit(info.children().next().unwrap());
    assert_eq!(limit, Some(99), "{info}");

    // Another domain among the addresses: that address alone is refused, a gets its copy.
    comp.send(&multicast(
        "pubsub.localhost",
        "m1",
        &[("bcc", &ja), ("bcc", "someone@example.net")],
        "",
    ))
    .await;
    assert_eq!(
        refusal(&mut comp, "m1").await,
        ("forbidden".into(), vec!["someone@example.net".into()])
    );
    body_for(&mut a, "m1").await;
    // Over the limit: refused whole, every address listed.
    let many: Vec<String> = (0..100).map(|i| format!("u{i}@localhost")).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|j| ("bcc", j.as_str())).collect();
    comp.send(&multicast("pubsub.localhost", "m2", &many, ""))
        .await;
    let (condition, listed) = refusal(&mut comp, "m2").await;
    assert_eq!(condition, "not-acceptable");
    assert_eq!(listed.len(), 100);
    // A malformed address among valid ones.
    comp.send(&multicast(
        "pubsub.localhost",
        "m3",
        &[("bcc", &ja), ("bcc", "a b@localhost"), ("bcc", &jb)],
        "",
    ))
    .await;
    assert_eq!(
        refusal(&mut comp, "m3").await,
        ("jid-malformed".into(), vec!["a b@localhost".into()])
    );
    body_for(&mut a, "m3").await;
    body_for(&mut b, "m3").await;
    // A user is not a trusted sender.
    let from_user = Element::new("message", NS_CLIENT)
        .attr("to", "localhost")
        .attr("id", "m4")
        .child(Element::new("body", NS_CLIENT).text("m4"))
        .child(
            Element::new("addresses", ADDRESS).child(
                Element::new("address", ADDRESS)
                    .attr("type", "bcc")
                    .attr("jid", jb.clone()),
            ),
        );
    user.send(&from_user).await.unwrap();
    let e = user
        .wait_for(T, |e| e.get_attr("id") == Some("m4"))
        .await
        .unwrap();
    assert_eq!(error_condition(&e).as_deref(), Some("forbidden"), "{e}");
    // Already delivered: nobody gets it.
    comp.send(&multicast(
        "pubsub.localhost",
        "m5",
        &[("to", &ja), ("cc", &jb)],
        " delivered='true'",
    ))
    .await;
    nothing_for(&mut a, "refused or already delivered stanzas reached a").await;
    nothing_for(&mut b, "refused or already delivered stanzas reached b").await;

    // Delivered: a is 'to', b is 'bcc'; both see a's address marked delivered, never b's.
    comp.send(&multicast(
        "pubsub.localhost",
        "m6",
        &[("to", &ja), ("bcc", &jb)],
        "",
    ))
    .await;
    for (c, me) in [(&mut a, &ja), (&mut b, &jb)] {
        let m = c
            .wait_for(T, |e| e.get_attr("id") == Some("m6"))
            .await
            .unwrap();
        assert_eq!(m.get_attr("to"), Some(me.as_str()), "{m}");
        assert_eq!(m.get_attr("from"), Some("pubsub.localhost"), "{m}");
        let list: Vec<(Option<&str>, Option<&str>, Option<&str>)> = m
            .get_child("addresses", ADDRESS)
            .expect("the to address is kept")
            .children()
            .map(|x| {
                (
                    x.get_attr("type"),
                    x.get_attr("jid"),
                    x.get_attr("delivered"),
                )
            })
            .collect();
        assert_eq!(
            list,
            vec![(Some("to"), Some(ja.as_str()), Some("true"))],
            "{m}"
        );
        nothing_for(c, "a second copy").await;
    }
    server.stop();
}

#[tokio::test]
async fn prosody_module_follows_xep_0033_rules() {
    module_follows_xep_0033_rules(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_module_follows_xep_0033_rules() {
    module_follows_xep_0033_rules(Kind::Ejabberd).await;
}

/// Issue 18, the ejabberd module's senders: by default only the external components of the
/// server's ejabberd_service listeners, not its other services. XEP-0033 section 2.1: the
/// feature and the limit form are shown to those who may use the service and to no one else
/// (a user sees neither); a message with addresses from one of the server's own services
/// (multicast.localhost, routed by ejabberd itself, as MUC or upload would be) is refused:
/// nobody gets a copy.
#[tokio::test]
async fn ejabberd_module_serves_only_its_components() {
    let server = Server::start_private_multicast(Kind::Ejabberd);
    let mut comp = RawComponent::connect(&server, "pubsub.localhost").await;
    let mut user = new_user(&server, "msu").await;
    let mut b = new_user(&server, "msb").await;
    let jb = b.jid().to_string();

    let disco = || Element::new("query", "http://jabber.org/protocol/disco#info");
    let seen = user.iq(iq("get", "localhost", disco())).await.unwrap();
    let query = seen.children().next().expect("a disco#info answer");
    assert!(
        !query
            .children()
            .any(|f| f.name() == "feature" && f.get_attr("var") == Some(ADDRESS)),
        "a user is shown the multicast feature: {seen}"
    );
    assert!(
        !query.children().any(|x| x.name() == "x"
            && x.children().any(|f| f.get_attr("var") == Some("FORM_TYPE")
                && f.children().any(|v| v.text_content() == ADDRESS))),
        "a user is shown the limit form (XEP-0128, FORM_TYPE {ADDRESS}): {seen}"
    );
    comp.send(
        "<iq type='get' id='d1' from='pubsub.localhost' to='localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let info = comp.reply("d1").await;
    let query = info.children().next().unwrap();
    assert!(
        query
            .children()
            .any(|f| f.name() == "feature" && f.get_attr("var") == Some(ADDRESS)),
        "{info}"
    );
    assert_eq!(stratus::xmpp::multicast::multicast_limit(query), Some(99));

    // Another of the server's own services (a route ejabberd serves itself, as it does MUC or
    // upload: here the evaluating process registers svc.localhost) asks the module to fan out
    // to b: refused with forbidden, to that service. The module runs in the routing process,
    // so a copy, had there been one, would be queued for b ahead of the component's message
    // that follows.
    let forged = multicast("svc.localhost", "f1", &[("bcc", &jb)], "")
        .replace("<message ", "<message xmlns='jabber:client' ");
    let answer = server.eval(&format!(
        "ejabberd_router:register_route(<<\"svc.localhost\">>, <<\"localhost\">>), \
         ejabberd_router:route(xmpp:decode(fxml_stream:parse_element(<<\"{}\">>))), \
         receive {{route, P}} -> fxml:element_to_binary(xmpp:encode(P)) \
         after 5000 -> no_answer end.",
        forged.replace('"', "\\\"")
    ));
    let answer = answer.trim_start_matches("<<\"").trim_end_matches("\">>");
    let answer = stratus::xml::parse_element(answer, stratus::xml::Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(answer.get_attr("type"), Some("error"), "{answer}");
    assert_eq!(
        error_condition(&answer).as_deref(),
        Some("forbidden"),
        "{answer}"
    );
    comp.send(&multicast("pubsub.localhost", "f2", &[("bcc", &jb)], ""))
        .await;
    let first = b
        .wait_for(T, |e| {
            e.name() == "message" && e.get_child("body", NS_CLIENT).is_some()
        })
        .await
        .unwrap();
    assert_eq!(first.get_attr("id"), Some("f2"), "{first}");
    server.stop();
}

/// More subscribers at one server than the service's limit (99 with the modules; XEP-0033
/// section 8): each notification goes out as several stanzas of at most 99 addresses, and all
/// 120 subscribers get each of the items once (stratus-load counts per item and subscriber).
async fn more_subscribers_than_the_limit(kind: Kind) {
    let server = Server::start_private_multicast(kind);
    let lease = lease_domain(&server);
    let mut stratus = Stratus::start(&server, &lease.domain);
    stratus.wait_log("through its multicast service localhost", 1, T);
    let report = tempfile::NamedTempFile::new().unwrap();
    let args = [
        "--service",
        &lease.domain,
        "--node",
        "many",
        "--prefix",
        &unique("mcl"),
    ]
    .into_iter()
    .chain(["-N", "120", "-W", "1", "-M", "3", "--drain", "10", "--json"])
    .map(str::to_owned)
    .chain([report.path().display().to_string()])
    .collect();
    let o = stratus_load(&server, args).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert_eq!(r["notifications_expected"], 360, "{r}");
    assert_eq!(r["notifications_received"], 360, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    let log = stratus.log_text();
    for size in [99, 21] {
        let n = log
            .lines()
            .filter(|l| {
                l.contains(&format!(
                    "to {size} subscribers at localhost through localhost"
                ))
            })
            .count();
        assert_eq!(n, 3, "stanzas of {size} addresses\n{log}");
    }
    server.stop();
}

#[tokio::test]
async fn prosody_module_splits_at_its_limit() {
    more_subscribers_than_the_limit(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_module_splits_at_its_limit() {
    more_subscribers_than_the_limit(Kind::Ejabberd).await;
}
