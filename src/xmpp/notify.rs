//! Renders core notifications as `<message/>` stanzas (XEP-0060 7.1.2 and the rest). The event
//! element is serialized once per notification, then wrapped in a small per-recipient envelope.

use std::fmt::Write as _;

use crate::component::NS_COMPONENT;
use crate::pubsub::model::NotificationType;
use crate::pubsub::notify::{Event, Notification};
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
    let mut body = String::with_capacity(256);
    event_element(n, from).write_to(&mut body, NS_COMPONENT);
    let kind = match (&n.event, n.kind) {
        (Event::AuthorizationRequest { .. }, _) => "normal",
        (_, NotificationType::Headline) => "headline",
        (_, NotificationType::Normal) => "normal",
    };
    let mut out = String::with_capacity(n.recipients.len() * (body.len() + 96));
    for r in &n.recipients {
        out.push_str("<message from='");
        escape_attr_into(&mut out, from);
        out.push_str("' to='");
        escape_attr_into(&mut out, &r.jid.to_string());
        let _ = write!(out, "' type='{kind}'>");
        out.push_str(&body);
        if r.subids.len() > 1 {
            // XEP-0060 12.3: one notification, a SubID header per subscription.
            let _ = write!(out, "<headers xmlns='{NS_SHIM}'>");
            for id in &r.subids {
                out.push_str("<header name='SubID'>");
                escape_attr_into(&mut out, id);
                out.push_str("</header>");
            }
            out.push_str("</headers>");
        }
        out.push_str("</message>");
    }
    out
}
