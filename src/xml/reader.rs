//! Incremental parsing of an endless `<stream:stream>` into stanza trees, with limits.
//!
//! quick-xml's async reader is not cancel-safe, so [`spawn_stream_reader`] gives it a task of its own
//! and hands complete stanzas over a bounded channel: when the consumer is slow the channel fills,
//! the task stops reading and TCP pushes back on the peer. Limits protect the process: a byte budget
//! per stanza (counted as the parser consumes input, so a huge text node is never buffered whole), a
//! depth cap, no DTD, no processing instructions, no comments, no entities beyond XML's five and
//! character references, and only XML 1.0 characters (RFC 6120 section 11.1).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{NamespaceResolver, ResolveResult};
use quick_xml::reader::NsReader;
use tokio::io::{AsyncBufRead, AsyncRead, BufReader, ReadBuf};
use tokio::sync::mpsc;

use super::element::{Element, is_xml_char};

pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// What a violation of the XML rules maps to, as an RFC 6120 section 4.9.3 stream error condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlErrorKind {
    /// Not well-formed XML, or not namespace-well-formed.
    NotWellFormed,
    /// A DTD, processing instruction, comment or undefined entity (RFC 6120 11.1).
    RestrictedXml,
    /// A limit was exceeded (stanza size, depth).
    PolicyViolation,
    /// The stream root is not `{http://etherx.jabber.org/streams}stream`.
    InvalidNamespace,
    /// The peer closed the connection (EOF) or the socket failed.
    ConnectionClosed,
}

impl XmlErrorKind {
    /// The stream error condition element name, or None when the connection is already gone.
    pub fn condition(self) -> Option<&'static str> {
        match self {
            XmlErrorKind::NotWellFormed => Some("not-well-formed"),
            XmlErrorKind::RestrictedXml => Some("restricted-xml"),
            XmlErrorKind::PolicyViolation => Some("policy-violation"),
            XmlErrorKind::InvalidNamespace => Some("invalid-namespace"),
            XmlErrorKind::ConnectionClosed => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct XmlError {
    pub kind: XmlErrorKind,
    pub detail: String,
}

impl XmlError {
    fn new(kind: XmlErrorKind, detail: impl Into<String>) -> Self {
        XmlError {
            kind,
            detail: detail.into(),
        }
    }
}

/// Limits applied to every stanza read from a stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum bytes of one stanza, as sent on the wire.
    pub max_stanza_bytes: usize,
    /// Maximum element nesting inside one stanza (the stanza itself is depth 1).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 48,
        }
    }
}

/// One thing read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer's `<stream:stream>` header; its attributes (without namespace declarations).
    Open(Element),
    /// A complete top-level element (stanza, `<handshake/>`, `<stream:features/>`, `<stream:error/>`...).
    Stanza(Element),
    /// The peer closed the stream with `</stream:stream>`.
    Close,
}

/// An AsyncBufRead wrapper counting bytes the parser consumed since the last reset; it fails the
/// read once the budget is exceeded, which bounds what quick-xml buffers for one event.
struct Budgeted<R> {
    inner: R,
    consumed: usize,
    budget: usize,
    exceeded: bool,
}

impl<R> Budgeted<R> {
    fn reset(&mut self) {
        self.consumed = 0;
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Budgeted<BufReader<R>> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for Budgeted<BufReader<R>> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.consumed > this.budget {
            this.exceeded = true;
            return Poll::Ready(Err(io::Error::other("stanza size limit exceeded")));
        }
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.consumed += amt;
        Pin::new(&mut this.inner).consume(amt);
    }
}

/// Builds element trees from parser events, enforcing the depth cap and character rules.
pub struct TreeBuilder {
    stack: Vec<Element>,
    max_depth: usize,
}

impl TreeBuilder {
    pub fn new(max_depth: usize) -> Self {
        TreeBuilder {
            stack: Vec::new(),
            max_depth,
        }
    }

    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// Opens an element; returns it completed at once when `empty` and it is the root.
    fn start(
        &mut self,
        e: &BytesStart<'_>,
        resolver: &NamespaceResolver,
        empty: bool,
    ) -> Result<Option<Element>, XmlError> {
        if self.stack.len() >= self.max_depth {
            return Err(XmlError::new(
                XmlErrorKind::PolicyViolation,
                format!("element nesting deeper than {}", self.max_depth),
            ));
        }
        let el = element_from_start(e, resolver)?;
        if empty {
            Ok(self.close_with(el))
        } else {
            self.stack.push(el);
            Ok(None)
        }
    }

    fn end(&mut self) -> Option<Element> {
        let el = self.stack.pop()?;
        self.close_with(el)
    }

