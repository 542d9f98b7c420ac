//! PEP (XEP-0163) with contacts on another server: two real servers federating over s2s on
//! loopback (tests/common/federation.rs), stratus serving PEP for localhost's users, the
//! contacts on `remote.test`. Both directions: Prosody's users with contacts on ejabberd, and
//! ejabberd's with contacts on Prosody.
//!
//! What the built-in PEP services do across servers is the behaviour to match: `+notify` events
//! and last items reach a contact on the other server (XEP-0163 sections 4.3.1 and 4.3.2), access
//! models are applied to them as to local contacts (XEP-0060 section 4.5), and a stranger there
//! gets nothing.

mod common;

use common::federation::{Federation, REMOTE_DOMAIN};
use common::pep::*;
use common::*;
use stratus::client::{Client, NS_CLIENT};
use stratus::xml::Element;

const ROSTER: &str = "jabber:iq:roster";
const MOOD: &str = "http://jabber.org/protocol/mood";
const DEVICES: &str = "eu.siacs.conversations.axolotl.devicelist";
const CLOSED: &str = "urn:example:closed";

fn mood(text: &str) -> Element {
    Element::new("mood", MOOD).child(Element::new(text, MOOD))
}

fn event_ids(m: &Element, owner: &str, node: &str) -> Vec<String> {
    pep_event_from(m, owner, node)
        .map(|items| {
            items
                .children()
                .filter_map(|i| i.get_attr("id").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn is_event_from(m: &Element, owner: &str) -> bool {
    m.name() == "message"
        && m.get_attr("from") == Some(owner)
        && m.get_child("event", EVENT).is_some()
}

/// Waits for a roster push (RFC 6121 2.1.6) of `contact` with this subscription.
async fn roster_push(c: &mut Client, contact: &str, subscription: &str) {
    let push = c
        .wait_for(T, |s| {
            s.name() == "iq"
                && s.get_attr("type") == Some("set")
                && s.get_child("query", ROSTER).is_some_and(|q| {
                    q.children().any(|i| {
                        i.get_attr("jid") == Some(contact)
                            && i.get_attr("subscription") == Some(subscription)
                    })
                })
        })
        .await
        .unwrap_or_else(|e| panic!("no roster push of {contact} as {subscription}: {e}"));
    let ack = Element::new("iq", NS_CLIENT)
        .attr("type", "result")
        .attr("id", push.get_attr("id").unwrap_or_default());
    c.send(&ack).await.unwrap();
}

macro_rules! both_directions {
    ($($name:ident),* $(,)?) => {
        mod prosody_home_ejabberd_remote {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(Kind::Prosody, Kind::Ejabberd).await } )*
        }
        mod ejabberd_home_prosody_remote {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(Kind::Ejabberd, Kind::Prosody).await } )*
        }
    };
}

both_directions!(pep_with_contacts_on_another_server);

