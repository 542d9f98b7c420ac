//! Finds where each stanza of an endless XML stream ends, before anything is parsed.
//!
//! The first of two steps (frame, then parse): a byte-level scanner that follows just enough of
//! XML's syntax (tags, quoted attribute values, CDATA) to know the nesting depth, and counts what
//! the [`Limits`] bound while it goes: bytes, depth, attributes, namespace declarations, URI
//! length, children. A stanza within every limit comes out as its bytes (at most
//! `max_stanza_bytes` are ever buffered). A stanza over a limit is not buffered from that point:
//! the scanner keeps counting nesting until the stanza ends and reports it as [`Frame::Rejected`]
//! with the attributes needed to bounce it (name, from, to, id, type), so one hostile stanza costs
//! its sender one error and the stream goes on. Only what no server forwards (text between
//! stanzas, comments, processing instructions, a DTD, a tag that is not a tag) is an error of the
//! stream. Work is constant per byte; memory is the buffer and a counter per open element.

use super::reader::{Limits, XmlError, XmlErrorKind};

/// One thing the framer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The bytes of the stream header's start tag (`<stream:stream ...>`).
    Header(Vec<u8>),
    /// The bytes of one complete stanza within the limits.
    Stanza(Vec<u8>),
    /// A stanza over a limit, skipped to its end.
    Rejected(Rejected),
    /// `</stream:stream>`.
    Close,
}

/// What is known of a stanza that was skipped: enough to send its sender an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rejected {
    /// The stanza's element name as written (`iq`, `message`, `presence`, ...).
    pub name: String,
    /// `from`, `to`, `id` and `type` as written (entities not yet resolved), when present and
    /// short enough to keep.
    pub attrs: Vec<(&'static str, String)>,
    /// Which limit it broke, for the error text and the log.
    pub reason: String,
    /// Bytes the stanza had on the wire.
    pub bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data, or white space between stanzas.
    Text,
    /// Just after `<`.
    Lt,
    /// The name of a start tag.
    StartName,
    /// Inside a start tag, between attributes.
    Tag,
    /// An attribute name.
    AttrName,
    /// After an attribute name, before `=`.
    Eq,
    /// After `=`, before the opening quote.
    Quote,
    /// Inside an attribute value quoted with this byte.
    Value(u8),
    /// After `/` in a start tag: `>` must follow.
    EmptyEnd,
    /// Inside an end tag, up to `>`.
    EndTag,
    /// After `<!`: this many bytes of `[CDATA[` matched.
    Bang(u8),
    /// Inside a CDATA section: this many `]` just seen.
    CData(u8),
    /// Inside the XML declaration `<?xml ...?>`: the previous byte was `?`.
    Decl(bool),
}

/// The attributes of a stanza's start tag kept for a bounce.
const HEAD_ATTRS: [&str; 4] = ["from", "to", "id", "type"];
/// Longest attribute value kept for a bounce (a JID is at most 3071 bytes, RFC 7622 3.1).
const HEAD_VALUE_MAX: usize = 3072;
const HEAD_NAME_MAX: usize = 64;

pub struct Framer {
    limits: Limits,
    state: State,
    /// Waiting for the stream header (at the start, and after a stream restart).
    want_header: bool,
    /// Open elements of the current stanza (0 between stanzas).
    depth: usize,
    /// Element children seen so far, per open element (only while within the depth limit).
    children: Vec<usize>,
    /// Bytes of the current stanza so far.
    bytes: usize,
    /// Collecting the current construct into `buf` (from its `<`).
    collecting: bool,
    buf: Vec<u8>,
    /// Why the current stanza is being skipped.
    skipping: Option<String>,
    declarations: usize,
    attrs_in_tag: usize,
    /// The current attribute name: its length and first bytes.
    attr_len: usize,
    attr_head: [u8; 8],
    /// The current attribute value is a namespace declaration.
    in_declaration: bool,
    value_len: usize,
    /// The current start tag is the stanza's own (depth 1).
    top_tag: bool,
    head: Rejected,
    /// The value being kept for a bounce, and for which attribute.
    head_value: Option<(&'static str, Vec<u8>)>,
}

impl Framer {
    pub fn new(limits: Limits) -> Framer {
        Framer {
            limits,
            state: State::Text,
            want_header: true,
            depth: 0,
            children: Vec::new(),
            bytes: 0,
            collecting: false,
            buf: Vec::new(),
            skipping: None,
            declarations: 0,
            attrs_in_tag: 0,
            attr_len: 0,
            attr_head: [0; 8],
            in_declaration: false,
            value_len: 0,
            top_tag: false,
            head: Rejected::default(),
            head_value: None,
        }
    }

