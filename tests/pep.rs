//! PEP (XEP-0163) for users of real Prosody and real ejabberd through XEP-0355 delegation and
//! XEP-0356 privileges, configured as in the README (scripts/templates). Each test gets its own
//! server, since delegation names one component (pubsub.localhost).

mod common;

use std::time::Duration;

use common::pep::*;
use common::*;
use stratus::client::{Client, NS_CLIENT};
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const NODE: &str = "urn:example:mood";

struct Pep {
    server: Server,
    _stratus: Stratus,
}

fn setup(kind: Kind) -> Pep {
    let server = Server::start_private_pep(kind);
    let stratus = Stratus::start(&server, "pubsub.localhost");
    Pep {
        server,
        _stratus: stratus,
    }
}

fn publish_el(node: &str, id: &str, text: &str, options: &[(&str, &str)]) -> Element {
    publish_with_options(node, id, Element::new("mood", NODE).text(text), options)
}

/// Publishes to the client's own PEP service (an IQ without `to`, as clients do).
async fn publish_own(
    c: &mut Client,
    node: &str,
    id: &str,
    text: &str,
    options: &[(&str, &str)],
) -> Element {
    let iq = Element::new("iq", NS_CLIENT)
        .attr("type", "set")
        .child(publish_el(node, id, text, options));
    c.iq(iq).await.unwrap()
}

