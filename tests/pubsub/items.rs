//! Publishing and retrieving items (XEP-0060 6.5, 7.1, 7.2, 16.4.3 fields).

use super::*;

/// 7.1 publish, 6.1 subscribe, 7.1.2.1 event with payload, 6.1.7 last item on subscribe.
pub async fn publish_subscribe_and_event(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "news").await;
    let r = publish(&mut alice, &e.svc, "news", Some("first"), "one").await;
    assert_result(&r);
    let sub = subscribe(&mut bob, &e.svc, "news").await;
    assert_result(&sub);
    let s = sub
        .get_child("pubsub", PS)
        .unwrap()
        .get_child("subscription", PS)
        .unwrap();
    assert_eq!(s.get_attr("subscription"), Some("subscribed"));
    assert_eq!(s.get_attr("jid"), Some(bob.jid().to_string().as_str()));
    assert!(s.get_attr("subid").is_some());
    // 6.1.7: send_last_published_item on_sub (the default) delivers "first".
    let last = event(&mut bob).await;
    let item = last
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap()
        .get_child("item", EVENT)
        .unwrap();
    assert_eq!(item.get_attr("id"), Some("first"));
    // 7.1.2: a new publish reaches the subscriber with the payload, from the service.
    let r = publish(&mut alice, &e.svc, "news", None, "two").await;
    let id = r
        .get_child("pubsub", PS)
        .unwrap()
        .get_child("publish", PS)
        .unwrap()
        .get_child("item", PS)
        .unwrap()
        .get_attr("id")
        .unwrap()
        .to_owned();
    let ev = event(&mut bob).await;
    assert_eq!(ev.get_attr("from"), Some(e.svc.as_str()));
    let items = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap();
    assert_eq!(items.get_attr("node"), Some("news"));
    let item = items.get_child("item", EVENT).unwrap();
    assert_eq!(item.get_attr("id"), Some(id.as_str()));
    assert_eq!(
        item.get_child("entry", "urn:example")
            .unwrap()
            .text_content(),
        "two"
    );
    // Republishing an existing id overwrites it (7.1.2).
    assert_result(&publish(&mut alice, &e.svc, "news", Some("first"), "one again").await);
    let ev = event(&mut bob).await;
    let item = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap()
        .get_child("item", EVENT)
        .unwrap();
    assert_eq!(
        item.get_child("entry", "urn:example")
            .unwrap()
            .text_content(),
        "one again"
    );
}

/// 6.5.2 all items, 6.5.7 max_items, 6.5.8 particular items, 6.5.9.11 node does not exist.
pub async fn retrieve_items_max_and_by_id(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "n").await;
    for i in 1..=4 {
        assert_result(
            &publish(
                &mut alice,
                &e.svc,
                "n",
                Some(&format!("i{i}")),
                &format!("body {i}"),
            )
            .await,
        );
    }
    let all = get_items(&mut bob, &e.svc, "n").await;
    let ids = item_ids(&all);
    assert_eq!(ids, ["i1", "i2", "i3", "i4"]);
    let two = bob.iq(x(&format!("<iq type='get' to='{}'><pubsub xmlns='{PS}'><items node='n' max_items='2'/></pubsub></iq>", e.svc))).await.unwrap();
    let items = two
        .get_child("pubsub", PS)
        .unwrap()
        .get_child("items", PS)
        .unwrap();
    let ids: Vec<_> = items
        .children()
        .map(|i| i.get_attr("id").unwrap())
        .collect();
    assert_eq!(ids, ["i3", "i4"], "the two most recent");
    assert_eq!(
        items
            .children()
            .last()
            .unwrap()
            .get_child("entry", "urn:example")
            .unwrap()
            .text_content(),
        "body 4"
    );
    let one = bob
        .iq(x(&format!("<iq type='get' to='{}'><pubsub xmlns='{PS}'><items node='n'><item id='i2'/></items></pubsub></iq>", e.svc)))
        .await
        .unwrap();
    let ids = item_ids(&one);
    assert_eq!(ids, ["i2"]);
    let missing = get_items(&mut bob, &e.svc, "nope").await;
    assert_error(&missing, "item-not-found", None);
}