    /// New limits, between two stanzas (the counters they bound are per stanza).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// After a stream restart (RFC 6120 6.4.6): a new header comes next.
    pub fn expect_header(&mut self) {
        self.want_header = true;
        self.state = State::Text;
        self.depth = 0;
    }

    fn error(kind: XmlErrorKind, detail: impl Into<String>) -> XmlError {
        XmlError {
            kind,
            detail: detail.into(),
        }
    }

    /// Starts skipping the current stanza (the first limit it breaks is the one reported).
    fn exceed(&mut self, reason: impl FnOnce() -> String) -> Result<(), XmlError> {
        if self.want_header {
            return Err(Self::error(
                XmlErrorKind::PolicyViolation,
                format!("stream header: {}", reason()),
            ));
        }
        if self.skipping.is_none() {
            self.skipping = Some(reason());
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Scans `input`; returns the bytes consumed and the frame that ended there, if one did.
    /// Call again with the rest of the input after a frame.
    pub fn push(&mut self, input: &[u8]) -> Result<(usize, Option<Frame>), XmlError> {
        let mut seg = (self.collecting && self.skipping.is_none()).then_some(0);
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if self.depth > 0 || self.collecting {
                self.bytes += 1;
                if self.bytes > self.limits.max_stanza_bytes && self.skipping.is_none() {
                    let max = self.limits.max_stanza_bytes;
                    self.exceed(|| format!("larger than {max} bytes"))?;
                }
            }
            let mut frame = None;
            match self.state {
                State::Text => {
                    if b == b'<' {
                        self.state = State::Lt;
                        if self.depth == 0 {
                            self.begin();
                            seg = Some(i);
                        }
                    } else if self.depth == 0 {
                        if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                            return Err(Self::error(
                                XmlErrorKind::NotWellFormed,
                                "text outside of any stanza",
                            ));
                        }
                    } else {
                        // Character data: jump to the next markup.
                        let run = input[i..]
                            .iter()
                            .position(|&c| c == b'<')
                            .unwrap_or(input.len() - i);
                        self.bytes += run - 1;
                        if self.bytes > self.limits.max_stanza_bytes && self.skipping.is_none() {
                            let max = self.limits.max_stanza_bytes;
                            self.exceed(|| format!("larger than {max} bytes"))?;
                        }
                        if self.skipping.is_some() {
                            seg = None;
                        }
                        i += run;
                        continue;
                    }
                }
                State::Lt => match b {
                    b'/' => self.state = State::EndTag,
                    b'!' => self.state = State::Bang(0),
                    b'?' => {
                        if !self.want_header || self.depth > 0 {
                            return Err(Self::error(
                                XmlErrorKind::RestrictedXml,
                                "processing instructions are not allowed",
                            ));
                        }
                        self.collecting = false;
                        seg = None;
                        self.state = State::Decl(false);
                    }
                    b'>' | b'<' | b'=' | b'\'' | b'"' | b' ' | b'\t' | b'\r' | b'\n' => {
                        return Err(Self::error(XmlErrorKind::NotWellFormed, "invalid tag"));
                    }
                    _ => {
                        self.open_element()?;
                        self.keep_name(b);
                        self.state = State::StartName;
                    }
                },
                State::StartName => match b {
                    b' ' | b'\t' | b'\r' | b'\n' => self.state = State::Tag,
                    b'/' => self.state = State::EmptyEnd,
                    b'>' => frame = self.start_tag_end(false)?,
                    b'<' | b'=' | b'\'' | b'"' => {
                        return Err(Self::error(XmlErrorKind::NotWellFormed, "invalid tag"));
                    }
                    _ => self.keep_name(b),
                },
                State::Tag => match b {
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    b'/' => self.state = State::EmptyEnd,
                    b'>' => frame = self.start_tag_end(false)?,
                    b'<' | b'=' | b'\'' | b'"' => {
                        return Err(Self::error(
                            XmlErrorKind::NotWellFormed,
                            "invalid attribute",
                        ));
                    }
                    _ => {
                        self.attr_len = 0;
                        self.attr_byte(b);
                        self.state = State::AttrName;
                    }
                },
                State::AttrName => match b {
                    b'=' => {
                        self.attr_name_end()?;
                        self.state = State::Quote;
                    }
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        self.attr_name_end()?;
                        self.state = State::Eq;
                    }
                    b'<' | b'>' | b'/' | b'\'' | b'"' => {
                        return Err(Self::error(
                            XmlErrorKind::NotWellFormed,
                            "invalid attribute",
                        ));
                    }
                    _ => self.attr_byte(b),
                },
                State::Eq => match b {
                    b'=' => self.state = State::Quote,
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    _ => {
                        return Err(Self::error(
                            XmlErrorKind::NotWellFormed,
                            "attribute without value",
                        ));
                    }
                },
                State::Quote => match b {
                    b'\'' | b'"' => {
                        self.value_len = 0;
                        self.state = State::Value(b);
                    }
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    _ => {
                        return Err(Self::error(
                            XmlErrorKind::NotWellFormed,
                            "unquoted attribute value",
                        ));
                    }
                },
                State::Value(q) => {
                    if b == q {
                        self.value_end();
                        self.state = State::Tag;
                    } else if b == b'<' {
                        return Err(Self::error(
                            XmlErrorKind::NotWellFormed,
                            "'<' in an attribute value",
                        ));
                    } else {
                        // The value up to its closing quote (or a '<', an error, or the end of
                        // this input), in one step; byte i was counted above.
                        let run = input[i..]
                            .iter()
                            .position(|&c| c == q || c == b'<')
                            .unwrap_or(input.len() - i);
                        self.bytes += run - 1;
                        if self.bytes > self.limits.max_stanza_bytes && self.skipping.is_none() {
                            let max = self.limits.max_stanza_bytes;
                            self.exceed(|| format!("larger than {max} bytes"))?;
                        }
                        self.value_len += run;
                        if let Some((_, v)) = &mut self.head_value {
                            if v.len() + run <= HEAD_VALUE_MAX {
                                v.extend_from_slice(&input[i..i + run]);
                            } else {
                                self.head_value = None;
                            }
                        }
                        if self.in_declaration
                            && self.value_len > self.limits.max_uri_bytes
                            && self.skipping.is_none()
                        {
                            let max = self.limits.max_uri_bytes;
                            self.exceed(|| format!("a namespace name longer than {max} bytes"))?;
                        }
                        if self.skipping.is_some() {
                            seg = None;
                        }
                        i += run;
                        continue;
                    }
                }
                State::EmptyEnd => {
                    if b != b'>' {
                        return Err(Self::error(XmlErrorKind::NotWellFormed, "'/' inside a tag"));
                    }
                    frame = self.start_tag_end(true)?;
                }
                State::EndTag => {
                    if b == b'>' {
                        frame = self.end_tag();
                    } else if b == b'<' {
                        return Err(Self::error(XmlErrorKind::NotWellFormed, "invalid end tag"));
                    }
                }
                State::Bang(n) => {
                    const CDATA: &[u8] = b"[CDATA[";
                    if b == CDATA[n as usize] {
                        if n as usize + 1 < CDATA.len() {
                            self.state = State::Bang(n + 1);
                        } else if self.depth == 0 {
                            return Err(Self::error(
                                XmlErrorKind::NotWellFormed,
                                "CDATA outside of any stanza",
                            ));
                        } else {
                            self.state = State::CData(0);
                        }
                    } else if n == 0 {
                        return Err(Self::restricted(b));
                    } else {
                        return Err(Self::error(XmlErrorKind::NotWellFormed, "invalid markup"));
                    }
                }
                State::CData(n) => {
                    self.state = match (b, n) {
                        (b']', 0 | 1) => State::CData(n + 1),
                        (b']', _) => State::CData(2),
                        (b'>', 2) => State::Text,
                        _ => State::CData(0),
                    };
                }
                State::Decl(q) => {
                    self.state = match (b, q) {
                        (b'>', true) => State::Text,
                        (b'?', _) => State::Decl(true),
                        _ => State::Decl(false),
                    };
                }
            }
            i += 1;
            if self.skipping.is_some() {
                seg = None;
            }
            if let Some(f) = frame {
                let f = match f {
                    Frame::Stanza(_) | Frame::Header(_) => {
                        if let Some(s) = seg {
                            self.buf.extend_from_slice(&input[s..i]);
                        }
                        let bytes = std::mem::take(&mut self.buf);
                        if matches!(f, Frame::Header(_)) {
                            Frame::Header(bytes)
                        } else {
                            Frame::Stanza(bytes)
                        }
                    }
                    other => other,
                };
                return Ok((i, Some(f)));
            }
        }
        if let Some(s) = seg
            && self.collecting
            && self.skipping.is_none()
        {
            self.buf.extend_from_slice(&input[s..]);
        }
        Ok((input.len(), None))
    }

