//! Stanza errors (RFC 6120 section 8.3): the one place that turns a failure into an `<error/>`.

use crate::xml::Element;

pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// An error to send back: type, defined condition, optional text and application condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: &'static str,
    pub text: Option<String>,
    /// An application-specific condition element, e.g. `{pubsub#errors}closed-node`.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    pub fn new(kind: ErrorType, condition: &'static str) -> Self {
        StanzaError {
            kind,
            condition,
            text: None,
            app: None,
        }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn with_app(mut self, app: Element) -> Self {
        self.app = Some(Box::new(app));
        self
    }

    pub fn bad_request() -> Self {
        Self::new(ErrorType::Modify, "bad-request")
    }
    pub fn service_unavailable() -> Self {
        Self::new(ErrorType::Cancel, "service-unavailable")
    }
    pub fn feature_not_implemented() -> Self {
        Self::new(ErrorType::Cancel, "feature-not-implemented")
    }
    pub fn item_not_found() -> Self {
        Self::new(ErrorType::Cancel, "item-not-found")
    }
    pub fn forbidden() -> Self {
        Self::new(ErrorType::Auth, "forbidden")
    }
    pub fn not_allowed() -> Self {
        Self::new(ErrorType::Cancel, "not-allowed")
    }
    pub fn internal_server_error() -> Self {
        Self::new(ErrorType::Wait, "internal-server-error")
    }

    /// The `<error/>` element in the namespace of the stanza it goes into.
    pub fn to_element(&self, stanza_ns: &str) -> Element {
        let mut el = Element::new("error", stanza_ns)
            .attr("type", self.kind.as_str())
            .child(Element::new(self.condition, NS_STANZAS));
        if let Some(t) = &self.text {
            el = el.child(
                Element::new("text", NS_STANZAS)
                    .attr("xml:lang", "en")
                    .text(t.clone()),
            );
        }
        if let Some(app) = &self.app {
            el = el.child((**app).clone());
        }
        el
    }
}