/// 7.2 retract with notify (7.2.2.1), 8.5 purge with notification, 7.2.3.1 insufficient privileges.
pub async fn retract_and_purge_notify(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "n").await;
    assert_result(&subscribe(&mut bob, &e.svc, "n").await);
    assert_result(&publish(&mut alice, &e.svc, "n", Some("a"), "A").await);
    event(&mut bob).await;
    let r = bob
        .iq(x(&format!("<iq type='set' to='{}'><pubsub xmlns='{PS}'><retract node='n'><item id='a'/></retract></pubsub></iq>", e.svc)))
        .await
        .unwrap();
    assert_error(&r, "forbidden", None);
    let r = alice
        .iq(x(&format!("<iq type='set' to='{}'><pubsub xmlns='{PS}'><retract node='n' notify='true'><item id='a'/></retract></pubsub></iq>", e.svc)))
        .await
        .unwrap();
    assert_result(&r);
    let ev = event(&mut bob).await;
    let retract = ev
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap()
        .get_child("retract", EVENT)
        .unwrap();
    assert_eq!(retract.get_attr("id"), Some("a"));
    let r = alice
        .iq(x(&format!("<iq type='set' to='{}'><pubsub xmlns='{PS}'><retract node='n'><item id='a'/></retract></pubsub></iq>", e.svc)))
        .await
        .unwrap();
    assert_error(&r, "item-not-found", None);
    assert_result(&publish(&mut alice, &e.svc, "n", Some("b"), "B").await);
    event(&mut bob).await;
    let r = bob
        .iq(x(&format!(
            "<iq type='set' to='{}'><pubsub xmlns='{OWNER}'><purge node='n'/></pubsub></iq>",
            e.svc
        )))
        .await
        .unwrap();
    assert_error(&r, "forbidden", None);
    let r = alice
        .iq(x(&format!(
            "<iq type='set' to='{}'><pubsub xmlns='{OWNER}'><purge node='n'/></pubsub></iq>",
            e.svc
        )))
        .await
        .unwrap();
    assert_result(&r);
    let ev = event(&mut bob).await;
    assert!(
        ev.get_child("event", EVENT)
            .unwrap()
            .get_child("purge", EVENT)
            .is_some(),
        "{ev}"
    );
    let all = get_items(&mut bob, &e.svc, "n").await;
    assert_eq!(
        all.get_child("pubsub", PS)
            .unwrap()
            .get_child("items", PS)
            .unwrap()
            .children()
            .count(),
        0
    );
}

/// 7.1.3.1 forbidden, 7.1.3.3 item-not-found, 7.1.3.4 payload-too-big, 7.1.3.5 invalid-payload,
/// 7.1.3.6 item-required / payload-required.
pub async fn publish_errors(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "n").await;
    assert_error(
        &publish(&mut bob, &e.svc, "n", None, "x").await,
        "forbidden",
        None,
    );
    assert_error(
        &publish(&mut alice, &e.svc, "missing", None, "x").await,
        "item-not-found",
        None,
    );
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("configure", OWNER)
                    .attr("node", "n")
                    .child(config_form(&[("pubsub#max_payload_size", "1024")])),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    let big = "x".repeat(2048);
    let r = publish(&mut alice, &e.svc, "n", None, &big).await;
    assert_error(&r, "not-acceptable", Some("payload-too-big"));
    let two = alice
        .iq(x(&format!(
            "<iq type='set' to='{}'><pubsub xmlns='{PS}'><publish node='n'><item><a xmlns='urn:a'/><b xmlns='urn:b'/></item></publish></pubsub></iq>",
            e.svc
        )))
        .await
        .unwrap();
    assert_error(&two, "bad-request", Some("invalid-payload"));
    let none = alice
        .iq(x(&format!(
            "<iq type='set' to='{}'><pubsub xmlns='{PS}'><publish node='n'/></pubsub></iq>",
            e.svc
        )))
        .await
        .unwrap();
    assert_error(&none, "bad-request", Some("item-required"));
    let empty = alice
        .iq(x(&format!("<iq type='set' to='{}'><pubsub xmlns='{PS}'><publish node='n'><item id='e'/></publish></pubsub></iq>", e.svc)))
        .await
        .unwrap();
    assert_error(&empty, "bad-request", Some("payload-required"));
}

/// 7.1.5 publishing options: a matching precondition publishes, a different one is refused
/// with conflict + precondition-not-met.
pub async fn publish_options_preconditions(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    create(&mut alice, &e.svc, "n").await;
    let with_options = |access: &str| {
        x(&format!(
            "<iq type='set' to='{}'><pubsub xmlns='{PS}'><publish node='n'><item id='1'><e xmlns='urn:e'/></item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#access_model'><value>{access}</value></field></x></publish-options></pubsub></iq>",
            e.svc
        ))
    };
    assert_result(&alice.iq(with_options("open")).await.unwrap());
    let r = alice.iq(with_options("whitelist")).await.unwrap();
    assert_error(&r, "conflict", Some("precondition-not-met"));
}