fn item_ids(reply: &Element) -> Vec<String> {
    reply
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("items", PS))
        .map(|i| {
            i.children()
                .filter_map(|it| it.get_attr("id").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

macro_rules! both_servers {
    ($($name:ident),* $(,)?) => {
        mod prosody { use super::*; $( #[tokio::test] async fn $name() { super::$name(Kind::Prosody).await } )* }
        mod ejabberd { use super::*; $( #[tokio::test] async fn $name() { super::$name(Kind::Ejabberd).await } )* }
    };
}

both_servers!(
    bare_jid_disco_and_auto_create,
    notify_filtering_access_and_last_item,
    open_private_and_bookmarks_nodes,
    forged_delegation_is_refused,
    host_node_presence_access_uses_the_owner_roster,
    whitelist_and_outcast_stop_pep_delivery,
    an_added_owner_lends_no_roster,
    notification_type_is_the_nodes,
    private_storage_and_bookmarks_in_sync,
);

const OWNER_NS: &str = "http://jabber.org/protocol/pubsub#owner";

/// An owner request to the account's own PEP service (no `to`, as clients send it).
fn own_owner_iq(child: Element) -> Element {
    Element::new("iq", NS_CLIENT)
        .attr("type", "set")
        .child(Element::new("pubsub", OWNER_NS).child(child))
}

/// XEP-0060 4.1 and 4.5 on PEP (XEP-0163): bob is alice's contact with `+notify` and also
/// explicitly subscribed; carol is a contact with `+notify`. Alice makes carol an outcast: carol
/// gets nothing more, bob still does. Alice makes the node whitelist: bob (not on it) gets nothing
/// either, whichever way he was a recipient. The leak class of CVE-2018-6591.
async fn whitelist_and_outcast_stop_pep_delivery(kind: Kind) {
    let p = setup(kind);
    let mut alice = new_user(&p.server, "alice").await;
    let mut bob = new_user(&p.server, "bob").await;
    let mut carol = new_user(&p.server, "carol").await;
    let alice_bare = bare(&alice);
    for c in [&mut alice, &mut bob, &mut carol] {
        interested_and_online(c).await;
    }
    presence_subscribe(&mut bob, &mut alice).await;
    presence_subscribe(&mut carol, &mut alice).await;
    online_with_caps(&mut alice, "alice-ver-13", &[]).await;
    let notify = format!("{NODE}+notify");
    online_with_caps(&mut bob, "bob-ver-13", &[DISCO_INFO, &notify]).await;
    online_with_caps(&mut carol, "carol-ver-13", &[DISCO_INFO, &notify]).await;
    let r = publish_own(&mut alice, NODE, "m1", "happy", &[]).await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    for c in [&mut bob, &mut carol] {
        c.wait_for(T, |m| pep_event_from(m, &alice_bare, NODE).is_some())
            .await
            .expect("a contact with +notify gets the event");
    }
    let sub = iq(
        "set",
        &alice_bare,
        Element::new("pubsub", PS).child(
            Element::new("subscribe", PS)
                .attr("node", NODE)
                .attr("jid", bob.jid().to_string()),
        ),
    );
    let r = bob.iq(sub).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    // Carol becomes an outcast.
    let outcast = own_owner_iq(
        Element::new("affiliations", OWNER_NS)
            .attr("node", NODE)
            .child(
                Element::new("affiliation", OWNER_NS)
                    .attr("jid", bare(&carol))
                    .attr("affiliation", "outcast"),
            ),
    );
    let r = alice.iq(outcast).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let r = publish_own(&mut alice, NODE, "m2", "wary", &[]).await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    bob.wait_for(T, |m| {
        pep_event_from(m, &alice_bare, NODE).is_some() && m.to_string().contains("m2")
    })
    .await
    .expect("bob still reads");
    ping_answered(&mut carol, "pubsub.localhost").await;
    assert!(
        !carol.pending_contains(|m| m.to_string().contains("m2")),
        "an outcast contact received an item"
    );
    // The node becomes whitelist.
    let whitelist = own_owner_iq(
        Element::new("configure", OWNER_NS)
            .attr("node", NODE)
            .child(config_form(&[("pubsub#access_model", "whitelist")])),
    );
    let r = alice.iq(whitelist).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let r = publish_own(&mut alice, NODE, "m3", "private", &[]).await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    ping_answered(&mut bob, "pubsub.localhost").await;
    assert!(
        !bob.pending_contains(|m| m.to_string().contains("m3")),
        "a contact received an item of a whitelist node"
    );
}

/// XEP-0060 4.5 presence access on the host service: the roster that counts is the node
/// creator's. Alice adds carol as an owner; dave is in carol's roster only. Dave must not get in,
/// or anyone could learn who is in carol's roster by making her an owner.
async fn an_added_owner_lends_no_roster(kind: Kind) {
    let p = setup(kind);
    let mut alice = new_user(&p.server, "alice").await;
    let mut carol = new_user(&p.server, "carol").await;
    let mut dave = new_user(&p.server, "dave").await;
    for c in [&mut carol, &mut dave] {
        interested_and_online(c).await;
    }
    presence_subscribe(&mut dave, &mut carol).await;
    create_with_access(&mut alice, "pubsub.localhost", "probe", "presence").await;
    let owner = iq(
        "set",
        "pubsub.localhost",
        Element::new("pubsub", OWNER_NS).child(
            Element::new("affiliations", OWNER_NS)
                .attr("node", "probe")
                .child(
                    Element::new("affiliation", OWNER_NS)
                        .attr("jid", bare(&carol))
                        .attr("affiliation", "owner"),
                ),
        ),
    );
    let r = alice.iq(owner).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let sub = iq(
        "set",
        "pubsub.localhost",
        Element::new("pubsub", PS).child(
            Element::new("subscribe", PS)
                .attr("node", "probe")
                .attr("jid", dave.jid().to_string()),
        ),
    );
    let refused = dave.iq(sub).await.unwrap();
    assert_eq!(refused.get_attr("type"), Some("error"), "{refused}");
    assert_eq!(
        app_error(&refused).as_deref(),
        Some("presence-subscription-required"),
        "{refused}"
    );
}

/// XEP-0060 4.5 presence access model on the host service: an owner's presence contact may
/// subscribe, a stranger gets presence-subscription-required (the roster is read through the
/// XEP-0356 roster privilege).
async fn host_node_presence_access_uses_the_owner_roster(kind: Kind) {
    let p = setup(kind);
    let mut alice = new_user(&p.server, "alice").await;
    let mut bob = new_user(&p.server, "bob").await;
    let mut dave = new_user(&p.server, "dave").await;
    for c in [&mut alice, &mut bob] {
        interested_and_online(c).await;
    }
    presence_subscribe(&mut bob, &mut alice).await;
    create_with_access(&mut alice, "pubsub.localhost", "friends-only", "presence").await;
    let subscribe = |c: &Client| {
        iq(
            "set",
            "pubsub.localhost",
            Element::new("pubsub", PS).child(
                Element::new("subscribe", PS)
                    .attr("node", "friends-only")
                    .attr("jid", c.jid().to_string()),
            ),
        )
    };
    let ok = bob.iq(subscribe(&bob)).await.unwrap();
    assert_eq!(ok.get_attr("type"), Some("result"), "{ok}");
    let refused = dave.iq(subscribe(&dave)).await.unwrap();
    assert_eq!(
        error_condition(&refused).as_deref(),
        Some("not-authorized"),
        "{refused}"
    );
    assert_eq!(
        app_error(&refused).as_deref(),
        Some("presence-subscription-required")
    );
}

/// XEP-0163 sections 3 and 9: the account's disco#info shows pubsub/pep and publish-options;
/// publishing to a node that does not exist creates it (auto-create).
async fn bare_jid_disco_and_auto_create(kind: Kind) {
    let p = setup(kind);
    let mut alice = new_user(&p.server, "alice").await;
    let me = bare(&alice);
    // The server learns the delegated features by asking stratus (XEP-0355, the ::bare disco
    // node) once it has connected: the account is asked until it shows them.
    let is_pep = |i: &Element| {
        i.name() == "identity"
            && i.get_attr("category") == Some("pubsub")
            && i.get_attr("type") == Some("pep")
    };
    let info = account_info_with(
        &mut alice,
        &["http://jabber.org/protocol/pubsub#publish-options"],
    )
    .await;
    let q = info.get_child("query", DISCO_INFO).unwrap();
    assert!(q.children().any(is_pep), "{info}");
    assert!(q.children().any(|f| f.get_attr("var") == Some("http://jabber.org/protocol/pubsub#publish-options")), "{info}");
    let r = publish_own(&mut alice, NODE, "current", "happy", &[]).await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let items = get_items(&mut alice, &me, NODE).await;
    assert_eq!(item_ids(&items), ["current"], "{items}");
    let mood = items
        .get_child("pubsub", PS)
        .unwrap()
        .get_child("items", PS)
        .unwrap()
        .children()
        .next()
        .unwrap();
    assert_eq!(
        mood.get_child("mood", NODE).unwrap().text_content(),
        "happy"
    );
    // PEP default max_items is 1: a second item replaces the first.
    assert_eq!(
        publish_own(&mut alice, NODE, "next", "calm", &[])
            .await
            .get_attr("type"),
        Some("result")
    );
    assert_eq!(item_ids(&get_items(&mut alice, &me, NODE).await), ["next"]);
    // XEP-0163 section 9 and XEP-0060 section 10: the account advertises what its PEP service
    // does, as the built-in modules do; each of these is exercised here or in the tests above.
    let features: Vec<&str> = q
        .children()
        .filter(|f| f.name() == "feature")
        .filter_map(|f| f.get_attr("var"))
        .collect();
    for f in [
        "multi-items",
        "rsm",
        "config-node-max",
        "last-published",
        "retrieve-default",
        "member-affiliation",
        "outcast-affiliation",
        "publisher-affiliation",
        "manage-subscriptions",
        "subscription-options",
    ] {
        let var = format!("http://jabber.org/protocol/pubsub#{f}");
        assert!(features.contains(&var.as_str()), "{var} missing: {info}");
    }
    // multi-items: a node that keeps three items keeps them; rsm (XEP-0059 section 2.1): a page
    // of two, with the count of all three.
    let multi = format!("{NODE}:multi");
    for id in ["m1", "m2", "m3"] {
        let r = publish_own(&mut alice, &multi, id, id, &[("pubsub#max_items", "3")]).await;
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    }
    let mut all = item_ids(&get_items(&mut alice, &me, &multi).await);
    all.sort();
    assert_eq!(all, ["m1", "m2", "m3"]);
    let page = alice
        .iq(iq(
            "get",
            &me,
            Element::new("pubsub", PS)
                .child(Element::new("items", PS).attr("node", multi.as_str()))
                .child(
                    Element::new("set", "http://jabber.org/protocol/rsm")
                        .child(Element::new("max", "http://jabber.org/protocol/rsm").text("2")),
                ),
        ))
        .await
        .unwrap();
    assert_eq!(item_ids(&page).len(), 2, "{page}");
    let count = page
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("set", "http://jabber.org/protocol/rsm"))
        .and_then(|s| s.get_child("count", "http://jabber.org/protocol/rsm"))
        .map(|c| c.text_content());
    assert_eq!(count.as_deref(), Some("3"), "{page}");
    // retrieve-default (XEP-0060 section 8.3): the PEP service's default node configuration.
    let default = alice
        .iq(iq(
            "get",
            &me,
            Element::new("pubsub", OWNER_NS).child(Element::new("default", OWNER_NS)),
        ))
        .await
        .unwrap();
    assert_eq!(default.get_attr("type"), Some("result"), "{default}");
    // On the same server (one server start fewer): another account's quick publishes.
    quick_publishes_of_one_id_keep_their_order(&p).await;
}

/// XEP-0163 section 4: a contact whose caps say NODE+notify gets the event from the owner's bare
/// JID; one without it does not; presence access lets contacts read and strangers not
/// (presence-subscription-required); a contact coming online gets the last item (4.3.2).
async fn notify_filtering_access_and_last_item(kind: Kind) {
    let p = setup(kind);
    let mut alice = new_user(&p.server, "alice").await;
    let mut bob = new_user(&p.server, "bob").await;
    let mut carol = new_user(&p.server, "carol").await;
    let mut dave = new_user(&p.server, "dave").await;
    let alice_bare = bare(&alice);
    for c in [&mut alice, &mut bob, &mut carol] {
        interested_and_online(c).await;
    }
    presence_subscribe(&mut bob, &mut alice).await;
    presence_subscribe(&mut carol, &mut alice).await;
    online_with_caps(&mut alice, "alice-ver", &[]).await;
    let notify = format!("{NODE}+notify");
    online_with_caps(&mut bob, "bob-ver", &[DISCO_INFO, &notify]).await;
    online_with_caps(&mut carol, "carol-ver", &[DISCO_INFO]).await;

    let r = publish_own(&mut alice, NODE, "m1", "excited", &[]).await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let ev = bob
        .wait_for(T, |m| pep_event_from(m, &alice_bare, NODE).is_some())
        .await
        .expect("bob gets the event");
    let item = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap()
        .get_child("item", EVENT)
        .unwrap();
    assert_eq!(item.get_attr("id"), Some("m1"));
    assert!(
        carol
            .wait_for(Duration::from_millis(800), |m| pep_event_from(
                m,
                &alice_bare,
                NODE
            )
            .is_some())
            .await
            .is_err(),
        "carol has no +notify: no event"
    );
    // Presence access model (the PEP default): contacts read, strangers are refused.
    assert_eq!(
        item_ids(&get_items(&mut bob, &alice_bare, NODE).await),
        ["m1"]
    );
    let refused = get_items(&mut dave, &alice_bare, NODE).await;
    assert_eq!(refused.get_attr("type"), Some("error"), "{refused}");
    assert_eq!(
        error_condition(&refused).as_deref(),
        Some("not-authorized"),
        "{refused}"
    );
    assert_eq!(
        app_error(&refused).as_deref(),
        Some("presence-subscription-required")
    );

    // Last item on presence: bob comes back with a new session and gets alice's current mood.
    let bob_user = bob.jid().node().unwrap().to_owned();
    bob.close().await;
    assert_eq!(
        publish_own(&mut alice, NODE, "m2", "sleepy", &[])
            .await
            .get_attr("type"),
        Some("result")
    );
    let mut bob2 = login(&p.server, &bob_user, "second").await;
    online_with_caps(&mut bob2, "bob-ver", &[DISCO_INFO, &notify]).await;
    let ev = bob2
        .wait_for(T, |m| pep_event_from(m, &alice_bare, NODE).is_some())
        .await
        .expect("last item on login");
    let item = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap()
        .get_child("item", EVENT)
        .unwrap();
    assert_eq!(item.get_attr("id"), Some("m2"));
}

/// OMEMO device list with access_model=open via publish-options (XEP-0384): strangers may read;
/// XEP-0223 private storage (whitelist, persist): nobody else may; XEP-0402 bookmarks with
/// max_items=max are accepted.
async fn open_private_and_bookmarks_nodes(kind: Kind) {
    let p = setup(kind);
    let mut alice = new_user(&p.server, "alice").await;
    let mut dave = new_user(&p.server, "dave").await;
    let alice_bare = bare(&alice);
    let devicelist = "eu.siacs.conversations.axolotl.devicelist";
    let r = publish_own(
        &mut alice,
        devicelist,
        "current",
        "1234",
        &[("pubsub#access_model", "open")],
    )
    .await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    assert_eq!(
        item_ids(&get_items(&mut dave, &alice_bare, devicelist).await),
        ["current"]
    );
    // Once created open, a publish demanding another access model fails its precondition.
    let r = publish_own(
        &mut alice,
        devicelist,
        "current",
        "1234",
        &[("pubsub#access_model", "presence")],
    )
    .await;
    assert_eq!(r.get_attr("type"), Some("error"), "{r}");
    assert_eq!(app_error(&r).as_deref(), Some("precondition-not-met"));

    let private = "storage:bookmarks";
    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#access_model", "whitelist"),
    ];
    assert_eq!(
        publish_own(&mut alice, private, "current", "secret", &opts)
            .await
            .get_attr("type"),
        Some("result")
    );
    let refused = get_items(&mut dave, &alice_bare, private).await;
    assert_eq!(refused.get_attr("type"), Some("error"), "{refused}");
    assert_eq!(
        app_error(&refused).as_deref(),
        Some("closed-node"),
        "{refused}"
    );
    assert_eq!(
        item_ids(&get_items(&mut alice, &alice_bare, private).await),
        ["current"]
    );

    let bookmarks = "urn:xmpp:bookmarks:1";
    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ];
    for room in ["a@conference.localhost", "b@conference.localhost"] {
        let r = publish_own(&mut alice, bookmarks, room, "room", &opts).await;
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    }
    assert_eq!(
        item_ids(&get_items(&mut alice, &alice_bare, bookmarks).await).len(),
        2,
        "max_items=max keeps both"
    );
}

/// XEP-0355: only the server may forward IQs; a client's forged delegation wrapper is refused.
async fn forged_delegation_is_refused(kind: Kind) {
    let p = setup(kind);
    let mut mallory = new_user(&p.server, "mallory").await;
    let forged = Element::new("iq", NS_CLIENT)
        .attr("type", "set")
        .attr("to", "pubsub.localhost")
        .child(
            Element::new("delegation", "urn:xmpp:delegation:1").child(
                Element::new("forwarded", "urn:xmpp:forward:0").child(
                    Element::new("iq", NS_CLIENT)
                        .attr("type", "set")
                        .attr("id", "inner")
                        .attr("from", "alice@localhost/res")
                        .attr("to", "alice@localhost")
                        .child(publish_el(NODE, "x", "forged", &[])),
                ),
            ),
        );
    let r = mallory.iq(forged).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("error"), "{r}");
    assert_eq!(error_condition(&r).as_deref(), Some("forbidden"), "{r}");
}

/// XEP-0060 16.4.3 `pubsub#notification_type`: PEP notifications are messages of the node's
/// type, as on the host service (issue 18): `normal` when the node says so (here set by
/// publish-options on the publish that creates it, XEP-0163 section 4.2), `headline` after the
/// owner configures it back.
async fn notification_type_is_the_nodes(kind: Kind) {
    let p = setup(kind);
    let mut alice = new_user(&p.server, "alice").await;
    let mut bob = new_user(&p.server, "bob").await;
    let alice_bare = bare(&alice);
    for c in [&mut alice, &mut bob] {
        interested_and_online(c).await;
    }
    presence_subscribe(&mut bob, &mut alice).await;
    online_with_caps(&mut alice, "alice-ver-18", &[]).await;
    let notify = format!("{NODE}+notify");
    online_with_caps(&mut bob, "bob-ver-18", &[DISCO_INFO, &notify]).await;
    let r = publish_own(
        &mut alice,
        NODE,
        "m1",
        "calm",
        &[("pubsub#notification_type", "normal")],
    )
    .await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let m = bob
        .wait_for(T, |m| pep_event_from(m, &alice_bare, NODE).is_some())
        .await
        .expect("a contact with +notify gets the event");
    // RFC 6121 5.2.2: a message without `type` is `normal` (ejabberd leaves the default out).
    assert_eq!(m.get_attr("type").unwrap_or("normal"), "normal", "{m}");
    let headline = own_owner_iq(
        Element::new("configure", OWNER_NS)
            .attr("node", NODE)
            .child(config_form(&[("pubsub#notification_type", "headline")])),
    );
    let r = alice.iq(headline).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let r = publish_own(&mut alice, NODE, "m2", "busy", &[]).await;
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let m = bob
        .wait_for(T, |m| {
            pep_event_from(m, &alice_bare, NODE).is_some() && m.to_string().contains("m2")
        })
        .await
        .expect("the second event");
    assert_eq!(m.get_attr("type"), Some("headline"), "{m}");
}

/// XEP-0060 7.1.2 and XEP-0163 section 3: a publish of an existing item id replaces it, so of
/// several publishes of one id the last one sent is the item that stays (an OMEMO client
/// republishing its device list as `current`, XEP-0384 section 4.2). The client sends them all
/// at once without waiting for answers; the server forwards each as its own delegated request.
async fn quick_publishes_of_one_id_keep_their_order(p: &Pep) {
    let mut alice = new_user(&p.server, "omemo").await;
    let alice_bare = bare(&alice);
    const N: usize = 40;
    let mut ids = Vec::new();
    for i in 0..N {
        let id = alice.next_id();
        let iq = Element::new("iq", NS_CLIENT)
            .attr("type", "set")
            .attr("id", id.clone())
            .child(publish_el(NODE, "current", &format!("v{i}"), &[]));
        alice.send(&iq).await.unwrap();
        ids.push(id);
    }
    for id in &ids {
        let r = alice
            .wait_for(T, |e| {
                e.name() == "iq"
                    && e.get_attr("id") == Some(id.as_str())
                    && matches!(e.get_attr("type"), Some("result") | Some("error"))
            })
            .await
            .expect("every publish is answered");
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    }
    let reply = get_items(&mut alice, &alice_bare, NODE).await;
    let items: Vec<(String, String)> = reply
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("items", PS))
        .expect("items")
        .children()
        .map(|it| {
            let text = it
                .get_child("mood", NODE)
                .map(|m| m.text_content())
                .unwrap_or_default();
            (it.get_attr("id").unwrap_or_default().to_owned(), text)
        })
        .collect();
    assert_eq!(
        items,
        [("current".to_owned(), format!("v{}", N - 1))],
        "one item, the last one published: {reply}"
    );
}

const PRIVATE: &str = "jabber:iq:private";
const LEGACY: &str = "storage:bookmarks";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";

/// XEP-0049: a get or set of the client's own private XML (no `to`, as clients send it).
async fn private_iq(c: &mut Client, kind: &str, to: Option<&str>, el: Element) -> Element {
    let iq = Element::new("iq", NS_CLIENT)
        .attr("type", kind)
        .attr_opt("to", to.map(str::to_owned))
        .child(Element::new("query", PRIVATE).child(el));
    c.iq(iq).await.unwrap()
}

/// The element a private XML get returned.
fn private_result(r: &Element) -> &Element {
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    r.get_child("query", PRIVATE)
        .and_then(|q| q.children().next())
        .unwrap_or_else(|| panic!("no private XML in {r}"))
}

/// The rooms of a XEP-0048 `<storage/>`, sorted.
fn legacy_rooms(storage: &Element) -> Vec<String> {
    let mut rooms: Vec<String> = storage
        .children()
        .filter(|c| c.is("conference", LEGACY))
        .filter_map(|c| c.get_attr("jid").map(str::to_owned))
        .collect();
    rooms.sort();
    rooms
}

/// XEP-0049 through the server's delegation of `jabber:iq:private`, and XEP-0402 section 5.3:
/// private XML is stored and returned unchanged and only to its account; bookmarks written as
/// private XML appear as XEP-0402 items and the reverse; the XEP-0048 PEP node follows
/// (`#compat-pep`); the account advertises both compatibility features.
async fn private_storage_and_bookmarks_in_sync(kind: Kind) {
    let p = setup(kind);
    let mut alice = new_user(&p.server, "alice").await;
    let mut bob = new_user(&p.server, "bob").await;
    let me = bare(&alice);
    // The server learns the features of the private namespace by asking stratus when it connects.
    account_info_with(
        &mut alice,
        &[
            "urn:xmpp:bookmarks:1#compat",
            "urn:xmpp:bookmarks:1#compat-pep",
        ],
    )
    .await;

    // XEP-0049 section 2.2: nothing stored yet answers with the empty element.
    let prefs =
        parse("<prefs xmlns='urn:example:prefs' v='2'><x a='1'>text &amp; more</x><y/></prefs>");
    let empty = private_iq(
        &mut alice,
        "get",
        None,
        Element::new("prefs", "urn:example:prefs"),
    )
    .await;
    let got = private_result(&empty);
    assert!(
        got.is("prefs", "urn:example:prefs") && got.children().next().is_none(),
        "{empty}"
    );
    let set = private_iq(&mut alice, "set", None, prefs.clone()).await;
    assert_eq!(set.get_attr("type"), Some("result"), "{set}");
    let r = private_iq(
        &mut alice,
        "get",
        None,
        Element::new("prefs", "urn:example:prefs"),
    )
    .await;
    assert_eq!(private_result(&r).to_xml(), prefs.to_xml(), "{r}");
    // Section 3: another account may not read it, nor set it; a reserved namespace is refused.
    let other = private_iq(
        &mut bob,
        "get",
        Some(&me),
        Element::new("prefs", "urn:example:prefs"),
    )
    .await;
    assert_eq!(other.get_attr("type"), Some("error"), "{other}");
    assert_eq!(
        error_condition(&other).as_deref(),
        Some("forbidden"),
        "{other}"
    );
    assert!(
        other
            .get_child("query", PRIVATE)
            .and_then(|q| q.children().next())
            .is_none_or(|e| e.children().next().is_none()),
        "{other}"
    );
    let reserved = private_iq(&mut alice, "set", None, Element::new("x", "jabber:client")).await;
    assert_eq!(
        error_condition(&reserved).as_deref(),
        Some("not-acceptable"),
        "{reserved}"
    );

    // Bookmarks as private XML (XEP-0048 section 3.2's example) become XEP-0402 items.
    let legacy = parse(
        "<storage xmlns='storage:bookmarks'>\
         <conference name='Council of Oberon' autojoin='true' jid='council@conference.underhill.org'>\
         <nick>Puck</nick></conference>\
         <url name='Complete Works' url='http://the-tech.mit.edu/Shakespeare/'/></storage>",
    );
    let set = private_iq(&mut alice, "set", None, legacy).await;
    assert_eq!(set.get_attr("type"), Some("result"), "{set}");
    let items = get_items(&mut alice, &me, BOOKMARKS).await;
    assert_eq!(
        item_ids(&items),
        ["council@conference.underhill.org"],
        "{items}"
    );
    let conf = items
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("items", PS))
        .and_then(|i| i.children().next())
        .and_then(|i| i.get_child("conference", BOOKMARKS))
        .unwrap_or_else(|| panic!("no conference: {items}"));
    assert_eq!(conf.get_attr("name"), Some("Council of Oberon"));
    assert!(
        matches!(conf.get_attr("autojoin"), Some("true" | "1")),
        "{items}"
    );
    assert_eq!(
        conf.get_child("nick", BOOKMARKS)
            .map(|n| n.text_content())
            .as_deref(),
        Some("Puck")
    );
    // Bookmarks are private: another account cannot read them (XEP-0402 section 3.2, whitelist).
    let denied = get_items(&mut bob, &me, BOOKMARKS).await;
    assert_eq!(denied.get_attr("type"), Some("error"), "{denied}");

    // The reverse: a XEP-0402 client adds a room; a XEP-0049 client sees both, the URL kept.
    let orchard = publish_with_options(
        BOOKMARKS,
        "orchard@conference.shakespeare.lit",
        parse(
            "<conference xmlns='urn:xmpp:bookmarks:1' name='The Orchard' autojoin='true'><nick>Romeo</nick></conference>",
        ),
        &[
            ("pubsub#persist_items", "true"),
            ("pubsub#access_model", "whitelist"),
        ],
    );
    let r = alice
        .iq(Element::new("iq", NS_CLIENT)
            .attr("type", "set")
            .child(orchard))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let r = private_iq(&mut alice, "get", None, Element::new("storage", LEGACY)).await;
    let storage = private_result(&r);
    assert_eq!(
        legacy_rooms(storage),
        [
            "council@conference.underhill.org",
            "orchard@conference.shakespeare.lit"
        ],
        "{r}"
    );
    assert!(storage.get_child("url", LEGACY).is_some(), "{r}");
    // Retracting one (XEP-0402 section 3.4) takes it out of the XEP-0049 list, and the XEP-0048
    // PEP node follows (#compat-pep).
    let retract = Element::new("pubsub", PS).child(
        Element::new("retract", PS)
            .attr("node", BOOKMARKS)
            .attr("notify", "true")
            .child(Element::new("item", PS).attr("id", "council@conference.underhill.org")),
    );
    let r = alice
        .iq(Element::new("iq", NS_CLIENT)
            .attr("type", "set")
            .child(retract))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let r = private_iq(&mut alice, "get", None, Element::new("storage", LEGACY)).await;
    assert_eq!(
        legacy_rooms(private_result(&r)),
        ["orchard@conference.shakespeare.lit"],
        "{r}"
    );
    let pep_legacy = get_items(&mut alice, &me, LEGACY).await;
    let stored = pep_legacy
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("items", PS))
        .and_then(|i| i.children().next())
        .and_then(|i| i.get_child("storage", LEGACY))
        .unwrap_or_else(|| panic!("no XEP-0048 PEP list: {pep_legacy}"));
    assert_eq!(legacy_rooms(stored), ["orchard@conference.shakespeare.lit"]);
    // A XEP-0048 PEP client's new list reaches XEP-0402 too.
    let list = publish_with_options(
        LEGACY,
        "current",
        parse(
            "<storage xmlns='storage:bookmarks'><conference jid='heath@conference.shakespeare.lit' autojoin='false'/></storage>",
        ),
        &[
            ("pubsub#persist_items", "true"),
            ("pubsub#access_model", "whitelist"),
        ],
    );
    let r = alice
        .iq(Element::new("iq", NS_CLIENT)
            .attr("type", "set")
            .child(list))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    assert_eq!(
        item_ids(&get_items(&mut alice, &me, BOOKMARKS).await),
        ["heath@conference.shakespeare.lit"]
    );
}
