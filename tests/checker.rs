//! A history checker across instances (issue 14): two stratus instances on one ejabberd component
//! domain over one bucket and table, publishers and subscribers at once, one instance killed with
//! SIGKILL and restarted, storage cut off for a moment, an owner revoking a subscriber, all while
//! publishes run. Then the history is checked against XEP-0060:
//! - every acknowledged publish (7.1.2) not retracted is stored once, and no item whose
//!   retraction (7.2) was acknowledged is served;
//! - every acknowledged publish was delivered (7.1.2.1) to every subscriber that was subscribed
//!   and allowed when the publish was sent (one subscribes late, mid-run);
//! - nothing sent after an unsubscription (6.2) or a revocation (8.9.2: outcast) was
//!   acknowledged reaches that subscriber.
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
    /// Logical times the request was sent and answered: it took effect in between.
    sent: u64,
    answered: u64,
    acked: bool,
    /// Whether a retraction of it was sent, and whether it was acknowledged.
    retract: Option<bool>,
}

/// An error (storage cut off: `wait`), or no answer at all (the instance that had the request was
/// killed): not acknowledged.
async fn acked(c: &mut Client, request: Element) -> bool {
    match c.iq(request).await {
        Ok(r) => r.get_attr("type") == Some("result"),
        Err(_) => false,
    }
}

/// Publishes `count` items one after another, retracting every `retract_every`th right after it
/// was acknowledged; every answer is recorded.
async fn publisher(
    mut c: Client,
    svc: String,
    name: &'static str,
    count: usize,
    retract_every: Option<usize>,
    clock: Arc<AtomicU64>,
    acks: Arc<AtomicUsize>,
) -> Vec<Publish> {
    let mut log = Vec::new();
    for i in 0..count {
        let id = format!("{name}-{i}");
        let sent = clock.fetch_add(1, Ordering::SeqCst);
        let ok = acked(&mut c, iq("set", &svc, publish_item(NODE, &id))).await;
        let answered = clock.fetch_add(1, Ordering::SeqCst);
        if ok {
            acks.fetch_add(1, Ordering::SeqCst);
        }
        let retract = match retract_every {
            Some(n) if ok && i % n == n - 1 => {
                let el = Element::new("pubsub", PS).child(
                    Element::new("retract", PS)
                        .attr("node", NODE)
                        .child(Element::new("item", PS).attr("id", &id)),
                );
                Some(acked(&mut c, iq("set", &svc, el)).await)
            }
            _ => None,
        };
        log.push(Publish {
            id,
            sent,
            answered,
            acked: ok,
            retract,
        });
    }
    c.close().await;
    log
}

