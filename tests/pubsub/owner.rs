//! The owner's use cases: create, configure, delete, affiliations, access changes (XEP-0060 8.1-8.4, 8.9).

use super::*;

/// XEP-0060 4.5 and 8.2: bob subscribed while the node was open; the owner makes it whitelist
/// (bob not on it). Every delivery is a read: bob is told his subscription ended (8.8.4) and gets
/// no item published after, and a member still does (issue 13, the first leak).
pub async fn access_change_stops_delivery(kind: Kind) {
    let e = env(kind).await;
    let svc = e.svc.as_str();
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    let mut carol = new_user(e.server, "carol").await;
    create(&mut alice, svc, "closing").await;
    assert_result(&subscribe(&mut bob, svc, "closing").await);
    assert_result(&subscribe(&mut carol, svc, "closing").await);
    assert_result(&publish(&mut alice, svc, "closing", Some("before"), "open").await);
    event(&mut bob).await;
    event(&mut carol).await;
    let member = iq(
        "set",
        svc,
        pubsub_el(
            OWNER,
            Element::new("affiliations", OWNER)
                .attr("node", "closing")
                .child(
                    Element::new("affiliation", OWNER)
                        .attr("jid", carol.jid().to_bare().to_string())
                        .attr("affiliation", "member"),
                ),
        ),
    );
    assert_result(&alice.iq(member).await.unwrap());
    assert_result(
        &alice
            .iq(set_config(
                "closing",
                svc,
                &[("pubsub#access_model", "whitelist")],
            ))
            .await
            .unwrap(),
    );
    let ended = bob
        .wait_for(T, |m| {
            m.get_child("event", EVENT)
                .and_then(|ev| ev.get_child("subscription", EVENT))
                .is_some()
        })
        .await
        .expect("bob is told his subscription ended");
    let sub = ended
        .get_child("event", EVENT)
        .unwrap()
        .get_child("subscription", EVENT)
        .unwrap();
    assert_eq!(sub.get_attr("subscription"), Some("none"), "{ended}");
    assert_result(&publish(&mut alice, svc, "closing", Some("after"), "closed").await);
    let got = event(&mut carol).await;
    assert!(got.to_string().contains("after"), "{got}");
    ping_answered(&mut bob, svc).await;
    assert!(
        !bob.pending_contains(items_event),
        "a non-member received an item of a whitelist node"
    );
}

/// 8.1.1 create, 8.1.2 instant node, 8.1.3.2 conflict, 8.1.3 create-and-configure.
pub async fn create_errors_and_instant_node(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    create(&mut alice, &e.svc, "dup").await;
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(PS, Element::new("create", PS).attr("node", "dup")),
        ))
        .await
        .unwrap();
    assert_error(&r, "conflict", None);
    let r = alice
        .iq(iq("set", &e.svc, pubsub_el(PS, Element::new("create", PS))))
        .await
        .unwrap();
    assert_result(&r);
    let name = r
        .get_child("pubsub", PS)
        .unwrap()
        .get_child("create", PS)
        .unwrap()
        .get_attr("node")
        .unwrap()
        .to_owned();
    assert!(!name.is_empty());
    // The instant node exists: publishing to it works.
    assert_result(&publish(&mut alice, &e.svc, &name, None, "x").await);
    // Create and configure in one request.
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            Element::new("pubsub", PS)
                .child(Element::new("create", PS).attr("node", "configured"))
                .child(Element::new("configure", PS).child(config_form(&[
                    ("pubsub#max_items", "2"),
                    ("pubsub#title", "T"),
                ]))),
        ))
        .await
        .unwrap();
    assert_result(&r);
    let r = alice
        .iq(iq(
            "get",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("configure", OWNER).attr("node", "configured"),
            ),
        ))
        .await
        .unwrap();
    let form = r
        .get_child("pubsub", OWNER)
        .unwrap()
        .get_child("configure", OWNER)
        .unwrap()
        .get_child("x", DATA)
        .unwrap();
    let value = |var: &str| {
        form.children()
            .find(|f| f.get_attr("var") == Some(var))
            .unwrap()
            .get_child("value", DATA)
            .unwrap()
            .text_content()
    };
    assert_eq!(value("pubsub#max_items"), "2");
    assert_eq!(value("pubsub#title"), "T");
    // An invalid value is not-acceptable (8.2.5.3) and creates nothing.
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            Element::new("pubsub", PS)
                .child(Element::new("create", PS).attr("node", "bad"))
                .child(
                    Element::new("configure", PS)
                        .child(config_form(&[("pubsub#max_items", "lots")])),
                ),
        ))
        .await
        .unwrap();
    assert_error(&r, "not-acceptable", None);
}

