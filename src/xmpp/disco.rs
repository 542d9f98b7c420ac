//! XEP-0030 service discovery of the component's own domain.

use crate::xml::Element;

use super::pubsub::NS_PUBSUB;
use super::rsm::NS_RSM;
use super::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION};

/// Features the host service implements (advertised exactly; nothing listed is missing).
pub fn service_features() -> Vec<&'static str> {
    let mut f = vec![
        NS_DISCO_INFO,
        NS_DISCO_ITEMS,
        NS_PING,
        NS_VERSION,
        NS_PUBSUB,
        NS_RSM,
        // XEP-0050: the owners' 8.7 command, and the administrators' commands.
        super::adhoc::NS_COMMANDS,
    ];
    f.extend(PUBSUB_FEATURES.iter().copied());
    f
}

/// XEP-0060 section 10 features this service implements, as `pubsub#` feature vars.
pub const PUBSUB_FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-authorize",
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    // 8.7: pending subscription requests through an ad-hoc command.
    "http://jabber.org/protocol/pubsub#get-pending",
    "http://jabber.org/protocol/pubsub#instant-nodes",
    "http://jabber.org/protocol/pubsub#item-ids",
    // 6.1.7 and 12.8: send_last_published_item.
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#manage-subscriptions",
    "http://jabber.org/protocol/pubsub#member-affiliation",
    "http://jabber.org/protocol/pubsub#meta-data",
    "http://jabber.org/protocol/pubsub#modify-affiliations",
    // A node keeps more than one item (pubsub#max_items).
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#outcast-affiliation",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#publisher-affiliation",
    "http://jabber.org/protocol/pubsub#publish-only-affiliation",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-default-sub",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
    // 6.5.4: items pages with XEP-0059.
    "http://jabber.org/protocol/pubsub#rsm",
    "http://jabber.org/protocol/pubsub#subscribe",
    "http://jabber.org/protocol/pubsub#subscription-options",
    "http://jabber.org/protocol/pubsub#subscription-notifications",
    "http://jabber.org/protocol/pubsub#config-node-max",
];

/// `<query xmlns='disco#info'>` with one identity and the features.
pub fn info_query(
    node: Option<&str>,
    identities: &[(&str, &str, &str)],
    features: &[&str],
    extra: Vec<Element>,
) -> Element {
    let mut q = Element::new("query", NS_DISCO_INFO).attr_opt("node", node);
    for (category, kind, name) in identities {
        q.push_child(
            Element::new("identity", NS_DISCO_INFO)
                .attr("category", *category)
                .attr("type", *kind)
                .attr("name", *name),
        );
    }
    for f in features {
        q.push_child(Element::new("feature", NS_DISCO_INFO).attr("var", *f));
    }
    for e in extra {
        q.push_child(e);
    }
    q
}

/// `<query xmlns='disco#items'>` (empty for now: nodes come with the pubsub service).
pub fn items_query(node: Option<&str>, items: Vec<Element>) -> Element {
    Element::new("query", NS_DISCO_ITEMS)
        .attr_opt("node", node)
        .children_from(items)
}
