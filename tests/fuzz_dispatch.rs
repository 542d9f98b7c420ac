//! Structure-aware fuzzing of every stanza handler (issue 12): random sequences of IQs (XEP-0060
//! requests of every kind, owner requests, disco, ping, version, roster pushes, XEP-0355 delegated
//! requests), messages (privilege grants, approval forms, multicast bounces, anything) and
//! presences (with caps, unavailable), from local users, remote users, the server and garbage
//! senders, go through the real dispatcher on the memory store. Checked after every sequence:
//! nothing panicked, everything written is well-formed XML, an error or a result is never answered
//! (RFC 6120 8.3.1), and every IQ get/set with an id gets exactly one answer (RFC 6120 8.2.3).
//!
//! A short run is part of the test command; `STRATUS_PROPTEST_CASES=20000 cargo test --test
//! fuzz_dispatch` runs a long one.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use common::InProcess;
use proptest::prelude::*;
use stratus::component::NS_COMPONENT;
use stratus::xml::Element;

const DOMAIN: &str = "pubsub.localhost";
const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";

fn one_of(xs: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(xs).prop_map(str::to_owned)
}

fn node() -> impl Strategy<Value = String> {
    one_of(&["n1", "n2", "urn:xmpp:omemo:2:devices", "a&lt;b", ""])
}

fn jid() -> impl Strategy<Value = String> {
    one_of(&[
        "alice@localhost/r",
        "bob@localhost/phone",
        "alice@localhost",
        "localhost",
        "mallory@remote.example/x",
        "pubsub.localhost",
        "@@bad",
        "",
    ])
}

fn form(form_type: &str, fields: &[(String, String)]) -> String {
    let mut x = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
    );
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x.push_str("</x>");
    x
}

fn config_field() -> impl Strategy<Value = (String, String)> {
    (
        one_of(&[
            "pubsub#access_model",
            "pubsub#max_items",
            "pubsub#publish_model",
            "pubsub#deliver_payloads",
            "pubsub#notify_retract",
            "pubsub#send_last_published_item",
            "pubsub#roster_groups_allowed",
            "pubsub#item_expire",
            "pubsub#notification_type",
            "pubsub#bogus",
        ]),
        one_of(&[
            "open",
            "presence",
            "roster",
            "whitelist",
            "authorize",
            "1",
            "0",
            "max",
            "never",
            "on_sub_and_presence",
            "headline",
            "-5",
            "x",
        ]),
    )
}

/// A payload: a small generated tree in a namespace of its own, sometimes with a prefix.
fn payload() -> impl Strategy<Value = String> {
    (
        one_of(&["e", "device", "storage"]),
        one_of(&["urn:e", "urn:xmpp:omemo:2", "storage:bookmarks"]),
        "[a-z&<> ]{0,12}",
        any::<bool>(),
    )
        .prop_map(|(name, ns, text, prefixed)| {
            let text = text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            if prefixed {
                format!("<{name} xmlns='{ns}' xmlns:p='urn:p' p:a='1'>{text}<p:c/></{name}>")
            } else {
                format!("<{name} xmlns='{ns}'>{text}</{name}>")
            }
        })
}

