//! One component connection at a time, reconnected with exponential backoff and jitter.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::flow::Flow;
use super::outbox::{Outbox, OutboxReceiver, WriterStop, as_reader, run_writer};
use super::requests::Requests;
use super::{NS_COMPONENT, NS_STREAM_ERRORS};
use crate::config::Config;
use crate::xml::element::escape_text;
use crate::xml::reader::NS_STREAMS;
use crate::xml::{
    Element, Rejected, StreamEvent, XmlError, XmlErrorKind, spawn_stream_reader_live,
};

/// Handles stanzas addressed to the component. Called for one stanza at a time, in order.
pub trait StanzaHandler: Send + Sync + 'static {
    fn handle(&self, stanza: Element, out: &Outbox) -> impl Future<Output = ()> + Send;

    /// A stanza the reader skipped for breaking a limit: answer its sender if an answer is due.
    fn rejected(&self, stanza: Rejected, out: &Outbox) -> impl Future<Output = ()> + Send;

    /// Called after each successful handshake (first connection and every reconnection).
    fn connected(&self, _out: &Outbox) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Completes when the work `handle` started in the background is done (graceful shutdown).
    fn flush(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A misconfiguration retrying cannot fix; stratus exits with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FatalError(pub String);

/// Why a connection attempt or a session ended.
enum Ended {
    /// Retry after a backoff.
    Retry(String),
    /// The server answered with `conflict`: another connection holds the domain.
    Conflict(String),
    Fatal(FatalError),
    /// Shutdown was requested and the stream was closed cleanly.
    Shutdown,
}

/// The lowercase hex SHA-1 of stream id + secret (XEP-0114 section 3).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let digest = Sha1::digest(format!("{stream_id}{secret}").as_bytes());
    let mut hex = String::with_capacity(40);
    for b in digest.iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

pub struct Component {
    config: Arc<Config>,
    /// The input limits of `[component]`, replaced on SIGHUP; the reader applies each new value
    /// from the next stanza on.
    input_limits: Arc<arc_swap::ArcSwap<crate::xml::Limits>>,
    outbox: Outbox,
    queue: OutboxReceiver,
    requests: Arc<Requests>,
}

impl Component {
    pub fn new(config: Arc<Config>) -> Component {
        let (outbox, queue) = Outbox::with_bytes(
            config.component.outbound_queue,
            config.component.outbound_queue_bytes,
            NS_COMPONENT,
        );
        Component {
            input_limits: Arc::new(arc_swap::ArcSwap::from_pointee(config.limits())),
            config,
            outbox,
            queue,
            requests: Arc::new(Requests::default()),
        }
    }

    /// The table of IQs sent through this component and waiting for answers.
    pub fn requests(&self) -> Arc<Requests> {
        self.requests.clone()
    }

    /// The stream's input limits, for a reload to replace.
    pub fn input_limits(&self) -> Arc<arc_swap::ArcSwap<crate::xml::Limits>> {
        self.input_limits.clone()
    }

    /// The queue for stanzas to send; valid across reconnections.
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// Connects, serves, and reconnects until `shutdown` completes (Ok) or a fatal error occurs.
    pub async fn run<H: StanzaHandler>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), FatalError> {
        let cfg = &self.config.component;
        let initial = Duration::from_millis(cfg.reconnect_initial_ms);
        let max = Duration::from_millis(cfg.reconnect_max_ms);
        let mut delay = initial;
        let mut conflicts = 0u32;
        let mut sessions = 0u64;
        tokio::pin!(shutdown);
        loop {
            let ended = tokio::select! {
                biased;
                _ = &mut shutdown => Ended::Shutdown,
                attempt = self.connect() => match attempt {
                    Ok(session) => {
                        delay = initial;
                        conflicts = 0;
                        let m = crate::metrics::metrics();
                        if sessions > 0 {
                            m.reconnects.inc();
                        }
                        sessions += 1;
                        m.connected.set(1);
                        crate::systemd::connected(&format!(
                            "connected to {} as {}",
                            cfg.server, cfg.domain
                        ));
                        let ended = self.serve(session, &*handler, &mut shutdown).await;
                        m.connected.set(0);
                        if !matches!(ended, Ended::Shutdown) {
                            crate::systemd::disconnected(&format!(
                                "reconnecting to {}",
                                cfg.server
                            ));
                        }
                        ended
                    }
                    Err(e) => e,
                },
            };
            match ended {
                Ended::Shutdown => return Ok(()),
                Ended::Fatal(e) => {
                    error!("{e}");
                    return Err(e);
                }
                Ended::Conflict(msg) => {
                    conflicts += 1;
                    // Right after our own disconnect the server may still hold the old session.
                    if conflicts >= 5 {
                        let e = FatalError(format!(
                            "the server refused {} with conflict {conflicts} times: another \
                             component is connected with this domain (another stratus instance?). \
                             Stop it, or give this instance another --domain. ({msg})",
                            cfg.domain
                        ));
                        error!("{e}");
                        return Err(e);
                    }
                    warn!("{msg}; retrying");
                }
                Ended::Retry(msg) => warn!("connection to {} lost or refused: {msg}", cfg.server),
            }
            let jittered = delay.mul_f64(rand::rng().random_range(0.5..1.0));
            info!("reconnecting to {} in {:?}", cfg.server, jittered);
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(jittered) => {}
            }
            delay = (delay * 2).min(max);
        }
    }

    /// TCP connect + stream header + handshake, within the connect timeout.
    async fn connect(&self) -> Result<Session, Ended> {
        let cfg = &self.config.component;
        let timeout = Duration::from_secs(cfg.connect_timeout_seconds);
        match tokio::time::timeout(timeout, self.handshake()).await {
            Ok(r) => r,
            Err(_) => Err(Ended::Retry(format!(
                "no handshake with {} within {timeout:?}",
                cfg.server
            ))),
        }
    }

    async fn handshake(&self) -> Result<Session, Ended> {
        let cfg = &self.config.component;
        let tcp = TcpStream::connect(&cfg.server)
            .await
            .map_err(|e| Ended::Retry(format!("cannot connect to {}: {e}", cfg.server)))?;
        tcp.set_nodelay(true)
            .map_err(|e| Ended::Retry(format!("TCP_NODELAY: {e}")))?;
        let (read, mut write) = tcp.into_split();
        let (mut events, reader_task) =
            spawn_stream_reader_live(read, self.input_limits.clone(), 256);
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='{NS_STREAMS}' to='{}'>",
            cfg.domain
        );
        let io_err = |e: std::io::Error| Ended::Retry(format!("write failed: {e}"));
        write.write_all(header.as_bytes()).await.map_err(io_err)?;
        let stream_id = match events.recv().await {
            Some(Ok(StreamEvent::Open(h))) => h.get_attr("id").map(str::to_owned),
            other => return Err(self.unexpected(other, "the stream header")),
        };
        let Some(stream_id) = stream_id else {
            // Prosody/ejabberd send the error right after a header without id.
            let next = events.recv().await;
            return Err(self.unexpected(next, "the stream header's id"));
        };
        let hs = format!(
            "<handshake>{}</handshake>",
            handshake_digest(&stream_id, &cfg.secret)
        );
        write.write_all(hs.as_bytes()).await.map_err(io_err)?;
        match events.recv().await {
            Some(Ok(StreamEvent::Stanza(el))) if el.is("handshake", NS_COMPONENT) => {}
            other => return Err(self.unexpected(other, "the handshake reply")),
        }
        info!("connected to {} as component {}", cfg.server, cfg.domain);
        Ok(Session {
            events,
            write,
            reader_task,
        })
    }

    /// Classifies whatever arrived instead of what the handshake expected.
    fn unexpected(&self, got: Option<Result<StreamEvent, XmlError>>, waiting_for: &str) -> Ended {
        let cfg = &self.config.component;
        match got {
            Some(Ok(StreamEvent::Stanza(el))) if el.is("error", NS_STREAMS) => {
                let (cond, text) = stream_error_condition(&el);
                let detail = text.map(|t| format!(" ({t})")).unwrap_or_default();
                match cond.as_str() {
                    "not-authorized" => Ended::Fatal(FatalError(format!(
                        "the server at {} rejected the handshake for {} (not-authorized){detail}: \
                         the secret is wrong. Set component.secret / --secret to the password the \
                         server has for this component (ejabberd also answers this way when its \
                         ejabberd_service listener has no entry for the domain).",
                        cfg.server, cfg.domain
                    ))),
                    "host-unknown" | "improper-addressing" => Ended::Fatal(FatalError(format!(
                        "the server at {} does not serve {} as a component ({cond}){detail}: add a \
                         component for this domain to the server configuration (README: attaching \
                         to ejabberd / Prosody), or fix component.domain / --domain.",
                        cfg.server, cfg.domain
                    ))),
                    "conflict" => Ended::Conflict(format!(
                        "the server at {} already has a component connected as {} (conflict){detail}",
                        cfg.server, cfg.domain
                    )),
                    _ => Ended::Retry(format!(
                        "stream error {cond}{detail} while waiting for {waiting_for}"
                    )),
                }
            }
            Some(Ok(other)) => Ended::Retry(format!(
                "unexpected {other:?} while waiting for {waiting_for}"
            )),
            Some(Err(e)) => Ended::Retry(format!("{e} while waiting for {waiting_for}")),
            None => Ended::Retry(format!("connection closed while waiting for {waiting_for}")),
        }
    }

    /// Reads stanzas until the connection ends or shutdown is requested.
    async fn serve<H: StanzaHandler>(
        &self,
        session: Session,
        handler: &H,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Ended {
        let Session {
            mut events,
            write,
            reader_task,
        } = session;
        let (stop_tx, stop_rx) = oneshot::channel();
        // The window is the server's own: pinged at its domain (the first PEP server: configured,
        // or the component domain's parent).
        let window = self.config.component.in_flight_bytes;
        let flow = match self.config.pep_servers().into_iter().next() {
            Some(server) if window > 0 => Some(Arc::new(Flow::new(
                window,
                &self.config.component.domain,
                &server,
            ))),
            _ => None,
        };
        let writer = tokio::spawn(run_writer(
            write,
            self.queue.clone(),
            self.config.keepalive(),
            flow.clone(),
            stop_rx,
        ));
        let mut writer = writer;
        handler.connected(&self.outbox).await;
        let ended = loop {
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => {
                    info!("shutting down: closing the stream to {}", self.config.component.server);
                    reader_task.abort();
                    // Finish in-flight requests so their answers are queued before the close.
                    if tokio::time::timeout(Duration::from_secs(10), handler.flush()).await.is_err() {
                        warn!("requests still in flight after 10 s; closing anyway");
                    }
                    let _ = stop_tx.send(WriterStop::Drain("</stream:stream>".into()));
                    break Ended::Shutdown;
                }
                res = &mut writer => {
                    reader_task.abort();
                    let why = match res {
                        Ok(Err(e)) => format!("write failed: {e}"),
                        _ => "writer stopped".into(),
                    };
                    return Ended::Retry(why);
                }
                ev = events.recv() => match ev {
                    Some(Ok(StreamEvent::Stanza(el))) => {
                        if el.is("error", NS_STREAMS) {
                            let (cond, text) = stream_error_condition(&el);
                            let _ = stop_tx.send(WriterStop::Abort("</stream:stream>".into()));
                            break Ended::Retry(format!(
                                "the server closed the stream with {cond}{}",
                                text.map(|t| format!(" ({t})")).unwrap_or_default()
                            ));
                        }
                        if el.name() == "iq"
                            && matches!(el.get_attr("type"), Some("result" | "error"))
                        {
                            // Answers are never answered (RFC 6120 8.1.2.2); ours go to their
                            // waiter (the window's pings to the window), the rest to the handler.
                            if flow.as_ref().is_some_and(|f| f.answer(&el)) {
                                continue;
                            }
                            match self.requests.complete(el) {
                                Ok(()) => continue,
                                Err(el) => as_reader(handler.handle(el, &self.outbox)).await,
                            }
                        } else {
                            as_reader(handler.handle(el, &self.outbox)).await;
                        }
                    }
                    Some(Ok(StreamEvent::Close)) => {
                        let _ = stop_tx.send(WriterStop::Abort("</stream:stream>".into()));
                        break Ended::Retry("the server closed the stream".into());
                    }
                    Some(Ok(StreamEvent::Rejected(r))) => {
                        crate::metrics::metrics().bounced.inc();
                        as_reader(handler.rejected(r, &self.outbox)).await
                    }
                    Some(Ok(StreamEvent::Open(_))) => {}
                    Some(Err(e)) => {
                        let tail = match e.kind.condition() {
                            Some(cond) => {
                                error!("closing the stream: the server sent bad XML: {}", e.detail);
                                stream_error_xml(cond, &e.detail)
                            }
                            None => String::new(),
                        };
                        let _ = stop_tx.send(WriterStop::Abort(tail));
                        break Ended::Retry(describe(&e));
                    }
                    None => {
                        let _ = stop_tx.send(WriterStop::Abort(String::new()));
                        break Ended::Retry("reader stopped".into());
                    }
                },
            }
        };
        self.requests.cancel_all();
        match tokio::time::timeout(Duration::from_secs(5), &mut writer).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => debug!("writer ended with {e}"),
            Ok(Err(e)) => debug!("writer task failed: {e}"),
            Err(_) => {
                warn!("the writer did not finish within 5 s; dropping the connection");
                writer.abort();
            }
        }
        ended
    }
}

