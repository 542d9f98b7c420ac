//! XEP-0355 namespace delegation: the disco#info answers the servers ask for before delegating,
//! unwrapping forwarded IQs, and wrapping the answers (`urn:xmpp:delegation:1` on ejabberd 23.01,
//! `:2` on Prosody's mod_delegation: the answer uses the namespace of the request).

use crate::component::NS_COMPONENT;
use crate::jid::{BareJid, Jid};
use crate::xml::Element;

use super::NS_FORWARD;

pub const NS_DELEGATION_1: &str = "urn:xmpp:delegation:1";
pub const NS_DELEGATION_2: &str = "urn:xmpp:delegation:2";

pub fn is_delegation_ns(ns: &str) -> bool {
    ns == NS_DELEGATION_1 || ns == NS_DELEGATION_2
}

/// Features of a PEP service (XEP-0163 section 9, XEP-0060 section 10).
pub const PEP_FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub",
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#config-node-max",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#manage-subscriptions",
    "http://jabber.org/protocol/pubsub#member-affiliation",
    "http://jabber.org/protocol/pubsub#modify-affiliations",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#outcast-affiliation",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-only-affiliation",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#publisher-affiliation",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
    "http://jabber.org/protocol/pubsub#rsm",
    "http://jabber.org/protocol/pubsub#subscribe",
    "http://jabber.org/protocol/pubsub#subscription-notifications",
    "http://jabber.org/protocol/pubsub#subscription-options",
];

/// If `node` is one of the delegation disco nodes (`urn:xmpp:delegation:N::NS` for the server,
/// `urn:xmpp:delegation:N:bare:NS` for accounts), the delegated namespace.
pub fn delegated_disco_node(node: &str) -> Option<&str> {
    for prefix in ["urn:xmpp:delegation:1", "urn:xmpp:delegation:2"] {
        if let Some(rest) = node.strip_prefix(prefix) {
            return rest
                .strip_prefix("::")
                .or_else(|| rest.strip_prefix(":bare:"));
        }
    }
    None
}

/// A forwarded IQ taken out of its wrapping.
#[derive(Debug, Clone)]
pub struct Delegated {
    /// The namespace of the wrapping (answers use the same).
    pub ns: String,
    /// The outer IQ's id and sender (the server).
    pub outer_id: String,
    pub server: String,
    /// The client's IQ as it sent it.
    pub inner: Element,
    /// Whose PEP service: bare `to` when present, else bare `from`.
    pub owner: BareJid,
    pub sender: Jid,
}

/// Unwraps `<iq><delegation><forwarded><iq/></forwarded></delegation></iq>`; None when the stanza
/// is not a well-formed delegated IQ.
pub fn unwrap(outer: &Element) -> Option<Delegated> {
    let (delegation, inner) = forwarded_iq(outer)?;
    let (sender, owner) = sender_and_owner(inner)?;
    let inner = inner.clone();
    Some(Delegated {
        ns: delegation.ns().to_owned(),
        outer_id: outer.get_attr("id")?.to_owned(),
        server: outer.get_attr("from")?.to_owned(),
        inner,
        owner,
        sender,
    })
}

fn forwarded_iq(outer: &Element) -> Option<(&Element, &Element)> {
    let delegation = outer
        .children()
        .find(|c| c.name() == "delegation" && is_delegation_ns(c.ns()))?;
    let forwarded = delegation.get_child("forwarded", NS_FORWARD)?;
    Some((delegation, forwarded.children().find(|c| c.name() == "iq")?))
}

/// The forwarded IQ's sender, and the account it is addressed to (its `to`, else the sender's
/// own account).
fn sender_and_owner(inner: &Element) -> Option<(Jid, BareJid)> {
    let sender = Jid::parse(inner.get_attr("from")?).ok()?;
    let owner = match inner.get_attr("to") {
        Some(to) => Jid::parse(to).ok()?.to_bare(),
        None => sender.to_bare(),
    };
    Some((sender, owner))
}

/// The account and node a delegated pubsub request works on, read without copying the stanza:
/// requests with the same key are answered in the order they arrived (a PEP node is ordered as a
/// host node is). None when the request names no node.
pub fn order_key(outer: &Element) -> Option<(String, String)> {
    let (_, inner) = forwarded_iq(outer)?;
    let node = inner
        .children()
        .find(|c| c.name() == "pubsub")?
        .children()
        .find_map(|a| a.get_attr("node"))?;
    let (_, owner) = sender_and_owner(inner)?;
    Some((owner.to_string(), node.to_owned()))
}

impl Delegated {
    /// The outer result carrying the inner answer (whose `from` is the original `to`, i.e. the owner).
    pub fn wrap_answer(&self, component: &str, mut inner_answer: Element) -> Element {
        inner_answer.set_attr("from", self.owner.to_string());
        inner_answer.set_attr("to", self.sender.to_string());
        Element::new("iq", NS_COMPONENT)
            .attr("type", "result")
            .attr("id", self.outer_id.clone())
            .attr("from", component)
            .attr("to", self.server.clone())
            .child(
                Element::new("delegation", self.ns.clone())
                    .child(Element::new("forwarded", NS_FORWARD).child(inner_answer)),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Limits, parse_element};

    #[test]
    fn unwraps_ejabberd_and_prosody_forms() {
        let ej = parse_element(
            "<iq xmlns='jabber:component:accept' type='set' from='localhost' id='OUTER' to='pubsub.localhost'><delegation xmlns='urn:xmpp:delegation:1'><forwarded xmlns='urn:xmpp:forward:0'><iq xmlns='jabber:client' type='set' id='INNER' from='alice@localhost/res' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq></forwarded></delegation></iq>",
            Limits::default(),
        )
        .unwrap();
        let d = unwrap(&ej).unwrap();
        assert_eq!(d.owner.to_string(), "alice@localhost");
        assert_eq!(d.ns, NS_DELEGATION_1);
        let answer = d.wrap_answer(
            "pubsub.localhost",
            Element::new("iq", "jabber:client")
                .attr("type", "result")
                .attr("id", "INNER"),
        );
        assert_eq!(
            answer.to_xml(),
            "<iq xmlns='jabber:component:accept' type='result' id='OUTER' from='pubsub.localhost' to='localhost'><delegation xmlns='urn:xmpp:delegation:1'><forwarded xmlns='urn:xmpp:forward:0'><iq xmlns='jabber:client' type='result' id='INNER' from='alice@localhost' to='alice@localhost/res'/></forwarded></delegation></iq>"
        );
        // Prosody leaves out the inner `to`: the owner is the sender's bare JID.
        let pr = parse_element(
            "<iq xmlns='jabber:component:accept' type='set' from='localhost' id='O' to='pubsub.localhost'><delegation xmlns='urn:xmpp:delegation:2'><forwarded xmlns='urn:xmpp:forward:0'><iq xmlns='jabber:client' type='get' id='I' from='bob@localhost/x'><pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq></forwarded></delegation></iq>",
            Limits::default(),
        )
        .unwrap();
        assert_eq!(unwrap(&pr).unwrap().owner.to_string(), "bob@localhost");
        assert_eq!(
            delegated_disco_node("urn:xmpp:delegation:2:bare:http://jabber.org/protocol/pubsub"),
            Some("http://jabber.org/protocol/pubsub")
        );
        assert_eq!(
            delegated_disco_node("urn:xmpp:delegation:1::http://jabber.org/protocol/pubsub#owner"),
            Some("http://jabber.org/protocol/pubsub#owner")
        );
        assert_eq!(delegated_disco_node("other"), None);
    }
}
