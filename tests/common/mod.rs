//! Test rig: real Prosody and ejabberd (started by scripts/xmpp-server.sh, or taken from the
//! environment when the test script already started them), the real stratus binary, and c2s clients.
#![allow(dead_code)]

pub mod federation;
pub mod pep;

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use stratus::client::{Client, ClientConfig, NS_CLIENT};
use stratus::xml::Element;

pub const SECRET: &str = "secret";
pub const T: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prosody,
    Ejabberd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prosody => "prosody",
            Kind::Ejabberd => "ejabberd",
        }
    }
}

/// A running XMPP server.
#[derive(Debug, Clone)]
pub struct Server {
    pub kind: Kind,
    pub c2s: u16,
    pub component: u16,
    pub dist: u16,
    pub dir: PathBuf,
    pub pep: bool,
    pub tls: bool,
    /// The server loads the project's XEP-0033 module for components (contrib/).
    pub multicast: bool,
    /// The server's own PEP serves its users (Prosody: data for the migration tests).
    pub builtin_pep: bool,
    /// The server's domain (localhost but for the other side of a federation rig).
    pub domain: String,
    /// Listens for server-to-server streams on this port (federation rig).
    pub s2s: Option<u16>,
    /// Runs with this file as its /etc/resolv.conf (federation rig: the test DNS responder).
    pub resolv: Option<PathBuf>,
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts a private server on fresh ports in a fresh directory; it stops when this test
    /// process exits (the script watches our pid) or when [`Server::stop`] is called.
    pub fn start_private(kind: Kind) -> Server {
        Server::start_private_with(kind, false)
    }

    /// A private server whose users get PEP from the component pubsub.localhost (delegation and
    /// privileges configured as in the README).
    pub fn start_private_pep(kind: Kind) -> Server {
        Server::start_private_with(kind, true)
    }

    /// A private server whose c2s requires STARTTLS (self-signed certificate for localhost).
    pub fn start_private_tls(kind: Kind) -> Server {
        let mut s = Server::unstarted(kind, false);
        s.tls = true;
        s.start();
        s
    }

    /// A private server with the project's XEP-0033 module for components (README, "multicast"):
    /// contrib/prosody/mod_stratus_multicast.lua or contrib/ejabberd/mod_stratus_multicast.erl.
    pub fn start_private_multicast(kind: Kind) -> Server {
        let mut s = Server::unstarted(kind, false);
        s.multicast = true;
        s.start();
        s
    }

    fn start_private_with(kind: Kind, pep: bool) -> Server {
        let s = Server::unstarted(kind, pep);
        s.start();
        s
    }

