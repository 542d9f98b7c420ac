//! Errors of the stream reader: what a violation of the XML rules is, and the RFC 6120 stream
//! error it ends the stream with.

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
    pub(super) fn new(kind: XmlErrorKind, detail: impl Into<String>) -> Self {
        XmlError {
            kind,
            detail: detail.into(),
        }
    }
}

pub(super) fn quick_xml_error(err: quick_xml::Error) -> XmlError {
    match err {
        quick_xml::Error::Io(e) => XmlError::new(XmlErrorKind::ConnectionClosed, e.to_string()),
        other => XmlError::new(XmlErrorKind::NotWellFormed, other.to_string()),
    }
}
