//! XEP-0060 requests: `<pubsub/>` and `<pubsub xmlns='#owner'/>` IQs to the core and back.

use crate::jid::Jid;
use crate::pubsub::command::NewItem;
use crate::pubsub::model::{Affiliation, ServiceId, SubscriptionState};
use crate::pubsub::notify::Notification;
use crate::pubsub::{ItemId, ItemSelection, NodeName, PubSub, PubSubError, Reply, Request, SubId};
use crate::storage::ItemQuery;
use crate::xml::{Element, Node};

use super::errors::{StanzaError, from_pubsub};
use super::forms::{self, FORM_NODE_CONFIG, FORM_PUBLISH_OPTIONS, FORM_SUB_OPTIONS, NS_DATA};
use super::rsm::{self, NS_RSM};
use super::stanza::{Iq, IqType};

pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";

/// The answer to a pubsub IQ: the result payload and what to notify.
pub type Answer = Result<(Option<Element>, Vec<Notification>), StanzaError>;

fn err(e: PubSubError) -> StanzaError {
    from_pubsub(&e)
}

fn bad(why: &str) -> StanzaError {
    StanzaError::bad_request().with_text(why.to_owned())
}

fn node_attr(el: &Element) -> Result<NodeName, StanzaError> {
    NodeName::new(el.get_attr("node").unwrap_or_default()).map_err(err)
}

/// An optional `node` attribute (the user's subscriptions and affiliations, 5.6 and 5.7).
fn node_filter(el: &Element) -> Result<Option<NodeName>, StanzaError> {
    el.get_attr("node")
        .map(NodeName::new)
        .transpose()
        .map_err(err)
}

fn subid_attr(el: &Element) -> Result<Option<SubId>, StanzaError> {
    el.get_attr("subid")
        .map(SubId::new)
        .transpose()
        .map_err(err)
}

/// The ids of the `<item/>` children that carry one.
fn item_ids(act: &Element) -> Result<Vec<ItemId>, StanzaError> {
    act.children()
        .filter(|c| c.is("item", NS_PUBSUB))
        .filter_map(|i| i.get_attr("id"))
        .map(|id| ItemId::new(id).map_err(err))
        .collect()
}

/// A `jid` attribute: absent is XEP-0060's `invalid-jid`; not a JID is `jid-malformed`
/// (RFC 6120 8.3.3.8), and a JID is compared in its prepared form.
fn jid_attr(el: &Element) -> Result<Jid, StanzaError> {
    let j = el
        .get_attr("jid")
        .ok_or_else(|| err(PubSubError::InvalidJid))?;
    Jid::parse(j).map_err(|e| StanzaError::jid_malformed(&e))
}

fn form_in(el: &Element) -> Option<&Element> {
    el.get_child("x", NS_DATA)
}

/// The child of a `<pubsub/>` that names the action: `options`, `configure` and `set` accompany
/// another action (subscribe, create, items) unless they stand alone.
fn action(pubsub: &Element) -> Option<&Element> {
    const COMPANIONS: [&str; 4] = ["options", "configure", "publish-options", "set"];
    pubsub
        .children()
        .find(|c| !COMPANIONS.contains(&c.name()))
        .or_else(|| pubsub.children().next())
}

/// A pubsub IQ: parsed once into a [`Request`], run by the core for `actor` in `svc`, its
/// [`Reply`] rendered.
pub async fn handle(
    ps: &PubSub,
    svc: &ServiceId,
    actor: &Jid,
    iq: &Iq,
    pubsub: &Element,
) -> Answer {
    let request = parse(iq.kind, pubsub, ps.limits().max_page)?;
    let outcome = ps.execute(svc, actor, request).await.map_err(|e| {
        if matches!(e, PubSubError::Storage(_)) {
            crate::metrics::metrics().storage_errors.inc();
        }
        err(e)
    })?;
    Ok((render(outcome.reply), outcome.notifications))
}

/// The operation a `<pubsub/>` payload asks for, named as in `metrics::OPS` (without parsing
/// the rest of it).
pub fn op_name(kind: IqType, pubsub: &Element) -> &'static str {
    let owner_ns = pubsub.ns() == NS_OWNER;
    let Some(act) = action(pubsub) else {
        return "other";
    };
    match (kind, owner_ns, act.name()) {
        (IqType::Set, false, "publish") => "publish",
        (IqType::Set, false, "retract") => "retract",
        (IqType::Set, false, "create") => "create",
        (IqType::Set, false, "subscribe") => "subscribe",
        (IqType::Set, false, "unsubscribe") => "unsubscribe",
        (IqType::Set, false, "options") => "set_options",
        (IqType::Get, false, "options") => "options",
        (IqType::Get, false, "default") => "default_options",
        (IqType::Get, false, "items") => "items",
        (IqType::Get, false, "subscriptions") => "subscriptions",
        (IqType::Get, false, "affiliations") => "affiliations",
        (IqType::Get, true, "configure") => "configuration",
        (IqType::Set, true, "configure") => "configure",
        (IqType::Get, true, "default") => "default_config",
        (IqType::Set, true, "delete") => "delete",
        (IqType::Set, true, "purge") => "purge",
        (IqType::Get, true, "subscriptions") => "node_subscriptions",
        (IqType::Set, true, "subscriptions") => "set_node_subscriptions",
        (IqType::Get, true, "affiliations") => "node_affiliations",
        (IqType::Set, true, "affiliations") => "set_node_affiliations",
        _ => "other",
    }
}