    pub fn unstarted(kind: Kind, pep: bool) -> Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!("stratus-{}-", kind.name()))
            .tempdir()
            .unwrap()
            .keep();
        // Three different ports: the system may hand out a port it just handed out, once the
        // probe that found it closed (seen: a private Prosody with c2s and component on one port).
        let c2s = free_port();
        let component = std::iter::repeat_with(free_port)
            .find(|p| *p != c2s)
            .unwrap();
        let dist = std::iter::repeat_with(free_port)
            .find(|p| *p != c2s && *p != component)
            .unwrap();
        Server {
            kind,
            c2s,
            component,
            dist,
            dir,
            pep,
            tls: false,
            multicast: false,
            builtin_pep: false,
            domain: "localhost".into(),
            s2s: None,
            resolv: None,
        }
    }

    pub fn start(&self) {
        let mut cmd = Command::new(root().join("scripts/xmpp-server.sh"));
        cmd.arg("start")
            .arg(self.kind.name())
            .arg(&self.dir)
            .arg(self.c2s.to_string())
            .arg(self.component.to_string());
        if self.kind == Kind::Ejabberd {
            cmd.arg(self.dist.to_string());
        }
        if self.pep {
            cmd.arg("--pep");
        }
        if self.tls {
            cmd.arg("--tls-required");
        }
        if self.multicast {
            cmd.arg("--multicast");
        }
        if self.builtin_pep {
            cmd.arg("--builtin-pep");
        }
        if self.domain != "localhost" {
            cmd.arg("--domain").arg(&self.domain);
        }
        if let Some(port) = self.s2s {
            cmd.arg("--s2s-port").arg(port.to_string());
        }
        if let Some(resolv) = &self.resolv {
            cmd.arg("--resolv").arg(resolv);
        }
        cmd.arg("--watch-pid").arg(std::process::id().to_string());
        let status = cmd.status().unwrap();
        assert!(status.success(), "starting {} failed", self.kind.name());
    }

    pub fn stop(&self) {
        let status = Command::new(root().join("scripts/xmpp-server.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// ejabberd only: evaluates Erlang expressions on the server's node, as one of the server's
    /// own services would act (scripts/xmpp-server.sh eval), and returns the printed value.
    pub fn eval(&self, exprs: &str) -> String {
        assert_eq!(self.kind, Kind::Ejabberd, "eval needs an Erlang node");
        let out = Command::new(root().join("scripts/xmpp-server.sh"))
            .arg("eval")
            .arg(&self.dir)
            .arg(exprs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "eval {exprs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn c2s_addr(&self) -> String {
        format!("127.0.0.1:{}", self.c2s)
    }

    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component)
    }
}

fn from_env(kind: Kind) -> Option<Server> {
    let up = kind.name().to_uppercase();
    let c2s = std::env::var(format!("STRATUS_TEST_{up}_C2S"))
        .ok()?
        .parse()
        .ok()?;
    let component = std::env::var(format!("STRATUS_TEST_{up}_COMPONENT"))
        .ok()?
        .parse()
        .ok()?;
    Some(Server {
        kind,
        c2s,
        component,
        dist: 0,
        dir: PathBuf::new(),
        pep: false,
        tls: false,
        multicast: false,
        builtin_pep: false,
        domain: "localhost".into(),
        s2s: None,
        resolv: None,
    })
}

/// The shared server of this kind: the one the test script started, or one started for this
/// test binary.
pub fn shared(kind: Kind) -> &'static Server {
    static PROSODY: OnceLock<Server> = OnceLock::new();
    static EJABBERD: OnceLock<Server> = OnceLock::new();
    let cell = match kind {
        Kind::Prosody => &PROSODY,
        Kind::Ejabberd => &EJABBERD,
    };
    cell.get_or_init(|| from_env(kind).unwrap_or_else(|| Server::start_private(kind)))
}

/// Component domains configured on every test server (scripts/templates).
fn domain_pool() -> Vec<String> {
    (1..=16).map(|i| format!("ps{i:02}.localhost")).collect()
}

/// An exclusive lease on a component domain of a server, across test processes (file locks).
pub struct DomainLease {
    pub domain: String,
    _lock: File,
}

