//! XEP-0060 use cases on the stanza layer in this process (the real dispatcher, the memory store,
//! no server), each citing its section: milliseconds each. The same cases through real Prosody and
//! ejabberd are in tests/pubsub/, for what the servers take part in.

mod common;

use common::InProcess;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

const ALICE: &str = "alice@localhost/r";
const BOB: &str = "bob@localhost/r";
const CAROL: &str = "carol@localhost/r";

/// An IQ to the service in the component namespace.
fn iq(id: &str, kind: &str, from: &str, payload: &str) -> String {
    format!(
        "<iq xmlns='jabber:component:accept' type='{kind}' id='{id}' from='{from}' to='pubsub.localhost'>{payload}</iq>"
    )
}

fn ps(inner: &str) -> String {
    format!("<pubsub xmlns='{PS}'>{inner}</pubsub>")
}

fn owner(inner: &str) -> String {
    format!("<pubsub xmlns='{OWNER}'>{inner}</pubsub>")
}

fn answer<'a>(out: &'a [Element], id: &str) -> &'a Element {
    out.iter()
        .find(|s| s.name() == "iq" && s.get_attr("id") == Some(id))
        .unwrap_or_else(|| panic!("no answer to {id}: {out:?}"))
}

fn ok(out: &[Element], id: &str) -> Element {
    let a = answer(out, id);
    assert_eq!(a.get_attr("type"), Some("result"), "{a}");
    a.clone()
}

/// The defined condition and the pubsub#errors condition of an error answer.
fn error(out: &[Element], id: &str) -> (String, Option<String>) {
    let a = answer(out, id);
    assert_eq!(a.get_attr("type"), Some("error"), "{a}");
    let e = a.children().find(|c| c.name() == "error").unwrap();
    let cond = e
        .children()
        .find(|c| c.ns() == STANZAS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap();
    let app = e
        .children()
        .find(|c| c.ns() == ERRORS)
        .map(|c| c.name().to_owned());
    (cond, app)
}

/// The events written to `to`.
fn events<'a>(out: &'a [Element], to: &str) -> Vec<&'a Element> {
    out.iter()
        .filter(|s| s.name() == "message" && s.get_attr("to") == Some(to))
        .filter_map(|m| m.get_child("event", EVENT))
        .collect()
}

/// Alice creates `node` (open, defaults) and bob subscribes.
async fn with_node(node: &str) -> InProcess {
    let s = InProcess::new(&["localhost"]);
    let out = s
        .run(&[
            iq("c", "set", ALICE, &ps(&format!("<create node='{node}'/>"))),
            iq(
                "s",
                "set",
                BOB,
                &ps(&format!("<subscribe node='{node}' jid='{BOB}'/>")),
            ),
        ])
        .await;
    ok(&out, "c");
    let sub = ok(&out, "s");
    let s_el = sub
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("subscription", PS))
        .unwrap();
    assert_eq!(s_el.get_attr("subscription"), Some("subscribed"));
    s
}

#[tokio::test]
async fn s8_1_create_conflict_and_instant_node() {
    let s = InProcess::new(&["localhost"]);
    let out = s
        .run(&[
            iq("a", "set", ALICE, &ps("<create node='n'/>")),
            // 8.1: the NodeID exists already (conflict).
            iq("b", "set", BOB, &ps("<create node='n'/>")),
            // 8.1: an instant node, its generated NodeID in the answer.
            iq("c", "set", ALICE, &ps("<create/>")),
        ])
        .await;
    ok(&out, "a");
    assert_eq!(error(&out, "b").0, "conflict");
    let instant = ok(&out, "c");
    let name = instant
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("create", PS))
        .and_then(|c| c.get_attr("node"))
        .unwrap();
    assert!(!name.is_empty());
}

