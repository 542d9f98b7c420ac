//! XEP-0163 (PEP) use cases on the stanza layer in this process: the real dispatcher and PEP
//! policy on the memory store, the server's part (delegated requests, privileges, presences,
//! rosters, disco#info of clients) played by the test, each case citing its section. The same
//! cases through real Prosody and ejabberd are in tests/pep.rs, for what the servers take part in
//! (delegation and privilege as each server speaks them, presence routing).

mod common;

use common::InProcess;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const DELEGATION: &str = "urn:xmpp:delegation:2";
const PRIVILEGE: &str = "urn:xmpp:privilege:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const CAPS: &str = "http://jabber.org/protocol/caps";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const ROSTER: &str = "jabber:iq:roster";

const NODE: &str = "urn:xmpp:avatar:metadata";
const ALICE: &str = "alice@localhost";

/// The server grants what the README's PEP snippets grant (XEP-0356 section 5).
fn privileges() -> String {
    format!(
        "<message xmlns='jabber:component:accept' from='localhost' to='pubsub.localhost'>\
         <privilege xmlns='{PRIVILEGE}'><perm access='roster' type='get'/>\
         <perm access='message' type='outgoing'/><perm access='presence' type='roster'/>\
         </privilege></message>"
    )
}

/// A request of `from` to the account `to`, delegated by the server (XEP-0355 section 5).
fn delegated(id: &str, kind: &str, from: &str, to: &str, payload: &str) -> String {
    format!(
        "<iq xmlns='jabber:component:accept' type='{kind}' id='{id}' from='localhost' to='pubsub.localhost'>\
         <delegation xmlns='{DELEGATION}'><forwarded xmlns='{FORWARD}'>\
         <iq xmlns='jabber:client' type='{kind}' id='{id}-inner' from='{from}' to='{to}'>{payload}</iq>\
         </forwarded></delegation></iq>"
    )
}

fn publish(id: &str) -> String {
    format!(
        "<pubsub xmlns='{PS}'><publish node='{NODE}'><item id='{id}'>\
         <metadata xmlns='{NODE}'><info id='{id}' bytes='1' type='image/png'/></metadata>\
         </item></publish></pubsub>"
    )
}

/// An available presence with XEP-0115 caps, as the presence privilege delivers it.
fn available(full: &str, ver: &str) -> String {
    format!(
        "<presence xmlns='jabber:component:accept' from='{full}' to='pubsub.localhost'>\
         <c xmlns='{CAPS}' hash='sha-1' node='https://example.org/client' ver='{ver}'/></presence>"
    )
}

/// A client's disco#info query (XEP-0115 section 6.2), with or without `+notify` for NODE.
fn client_info(notify: bool) -> Element {
    let mut q = Element::new("query", DISCO_INFO).child(
        Element::new("identity", DISCO_INFO)
            .attr("category", "client")
            .attr("type", "pc"),
    );
    let mut features = vec![DISCO_INFO.to_string(), PS.to_string()];
    if notify {
        features.push(format!("{NODE}+notify"));
    }
    for f in features {
        q = q.child(Element::new("feature", DISCO_INFO).attr("var", f));
    }
    q
}

fn ver(notify: bool) -> String {
    stratus::pep::caps::sha1_ver(&client_info(notify)).unwrap()
}

/// The server's part: alice's roster (`contacts`: JID and subscription), each contact's with
/// alice in it the other way round (RFC 6121 2.1.2.5), and each client's disco#info
/// (resources named `notify` want NODE's events, others do not).
fn server(
    contacts: &'static [(&'static str, &'static str)],
) -> impl Fn(&Element) -> Option<String> {
    move |stanza| {
        if stanza.name() != "iq" || stanza.get_attr("type") != Some("get") {
            return None;
        }
        let (id, to) = (stanza.get_attr("id")?, stanza.get_attr("to")?);
        let query = stanza.children().next()?;
        let body = if query.is("query", ROSTER) {
            let mut q = Element::new("query", ROSTER);
            let roster: Vec<(&str, &str)> = if to == ALICE {
                contacts.to_vec()
            } else {
                fn inverse(sub: &str) -> &str {
                    match sub {
                        "from" => "to",
                        "to" => "from",
                        other => other,
                    }
                }
                contacts
                    .iter()
                    .filter(|(jid, _)| *jid == to)
                    .map(|(_, sub)| (ALICE, inverse(sub)))
                    .collect()
            };
            for (jid, sub) in roster {
                q = q.child(
                    Element::new("item", ROSTER)
                        .attr("jid", jid)
                        .attr("subscription", sub),
                );
            }
            q
        } else if query.is("query", DISCO_INFO) {
            let mut q = client_info(to.ends_with("/notify"));
            if let Some(node) = query.get_attr("node") {
                q = q.attr("node", node);
            }
            q
        } else {
            return None;
        };
        Some(format!(
            "<iq xmlns='jabber:component:accept' type='result' id='{id}' from='{to}' to='pubsub.localhost'>{}</iq>",
            body.to_xml()
        ))
    }
}

