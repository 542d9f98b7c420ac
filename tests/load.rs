//! stratus-load through real Prosody and ejabberd: an existing node is reused (XEP-0060 8.1.2,
//! `conflict`), any other refusal of the node creation ends the run with the service's answer.

mod common;

use std::process::{Command, Output};

use common::*;

async fn load(server: &Server, service: &str, node: &str, prefix: &str) -> Output {
    load_with(server, service, node, prefix, &[]).await
}

async fn load_with(
    server: &Server,
    service: &str,
    node: &str,
    prefix: &str,
    extra: &[String],
) -> Output {
    let (addr, service, node) = (server.c2s_addr(), service.to_owned(), node.to_owned());
    let (prefix, extra) = (prefix.to_owned(), extra.to_vec());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_stratus-load"))
            .args(["--server", &addr, "--domain", "localhost"])
            .args(["--service", &service, "--node", &node])
            .args(["-N", "1", "-W", "1", "-M", "2", "--quiet", "--drain", "5"])
            .args(["--prefix", &prefix])
            .args(extra)
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
    let stratus = Stratus::start(server, &lease.domain);
    // Created by the first run, reused (conflict) by the second: same accounts, same owner.
    // The second also reports stratus's CPU time per notification (--cpu-pid).
    let (node, prefix) = (unique("reuse"), unique("ld"));
    let cpu = [
        "--cpu-pid".to_owned(),
        format!("stratus={}", stratus.child.id()),
    ];
    let mut out = String::new();
    for extra in [&[][..], &cpu[..]] {
        let o = load_with(server, &lease.domain, &node, &prefix, extra).await;
        assert!(o.status.success(), "{}", stderr(&o));
        out = String::from_utf8_lossy(&o.stdout).into_owned();
    }
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("CPU of stratus (pid {}): ", stratus.child.id())))
        .unwrap_or_else(|| panic!("no CPU line in {out}"));
    let per_notification: f64 = line
        .rsplit(", ")
        .next()
        .and_then(|s| s.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(per_notification > 0.0, "{line}");
    // A process that is not there ends the run before any login, naming it.
    let o = load_with(
        server,
        &lease.domain,
        &node,
        &prefix,
        &["--cpu-pid".to_owned(), "gone=999999999".to_owned()],
    )
    .await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read the CPU time of gone (pid 999999999)"),
        "{}",
        stderr(&o)
    );
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