/// XEP-0060 sections 5-8: the request a `<pubsub/>` payload asks for.
pub fn parse(kind: IqType, pubsub: &Element, max_page: usize) -> Result<Request, StanzaError> {
    let owner_ns = pubsub.ns() == NS_OWNER;
    let Some(act) = action(pubsub) else {
        return Err(bad("empty pubsub request"));
    };
    Ok(match (kind, owner_ns, act.name()) {
        (IqType::Set, false, "publish") => parse_publish(act, pubsub)?,
        (IqType::Set, false, "retract") => Request::Retract {
            node: node_attr(act)?,
            ids: item_ids(act)?,
            notify: match act.get_attr("notify") {
                Some("true") | Some("1") => Some(true),
                Some("false") | Some("0") => Some(false),
                _ => None,
            },
        },
        (IqType::Set, false, "create") => Request::Create {
            node: act
                .get_attr("node")
                .map(NodeName::new)
                .transpose()
                .map_err(err)?,
            config: match pubsub.get_child("configure", NS_PUBSUB).and_then(form_in) {
                Some(x) => Some(forms::config_patch(&forms::parse(x).1).map_err(err)?),
                None => None,
            },
        },
        (IqType::Set, false, "subscribe") => Request::Subscribe {
            node: node_attr(act)?,
            jid: jid_attr(act)?,
            options: match pubsub.get_child("options", NS_PUBSUB).and_then(form_in) {
                Some(x) => {
                    let (_, fields) = forms::parse(x);
                    if forms::form_type(&fields).is_some_and(|t| t != FORM_SUB_OPTIONS) {
                        return Err(bad("options FORM_TYPE must be pubsub#subscribe_options"));
                    }
                    forms::apply_options(&fields).map_err(err)?
                }
                None => Default::default(),
            },
        },
        (IqType::Set, false, "unsubscribe") => Request::Unsubscribe {
            node: node_attr(act)?,
            jid: jid_attr(act)?,
            subid: subid_attr(act)?,
        },
        (IqType::Set, false, "options") => {
            let (node, jid, subid) = (node_attr(act)?, jid_attr(act)?, subid_attr(act)?);
            let x = form_in(act).ok_or_else(|| bad("options without a data form"))?;
            let (_, fields) = forms::parse(x);
            Request::SetOptions {
                node,
                jid,
                subid,
                options: forms::apply_options(&fields).map_err(err)?,
            }
        }
        (IqType::Get, false, "options") => Request::Options {
            node: node_attr(act)?,
            jid: jid_attr(act)?,
            subid: subid_attr(act)?,
        },
        (IqType::Get, false, "default") => Request::DefaultOptions,
        (IqType::Get, false, "items") => parse_items(act, pubsub, max_page)?,
        (IqType::Get, false, "subscriptions") => Request::Subscriptions {
            node: node_filter(act)?,
        },
        (IqType::Get, false, "affiliations") => Request::Affiliations {
            node: node_filter(act)?,
        },
        (IqType::Get, true, "configure") => Request::Configuration {
            node: node_attr(act)?,
        },
        (IqType::Set, true, "configure") => {
            let node = node_attr(act)?;
            let x = form_in(act).ok_or_else(|| bad("configure without a data form"))?;
            let (kind, fields) = forms::parse(x);
            if kind == "cancel" {
                return Ok(Request::Configure { node, patch: None });
            }
            if forms::form_type(&fields).is_some_and(|t| t != FORM_NODE_CONFIG) {
                return Err(
                    StanzaError::new(super::errors::ErrorType::Modify, "not-acceptable")
                        .with_text("FORM_TYPE must be pubsub#node_config"),
                );
            }
            Request::Configure {
                node,
                patch: Some(forms::config_patch(&fields).map_err(err)?),
            }
        }
        (IqType::Get, true, "default") => Request::DefaultConfig,
        (IqType::Set, true, "delete") => Request::Delete {
            node: node_attr(act)?,
            redirect: act
                .get_child("redirect", NS_OWNER)
                .and_then(|r| r.get_attr("uri"))
                .map(str::to_owned),
        },
        (IqType::Set, true, "purge") => Request::Purge {
            node: node_attr(act)?,
        },
        (IqType::Get, true, "subscriptions") => Request::NodeSubscriptions {
            node: node_attr(act)?,
        },
        (IqType::Set, true, "subscriptions") => {
            let node = node_attr(act)?;
            let mut changes = Vec::new();
            for s in act.children().filter(|c| c.is("subscription", NS_OWNER)) {
                let jid = jid_attr(s)?;
                let state = match s.get_attr("subscription") {
                    Some("none") => None,
                    Some("subscribed") => Some(SubscriptionState::Subscribed),
                    Some("pending") => Some(SubscriptionState::Pending),
                    Some("unconfigured") => Some(SubscriptionState::Unconfigured),
                    _ => {
                        return Err(bad(
                            "subscription must be none, pending, unconfigured or subscribed",
                        ));
                    }
                };
                changes.push((jid, state, subid_attr(s)?));
            }
            Request::SetNodeSubscriptions { node, changes }
        }
        (IqType::Get, true, "affiliations") => Request::NodeAffiliations {
            node: node_attr(act)?,
        },
        (IqType::Set, true, "affiliations") => {
            let node = node_attr(act)?;
            let mut changes = Vec::new();
            for a in act.children().filter(|c| c.is("affiliation", NS_OWNER)) {
                // XEP-0060 8.9.2: affiliations belong to bare JIDs.
                let jid = jid_attr(a)?.to_bare();
                let aff = a
                    .get_attr("affiliation")
                    .and_then(Affiliation::parse)
                    .ok_or_else(|| bad("unknown affiliation"))?;
                changes.push((jid, aff));
            }
            Request::SetNodeAffiliations { node, changes }
        }
        _ => return Err(StanzaError::feature_not_implemented()),
    })
}

