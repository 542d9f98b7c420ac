//! Discovery and paging (XEP-0060 5.2-5.5, 6.5.4 with XEP-0059).

use super::*;

/// 5.2 disco#items of the service lists nodes, 5.3/5.4 disco#info of a node with meta-data,
/// 5.5 items of a node, RSM on disco#items.
pub async fn disco_nodes_and_meta_data(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    for n in ["d1", "d2", "d3"] {
        create(&mut alice, &e.svc, n).await;
    }
    assert_result(&publish(&mut alice, &e.svc, "d1", Some("it"), "x").await);
    let r = alice
        .iq(x(&format!(
            "<iq type='get' to='{}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
            e.svc
        )))
        .await
        .unwrap();
    let nodes: Vec<_> = r
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children()
        .filter_map(|i| i.get_attr("node"))
        .collect();
    assert_eq!(nodes, ["d1", "d2", "d3"]);
    let r = alice
        .iq(x(&format!(
            "<iq type='get' to='{}'><query xmlns='http://jabber.org/protocol/disco#items'><set xmlns='{RSM}'><max>2</max></set></query></iq>",
            e.svc
        )))
        .await
        .unwrap();
    let q = r
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap();
    assert_eq!(q.children().filter(|i| i.name() == "item").count(), 2);
    assert_eq!(
        q.get_child("set", RSM)
            .unwrap()
            .get_child("last", RSM)
            .unwrap()
            .text_content(),
        "d2"
    );
    let r = alice.iq(x(&format!("<iq type='get' to='{}'><query xmlns='http://jabber.org/protocol/disco#info' node='d1'/></iq>", e.svc))).await.unwrap();
    let q = r
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let id = q
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(
        (id.get_attr("category"), id.get_attr("type")),
        (Some("pubsub"), Some("leaf"))
    );
    let form = q.get_child("x", DATA).unwrap();
    assert!(
        form.to_string()
            .contains("http://jabber.org/protocol/pubsub#meta-data"),
        "{form}"
    );
    assert!(
        form.to_string()
            .contains(&alice.jid().to_bare().to_string()),
        "owner listed: {form}"
    );
    let r = alice.iq(x(&format!("<iq type='get' to='{}'><query xmlns='http://jabber.org/protocol/disco#items' node='d1'/></iq>", e.svc))).await.unwrap();
    let item = r
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children()
        .next()
        .unwrap();
    assert_eq!(item.get_attr("name"), Some("it"));
    let r = alice.iq(x(&format!("<iq type='get' to='{}'><query xmlns='http://jabber.org/protocol/disco#info' node='none'/></iq>", e.svc))).await.unwrap();
    assert_error(&r, "item-not-found", None);
}

/// XEP-0059 paging over a node's items (XEP-0060 6.5.4): every item exactly once, stable order,
/// correct count and first index.
pub async fn rsm_paging_over_items(kind: Kind) {
    let e = env(kind).await;
    let mut alice = new_user(e.server, "alice").await;
    create(&mut alice, &e.svc, "paged").await;
    let r = alice
        .iq(iq(
            "set",
            &e.svc,
            pubsub_el(
                OWNER,
                Element::new("configure", OWNER)
                    .attr("node", "paged")
                    .child(config_form(&[("pubsub#max_items", "max")])),
            ),
        ))
        .await
        .unwrap();
    assert_result(&r);
    for i in 0..25 {
        assert_result(&publish(&mut alice, &e.svc, "paged", Some(&format!("p{i:02}")), "x").await);
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let set = if after.is_empty() {
            "<max>10</max>".to_owned()
        } else {
            format!("<max>10</max><after>{after}</after>")
        };
        let r = alice
            .iq(x(&format!("<iq type='get' to='{}'><pubsub xmlns='{PS}'><items node='paged'/><set xmlns='{RSM}'>{set}</set></pubsub></iq>", e.svc)))
            .await
            .unwrap();
        let ps = r.get_child("pubsub", PS).unwrap();
        let ids: Vec<String> = ps
            .get_child("items", PS)
            .unwrap()
            .children()
            .map(|i| i.get_attr("id").unwrap().to_owned())
            .collect();
        let set = ps.get_child("set", RSM).unwrap();
        assert_eq!(set.get_child("count", RSM).unwrap().text_content(), "25");
        if ids.is_empty() {
            break;
        }
        if after.is_empty() {
            assert_eq!(
                set.get_child("first", RSM).unwrap().get_attr("index"),
                Some("0")
            );
        }
        after = set.get_child("last", RSM).unwrap().text_content();
        assert_eq!(after, *ids.last().unwrap());
        seen.extend(ids);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, expected);
    // The last page with an empty <before/>.
    let r = alice
        .iq(x(&format!("<iq type='get' to='{}'><pubsub xmlns='{PS}'><items node='paged'/><set xmlns='{RSM}'><max>3</max><before/></set></pubsub></iq>", e.svc)))
        .await
        .unwrap();
    let ps = r.get_child("pubsub", PS).unwrap();
    let ids: Vec<_> = ps
        .get_child("items", PS)
        .unwrap()
        .children()
        .map(|i| i.get_attr("id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["p22", "p23", "p24"]);
    assert_eq!(
        ps.get_child("set", RSM)
            .unwrap()
            .get_child("first", RSM)
            .unwrap()
            .get_attr("index"),
        Some("22")
    );
}