/// Node configuration fields at work (16.4.3): max_items trims, item_expire hides old items,
/// notification_type chooses the message type, persist_items=0 keeps nothing, and several items
/// may be published in one request.
pub async fn node_configuration_fields(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create(&mut alice, &e.svc, "n").await;
    assert_result(
        &alice
            .iq(set_config(
                "n",
                &e.svc,
                &[
                    ("pubsub#max_items", "2"),
                    ("pubsub#notification_type", "normal"),
                ],
            ))
            .await
            .unwrap(),
    );
    assert_result(&subscribe(&mut bob, &e.svc, "n").await);
    let two = alice
        .iq(x(&format!(
            "<iq type='set' to='{}'><pubsub xmlns='{PS}'><publish node='n'><item id='a'><e xmlns='urn:e'>1</e></item><item id='b'><e xmlns='urn:e'>2</e></item><item id='c'><e xmlns='urn:e'>3</e></item></publish></pubsub></iq>",
            e.svc
        )))
        .await
        .unwrap();
    assert_result(&two);
    let ids: Vec<_> = two
        .get_child("pubsub", PS)
        .unwrap()
        .get_child("publish", PS)
        .unwrap()
        .children()
        .map(|i| i.get_attr("id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let ev = event(&mut bob).await;
    // RFC 6121 5.2.2: no type means normal (ejabberd drops the explicit default).
    assert!(
        matches!(ev.get_attr("type"), None | Some("normal")),
        "notification_type normal: {ev}"
    );
    assert_eq!(
        ev.get_child("event", EVENT)
            .unwrap()
            .get_child("items", EVENT)
            .unwrap()
            .children()
            .count(),
        3
    );
    let all = get_items(&mut alice, &e.svc, "n").await;
    let kept = item_ids(&all);
    assert_eq!(kept, ["b", "c"], "max_items=2 keeps the two newest");

    create(&mut alice, &e.svc, "expiring").await;
    assert_result(
        &alice
            .iq(set_config(
                "expiring",
                &e.svc,
                &[("pubsub#item_expire", "1")],
            ))
            .await
            .unwrap(),
    );
    assert_result(&publish(&mut alice, &e.svc, "expiring", Some("old"), "x").await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get_items(&mut alice, &e.svc, "expiring").await;
    assert_eq!(
        r.get_child("pubsub", PS)
            .unwrap()
            .get_child("items", PS)
            .unwrap()
            .children()
            .count(),
        0,
        "expired: {r}"
    );

    create(&mut alice, &e.svc, "transient").await;
    assert_result(
        &alice
            .iq(set_config(
                "transient",
                &e.svc,
                &[("pubsub#persist_items", "0")],
            ))
            .await
            .unwrap(),
    );
    assert_result(&subscribe(&mut bob, &e.svc, "transient").await);
    assert_result(&publish(&mut alice, &e.svc, "transient", Some("t"), "live only").await);
    let ev = event(&mut bob).await;
    assert!(ev.to_string().contains("live only"), "{ev}");
    let r = get_items(&mut alice, &e.svc, "transient").await;
    assert_error(&r, "feature-not-implemented", Some("unsupported"));
}

/// 7.1: publishes sent back to back, without waiting for the answers (they run together and share
/// a commit on the embedded store), are each acknowledged, notified in publish order, and stored
/// in publish order (6.5: items come back oldest first).
pub async fn pipelined_publishes_keep_their_order(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    create_keeping_all(&mut alice, &e.svc, "burst").await;
    assert_result(&subscribe(&mut bob, &e.svc, "burst").await);
    let ids: Vec<String> = (0..40).map(|i| format!("b{i:02}")).collect();
    let mut sent = Vec::new();
    for id in &ids {
        let mut stanza = iq("set", &e.svc, publish_item("burst", id));
        let qid = format!("pub-{id}");
        stanza.set_attr("id", qid.clone());
        alice.send(&stanza).await.unwrap();
        sent.push(qid);
    }
    for qid in &sent {
        let r = alice
            .wait_for(T, |s| {
                s.name() == "iq" && s.get_attr("id") == Some(qid.as_str())
            })
            .await
            .unwrap();
        assert_result(&r);
    }
    let mut notified = Vec::new();
    while notified.len() < ids.len() {
        let m = event(&mut bob).await;
        notified.push(event_item_id(&m).unwrap().to_owned());
    }
    assert_eq!(notified, ids);
    let all = get_items(&mut bob, &e.svc, "burst").await;
    let stored = item_ids(&all);
    assert_eq!(stored, ids);
    // On the embedded store the queued publishes did run together (the aws pass runs them one
    // by one: its writes are not ordered by issue).
    if std::env::var("STRATUS_TEST_STORAGE").as_deref() != Ok("aws") {
        let log = e.stratus.log_text();
        assert!(log.contains("queued publishes run together"), "{log}");
    }
}

/// Node names and item ids are any string (XEP-0060 4.2, 12.13): ones with `<`, `>`, `&` and
/// quotes travel escaped in attributes; the service must read them back (an escaped `<` in an
/// attribute is well-formed XML) and answer on the same stream.
pub async fn markup_characters_in_names(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    let mut bob = new_user(e.server, "bob").await;
    let node = "a<b>&'\"c";
    create(&mut alice, &e.svc, node).await;
    assert_result(&subscribe(&mut bob, &e.svc, node).await);
    assert_result(&publish(&mut alice, &e.svc, node, Some("<i&d>"), "x").await);
    let m = event(&mut bob).await;
    assert_eq!(event_item_id(&m), Some("<i&d>"), "{m}");
    let items = get_items(&mut bob, &e.svc, node).await;
    assert_eq!(item_ids(&items), ["<i&d>"]);
}
