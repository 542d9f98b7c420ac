//! stratus-load through real Prosody and ejabberd: an existing node is reused (XEP-0060 8.1.2,
//! `conflict`), any other refusal of the node creation ends the run with the service's answer.

mod common;

use std::process::{Command, Output};

use common::*;

async fn load(server: &Server, service: &str, node: &str, prefix: &str) -> Output {
    let (addr, service, node) = (server.c2s_addr(), service.to_owned(), node.to_owned());
    let prefix = prefix.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_stratus-load"))
            .args(["--server", &addr, "--domain", "localhost"])
            .args(["--service", &service, "--node", &node])
            .args(["-N", "1", "-W", "1", "-M", "2", "--quiet", "--drain", "5"])
            .args(["--prefix", &prefix])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn create_refusals_end_the_run(kind: Kind) {
    let server = shared(kind);
    let lease = lease_domain(server);
    let _stratus = Stratus::start(server, &lease.domain);
    // Created by the first run, reused (conflict) by the second: same accounts, same owner.
    let (node, prefix) = (unique("reuse"), unique("ld"));
    for _ in 0..2 {
        let o = load(server, &lease.domain, &node, &prefix).await;
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // No such service: the server's error answers the creation.
    let o = load(server, "nosuch.localhost", "n", &prefix).await;
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("node creation refused") && err.contains("type='error'"),
        "{err}"
    );
}

#[tokio::test]
async fn prosody_create_refusals_end_the_run() {
    create_refusals_end_the_run(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_create_refusals_end_the_run() {
    create_refusals_end_the_run(Kind::Ejabberd).await;
}

/// Prosody's own pubsub lets only admins create nodes: the load tool says so at once.
#[tokio::test]
async fn prosody_builtin_forbids_creation_by_a_user() {
    let o = load(
        shared(Kind::Prosody),
        "pubsub-builtin.localhost",
        "n",
        &unique("ld"),
    )
    .await;
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("node creation refused") && err.contains("<forbidden"),
        "{err}"
    );
}
