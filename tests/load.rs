//! stratus-load through real Prosody and ejabberd: an existing node is reused (XEP-0060 8.1.2,
//! `conflict`), any other refusal of the node creation ends the run with the service's answer;
//! `--cpu-pid` reports the CPU time of the processes it names, or ends the run when one is gone.

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
    let args = ["--service", service, "--node", node, "--prefix", prefix]
        .into_iter()
        .chain(["-N", "1", "-W", "1", "-M", "2", "--drain", "5"])
        .map(str::to_owned)
        .chain(extra.iter().cloned())
        .collect();
    stratus_load(server, args).await
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A process that spins until dropped.
struct Spinner(std::process::Child);

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn create_refusals_end_the_run(kind: Kind) {
    let server = shared(kind);
    let lease = lease_domain(server);
    let stratus = Stratus::start(server, &lease.domain);
    // Created by the first run, reused (conflict) by the second: same accounts, same owner.
    // The second also reports the CPU time of two processes (--cpu-pid): stratus, and one that
    // spins all along (stratus's own time for two items can be under the 10 ms resolution).
    let (node, prefix) = (unique("reuse"), unique("ld"));
    let busy = Spinner(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap(),
    );
    // Two publishes 0.25 s apart: a window long enough for the spinner to show.
    let cpu = [
        "--cpu-pid".to_owned(),
        format!("stratus={}", stratus.child.id()),
        "--cpu-pid".to_owned(),
        format!("busy={}", busy.0.id()),
        "--rate".to_owned(),
        "4".to_owned(),
    ];
    let mut out = String::new();
    for extra in [&[][..], &cpu[..]] {
        let o = load_with(server, &lease.domain, &node, &prefix, extra).await;
        assert!(o.status.success(), "{}", stderr(&o));
        out = String::from_utf8_lossy(&o.stdout).into_owned();
    }
    let per_notification = |name: &str, pid: u32| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("CPU of {name} (pid {pid}): ")))
            .unwrap_or_else(|| panic!("no CPU line for {name} in {out}"));
        line.rsplit(", ")
            .next()
            .and_then(|s| s.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    assert!(per_notification("stratus", stratus.child.id()) >= 0.0);
    // Two notifications in at least 0.25 s: well over 10 ms of CPU for a process that never
    // stops, even sharing the two cores with the servers.
    let spun = per_notification("busy", busy.0.id());
    assert!(spun >= 5_000.0, "busy: {spun} us per notification\n{out}");
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

/// The login storm (`--mode storm`) through a server whose users get PEP from stratus: every
/// resource is owed the last item of each node of each contact (XEP-0163 section 4.3.1,
/// `send_last_published_item = on_sub_and_presence`; contacts with mutual presence
/// subscriptions, RFC 6121 section 3), all come online at once with the same caps (XEP-0115),
/// and each gets every item once. The second storm is served from stratus's caches: no store
/// read at all. A second run with the same accounts finds their rosters made.
async fn storm_delivers_every_last_item_once(kind: Kind) {
    let server = Server::start_private_pep(kind);
    let http = format!("127.0.0.1:{}", free_port());
    let _stratus = Stratus::start_with(&server, "pubsub.localhost", &["--http-listen", &http]);
    let prefix = unique("storm");
    let (users, contacts, nodes) = (8u64, 4u64, 2u64);
    let run = || {
        let args = [
            "--mode",
            "storm",
            "--prefix",
            &prefix,
            "--metrics",
            &http,
            "--timeout",
            "30",
            "--json",
            "-",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(
            ["--users", "--contacts", "--pep-nodes"]
                .into_iter()
                .zip([users, contacts, nodes])
                .flat_map(|(f, v)| [f.to_owned(), v.to_string()]),
        )
        .collect();
        stratus_load(&server, args)
    };
    for rosters in ["made", "kept"] {
        let o = run().await;
        let (report, out) = report_of(&o, "storm");
        assert_eq!(report["rosters"], rosters, "{out}");
        let rounds = report["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 2, "{out}");
        for r in rounds {
            assert_eq!(r["expected"], users * contacts * nodes, "{out}");
            assert_eq!(r["received"], users * contacts * nodes, "{out}");
            assert_eq!(r["duplicates"], 0, "{out}");
            assert_eq!(r["unexpected"], 0, "{out}");
            assert!(r["all_items_s"].as_f64().is_some(), "{out}");
        }
        assert_eq!(rounds[1]["storage_reads"], 0, "{out}");
    }
}

/// A storm's rosters written into the server's own storage before anyone logs in
/// (`stratus-load --print-rosters`, then `scripts/xmpp-server.sh rosters`, which the
/// benchmark uses for U=1000, C=50): the server answers each account's roster with every
/// contact at subscription `both` (RFC 6121 section 2.1.2.5), so the setup makes no
/// subscription ("kept" on the first run), and stratus, which reads rosters through the
/// server (XEP-0356 roster privilege), owes and delivers every contact's last items.
async fn storm_with_rosters_in_the_servers_storage(kind: Kind) {
    let server = Server::start_private_pep(kind);
    let _stratus = Stratus::start(&server, "pubsub.localhost");
    let prefix = unique("prov");
    let (users, contacts, nodes) = (6u64, 2u64, 2u64);
    let sizes: Vec<String> = ["--users", "--contacts", "--pep-nodes"]
        .into_iter()
        .zip([users, contacts, nodes])
        .flat_map(|(f, v)| [f.to_owned(), v.to_string()])
        .collect();
    let listed = stratus_load(
        &server,
        ["--mode", "storm", "--prefix", &prefix, "--print-rosters"]
            .into_iter()
            .map(str::to_owned)
            .chain(sizes.iter().cloned())
            .collect(),
    )
    .await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let lines = String::from_utf8(listed.stdout).unwrap();
    // Every account lists each of its C contacts once, and each pair appears both ways.
    let pairs: std::collections::HashSet<(&str, &str)> =
        lines.lines().map(|l| l.split_once(' ').unwrap()).collect();
    assert_eq!(pairs.len() as u64, users * contacts, "{lines}");
    assert!(
        pairs.iter().all(|(a, c)| pairs.contains(&(*c, *a))),
        "{lines}"
    );
    let file = server.dir.join("rosters.txt");
    std::fs::write(&file, &lines).unwrap();
    let written = Command::new(root().join("scripts/xmpp-server.sh"))
        .arg("rosters")
        .arg(&server.dir)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let o = stratus_load(
        &server,
        [
            "--mode",
            "storm",
            "--prefix",
            &prefix,
            "--rounds",
            "1",
            "--timeout",
            "30",
            "--json",
            "-",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(sizes)
        .collect(),
    )
    .await;
    let (report, out) = report_of(&o, "storm");
    assert_eq!(report["rosters"], "kept", "{out}");
    let round = &report["rounds"][0];
    assert_eq!(round["expected"], users * contacts * nodes, "{out}");
    assert_eq!(round["received"], users * contacts * nodes, "{out}");
    assert_eq!(round["duplicates"], 0, "{out}");
}

#[tokio::test]
async fn prosody_storm_with_rosters_in_the_servers_storage() {
    storm_with_rosters_in_the_servers_storage(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_storm_with_rosters_in_the_servers_storage() {
    storm_with_rosters_in_the_servers_storage(Kind::Ejabberd).await;
}

#[tokio::test]
async fn prosody_storm_delivers_every_last_item_once() {
    storm_delivers_every_last_item_once(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_storm_delivers_every_last_item_once() {
    storm_delivers_every_last_item_once(Kind::Ejabberd).await;
}

/// The soak's time series (`--duration`): once a second, the resident memory of each watched
/// process (`--cpu-pid`) and stratus's outbound queue (`--metrics`), in the JSON and plotted in
/// the HTML report; nothing lost or duplicated over the run.
async fn soak_samples_memory_and_queue(kind: Kind) {
    let server = shared(kind);
    let lease = lease_domain(server);
    let http = format!("127.0.0.1:{}", free_port());
    let stratus = Stratus::start_with(server, &lease.domain, &["--http-listen", &http]);
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("soak.html");
    let args = [
        "--service",
        &lease.domain,
        "--node",
        &unique("soak"),
        "--prefix",
        &unique("sk"),
        "-N",
        "3",
        "--rate",
        "20",
        "-M",
        "100000",
        "--duration",
        "3.5",
        "--drain",
        "5",
        "--metrics",
        &http,
        "--cpu-pid",
        &format!("stratus={}", stratus.child.id()),
        "--json",
        "-",
        "--html",
        html.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec();
    let o = stratus_load(server, args).await;
    let (report, out) = report_of(&o, "soak");
    // --duration stops the publishing: 3.5 s at 20/s is about 70 publishes, not 100,000.
    let published = report["published"].as_u64().unwrap();
    assert!((40..=100).contains(&published), "{published}\n{out}");
    assert_eq!(report["lost"], 0, "{out}");
    assert_eq!(report["duplicates"], 0, "{out}");
    let samples = report["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "{out}");
    // stratus's stream counters, scraped around the run: each notification is at least its
    // 100-byte payload on the stream; a publish is at least its notifications and its answer.
    let traffic = &report["traffic"];
    assert!(
        traffic["stratus_bytes_per_notification"].as_f64().unwrap() > 100.0,
        "{out}"
    );
    assert!(
        traffic["stratus_stanzas_per_publish"].as_f64().unwrap() >= 1.0,
        "{out}"
    );
    assert!(
        traffic["stratus_stanzas_per_write"].as_f64().unwrap() >= 1.0,
        "{out}"
    );
    for s in samples {
        assert!(s["rss_kib"][0].as_u64().unwrap() > 0, "{out}");
        assert!(s["outbound_queue"].as_u64().is_some(), "{out}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("resident memory of stratus"), "{page}");
    assert!(page.contains("outbound queue over time"), "{page}");
}

#[tokio::test]
async fn prosody_soak_samples_memory_and_queue() {
    soak_samples_memory_and_queue(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_soak_samples_memory_and_queue() {
    soak_samples_memory_and_queue(Kind::Ejabberd).await;
}

/// Raw mode (the server's routing limit, `scripts/bench.sh`'s "raw" rows): the publisher sends
/// each subscriber the message itself, in both shapes, and every one arrives once; the count
/// of notifications is published x subscribers.
async fn raw_mode_delivers_each_message_once(kind: Kind) {
    let server = shared(kind);
    let mut bytes = Vec::new();
    for shape in ["notification", "minimal"] {
        let args = ["--mode", "raw", "--raw-message", shape, "--node", "raw"]
            .into_iter()
            .chain(["--prefix", &unique("rw"), "-N", "3", "-W", "2", "-M", "5"])
            .chain(["--drain", "5", "--json", "-"])
            .map(str::to_owned)
            .collect();
        let o = stratus_load(server, args).await;
        let (report, out) = report_of(&o, shape);
        assert_eq!(report["published"], 5, "{out}");
        assert_eq!(report["notifications_received"], 15, "{shape}: {out}");
        assert_eq!(report["lost"], 0, "{out}");
        assert_eq!(report["duplicates"], 0, "{out}");
        assert_eq!(report["config"]["raw_message"], shape, "{out}");
        bytes.push(
            report["traffic"]["publisher_bytes_per_notification"]
                .as_f64()
                .unwrap(),
        );
    }
    // What the publisher sent per notification: a whole notification (event, items, item and
    // the 100-byte payload), or fewer bytes in the minimal message.
    assert!(bytes[0] > bytes[1] && bytes[1] > 100.0, "{bytes:?}");
}

#[tokio::test]
async fn prosody_raw_mode_delivers_each_message_once() {
    raw_mode_delivers_each_message_once(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_raw_mode_delivers_each_message_once() {
    raw_mode_delivers_each_message_once(Kind::Ejabberd).await;
}