fn parse_publish(act: &Element, pubsub: &Element) -> Result<Request, StanzaError> {
    let node = node_attr(act)?;
    let mut items = Vec::new();
    for item in act.children().filter(|c| c.is("item", NS_PUBSUB)) {
        let payloads: Vec<&Element> = item.children().collect();
        if payloads.len() > 1 {
            return Err(err(PubSubError::InvalidPayload));
        }
        items.push(NewItem {
            // An empty id is no id: the service makes one (7.1.1).
            id: match item.get_attr("id") {
                Some(id) if !id.is_empty() => Some(ItemId::new(id).map_err(err)?),
                _ => None,
            },
            payload: payloads.first().map(|p| p.to_xml()).unwrap_or_default(),
        });
    }
    let options = match pubsub
        .get_child("publish-options", NS_PUBSUB)
        .and_then(form_in)
    {
        Some(x) => {
            let (_, fields) = forms::parse(x);
            if forms::form_type(&fields).is_some_and(|t| t != FORM_PUBLISH_OPTIONS) {
                return Err(bad(
                    "publish-options FORM_TYPE must be pubsub#publish-options",
                ));
            }
            Some(forms::publish_options_patch(&fields).map_err(err)?)
        }
        None => None,
    };
    Ok(Request::Publish {
        node,
        items,
        options,
    })
}

fn parse_items(act: &Element, pubsub: &Element, max_page: usize) -> Result<Request, StanzaError> {
    let node = node_attr(act)?;
    let ids: Vec<String> = item_ids(act)?.into_iter().map(|i| i.to_string()).collect();
    let rsm_req = match pubsub.get_child("set", NS_RSM) {
        Some(set) => Some(rsm::parse(set).map_err(|e| bad(&e))?),
        None => None,
    };
    let max_items = match act.get_attr("max_items") {
        Some(m) => Some(
            m.parse::<usize>()
                .map_err(|_| bad("max_items must be a number"))?,
        ),
        None => None,
    };
    let selection = if !ids.is_empty() {
        ItemSelection::ById(ids)
    } else if let Some(r) = &rsm_req {
        let max = r.max.unwrap_or(max_page);
        let q = match (&r.after, &r.before) {
            (Some(a), _) => ItemQuery::After(Some(a.clone()), max),
            (None, Some(b)) if b.is_empty() => ItemQuery::Before(None, max),
            (None, Some(b)) => ItemQuery::Before(Some(b.clone()), max),
            (None, None) => ItemQuery::After(None, max),
        };
        ItemSelection::Page(q)
    } else {
        ItemSelection::Newest(max_items)
    };
    Ok(Request::Items {
        node,
        selection,
        paged: rsm_req.is_some(),
    })
}

fn wrap(ns: &str, child: Element) -> Element {
    Element::new("pubsub", ns).child(child)
}

