//! A history checker across instances (issue 14): two stratus instances on one ejabberd component
//! domain over one bucket and table, publishers and subscribers at once, one instance killed with
//! SIGKILL and restarted, storage cut off for a moment, an owner revoking a subscriber, all while
//! publishes run. Then the history is checked against XEP-0060:
//! - every acknowledged publish (7.1.2) is stored once and delivered (7.1.2.1) to every
//!   subscriber that was subscribed and allowed before the publish was sent;
//! - nothing published after a revocation (8.9.2: outcast) was acknowledged reaches the revoked
//!   subscriber.
//!
//! The short run is in the test command; `STRATUS_CHECKER_ITEMS=500 cargo test --test checker`
//! (with the environment of scripts/test.sh) is a longer one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use stratus::client::Client;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const NODE: &str = "history";

/// One publish as its publisher saw it.
#[derive(Debug, Clone)]
struct Publish {
    id: String,
    /// Logical time the request was sent.
    sent: u64,
    acked: bool,
}

/// Publishes `count` items one after another; every answer is recorded.
async fn publisher(
    mut c: Client,
    svc: String,
    name: &'static str,
    count: usize,
    clock: Arc<AtomicU64>,
    acks: Arc<AtomicUsize>,
) -> Vec<Publish> {
    let mut log = Vec::new();
    for i in 0..count {
        let id = format!("{name}-{i}");
        let sent = clock.fetch_add(1, Ordering::SeqCst);
        // An error (storage cut off: `wait`), or no answer at all (the instance that had the
        // request was killed): not acknowledged.
        let acked = match c.iq(iq("set", &svc, publish_item(NODE, &id))).await {
            Ok(r) => r.get_attr("type") == Some("result"),
            Err(_) => false,
        };
        if acked {
            acks.fetch_add(1, Ordering::SeqCst);
        }
        log.push(Publish { id, sent, acked });
    }
    c.close().await;
    log
}

