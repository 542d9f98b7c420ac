//! No side doors (issue 13), on the stanza layer in this process (no server, memory store): what
//! a request may learn or do is what the node's access model allows, whichever request it is.

mod common;

use common::InProcess;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

fn iq(id: &str, kind: &str, from: &str, payload: &str) -> String {
    format!(
        "<iq xmlns='jabber:component:accept' type='{kind}' id='{id}' from='{from}' to='pubsub.localhost'>{payload}</iq>"
    )
}

fn answer<'a>(out: &'a [Element], id: &str) -> &'a Element {
    out.iter()
        .find(|s| s.get_attr("id") == Some(id))
        .unwrap_or_else(|| panic!("no answer to {id}: {out:?}"))
}

fn condition(e: &Element) -> Option<&str> {
    e.children()
        .find(|c| c.name() == "error")?
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name())
}

/// A whitelist node of alice's and an open one.
async fn two_nodes() -> InProcess {
    let s = InProcess::new(&["localhost"]);
    let create_whitelist = format!(
        "<pubsub xmlns='{PS}'><create node='secret'/><configure><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         <field var='pubsub#access_model'><value>whitelist</value></field></x></configure></pubsub>"
    );
    let out = s
        .run(&[
            iq("c1", "set", "alice@localhost/r", &create_whitelist),
            iq(
                "c2",
                "set",
                "alice@localhost/r",
                &format!("<pubsub xmlns='{PS}'><create node='public'/></pubsub>"),
            ),
        ])
        .await;
    assert_eq!(answer(&out, "c1").get_attr("type"), Some("result"));
    assert_eq!(answer(&out, "c2").get_attr("type"), Some("result"));
    s
}

