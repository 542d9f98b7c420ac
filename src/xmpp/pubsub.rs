//! XEP-0060 requests: `<pubsub/>` and `<pubsub xmlns='#owner'/>` IQs to the core and back.

use crate::jid::Jid;
use crate::pubsub::model::{Affiliation, ServiceId, SubscriptionState};
use crate::pubsub::notify::Notification;
use crate::pubsub::{ItemSelection, PubSub, PubSubError};
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

fn node_attr(el: &Element) -> Result<&str, StanzaError> {
    match el.get_attr("node") {
        Some(n) if !n.is_empty() => Ok(n),
        _ => Err(from_pubsub(&PubSubError::NodeIdRequired)),
    }
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

pub async fn handle(
    ps: &PubSub,
    svc: &ServiceId,
    actor: &Jid,
    iq: &Iq,
    pubsub: &Element,
) -> Answer {
    let owner_ns = pubsub.ns() == NS_OWNER;
    let Some(act) = action(pubsub) else {
        return Err(bad("empty pubsub request"));
    };
    match (iq.kind, owner_ns, act.name()) {
        (IqType::Set, false, "publish") => publish(ps, svc, actor, act, pubsub).await,
        (IqType::Set, false, "retract") => retract(ps, svc, actor, act).await,
        (IqType::Set, false, "create") => create(ps, svc, actor, act, pubsub).await,
        (IqType::Set, false, "subscribe") => subscribe(ps, svc, actor, act, pubsub).await,
        (IqType::Set, false, "unsubscribe") => {
            let node = node_attr(act)?;
            let jid = jid_attr(act)?;
            let n = ps
                .unsubscribe(svc, actor, node, &jid, act.get_attr("subid"))
                .await
                .map_err(err)?;
            Ok((None, n))
        }
        (IqType::Set, false, "options") => {
            let node = node_attr(act)?;
            let jid = jid_attr(act)?;
            let x = form_in(act).ok_or_else(|| bad("options without a data form"))?;
            let (_, fields) = forms::parse(x);
            let opts = forms::apply_options(&fields).map_err(err)?;
            ps.set_options(svc, actor, node, &jid, act.get_attr("subid"), opts)
                .await
                .map_err(err)?;
            Ok((None, Vec::new()))
        }
        (IqType::Get, false, "options") => {
            let node = node_attr(act)?;
            let jid = jid_attr(act)?;
            let sub = ps
                .get_options(svc, actor, node, &jid, act.get_attr("subid"))
                .await
                .map_err(err)?;
            let reply = Element::new("options", NS_PUBSUB)
                .attr("node", node)
                .attr("jid", jid.to_string())
                .attr("subid", sub.subid.clone())
                .child(forms::options_form(&sub.options, "form"));
            Ok((Some(wrap(NS_PUBSUB, reply)), Vec::new()))
        }
        (IqType::Get, false, "default") => {
            // Default subscription options (6.4).
            let d = Element::new("default", NS_PUBSUB)
                .child(forms::options_form(&Default::default(), "form"));
            Ok((Some(wrap(NS_PUBSUB, d)), Vec::new()))
        }
        (IqType::Get, false, "items") => items(ps, svc, actor, act, pubsub).await,
        (IqType::Get, false, "subscriptions") => {
            let subs = ps
                .user_subscriptions(svc, actor, act.get_attr("node"))
                .await
                .map_err(err)?;
            let mut list =
                Element::new("subscriptions", NS_PUBSUB).attr_opt("node", act.get_attr("node"));
            for (node, s) in subs {
                list.push_child(
                    Element::new("subscription", NS_PUBSUB)
                        .attr("node", node)
                        .attr("jid", s.jid.to_string())
                        .attr("subscription", s.state.as_str())
                        .attr("subid", s.subid),
                );
            }
            Ok((Some(wrap(NS_PUBSUB, list)), Vec::new()))
        }
        (IqType::Get, false, "affiliations") => {
            let affs = ps
                .user_affiliations(svc, actor, act.get_attr("node"))
                .await
                .map_err(err)?;
            let mut list =
                Element::new("affiliations", NS_PUBSUB).attr_opt("node", act.get_attr("node"));
            for (node, a) in affs {
                list.push_child(
                    Element::new("affiliation", NS_PUBSUB)
                        .attr("node", node)
                        .attr("affiliation", a.as_str()),
                );
            }
            Ok((Some(wrap(NS_PUBSUB, list)), Vec::new()))
        }
        (IqType::Get, true, "configure") => {
            let node = node_attr(act)?;
            let cfg = ps.get_config(svc, actor, node).await.map_err(err)?;
            let c = Element::new("configure", NS_OWNER)
                .attr("node", node)
                .child(forms::config_form(&cfg, "form"));
            Ok((Some(wrap(NS_OWNER, c)), Vec::new()))
        }
        (IqType::Set, true, "configure") => {
            let node = node_attr(act)?;
            let x = form_in(act).ok_or_else(|| bad("configure without a data form"))?;
            let (kind, fields) = forms::parse(x);
            if kind == "cancel" {
                return Ok((None, Vec::new()));
            }
            if forms::form_type(&fields).is_some_and(|t| t != FORM_NODE_CONFIG) {
                return Err(
                    StanzaError::new(super::errors::ErrorType::Modify, "not-acceptable")
                        .with_text("FORM_TYPE must be pubsub#node_config"),
                );
            }
            let current = ps.get_config(svc, actor, node).await.map_err(err)?;
            let cfg = forms::apply_config(&current, &fields).map_err(err)?;
            let n = ps.set_config(svc, actor, node, cfg).await.map_err(err)?;
            Ok((None, n))
        }
        (IqType::Get, true, "default") => {
            let d = Element::new("default", NS_OWNER)
                .child(forms::config_form(&ps.default_config(svc), "form"));
            Ok((Some(wrap(NS_OWNER, d)), Vec::new()))
        }
        (IqType::Set, true, "delete") => {
            let node = node_attr(act)?;
            let redirect = act
                .get_child("redirect", NS_OWNER)
                .and_then(|r| r.get_attr("uri"))
                .map(str::to_owned);
            Ok((
                None,
                ps.delete(svc, actor, node, redirect).await.map_err(err)?,
            ))
        }
        (IqType::Set, true, "purge") => {
            let node = node_attr(act)?;
            Ok((None, ps.purge(svc, actor, node).await.map_err(err)?))
        }
        (IqType::Get, true, "subscriptions") => {
            let node = node_attr(act)?;
            let subs = ps.node_subscriptions(svc, actor, node).await.map_err(err)?;
            let mut list = Element::new("subscriptions", NS_OWNER).attr("node", node);
            for s in subs {
                list.push_child(
                    Element::new("subscription", NS_OWNER)
                        .attr("jid", s.jid.to_string())
                        .attr("subscription", s.state.as_str())
                        .attr("subid", s.subid),
                );
            }
            Ok((Some(wrap(NS_OWNER, list)), Vec::new()))
        }
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
                changes.push((jid, state, s.get_attr("subid").map(str::to_owned)));
            }
            Ok((
                None,
                ps.set_node_subscriptions(svc, actor, node, changes)
                    .await
                    .map_err(err)?,
            ))
        }
        (IqType::Get, true, "affiliations") => {
            let node = node_attr(act)?;
            let affs = ps.node_affiliations(svc, actor, node).await.map_err(err)?;
            let mut list = Element::new("affiliations", NS_OWNER).attr("node", node);
            for (jid, a) in affs {
                list.push_child(
                    Element::new("affiliation", NS_OWNER)
                        .attr("jid", jid.to_string())
                        .attr("affiliation", a.as_str()),
                );
            }
            Ok((Some(wrap(NS_OWNER, list)), Vec::new()))
        }
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
            let n = ps
                .set_node_affiliations(svc, actor, node, changes)
                .await
                .map_err(err)?;
            Ok((None, n))
        }
        _ => Err(StanzaError::feature_not_implemented()),
    }
}