pub fn lease_domain(server: &Server) -> DomainLease {
    let dir = std::env::temp_dir().join("stratus-test-domains");
    std::fs::create_dir_all(&dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for domain in domain_pool() {
            let path = dir.join(format!("{}-{domain}.lock", server.component));
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap();
            if f.try_lock().is_ok() {
                return DomainLease { domain, _lock: f };
            }
        }
        assert!(
            Instant::now() < deadline,
            "no free component domain for 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the stratus-load binary through `server` (accounts at localhost, no progress bar) with
/// `args`, on a blocking thread so the test's runtime keeps serving its clients.
pub async fn stratus_load(server: &Server, args: Vec<String>) -> std::process::Output {
    let addr = server.c2s_addr();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_stratus-load"))
            .args(["--server", &addr, "--domain", "localhost", "--quiet"])
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A successful stratus-load run's stdout and the `--json -` report in it (after the text
/// table); `what` names the run in the failure message.
pub fn report_of(o: &std::process::Output, what: &str) -> (serde_json::Value, String) {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what}: {}\n{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    let json = &out[out
        .find("{\n")
        .unwrap_or_else(|| panic!("no JSON in {out}"))..];
    (serde_json::from_str(json).unwrap(), out)
}

/// The stratus binary running as a child process, logging to a file.
pub struct Stratus {
    pub child: Child,
    pub log: PathBuf,
    pub domain: String,
    _dir: tempfile::TempDir,
}

impl Stratus {
    /// Starts stratus against `server_addr` with extra arguments; does not wait for the handshake.
    pub fn spawn(server_addr: &str, domain: &str, extra: &[&str]) -> Stratus {
        Stratus::spawn_with_secret(server_addr, domain, SECRET, extra)
    }

    pub fn spawn_with_secret(
        server_addr: &str,
        domain: &str,
        secret: &str,
        extra: &[&str],
    ) -> Stratus {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Stratus::spawn_full(server_addr, domain, secret, &data, dir, extra)
    }

    /// Starts stratus with its embedded store in `data` (kept by the caller across restarts).
    pub fn spawn_with_data(server_addr: &str, domain: &str, data: &Path) -> Stratus {
        Stratus::spawn_full(
            server_addr,
            domain,
            SECRET,
            data,
            tempfile::tempdir().unwrap(),
            &[],
        )
    }

    fn spawn_full(
        server_addr: &str,
        domain: &str,
        secret: &str,
        data: &Path,
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> Stratus {
        let log = dir.path().join("stratus.log");
        let out = File::create(&log).unwrap();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if std::env::var("STRATUS_TEST_STORAGE").as_deref() == Ok("aws")
            && !extra.iter().any(|a| a == "--config")
        {
            extra.extend(["--config".to_owned(), aws_config(data, dir.path())]);
        }
        let child = Command::new(env!("CARGO_BIN_EXE_stratus"))
            .args([
                "--server",
                server_addr,
                "--domain",
                domain,
                "--secret",
                secret,
            ])
            .arg("--data-dir")
            .arg(data)
            .args(["--log-level", "trace"])
            .args(&extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Stratus {
            child,
            log,
            domain: domain.to_owned(),
            _dir: dir,
        }
    }

    /// Starts stratus and waits until it completed the handshake.
    ///
    /// With STRATUS_TEST_STORAGE=aws (scripts/test.sh sets it for a second pass), every instance
    /// stores into S3 + DynamoDB on the local test server, in a table and bucket of its own that
    /// follow its data directory (so a restart on the same directory finds its data).
    pub fn start(server: &Server, domain: &str) -> Stratus {
        Stratus::start_with(server, domain, &[])
    }

    /// [`Stratus::start`] with extra command-line arguments.
    pub fn start_with(server: &Server, domain: &str, extra: &[&str]) -> Stratus {
        let mut s = Stratus::spawn(&server.component_addr(), domain, extra);
        s.wait_log("connected to", 1, T);
        s
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        File::open(&self.log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    /// Waits until `needle` occurs at least `count` times in the log.
    pub fn wait_log(&mut self, needle: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if text.matches(needle).count() >= count {
                return text;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("stratus exited ({status}) before logging {needle:?}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "stratus did not log {needle:?} {count} time(s) within {timeout:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit; returns its exit code and log.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "stratus still runs after {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Stratus {
    fn drop(&mut self) {
        // A clean stream close lets the server drop the component route at once, so the next test
        // leasing this domain is not routed to a stale session.
        if self.is_running() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && self.is_running() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- stratus log ({}) ---\n{}", self.domain, self.log_text());
        }
    }
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}{}x{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// Registers a fresh account on the server (XEP-0077) and logs it in.
pub async fn new_user(server: &Server, prefix: &str) -> Client {
    let username = unique(prefix);
    Client::register(&server.c2s_addr(), &server.domain, &username, "pass")
        .await
        .unwrap_or_else(|e| panic!("registering {username} on {}: {e}", server.kind.name()));
    login(server, &username, "res").await
}

pub async fn login(server: &Server, username: &str, resource: &str) -> Client {
    Client::connect(&ClientConfig {
        addr: server.c2s_addr(),
        domain: server.domain.clone(),
        username: username.into(),
        password: "pass".into(),
        resource: resource.into(),
        ..ClientConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("login {username} on {}: {e}", server.kind.name()))
}

/// `<iq type=TYPE to=TO>PAYLOAD</iq>` in jabber:client.
pub fn iq(kind: &str, to: &str, payload: Element) -> Element {
    Element::new("iq", NS_CLIENT)
        .attr("type", kind)
        .attr("to", to)
        .child(payload)
}

/// Pings `domain` until it answers with a result (up to 10 s): a restarted component is routable
/// only once the server has taken its new stream and let go of the old one, which its own
/// "connected" log line does not tell.
pub async fn ping_until_answered(c: &mut Client, domain: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pong = c
            .iq(iq("get", domain, Element::new("ping", "urn:xmpp:ping")))
            .await
            .unwrap_or_else(|e| panic!("no answer to a ping from {domain}: {e}"));
        if pong.get_attr("type") == Some("result") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{domain} never answered: {pong}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// XEP-0199: `c` pings `domain` and gets the result. Stanzas from stratus to `c` through one
/// server keep their order, so whatever stratus sent `c` before the pong has arrived by then.
pub async fn ping_answered(c: &mut Client, domain: &str) {
    let pong = c
        .iq(iq("get", domain, Element::new("ping", "urn:xmpp:ping")))
        .await
        .unwrap_or_else(|e| panic!("no answer to a ping from {domain}: {e}"));
    assert_eq!(pong.get_attr("type"), Some("result"), "{pong}");
}

/// A stratus on a leased component domain of a shared server: the host service's tests.
#[allow(dead_code)]
pub struct Env {
    pub stratus: Stratus,
    _lease: DomainLease,
    pub svc: String,
    pub server: &'static Server,
}

/// Starts stratus on a leased domain of the shared server of `kind`.
///
/// It returns once the server routes to the new stratus (a ping answered): a domain the previous
/// lease holder just gave up can be unroutable for a moment after the handshake, while the server
/// tears down the old stream (seen on ejabberd: remote-server-not-found for the first request).
#[allow(dead_code)]
pub async fn env(kind: Kind) -> Env {
    let server = shared(kind);
    let lease = lease_domain(server);
    let stratus = Stratus::start(server, &lease.domain);
    let mut probe = new_user(server, "probe").await;
    ping_until_answered(&mut probe, &lease.domain).await;
    probe.close().await;
    Env {
        svc: lease.domain.clone(),
        stratus,
        _lease: lease,
        server,
    }
}

/// A submitted `pubsub#node_config` form (XEP-0060 16.4.3) with these fields.
#[allow(dead_code)]
pub fn config_form(fields: &[(&str, &str)]) -> Element {
    const DATA: &str = "jabber:x:data";
    let mut x = Element::new("x", DATA).attr("type", "submit").child(
        Element::new("field", DATA)
            .attr("var", "FORM_TYPE")
            .attr("type", "hidden")
            .child(
                Element::new("value", DATA).text("http://jabber.org/protocol/pubsub#node_config"),
            ),
    );
    for (var, value) in fields {
        x.push_child(
            Element::new("field", DATA)
                .attr("var", *var)
                .child(Element::new("value", DATA).text(*value)),
        );
    }
    x
}

/// The local S3 + DynamoDB server scripts/test.sh starts, or one line saying how to run the aws
/// tests without it (the test fails with that line instead of a panic).
#[allow(dead_code)]
pub fn aws_endpoint() -> Result<String, String> {
    std::env::var("STRATUS_TEST_AWS_ENDPOINT").map_err(|_| {
        "the aws backend tests need a local S3 + DynamoDB server: run scripts/test.sh (it starts one), or start one (scripts/moto-server.py -p 5000) and set STRATUS_TEST_AWS_ENDPOINT=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
            .to_owned()
    })
}

pub fn error_condition(reply: &Element) -> Option<String> {
    // The error element is in the stream's namespace (jabber:client, or jabber:component:accept).
    let err = reply.children().find(|c| c.name() == "error")?;
    err.children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_owned())
}

pub fn log_has_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "stratus panicked:\n{log}");
}

pub fn dir_exists(p: &Path) -> bool {
    p.is_dir()
}

/// Writes a config selecting the aws backend on the test server, with a table and bucket named
/// after `data`, and creates them with `stratus storage init`. Returns the config path.
fn aws_config(data: &Path, dir: &Path) -> String {
    let endpoint = std::env::var("STRATUS_TEST_AWS_ENDPOINT")
        .expect("STRATUS_TEST_AWS_ENDPOINT (set by scripts/test.sh)");
    write_aws_config(data, dir, &endpoint, &own_endpoints())
}

/// Separate S3 and DynamoDB servers (scripts/test.sh's DynamoDB Local pass): the config lines
/// naming each, which win over `endpoint`.
fn own_endpoints() -> String {
    let mut lines = String::new();
    for (var, key) in [
        ("STRATUS_TEST_S3_ENDPOINT", "s3_endpoint"),
        ("STRATUS_TEST_DYNAMODB_ENDPOINT", "dynamodb_endpoint"),
    ] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            lines.push_str(&format!("{key} = \"{v}\"\n"));
        }
    }
    lines
}

/// [`aws_config`] with an explicit endpoint (e.g. a proxy in front of the test server).
pub fn aws_config_at(data: &Path, dir: &Path, endpoint: &str) -> String {
    write_aws_config(data, dir, endpoint, "")
}

fn write_aws_config(data: &Path, dir: &Path, endpoint: &str, extra: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    let name = format!("s{:016x}", h.finish());
    let path = dir.join("aws.toml");
    std::fs::write(
        &path,
        format!("[storage]\nbackend = \"aws\"\n[storage.aws]\nendpoint = \"{endpoint}\"\n{extra}path_style = true\nbucket = \"{name}\"\ntable = \"{name}\"\n"),
    )
    .unwrap();
    // `storage init` needs only the storage settings (no component secret).
    let status = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["--config"])
        .arg(&path)
        .args(["storage", "init"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "stratus storage init failed");
    path.to_string_lossy().into_owned()
}

/// Creates NODE on `svc` with one configuration field set (XEP-0060 8.1.3, create and
/// configure); asserts the creation succeeded.
pub async fn create_configured(c: &mut Client, svc: &str, node: &str, var: &str, value: &str) {
    const PS: &str = "http://jabber.org/protocol/pubsub";
    const DATA: &str = "jabber:x:data";
    let create = Element::new("pubsub", PS)
        .child(Element::new("create", PS).attr("node", node))
        .child(
            Element::new("configure", PS).child(
                Element::new("x", DATA).attr("type", "submit").child(
                    Element::new("field", DATA)
                        .attr("var", var)
                        .child(Element::new("value", DATA).text(value)),
                ),
            ),
        );
    let r = c.iq(iq("set", svc, create)).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "creating {node}: {r}");
}

/// Creates NODE on `svc` with `pubsub#access_model` = MODEL.
pub async fn create_with_access(c: &mut Client, svc: &str, node: &str, model: &str) {
    create_configured(c, svc, node, "pubsub#access_model", model).await;
}

/// Creates NODE on `svc` configured to keep every item (`pubsub#max_items = max`, up to the
/// service limit), for tests that count what survived.
pub async fn create_keeping_all(c: &mut Client, svc: &str, node: &str) {
    create_configured(c, svc, node, "pubsub#max_items", "max").await;
}

/// `<pubsub><publish node=NODE><item id=ID><e xmlns='urn:test'/></item></publish></pubsub>`.
pub fn publish_item(node: &str, id: &str) -> Element {
    const PS: &str = "http://jabber.org/protocol/pubsub";
    Element::new("pubsub", PS).child(
        Element::new("publish", PS).attr("node", node).child(
            Element::new("item", PS)
                .attr("id", id)
                .child(Element::new("e", "urn:test")),
        ),
    )
}

/// The id of the first item of a pubsub event notification, if `m` is one.
pub fn event_item_id(m: &Element) -> Option<&str> {
    const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
    m.get_child("event", EVENT)?
        .get_child("items", EVENT)?
        .get_child("item", EVENT)?
        .get_attr("id")
}

/// XEP-0060 6.5.2: asks `svc` for the items of `node`; returns the answer (result or error).
pub async fn get_items(c: &mut Client, svc: &str, node: &str) -> Element {
    const PS: &str = "http://jabber.org/protocol/pubsub";
    c.iq(iq(
        "get",
        svc,
        Element::new("pubsub", PS).child(Element::new("items", PS).attr("node", node)),
    ))
    .await
    .unwrap()
}

/// The item ids of a `<pubsub><items/></pubsub>` result, in document order.
pub fn item_ids(reply: &Element) -> Vec<String> {
    const PS: &str = "http://jabber.org/protocol/pubsub";
    reply
        .get_child("pubsub", PS)
        .and_then(|p| p.get_child("items", PS))
        .unwrap_or_else(|| panic!("no items in {reply}"))
        .children()
        .map(|i| i.get_attr("id").unwrap_or_default().to_owned())
        .collect()
}

/// A bare XEP-0114 component connection, for talking to the server directly (as stratus would,
/// but sending exactly the stanzas a test chooses).
pub struct RawComponent {
    events: tokio::sync::mpsc::Receiver<Result<stratus::xml::StreamEvent, stratus::xml::XmlError>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl RawComponent {
    pub async fn connect(server: &Server, domain: &str) -> RawComponent {
        use stratus::xml::StreamEvent;
        use tokio::io::AsyncWriteExt;
        let tcp = tokio::net::TcpStream::connect(server.component_addr())
            .await
            .unwrap();
        let (read, mut write) = tcp.into_split();
        let (events, _) =
            stratus::xml::spawn_stream_reader(read, stratus::xml::Limits::default(), 64);
        write
            .write_all(
                format!(
                    "<stream:stream xmlns='jabber:component:accept' \
                     xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut c = RawComponent { events, write };
        let id = match c.next_event().await {
            StreamEvent::Open(h) => h.get_attr("id").unwrap().to_owned(),
            other => panic!("expected a stream header, got {other:?}"),
        };
        let digest = stratus::component::handshake_digest(&id, SECRET);
        c.send(&format!("<handshake>{digest}</handshake>")).await;
        let h = c.next().await;
        assert_eq!(h.name(), "handshake", "{h}");
        c
    }

    async fn next_event(&mut self) -> stratus::xml::StreamEvent {
        tokio::time::timeout(T, self.events.recv())
            .await
            .expect("nothing from the server")
            .expect("stream ended")
            .expect("bad XML from the server")
    }

    /// The next top-level element the server sends.
    pub async fn next(&mut self) -> Element {
        match self.next_event().await {
            stratus::xml::StreamEvent::Stanza(e) => e,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    /// The next element the server sends with this id (an IQ answer, an error bounce),
    /// passing over the others.
    pub async fn reply(&mut self, id: &str) -> Element {
        loop {
            let e = self.next().await;
            if e.get_attr("id") == Some(id) {
                return e;
            }
        }
    }

    pub async fn send(&mut self, xml: &str) {
        use tokio::io::AsyncWriteExt;
        self.write.write_all(xml.as_bytes()).await.unwrap();
    }
}

/// The real dispatcher on the memory store, in this process, without a server: stanzas in,
/// everything stratus writes out (for the stanza layer's own tests, in milliseconds).
pub struct InProcess {
    pub service: stratus::xmpp::Service,
    pub out: stratus::component::Outbox,
    queue: stratus::component::OutboxReceiver,
    requests: std::sync::Arc<stratus::component::Requests>,
}

impl InProcess {
    /// The component `pubsub.localhost`, serving PEP for `servers`.
    pub fn new(servers: &[&str]) -> InProcess {
        use std::sync::Arc;
        use stratus::component::{NS_COMPONENT, Outbox, Requests};
        let (out, queue) = Outbox::new(1 << 16, NS_COMPONENT);
        let requests = Arc::new(Requests::default());
        let pep = Arc::new(stratus::pep::Pep::new(
            "pubsub.localhost",
            servers.iter().map(|s| s.to_string()).collect(),
            out.clone(),
            requests.clone(),
            100,
        ));
        let pubsub = Arc::new(stratus::pubsub::PubSub::new(
            Arc::new(stratus::storage::memory::MemoryStore::default()),
            stratus::pubsub::Limits::default(),
            Arc::new(pep.clone()),
        ));
        let service = stratus::xmpp::Service::new(
            "pubsub.localhost",
            pubsub,
            Some(pep),
            requests.clone(),
            true,
        )
        .unwrap();
        InProcess {
            service,
            out,
            queue,
            requests,
        }
    }

    /// Handles the stanzas (XML in jabber:component:accept), waits for the work they started,
    /// and returns every stanza written since the last call.
    pub async fn run(&self, stanzas: &[String]) -> Vec<Element> {
        self.run_answering(stanzas, |_| None).await
    }

    /// As [`InProcess::run`], playing the server's part too: each stanza stratus writes is
    /// shown to `answer`, and what it returns (a roster, a disco#info result) is handled as if
    /// the server had sent it, until stratus is idle with nothing left to write.
    pub async fn run_answering(
        &self,
        stanzas: &[String],
        answer: impl Fn(&Element) -> Option<String>,
    ) -> Vec<Element> {
        use stratus::component::StanzaHandler;
        for s in stanzas {
            self.receive(parse(s)).await;
        }
        let mut rx = self.queue.lock().await;
        // stratus's own requests, which its writer sends ahead of the rest (Outbox::send_urgent).
        let mut urgent = self.queue.lock_urgent().await;
        let mut written = Vec::new();
        loop {
            let chunk = {
                let idle = self.service.flush();
                tokio::pin!(idle);
                tokio::select! {
                    biased;
                    Some(chunk) = urgent.recv() => Some(chunk),
                    chunk = rx.recv() => chunk,
                    _ = &mut idle => urgent.try_recv().or_else(|_| rx.try_recv()).ok(),
                }
            };
            let Some(chunk) = chunk else { break };
            for el in parse_written(&chunk) {
                if let Some(reply) = answer(&el) {
                    self.receive(parse(&reply)).await;
                }
                written.push(el);
            }
        }
        written
    }

    /// A stanza from the server, as the component connection passes it on: answers to
    /// stratus's own requests go to their waiter, the rest to the dispatcher.
    async fn receive(&self, el: Element) {
        use stratus::component::StanzaHandler;
        let el = if el.name() == "iq" && matches!(el.get_attr("type"), Some("result" | "error")) {
            match self.requests.complete(el) {
                Ok(()) => return,
                Err(el) => el,
            }
        } else {
            el
        };
        self.service.handle(el, &self.out).await;
    }
}

pub fn parse(s: &str) -> Element {
    stratus::xml::parse_element(s, stratus::xml::Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// What stratus wrote (any number of stanzas), as elements.
pub fn parse_written(written: &str) -> Vec<Element> {
    use stratus::component::NS_COMPONENT;
    let all = stratus::xml::parse_element(
        &format!("<w xmlns='{NS_COMPONENT}'>{written}</w>"),
        stratus::xml::Limits {
            max_stanza_bytes: usize::MAX,
            ..stratus::xml::Limits::default()
        },
    )
    .unwrap_or_else(|e| panic!("stratus wrote XML that is not well-formed ({e}): {written}"));
    all.children().cloned().collect()
}

/// A TCP proxy in front of the local S3/DynamoDB server that can start refusing: a storage outage.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// A proxy in front of the server at `endpoint` (`http://host:port`).
    pub async fn in_front_of(endpoint: &str) -> Proxy {
        Proxy::start(
            endpoint
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
        )
        .await
    }

    /// The endpoint to give stratus instead of the server's.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound); // storage is "down": the connection closes at once
                    continue;
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(h);
            }
        });
        Proxy { port, up, conns }
    }

    /// Storage is "down": open connections are cut, new ones closed at once.
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