/// The child of a pubsub IQ: every request of XEP-0060 sections 5 to 8.
fn pubsub_payload() -> impl Strategy<Value = String> {
    let item = || one_of(&["i1", "i2", "current", ""]);
    prop_oneof![
        node().prop_map(|n| format!("<pubsub xmlns='{PS}'><create node='{n}'/></pubsub>")),
        Just(format!("<pubsub xmlns='{PS}'><create/></pubsub>")),
        (node(), prop::collection::vec(config_field(), 0..3)).prop_map(|(n, f)| format!(
            "<pubsub xmlns='{PS}'><create node='{n}'/><configure>{}</configure></pubsub>",
            form("http://jabber.org/protocol/pubsub#node_config", &f)
        )),
        (node(), item(), payload(), prop::collection::vec(config_field(), 0..2)).prop_map(
            |(n, i, p, opts)| {
                let options = if opts.is_empty() {
                    String::new()
                } else {
                    format!(
                        "<publish-options>{}</publish-options>",
                        form("http://jabber.org/protocol/pubsub#publish-options", &opts)
                    )
                };
                format!("<pubsub xmlns='{PS}'><publish node='{n}'><item id='{i}'>{p}</item></publish>{options}</pubsub>")
            }
        ),
        (node(), item(), any::<bool>()).prop_map(|(n, i, notify)| format!(
            "<pubsub xmlns='{PS}'><retract node='{n}' notify='{notify}'><item id='{i}'/></retract></pubsub>"
        )),
        (node(), jid()).prop_map(|(n, j)| format!(
            "<pubsub xmlns='{PS}'><subscribe node='{n}' jid='{j}'/></pubsub>"
        )),
        (node(), jid()).prop_map(|(n, j)| format!(
            "<pubsub xmlns='{PS}'><unsubscribe node='{n}' jid='{j}'/></pubsub>"
        )),
        (node(), jid()).prop_map(|(n, j)| format!(
            "<pubsub xmlns='{PS}'><options node='{n}' jid='{j}'/></pubsub>"
        )),
        (node(), one_of(&["", "1", "x", "99999999999999999999"])).prop_map(|(n, m)| format!(
            "<pubsub xmlns='{PS}'><items node='{n}' max_items='{m}'/></pubsub>"
        )),
        (node(), one_of(&["<max>1</max>", "<after>i1</after>", "<before/>", "<index>2</index>", "<max>x</max>"]))
            .prop_map(|(n, set)| format!(
                "<pubsub xmlns='{PS}'><items node='{n}'/><set xmlns='http://jabber.org/protocol/rsm'>{set}</set></pubsub>"
            )),
        (node(), item()).prop_map(|(n, i)| format!(
            "<pubsub xmlns='{PS}'><items node='{n}'><item id='{i}'/></items></pubsub>"
        )),
        Just(format!("<pubsub xmlns='{PS}'><subscriptions/></pubsub>")),
        Just(format!("<pubsub xmlns='{PS}'><affiliations/></pubsub>")),
        node().prop_map(|n| format!("<pubsub xmlns='{OWNER}'><configure node='{n}'/></pubsub>")),
        (node(), prop::collection::vec(config_field(), 0..3)).prop_map(|(n, f)| format!(
            "<pubsub xmlns='{OWNER}'><configure node='{n}'>{}</configure></pubsub>",
            form("http://jabber.org/protocol/pubsub#node_config", &f)
        )),
        node().prop_map(|n| format!("<pubsub xmlns='{OWNER}'><delete node='{n}'/></pubsub>")),
        node().prop_map(|n| format!("<pubsub xmlns='{OWNER}'><purge node='{n}'/></pubsub>")),
        Just(format!("<pubsub xmlns='{OWNER}'><default/></pubsub>")),
        node().prop_map(|n| format!("<pubsub xmlns='{OWNER}'><subscriptions node='{n}'/></pubsub>")),
        (node(), jid(), one_of(&["owner", "publisher", "member", "none", "outcast", "bogus"]))
            .prop_map(|(n, j, a)| format!(
                "<pubsub xmlns='{OWNER}'><affiliations node='{n}'><affiliation jid='{j}' affiliation='{a}'/></affiliations></pubsub>"
            )),
        (node(), jid(), one_of(&["subscribed", "none", "pending", "x"])).prop_map(|(n, j, s)| format!(
            "<pubsub xmlns='{OWNER}'><subscriptions node='{n}'><subscription jid='{j}' subscription='{s}'/></subscriptions></pubsub>"
        )),
    ]
}

/// The child of any IQ.
fn iq_payload() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => pubsub_payload(),
        1 => node().prop_map(|n| format!("<query xmlns='http://jabber.org/protocol/disco#info' node='{n}'/>")),
        1 => node().prop_map(|n| format!("<query xmlns='http://jabber.org/protocol/disco#items' node='{n}'/>")),
        1 => Just("<ping xmlns='urn:xmpp:ping'/>".to_owned()),
        1 => Just("<query xmlns='jabber:iq:version'/>".to_owned()),
        1 => (jid(), one_of(&["both", "from", "none", "remove"])).prop_map(|(j, s)| format!(
            "<query xmlns='jabber:iq:roster'><item jid='{j}' subscription='{s}'/></query>"
        )),
        2 => (one_of(&["get", "set", "result"]), jid(), jid(), pubsub_payload()).prop_map(|(t, from, to, p)| format!(
            "<delegation xmlns='urn:xmpp:delegation:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <iq xmlns='jabber:client' type='{t}' id='inner' from='{from}' to='{to}'>{p}</iq></forwarded></delegation>"
        )),
        1 => payload(),
        1 => Just(String::new()),
    ]
}

fn message_payload() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/><perm access='message' type='outgoing'/><perm access='presence' type='roster'/></privilege>".to_owned()),
        (node(), jid(), any::<bool>()).prop_map(|(n, j, allow)| form(
            "http://jabber.org/protocol/pubsub#subscribe_authorization",
            &[("pubsub#node".into(), n), ("pubsub#subscriber_jid".into(), j), ("pubsub#allow".into(), allow.to_string())]
        )),
        jid().prop_map(|j| format!(
            "<addresses xmlns='http://jabber.org/protocol/address'><address type='bcc' jid='{j}'/></addresses>"
        )),
        Just("<body>hello</body>".to_owned()),
        payload(),
    ]
}

