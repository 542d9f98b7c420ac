//! Renders core notifications as `<message/>` stanzas (XEP-0060 7.1.2 and the rest). The event
//! element is serialized once per notification, then wrapped in a small per-recipient envelope.

use std::fmt::Write as _;

use crate::component::NS_COMPONENT;
use crate::pubsub::model::NotificationType;
use crate::pubsub::notify::{Event, Notification, Recipient};
use crate::xml::Element;
use crate::xml::element::escape_attr_into;

use super::forms;

pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_SHIM: &str = "http://jabber.org/protocol/shim";

/// The `<event/>` child (or, for approval requests, the form) of a notification.
pub fn event_element(n: &Notification, service_jid: &str) -> Element {
    let node = n.node.clone();
    match &n.event {
        Event::Items { items, payloads } => {
            let mut list = Element::new("items", NS_EVENT).attr("node", node);
            for item in items {
                let mut el = Element::new("item", NS_EVENT).attr("id", item.id.clone());
                if *payloads && !item.payload.is_empty() {
                    el = el.raw(item.payload.clone());
                }
                list.push_child(el);
            }
            Element::new("event", NS_EVENT).child(list)
        }
        Event::Retract { ids } => Element::new("event", NS_EVENT).child(
            Element::new("items", NS_EVENT)
                .attr("node", node)
                .children_from(
                    ids.iter()
                        .map(|id| Element::new("retract", NS_EVENT).attr("id", id.clone())),
                ),
        ),
        Event::Purge => Element::new("event", NS_EVENT)
            .child(Element::new("purge", NS_EVENT).attr("node", node)),
        Event::Delete { redirect } => {
            let mut d = Element::new("delete", NS_EVENT).attr("node", node);
            if let Some(r) = redirect {
                d.push_child(Element::new("redirect", NS_EVENT).attr("uri", r.clone()));
            }
            Element::new("event", NS_EVENT).child(d)
        }
        Event::Configuration { config } => {
            let mut c = Element::new("configuration", NS_EVENT).attr("node", node);
            if let Some(cfg) = config {
                c.push_child(forms::config_form(cfg, "result"));
            }
            Element::new("event", NS_EVENT).child(c)
        }
        Event::Subscription { jid, state, subid } => Element::new("event", NS_EVENT).child(
            Element::new("subscription", NS_EVENT)
                .attr("node", node)
                .attr("jid", jid.to_string())
                .attr("subscription", state.map(|s| s.as_str()).unwrap_or("none"))
                .attr_opt("subid", subid.clone()),
        ),
        Event::AuthorizationRequest { subscriber, subid } => {
            let _ = service_jid;
            forms::approval_form(&n.node, &subscriber.to_string(), subid)
        }
    }
}

/// Serialized messages, one per recipient, concatenated; `from` is the sending JID.
pub fn render(n: &Notification, from: &str) -> String {
    let body = Body::of(n);
    render_for(&body, from, n.recipients.iter())
}

/// A notification's serialized event and message type, shared by every envelope it is sent in.
pub struct Body {
    /// Shared: a multicast stanza's copy is kept (`Multicast::retain`) until it cannot bounce.
    pub xml: std::sync::Arc<str>,
    pub kind: &'static str,
}

impl Body {
    pub fn of(n: &Notification) -> Body {
        let mut xml = String::with_capacity(256);
        event_element(n, "").write_to(&mut xml, NS_COMPONENT);
        Body {
            xml: xml.into(),
            kind: message_type(n),
        }
    }
}

/// The `type` of the message carrying a notification: the node's `pubsub#notification_type`
/// (XEP-0060 16.4.3), on the host service and on PEP alike; an approval request is a form
/// the owner answers (8.6), always `normal`.
pub fn message_type(n: &Notification) -> &'static str {
    match (&n.event, n.kind) {
        (Event::AuthorizationRequest { .. }, _) => "normal",
        (_, NotificationType::Headline) => "headline",
        (_, NotificationType::Normal) => "normal",
    }
}

