//! STARTTLS in the c2s client and the load tool (RFC 6120 section 5), against a private Prosody
//! whose c2s requires it (`c2s_require_encryption`, self-signed certificate for localhost).

mod common;

use std::process::Command;

use common::*;
use stratus::client::{Client, ClientConfig, ClientError, TlsMode};

fn cfg(server: &Server, user: &str, tls: TlsMode, insecure: bool) -> ClientConfig {
    ClientConfig {
        addr: server.c2s_addr(),
        domain: "localhost".into(),
        username: user.into(),
        password: "pass".into(),
        resource: "tls".into(),
        tls,
        tls_insecure: insecure,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_and_load_tool_negotiate_required_starttls() {
    let server = Server::start_private_tls(Kind::Prosody);
    let user = unique("tls");

    // RFC 6120 5.3.1: the server requires TLS, so a client that will not negotiate it is told so.
    let never = Client::register_with(&cfg(&server, &user, TlsMode::Never, true)).await;
    match never {
        Err(ClientError::Tls(why)) => assert!(why.contains("requires STARTTLS"), "{why}"),
        other => panic!("plaintext against a TLS-only server: {:?}", other.err()),
    }
    // The certificate is self-signed: verified against the system roots, the handshake fails.
    let verified = Client::register_with(&cfg(&server, &user, TlsMode::Auto, false)).await;
    match verified {
        Err(ClientError::Tls(why)) => assert!(why.contains("handshake"), "{why}"),
        other => panic!("an untrusted certificate was accepted: {:?}", other.err()),
    }
    // Accepting it explicitly: register, log in, bind, and talk over TLS.
    let c = cfg(&server, &user, TlsMode::Auto, true);
    Client::register_with(&c).await.unwrap();
    let mut client = Client::connect(&c).await.unwrap();
    assert_eq!(client.jid().to_string(), format!("{user}@localhost/tls"));
    let pong = client
        .iq(iq(
            "get",
            "localhost",
            stratus::xml::Element::new("ping", "urn:xmpp:ping"),
        ))
        .await
        .unwrap();
    assert_eq!(pong.get_attr("type"), Some("result"), "{pong}");
    client.close().await;

    // The load tool through the same server: STARTTLS for every account, nothing lost.
    let _stratus = Stratus::start(&server, "ps01.localhost");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = tokio::task::spawn_blocking({
        let (addr, json) = (server.c2s_addr(), json.clone());
        move || {
            Command::new(env!("CARGO_BIN_EXE_stratus-load"))
                .args(["--server", &addr, "--domain", "localhost"])
                .args(["--service", "ps01.localhost", "--node", "tls-load"])
                .args(["-N", "3", "-W", "2", "-M", "10", "--quiet", "--drain", "10"])
                .args(["--prefix", &unique("tl"), "--tls-insecure", "--json"])
                .arg(&json)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "stratus-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["published"], 10, "{report}");
    assert_eq!(report["notifications_received"], 30, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    server.stop();
}
