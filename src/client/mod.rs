//! A small c2s client (RFC 6120): TCP with STARTTLS when the server requires it (or always, or
//! never), SASL SCRAM-SHA-1 or PLAIN, resource binding, and XEP-0077 in-band registration. Used by
//! the integration tests and the load tool.

pub mod sasl;
pub mod tls;

pub use tls::TlsMode;

use std::collections::VecDeque;
use std::time::Duration;

use rand::RngExt;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::component::outbox::{Outbox, WriterStop, run_writer};
use crate::jid::Jid;
use crate::xml::reader::{NS_SASL, NS_STREAMS};
use crate::xml::{Element, Limits, StreamEvent, XmlError, spawn_stream_reader};

pub const NS_CLIENT: &str = "jabber:client";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_REGISTER: &str = "jabber:iq:register";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connection lost: {0}")]
    Closed(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// Where and who to connect as.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// host:port of the server's c2s listener.
    pub addr: String,
    /// The XMPP domain (e.g. localhost).
    pub domain: String,
    pub username: String,
    pub password: String,
    pub resource: String,
    /// When to negotiate STARTTLS.
    pub tls: TlsMode,
    /// Accept any server certificate (private servers with self-signed certificates).
    pub tls_insecure: bool,
}

/// A connected, authenticated and bound c2s session.
pub struct Client {
    jid: Jid,
    outbox: Outbox,
    events: mpsc::Receiver<Result<StreamEvent, XmlError>>,
    pending: VecDeque<Element>,
    stop: Option<oneshot::Sender<WriterStop>>,
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
    next_id: u64,
}

fn random_token() -> String {
    let mut rng = rand::rng();
    (0..24)
        .map(|_| {
            let i = rng.random_range(0..62u8);
            (match i {
                0..=9 => b'0' + i,
                10..=35 => b'a' + i - 10,
                _ => b'A' + i - 36,
            }) as char
        })
        .collect()
}

fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}' to='{domain}' version='1.0'>"
    )
}

/// Reads from the socket until one of `markers` and the end of its tag arrived; returns the text.
async fn read_until(tcp: &mut TcpStream, markers: &[&str]) -> Result<String, ClientError> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&buf);
        if let Some(at) = markers.iter().filter_map(|m| text.find(m)).min()
            && text[at..].contains('>')
        {
            return Ok(text.into_owned());
        }
        read_more(tcp, &mut buf, deadline, "the server's STARTTLS answer").await?;
    }
}

/// Appends what the socket has to `buf` (before the stream reader exists): at most 64 KiB in all,
/// until `deadline`.
async fn read_more(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
    waiting_for: &str,
) -> Result<(), ClientError> {
    if buf.len() > 64 << 10 {
        return Err(ClientError::Protocol(format!(
            "no {waiting_for} in the first 64 KiB"
        )));
    }
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
        .await
        .map_err(|_| ClientError::Timeout(waiting_for.into()))?
        .map_err(|e| ClientError::Closed(e.to_string()))?;
    if n == 0 {
        return Err(ClientError::Closed(format!(
            "the server closed the stream: {}",
            String::from_utf8_lossy(buf)
        )));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads the server's stream header and first `<stream:features/>` from the bare socket; returns
/// the bytes consumed (to replay into the stream reader) and the parsed features.
async fn first_features(tcp: &mut TcpStream) -> Result<(Vec<u8>, Element), ClientError> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&buf);
        let end = ["</stream:features>", "<stream:features/>"]
            .iter()
            .filter_map(|m| text.find(m).map(|at| at + m.len()))
            .min();
        if let (Some(start), Some(end)) = (text.find("<stream:features"), end) {
            let wrapped = format!(
                "<w xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>{}</w>",
                &text[start..end]
            );
            let features = crate::xml::parse_element(&wrapped, READER_LIMITS)
                .ok()
                .and_then(|w| w.children().next().cloned())
                .ok_or_else(|| {
                    ClientError::Protocol(format!("unreadable stream features: {text}"))
                })?;
            return Ok((buf, features));
        }
        read_more(tcp, &mut buf, deadline, "the server's stream features").await?;
    }
}

/// A stream before resource binding: raw socket writes and the event channel.
struct RawStream {
    events: mpsc::Receiver<Result<StreamEvent, XmlError>>,
    write: Box<dyn AsyncWrite + Send + Unpin>,
    domain: String,
}