fn wrap(ns: &str, child: Element) -> Element {
    Element::new("pubsub", ns).child(child)
}

async fn publish(
    ps: &PubSub,
    svc: &ServiceId,
    actor: &Jid,
    act: &Element,
    pubsub: &Element,
) -> Answer {
    let node = node_attr(act)?;
    let mut items = Vec::new();
    for item in act.children().filter(|c| c.is("item", NS_PUBSUB)) {
        let payloads: Vec<&Element> = item.children().collect();
        if payloads.len() > 1 {
            return Err(err(PubSubError::InvalidPayload));
        }
        let payload = payloads.first().map(|p| p.to_xml()).unwrap_or_default();
        items.push((item.get_attr("id").map(str::to_owned), payload));
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
            Some(fields)
        }
        None => None,
    };
    if crate::pubsub::policy::policy_of(svc).auto_creates_for(actor) {
        // XEP-0163 3 / XEP-0060 7.1.5: a missing PEP node is created on publish, configured by the
        // publish options.
        let mut config = ps.default_config(svc);
        if let Some(fields) = &options {
            config = forms::apply_config(&config, fields)
                .map_err(|e| err(PubSubError::PreconditionNotMet(e.to_string())))?;
        }
        ps.auto_create(svc, actor, node, config)
            .await
            .map_err(err)?;
    }
    if let Some(fields) = &options {
        // 7.1.5: the node's configuration must match each option.
        let state = ps.node(svc, node).await.map_err(err)?;
        forms::check_preconditions(&state.record.config, fields).map_err(err)?;
    }
    let (ids, notes) = ps.publish(svc, actor, node, items).await.map_err(err)?;
    let mut p = Element::new("publish", NS_PUBSUB).attr("node", node);
    for id in ids {
        p.push_child(Element::new("item", NS_PUBSUB).attr("id", id));
    }
    Ok((Some(wrap(NS_PUBSUB, p)), notes))
}

