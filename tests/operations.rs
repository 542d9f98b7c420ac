//! Operating stratus (issue 16): `/metrics` and `/health` on the HTTP listener, through real
//! Prosody and ejabberd. The metrics move with a publish; `/health` turns 503 when the server
//! goes away and 200 when stratus is connected again. The stream window's pings are answered.

mod common;

use std::time::{Duration, Instant};

use common::*;
use stratus::client::Client;
use stratus::xml::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PS: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";

/// One HTTP/1.1 GET: the status code and the body.
async fn get(port: u16, path: &str) -> (u16, String) {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the HTTP listener accepts");
    exchange(s, path).await
}

async fn exchange(mut s: tokio::net::TcpStream, path: &str) -> (u16, String) {
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Waits until /health answers `status`; returns its body.
async fn health_becomes(port: u16, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        // A listener not bound yet (stratus still starting) counts as not healthy yet.
        let (got, body) = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => exchange(s, "/health").await,
            Err(e) => (0, e.to_string()),
        };
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {got} ({body}) instead of {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one sample (`name{labels}` exactly as exposed), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

async fn iq_ok(c: &mut Client, svc: &str, kind: &str, payload: Element) {
    let r = c.iq(iq(kind, svc, payload)).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
}

async fn metrics_move_and_health_follows_the_stream(kind: Kind) {
    let server = Server::start_private(kind);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _stratus = Stratus::start_with(&server, "pubsub.localhost", &["--http-listen", &listen]);
    assert_eq!(health_becomes(port, 200, T).await.trim(), "ok");
    let (status, wrong) = get(port, "/nothing").await;
    assert_eq!(status, 404, "{wrong}");

    let svc = "pubsub.localhost";
    let mut alice = new_user(&server, "opa").await;
    let mut bob = new_user(&server, "opb").await;
    let (_, before) = get(port, "/metrics").await;
    iq_ok(
        &mut alice,
        svc,
        "set",
        Element::new("pubsub", PS).child(Element::new("create", PS).attr("node", "ops")),
    )
    .await;
    let bob_jid = bob.jid().to_string();
    iq_ok(
        &mut bob,
        svc,
        "set",
        Element::new("pubsub", PS).child(
            Element::new("subscribe", PS)
                .attr("node", "ops")
                .attr("jid", bob_jid),
        ),
    )
    .await;
    iq_ok(
        &mut alice,
        svc,
        "set",
        Element::new("pubsub", PS).child(
            Element::new("publish", PS)
                .attr("node", "ops")
                .child(Element::new("item", PS).child(Element::new("x", "urn:example").text("1"))),
        ),
    )
    .await;
    bob.wait_for(T, |m| m.get_child("event", EVENT).is_some())
        .await
        .expect("bob gets the event");
    let (status, after) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved("stratus_requests_total{op=\"publish\",outcome=\"ok\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("stratus_requests_total{op=\"create\",outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        moved("stratus_requests_total{op=\"subscribe\",outcome=\"ok\"}"),
        1.0
    );
    assert!(
        moved("stratus_request_duration_seconds_count") >= 3.0,
        "{after}"
    );
    assert!(
        moved("stratus_stanzas_received_total{kind=\"iq\"}") >= 3.0,
        "{after}"
    );
    assert!(moved("stratus_notifications_total") >= 1.0, "{after}");
    assert!(moved("stratus_stanzas_sent_total") >= 4.0, "{after}");
    // Every stanza is bytes in some write: at least one write, never more writes than stanzas
    // (they are batched), and at least the bytes of the notification bob read.
    let writes = moved("stratus_stream_writes_total");
    assert!(
        writes >= 1.0 && writes <= moved("stratus_stanzas_sent_total"),
        "{after}"
    );
    assert!(moved("stratus_bytes_sent_total") >= 200.0, "{after}");
    assert_eq!(sample(&after, "stratus_connected"), 1.0, "{after}");
    assert!(after.contains("# TYPE stratus_request_duration_seconds histogram"));

    // The server goes away: not healthy, and says why; back: healthy again, one reconnect.
    server.stop();
    let why = health_becomes(port, 503, T).await;
    assert!(why.contains("component stream"), "{why}");
    server.start();
    health_becomes(port, 200, Duration::from_secs(40)).await;
    let (_, last) = get(port, "/metrics").await;
    assert_eq!(sample(&last, "stratus_reconnects_total"), 1.0, "{last}");
    server.stop();
}

#[tokio::test]
async fn metrics_and_health_through_prosody() {
    metrics_move_and_health_follows_the_stream(Kind::Prosody).await;
}

#[tokio::test]
async fn metrics_and_health_through_ejabberd() {
    metrics_move_and_health_follows_the_stream(Kind::Ejabberd).await;
}

/// The stream window (`[component] in_flight_bytes`, issue 17): the writer pings the server's
/// domain after every quarter of the window and holds ordinary stanzas while a window's worth is
/// unanswered. A real server answers each ping (RFC 6120 8.2.3: an IQ get gets a result or an
/// error; 10.1: in order, so an answer says what came before was handled): with a window of
/// 64 KiB and at least four windows of notifications (fewer bytes through ejabberd's
/// mod_multicast), every ping is answered, the window is never turned off, and every
/// notification arrives once.
async fn the_server_answers_the_window_pings(kind: Kind) {
    let server = shared(kind);
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("window.toml");
    let window = 65_536.0;
    std::fs::write(
        &config,
        format!("[component]\nin_flight_bytes = {window}\n"),
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = config.to_string_lossy().into_owned();
    let _stratus = Stratus::start_with(
        server,
        &lease.domain,
        &["--config", &config, "--http-listen", &listen],
    );
    let (_, before) = get(port, "/metrics").await;
    let args = ["--service", &lease.domain, "--node", &unique("win")]
        .into_iter()
        .chain([
            "--prefix",
            &unique("win"),
            "-N",
            "4",
            "-W",
            "8",
            "-M",
            "150",
        ])
        .chain(["--payload", "2000", "--drain", "10", "--json", "-"])
        .map(str::to_owned)
        .collect();
    let (report, out) = report_of(&stratus_load(server, args).await, "window load");
    assert_eq!(report["notifications_expected"], 600, "{out}");
    assert_eq!(report["notifications_received"], 600, "{out}");
    assert_eq!(report["duplicates"], 0, "{out}");

    // The last ping may be answered after the last notification arrived: wait for the counter.
    let deadline = Instant::now() + T;
    let (pings, bytes, after) = loop {
        let (_, after) = get(port, "/metrics").await;
        let moved = |series: &str| sample(&after, series) - sample(&before, series);
        let (pings, answered) = (
            moved("stratus_stream_window_pings_total"),
            moved("stratus_stream_window_answered_total"),
        );
        if pings > 0.0 && answered == pings {
            break (pings, moved("stratus_bytes_sent_total"), after);
        }
        assert!(
            Instant::now() < deadline,
            "{answered} of {pings} window pings answered:\n{after}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(bytes >= 4.0 * window, "{after}");
    // A ping per quarter of the window, after the batch that crosses it.
    assert!(pings >= 4.0 && pings <= bytes / (window / 4.0), "{after}");
    assert_eq!(
        sample(&after, "stratus_stream_window_off_total"),
        0.0,
        "{after}"
    );
}

#[tokio::test]
async fn prosody_answers_the_window_pings() {
    the_server_answers_the_window_pings(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_answers_the_window_pings() {
    the_server_answers_the_window_pings(Kind::Ejabberd).await;
}

/// `[log] format = "json"`: every line is one JSON object with the event's level, message and
/// fields. SIGHUP reads the file again: a level raised to `trace` shows the stanzas received
/// from then on, and the stream stays up (the same connection answers).
#[tokio::test]
async fn json_logs_and_sighup_reload() {
    let server = shared(Kind::Prosody);
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stratus.toml");
    let write_config = |level: &str| {
        std::fs::write(
            &config,
            format!(
                "[component]\nserver = \"{}\"\ndomain = \"{}\"\nsecret = \"secret\"\n\
                 [storage]\nbackend = \"memory\"\n[log]\nlevel = \"{level}\"\nformat = \"json\"\n",
                server.component_addr(),
                lease.domain
            ),
        )
        .unwrap()
    };
    write_config("info");
    let log_path = dir.path().join("stratus.log");
    let mut child = spawn_on_config(&config, &log_path, &[]);
    let read = || std::fs::read_to_string(&log_path).unwrap();
    let wait_for = |needle: &str| wait_log(&log_path, needle);
    let text = wait_for("connected to");
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
        assert!(v.get("message").is_some(), "{line}");
    }
    let mut c = new_user(server, "logs").await;
    ping_answered(&mut c, &lease.domain).await;
    assert!(
        !read().contains("received <iq"),
        "trace lines at level info"
    );

    write_config("trace");
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_for("configuration read again");
    ping_answered(&mut c, &lease.domain).await;
    let text = wait_for("received <iq");
    assert_eq!(
        text.matches("connected to").count(),
        1,
        "the stream was not dropped"
    );
    assert!(child.try_wait().unwrap().is_none(), "stratus still runs");
    child.kill().unwrap();
    let _ = child.wait();
}

/// Starts the stratus binary on a config file (no test flags; `env` added), its output in `log`.
fn spawn_on_config(
    config: &std::path::Path,
    log: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> std::process::Child {
    let out = std::fs::File::create(log).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("--config")
        .arg(config)
        .env_remove("STRATUS_LOG_LEVEL")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// Waits until the log holds `needle` (here the log is what the test is about); returns it.
fn wait_log(log: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(log).unwrap();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn publish_item(c: &mut Client, svc: &str, id: &str) -> bool {
    let r = c
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", PS).child(
                Element::new("publish", PS).attr("node", "load").child(
                    Element::new("item", PS)
                        .attr("id", id)
                        .child(Element::new("x", "urn:example").text(id)),
                ),
            ),
        ))
        .await
        .unwrap();
    r.get_attr("type") == Some("result")
}

/// `stratus backup` while publishes go on, then `stratus restore` into an empty directory: the
/// restored store holds every item acknowledged before the backup started (issue 16). Without
/// the token the endpoint refuses (401).
#[tokio::test]
async fn backup_under_load_restores_every_acknowledged_item() {
    let server = shared(Kind::Ejabberd);
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config_at = |name: &str, data: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[component]\nserver = \"{}\"\ndomain = \"{}\"\nsecret = \"secret\"\n\
                 [storage]\nbackend = \"embedded\"\ndata_dir = \"{}\"\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\n[admin]\ntoken = \"s3cr3t-t0ken\"\n",
                server.component_addr(),
                lease.domain,
                dir.path().join(data).display()
            ),
        )
        .unwrap();
        path
    };
    let live = config_at("live.toml", "data");
    let log = dir.path().join("stratus.log");
    let mut child = spawn_on_config(&live, &log, &[]);
    // Healthy: connected, and the store answers.
    health_becomes(port, 200, T).await;
    let svc = lease.domain.clone();
    let mut alice = new_user(server, "bka").await;
    iq_ok(
        &mut alice,
        &svc,
        "set",
        Element::new("pubsub", PS)
            .child(Element::new("create", PS).attr("node", "load"))
            .child(
                Element::new("configure", PS).child(config_form(&[("pubsub#max_items", "max")])),
            ),
    )
    .await;
    let mut acked = Vec::new();
    for i in 0..40 {
        let id = format!("before-{i}");
        assert!(publish_item(&mut alice, &svc, &id).await);
        acked.push(id);
    }
    // Publishes keep coming while the backup is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let (stop, svc) = (stop.clone(), svc.clone());
        let mut bob = new_user(server, "bkb").await;
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                publish_item(&mut bob, &svc, &format!("during-{n}")).await;
                n += 1;
            }
            n
        })
    };
    let (status, _) = get(port, "/admin/backup").await;
    assert_eq!(status, 401, "no token, no backup");
    let file = dir.path().join("stratus.backup");
    let live_for_cli = live.clone();
    let file_for_cli = file.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
            .arg("--config")
            .arg(&live_for_cli)
            .arg("backup")
            .arg(&file_for_cli)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let during = background.await.unwrap();
    child.kill().unwrap();
    let _ = child.wait();

    let restored_config = config_at("restored.toml", "restored");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("--config")
        .arg(&restored_config)
        .arg("restore")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let store =
        stratus::storage::embedded::EmbeddedStore::open(&dir.path().join("restored")).unwrap();
    use stratus::storage::Store;
    let page = store
        .items(
            &stratus::pubsub::model::ServiceId::Host,
            "load",
            stratus::storage::ItemQuery::Newest(2000),
        )
        .await
        .unwrap();
    let ids: std::collections::HashSet<String> = page.items.iter().map(|i| i.id.clone()).collect();
    for id in &acked {
        assert!(
            ids.contains(id),
            "{id} was acknowledged before the backup and is missing"
        );
    }
    assert!(during > 0, "the backup ran under load");
}

