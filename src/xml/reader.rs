//! Reading an endless `<stream:stream>` into stanza trees, with limits.
//!
//! Two steps, as mini-redis frames before it parses: the [`Framer`] finds where each stanza ends
//! and enforces the per-stanza limits on the raw bytes (a stanza over a limit is skipped to its end
//! and reported as [`StreamEvent::Rejected`], so its sender gets one stanza error and the stream
//! goes on); quick-xml then parses each complete stanza with the namespaces the stream header
//! declared. Parsing rejects what no server forwards: DTDs, processing instructions, comments,
//! entities beyond XML's five and character references, characters outside XML 1.0 (RFC 6120
//! section 11.1), and XML that is not namespace-well-formed; those end the stream.
//!
//! The reader runs in a task of its own and hands events over a bounded channel: when the consumer
//! is slow the channel fills, the task stops reading and TCP pushes back on the peer.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, NamespaceResolver, PrefixDeclaration, ResolveResult};
use quick_xml::reader::NsReader;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use super::element::{Attribute, Declaration, Element, NS_XML, NS_XMLNS, is_xml_char};
use super::error::quick_xml_error;
pub use super::error::{XmlError, XmlErrorKind};
use super::framer::{Frame, Framer, Rejected};

pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// Limits applied to every stanza read from a stream. A stanza over any of them is skipped and
/// bounced; none of them ends the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum bytes of one stanza, as sent on the wire.
    pub max_stanza_bytes: usize,
    /// Maximum element nesting inside one stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Maximum attributes on one element (namespace declarations included).
    pub max_attributes: usize,
    /// Maximum namespace declarations in one stanza.
    pub max_namespace_declarations: usize,
    /// Maximum bytes of one namespace name (URI) as written.
    pub max_uri_bytes: usize,
    /// Maximum child elements of one element.
    pub max_children: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Twice the 256 KiB that Prosody and ejabberd accept from a client by default: what a
            // server accepted and wrote again (with its own from, to and declarations) still fits.
            max_stanza_bytes: 512 * 1024,
            max_depth: 48,
            max_attributes: 64,
            max_namespace_declarations: 64,
            max_uri_bytes: 1024,
            max_children: 4096,
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
    /// A stanza over a limit, skipped: what is known of it, to bounce it.
    Rejected(Rejected),
    /// The peer closed the stream with `</stream:stream>`.
    Close,
}

/// Namespace names met while parsing one stanza, each allocated once and shared by every element
/// and attribute in it (the stream's own are shared across stanzas).
#[derive(Default, Clone)]
struct Interner {
    names: HashSet<Arc<str>>,
}

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(a.clone());
        a
    }
}

/// Builds element trees from parser events, enforcing the depth cap and character rules.
struct TreeBuilder {
    stack: Vec<Element>,
    max_depth: usize,
    names: Interner,
}

impl TreeBuilder {
    fn new(max_depth: usize, names: Interner) -> Self {
        TreeBuilder {
            stack: Vec::new(),
            max_depth,
            names,
        }
    }

    fn depth(&self) -> usize {
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
        let el = element_from_start(e, resolver, &mut self.names)?;
        if empty {
            Ok(self.close_with(el))
        } else {
            self.stack.push(el);
            Ok(None)
        }
    }

