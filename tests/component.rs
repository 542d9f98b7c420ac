//! The component through real Prosody and real ejabberd: XEP-0114 handshake, XEP-0030 disco,
//! XEP-0199 ping, XEP-0092 version, errors for unknown IQs, reconnection and shutdown.

mod common;

use std::time::Duration;

use common::*;
use stratus::xml::Element;

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

async fn disco_info_is_answered(kind: Kind) {
    let server = shared(kind);
    let lease = lease_domain(server);
    let _stratus = Stratus::start(server, &lease.domain);
    let mut alice = new_user(server, "alice").await;
    let reply = alice
        .iq(iq("get", &lease.domain, Element::new("query", DISCO_INFO)))
        .await
        .unwrap();
    assert_eq!(reply.get_attr("type"), Some("result"), "{reply}");
    assert_eq!(reply.get_attr("from"), Some(lease.domain.as_str()));
    let q = reply.get_child("query", DISCO_INFO).expect("query");
    let identity = q.get_child("identity", DISCO_INFO).expect("identity");
    // XEP-0060 section 5.1: a pubsub service has the identity pubsub/service.
    assert_eq!(identity.get_attr("category"), Some("pubsub"));
    assert_eq!(identity.get_attr("type"), Some("service"));
    let features: Vec<_> = q
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|f| f.get_attr("var"))
        .collect();
    for f in [
        DISCO_INFO,
        DISCO_ITEMS,
        "urn:xmpp:ping",
        "jabber:iq:version",
    ] {
        assert!(features.contains(&f), "missing feature {f}: {reply}");
    }
    let items = alice
        .iq(iq("get", &lease.domain, Element::new("query", DISCO_ITEMS)))
        .await
        .unwrap();
    assert_eq!(items.get_attr("type"), Some("result"), "{items}");
    alice.close().await;
}

#[tokio::test]
async fn disco_info_through_prosody() {
    disco_info_is_answered(Kind::Prosody).await;
}

#[tokio::test]
async fn disco_info_through_ejabberd() {
    disco_info_is_answered(Kind::Ejabberd).await;
}

async fn ping_version_and_unknown_iq(kind: Kind) {
    let server = shared(kind);
    let lease = lease_domain(server);
    let stratus = Stratus::start(server, &lease.domain);
    let mut alice = new_user(server, "bob").await;
    // XEP-0199 section 4.2: a ping to the component gets an empty result.
    let pong = alice
        .iq(iq(
            "get",
            &lease.domain,
            Element::new("ping", "urn:xmpp:ping"),
        ))
        .await
        .unwrap();
    assert_eq!(pong.get_attr("type"), Some("result"), "{pong}");
    assert_eq!(pong.children().count(), 0);
    // XEP-0092: name and version.
    let v = alice
        .iq(iq(
            "get",
            &lease.domain,
            Element::new("query", "jabber:iq:version"),
        ))
        .await
        .unwrap();
    let q = v
        .get_child("query", "jabber:iq:version")
        .expect("version query");
    assert_eq!(
        q.get_child("name", "jabber:iq:version")
            .unwrap()
            .text_content(),
        "stratus"
    );
    assert_eq!(
        q.get_child("version", "jabber:iq:version")
            .unwrap()
            .text_content(),
        env!("CARGO_PKG_VERSION")
    );
    // RFC 6120 8.4: an IQ nobody handles gets service-unavailable; the stream stays up.
    for kind in ["get", "set"] {
        let r = alice
            .iq(iq(
                kind,
                &lease.domain,
                Element::new("query", "urn:example:unknown"),
            ))
            .await
            .unwrap();
        assert_eq!(r.get_attr("type"), Some("error"), "{r}");
        assert_eq!(
            error_condition(&r).as_deref(),
            Some("service-unavailable"),
            "{r}"
        );
    }
    // An IQ to an entity at the component domain that does not exist.
    let r = alice
        .iq(iq(
            "get",
            &format!("nobody@{}", lease.domain),
            Element::new("ping", "urn:xmpp:ping"),
        ))
        .await
        .unwrap();
    assert_eq!(r.get_attr("type"), Some("error"), "{r}");
    // An error addressed to the component is never answered; the next ping still works.
    alice
        .send(
            &Element::new("iq", stratus::client::NS_CLIENT)
                .attr("type", "error")
                .attr("id", "e1")
                .attr("to", lease.domain.clone()),
        )
        .await
        .unwrap();
    let pong = alice
        .iq(iq(
            "get",
            &lease.domain,
            Element::new("ping", "urn:xmpp:ping"),
        ))
        .await
        .unwrap();
    assert_eq!(pong.get_attr("type"), Some("result"));
    assert!(
        alice
            .wait_for(Duration::from_millis(300), |e| e.get_attr("id")
                == Some("e1"))
            .await
            .is_err(),
        "an error stanza was answered"
    );
    log_has_no_panic(&stratus.log_text());
    alice.close().await;
}

#[tokio::test]
async fn ping_version_unknown_iq_through_prosody() {
    ping_version_and_unknown_iq(Kind::Prosody).await;
}

#[tokio::test]
async fn ping_version_unknown_iq_through_ejabberd() {
    ping_version_and_unknown_iq(Kind::Ejabberd).await;
}

/// The server goes away and comes back while stratus runs: stratus reconnects by itself.
async fn reconnects_after_server_restart(kind: Kind) {
    let server = Server::start_private(kind);
    let mut stratus = Stratus::start(&server, "pubsub.localhost");
    server.stop();
    stratus.wait_log("reconnecting to", 1, T);
    server.start();
    stratus.wait_log("connected to", 2, Duration::from_secs(40));
    assert!(stratus.is_running());
    let mut alice = new_user(&server, "carol").await;
    ping_answered(&mut alice, "pubsub.localhost").await;
    alice.close().await;
    server.stop();
}

#[tokio::test]
async fn reconnects_after_prosody_restart() {
    reconnects_after_server_restart(Kind::Prosody).await;
}

#[tokio::test]
async fn reconnects_after_ejabberd_restart() {
    reconnects_after_server_restart(Kind::Ejabberd).await;
}

#[tokio::test]
async fn wrong_secret_is_fatal_with_a_clear_message() {
    for kind in [Kind::Prosody, Kind::Ejabberd] {
        let server = shared(kind);
        let lease = lease_domain(server);
        let mut s = Stratus::spawn_with_secret(
            &server.component_addr(),
            &lease.domain,
            "not-the-secret",
            &[],
        );
        let (code, log) = s.wait_exit(T);
        assert_eq!(code, Some(1), "{log}");
        assert!(
            log.contains("not-authorized") && log.contains("secret"),
            "{log}"
        );
        log_has_no_panic(&log);
    }
}

#[tokio::test]
async fn unknown_domain_is_fatal_on_prosody() {
    let server = shared(Kind::Prosody);
    let mut s = Stratus::spawn(&server.component_addr(), "not-configured.localhost", &[]);
    let (code, log) = s.wait_exit(T);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("host-unknown"), "{log}");
}

#[tokio::test]
async fn sigterm_closes_the_stream_and_exits_cleanly() {
    let server = shared(Kind::Prosody);
    let lease = lease_domain(server);
    let mut stratus = Stratus::start(server, &lease.domain);
    stratus.signal("TERM");
    let (code, log) = stratus.wait_exit(T);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("closing the stream"), "{log}");
    // The domain is free again at once: a new instance connects without conflict.
    let _again = Stratus::start(server, &lease.domain);
}