/// When a subscriber was to receive events: from its subscription's acknowledgement; until a
/// stop (unsubscription or revocation) was sent, and nothing after the stop was acknowledged.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: u64,
    stop_sent: Option<u64>,
    stop_acked: Option<u64>,
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
    // 0 stays subscribed, 1 unsubscribes mid-run, 2 is made an outcast, 3 subscribes late.
    let mut subs = Vec::new();
    for _ in 0..4 {
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
    let clock = Arc::new(AtomicU64::new(1));
    let mut windows = Vec::new();
    for s in subs.iter_mut().take(3) {
        let jid = s.jid().to_string();
        let r = s.iq(iq("set", &svc, subscribe_el(&jid))).await.unwrap();
        assert_eq!(r.get_attr("type"), Some("result"), "{r}");
        windows.push(Window {
            from: clock.fetch_add(1, Ordering::SeqCst),
            stop_sent: None,
            stop_acked: None,
        });
    }
    let revoked_jid = subs[2].jid().to_bare().to_string();

    let acks = Arc::new(AtomicUsize::new(0));
    let owner = login(server, &alice_user, "owner").await;
    let p1 = tokio::spawn(publisher(
        alice,
        svc.clone(),
        "a",
        per_publisher,
        Some(5),
        clock.clone(),
        acks.clone(),
    ));
    let p2 = tokio::spawn(publisher(
        publisher2,
        svc.clone(),
        "p",
        per_publisher,
        None,
        clock.clone(),
        acks.clone(),
    ));

    // The faults, while both publish.
    let total = 2 * per_publisher;
    wait_acks(&acks, total / 10).await;
    // A late subscriber.
    let jid = subs[3].jid().to_string();
    let r = subs[3]
        .iq(iq("set", &svc, subscribe_el(&jid)))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    windows.push(Window {
        from: clock.fetch_add(1, Ordering::SeqCst),
        stop_sent: None,
        stop_acked: None,
    });
    wait_acks(&acks, total / 5).await;
    one.signal("KILL");
    let _ = tokio::task::block_in_place(|| one.wait_exit(Duration::from_secs(10)));
    let one = tokio::task::block_in_place(|| Stratus::start_with(server, &lease.domain, &args));
    wait_acks(&acks, 2 * total / 5).await;
    proxy.down();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.up();
    wait_acks(&acks, total / 2).await;
    // XEP-0060 6.2: subscriber 1 leaves.
    let jid = subs[1].jid().to_string();
    let unsubscribe = Element::new("pubsub", PS).child(
        Element::new("unsubscribe", PS)
            .attr("node", NODE)
            .attr("jid", jid),
    );
    windows[1].stop_sent = Some(clock.fetch_add(1, Ordering::SeqCst));
    let r = subs[1].iq(iq("set", &svc, unsubscribe)).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    windows[1].stop_acked = Some(clock.fetch_add(1, Ordering::SeqCst));
    wait_acks(&acks, 3 * total / 5).await;
    let mut owner = owner;
    let revoke_sent = clock.fetch_add(1, Ordering::SeqCst);
    let r = owner
        .iq(iq("set", &svc, affiliate(revoked_jid.clone(), "outcast")))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    let revoke_acked = clock.fetch_add(1, Ordering::SeqCst);
    windows[2].stop_sent = Some(revoke_sent);
    windows[2].stop_acked = Some(revoke_acked);

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
        let copies = stored.iter().filter(|s| **s == p.id).count();
        match p.retract {
            // XEP-0060 7.2: an acknowledged retraction removes the item.
            Some(true) => assert_eq!(copies, 0, "retracted {} is served", p.id),
            // Retraction not acknowledged: either way, at most once.
            Some(false) => assert!(copies <= 1, "{} stored {copies} times", p.id),
            None => assert_eq!(copies, 1, "acknowledged {} stored once", p.id),
        }
    }

    // Delivered to each subscriber subscribed and allowed all the while the publish was under
    // way (from its sending to its answer: requests of different clients have no order).
    for (k, s) in subs.iter_mut().enumerate() {
        let w = windows[k];
        for p in &acked {
            if p.sent < w.from || w.stop_sent.is_some_and(|stop| p.answered > stop) {
                continue;
            }
            let got = s
                .wait_for(T, |m| event_item_id(m) == Some(p.id.as_str()))
                .await;
            assert!(
                got.is_ok(),
                "subscriber {k} got acknowledged item {} (sent at {}, {w:?})",
                p.id,
                p.sent
            );
        }
    }
    // Nothing sent after an unsubscription or a revocation was acknowledged reaches that
    // subscriber. Subscriber 0 has every item by now, and a sentinel published last; what was
    // sent to the others meanwhile has arrived too (one server, one stream each), so what they
    // hold is what they got.
    let sentinel = "sentinel".to_owned();
    let r = owner
        .iq(iq("set", &svc, publish_item(NODE, &sentinel)))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    subs[0]
        .wait_for(T, |m| event_item_id(m) == Some(sentinel.as_str()))
        .await
        .expect("the sentinel reaches a subscriber");
    for k in [1, 2] {
        let stop = windows[k].stop_acked.unwrap();
        let late: Vec<&str> = acked
            .iter()
            .filter(|p| p.sent > stop)
            .map(|p| p.id.as_str())
            .collect();
        assert!(
            !late.is_empty(),
            "publishes went on after subscriber {k} stopped"
        );
        ping_answered(&mut subs[k], &svc).await;
        assert!(
            !subs[k].pending_contains(
                |m| event_item_id(m).is_some_and(|id| late.contains(&id) || id == sentinel)
            ),
            "subscriber {k} got an item published after it stopped"
        );
    }
    for s in [&one, &two] {
        log_has_no_panic(&s.log_text());
    }
    Ok(())
}