/// A client reads what its own server sends: large result pages, so generous limits.
const READER_LIMITS: Limits = Limits {
    max_stanza_bytes: 16 << 20,
    max_depth: 64,
    max_attributes: 1024,
    max_namespace_declarations: 1024,
    max_uri_bytes: 4096,
    max_children: 1 << 20,
};

impl RawStream {
    /// A stream over a connection's two halves: a reader task parses `read`.
    fn over(
        read: impl tokio::io::AsyncRead + Send + Unpin + 'static,
        write: impl AsyncWrite + Send + Unpin + 'static,
        domain: &str,
    ) -> RawStream {
        let (events, _task) = spawn_stream_reader(read, READER_LIMITS, 1024);
        RawStream {
            events,
            write: Box::new(write),
            domain: domain.into(),
        }
    }

    /// Connects, opens the stream and negotiates STARTTLS as `cfg` asks; returns the stream and
    /// the features to authenticate with.
    async fn open(cfg: &ClientConfig) -> Result<(RawStream, Element), ClientError> {
        let (addr, domain) = (cfg.addr.as_str(), cfg.domain.as_str());
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(addr.into(), e))?;
        let _ = tcp.set_nodelay(true);
        tcp.write_all(stream_header(domain).as_bytes())
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))?;
        // The first features are read here, before the stream reader exists, because a TLS
        // upgrade needs the bare socket back.
        let (consumed, features) = first_features(&mut tcp).await?;
        if !tls::decide(cfg.tls, &features).map_err(ClientError::Tls)? {
            // Plaintext: the reader replays what was consumed, then reads the socket.
            let (read, write) = tcp.into_split();
            let replay = std::io::Cursor::new(consumed).chain(read);
            let mut s = RawStream::over(replay, write, domain);
            let features = s.header_and_features().await?;
            return Ok((s, features));
        }
        // RFC 6120 5.4.2: <starttls/>, <proceed/>, the handshake, then a new stream.
        tcp.write_all(format!("<starttls xmlns='{}'/>", tls::NS_TLS).as_bytes())
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))?;
        let answer = read_until(&mut tcp, &["<proceed", "<failure"]).await?;
        if !answer.contains("<proceed") {
            return Err(ClientError::Tls(format!(
                "the server refused STARTTLS: {answer}"
            )));
        }
        let connector = tls::connector(cfg.tls_insecure).map_err(ClientError::Tls)?;
        let name = tls::server_name(domain).map_err(ClientError::Tls)?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Tls(format!("handshake with {addr}: {e}")))?;
        let (read, write) = tokio::io::split(stream);
        let mut s = RawStream::over(read, write, domain);
        let features = s.restart().await?;
        Ok((s, features))
    }

    /// Sends a stream header; returns the server's `<stream:features/>`.
    async fn restart(&mut self) -> Result<Element, ClientError> {
        let header = stream_header(&self.domain);
        self.write_raw(&header).await?;
        self.header_and_features().await
    }

    /// Reads the server's stream header and its `<stream:features/>`.
    async fn header_and_features(&mut self) -> Result<Element, ClientError> {
        match self.next().await? {
            StreamEvent::Open(_) => {}
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a stream header, got {other:?}"
                )));
            }
        }
        match self.next().await? {
            StreamEvent::Stanza(f) if f.is("features", NS_STREAMS) => Ok(f),
            other => Err(ClientError::Protocol(format!(
                "expected stream features, got {other:?}"
            ))),
        }
    }

    async fn write_raw(&mut self, xml: &str) -> Result<(), ClientError> {
        self.write
            .write_all(xml.as_bytes())
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    async fn send(&mut self, el: &Element) -> Result<(), ClientError> {
        let mut s = String::new();
        el.write_to(&mut s, NS_CLIENT);
        self.write_raw(&s).await
    }

    async fn next(&mut self) -> Result<StreamEvent, ClientError> {
        match tokio::time::timeout(Duration::from_secs(20), self.events.recv()).await {
            Ok(Some(Ok(StreamEvent::Stanza(e)))) if e.is("error", NS_STREAMS) => {
                Err(ClientError::Closed(format!("stream error: {e}")))
            }
            Ok(Some(Ok(ev))) => Ok(ev),
            Ok(Some(Err(e))) => Err(ClientError::Closed(e.to_string())),
            Ok(None) => Err(ClientError::Closed("reader stopped".into())),
            Err(_) => Err(ClientError::Timeout("the server".into())),
        }
    }

    async fn next_stanza(&mut self) -> Result<Element, ClientError> {
        match self.next().await? {
            StreamEvent::Stanza(e) => Ok(e),
            other => Err(ClientError::Closed(format!("{other:?}"))),
        }
    }

    async fn authenticate(
        &mut self,
        features: &Element,
        user: &str,
        password: &str,
    ) -> Result<(), ClientError> {
        let mechs: Vec<String> = features
            .get_child("mechanisms", NS_SASL)
            .map(|m| m.children().map(|c| c.text_content()).collect())
            .unwrap_or_default();
        if mechs.iter().any(|m| m == "SCRAM-SHA-1") {
            let mut scram = sasl::Scram::new(user, password, random_token());
            self.send(
                &Element::new("auth", NS_SASL)
                    .attr("mechanism", "SCRAM-SHA-1")
                    .text(scram.client_first()),
            )
            .await?;
            let challenge = self.next_stanza().await?;
            if !challenge.is("challenge", NS_SASL) {
                return Err(ClientError::Auth(format!(
                    "SCRAM-SHA-1 refused: {challenge}"
                )));
            }
            let fin = scram
                .client_final(&challenge.text_content())
                .map_err(ClientError::Auth)?;
            self.send(&Element::new("response", NS_SASL).text(fin))
                .await?;
            let outcome = self.next_stanza().await?;
            if !outcome.is("success", NS_SASL) {
                return Err(ClientError::Auth(format!("{outcome}")));
            }
            scram
                .verify_server(&outcome.text_content())
                .map_err(ClientError::Auth)?;
            Ok(())
        } else if mechs.iter().any(|m| m == "PLAIN") {
            self.send(
                &Element::new("auth", NS_SASL)
                    .attr("mechanism", "PLAIN")
                    .text(sasl::plain_initial(user, password)),
            )
            .await?;
            let outcome = self.next_stanza().await?;
            if outcome.is("success", NS_SASL) {
                Ok(())
            } else {
                Err(ClientError::Auth(format!("{outcome}")))
            }
        } else {
            Err(ClientError::Auth(format!(
                "no supported mechanism among {mechs:?}"
            )))
        }
    }

    async fn iq_raw(&mut self, iq: Element) -> Result<Element, ClientError> {
        let id = iq.get_attr("id").unwrap_or_default().to_owned();
        self.send(&iq).await?;
        loop {
            let el = self.next_stanza().await?;
            if el.name() == "iq" && el.get_attr("id") == Some(id.as_str()) {
                return Ok(el);
            }
        }
    }
}