/// alice@localhost has PEP from stratus; bob@remote.test is her contact (subscription both);
/// carol@remote.test is a stranger who sends alice a directed presence with the same caps.
async fn pep_with_contacts_on_another_server(home: Kind, remote: Kind) {
    let fed = Federation::start(home, remote);
    let _stratus = Stratus::start(&fed.home, "pubsub.localhost");
    let mut alice = new_user(&fed.home, "alice").await;
    let mut bob = new_user(&fed.remote, "bob").await;
    let mut carol = new_user(&fed.remote, "carol").await;
    let (a, b) = (bare(&alice), bare(&bob));
    assert!(b.ends_with(REMOTE_DOMAIN), "{b}");
    for c in [&mut alice, &mut bob, &mut carol] {
        interested_and_online(c).await;
    }
    // RFC 6121 3.1 across servers: each subscribes to the other and the other approves.
    presence_subscribe(&mut bob, &mut alice).await;
    presence_subscribe(&mut alice, &mut bob).await;
    roster_push(&mut alice, &b, "both").await;

    // The contact's caps, learnt from the presence the server forwards (XEP-0356 roster
    // presence) and asked once through the servers (XEP-0115 6.3): +notify for the mood and
    // OMEMO device list nodes.
    let mood_notify = format!("{MOOD}+notify");
    let devices_notify = format!("{DEVICES}+notify");
    let closed_notify = format!("{CLOSED}+notify");
    let bob_features = [DISCO_INFO, &mood_notify, &devices_notify, &closed_notify];
    // XEP-0115 5.1: a real verification string, so that stratus may cache the features by it.
    let bob_ver = stratus::pep::caps::sha1_ver(&disco_info(&bob_features)).unwrap();
    // alice (online) receives bob's presence: her server forwards it to stratus, which asks
    // bob for the features of his caps; bob answers (his own server may ask too).
    bob.send(&caps_presence(None, &bob_ver)).await.unwrap();
    answering_caps(&mut bob, &bob_features, |s| {
        s.name() == "iq" && s.get_attr("from") == Some("pubsub.localhost")
    })
    .await;
    // A stranger with the same interests, by directed presence to alice.
    let carol_ver = unique("carol-ver");
    carol
        .send(&caps_presence(Some(&a), &carol_ver))
        .await
        .unwrap();
    alice
        .wait_for(T, |p| {
            p.name() == "presence" && p.get_attr("from") == Some(carol.jid().as_str())
        })
        .await
        .expect("carol's directed presence");
    online_with_caps(&mut alice, &unique("alice-ver"), &[]).await;

    // XEP-0163 4.3.1: a publish reaches the contact's +notify resource on the other server,
    // from alice's bare JID, under the default presence access model.
    publish(&mut alice, MOOD, "m1", mood("happy"), &[]).await;
    let (ev, _) = answering_caps(&mut bob, &bob_features, |s| is_event_from(s, &a)).await;
    assert_eq!(event_ids(&ev, &a, MOOD), ["m1"], "{ev}");
    assert_eq!(item_ids(&get_items(&mut bob, &a, MOOD).await), ["m1"]);
    // XEP-0060 6.5.9.4 (presence access): the stranger may not read, and got no event. The
    // answer comes back from alice's bare JID, on the path events take.
    let denied = get_items(&mut carol, &a, MOOD).await;
    assert_eq!(
        error_condition(&denied).as_deref(),
        Some("not-authorized"),
        "{denied}"
    );
    assert_eq!(
        app_error(&denied).as_deref(),
        Some("presence-subscription-required")
    );
    assert!(
        !carol.pending_contains(|s| is_event_from(s, &a)),
        "carol got an event"
    );

    // XEP-0060 4.5 (whitelist): a contact not on the list gets no event and may not read.
    publish(
        &mut alice,
        CLOSED,
        "c1",
        Element::new("secret", CLOSED),
        &[("pubsub#access_model", "whitelist")],
    )
    .await;
    let closed = get_items(&mut bob, &a, CLOSED).await;
    assert_eq!(
        error_condition(&closed).as_deref(),
        Some("not-allowed"),
        "{closed}"
    );
    assert_eq!(
        app_error(&closed).as_deref(),
        Some("closed-node"),
        "{closed}"
    );
    assert!(
        !bob.pending_contains(|s| !event_ids(s, &a, CLOSED).is_empty()),
        "bob got an event of the whitelist node"
    );

    // An OMEMO device list (XEP-0384 section 5.3.1) published with open access: the contact gets
    // the event, and the stranger may read it (open access needs no subscription).
    let list =
        Element::new("list", DEVICES).child(Element::new("device", DEVICES).attr("id", "12345"));
    publish(
        &mut alice,
        DEVICES,
        "current",
        list,
        &[("pubsub#access_model", "open")],
    )
    .await;
    let (ev, _) = answering_caps(&mut bob, &bob_features, |s| {
        !event_ids(s, &a, DEVICES).is_empty()
    })
    .await;
    let device = pep_event_from(&ev, &a, DEVICES)
        .and_then(|i| i.children().next())
        .and_then(|i| i.get_child("list", DEVICES))
        .and_then(|l| l.get_child("device", DEVICES))
        .and_then(|d| d.get_attr("id"));
    assert_eq!(device, Some("12345"), "{ev}");
    assert_eq!(
        item_ids(&get_items(&mut carol, &a, DEVICES).await),
        ["current"]
    );
    assert!(
        !carol.pending_contains(|s| is_event_from(s, &a)),
        "carol got an event"
    );

    // XEP-0163 4.3.2: a new resource of the contact gets the last item of each node it wants
    // when it comes online, with the caps known by their ver (no second query from stratus).
    let mut bob2 = login(&fed.remote, bob.jid().node().unwrap(), "second").await;
    interested_and_online(&mut bob2).await;
    bob2.send(&caps_presence(None, &bob_ver)).await.unwrap();
    let (ev, askers) = answering_caps(&mut bob2, &bob_features, |s| {
        !event_ids(s, &a, MOOD).is_empty()
    })
    .await;
    assert_eq!(event_ids(&ev, &a, MOOD), ["m1"], "{ev}");
    assert!(
        !askers.iter().any(|f| f == "pubsub.localhost"),
        "stratus asked again for a caps ver it knew: {askers:?}"
    );
    // RFC 6121 4.5: unavailable, then available again: a new session, owed the last item again
    // (had the unavailable been missed, nothing would have changed for stratus).
    bob2.send(&Element::new("presence", NS_CLIENT).attr("type", "unavailable"))
        .await
        .unwrap();
    alice
        .wait_for(T, |p| {
            p.name() == "presence"
                && p.get_attr("from") == Some(bob2.jid().as_str())
                && p.get_attr("type") == Some("unavailable")
        })
        .await
        .expect("bob's second resource going away");
    bob2.send(&caps_presence(None, &bob_ver)).await.unwrap();
    let (ev, _) = answering_caps(&mut bob2, &bob_features, |s| {
        !event_ids(s, &a, MOOD).is_empty()
    })
    .await;
    assert_eq!(event_ids(&ev, &a, MOOD), ["m1"], "{ev}");

    // RFC 6121 3.3: bob unsubscribes from alice's presence; she sees him as `to` only, and he
    // gets neither events nor items of her presence-access node any more.
    bob.send(
        &Element::new("presence", NS_CLIENT)
            .attr("to", a.clone())
            .attr("type", "unsubscribe"),
    )
    .await
    .unwrap();
    roster_push(&mut alice, &b, "to").await;
    publish(&mut alice, MOOD, "m2", mood("sad"), &[]).await;
    let after = get_items(&mut bob, &a, MOOD).await;
    assert_eq!(
        app_error(&after).as_deref(),
        Some("presence-subscription-required"),
        "{after}"
    );
    assert!(
        !bob.pending_contains(|s| event_ids(s, &a, MOOD) == ["m2"]),
        "bob got an event after unsubscribing"
    );
    drop(bob2);
}

#[test]
fn the_test_dns_answers_a_srv_empty_and_nxdomain() {
    common::federation::self_test();
}
