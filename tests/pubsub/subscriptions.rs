//! Subscriptions: errors, options, approval, the owner's management (XEP-0060 5.6, 6.1-6.4, 8.6-8.8).

use super::*;

/// 6.1.3.1 invalid-jid, 6.1.3.11 item-not-found, 6.2 unsubscribe, 6.2.3.2 not-subscribed.
pub async fn subscribe_errors_and_unsubscribe(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "n").await;
    let r = bob
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                PS,
                Element::new("subscribe", PS)
                    .attr("node", "n")
                    .attr("jid", alice.jid().to_string()),
            ),
        ))
        .await
        .unwrap();
    assert_error(&r, "bad-request", Some("invalid-jid"));
    let r = subscribe(&mut bob, &e.svc, "nope").await;
    assert_error(&r, "item-not-found", None);
    assert_result(&subscribe(&mut bob, &e.svc, "n").await);
    let bob_jid = bob.jid().to_string();
    let r = bob
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                PS,
                Element::new("unsubscribe", PS)
                    .attr("node", "n")
                    .attr("jid", bob_jid.clone()),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    let r = bob
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                PS,
                Element::new("unsubscribe", PS)
                    .attr("node", "n")
                    .attr("jid", bob_jid),
            ),
        ))
        .await
        .unwrap();
    assert_error(&r, "unexpected-request", Some("not-subscribed"));
    // After unsubscribing, no more events.
    assert_result(&publish(&mut alice, &e.svc, "n", None, "x").await);
    no_event(&mut bob).await;
}

/// authorize access model: 6.1.4 pending, 8.6 approval form to the owner, approval by message,
/// 8.7 pending subscriptions visible to the owner, the subscriber is told (8.8.4).
pub async fn authorize_access_model(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    // The approval form goes to the owner's bare JID: the owner must be available.
    alice.send_presence().await.unwrap();
    create(&mut alice, &e.svc, "n").await;
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("configure", OWNER)
                    .attr("node", "n")
                    .child(config_form(&[("pubsub#access_model", "authorize")])),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    let sub = subscribe(&mut bob, &e.svc, "n").await;
    let s = sub
        .get_child("pubsub", PS)
        .unwrap()
        .get_child("subscription", PS)
        .unwrap();
    assert_eq!(s.get_attr("subscription"), Some("pending"), "{sub}");
    let items = get_items(&mut bob, &e.svc, "n").await;
    assert_error(&items, "not-authorized", Some("not-subscribed"));
    let again = subscribe(&mut bob, &e.svc, "n").await;
    assert_error(&again, "not-authorized", Some("pending-subscription"));
    // The owner gets the approval form.
    let msg = alice
        .wait_for(T, |m| {
            m.name() == "message" && m.get_child("x", DATA).is_some()
        })
        .await
        .unwrap();
    let form = msg.get_child("x", DATA).unwrap();
    let value = |var: &str| {
        form.children()
            .find(|f| f.get_attr("var") == Some(var))
            .and_then(|f| f.get_child("value", DATA))
            .map(|v| v.text_content())
    };
    assert_eq!(
        value("pubsub#subscriber_jid").as_deref(),
        Some(bob.jid().to_string().as_str())
    );
    let subid = value("pubsub#subid").unwrap();
    let pending = alice
        .iq(iq(
            "get",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("subscriptions", OWNER).attr("node", "n"),
            ),
        ))
        .await
        .unwrap();
    assert!(
        pending.to_string().contains("subscription='pending'"),
        "{pending}"
    );
    let answer = Element::new("message", NS_CLIENT)
        .attr("to", e.svc.clone())
        .child(
            Element::new("x", DATA)
                .attr("type", "submit")
                .child(
                    Element::new("field", DATA).attr("var", "FORM_TYPE").child(
                        Element::new("value", DATA)
                            .text("http://jabber.org/protocol/pubsub#subscribe_authorization"),
                    ),
                )
                .child(
                    Element::new("field", DATA)
                        .attr("var", "pubsub#subid")
                        .child(Element::new("value", DATA).text(subid)),
                )
                .child(
                    Element::new("field", DATA)
                        .attr("var", "pubsub#node")
                        .child(Element::new("value", DATA).text("n")),
                )
                .child(
                    Element::new("field", DATA)
                        .attr("var", "pubsub#subscriber_jid")
                        .child(Element::new("value", DATA).text(bob.jid().to_string())),
                )
                .child(
                    Element::new("field", DATA)
                        .attr("var", "pubsub#allow")
                        .child(Element::new("value", DATA).text("true")),
                ),
        );
    alice.send(&answer).await.unwrap();
    let ev = event(&mut bob).await;
    let s = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("subscription", EVENT)
        .unwrap();
    assert_eq!(s.get_attr("subscription"), Some("subscribed"), "{ev}");
    assert_result(&publish(&mut alice, &e.svc, "n", None, "for approved").await);
    event(&mut bob).await;
}