impl Client {
    /// Registers an account with XEP-0077 in-band registration. An existing account with the same
    /// name is an error (`conflict`).
    pub async fn register(
        addr: &str,
        domain: &str,
        username: &str,
        password: &str,
    ) -> Result<(), ClientError> {
        Client::register_with(&ClientConfig {
            addr: addr.into(),
            domain: domain.into(),
            username: username.into(),
            password: password.into(),
            ..ClientConfig::default()
        })
        .await
    }

    /// [`Client::register`] with the connection settings (TLS) of `cfg`.
    pub async fn register_with(cfg: &ClientConfig) -> Result<(), ClientError> {
        let (username, password) = (cfg.username.as_str(), cfg.password.as_str());
        let (mut s, _features) = RawStream::open(cfg).await?;
        let reply = s
            .iq_raw(
                Element::new("iq", NS_CLIENT)
                    .attr("type", "set")
                    .attr("id", "reg1")
                    .child(
                        Element::new("query", NS_REGISTER)
                            .child(Element::new("username", NS_REGISTER).text(username))
                            .child(Element::new("password", NS_REGISTER).text(password)),
                    ),
            )
            .await?;
        let _ = s.write_raw("</stream:stream>").await;
        if reply.get_attr("type") == Some("result") {
            Ok(())
        } else {
            Err(ClientError::Protocol(format!(
                "registration of {username} refused: {reply}"
            )))
        }
    }