    fn close_with(&mut self, el: Element) -> Option<Element> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.push_child(el);
                None
            }
            None => Some(el),
        }
    }

    fn text(&mut self, text: &str) -> Result<(), XmlError> {
        if let Some(c) = text.chars().find(|c| !is_xml_char(*c)) {
            return Err(XmlError::new(
                XmlErrorKind::NotWellFormed,
                format!("character U+{:04X} is not allowed in XML", c as u32),
            ));
        }
        if let Some(parent) = self.stack.last_mut() {
            parent.push_text(text);
        }
        Ok(())
    }

    /// Handles one non-structural event common to stream and document parsing.
    fn other_event(&mut self, ev: &Event<'_>) -> Result<(), XmlError> {
        match ev {
            Event::Text(t) => {
                let s = t.xml10_content();
                if self.stack.is_empty() {
                    if s.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
                        Ok(())
                    } else {
                        Err(XmlError::new(
                            XmlErrorKind::NotWellFormed,
                            "text outside of any stanza",
                        ))
                    }
                } else {
                    self.text(&s)
                }
            }
            Event::CData(c) => {
                let s: &str = c.as_ref();
                if self.stack.is_empty() {
                    return Err(XmlError::new(
                        XmlErrorKind::NotWellFormed,
                        "CDATA outside of any stanza",
                    ));
                }
                self.text(s)
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) if is_xml_char(c) => c,
                        _ => {
                            return Err(XmlError::new(
                                XmlErrorKind::NotWellFormed,
                                "invalid character reference",
                            ));
                        }
                    }
                } else {
                    match r.as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => {
                            return Err(XmlError::new(
                                XmlErrorKind::RestrictedXml,
                                format!("entity reference &{}; is not allowed", other),
                            ));
                        }
                    }
                };
                if self.stack.is_empty() {
                    return Err(XmlError::new(
                        XmlErrorKind::NotWellFormed,
                        "text outside of any stanza",
                    ));
                }
                let mut buf = [0u8; 4];
                self.text(ch.encode_utf8(&mut buf))
            }
            Event::Comment(_) => Err(XmlError::new(
                XmlErrorKind::RestrictedXml,
                "XML comments are not allowed",
            )),
            Event::PI(_) => Err(XmlError::new(
                XmlErrorKind::RestrictedXml,
                "processing instructions are not allowed",
            )),
            Event::DocType(_) => Err(XmlError::new(
                XmlErrorKind::RestrictedXml,
                "a document type declaration is not allowed",
            )),
            Event::Decl(_) => Err(XmlError::new(
                XmlErrorKind::NotWellFormed,
                "XML declaration after the start of the stream",
            )),
            Event::Start(_) | Event::Empty(_) | Event::End(_) | Event::Eof => Ok(()),
        }
    }
}

fn element_from_start(
    e: &BytesStart<'_>,
    resolver: &NamespaceResolver,
) -> Result<Element, XmlError> {
    let (ns, local) = resolver.resolve_element(e.name());
    let ns = match ns {
        ResolveResult::Bound(ns) => {
            let ns: &str = ns.as_ref();
            ns.to_owned()
        }
        ResolveResult::Unbound => String::new(),
        ResolveResult::Unknown(p) => {
            return Err(XmlError::new(
                XmlErrorKind::NotWellFormed,
                format!("undeclared namespace prefix {}", p),
            ));
        }
    };
    let name: &str = local.as_ref();
    let mut el = Element::new(name, ns);
    for attr in e.attributes() {
        let attr = attr.map_err(|err| {
            XmlError::new(XmlErrorKind::NotWellFormed, format!("bad attribute: {err}"))
        })?;
        let key: &str = attr.key.as_ref();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| {
                let kind = if err.to_string().contains("entity") {
                    XmlErrorKind::RestrictedXml
                } else {
                    XmlErrorKind::NotWellFormed
                };
                XmlError::new(kind, format!("attribute {key}: {err}"))
            })?;
        // A literal `<` is not well-formed in an attribute (XML 1.0 AttValue); an escaped one
        // (`&lt;`) is, so the raw bytes are checked for it and the decoded value for characters.
        let raw_lt = attr.value.contains('<');
        if let Some(c) = value
            .chars()
            .find(|c| !is_xml_char(*c))
            .or(raw_lt.then_some('<'))
        {
            return Err(XmlError::new(
                XmlErrorKind::NotWellFormed,
                format!(
                    "character U+{:04X} is not allowed in attribute {key}",
                    c as u32
                ),
            ));
        }
        if el.get_attr(key).is_some() {
            return Err(XmlError::new(
                XmlErrorKind::NotWellFormed,
                format!("duplicate attribute {key}"),
            ));
        }
        el.set_attr(key, value.into_owned());
    }
    Ok(el)
}

