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
    /// RFC 6120 8.3.3.8: an address that is not a valid JID (with why, in the text).
    pub fn jid_malformed(e: &crate::jid::JidError) -> Self {
        Self::new(ErrorType::Modify, "jid-malformed").with_text(e.to_string())
    }
    /// RFC 6120 8.3.3.12 (XEP-0049 section 3: a reserved namespace, or no element).
    pub fn not_acceptable() -> Self {
        Self::new(ErrorType::Modify, "not-acceptable")
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

pub const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

fn app(name: &str) -> Element {
    Element::new(name, NS_PUBSUB_ERRORS)
}

/// The one table from core errors to XEP-0060 stanza errors (sections 6.1.3, 6.2.3, 6.5.9, 7.1.3,
/// 7.1.5, 7.2.3, 8.1.3, 8.2.3, 8.4.3, 8.5.3).
pub fn from_pubsub(e: &crate::pubsub::PubSubError) -> StanzaError {
    use crate::pubsub::PubSubError as P;
    use ErrorType::*;
    match e {
        P::NodeNotFound | P::ItemNotFound => StanzaError::item_not_found(),
        P::NodeExists => StanzaError::new(Cancel, "conflict"),
        P::Forbidden => StanzaError::forbidden(),
        P::ClosedNode => StanzaError::new(Cancel, "not-allowed").with_app(app("closed-node")),
        P::PresenceSubscriptionRequired => {
            StanzaError::new(Auth, "not-authorized").with_app(app("presence-subscription-required"))
        }
        P::NotInRosterGroup => {
            StanzaError::new(Auth, "not-authorized").with_app(app("not-in-roster-group"))
        }
        P::NotSubscribed => {
            StanzaError::new(Auth, "not-authorized").with_app(app("not-subscribed"))
        }
        P::PendingSubscription => {
            StanzaError::new(Auth, "not-authorized").with_app(app("pending-subscription"))
        }
        P::InvalidJid => StanzaError::bad_request().with_app(app("invalid-jid")),
        P::SubIdRequired => StanzaError::bad_request().with_app(app("subid-required")),
        P::InvalidSubId => {
            StanzaError::new(Modify, "not-acceptable").with_app(app("invalid-subid"))
        }
        P::NoSubscription => {
            StanzaError::new(Cancel, "unexpected-request").with_app(app("not-subscribed"))
        }
        P::PreconditionNotMet(field) => StanzaError::new(Cancel, "conflict")
            .with_app(app("precondition-not-met"))
            .with_text(format!(
                "publish option {field} does not match the node configuration"
            )),
        P::PayloadTooBig(n) => StanzaError::new(Modify, "not-acceptable")
            .with_app(app("payload-too-big"))
            .with_text(format!("the payload exceeds {n} bytes")),
        P::InvalidPayload => StanzaError::bad_request().with_app(app("invalid-payload")),
        P::PayloadRequired => StanzaError::bad_request().with_app(app("payload-required")),
        P::ItemRequired => StanzaError::bad_request().with_app(app("item-required")),
        P::ItemForbidden => StanzaError::bad_request().with_app(app("item-forbidden")),
        P::NodeIdRequired => StanzaError::bad_request().with_app(app("nodeid-required")),
        P::MaxNodesExceeded => {
            StanzaError::new(Cancel, "not-allowed").with_app(app("max-nodes-exceeded"))
        }
        P::BadConfig(why) => StanzaError::new(Modify, "not-acceptable").with_text(why.clone()),
        P::Unsupported(feature) => StanzaError::feature_not_implemented()
            .with_app(app("unsupported").attr("feature", *feature)),
        P::UnsupportedAccessModel(m) => StanzaError::new(Modify, "not-acceptable")
            .with_app(app("unsupported-access-model"))
            .with_text(format!("access model {m:?} is not supported")),
        P::LastOwner => StanzaError::new(Modify, "not-acceptable").with_text(e.to_string()),
        P::BadRequest(why) => StanzaError::bad_request().with_text(why.clone()),
        P::InvalidOptions(why) => StanzaError::bad_request()
            .with_app(app("invalid-options"))
            .with_text(why.clone()),
        // RFC 6120 8.3.3.12: a local service policy, named in the text.
        P::LimitReached(why) => StanzaError::new(Cancel, "policy-violation").with_text(why.clone()),
        P::Storage(_) => StanzaError::new(Wait, "internal-server-error")
            .with_text("storage is unavailable; nothing was changed, try again later"),
    }
}
