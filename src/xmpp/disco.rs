//! XEP-0030 service discovery of the component's own domain.

use crate::xml::Element;

use super::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION};

/// Features the host service implements (advertised exactly; nothing listed is missing).
pub fn service_features() -> Vec<&'static str> {
    vec![NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION]
}

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