/// The inner answer to delegated request `id` (XEP-0355 section 5: wrapped as it came).
fn answer(out: &[Element], id: &str) -> Element {
    out.iter()
        .find(|s| s.name() == "iq" && s.get_attr("id") == Some(id))
        .and_then(|iq| iq.get_child("delegation", DELEGATION))
        .and_then(|d| d.get_child("forwarded", FORWARD))
        .and_then(|f| f.children().next())
        .cloned()
        .unwrap_or_else(|| panic!("no delegated answer to {id}: {out:?}"))
}

fn ok(out: &[Element], id: &str) -> Element {
    let a = answer(out, id);
    assert_eq!(a.get_attr("type"), Some("result"), "{a}");
    a
}

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

/// The ids of the items events sent from alice's account to `to` (XEP-0356 section 7: through
/// the message privilege, so the event comes from the account itself, XEP-0163 section 4.3.1).
fn events_to(out: &[Element], to: &str) -> Vec<String> {
    out.iter()
        .filter(|s| s.name() == "message")
        .filter_map(|m| m.get_child("privilege", PRIVILEGE))
        .filter_map(|p| p.get_child("forwarded", FORWARD))
        .filter_map(|f| f.children().next())
        .filter(|m| m.get_attr("to") == Some(to))
        .inspect(|m| assert_eq!(m.get_attr("from"), Some(ALICE), "{m}"))
        .filter_map(|m| m.get_child("event", EVENT))
        .filter_map(|e| e.get_child("items", EVENT))
        .flat_map(|i| {
            i.children()
                .filter_map(|x| x.get_attr("id"))
                .map(str::to_owned)
        })
        .collect()
}

fn config_value(answer: &Element, var: &str) -> Option<String> {
    let form = answer
        .get_child("pubsub", OWNER)?
        .get_child("configure", OWNER)?
        .children()
        .next()?;
    let field = form.children().find(|f| f.get_attr("var") == Some(var))?;
    Some(field.children().next()?.text_content())
}

/// Section 3: a publish to a node the account does not have creates it; section 5: with the
/// recommended defaults (access model `presence`, the last item sent on subscription and
/// presence, one item kept). Section 6.1: the account owner reads it back.
#[tokio::test]
async fn s3_publish_auto_creates_with_the_s5_defaults() {
    let s = InProcess::new(&["localhost"]);
    let me = "alice@localhost/r";
    let out = s
        .run_answering(
            &[
                privileges(),
                delegated("p1", "set", me, ALICE, &publish("a")),
                delegated("p2", "set", me, ALICE, &publish("b")),
                delegated(
                    "cfg",
                    "get",
                    me,
                    ALICE,
                    &format!("<pubsub xmlns='{OWNER}'><configure node='{NODE}'/></pubsub>"),
                ),
                delegated(
                    "get",
                    "get",
                    me,
                    ALICE,
                    &format!("<pubsub xmlns='{PS}'><items node='{NODE}'/></pubsub>"),
                ),
            ],
            &server(&[]),
        )
        .await;
    ok(&out, "p1");
    ok(&out, "p2");
    let cfg = ok(&out, "cfg");
    assert_eq!(
        config_value(&cfg, "pubsub#access_model").as_deref(),
        Some("presence")
    );
    assert_eq!(
        config_value(&cfg, "pubsub#send_last_published_item").as_deref(),
        Some("on_sub_and_presence")
    );
    let items = ok(&out, "get");
    let ids: Vec<&str> = items
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("items", PS))
        .map(|i| i.children().filter_map(|x| x.get_attr("id")).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["b"], "one item kept, the last one: {items}");
}