fn quick_xml_error(err: quick_xml::Error) -> XmlError {
    match err {
        quick_xml::Error::Io(e) => XmlError::new(XmlErrorKind::ConnectionClosed, e.to_string()),
        other => XmlError::new(XmlErrorKind::NotWellFormed, other.to_string()),
    }
}

/// Parses one standalone XML element (a stored payload, a test stanza) with the same rules.
pub fn parse_element(xml: &str, limits: Limits) -> Result<Element, XmlError> {
    if xml.len() > limits.max_stanza_bytes {
        return Err(XmlError::new(
            XmlErrorKind::PolicyViolation,
            "element larger than the size limit",
        ));
    }
    let mut reader = NsReader::from_str(xml);
    let mut builder = TreeBuilder::new(limits.max_depth);
    let mut done: Option<Element> = None;
    loop {
        let ev = reader.read_event().map_err(quick_xml_error)?;
        let complete = match &ev {
            Event::Start(e) if done.is_none() => builder.start(e, reader.resolver(), false)?,
            Event::Empty(e) if done.is_none() => builder.start(e, reader.resolver(), true)?,
            Event::End(_) => builder.end(),
            Event::Eof => break,
            Event::Decl(_) if builder.depth() == 0 && done.is_none() => None,
            Event::Start(_) | Event::Empty(_) => {
                return Err(XmlError::new(
                    XmlErrorKind::NotWellFormed,
                    "more than one root element",
                ));
            }
            other => {
                if done.is_some() {
                    if let Event::Text(t) = other
                        && t.xml10_content().trim().is_empty()
                    {
                        continue;
                    }
                    return Err(XmlError::new(
                        XmlErrorKind::NotWellFormed,
                        "content after the root element",
                    ));
                }
                builder.other_event(other)?;
                None
            }
        };
        if complete.is_some() {
            done = complete;
        }
    }
    match done {
        Some(el) if builder.depth() == 0 => Ok(el),
        _ => Err(XmlError::new(
            XmlErrorKind::NotWellFormed,
            "unexpected end of document",
        )),
    }
}

/// Reads a stream and sends its events to `tx` until the stream ends, an error occurs or the
/// receiver goes away. The last item sent is an error or [`StreamEvent::Close`].
pub async fn read_stream<R: AsyncRead + Unpin>(
    io: R,
    limits: Limits,
    tx: mpsc::Sender<Result<StreamEvent, XmlError>>,
) {
    let result = read_stream_inner(io, limits, &tx).await;
    if let Err(err) = result {
        let _ = tx.send(Err(err)).await;
    }
}