/// 8.2 configure (get form, submit form), 8.2.5.2 configuration notification, 8.2.3.2 forbidden,
/// deliver_payloads=0 notifications without payload (7.1.2.2).
pub async fn configure_get_set_and_notify(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "n").await;
    assert_result(&subscribe(&mut bob, &e.svc, "n").await);
    let r = bob
        .iq(iq(
            "get",
            &e.svc,
            pubsub_el(OWNER, Element::new("configure", OWNER).attr("node", "n")),
        ))
        .await
        .unwrap();
    assert_error(&r, "forbidden", None);
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("configure", OWNER)
                    .attr("node", "n")
                    .child(config_form(&[
                        ("pubsub#notify_config", "1"),
                        ("pubsub#deliver_payloads", "0"),
                    ])),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    let ev = event(&mut bob).await;
    assert!(
        ev.get_child("event", EVENT)
            .unwrap()
            .get_child("configuration", EVENT)
            .is_some(),
        "{ev}"
    );
    assert_result(&publish(&mut alice, &e.svc, "n", Some("p"), "secret").await);
    let ev = event(&mut bob).await;
    let item = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap()
        .get_child("item", EVENT)
        .unwrap();
    assert_eq!(item.get_attr("id"), Some("p"));
    assert_eq!(
        item.children().count(),
        0,
        "deliver_payloads=0 sends only the id: {ev}"
    );
    // The default node configuration (8.3).
    let r = alice
        .iq(iq(
            "get",
            &e.svc,
            pubsub_el(OWNER, Element::new("default", OWNER)),
        ))
        .await
        .unwrap();
    assert!(
        r.get_child("pubsub", OWNER)
            .unwrap()
            .get_child("default", OWNER)
            .unwrap()
            .get_child("x", DATA)
            .is_some()
    );
}

/// 8.4 delete with redirect and notification (notify_delete), 8.4.3.1 forbidden.
pub async fn delete_with_redirect(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "old").await;
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("configure", OWNER)
                    .attr("node", "old")
                    .child(config_form(&[("pubsub#notify_delete", "1")])),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    assert_result(&subscribe(&mut bob, &e.svc, "old").await);
    let r = bob
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(OWNER, Element::new("delete", OWNER).attr("node", "old")),
        ))
        .await
        .unwrap();
    assert_error(&r, "forbidden", None);
    let redirect = format!("xmpp:{}?;node=new", e.svc);
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("delete", OWNER)
                    .attr("node", "old")
                    .child(Element::new("redirect", OWNER).attr("uri", redirect.clone())),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    let ev = event(&mut bob).await;
    let del = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("delete", EVENT)
        .unwrap();
    assert_eq!(del.get_attr("node"), Some("old"));
    assert_eq!(
        del.get_child("redirect", EVENT).unwrap().get_attr("uri"),
        Some(redirect.as_str())
    );
    assert_error(
        &publish(&mut alice, &e.svc, "old", None, "x").await,
        "item-not-found",
        None,
    );
}

/// 8.9 affiliations (get/set), publisher may publish, outcast is blocked (6.1.3.8),
/// whitelist access model (6.1.3.4 closed-node) with member affiliation.
pub async fn affiliations_and_whitelist(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    let mut carol = new_user(e.server, "carol").await;
    create(&mut alice, &e.svc, "n").await;
    let bob_bare = bob.jid().to_bare().to_string();
    let carol_bare = carol.jid().to_bare().to_string();
    let set_aff = |jid: &str, aff: &str| {
        iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("affiliations", OWNER).attr("node", "n").child(
                    Element::new("affiliation", OWNER)
                        .attr("jid", jid)
                        .attr("affiliation", aff),
                ),
            ),
        )
    };
    assert_result(&alice.iq(set_aff(&bob_bare, "publisher")).await.unwrap());
    assert_result(&publish(&mut bob, &e.svc, "n", None, "by bob").await);
    let r = alice
        .iq(iq(
            "get",
            &e.svc,
            pubsub_el(OWNER, Element::new("affiliations", OWNER).attr("node", "n")),
        ))
        .await
        .unwrap();
    let affs = r
        .get_child("pubsub", OWNER)
        .unwrap()
        .get_child("affiliations", OWNER)
        .unwrap();
    assert!(
        affs.children()
            .any(|a| a.get_attr("jid") == Some(bob_bare.as_str())
                && a.get_attr("affiliation") == Some("publisher")),
        "{r}"
    );
    assert_result(&alice.iq(set_aff(&carol_bare, "outcast")).await.unwrap());
    assert_error(&subscribe(&mut carol, &e.svc, "n").await, "forbidden", None);
    // Whitelist: strangers are refused, members are let in.
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("configure", OWNER)
                    .attr("node", "n")
                    .child(config_form(&[("pubsub#access_model", "whitelist")])),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    let mut dave = new_user(e.server, "dave").await;
    assert_error(
        &subscribe(&mut dave, &e.svc, "n").await,
        "not-allowed",
        Some("closed-node"),
    );
    let items = get_items(&mut dave, &e.svc, "n").await;
    assert_error(&items, "not-allowed", Some("closed-node"));
    let dave_bare = dave.jid().to_bare().to_string();
    assert_result(&alice.iq(set_aff(&dave_bare, "member")).await.unwrap());
    assert_result(&subscribe(&mut dave, &e.svc, "n").await);
    // The last owner cannot be removed.
    let r = alice
        .iq(set_aff(&alice.jid().to_bare().to_string(), "none"))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("error"), "{r}");
}

/// The publish-only affiliation (4.1): may publish, may not retrieve items.
pub async fn publish_only_affiliation(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "n").await;
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("affiliations", OWNER).attr("node", "n").child(
                    Element::new("affiliation", OWNER)
                        .attr("jid", bob.jid().to_bare().to_string())
                        .attr("affiliation", "publish-only"),
                ),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    assert_result(&publish(&mut bob, &e.svc, "n", Some("b"), "by bob").await);
    let r = get_items(&mut bob, &e.svc, "n").await;
    assert_error(&r, "forbidden", None);
}