    /// Connects, authenticates and binds the resource.
    pub async fn connect(cfg: &ClientConfig) -> Result<Client, ClientError> {
        let (mut s, features) = RawStream::open(cfg).await?;
        s.authenticate(&features, &cfg.username, &cfg.password)
            .await?;
        let features = s.restart().await?;
        if features.get_child("bind", NS_BIND).is_none() {
            return Err(ClientError::Protocol(
                "the server offers no resource binding".into(),
            ));
        }
        let bound = s
            .iq_raw(
                Element::new("iq", NS_CLIENT)
                    .attr("type", "set")
                    .attr("id", "bind1")
                    .child(
                        Element::new("bind", NS_BIND)
                            .child(Element::new("resource", NS_BIND).text(cfg.resource.clone())),
                    ),
            )
            .await?;
        let jid = bound
            .get_child("bind", NS_BIND)
            .and_then(|b| b.get_child("jid", NS_BIND))
            .and_then(|j| Jid::parse(&j.text_content()).ok())
            .ok_or_else(|| ClientError::Protocol(format!("bind failed: {bound}")))?;
        // RFC 3921 sessions, where a server still requires them.
        if let Some(session) = features.get_child("session", NS_SESSION)
            && session.get_child("optional", NS_SESSION).is_none()
        {
            s.iq_raw(
                Element::new("iq", NS_CLIENT)
                    .attr("type", "set")
                    .attr("id", "sess1")
                    .child(Element::new("session", NS_SESSION)),
            )
            .await?;
        }
        let RawStream { events, write, .. } = s;
        let (outbox, queue) = Outbox::new(4096, NS_CLIENT);
        let (stop_tx, stop_rx) = oneshot::channel();
        let writer = tokio::spawn(run_writer(write, queue, None, None, stop_rx));
        Ok(Client {
            jid,
            outbox,
            events,
            pending: VecDeque::new(),
            stop: Some(stop_tx),
            writer,
            next_id: 0,
        })
    }

    /// The full JID the server bound.
    pub fn jid(&self) -> &Jid {
        &self.jid
    }

    /// A handle to queue stanzas from elsewhere (e.g. a load generator's sender task).
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    pub fn next_id(&mut self) -> String {
        self.next_id += 1;
        format!("c{}", self.next_id)
    }

    pub async fn send(&self, stanza: &Element) -> Result<(), ClientError> {
        self.outbox
            .send(stanza)
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// Sends `<presence/>` (available, no priority change).
    pub async fn send_presence(&self) -> Result<(), ClientError> {
        self.send(&Element::new("presence", NS_CLIENT)).await
    }

    /// The next stanza: stashed ones first, then from the stream.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Element, ClientError> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(e);
        }
        self.recv_stream(timeout).await
    }

    async fn recv_stream(&mut self, timeout: Duration) -> Result<Element, ClientError> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(Ok(StreamEvent::Stanza(e)))) if e.is("error", NS_STREAMS) => {
                Err(ClientError::Closed(format!("stream error: {e}")))
            }
            Ok(Some(Ok(StreamEvent::Stanza(e)))) => Ok(e),
            Ok(Some(Ok(other))) => Err(ClientError::Closed(format!("{other:?}"))),
            Ok(Some(Err(e))) => Err(ClientError::Closed(e.to_string())),
            Ok(None) => Err(ClientError::Closed("reader stopped".into())),
            Err(_) => Err(ClientError::Timeout("a stanza".into())),
        }
    }

    /// Waits for the first stanza matching `pred` (stashed or new); others are kept for later.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Element) -> bool,
    ) -> Result<Element, ClientError> {
        if let Some(pos) = self.pending.iter().position(&mut pred) {
            return Ok(self.pending.remove(pos).expect("position is in range"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let el = self.recv_stream(left).await?;
            if pred(&el) {
                return Ok(el);
            }
            self.pending.push_back(el);
        }
    }

    /// True when a stanza received but not yet taken matches `pred`.
    pub fn pending_contains(&self, pred: impl FnMut(&Element) -> bool) -> bool {
        self.pending.iter().any(pred)
    }

    /// Sends an IQ (an id is assigned if it has none) and waits for its result or error.
    pub async fn iq(&mut self, mut iq: Element) -> Result<Element, ClientError> {
        let id = match iq.get_attr("id") {
            Some(id) => id.to_owned(),
            None => {
                let id = self.next_id();
                iq.set_attr("id", id.clone());
                id
            }
        };
        self.send(&iq).await?;
        self.wait_for(Duration::from_secs(15), |e| {
            e.name() == "iq"
                && e.get_attr("id") == Some(id.as_str())
                && matches!(e.get_attr("type"), Some("result") | Some("error"))
        })
        .await
    }

    /// Closes the stream after writing everything queued.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(WriterStop::Drain("</stream:stream>".into()));
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.writer).await;
    }
}