/// XEP-0060 5.4 meta-data, 5.2 node discovery: a whitelist node is as absent to a stranger as a
/// node that does not exist (SECURITY.md: node existence is not revealed); its owner sees it.
#[tokio::test]
async fn discovery_follows_the_access_model() {
    let s = two_nodes().await;
    let info = |id: &str, from: &str, node: &str| {
        iq(
            id,
            "get",
            from,
            &format!("<query xmlns='{DISCO_INFO}' node='{node}'/>"),
        )
    };
    let out = s
        .run(&[
            info("i1", "mallory@remote.example/x", "secret"),
            info("i2", "mallory@remote.example/x", "nonexistent"),
            info("i3", "alice@localhost/r", "secret"),
            info("i4", "mallory@remote.example/x", "public"),
            iq(
                "l1",
                "get",
                "mallory@remote.example/x",
                &format!("<query xmlns='{DISCO_ITEMS}'/>"),
            ),
            iq(
                "l2",
                "get",
                "alice@localhost/r",
                &format!("<query xmlns='{DISCO_ITEMS}'/>"),
            ),
        ])
        .await;
    assert_eq!(condition(answer(&out, "i1")), Some("item-not-found"));
    assert_eq!(condition(answer(&out, "i1")), condition(answer(&out, "i2")));
    assert_eq!(answer(&out, "i3").get_attr("type"), Some("result"));
    assert_eq!(answer(&out, "i4").get_attr("type"), Some("result"));
    let nodes = |e: &Element| -> Vec<String> {
        e.get_child("query", DISCO_ITEMS)
            .map(|q| {
                q.children()
                    .filter_map(|i| i.get_attr("node").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(nodes(answer(&out, "l1")), ["public"]);
    let mut all = nodes(answer(&out, "l2"));
    all.sort();
    assert_eq!(all, ["public", "secret"]);
}

/// XEP-0355 section 5 and SECURITY.md: a server acts for its own users only. With two served
/// domains, localhost must not reach an account of other.localhost.
#[tokio::test]
async fn a_server_forwards_for_its_own_users_only() {
    let s = InProcess::new(&["localhost", "other.localhost"]);
    let forwarded = |id: &str, owner: &str| {
        format!(
            "<iq xmlns='jabber:component:accept' type='set' id='{id}' from='localhost' to='pubsub.localhost'>\
             <delegation xmlns='urn:xmpp:delegation:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <iq xmlns='jabber:client' type='set' id='inner' from='eve@localhost/r' to='{owner}'>\
             <pubsub xmlns='{PS}'><publish node='urn:xmpp:avatar:metadata'><item id='x'>\
             <metadata xmlns='urn:xmpp:avatar:metadata'/></item></publish></pubsub></iq>\
             </forwarded></delegation></iq>"
        )
    };
    let out = s
        .run(&[
            forwarded("f1", "victim@other.localhost"),
            forwarded("f2", "eve@localhost"),
        ])
        .await;
    let inner = |id: &str| -> Element {
        answer(&out, id)
            .get_child("delegation", "urn:xmpp:delegation:2")
            .and_then(|d| d.children().next())
            .and_then(|f| f.children().next())
            .cloned()
            .unwrap_or_else(|| panic!("{:?}", answer(&out, id)))
    };
    let refused = inner("f1");
    assert_eq!(refused.get_attr("type"), Some("error"), "{refused}");
    assert_eq!(condition(&refused), Some("forbidden"), "{refused}");
    // Her own account: served (auto-create on first publish, XEP-0163 3).
    assert_eq!(
        inner("f2").get_attr("type"),
        Some("result"),
        "{}",
        inner("f2")
    );
}

/// XEP-0060 section 10 and 6.3: discovery lists what works and nothing else; the options form
/// offers only what is implemented, and asking for more is refused (6.3.7, invalid-options).
#[tokio::test]
async fn discovery_and_options_are_honest() {
    let s = two_nodes().await;
    let subscribe =
        format!("<pubsub xmlns='{PS}'><subscribe node='public' jid='bob@localhost/r'/></pubsub>");
    let options_form =
        format!("<pubsub xmlns='{PS}'><options node='public' jid='bob@localhost/r'/></pubsub>");
    let submit = |digest: &str| {
        format!(
            "<pubsub xmlns='{PS}'><options node='public' jid='bob@localhost/r'>\
             <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>http://jabber.org/protocol/pubsub#subscribe_options</value></field>\
             <field var='pubsub#deliver'><value>1</value></field>\
             <field var='pubsub#digest'><value>{digest}</value></field></x></options></pubsub>"
        )
    };
    let out = s
        .run(&[
            iq(
                "d",
                "get",
                "bob@localhost/r",
                &format!("<query xmlns='{DISCO_INFO}'/>"),
            ),
            iq("s", "set", "bob@localhost/r", &subscribe),
            iq("o", "get", "bob@localhost/r", &options_form),
            iq("no", "set", "bob@localhost/r", &submit("0")),
            iq("yes", "set", "bob@localhost/r", &submit("1")),
        ])
        .await;
    let features: Vec<&str> = answer(&out, "d")
        .get_child("query", DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|f| f.get_attr("var"))
        .collect();
    let f = |name: &str| format!("http://jabber.org/protocol/pubsub#{name}");
    for present in [
        "rsm",
        "last-published",
        "member-affiliation",
        "multi-items",
        "publish-options",
        // 8.7, through the ad-hoc command tests/admin.rs runs.
        "get-pending",
    ] {
        assert!(
            features.contains(&f(present).as_str()),
            "{present} missing: {features:?}"
        );
    }
    // Not implemented here: several subscriptions per JID, collections.
    for absent in ["multi-subscribe", "collections"] {
        assert!(
            !features.contains(&f(absent).as_str()),
            "{absent} claimed: {features:?}"
        );
    }
    assert_eq!(answer(&out, "s").get_attr("type"), Some("result"));
    let form = answer(&out, "o")
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("options", PS))
        .and_then(|o| o.get_child("x", "jabber:x:data"))
        .unwrap_or_else(|| panic!("{:?}", answer(&out, "o")));
    let vars: Vec<&str> = form.children().filter_map(|x| x.get_attr("var")).collect();
    assert_eq!(vars, ["FORM_TYPE", "pubsub#deliver"]);
    assert_eq!(answer(&out, "no").get_attr("type"), Some("result"));
    let refused = answer(&out, "yes");
    assert_eq!(condition(refused), Some("bad-request"), "{refused}");
    assert!(refused.to_string().contains("invalid-options"), "{refused}");
}
