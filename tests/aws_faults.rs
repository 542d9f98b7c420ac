//! Storage outage on the aws backend (issue 4): with S3/DynamoDB unreachable, a publish fails with
//! a wait-type error (never a false acknowledgement) and the stream stays up; when storage comes
//! back, publishing works again and every acknowledged item is there, no failed one.
//! The outage is a TCP proxy in front of the local S3/DynamoDB server that starts refusing.

mod common;

use common::*;
use stratus::client::NS_CLIENT;
use stratus::xml::Element;

fn publish(svc: &str, id: &str) -> Element {
    iq("set", svc, publish_item("n", id))
}

// Multi-threaded: the proxy must keep running while the test blocks on processes and logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_fails_publishes_cleanly_and_loses_nothing() -> Result<(), String> {
    let endpoint = aws_endpoint()?;
    let proxy = Proxy::in_front_of(&endpoint).await;
    let server = shared(Kind::Prosody);
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    let config = aws_config_at(&dir.path().join("data"), dir.path(), &proxy.url());
    let stratus = Stratus::start_with(server, &lease.domain, &["--config", &config]);
    let svc = lease.domain.clone();
    let mut alice = new_user(server, "alice").await;
    create_keeping_all(&mut alice, &svc, "n").await;
    for i in 0..5 {
        let r = alice.iq(publish(&svc, &format!("a{i}"))).await.unwrap();
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    }

    proxy.down();
    let failed = alice.iq(publish(&svc, "lost")).await.unwrap();
    assert_eq!(
        failed.get_attr("type"),
        Some("error"),
        "no acknowledgement while storage is down: {failed}"
    );
    let err = failed.get_child("error", NS_CLIENT).unwrap();
    assert_eq!(
        err.get_attr("type"),
        Some("wait"),
        "a retry-later error: {failed}"
    );
    // The component stays connected and answers what needs no storage.
    let pong = alice
        .iq(iq("get", &svc, Element::new("ping", "urn:xmpp:ping")))
        .await
        .unwrap();
    assert_eq!(pong.get_attr("type"), Some("result"));

    proxy.up();
    let r = alice.iq(publish(&svc, "after")).await.unwrap();
    assert_eq!(
        r.get_attr("type"),
        Some("result"),
        "publishing works again: {r}"
    );
    let items = get_items(&mut alice, &svc, "n").await;
    let ids = item_ids(&items);
    assert_eq!(
        ids,
        ["a0", "a1", "a2", "a3", "a4", "after"],
        "every acknowledged item, and no failed one"
    );
    log_has_no_panic(&stratus.log_text());
    Ok(())
}
