//! Two stratus instances on one ejabberd component domain (ejabberd routes each stanza to either
//! connection), sharing one S3 bucket and DynamoDB table (issues 4 and 14): a subscription made
//! through whichever instance gets the very next event published through whichever instance, and
//! an access-model change and a retraction hold on both from the next request.
//! The caches are kept for ten minutes (`cache_ttl_ms`), so only the per-request node version
//! check can make this pass: without it the other instance serves its cached node.

mod common;

use common::*;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_subscriptions_and_access_decisions() -> Result<(), String> {
    let endpoint = aws_endpoint()?;
    let server = shared(Kind::Ejabberd);
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    // One config, so one table and one bucket, for both instances.
    let config = aws_config_at(&dir.path().join("data"), dir.path(), &endpoint);
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("[pubsub]\ncache_ttl_ms = 600000\n");
    std::fs::write(&config, toml).unwrap();
    let one = Stratus::start_with(server, &lease.domain, &["--config", &config]);
    let two = Stratus::start_with(server, &lease.domain, &["--config", &config]);
    let svc = lease.domain.clone();
    let mut alice = new_user(server, "alice").await;
    let mut bob = new_user(server, "bob").await;
    let mut dave = new_user(server, "dave").await;
    // Enough requests that both connections carry some (ejabberd picks one per stanza).
    for _ in 0..30 {
        let pong = alice
            .iq(iq("get", &svc, Element::new("ping", "urn:xmpp:ping")))
            .await
            .unwrap();
        assert_eq!(pong.get_attr("type"), Some("result"));
    }
    let traffic = |s: &Stratus| s.log_text().matches("TRACE received <iq").count();
    assert!(
        traffic(&one) > 0 && traffic(&two) > 0,
        "both instances serve: {} / {}",
        traffic(&one),
        traffic(&two)
    );

    let create =
        Element::new("pubsub", PS).child(Element::new("create", PS).attr("node", "shared"));
    assert_eq!(
        alice
            .iq(iq("set", &svc, create))
            .await
            .unwrap()
            .get_attr("type"),
        Some("result")
    );
    // Both instances cache the node as it is now (no subscribers, open), with requests through
    // each: ejabberd spreads them over the two connections.
    for i in 0..10 {
        let r = alice
            .iq(iq("set", &svc, publish_item("shared", &format!("w{i}"))))
            .await
            .unwrap();
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
        let r = get_items(&mut dave, &svc, "shared").await;
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    }

    // XEP-0060 6.1 then 7.1.2: the publish right after bob's subscription was acknowledged
    // reaches him, whichever instance handles either.
    let bob_jid = bob.jid().to_string();
    for i in 0..4 {
        let (node, id) = (format!("s{i}"), format!("e{i}"));
        // A fresh node each round, cached by both before bob subscribes.
        let create =
            Element::new("pubsub", PS).child(Element::new("create", PS).attr("node", &node));
        assert_eq!(
            alice
                .iq(iq("set", &svc, create))
                .await
                .unwrap()
                .get_attr("type"),
            Some("result")
        );
        for _ in 0..6 {
            let r = get_items(&mut dave, &svc, &node).await;
            assert_eq!(r.get_attr("type"), Some("result"), "{r}");
        }
        let sub = Element::new("pubsub", PS).child(
            Element::new("subscribe", PS)
                .attr("node", &node)
                .attr("jid", &bob_jid),
        );
        assert_eq!(
            bob.iq(iq("set", &svc, sub)).await.unwrap().get_attr("type"),
            Some("result")
        );
        assert_eq!(
            alice
                .iq(iq("set", &svc, publish_item(&node, &id)))
                .await
                .unwrap()
                .get_attr("type"),
            Some("result")
        );
        let got = bob
            .wait_for(T, |m| event_item_id(m) == Some(id.as_str()))
            .await;
        assert!(
            got.is_ok(),
            "bob gets {id} on {node}, published right after his subscription"
        );
    }

    // XEP-0060 7.2: once a retraction is acknowledged, no instance serves the item, nor as the
    // last item.
    for i in 0..4 {
        let id = format!("r{i}");
        let r = alice
            .iq(iq("set", &svc, publish_item("shared", &id)))
            .await
            .unwrap();
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
        // Both instances read the node with the new item as its last.
        for _ in 0..4 {
            let r = get_items(&mut dave, &svc, "shared").await;
            assert!(item_ids(&r).contains(&id), "{r}");
        }
        let retract = Element::new("pubsub", PS).child(
            Element::new("retract", PS)
                .attr("node", "shared")
                .child(Element::new("item", PS).attr("id", &id)),
        );
        assert_eq!(
            alice
                .iq(iq("set", &svc, retract))
                .await
                .unwrap()
                .get_attr("type"),
            Some("result")
        );
        for _ in 0..6 {
            let last = Element::new("pubsub", PS).child(
                Element::new("items", PS)
                    .attr("node", "shared")
                    .attr("max_items", "1"),
            );
            let r = dave.iq(iq("get", &svc, last)).await.unwrap();
            assert!(!item_ids(&r).contains(&id), "retracted {id} served: {r}");
        }
    }

    // XEP-0060 8.2: close the node through one of them; from the next request both refuse a
    // stranger.
    let form = Element::new("x", "jabber:x:data")
        .attr("type", "submit")
        .child(
            Element::new("field", "jabber:x:data")
                .attr("var", "pubsub#access_model")
                .child(Element::new("value", "jabber:x:data").text("whitelist")),
        );
    let configure = Element::new("pubsub", OWNER).child(
        Element::new("configure", OWNER)
            .attr("node", "shared")
            .child(form),
    );
    assert_eq!(
        alice
            .iq(iq("set", &svc, configure))
            .await
            .unwrap()
            .get_attr("type"),
        Some("result")
    );
    for _ in 0..10 {
        let r = get_items(&mut dave, &svc, "shared").await;
        assert_eq!(error_condition(&r).as_deref(), Some("not-allowed"), "{r}");
    }
    Ok(())
}