/// systemd `Type=notify` (sd_notify(3)): with `NOTIFY_SOCKET` set, stratus says `READY=1` once
/// the component stream is up (not before), feeds the watchdog `WatchdogSec=` asks for, and says
/// `STOPPING=1` on SIGTERM.
#[tokio::test]
async fn readiness_and_watchdog_go_to_notify_socket() {
    use std::os::unix::net::UnixDatagram;
    let server = shared(Kind::Prosody);
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(T)).unwrap();
    let config = dir.path().join("stratus.toml");
    std::fs::write(
        &config,
        format!(
            "[component]\nserver = \"{}\"\ndomain = \"{}\"\nsecret = \"secret\"\n\
             [storage]\nbackend = \"memory\"\n",
            server.component_addr(),
            lease.domain
        ),
    )
    .unwrap();
    let log = dir.path().join("stratus.log");
    let child = spawn_on_config(
        &config,
        &log,
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("200000")),
        ],
    );
    let next = || {
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut seen = Vec::new();
    let ready = loop {
        let m = next();
        seen.push(m.clone());
        if m.contains("READY=1") {
            break m;
        }
    };
    assert!(ready.contains("STATUS=connected to"), "{ready}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("connected to"),
        "ready before connected:\n{text}"
    );
    // The watchdog is fed (every 100 ms here).
    let mut fed = 0;
    while fed < 2 {
        if next().contains("WATCHDOG=1") {
            fed += 1;
        }
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    loop {
        if next().contains("STOPPING=1") {
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}; before ready: {seen:?}");
}

/// SIGHUP applies the limits of the file read again on the same stream: `[pubsub]
/// max_payload_bytes` from the next request on (XEP-0060 7.1.3.4: `not-acceptable`,
/// `payload-too-big`) and `[component] max_stanza_bytes` from the next stanza on (the stanza is
/// skipped and bounced with RFC 6120 8.3.3.12 `policy-violation`); a small publish still goes
/// through. The test waits for the reload on `stratus_config_reloads_total`, and sees no
/// reconnection.
#[tokio::test]
async fn sighup_applies_new_limits_without_dropping_the_stream() {
    let server = shared(Kind::Prosody);
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stratus.toml");
    let port = free_port();
    let write_config = |max_payload: u64, max_stanza: u64| {
        std::fs::write(
            &config,
            format!(
                "[component]\nserver = \"{}\"\ndomain = \"{}\"\nsecret = \"secret\"\n\
                 max_stanza_bytes = {max_stanza}\n[storage]\nbackend = \"memory\"\n[pubsub]\nmax_payload_bytes = {max_payload}\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\n",
                server.component_addr(),
                lease.domain
            ),
        )
        .unwrap()
    };
    write_config(65536, 524288);
    let log_path = dir.path().join("stratus.log");
    let mut child = spawn_on_config(&config, &log_path, &[]);
    health_becomes(port, 200, T).await;
    let svc = lease.domain.clone();
    let mut alice = new_user(server, "hup").await;
    iq_ok(
        &mut alice,
        &svc,
        "set",
        Element::new("pubsub", PS).child(Element::new("create", PS).attr("node", "limits")),
    )
    .await;
    let publish = |bytes: usize| {
        Element::new("pubsub", PS).child(
            Element::new("publish", PS).attr("node", "limits").child(
                Element::new("item", PS)
                    .child(Element::new("x", "urn:example").text("a".repeat(bytes))),
            ),
        )
    };
    iq_ok(&mut alice, &svc, "set", publish(6000)).await;

    write_config(2048, 4096);
    let (_, before) = get(port, "/metrics").await;
    let reloads = sample(&before, "stratus_config_reloads_total");
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + T;
    let after = loop {
        let (_, text) = get(port, "/metrics").await;
        if sample(&text, "stratus_config_reloads_total") > reloads {
            break text;
        }
        assert!(Instant::now() < deadline, "SIGHUP was not applied: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sample(&after, "stratus_reconnects_total"), 0.0, "{after}");

    let too_big = alice.iq(iq("set", &svc, publish(6000))).await.unwrap();
    assert_eq!(too_big.get_attr("type"), Some("error"), "{too_big}");
    assert_eq!(
        error_condition(&too_big).as_deref(),
        Some("policy-violation"),
        "{too_big}"
    );
    let refused = alice.iq(iq("set", &svc, publish(3000))).await.unwrap();
    assert_eq!(refused.get_attr("type"), Some("error"), "{refused}");
    assert_eq!(
        error_condition(&refused).as_deref(),
        Some("not-acceptable"),
        "{refused}"
    );
    let error = refused.children().find(|c| c.name() == "error").unwrap();
    assert!(
        error.children().any(|c| c.name() == "payload-too-big"
            && c.ns() == "http://jabber.org/protocol/pubsub#errors"),
        "{refused}"
    );
    iq_ok(&mut alice, &svc, "set", publish(1000)).await;
    assert!(child.try_wait().unwrap().is_none(), "stratus still runs");
    child.kill().unwrap();
    let _ = child.wait();
}