    fn end(&mut self) -> Option<Element> {
        let mut el = self.stack.pop()?;
        // A closed element keeps exactly its children: the growth slack of every vector would
        // otherwise multiply the memory of a stanza of many small elements.
        el.shrink_to_fit();
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

/// The namespace a name resolved to. quick-xml's resolver keeps declarations as written, so the
/// name is unescaped here as the declaration's value was.
fn namespace_of(r: ResolveResult<'_>) -> Result<Option<Cow<'_, str>>, XmlError> {
    match r {
        ResolveResult::Bound(Namespace(ns)) => {
            quick_xml::escape::unescape(ns).map(Some).map_err(|e| {
                XmlError::new(XmlErrorKind::NotWellFormed, format!("namespace {ns}: {e}"))
            })
        }
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(p) => Err(XmlError::new(
            XmlErrorKind::NotWellFormed,
            format!("undeclared namespace prefix {p}"),
        )),
    }
}

fn element_from_start(
    e: &BytesStart<'_>,
    resolver: &NamespaceResolver,
    names: &mut Interner,
) -> Result<Element, XmlError> {
    let (ns, local) = resolver.resolve_element(e.name());
    let ns = names.get(namespace_of(ns)?.as_deref().unwrap_or(""));
    let name = local.as_ref();
    let prefix = e.name().prefix().map(|p| names.get(p.as_ref()));
    let mut decls = Vec::new();
    let mut attrs: Vec<Attribute> = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| {
            XmlError::new(XmlErrorKind::NotWellFormed, format!("bad attribute: {err}"))
        })?;
        let key = attr.key.as_ref();
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
        if let Some(binding) = attr.key.as_namespace_binding() {
            // Namespaces in XML 1.0 section 3: no prefix may be undeclared, none bound to the
            // reserved names but `xml` to its own (quick-xml checked the reserved ones already).
            let prefix = match binding {
                PrefixDeclaration::Default => None,
                PrefixDeclaration::Named(p) => {
                    if value.is_empty() {
                        return Err(XmlError::new(
                            XmlErrorKind::NotWellFormed,
                            format!("xmlns:{p} with an empty namespace name"),
                        ));
                    }
                    Some(names.get(p))
                }
            };
            if value == NS_XMLNS || (value == NS_XML && prefix.as_deref() != Some("xml")) {
                return Err(XmlError::new(
                    XmlErrorKind::NotWellFormed,
                    format!("{key} binds a reserved namespace"),
                ));
            }
            if decls.iter().any(|d: &Declaration| d.prefix == prefix) {
                return Err(XmlError::new(
                    XmlErrorKind::NotWellFormed,
                    format!("duplicate attribute {key}"),
                ));
            }
            decls.push(Declaration {
                prefix,
                uri: names.get(&value),
            });
            continue;
        }
        let (ans, alocal) = resolver.resolve_attribute(attr.key);
        let ans = namespace_of(ans)?.map(|n| names.get(&n));
        let alocal = alocal.as_ref();
        // Namespaces in XML 1.0 section 6.3: no two attributes with the same expanded name.
        if attrs
            .iter()
            .any(|a| a.name() == alocal && a.ns() == ans.as_deref())
        {
            return Err(XmlError::new(
                XmlErrorKind::NotWellFormed,
                format!("duplicate attribute {key}"),
            ));
        }
        let aprefix = attr.key.prefix().map(|p| names.get(p.as_ref()));
        attrs.push(Attribute::parsed(alocal, ans, aprefix, value.into_owned()));
    }
    Ok(Element::parsed(name, ns, prefix, decls, attrs))
}

/// Parses one element from `reader` (which may have namespaces bound already), with the same
/// rules as a stanza: exactly one root element, nothing but white space around it.
fn parse_root(
    mut reader: NsReader<&[u8]>,
    max_depth: usize,
    names: Interner,
) -> Result<Element, XmlError> {
    let mut builder = TreeBuilder::new(max_depth, names);
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

/// Parses one standalone XML element (a stored payload, a test stanza) with the same rules.
pub fn parse_element(xml: &str, limits: Limits) -> Result<Element, XmlError> {
    if xml.len() > limits.max_stanza_bytes {
        return Err(XmlError::new(
            XmlErrorKind::PolicyViolation,
            "element larger than the size limit",
        ));
    }
    parse_root(
        NsReader::from_str(xml),
        limits.max_depth,
        Interner::default(),
    )
}

/// The namespaces a stream header declares, in scope for every stanza of the stream.
#[derive(Default, Clone)]
struct StreamScope {
    bindings: Vec<(Option<Arc<str>>, Arc<str>)>,
    names: Interner,
}

/// Parses the header's start tag: the header element (attributes only) and its namespaces.
fn parse_header(bytes: &[u8]) -> Result<(Element, StreamScope), XmlError> {
    let mut reader = NsReader::from_reader(bytes);
    let mut names = Interner::default();
    let header = match reader.read_event().map_err(quick_xml_error)? {
        Event::Start(e) => element_from_start(&e, reader.resolver(), &mut names)?,
        _ => {
            return Err(XmlError::new(
                XmlErrorKind::NotWellFormed,
                "the stream header is not a start tag",
            ));
        }
    };
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
    let bindings = header
        .declarations()
        .iter()
        .map(|d| (d.prefix.clone(), d.uri.clone()))
        .collect();
    let mut plain = Element::new(header.name(), header.ns());
    for (k, v) in header.attrs() {
        plain.set_attr(k, v);
    }
    Ok((plain, StreamScope { bindings, names }))
}

/// Parses one framed stanza in the scope of its stream's header.
fn parse_stanza(bytes: &[u8], scope: &StreamScope, limits: &Limits) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_reader(bytes);
    for (prefix, uri) in &scope.bindings {
        let decl = match prefix {
            None => PrefixDeclaration::Default,
            Some(p) => PrefixDeclaration::Named(p),
        };
        reader
            .resolver_mut()
            .add(decl, Namespace(&quick_xml::escape::escape(&**uri)))
            .map_err(|e| XmlError::new(XmlErrorKind::NotWellFormed, e.to_string()))?;
    }
    parse_root(reader, limits.max_depth, scope.names.clone())
}

/// Reads a stream and sends its events to `tx` until the stream ends, an error occurs or the
/// receiver goes away. The last item sent is an error or [`StreamEvent::Close`].
pub async fn read_stream<R: AsyncRead + Unpin>(
    io: R,
    limits: Arc<ArcSwap<Limits>>,
    tx: mpsc::Sender<Result<StreamEvent, XmlError>>,
) {
    let result = read_stream_inner(io, &limits, &tx).await;
    if let Err(err) = result {
        let _ = tx.send(Err(err)).await;
    }
}

async fn read_stream_inner<R: AsyncRead + Unpin>(
    io: R,
    shared: &ArcSwap<Limits>,
    tx: &mpsc::Sender<Result<StreamEvent, XmlError>>,
) -> Result<(), XmlError> {
    let mut io = BufReader::with_capacity(16 * 1024, io);
    let mut limits = **shared.load();
    let mut framer = Framer::new(limits);
    let mut scope: Option<StreamScope> = None;
    // Nothing of the next stanza consumed yet.
    let mut between = true;
    loop {
        let chunk = io
            .fill_buf()
            .await
            .map_err(|e| XmlError::new(XmlErrorKind::ConnectionClosed, e.to_string()))?;
        if between {
            // New limits (the configuration read again on SIGHUP) apply from the next stanza on.
            let now = **shared.load();
            if now != limits {
                limits = now;
                framer.set_limits(now);
            }
        }
        if chunk.is_empty() {
            let why = if scope.is_none() {
                "connection closed before the stream header"
            } else {
                "connection closed without closing the stream"
            };
            return Err(XmlError::new(XmlErrorKind::ConnectionClosed, why));
        }
        let (n, frame) = framer.push(chunk)?;
        // Whitespace between stanzas (keepalives) leaves us between them.
        let partial = frame.is_none() && !chunk[..n].iter().all(u8::is_ascii_whitespace);
        io.consume(n);
        let event = match frame {
            None => {
                between &= !partial;
                continue;
            }
            Some(Frame::Header(bytes)) => {
                let (header, s) = parse_header(&bytes)?;
                scope = Some(s);
                StreamEvent::Open(header)
            }
            Some(Frame::Stanza(bytes)) => {
                let Some(s) = &scope else {
                    return Err(XmlError::new(
                        XmlErrorKind::NotWellFormed,
                        "a stanza before the stream header",
                    ));
                };
                let stanza = parse_stanza(&bytes, s, &limits)?;
                // RFC 6120 6.4.6: after SASL success both sides start a new stream on the socket.
                if stanza.is("success", NS_SASL) {
                    framer.expect_header();
                    scope = None;
                }
                StreamEvent::Stanza(stanza)
            }
            Some(Frame::Rejected(r)) => StreamEvent::Rejected(r),
            Some(Frame::Close) => {
                let _ = tx.send(Ok(StreamEvent::Close)).await;
                return Ok(());
            }
        };
        if tx.send(Ok(event)).await.is_err() {
            return Ok(());
        }
        between = true;
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
    spawn_stream_reader_live(io, Arc::new(ArcSwap::from_pointee(limits)), capacity)
}

/// As [`spawn_stream_reader`], with limits that may be replaced while the stream runs: each
/// new value applies from the next stanza on.
pub fn spawn_stream_reader_live<R: AsyncRead + Unpin + Send + 'static>(
    io: R,
    limits: Arc<ArcSwap<Limits>>,
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
mod tests;
