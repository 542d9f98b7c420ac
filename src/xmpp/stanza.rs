//! IQ helpers: reading the envelope of a request and building its result or error.

use crate::jid::Jid;
use crate::xml::{Element, Rejected};

use super::errors::StanzaError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
}

/// The envelope of a received IQ, with its single payload element.
#[derive(Debug, Clone)]
pub struct Iq {
    pub kind: IqType,
    pub id: String,
    pub from: Option<Jid>,
    pub to: Option<Jid>,
    /// The namespace of the stanza itself (jabber:component:accept, or jabber:client when forwarded).
    pub ns: String,
    pub payload: Option<Element>,
}

/// Why an element is not a usable IQ request.
#[derive(Debug)]
pub enum IqParseError {
    /// Can't be answered at all (no id, or a result/error we must not answer).
    Ignore(&'static str),
    /// Answer with this error.
    Reply(Box<Iq>, StanzaError),
}

impl Iq {
    pub fn parse(stanza: Element) -> Result<Iq, IqParseError> {
        let kind = match stanza.get_attr("type") {
            Some("get") => IqType::Get,
            Some("set") => IqType::Set,
            Some("result") => IqType::Result,
            Some("error") => IqType::Error,
            _ => IqType::Error,
        };
        let Some(id) = stanza.get_attr("id").map(str::to_owned) else {
            return Err(IqParseError::Ignore("iq without id"));
        };
        let from = match stanza.get_attr("from").map(Jid::parse) {
            // Nothing can be addressed to a sender that is not a JID.
            Some(Err(_)) => return Err(IqParseError::Ignore("iq from a malformed JID")),
            other => other.and_then(Result::ok),
        };
        let to = stanza.get_attr("to").map(Jid::parse);
        let bad_to = match &to {
            Some(Err(e)) => Some(StanzaError::jid_malformed(e)),
            _ => None,
        };
        let to = to.and_then(Result::ok);
        let type_attr = stanza.get_attr("type").map(str::to_owned);
        let ns = stanza.ns().to_owned();
        let mut stanza = stanza;
        let mut payloads = stanza.take_nodes().into_iter().filter_map(|n| match n {
            crate::xml::Node::Element(e) => Some(e),
            _ => None,
        });
        let payload = payloads.next();
        let extra = payloads.next().is_some();
        let iq = Iq {
            kind,
            id,
            from,
            to,
            ns,
            payload,
        };
        if matches!(iq.kind, IqType::Result | IqType::Error)
            && matches!(type_attr.as_deref(), Some("result") | Some("error"))
        {
            return Ok(iq);
        }
        if let Some(err) = bad_to {
            return Err(IqParseError::Reply(Box::new(iq), err));
        }
        if type_attr.is_none() || !matches!(type_attr.as_deref(), Some("get") | Some("set")) {
            return Err(IqParseError::Reply(
                Box::new(iq),
                StanzaError::bad_request().with_text("iq type must be get, set, result or error"),
            ));
        }
        // RFC 6120 8.2.3: a get or set contains exactly one payload element.
        if iq.payload.is_none() || extra {
            return Err(IqParseError::Reply(
                Box::new(iq),
                StanzaError::bad_request()
                    .with_text("an iq get/set carries exactly one child element"),
            ));
        }
        Ok(iq)
    }

    /// The `<iq type='result'/>` answering this request, with an optional payload.
    pub fn result(&self, payload: Option<Element>) -> Element {
        let mut el = self.reply_envelope("result");
        if let Some(p) = payload {
            el.push_child(p);
        }
        el
    }

    /// The `<iq type='error'/>` answering this request (RFC 6120 8.3.1: the request payload may be
    /// included; we leave it out to keep errors small).
    pub fn error(&self, err: &StanzaError) -> Element {
        self.reply_envelope("error").child(err.to_element(&self.ns))
    }

    fn reply_envelope(&self, kind: &str) -> Element {
        Element::new("iq", self.ns.clone())
            .attr("type", kind)
            .attr("id", self.id.clone())
            .attr_opt("from", self.to.as_ref().map(Jid::to_string))
            .attr_opt("to", self.from.as_ref().map(Jid::to_string))
    }
}

/// The error answering a stanza the reader skipped for breaking a limit (RFC 6120 8.3.3.12,
/// `policy-violation`, type modify, with the limit as text), or None where no answer is due:
/// errors and IQ results are never answered (RFC 6120 8.3.1), nor is what has no sender, nor an IQ
/// without an id.
pub fn bounce(r: &Rejected, stream_ns: &str) -> Option<Element> {
    let get = |name: &str| {
        r.attrs
            .iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| quick_xml::escape::unescape(v).ok())
            .map(|v| v.into_owned())
    };
    let kind = get("type");
    match (r.name.as_str(), kind.as_deref()) {
        (_, Some("error")) | ("iq", Some("result")) => return None,
        ("iq", Some("get" | "set")) | ("message" | "presence", _) => {}
        _ => return None,
    }
    let from = get("from")?;
    let id = get("id");
    if r.name == "iq" && id.is_none() {
        return None;
    }
    let err = StanzaError::new(super::errors::ErrorType::Modify, "policy-violation")
        .with_text(format!("stanza refused: {}", r.reason));
    Some(
        Element::new(r.name.clone(), stream_ns)
            .attr("type", "error")
            .attr_opt("id", id)
            .attr_opt("from", get("to"))
            .attr("to", from)
            .child(err.to_element(stream_ns)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(name: &str, attrs: &[(&'static str, &str)]) -> Rejected {
        Rejected {
            name: name.into(),
            attrs: attrs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            reason: "larger than 10 bytes".into(),
            bytes: 11,
        }
    }

    #[test]
    fn bounces_requests_messages_and_presences_only() {
        let ns = "jabber:component:accept";
        let iq = rejected(
            "iq",
            &[
                ("type", "get"),
                ("id", "a&amp;1"),
                ("from", "u@h/r"),
                ("to", "ps.h"),
            ],
        );
        assert_eq!(
            bounce(&iq, ns).unwrap().to_xml(),
            "<iq xmlns='jabber:component:accept' type='error' id='a&amp;1' from='ps.h' to='u@h/r'>\
             <error type='modify'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>stanza refused: larger than 10 bytes</text>\
             </error></iq>"
        );
        let msg = rejected("message", &[("from", "u@h/r"), ("to", "ps.h")]);
        assert!(bounce(&msg, ns).is_some());
        // RFC 6120 8.3.1: never an error for an error; no answer to a result; an IQ needs its id.
        for r in [
            rejected("iq", &[("type", "result"), ("id", "1"), ("from", "u@h")]),
            rejected("iq", &[("type", "error"), ("id", "1"), ("from", "u@h")]),
            rejected("message", &[("type", "error"), ("from", "u@h")]),
            rejected("iq", &[("type", "get"), ("from", "u@h")]),
            rejected("message", &[("to", "ps.h")]),
            rejected("handshake", &[("from", "u@h")]),
        ] {
            assert_eq!(bounce(&r, ns), None, "{r:?}");
        }
    }
}
