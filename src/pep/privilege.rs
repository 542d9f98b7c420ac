//! XEP-0356 privileged entity: what each server granted (`urn:xmpp:privilege:1` on ejabberd 23.01,
//! `:2` on Prosody's mod_privilege), and the wrapper that sends a message as a local account.

use std::collections::HashMap;
use std::sync::Mutex;

use tracing::{info, warn};

use crate::jid::Jid;
use crate::xml::Element;
use crate::xml::element::escape_attr_into;

use super::NS_FORWARD;

pub const NS_PRIVILEGE_1: &str = "urn:xmpp:privilege:1";
pub const NS_PRIVILEGE_2: &str = "urn:xmpp:privilege:2";

/// The permissions one server advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    /// The namespace the server speaks (answers must use the same).
    pub ns: String,
    /// `roster` access: get or both.
    pub roster_get: bool,
    /// `message` access: outgoing.
    pub message_outgoing: bool,
    /// `presence` access: managed_entity or roster.
    pub presence: bool,
}

#[derive(Default)]
pub struct Privileges {
    by_server: Mutex<HashMap<String, Granted>>,
}

impl Privileges {
    /// Reads `<privilege xmlns='urn:xmpp:privilege:N'>` from a server's message; logs what is missing.
    pub fn record(&self, server: &str, privilege: &Element) {
        let mut g = Granted {
            ns: privilege.ns().to_owned(),
            ..Granted::default()
        };
        for perm in privilege.children().filter(|p| p.name() == "perm") {
            match (perm.get_attr("access"), perm.get_attr("type")) {
                (Some("roster"), Some("get" | "both")) => g.roster_get = true,
                (Some("message"), Some("outgoing")) => g.message_outgoing = true,
                (Some("presence"), Some("managed_entity" | "roster")) => g.presence = true,
                _ => {}
            }
        }
        info!(
            "{server} granted privileges ({}): roster get {}, message outgoing {}, presence {}",
            g.ns, g.roster_get, g.message_outgoing, g.presence
        );
        if !g.message_outgoing {
            warn!(
                "{server} did not grant the message privilege: PEP notifications cannot be sent (grant message = outgoing)"
            );
        }
        if !g.roster_get {
            warn!(
                "{server} did not grant the roster privilege: presence/roster access models deny every contact (grant roster = get)"
            );
        }
        if !g.presence {
            warn!(
                "{server} did not grant the presence privilege: no +notify delivery to contacts and no last item on login (grant presence = roster)"
            );
        }
        self.by_server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.to_owned(), g);
    }

    pub fn get(&self, server: &str) -> Option<Granted> {
        self.by_server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server)
            .cloned()
    }
}

/// `<message from=component to=server><privilege><forwarded>INNER</forwarded></privilege></message>`.
pub fn wrap_message(out: &mut String, component: &str, server: &str, ns: &str, inner: &str) {
    out.push_str("<message from='");
    escape_attr_into(out, component);
    out.push_str("' to='");
    escape_attr_into(out, server);
    out.push_str("'><privilege xmlns='");
    out.push_str(ns);
    out.push_str("'><forwarded xmlns='");
    out.push_str(NS_FORWARD);
    out.push_str("'>");
    out.push_str(inner);
    out.push_str("</forwarded></privilege></message>");
}

/// A `<message type=KIND/>` from a local account carrying `body` (already serialized, in the
/// jabber:client namespace), wrapped for the message privilege and appended to `out`.
pub fn wrap_notification(
    out: &mut String,
    component: &str,
    granted: &Granted,
    (from, to): (&Jid, &Jid),
    kind: &str,
    body: &str,
) {
    let mut inner = String::with_capacity(body.len() + 128);
    inner.push_str("<message xmlns='jabber:client' from='");
    escape_attr_into(&mut inner, from.as_str());
    inner.push_str("' to='");
    escape_attr_into(&mut inner, to.as_str());
    inner.push_str("' type='");
    inner.push_str(kind);
    inner.push_str("'>");
    inner.push_str(body);
    inner.push_str("</message>");
    // The server that hosts the sender grants the privilege and routes the message.
    wrap_message(out, component, from.domain(), &granted.ns, &inner);
}