async fn retract(ps: &PubSub, svc: &ServiceId, actor: &Jid, act: &Element) -> Answer {
    let node = node_attr(act)?;
    let ids: Vec<String> = act
        .children()
        .filter(|c| c.is("item", NS_PUBSUB))
        .filter_map(|i| i.get_attr("id").map(str::to_owned))
        .collect();
    let notify = match act.get_attr("notify") {
        Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        _ => None,
    };
    Ok((
        None,
        ps.retract(svc, actor, node, ids, notify)
            .await
            .map_err(err)?,
    ))
}

async fn create(
    ps: &PubSub,
    svc: &ServiceId,
    actor: &Jid,
    act: &Element,
    pubsub: &Element,
) -> Answer {
    let requested = act.get_attr("node");
    let config = match pubsub.get_child("configure", NS_PUBSUB).and_then(form_in) {
        Some(x) => {
            let (_, fields) = forms::parse(x);
            Some(forms::apply_config(&ps.default_config(svc), &fields).map_err(err)?)
        }
        None => None,
    };
    let name = ps
        .create(svc, actor, requested, config)
        .await
        .map_err(err)?;
    // 8.1.2: an instant node's name is returned; a named node may get an empty result.
    let payload = requested.is_none().then(|| {
        wrap(
            NS_PUBSUB,
            Element::new("create", NS_PUBSUB).attr("node", name),
        )
    });
    Ok((payload, Vec::new()))
}

async fn subscribe(
    ps: &PubSub,
    svc: &ServiceId,
    actor: &Jid,
    act: &Element,
    pubsub: &Element,
) -> Answer {
    let node = node_attr(act)?;
    let jid = jid_attr(act)?;
    let options = match pubsub.get_child("options", NS_PUBSUB).and_then(form_in) {
        Some(x) => {
            let (_, fields) = forms::parse(x);
            if forms::form_type(&fields).is_some_and(|t| t != FORM_SUB_OPTIONS) {
                return Err(bad("options FORM_TYPE must be pubsub#subscribe_options"));
            }
            forms::apply_options(&fields).map_err(err)?
        }
        None => Default::default(),
    };
    let done = ps
        .subscribe(svc, actor, node, &jid, options)
        .await
        .map_err(err)?;
    let s = &done.subscription;
    let reply = Element::new("subscription", NS_PUBSUB)
        .attr("node", node)
        .attr("jid", s.jid.to_string())
        .attr("subid", s.subid.clone())
        .attr("subscription", s.state.as_str());
    Ok((Some(wrap(NS_PUBSUB, reply)), done.notifications))
}

async fn items(
    ps: &PubSub,
    svc: &ServiceId,
    actor: &Jid,
    act: &Element,
    pubsub: &Element,
) -> Answer {
    let node = node_attr(act)?;
    let ids: Vec<String> = act
        .children()
        .filter(|c| c.is("item", NS_PUBSUB))
        .filter_map(|i| i.get_attr("id").map(str::to_owned))
        .collect();
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
        let max = r.max.unwrap_or(ps.limits().max_page);
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
    let (page, truncated) = ps.items(svc, actor, node, selection).await.map_err(err)?;
    let mut list = Element::new("items", NS_PUBSUB).attr("node", node);
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
    if rsm_req.is_some() || truncated {
        let first = page
            .items
            .first()
            .map(|i| (i.id.as_str(), page.first_index));
        let last = page.items.last().map(|i| i.id.as_str());
        reply.push_child(rsm::answer(first, last, page.count));
    }
    Ok((Some(reply), Vec::new()))
}
