//! Two stratus instances on one ejabberd component domain (ejabberd routes each stanza to either
//! connection), sharing one S3 bucket and DynamoDB table (issue 4): a subscription made through
//! whichever instance gets the event published through whichever instance, and an access-model
//! change is enforced by both, within the cache bound ([pubsub] cache_ttl_ms, 2 s on aws).

mod common;

use std::time::Duration;

use common::*;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const BOUND: Duration = Duration::from_millis(2600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_subscriptions_and_access_decisions() -> Result<(), String> {
    let endpoint = aws_endpoint()?;
    let server = shared(Kind::Ejabberd);
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    // One config, so one table and one bucket, for both instances.
    let config = aws_config_at(&dir.path().join("data"), dir.path(), &endpoint);
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
    let bob_jid = bob.jid().to_string();
    let sub = Element::new("pubsub", PS).child(
        Element::new("subscribe", PS)
            .attr("node", "shared")
            .attr("jid", bob_jid),
    );
    assert_eq!(
        bob.iq(iq("set", &svc, sub)).await.unwrap().get_attr("type"),
        Some("result")
    );
    tokio::time::sleep(BOUND).await;
    for i in 0..4 {
        let id = format!("i{i}");
        assert_eq!(
            alice
                .iq(iq("set", &svc, publish_item("shared", &id)))
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
            "bob gets item {id} whichever instance published it"
        );
    }

    // Close the node through one of them; after the bound both refuse a stranger.
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
    tokio::time::sleep(BOUND).await;
    for _ in 0..10 {
        let r = get_items(&mut dave, &svc, "shared").await;
        assert_eq!(error_condition(&r).as_deref(), Some("not-allowed"), "{r}");
    }
    Ok(())
}