/// Section 4 with XEP-0060 4.5 (presence access): contacts with a presence subscription to the
/// account (`from` or `both`) that asked for `+notify` get each event (4.1, 4.2); a contact
/// without `+notify` does not (4.2); a stranger with `+notify` does not, and reading the items
/// is refused with `presence-subscription-required` (XEP-0060 6.5.9.2: not-authorized). A
/// contact alice makes an outcast gets nothing more (XEP-0060 4.1 affiliations, issue 13).
#[tokio::test]
async fn s4_events_go_to_contacts_that_asked_and_are_allowed() {
    static CONTACTS: &[(&str, &str)] = &[
        ("bob@localhost", "both"),
        ("dave@localhost", "from"),
        ("erin@localhost", "to"),
    ];
    let s = InProcess::new(&["localhost"]);
    let answer_as_server = server(CONTACTS);
    let me = "alice@localhost/r";
    let out = s
        .run_answering(
            &[
                privileges(),
                delegated("p0", "set", me, ALICE, &publish("first")),
                available("bob@localhost/notify", &ver(true)),
                available("dave@localhost/plain", &ver(false)),
                available("erin@localhost/notify", &ver(true)),
                available("carol@localhost/notify", &ver(true)),
            ],
            &answer_as_server,
        )
        .await;
    ok(&out, "p0");
    // 4.3.4: coming online, a contact that may read and asked gets the last item.
    assert_eq!(events_to(&out, "bob@localhost/notify"), ["first"]);
    assert!(
        events_to(&out, "erin@localhost/notify").is_empty(),
        "{out:?}"
    );
    assert!(
        events_to(&out, "carol@localhost/notify").is_empty(),
        "{out:?}"
    );

    let out = s
        .run_answering(
            &[
                delegated("p1", "set", me, ALICE, &publish("second")),
                delegated(
                    "read",
                    "get",
                    "carol@localhost/notify",
                    ALICE,
                    &format!("<pubsub xmlns='{PS}'><items node='{NODE}'/></pubsub>"),
                ),
            ],
            &answer_as_server,
        )
        .await;
    ok(&out, "p1");
    assert_eq!(events_to(&out, "bob@localhost/notify"), ["second"]);
    assert!(
        events_to(&out, "dave@localhost/plain").is_empty(),
        "{out:?}"
    );
    // `to` only: alice sees erin's presence, erin does not see alice's (RFC 6121 2.1.2.5).
    assert!(
        events_to(&out, "erin@localhost/notify").is_empty(),
        "{out:?}"
    );
    assert!(
        events_to(&out, "carol@localhost/notify").is_empty(),
        "{out:?}"
    );
    assert_eq!(
        error(&out, "read"),
        (
            "not-authorized".into(),
            Some("presence-subscription-required".into())
        )
    );

    let out = s
        .run_answering(
            &[
                delegated(
                    "outcast",
                    "set",
                    me,
                    ALICE,
                    &format!(
                        "<pubsub xmlns='{OWNER}'><affiliations node='{NODE}'>\
                         <affiliation jid='bob@localhost' affiliation='outcast'/>\
                         </affiliations></pubsub>"
                    ),
                ),
                delegated("p2", "set", me, ALICE, &publish("third")),
            ],
            &answer_as_server,
        )
        .await;
    ok(&out, "outcast");
    ok(&out, "p2");
    assert!(
        events_to(&out, "bob@localhost/notify").is_empty(),
        "an outcast contact got an event: {out:?}"
    );
}

/// Section 5 lets the owner change the access model; XEP-0060 4.5 whitelist: after alice makes
/// the node whitelist, a contact not on the list gets no more events (the leak class of
/// CVE-2018-6591), even one that had subscribed explicitly (XEP-0060 8.2: the subscription is
/// cancelled); a contact alice adds as member does.
#[tokio::test]
async fn s5_a_whitelist_stops_events_to_contacts_not_on_it() {
    static CONTACTS: &[(&str, &str)] = &[("bob@localhost", "both"), ("frank@localhost", "both")];
    let s = InProcess::new(&["localhost"]);
    let answer_as_server = server(CONTACTS);
    let me = "alice@localhost/r";
    let whitelist = format!(
        "<pubsub xmlns='{OWNER}'><configure node='{NODE}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         <field var='pubsub#access_model'><value>whitelist</value></field></x></configure></pubsub>"
    );
    let out = s
        .run_answering(
            &[
                privileges(),
                delegated("p0", "set", me, ALICE, &publish("open")),
                available("bob@localhost/notify", &ver(true)),
                available("frank@localhost/notify", &ver(true)),
                delegated(
                    "sub",
                    "set",
                    "bob@localhost/notify",
                    ALICE,
                    &format!(
                        "<pubsub xmlns='{PS}'><subscribe node='{NODE}' jid='bob@localhost/notify'/></pubsub>"
                    ),
                ),
            ],
            &answer_as_server,
        )
        .await;
    ok(&out, "p0");
    ok(&out, "sub");
    let out = s
        .run_answering(
            &[
                delegated("wl", "set", me, ALICE, &whitelist),
                delegated(
                    "member",
                    "set",
                    me,
                    ALICE,
                    &format!(
                        "<pubsub xmlns='{OWNER}'><affiliations node='{NODE}'>\
                         <affiliation jid='frank@localhost' affiliation='member'/>\
                         </affiliations></pubsub>"
                    ),
                ),
                delegated("p1", "set", me, ALICE, &publish("closed")),
            ],
            &answer_as_server,
        )
        .await;
    ok(&out, "wl");
    ok(&out, "member");
    ok(&out, "p1");
    assert!(
        !events_to(&out, "bob@localhost/notify").contains(&"closed".to_string()),
        "a contact off the whitelist got an item: {out:?}"
    );
    assert_eq!(events_to(&out, "frank@localhost/notify"), ["closed"]);
}
