//! stratus against an in-process fake XMPP server that misbehaves on purpose: malformed XML, an
//! oversized stanza, entity and DTD tricks, a wrong secret. For XML no server forwards stratus
//! must answer with the right stream error (RFC 6120 4.9.3), log it, never panic, and reconnect;
//! a stanza over a limit costs its sender a stanza error and nothing else.
//! These complement, not replace, the tests against real Prosody and ejabberd.

mod common;

use std::time::Duration;

use common::*;
use stratus::component::handshake_digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='fake.localhost' id='fake-id-1'>";

/// Reads from the socket until `needle` was seen (or EOF/timeout); returns everything read.
async fn read_until(sock: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(T, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&got).contains(needle) {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Accepts stratus, checks its handshake digest, and accepts it (or refuses it as not-authorized).
async fn accept(listener: &TcpListener, accept_secret: bool) -> TcpStream {
    let (mut sock, _) = tokio::time::timeout(T, listener.accept())
        .await
        .expect("stratus connects")
        .unwrap();
    let header = read_until(&mut sock, ">").await;
    assert!(header.contains("jabber:component:accept"), "{header}");
    sock.write_all(HEADER.as_bytes()).await.unwrap();
    let hs = read_until(&mut sock, "</handshake>").await;
    let expected = format!(
        "<handshake>{}</handshake>",
        handshake_digest("fake-id-1", SECRET)
    );
    assert!(
        hs.contains(&expected),
        "handshake {hs:?}, expected {expected}"
    );
    if accept_secret {
        sock.write_all(b"<handshake/>").await.unwrap();
    } else {
        sock.write_all(b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")
            .await
            .unwrap();
    }
    sock
}

fn spawn_stratus(port: u16) -> Stratus {
    let dir = tempfile::tempdir().unwrap().keep();
    let cfg = dir.join("stratus.toml");
    std::fs::write(
        &cfg,
        "[component]\nreconnect_initial_ms = 100\nreconnect_max_ms = 400\nmax_stanza_bytes = 8192\nmax_depth = 16\n[pubsub]\nmax_payload_bytes = 4096\n",
    )
    .unwrap();
    Stratus::spawn(
        &format!("127.0.0.1:{port}"),
        "fake.localhost",
        &["--config", cfg.to_str().unwrap()],
    )
}

/// Sends `bad` after a good handshake; expects a stream error with `condition`, then a reconnect.
async fn bad_input_closes_stream_and_reconnects(bad: &str, condition: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut stratus = spawn_stratus(listener.local_addr().unwrap().port());
    let mut sock = accept(&listener, true).await;
    // A good stanza first: stratus answers it.
    sock.write_all(b"<iq type='get' id='p1' from='a@localhost/r' to='fake.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await
        .unwrap();
    let pong = read_until(&mut sock, "p1").await;
    assert!(pong.contains("type='result'"), "{pong}");
    sock.write_all(bad.as_bytes()).await.unwrap();
    let closing = read_until(&mut sock, "</stream:stream>").await;
    assert!(
        closing.contains(&format!(
            "<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        )),
        "expected stream error {condition}, got {closing:?}"
    );
    drop(sock);
    // stratus comes back on its own, and works.
    let mut again = accept(&listener, true).await;
    again
        .write_all(b"<iq type='get' id='p2' from='a@localhost/r' to='fake.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await
        .unwrap();
    let pong = read_until(&mut again, "p2").await;
    assert!(pong.contains("type='result'"), "{pong}");
    let log = stratus.wait_log("bad XML", 1, T);
    assert!(stratus.is_running());
    log_has_no_panic(&log);
}

#[tokio::test]
async fn malformed_xml() {
    bad_input_closes_stream_and_reconnects("<message><body></message></iq>", "not-well-formed")
        .await;
}

#[tokio::test]
async fn invalid_character() {
    bad_input_closes_stream_and_reconnects(
        "<message><body>\u{1}</body></message>",
        "not-well-formed",
    )
    .await;
}

/// Sends `bad` (from u@localhost/r, id `bad`) after a good handshake; expects the sender to get
/// policy-violation (RFC 6120 8.3.3.12) and the stream to go on: the next ping is answered, no
/// stream error, no reconnection.
async fn over_a_limit_is_bounced_and_the_stream_goes_on(bad: &str, limit: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stratus = spawn_stratus(listener.local_addr().unwrap().port());
    let mut sock = accept(&listener, true).await;
    sock.write_all(bad.as_bytes()).await.unwrap();
    sock.write_all(b"<iq type='get' id='p1' from='a@localhost/r' to='fake.localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await
        .unwrap();
    let got = read_until(&mut sock, "id='p1'").await;
    let bounce = got.split("<message").nth(1).unwrap_or_default();
    assert!(
        bounce.contains("type='error'")
            && bounce.contains("id='bad'")
            && bounce.contains("to='u@localhost/r'"),
        "{got}"
    );
    assert!(
        bounce.contains("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
        "{got}"
    );
    assert!(bounce.contains(limit), "{got}");
    assert!(
        got.contains("id='p1'") && !got.contains("stream:error"),
        "{got}"
    );
    // stratus logs a skipped stanza before it sends the bounce we read above.
    let log = stratus.log_text();
    assert!(log.contains("skipped a message"), "{log}");
    assert_eq!(log.matches("connected to").count(), 1, "{log}");
    log_has_no_panic(&log);
}

#[tokio::test]
async fn oversized_stanza() {
    let big = format!(
        "<message from='u@localhost/r' to='fake.localhost' id='bad'><body>{}</body></message>",
        "A".repeat(64 * 1024)
    );
    over_a_limit_is_bounced_and_the_stream_goes_on(&big, "larger than 8192 bytes").await;
}

#[tokio::test]
async fn deep_nesting() {
    let deep = format!(
        "<message from='u@localhost/r' to='fake.localhost' id='bad'>{}{}</message>",
        "<a>".repeat(1000),
        "</a>".repeat(1000)
    );
    over_a_limit_is_bounced_and_the_stream_goes_on(&deep, "nested deeper than 16 elements").await;
}

#[tokio::test]
async fn undefined_entity() {
    bad_input_closes_stream_and_reconnects(
        "<message><body>&xxe;</body></message>",
        "restricted-xml",
    )
    .await;
}

#[tokio::test]
async fn doctype_mid_stream() {
    bad_input_closes_stream_and_reconnects("<!DOCTYPE x [<!ENTITY a 'aaaa'>]>", "restricted-xml")
        .await;
}

#[tokio::test]
async fn processing_instruction() {
    bad_input_closes_stream_and_reconnects("<?php evil() ?>", "restricted-xml").await;
}

#[tokio::test]
async fn wrong_secret_stops_with_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut stratus = spawn_stratus(listener.local_addr().unwrap().port());
    let _sock = accept(&listener, false).await;
    let (code, log) = stratus.wait_exit(T);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("the secret is wrong"), "{log}");
    log_has_no_panic(&log);
    // It does not hammer the server with retries after a fatal error.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.accept())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn server_closing_the_stream_triggers_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut stratus = spawn_stratus(listener.local_addr().unwrap().port());
    let mut sock = accept(&listener, true).await;
    sock.write_all(b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")
        .await
        .unwrap();
    drop(sock);
    let _again = accept(&listener, true).await;
    let log = stratus.wait_log("system-shutdown", 1, T);
    log_has_no_panic(&log);
}

#[tokio::test]
async fn unreachable_server_is_retried() {
    // Nothing listens on this port at first; stratus keeps trying, then connects when it appears.
    let port = free_port();
    let mut stratus = spawn_stratus(port);
    stratus.wait_log("reconnecting to", 2, T);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let _sock = accept(&listener, true).await;
    stratus.wait_log("connected to", 1, T);
}
