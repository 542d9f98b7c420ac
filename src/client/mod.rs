//! A small c2s client (RFC 6120): plaintext TCP, SASL SCRAM-SHA-1 or PLAIN, resource binding, and
//! XEP-0077 in-band registration. Used by the integration tests and the load tool.

pub mod sasl;

use std::collections::VecDeque;
use std::time::Duration;

use rand::RngExt;
use tokio::io::AsyncWriteExt;
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
}

/// Where and who to connect as.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// host:port of the server's c2s listener.
    pub addr: String,
    /// The XMPP domain (e.g. localhost).
    pub domain: String,
    pub username: String,
    pub password: String,
    pub resource: String,
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

/// A stream before resource binding: raw socket writes and the event channel.
struct RawStream {
    events: mpsc::Receiver<Result<StreamEvent, XmlError>>,
    write: tokio::net::tcp::OwnedWriteHalf,
    domain: String,
}

impl RawStream {
    async fn open(addr: &str, domain: &str) -> Result<(RawStream, Element), ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(addr.into(), e))?;
        let _ = tcp.set_nodelay(true);
        let (read, write) = tcp.into_split();
        let (events, _task) = spawn_stream_reader(
            read,
            Limits {
                max_stanza_bytes: 16 << 20,
                max_depth: 64,
            },
            1024,
        );
        let mut s = RawStream {
            events,
            write,
            domain: domain.into(),
        };
        let features = s.restart().await?;
        Ok((s, features))
    }

    /// Sends a stream header; returns the server's `<stream:features/>`.
    async fn restart(&mut self) -> Result<Element, ClientError> {
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}' to='{}' version='1.0'>",
            self.domain
        );
        self.write_raw(&header).await?;
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
        let (mut s, _features) = RawStream::open(addr, domain).await?;
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
        let (mut s, features) = RawStream::open(&cfg.addr, &cfg.domain).await?;
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
        let writer = tokio::spawn(run_writer(write, queue, None, stop_rx));
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