async fn read_stream_inner<R: AsyncRead + Unpin>(
    io: R,
    limits: Limits,
    tx: &mpsc::Sender<Result<StreamEvent, XmlError>>,
) -> Result<(), XmlError> {
    let budgeted = Budgeted {
        inner: BufReader::with_capacity(16 * 1024, io),
        consumed: 0,
        budget: limits.max_stanza_bytes,
        exceeded: false,
    };
    let mut reader = NsReader::from_reader(budgeted);
    let mut buf = Vec::with_capacity(4096);
    let mut builder = TreeBuilder::new(limits.max_depth);
    let mut opened = false;
    let mut seen_decl = false;
    loop {
        buf.clear();
        let ev = match reader.read_event_into_async(&mut buf).await {
            Ok(ev) => ev,
            Err(err) => {
                if reader.get_mut().exceeded {
                    return Err(XmlError::new(
                        XmlErrorKind::PolicyViolation,
                        format!("stanza larger than {} bytes", limits.max_stanza_bytes),
                    ));
                }
                return Err(quick_xml_error(err));
            }
        };
        if !opened {
            match &ev {
                Event::Decl(_) if !seen_decl => {
                    seen_decl = true;
                    continue;
                }
                Event::Text(t) if t.xml10_content().trim().is_empty() => continue,
                Event::Start(e) => {
                    let header = element_from_start(e, reader.resolver())?;
                    if !header.is("stream", NS_STREAMS) {
                        return Err(XmlError::new(
                            XmlErrorKind::InvalidNamespace,
                            format!(
                                "stream root is {{{}}}{}, expected {{{NS_STREAMS}}}stream",
                                header.ns(),
                                header.name()
                            ),
                        ));
                    }
                    opened = true;
                    reader.get_mut().reset();
                    if tx.send(Ok(StreamEvent::Open(header))).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                Event::Eof => {
                    return Err(XmlError::new(
                        XmlErrorKind::ConnectionClosed,
                        "connection closed before the stream header",
                    ));
                }
                _ => {}
            }
        }
        let complete = match &ev {
            Event::Start(e) => builder.start(e, reader.resolver(), false)?,
            Event::Empty(e) => builder.start(e, reader.resolver(), true)?,
            Event::End(_) => {
                if builder.depth() == 0 {
                    // The end of </stream:stream> (quick-xml checked the name matches).
                    let _ = tx.send(Ok(StreamEvent::Close)).await;
                    return Ok(());
                }
                builder.end()
            }
            Event::Eof => {
                return Err(XmlError::new(
                    XmlErrorKind::ConnectionClosed,
                    "connection closed without closing the stream",
                ));
            }
            other => {
                builder.other_event(other)?;
                if builder.depth() == 0 {
                    // Whitespace keepalives between stanzas do not count toward any stanza.
                    reader.get_mut().reset();
                }
                None
            }
        };
        if let Some(stanza) = complete {
            reader.get_mut().reset();
            // RFC 6120 6.4.6: after SASL success both sides start a new stream on the same socket.
            let restart = stanza.is("success", NS_SASL);
            if tx.send(Ok(StreamEvent::Stanza(stanza))).await.is_err() {
                return Ok(());
            }
            if restart {
                reader = NsReader::from_reader(reader.into_inner());
                opened = false;
                seen_decl = false;
            }
        }
    }
}

/// Starts the reader task; returns the receiving end of its bounded channel.
pub fn spawn_stream_reader<R: AsyncRead + Unpin + Send + 'static>(
    io: R,
    limits: Limits,
    capacity: usize,
) -> (
    mpsc::Receiver<Result<StreamEvent, XmlError>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(capacity);
    let handle = tokio::spawn(read_stream(io, limits, tx));
    (rx, handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='pubsub.localhost'>";

    async fn events(input: &[u8], limits: Limits) -> Vec<Result<StreamEvent, XmlError>> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let input = input.to_vec();
        // The reader may stop early (that is the point of a limit): ignore write errors.
        tokio::spawn(async move {
            let _ = client.write_all(&input).await;
        });
        let (mut rx, _h) = spawn_stream_reader(server, limits, 16);
        let mut out = Vec::new();
        while let Some(ev) = rx.recv().await {
            out.push(ev);
        }
        out
    }

    fn last_error(evs: &[Result<StreamEvent, XmlError>]) -> XmlErrorKind {
        evs.last().unwrap().as_ref().unwrap_err().kind
    }

    #[tokio::test]
    async fn parses_stanzas_with_namespaces() {
        let input = format!(
            "{HEADER}<handshake/> <iq type='get' id='1' to='pubsub.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq><message><body>a &amp; b &#x263A; &lt;</body><x:y xmlns:x='urn:x' x:z='1'/></message></stream:stream>"
        );
        let evs = events(input.as_bytes(), Limits::default()).await;
        assert_eq!(evs.len(), 5, "{evs:?}");
        let Ok(StreamEvent::Open(h)) = &evs[0] else {
            panic!()
        };
        assert_eq!(h.get_attr("id"), Some("abc"));
        let Ok(StreamEvent::Stanza(hs)) = &evs[1] else {
            panic!()
        };
        assert!(hs.is("handshake", "jabber:component:accept"));
        let Ok(StreamEvent::Stanza(iq)) = &evs[2] else {
            panic!()
        };
        assert!(iq.is("iq", "jabber:component:accept"));
        assert!(
            iq.get_child("query", "http://jabber.org/protocol/disco#info")
                .is_some()
        );
        let Ok(StreamEvent::Stanza(msg)) = &evs[3] else {
            panic!()
        };
        let body = msg.get_child("body", "jabber:component:accept").unwrap();
        assert_eq!(body.text_content(), "a & b \u{263A} <");
        let y = msg.get_child("y", "urn:x").unwrap();
        assert_eq!(y.get_attr("x:z"), Some("1"));
        assert_eq!(evs[4], Ok(StreamEvent::Close));
    }

    #[tokio::test]
    async fn stanza_split_across_reads() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut rx, _h) = spawn_stream_reader(server, Limits::default(), 16);
        let input = format!("{HEADER}<iq id='1'><ping xmlns='urn:xmpp:ping'/></iq>");
        tokio::spawn(async move {
            for chunk in input.as_bytes().chunks(3) {
                client.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            // keep the stream open
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        assert!(matches!(rx.recv().await, Some(Ok(StreamEvent::Open(_)))));
        let Some(Ok(StreamEvent::Stanza(iq))) = rx.recv().await else {
            panic!()
        };
        assert!(iq.get_child("ping", "urn:xmpp:ping").is_some());
    }

    #[tokio::test]
    async fn rejects_oversized_stanza_without_buffering_it() {
        let limits = Limits {
            max_stanza_bytes: 1024,
            max_depth: 16,
        };
        let big = "x".repeat(10 * 1024 * 1024);
        let input = format!("{HEADER}<message><body>{big}</body></message>");
        let evs = events(input.as_bytes(), limits).await;
        assert_eq!(last_error(&evs), XmlErrorKind::PolicyViolation);
        // A stanza just under the limit is fine, and many of them in a row too.
        let small = format!("<message><body>{}</body></message>", "y".repeat(900));
        let input = format!("{HEADER}{}", small.repeat(50));
        let evs = events(input.as_bytes(), limits).await;
        assert_eq!(
            evs.iter()
                .filter(|e| matches!(e, Ok(StreamEvent::Stanza(_))))
                .count(),
            50
        );
    }

    #[tokio::test]
    async fn rejects_deep_nesting() {
        let limits = Limits {
            max_stanza_bytes: 1 << 20,
            max_depth: 32,
        };
        let input = format!("{HEADER}<message>{}", "<a>".repeat(10_000));
        let evs = events(input.as_bytes(), limits).await;
        assert_eq!(last_error(&evs), XmlErrorKind::PolicyViolation);
    }

    #[tokio::test]
    async fn rejects_entity_and_dtd_tricks() {
        let doctype = "<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'>]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>";
        assert_eq!(
            last_error(&events(doctype.as_bytes(), Limits::default()).await),
            XmlErrorKind::RestrictedXml
        );
        let ent = format!("{HEADER}<message><body>&lol;</body></message>");
        assert_eq!(
            last_error(&events(ent.as_bytes(), Limits::default()).await),
            XmlErrorKind::RestrictedXml
        );
        let attr_ent = format!("{HEADER}<message id='&lol;'/>");
        assert_eq!(
            last_error(&events(attr_ent.as_bytes(), Limits::default()).await),
            XmlErrorKind::RestrictedXml
        );
        let pi = format!("{HEADER}<?evil x?>");
        assert_eq!(
            last_error(&events(pi.as_bytes(), Limits::default()).await),
            XmlErrorKind::RestrictedXml
        );
        let comment = format!("{HEADER}<message><!-- x --></message>");
        assert_eq!(
            last_error(&events(comment.as_bytes(), Limits::default()).await),
            XmlErrorKind::RestrictedXml
        );
    }

    #[tokio::test]
    async fn rejects_malformed_xml() {
        for bad in [
            "<message><body></message>",
            "<message a='1' a='2'/>",
            "<message><body>\u{7}</body></message>",
            "<message><body>&#7;</body></message>",
            "<p:message/>",
            "<message>\u{0}</message>",
            "<message id='a<b'/>",
        ] {
            let input = format!("{HEADER}{bad}");
            let evs = events(input.as_bytes(), Limits::default()).await;
            assert_eq!(
                last_error(&evs),
                XmlErrorKind::NotWellFormed,
                "{bad}: {evs:?}"
            );
        }
        let evs = events(b"<stream xmlns='jabber:client'>", Limits::default()).await;
        assert_eq!(last_error(&evs), XmlErrorKind::InvalidNamespace);
        let evs = events(HEADER.as_bytes(), Limits::default()).await;
        assert_eq!(last_error(&evs), XmlErrorKind::ConnectionClosed);
    }

    #[test]
    fn parse_element_roundtrip() {
        let xml = "<entry xmlns='urn:example' a='&apos;'>hi <b>there</b>&amp;</entry>";
        let el = parse_element(xml, Limits::default()).unwrap();
        assert_eq!(
            el.to_xml(),
            "<entry xmlns='urn:example' a='&apos;'>hi <b>there</b>&amp;</entry>"
        );
        // An escaped `<` in an attribute is well-formed (a node named `n<1>`), a literal one is not.
        let el = parse_element("<a xmlns='u' node='n&lt;1&gt;'/>", Limits::default()).unwrap();
        assert_eq!(el.get_attr("node"), Some("n<1>"));
        assert_eq!(el.to_xml(), "<a xmlns='u' node='n&lt;1&gt;'/>");
        assert!(parse_element("<a xmlns='u' node='n<1'/>", Limits::default()).is_err());
        assert!(parse_element("<a/><b/>", Limits::default()).is_err());
        assert!(parse_element("<a>", Limits::default()).is_err());
        assert!(parse_element("<a>&foo;</a>", Limits::default()).is_err());
    }
}