fn presence_payload() -> impl Strategy<Value = String> {
    prop_oneof![
        one_of(&["abc=", "QgayPKawpkPSDYmwT/WM94uAlu0="]).prop_map(|v| format!(
            "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://c.example' ver='{v}'/>"
        )),
        Just(String::new()),
    ]
}

/// One stanza as the server would write it to the component, with a unique id when it has one.
#[derive(Debug, Clone)]
struct Input {
    kind: &'static str,
    kind_attr: Option<String>,
    from: String,
    to: String,
    with_id: bool,
    payload: String,
}

fn input() -> impl Strategy<Value = Input> {
    let iq = (
        prop::option::weighted(0.95, one_of(&["get", "set", "result", "error", "bogus"])),
        iq_payload(),
    )
        .prop_map(|(t, p)| ("iq", t, p));
    let message = (
        prop::option::of(one_of(&["error", "normal", "headline"])),
        message_payload(),
    )
        .prop_map(|(t, p)| ("message", t, p));
    let presence = (
        prop::option::of(one_of(&["unavailable", "subscribe", "error", "probe"])),
        presence_payload(),
    )
        .prop_map(|(t, p)| ("presence", t, p));
    (
        prop_oneof![6 => iq, 2 => message, 2 => presence],
        jid(),
        one_of(&[
            DOMAIN,
            DOMAIN,
            DOMAIN,
            "alice@pubsub.localhost",
            "localhost",
        ]),
        prop::bool::weighted(0.95),
    )
        .prop_map(|((kind, kind_attr, payload), from, to, with_id)| Input {
            kind,
            kind_attr,
            from,
            to,
            with_id,
            payload,
        })
}

impl Input {
    fn xml(&self, id: &str) -> String {
        let mut s = format!("<{} xmlns='{NS_COMPONENT}'", self.kind);
        if let Some(t) = &self.kind_attr {
            s.push_str(&format!(" type='{t}'"));
        }
        if self.with_id {
            s.push_str(&format!(" id='{id}'"));
        }
        if !self.from.is_empty() {
            s.push_str(&format!(" from='{}'", self.from));
        }
        s.push_str(&format!(
            " to='{}'>{}</{}>",
            self.to, self.payload, self.kind
        ));
        s
    }
}

static PANICKED: AtomicBool = AtomicBool::new(false);

/// Runs the stanzas through a fresh service; returns every stanza it wrote.
fn run(inputs: &[Input]) -> Vec<Element> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Timers (roster and caps requests nobody answers) advance when everything waits.
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let service = InProcess::new(&["localhost"]);
        let xml: Vec<String> = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| input.xml(&format!("s{i}")))
            .collect();
        service.run(&xml).await
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("STRATUS_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_stanza_handler_holds(inputs in prop::collection::vec(input(), 1..24)) {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            hook(info);
        }));
        let written = run(&inputs);
        let _ = std::panic::take_hook();
        prop_assert!(!PANICKED.load(Ordering::SeqCst), "a task panicked");
        let mut answers: HashMap<String, usize> = HashMap::new();
        for s in &written {
            if let Some(id) = s.get_attr("id")
                && id.starts_with('s')
                && matches!(s.get_attr("type"), Some("result" | "error"))
            {
                *answers.entry(id.to_owned()).or_default() += 1;
            }
        }
        for (i, input) in inputs.iter().enumerate() {
            let id = format!("s{i}");
            let n = answers.get(&id).copied().unwrap_or(0);
            let kind = input.kind_attr.as_deref();
            if matches!(kind, Some("error")) || (input.kind == "iq" && kind == Some("result")) {
                prop_assert_eq!(n, 0, "RFC 6120 8.3.1: {} was answered", input.xml(&id));
            }
            if input.payload.contains("type='result' id='inner'") {
                // XEP-0355 forwards requests: a forwarded result is refused, never answered.
                let outer = written.iter().find(|w| w.get_attr("id") == Some(id.as_str()));
                prop_assert!(
                    outer.is_none_or(|w| w.get_attr("type") == Some("error")),
                    "a forwarded result was answered: {}", outer.map(|w| w.to_xml()).unwrap_or_default()
                );
            }
            let iq_request = input.kind == "iq" && matches!(kind, Some("get" | "set"));
            if iq_request && input.with_id && !input.from.is_empty() && !input.from.contains("@@") {
                prop_assert_eq!(n, 1, "RFC 6120 8.2.3: one answer to {}", input.xml(&id));
            } else {
                prop_assert!(n <= 1, "{} answered {} times", input.xml(&id), n);
            }
        }
    }
}