async fn wait_acks(acks: &AtomicUsize, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while acks.load(Ordering::SeqCst) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing stalled at {} acknowledgements",
            acks.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn subscribe_el(jid: &str) -> Element {
    Element::new("pubsub", PS).child(
        Element::new("subscribe", PS)
            .attr("node", NODE)
            .attr("jid", jid),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_publishes_reach_every_allowed_subscriber_through_kills_and_outages()
-> Result<(), String> {
    let per_publisher: usize = std::env::var("STRATUS_CHECKER_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let endpoint = aws_endpoint()?;
    let proxy = Proxy::in_front_of(&endpoint).await;
    let server = shared(Kind::Ejabberd);
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    let config = aws_config_at(&dir.path().join("data"), dir.path(), &proxy.url());
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("[pubsub]\ncache_ttl_ms = 600000\n");
    std::fs::write(&config, toml).unwrap();
    let args = ["--config", config.as_str()];
    let mut one = Stratus::start_with(server, &lease.domain, &args);
    let two = Stratus::start_with(server, &lease.domain, &args);
    let svc = lease.domain.clone();

    let mut alice = new_user(server, "alice").await;
    let alice_user = alice.jid().node().unwrap().to_owned();
    let publisher2 = new_user(server, "pub").await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(new_user(server, "sub").await);
    }
    create_configured(&mut alice, &svc, NODE, "pubsub#max_items", "1000").await;
    // XEP-0060 8.9.2: the second publisher gets the publisher affiliation.
    let affiliate = |jid: String, aff: &'static str| {
        Element::new("pubsub", OWNER).child(
            Element::new("affiliations", OWNER)
                .attr("node", NODE)
                .child(
                    Element::new("affiliation", OWNER)
                        .attr("jid", jid)
                        .attr("affiliation", aff),
                ),
        )
    };
    let r = alice
        .iq(iq(
            "set",
            &svc,
            affiliate(publisher2.jid().to_bare().to_string(), "publisher"),
        ))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    for s in subs.iter_mut() {
        let jid = s.jid().to_string();
        let r = s.iq(iq("set", &svc, subscribe_el(&jid))).await.unwrap();
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    }
    let revoked_jid = subs[2].jid().to_bare().to_string();

    let clock = Arc::new(AtomicU64::new(1));
    let acks = Arc::new(AtomicUsize::new(0));
    let owner = login(server, &alice_user, "owner").await;
    let p1 = tokio::spawn(publisher(
        alice,
        svc.clone(),
        "a",
        per_publisher,
        clock.clone(),
        acks.clone(),
    ));
    let p2 = tokio::spawn(publisher(
        publisher2,
        svc.clone(),
        "p",
        per_publisher,
        clock.clone(),
        acks.clone(),
    ));

    // The faults, while both publish.
    let total = 2 * per_publisher;
    wait_acks(&acks, total / 5).await;
    one.signal("KILL");
    let _ = tokio::task::block_in_place(|| one.wait_exit(Duration::from_secs(10)));
    let one = tokio::task::block_in_place(|| Stratus::start_with(server, &lease.domain, &args));
    wait_acks(&acks, 2 * total / 5).await;
    proxy.down();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.up();
    wait_acks(&acks, 3 * total / 5).await;
    let mut owner = owner;
    let revoke_sent = clock.fetch_add(1, Ordering::SeqCst);
    let r = owner
        .iq(iq("set", &svc, affiliate(revoked_jid.clone(), "outcast")))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let revoke_acked = clock.fetch_add(1, Ordering::SeqCst);

    let mut history = p1.await.unwrap();
    history.extend(p2.await.unwrap());
    let acked: Vec<&Publish> = history.iter().filter(|p| p.acked).collect();
    assert!(
        acked.len() >= total / 2,
        "most publishes are acknowledged: {} of {total}",
        acked.len()
    );

    // Stored once each (7.1.2, 6.5.2). A read may still meet the storage cut's aftermath: a
    // `wait` error is to be tried again (RFC 6120 8.3.2).
    let mut stored = Vec::new();
    for attempt in 0..10 {
        let r = owner
            .iq(iq(
                "get",
                &svc,
                Element::new("pubsub", PS).child(Element::new("items", PS).attr("node", NODE)),
            ))
            .await
            .unwrap();
        if r.get_attr("type") == Some("result") {
            stored = item_ids(&r);
            break;
        }
        if attempt == 9
            || r.get_child("error", stratus::client::NS_CLIENT)
                .and_then(|e| e.get_attr("type"))
                != Some("wait")
        {
            let warnings: Vec<String> = [&one, &two]
                .iter()
                .flat_map(|s| {
                    s.log_text()
                        .lines()
                        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!("{r}\n{}", warnings.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for p in &acked {
        assert_eq!(
            stored.iter().filter(|s| **s == p.id).count(),
            1,
            "acknowledged {} stored once",
            p.id
        );
    }

    // Delivered to each subscriber subscribed and allowed before the publish was sent.
    for (k, s) in subs.iter_mut().enumerate() {
        let revoked = k == 2;
        for p in &acked {
            if revoked && p.sent > revoke_sent {
                continue;
            }
            let got = s
                .wait_for(T, |m| event_item_id(m) == Some(p.id.as_str()))
                .await;
            assert!(
                got.is_ok(),
                "subscriber {k} got acknowledged item {} (sent at {})",
                p.id,
                p.sent
            );
        }
    }
    // Nothing published after the revocation was acknowledged reaches the revoked subscriber.
    // Subscriber 0 has every item by now; what was sent to subscriber 2 meanwhile has arrived too
    // (one server, one stream each), so what it holds is what it got.
    let late: Vec<&str> = acked
        .iter()
        .filter(|p| p.sent > revoke_acked)
        .map(|p| p.id.as_str())
        .collect();
    let sentinel = format!("after-{}", late.len());
    let r = owner
        .iq(iq("set", &svc, publish_item(NODE, &sentinel)))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    subs[0]
        .wait_for(T, |m| event_item_id(m) == Some(sentinel.as_str()))
        .await
        .expect("the sentinel reaches a subscriber");
    ping_answered(&mut subs[2], &svc).await;
    assert!(
        !subs[2].pending_contains(
            |m| event_item_id(m).is_some_and(|id| late.contains(&id) || id == sentinel)
        ),
        "the revoked subscriber got an item published after its revocation"
    );
    for s in [&one, &two] {
        log_has_no_panic(&s.log_text());
    }
    Ok(())
}