/// The result payload of a reply (XEP-0060's examples), or None for an empty result.
pub fn render(reply: Reply) -> Option<Element> {
    Some(match reply {
        Reply::Done => return None,
        // Discovery answers are XEP-0030 queries, rendered by `host.rs` (`disco_info`,
        // `disco_items`), the node list by the ad-hoc commands (`adhoc.rs`); no pubsub request
        // produces them.
        Reply::Nodes(_) | Reply::NodeInfo { .. } | Reply::ItemIds { .. } | Reply::Overview(_) => {
            return None;
        }
        Reply::Created { node } => wrap(
            NS_PUBSUB,
            Element::new("create", NS_PUBSUB).attr("node", node),
        ),
        Reply::Published { node, ids } => {
            let mut p = Element::new("publish", NS_PUBSUB).attr("node", node.as_str());
            for id in ids {
                p.push_child(Element::new("item", NS_PUBSUB).attr("id", id));
            }
            wrap(NS_PUBSUB, p)
        }
        Reply::Subscription {
            node,
            subscription: s,
            options: false,
        } => wrap(
            NS_PUBSUB,
            Element::new("subscription", NS_PUBSUB)
                .attr("node", node.as_str())
                .attr("jid", s.jid.to_string())
                .attr("subid", s.subid.clone())
                .attr("subscription", s.state.as_str()),
        ),
        Reply::Subscription {
            node,
            subscription: s,
            options: true,
        } => wrap(
            NS_PUBSUB,
            Element::new("options", NS_PUBSUB)
                .attr("node", node.as_str())
                .attr("jid", s.jid.to_string())
                .attr("subid", s.subid.clone())
                .child(forms::options_form(&s.options, "form")),
        ),
        Reply::DefaultOptions(o) => wrap(
            NS_PUBSUB,
            Element::new("default", NS_PUBSUB).child(forms::options_form(&o, "form")),
        ),
        Reply::Items { node, page, paged } => {
            let mut list = Element::new("items", NS_PUBSUB).attr("node", node.as_str());
            for item in &page.items {
                let mut el = Element::new("item", NS_PUBSUB)
                    .attr("id", item.id.clone())
                    .attr("publisher", item.publisher.clone());
                if !item.payload.is_empty() {
                    el.push_node(Node::Raw(item.payload.clone()));
                }
                list.push_child(el);
            }
            let mut reply = wrap(NS_PUBSUB, list);
            // XEP-0060 6.5.4: a page cut short says so with an RSM set, requested or not.
            if paged {
                let first = page
                    .items
                    .first()
                    .map(|i| (i.id.as_str(), page.first_index));
                let last = page.items.last().map(|i| i.id.as_str());
                reply.push_child(rsm::answer(first, last, page.count));
            }
            reply
        }
        Reply::Subscriptions { node, list } => {
            let mut el = Element::new("subscriptions", NS_PUBSUB)
                .attr_opt("node", node.map(|n| n.to_string()));
            for (node, s) in list {
                el.push_child(
                    Element::new("subscription", NS_PUBSUB)
                        .attr("node", node)
                        .attr("jid", s.jid.to_string())
                        .attr("subscription", s.state.as_str())
                        .attr("subid", s.subid),
                );
            }
            wrap(NS_PUBSUB, el)
        }
        Reply::Affiliations { node, list } => {
            let mut el = Element::new("affiliations", NS_PUBSUB)
                .attr_opt("node", node.map(|n| n.to_string()));
            for (node, a) in list {
                el.push_child(
                    Element::new("affiliation", NS_PUBSUB)
                        .attr("node", node)
                        .attr("affiliation", a.as_str()),
                );
            }
            wrap(NS_PUBSUB, el)
        }
        Reply::Configuration { node, config } => wrap(
            NS_OWNER,
            Element::new("configure", NS_OWNER)
                .attr("node", node.as_str())
                .child(forms::config_form(&config, "form")),
        ),
        Reply::DefaultConfig(config) => wrap(
            NS_OWNER,
            Element::new("default", NS_OWNER).child(forms::config_form(&config, "form")),
        ),
        Reply::NodeSubscriptions { node, list } => {
            let mut el = Element::new("subscriptions", NS_OWNER).attr("node", node.as_str());
            for s in list {
                el.push_child(
                    Element::new("subscription", NS_OWNER)
                        .attr("jid", s.jid.to_string())
                        .attr("subscription", s.state.as_str())
                        .attr("subid", s.subid),
                );
            }
            wrap(NS_OWNER, el)
        }
        Reply::NodeAffiliations { node, list } => {
            let mut el = Element::new("affiliations", NS_OWNER).attr("node", node.as_str());
            for (jid, a) in list {
                el.push_child(
                    Element::new("affiliation", NS_OWNER)
                        .attr("jid", jid.to_string())
                        .attr("affiliation", a.as_str()),
                );
            }
            wrap(NS_OWNER, el)
        }
    })
}