    /// `<!` followed by `next` where only `<![CDATA[` may stand: a comment or a DTD (RFC 6120
    /// 11.1).
    fn restricted(next: u8) -> XmlError {
        let what = match next {
            b'-' => "XML comments are not allowed",
            b'D' => "a document type declaration is not allowed",
            _ => "markup declarations are not allowed",
        };
        Self::error(XmlErrorKind::RestrictedXml, what)
    }

    /// A `<` between stanzas: what follows is collected until we know what it is.
    fn begin(&mut self) {
        self.collecting = true;
        self.bytes = 1;
        self.buf.clear();
        self.skipping = None;
        self.declarations = 0;
        self.children.clear();
        self.head = Rejected::default();
    }

    /// The name of a start tag begins: one more open element.
    fn open_element(&mut self) -> Result<(), XmlError> {
        self.attrs_in_tag = 0;
        self.top_tag = self.depth == 0 && !self.want_header;
        if self.want_header {
            return Ok(());
        }
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            let max = self.limits.max_depth;
            return self.exceed(|| format!("nested deeper than {max} elements"));
        }
        if let Some(parent) = self.children.last_mut() {
            *parent += 1;
            if *parent > self.limits.max_children {
                let max = self.limits.max_children;
                return self.exceed(|| format!("an element with more than {max} children"));
            }
        }
        Ok(())
    }

    fn keep_name(&mut self, b: u8) {
        if self.top_tag && self.head.name.len() < HEAD_NAME_MAX && b.is_ascii() {
            self.head.name.push(b as char);
        }
    }

    fn attr_byte(&mut self, b: u8) {
        if self.attr_len < self.attr_head.len() {
            self.attr_head[self.attr_len] = b;
        }
        self.attr_len += 1;
    }

    fn attr_name_end(&mut self) -> Result<(), XmlError> {
        let head = &self.attr_head[..self.attr_len.min(self.attr_head.len())];
        self.in_declaration =
            head.starts_with(b"xmlns") && (self.attr_len == 5 || head.get(5) == Some(&b':'));
        self.head_value = None;
        if self.top_tag {
            self.head_value = HEAD_ATTRS
                .iter()
                .find(|n| n.as_bytes() == &self.attr_head[..self.attr_len.min(8)])
                .filter(|_| self.attr_len <= 4)
                .map(|n| (*n, Vec::new()));
        }
        if self.want_header {
            return Ok(());
        }
        if self.in_declaration {
            self.declarations += 1;
            if self.declarations > self.limits.max_namespace_declarations {
                let max = self.limits.max_namespace_declarations;
                return self.exceed(|| format!("more than {max} namespace declarations"));
            }
        }
        self.attrs_in_tag += 1;
        if self.attrs_in_tag > self.limits.max_attributes {
            let max = self.limits.max_attributes;
            return self.exceed(|| format!("an element with more than {max} attributes"));
        }
        Ok(())
    }

    fn value_end(&mut self) {
        if let Some((name, v)) = self.head_value.take() {
            let v = String::from_utf8_lossy(&v).into_owned();
            self.head.attrs.push((name, v));
        }
    }

    /// `>` or `/>` of a start tag.
    fn start_tag_end(&mut self, empty: bool) -> Result<Option<Frame>, XmlError> {
        self.state = State::Text;
        self.top_tag = false;
        if self.want_header {
            if empty {
                return Err(Self::error(
                    XmlErrorKind::NotWellFormed,
                    "the stream header closes itself",
                ));
            }
            self.want_header = false;
            self.collecting = false;
            return Ok(Some(Frame::Header(Vec::new())));
        }
        if empty {
            return Ok(self.close_element());
        }
        if self.depth <= self.limits.max_depth {
            self.children.push(0);
        }
        Ok(None)
    }

    fn end_tag(&mut self) -> Option<Frame> {
        self.state = State::Text;
        if self.depth == 0 {
            self.collecting = false;
            self.buf.clear();
            return Some(Frame::Close);
        }
        if self.depth <= self.limits.max_depth {
            self.children.pop();
        }
        self.close_element()
    }

    /// An element ended; the stanza with it when it was the stanza's root.
    fn close_element(&mut self) -> Option<Frame> {
        self.depth -= 1;
        if self.depth > 0 {
            return None;
        }
        self.collecting = false;
        match self.skipping.take() {
            None => Some(Frame::Stanza(Vec::new())),
            Some(reason) => {
                let mut head = std::mem::take(&mut self.head);
                head.reason = reason;
                head.bytes = self.bytes;
                Some(Frame::Rejected(head))
            }
        }
    }
}

#[cfg(test)]
mod tests;