/// 5.6 a user's subscriptions, 5.7 a user's affiliations.
pub async fn user_subscriptions_and_affiliations(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "a").await;
    create(&mut alice, &e.svc, "b").await;
    assert_result(&subscribe(&mut bob, &e.svc, "a").await);
    assert_result(&subscribe(&mut bob, &e.svc, "b").await);
    let r = bob
        .iq(iq(
            "get",
            &e.svc,
            pubsub_el(PS, Element::new("subscriptions", PS)),
        ))
        .await
        .unwrap();
    let mut nodes: Vec<_> = r
        .get_child("pubsub", PS)
        .unwrap()
        .get_child("subscriptions", PS)
        .unwrap()
        .children()
        .map(|s| s.get_attr("node").unwrap().to_owned())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["a", "b"]);
    let r = alice
        .iq(iq(
            "get",
            &e.svc,
            pubsub_el(PS, Element::new("affiliations", PS)),
        ))
        .await
        .unwrap();
    let affs: Vec<_> = r
        .get_child("pubsub", PS)
        .unwrap()
        .get_child("affiliations", PS)
        .unwrap()
        .children()
        .map(|a| {
            (
                a.get_attr("node").unwrap().to_owned(),
                a.get_attr("affiliation").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(affs.len(), 2);
    assert!(affs.iter().all(|(_, a)| a == "owner"));
}

/// 6.3 subscription options: get the form, set deliver=false, no more notifications;
/// 6.4 default subscription options.
pub async fn subscription_options(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "n").await;
    assert_result(&subscribe(&mut bob, &e.svc, "n").await);
    let bob_jid = bob.jid().to_string();
    let r = bob
        .iq(iq(
            "get",
            &e.svc,
            pubsub_el(
                PS,
                Element::new("options", PS)
                    .attr("node", "n")
                    .attr("jid", bob_jid.clone()),
            ),
        ))
        .await
        .unwrap();
    assert!(r.to_string().contains("pubsub#subscribe_options"), "{r}");
    let form = Element::new("x", DATA)
        .attr("type", "submit")
        .child(Element::new("field", DATA).attr("var", "FORM_TYPE").child(
            Element::new("value", DATA).text("http://jabber.org/protocol/pubsub#subscribe_options"),
        ))
        .child(
            Element::new("field", DATA)
                .attr("var", "pubsub#deliver")
                .child(Element::new("value", DATA).text("0")),
        );
    let r = bob
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                PS,
                Element::new("options", PS)
                    .attr("node", "n")
                    .attr("jid", bob_jid)
                    .child(form),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    assert_result(&publish(&mut alice, &e.svc, "n", None, "quiet").await);
    no_event(&mut bob).await;
    let r = bob
        .iq(iq(
            "get",
            &e.svc,
            pubsub_el(PS, Element::new("default", PS)),
        ))
        .await
        .unwrap();
    assert_result(&r);
}

/// 8.8.2 the owner modifies subscriptions: subscribing someone, then removing them; the
/// subscriber is told (8.8.4) and events follow the new state.
pub async fn owner_manages_subscriptions(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "n").await;
    let bob_jid = bob.jid().to_string();
    let set = |state: &str| {
        iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("subscriptions", OWNER)
                    .attr("node", "n")
                    .child(
                        Element::new("subscription", OWNER)
                            .attr("jid", bob_jid.clone())
                            .attr("subscription", state),
                    ),
            ),
        )
    };
    let r = bob.iq(set("subscribed")).await.unwrap();
    assert_error(&r, "forbidden", None);
    assert_result(&alice.iq(set("subscribed")).await.unwrap());
    let ev = event(&mut bob).await;
    let s = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("subscription", EVENT)
        .unwrap();
    assert_eq!(s.get_attr("subscription"), Some("subscribed"), "{ev}");
    assert_result(&publish(&mut alice, &e.svc, "n", Some("x"), "for bob").await);
    let ev = event(&mut bob).await;
    assert!(
        ev.get_child("event", EVENT)
            .unwrap()
            .get_child("items", EVENT)
            .is_some(),
        "{ev}"
    );
    assert_result(&alice.iq(set("none")).await.unwrap());
    let ev = event(&mut bob).await;
    let s = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("subscription", EVENT)
        .unwrap();
    assert_eq!(s.get_attr("subscription"), Some("none"), "{ev}");
    assert_result(&publish(&mut alice, &e.svc, "n", Some("y"), "not for bob").await);
    no_event(&mut bob).await;
}