/// One message per recipient, concatenated.
pub fn render_for<'a>(
    body: &Body,
    from: &str,
    recipients: impl ExactSizeIterator<Item = &'a Recipient>,
) -> String {
    let mut out = String::with_capacity(recipients.len() * (body.xml.len() + 96));
    for r in recipients {
        render_one(body, from, r, &mut out);
    }
    out
}

/// The message of one recipient, appended to `out`.
pub fn render_one(body: &Body, from: &str, r: &Recipient, out: &mut String) {
    out.push_str("<message from='");
    escape_attr_into(out, from);
    out.push_str("' to='");
    escape_attr_into(out, &r.jid.to_string());
    let _ = write!(out, "' type='{}'>", body.kind);
    out.push_str(&body.xml);
    if r.subids.len() > 1 {
        // XEP-0060 12.3: one notification, a SubID header per subscription.
        let _ = write!(out, "<headers xmlns='{NS_SHIM}'>");
        for id in &r.subids {
            out.push_str("<header name='SubID'>");
            escape_attr_into(out, id);
            out.push_str("</header>");
        }
        out.push_str("</headers>");
    }
    out.push_str("</message>");
}

/// One message to a multicast service (XEP-0033 section 3) carrying the notification to every
/// recipient as a `bcc` address, so that no subscriber learns who the others are (section 4.6.3).
/// Its id (`multicast_id`) names what stratus kept of it and the message type, should the
/// service bounce it and stratus resend it one by one.
pub fn render_multicast(
    body: &Body,
    from: &str,
    (service, id): (&str, &str),
    recipients: &[&Recipient],
) -> String {
    let mut out = String::with_capacity(body.xml.len() + 128 + recipients.len() * 64);
    render_multicast_into(body, from, (service, id), recipients, &mut out);
    out
}

/// [`render_multicast`], appended to `out`.
pub fn render_multicast_into(
    body: &Body,
    from: &str,
    (service, id): (&str, &str),
    recipients: &[&Recipient],
    out: &mut String,
) {
    out.push_str("<message from='");
    escape_attr_into(out, from);
    out.push_str("' to='");
    escape_attr_into(out, service);
    let _ = write!(out, "' type='{}' id='", body.kind);
    escape_attr_into(out, id);
    out.push_str("'>");
    out.push_str(&body.xml);
    let _ = write!(out, "<addresses xmlns='{NS_ADDRESS}'>");
    for r in recipients {
        out.push_str("<address type='bcc' jid='");
        escape_attr_into(out, &r.jid.to_string());
        out.push_str("'/>");
    }
    out.push_str("</addresses></message>");
}

pub const NS_ADDRESS: &str = "http://jabber.org/protocol/address";

const MULTICAST_ID_HEADLINE: &str = "stratus-mc-headline";
const MULTICAST_ID_NORMAL: &str = "stratus-mc-normal";

/// The id of the multicast stanza kept as `seq`, sent as a message of type `kind`.
pub fn multicast_id(kind: &str, seq: u64) -> String {
    let prefix = if kind == "normal" {
        MULTICAST_ID_NORMAL
    } else {
        MULTICAST_ID_HEADLINE
    };
    format!("{prefix}-{seq}")
}

/// The message type and the sequence number of a multicast notification, from the id of its
/// bounce (None: not ours; no number: sent by a version that kept nothing).
pub fn parse_multicast_id(id: &str) -> Option<(&'static str, Option<u64>)> {
    for (prefix, kind) in [
        (MULTICAST_ID_HEADLINE, "headline"),
        (MULTICAST_ID_NORMAL, "normal"),
    ] {
        if let Some(rest) = id.strip_prefix(prefix) {
            return match rest.strip_prefix('-') {
                None if rest.is_empty() => Some((kind, None)),
                Some(n) => n.parse().ok().map(|n| (kind, Some(n))),
                None => None,
            };
        }
    }
    None
}