#[tokio::test]
async fn s7_1_publish_notifies_with_payload_and_s6_5_retrieves() {
    let s = with_node("n").await;
    let out = s
        .run(&[
            iq(
                "p",
                "set",
                ALICE,
                &ps("<publish node='n'><item id='i1'><entry xmlns='urn:example'>one</entry></item></publish>"),
            ),
            iq(
                "p2",
                "set",
                ALICE,
                &ps("<publish node='n'><item id='i2'><entry xmlns='urn:example'>two</entry></item></publish>"),
            ),
            // 6.5.7: the newest one.
            iq("m", "get", BOB, &ps("<items node='n' max_items='1'/>")),
            // 6.5.8: by id.
            iq("i", "get", BOB, &ps("<items node='n'><item id='i1'/></items>")),
            // 7.1.3.1: bob is not a publisher of a publishers-model node.
            iq(
                "f",
                "set",
                BOB,
                &ps("<publish node='n'><item><entry xmlns='urn:example'/></item></publish>"),
            ),
        ])
        .await;
    let published = ok(&out, "p");
    let id = published
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("publish", PS))
        .and_then(|p| p.get_child("item", PS))
        .and_then(|i| i.get_attr("id"));
    assert_eq!(id, Some("i1"));
    // 7.1.2.1: the event with the payload, to the subscriber.
    let evs = events(&out, BOB);
    assert_eq!(evs.len(), 2, "{out:?}");
    let item = evs[0]
        .get_child("items", EVENT)
        .and_then(|i| i.get_child("item", EVENT))
        .unwrap();
    assert_eq!(item.get_attr("id"), Some("i1"));
    assert_eq!(
        item.get_child("entry", "urn:example")
            .map(|e| e.text_content())
            .as_deref(),
        Some("one")
    );
    let ids = |id: &str| -> Vec<String> {
        answer(&out, id)
            .get_child("pubsub", PS)
            .and_then(|p| p.get_child("items", PS))
            .map(|i| {
                i.children()
                    .filter_map(|c| c.get_attr("id").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids("m"), ["i2"]);
    assert_eq!(ids("i"), ["i1"]);
    assert_eq!(error(&out, "f").0, "forbidden");
}

#[tokio::test]
async fn s7_2_retract_s8_5_purge_s8_4_delete_notify() {
    let s = with_node("n").await;
    let config = "<configure node='n'><x xmlns='jabber:x:data' type='submit'>\
                  <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
                  <field var='pubsub#notify_retract'><value>1</value></field>\
                  <field var='pubsub#notify_delete'><value>1</value></field></x></configure>";
    let out = s
        .run(&[
            iq("cfg", "set", ALICE, &owner(config)),
            iq(
                "p",
                "set",
                ALICE,
                &ps("<publish node='n'><item id='i1'><e xmlns='u'/></item></publish>"),
            ),
            iq(
                "r",
                "set",
                ALICE,
                &ps("<retract node='n' notify='true'><item id='i1'/></retract>"),
            ),
            // 7.2: no such item.
            iq(
                "r2",
                "set",
                ALICE,
                &ps("<retract node='n'><item id='nope'/></retract>"),
            ),
            iq("pg", "set", ALICE, &owner("<purge node='n'/>")),
            iq(
                "d",
                "set",
                ALICE,
                &owner("<delete node='n'><redirect uri='xmpp:pubsub.localhost?;node=m'/></delete>"),
            ),
            // 8.4: the node is gone.
            iq("d2", "set", ALICE, &owner("<delete node='n'/>")),
        ])
        .await;
    for id in ["cfg", "p", "r", "pg", "d"] {
        ok(&out, id);
    }
    assert_eq!(error(&out, "r2").0, "item-not-found");
    assert_eq!(error(&out, "d2").0, "item-not-found");
    let evs = events(&out, BOB);
    let kinds: Vec<&str> = evs
        .iter()
        .filter_map(|e| e.children().next().map(|c| c.name()))
        .collect();
    // configuration (notify_config is off by default, so none), items, retract, purge, delete.
    assert_eq!(kinds, ["items", "items", "purge", "delete"], "{out:?}");
    let retract = evs[1]
        .get_child("items", EVENT)
        .and_then(|i| i.get_child("retract", EVENT));
    assert_eq!(retract.and_then(|r| r.get_attr("id")), Some("i1"));
    let redirect = evs[3]
        .get_child("delete", EVENT)
        .and_then(|d| d.get_child("redirect", EVENT))
        .and_then(|r| r.get_attr("uri"));
    assert_eq!(redirect, Some("xmpp:pubsub.localhost?;node=m"));
}

#[tokio::test]
async fn s6_2_unsubscribe_and_s6_1_3_closed_node() {
    let s = with_node("n").await;
    let whitelist = "<configure node='n'><x xmlns='jabber:x:data' type='submit'>\
                     <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
                     <field var='pubsub#access_model'><value>whitelist</value></field></x></configure>";
    let out = s
        .run(&[
            iq(
                "u",
                "set",
                BOB,
                &ps(&format!("<unsubscribe node='n' jid='{BOB}'/>")),
            ),
            // 6.2.3.2: no subscription.
            iq(
                "u2",
                "set",
                BOB,
                &ps(&format!("<unsubscribe node='n' jid='{BOB}'/>")),
            ),
            // 6.1.3.1: subscribing another JID.
            iq(
                "x",
                "set",
                CAROL,
                &ps(&format!("<subscribe node='n' jid='{BOB}'/>")),
            ),
            iq("w", "set", ALICE, &owner(whitelist)),
            // 6.1.3.6: a whitelist node refuses who is not on the list.
            iq(
                "c",
                "set",
                CAROL,
                &ps(&format!("<subscribe node='n' jid='{CAROL}'/>")),
            ),
        ])
        .await;
    ok(&out, "u");
    assert_eq!(
        error(&out, "u2"),
        ("unexpected-request".into(), Some("not-subscribed".into()))
    );
    assert_eq!(
        error(&out, "x"),
        ("bad-request".into(), Some("invalid-jid".into()))
    );
    ok(&out, "w");
    assert_eq!(
        error(&out, "c"),
        ("not-allowed".into(), Some("closed-node".into()))
    );
}

#[tokio::test]
async fn s8_9_outcast_loses_its_subscription_and_gets_nothing() {
    let s = with_node("n").await;
    let outcast = "<affiliations node='n'><affiliation jid='bob@localhost' affiliation='outcast'/></affiliations>";
    let out = s
        .run(&[
            iq("o", "set", ALICE, &owner(outcast)),
            iq(
                "p",
                "set",
                ALICE,
                &ps("<publish node='n'><item id='i1'><e xmlns='u'/></item></publish>"),
            ),
            // 4.1 Table 4: an outcast retrieves nothing.
            iq("g", "get", BOB, &ps("<items node='n'/>")),
            iq("subs", "get", ALICE, &owner("<subscriptions node='n'/>")),
        ])
        .await;
    ok(&out, "o");
    ok(&out, "p");
    assert_eq!(error(&out, "g").0, "forbidden");
    assert!(
        events(&out, BOB)
            .iter()
            .all(|e| e.get_child("items", EVENT).is_none()),
        "{out:?}"
    );
    let subs = ok(&out, "subs");
    let listed = subs
        .get_child("pubsub", OWNER)
        .and_then(|p| p.get_child("subscriptions", OWNER))
        .map(|s| s.children().count())
        .unwrap();
    assert_eq!(listed, 0, "{subs}");
}

/// 6.5.4: an items answer past `max_page_bytes` (256 KiB) returns some items and says so with an
/// RSM set (XEP-0059); 5.5: node discovery lists every item id, whatever the payloads weigh.
#[tokio::test]
async fn s6_5_4_a_cut_page_says_so_and_s5_5_lists_every_id() {
    let s = with_node("n").await;
    let big = |id: &str| {
        iq(
            id,
            "set",
            ALICE,
            &ps(&format!(
                "<publish node='n'><item id='{id}'><e xmlns='u'>{}</e></item></publish>",
                "x".repeat(200 * 1024)
            )),
        )
    };
    let out = s
        .run(&[
            big("b1"),
            big("b2"),
            iq("all", "get", BOB, &ps("<items node='n'/>")),
            iq(
                "d",
                "get",
                BOB,
                "<query xmlns='http://jabber.org/protocol/disco#items' node='n'/>",
            ),
        ])
        .await;
    ok(&out, "b1");
    ok(&out, "b2");
    let page = ok(&out, "all");
    let p = page.get_child("pubsub", PS).unwrap();
    let returned = p.get_child("items", PS).unwrap().children().count();
    assert_eq!(returned, 1, "two 200 KiB items do not fit in 256 KiB");
    let set = p
        .get_child("set", "http://jabber.org/protocol/rsm")
        .expect("a cut page carries an RSM set");
    assert_eq!(
        set.get_child("count", "http://jabber.org/protocol/rsm")
            .map(|c| c.text_content())
            .as_deref(),
        Some("2")
    );
    let listed = ok(&out, "d")
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children()
        .count();
    assert_eq!(listed, 2);
}

fn publish_options(fields: &[(&str, &str)]) -> String {
    let mut x = String::from(
        "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>",
    );
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x + "</x></publish-options>"
}

/// 7.1.5: publish-options are preconditions on the node's configuration: met, the item is
/// published; not met (another value, a value the service cannot hold, a field it does not
/// know), `conflict` with `precondition-not-met` and nothing is published.
#[tokio::test]
async fn s7_1_5_publish_options_are_preconditions() {
    let s = with_node("pre").await;
    let publish = |id: &str, opts: &[(&str, &str)]| {
        iq(
            id,
            "set",
            ALICE,
            &ps(&format!(
                "<publish node='pre'><item id='{id}'><x xmlns='urn:example'/></item></publish>{}",
                publish_options(opts)
            )),
        )
    };
    let out = s
        .run(&[
            publish("met", &[("pubsub#access_model", "open")]),
            publish("other", &[("pubsub#access_model", "whitelist")]),
            publish("bogus", &[("pubsub#access_model", "bogus")]),
            publish("unknown", &[("pubsub#frobnicate", "1")]),
            iq("get", "get", BOB, &ps("<items node='pre'/>")),
        ])
        .await;
    ok(&out, "met");
    for id in ["other", "bogus", "unknown"] {
        assert_eq!(
            error(&out, id),
            ("conflict".into(), Some("precondition-not-met".into())),
            "{id}"
        );
    }
    let items = ok(&out, "get");
    let ids: Vec<&str> = items
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("items", PS))
        .unwrap()
        .children()
        .filter_map(|i| i.get_attr("id"))
        .collect();
    assert_eq!(ids, vec!["met"]);
    assert_eq!(events(&out, BOB).len(), 1);
}

/// 4.2/4.3: NodeIDs and ItemIDs are opaque but bounded (they are storage keys): an empty
/// NodeID is `nodeid-required` (7.1.3.3 and 8.1); an oversized one is a bad request, not a
/// storage error; 8.2.6: a cancelled configuration changes nothing.
#[tokio::test]
async fn s4_2_names_are_checked_at_the_boundary_and_s8_2_6_cancel() {
    let s = with_node("names").await;
    let long = "n".repeat(5000);
    let out = s
        .run(&[
            iq("empty", "set", ALICE, &ps("<publish node=''><item/></publish>")),
            iq(
                "long",
                "set",
                ALICE,
                &ps(&format!("<create node='{long}'/>")),
            ),
            iq(
                "longid",
                "set",
                ALICE,
                &ps(&format!(
                    "<publish node='names'><item id='{long}'><x xmlns='urn:example'/></item></publish>"
                )),
            ),
            iq(
                "cancel",
                "set",
                ALICE,
                &owner(
                    "<configure node='names'><x xmlns='jabber:x:data' type='cancel'/></configure>",
                ),
            ),
            iq("cfg", "get", ALICE, &owner("<configure node='names'/>")),
        ])
        .await;
    assert_eq!(
        error(&out, "empty"),
        ("bad-request".into(), Some("nodeid-required".into()))
    );
    assert_eq!(error(&out, "long").0, "bad-request");
    assert_eq!(error(&out, "longid").0, "bad-request");
    ok(&out, "cancel");
    let cfg = ok(&out, "cfg");
    let access = cfg
        .get_child("pubsub", OWNER)
        .and_then(|p| p.get_child("configure", OWNER))
        .and_then(|c| c.get_child("x", "jabber:x:data"))
        .and_then(|x| {
            x.children()
                .find(|f| f.get_attr("var") == Some("pubsub#access_model"))
        })
        .and_then(|f| f.get_child("value", "jabber:x:data"))
        .map(|v| v.text_content());
    assert_eq!(access.as_deref(), Some("open"), "{cfg}");
    assert!(events(&out, BOB).is_empty(), "nothing was published");
}

/// 7.1 with several items, bounded: past 32 items in one request the whole publish is refused
/// (RFC 6120 8.3.3.12 policy-violation, saying the bound) and nothing of it is stored or sent.
#[tokio::test]
async fn s7_1_a_publish_of_too_many_items_is_refused_whole() {
    let s = with_node("n").await;
    let items = |n: usize| -> String {
        (0..n)
            .map(|i| format!("<item id='i{i}'><entry xmlns='urn:example'>{i}</entry></item>"))
            .collect()
    };
    let out = s
        .run(&[
            iq(
                "big",
                "set",
                ALICE,
                &ps(&format!("<publish node='n'>{}</publish>", items(33))),
            ),
            iq("all", "get", BOB, &ps("<items node='n'/>")),
            iq(
                "ok",
                "set",
                ALICE,
                &ps(&format!("<publish node='n'>{}</publish>", items(32))),
            ),
        ])
        .await;
    assert_eq!(error(&out, "big").0, "policy-violation");
    let text = answer(&out, "big")
        .get_child("error", "jabber:component:accept")
        .and_then(|e| e.get_child("text", STANZAS))
        .map(|t| t.text_content())
        .unwrap_or_default();
    assert!(text.contains("32"), "{text}");
    let stored = answer(&out, "all")
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("items", PS))
        .map(|i| i.children().count());
    assert_eq!(stored, Some(0));
    ok(&out, "ok");
    // One event for the accepted request, with its 32 items (7.1.2.1).
    let evs = events(&out, BOB);
    assert_eq!(evs.len(), 1, "{out:?}");
    let n = evs[0]
        .get_child("items", EVENT)
        .map(|i| i.children().count());
    assert_eq!(n, Some(32));
}