struct Session {
    events: mpsc::Receiver<Result<StreamEvent, XmlError>>,
    write: OwnedWriteHalf,
    reader_task: tokio::task::JoinHandle<()>,
}

fn describe(e: &XmlError) -> String {
    match e.kind {
        XmlErrorKind::ConnectionClosed => format!("connection closed: {}", e.detail),
        _ => format!("bad XML from the server: {}", e.detail),
    }
}

/// The condition name and text of a `<stream:error/>`.
pub fn stream_error_condition(el: &Element) -> (String, Option<String>) {
    let cond = el
        .children()
        .find(|c| c.ns() == NS_STREAM_ERRORS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".into());
    let text = el
        .get_child("text", NS_STREAM_ERRORS)
        .map(|t| t.text_content())
        .filter(|t| !t.is_empty());
    (cond, text)
}

/// `<stream:error>` with a condition and text, followed by the stream close.
pub fn stream_error_xml(condition: &str, text: &str) -> String {
    format!(
        "<stream:error><{condition} xmlns='{NS_STREAM_ERRORS}'/><text xmlns='{NS_STREAM_ERRORS}'>{}</text></stream:error></stream:stream>",
        escape_text(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_digest_is_lowercase_hex_sha1_of_id_then_secret() {
        // SHA-1("abc") from FIPS 180-1; the id comes first, the secret second.
        assert_eq!(
            handshake_digest("ab", "c"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            handshake_digest("", "abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
