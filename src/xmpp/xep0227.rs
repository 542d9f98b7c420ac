//! XEP-0227 (Portable Import/Export Format) for users' PEP data: `stratus export` writes and
//! `stratus import` reads what
//! Prosody's mod_storage_xep0227 (prosody-migrator) writes, per `<user/>`:
//!
//! - `<pubsub xmlns='…pubsub#owner'>` with `<configure node>` (a submitted `pubsub#node_config`
//!   form; empty fields mean the default), `<affiliations node>` and `<subscriptions node>`;
//! - `<pubsub xmlns='…pubsub'>` with `<items node>`, items oldest first.
//!
//! Everything goes through the core as requests of the account itself, so what is loaded obeys
//! the same limits and rules as what clients publish; running an import twice leaves the same
//! nodes, configurations, affiliations and items (configure is a replace, items replace items of
//! the same id).

use std::collections::BTreeMap;

use crate::jid::{BareJid, Jid};
use crate::pubsub::command::NewItem;
use crate::pubsub::model::{Affiliation, ServiceId, SubscriptionState};
use crate::pubsub::{ItemId, NodeName, PubSub, PubSubError, Request};
use crate::storage::{ItemQuery, Store};
use crate::xml::{Element, Limits, Node, parse_element};

use super::forms::{self, NS_DATA};
use super::pubsub::{NS_OWNER, NS_PUBSUB};

pub const NS_PIE: &str = "urn:xmpp:pie:0";

/// Services, node names and items read per store request during an export.
const EXPORT_PAGE: usize = 500;

/// Every PEP node of the store as one XEP-0227 document, with what it holds; the host service's
/// nodes are not users' data and stay out.
pub async fn export(store: &dyn Store) -> Result<(String, Report), String> {
    let e = |e: crate::storage::StoreError| e.to_string();
    let mut report = Report::default();
    let mut hosts: BTreeMap<String, Element> = BTreeMap::new();
    let mut after: Option<ServiceId> = None;
    loop {
        let services = store
            .services(after.as_ref(), EXPORT_PAGE)
            .await
            .map_err(e)?;
        let Some(last) = services.last().cloned() else {
            break;
        };
        for svc in services {
            let ServiceId::Pep(account) = &svc else {
                continue;
            };
            let Some(name) = account.node() else {
                continue;
            };
            let user = export_user(store, &svc, name, &mut report)
                .await
                .map_err(e)?;
            hosts
                .entry(account.domain().to_owned())
                .or_insert_with(|| Element::new("host", NS_PIE).attr("jid", account.domain()))
                .push_child(user);
            report.users += 1;
        }
        after = Some(last);
    }
    let doc = Element::new("server-data", NS_PIE).children_from(hosts.into_values());
    Ok((doc.to_xml(), report))
}

async fn export_user(
    store: &dyn Store,
    svc: &ServiceId,
    name: &str,
    report: &mut Report,
) -> crate::storage::StoreResult<Element> {
    let mut owner = Element::new("pubsub", NS_OWNER);
    let mut items_el = Element::new("pubsub", NS_PUBSUB);
    let mut after: Option<String> = None;
    loop {
        let names = store.node_names(svc, after.as_deref(), EXPORT_PAGE).await?;
        let Some(last) = names.last().cloned() else {
            break;
        };
        for node in names {
            let Some(record) = store.load_node(svc, &node).await? else {
                continue;
            };
            owner.push_child(
                Element::new("configure", NS_OWNER)
                    .attr("node", node.as_str())
                    .child(forms::config_form(&record.config, "submit")),
            );
            let affs: Vec<Element> = store
                .affiliations(svc, &node)
                .await?
                .into_iter()
                .filter(|(_, a)| !matches!(a, Affiliation::Owner | Affiliation::None))
                .map(|(jid, a)| {
                    Element::new("affiliation", NS_OWNER)
                        .attr("jid", jid.to_string())
                        .attr("affiliation", a.as_str())
                })
                .collect();
            report.affiliations += affs.len();
            if !affs.is_empty() {
                owner.push_child(
                    Element::new("affiliations", NS_OWNER)
                        .attr("node", node.as_str())
                        .children_from(affs),
                );
            }
            let subs: Vec<Element> = store
                .subscriptions(svc, &node)
                .await?
                .into_iter()
                .filter(|s| s.state == SubscriptionState::Subscribed)
                .map(|s| {
                    Element::new("subscription", NS_OWNER)
                        .attr("jid", s.jid.to_string())
                        .attr("subscription", "subscribed")
                })
                .collect();
            report.subscriptions += subs.len();
            if !subs.is_empty() {
                owner.push_child(
                    Element::new("subscriptions", NS_OWNER)
                        .attr("node", node.as_str())
                        .children_from(subs),
                );
            }
            let mut list = Element::new("items", NS_PUBSUB).attr("node", node.as_str());
            let mut cursor: Option<String> = None;
            loop {
                let page = store
                    .items(svc, &node, ItemQuery::After(cursor.clone(), EXPORT_PAGE))
                    .await?;
                let Some(last) = page.items.last() else {
                    break;
                };
                cursor = Some(last.id.clone());
                for item in &page.items {
                    let mut el = Element::new("item", NS_PUBSUB).attr("id", item.id.clone());
                    if !item.payload.is_empty() {
                        el.push_node(Node::Raw(item.payload.clone()));
                    }
                    list.push_child(el);
                    report.items += 1;
                }
                if page.items.len() < EXPORT_PAGE {
                    break;
                }
            }
            items_el.push_child(list);
            report.nodes += 1;
        }
        after = Some(last);
    }
    Ok(Element::new("user", NS_PIE)
        .attr("name", name)
        .child(owner)
        .child(items_el))
}

/// Items published in one request during an import.
const ITEMS_PER_PUBLISH: usize = 64;

/// What an import loaded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub users: usize,
    pub nodes: usize,
    pub items: usize,
    pub affiliations: usize,
    pub subscriptions: usize,
    /// Nodes or items refused, with why (the rest is loaded).
    pub refused: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} users, {} nodes, {} items, {} affiliations, {} subscriptions",
            self.users, self.nodes, self.items, self.affiliations, self.subscriptions
        )?;
        if !self.refused.is_empty() {
            write!(f, "; {} refused:", self.refused.len())?;
            for r in &self.refused {
                write!(f, "\n  {r}")?;
            }
        }
        Ok(())
    }
}

/// One node of one account, as the file has it.
#[derive(Default)]
struct NodeData<'a> {
    configure: Option<&'a Element>,
    affiliations: Vec<(&'a str, &'a str)>,
    subscriptions: Vec<&'a str>,
    items: Vec<&'a Element>,
}

/// Limits for reading an export: one file holds a whole server's users.
fn file_limits(len: usize) -> Limits {
    Limits {
        max_stanza_bytes: len.max(1),
        ..Limits::default()
    }
}

/// Loads every user's PEP nodes of a XEP-0227 document into `ps`.
pub async fn import(ps: &PubSub, xml: &str) -> Result<Report, String> {
    let doc = parse_element(xml, file_limits(xml.len())).map_err(|e| format!("not XML: {e}"))?;
    if !doc.is("server-data", NS_PIE) {
        return Err(format!(
            "not a XEP-0227 document: the root is <{}/> in {}",
            doc.name(),
            doc.ns()
        ));
    }
    let mut report = Report::default();
    for host in doc.children().filter(|h| h.is("host", NS_PIE)) {
        let Some(domain) = host.get_attr("jid") else {
            continue;
        };
        for user in host.children().filter(|u| u.is("user", NS_PIE)) {
            let Some(name) = user.get_attr("name") else {
                continue;
            };
            let account = BareJid::parse(&format!("{name}@{domain}"))
                .map_err(|e| format!("{name}@{domain}: {e}"))?;
            import_user(ps, &account, user, &mut report).await?;
            report.users += 1;
        }
    }
    Ok(report)
}

async fn import_user(
    ps: &PubSub,
    account: &BareJid,
    user: &Element,
    report: &mut Report,
) -> Result<(), String> {
    let mut nodes: BTreeMap<&str, NodeData> = BTreeMap::new();
    for owner in user.children().filter(|p| p.is("pubsub", NS_OWNER)) {
        for el in owner.children() {
            let Some(node) = el.get_attr("node") else {
                continue;
            };
            let data = nodes.entry(node).or_default();
            match el.name() {
                "configure" => data.configure = el.get_child("x", NS_DATA),
                "affiliations" => data.affiliations.extend(
                    el.children()
                        .filter(|a| a.name() == "affiliation")
                        .filter_map(|a| Some((a.get_attr("jid")?, a.get_attr("affiliation")?))),
                ),
                "subscriptions" => data.subscriptions.extend(
                    el.children()
                        .filter(|s| s.name() == "subscription")
                        // Prosody 0.12 writes the state as `subscribed='subscribed'`.
                        .filter(|s| {
                            s.get_attr("subscription").or(s.get_attr("subscribed"))
                                == Some("subscribed")
                        })
                        .filter_map(|s| s.get_attr("jid")),
                ),
                _ => {}
            }
        }
    }
    for items in user.children().filter(|p| p.is("pubsub", NS_PUBSUB)) {
        for el in items.children().filter(|i| i.name() == "items") {
            if let Some(node) = el.get_attr("node") {
                nodes
                    .entry(node)
                    .or_default()
                    .items
                    .extend(el.children().filter(|i| i.name() == "item"));
            }
        }
    }
    let svc = ServiceId::Pep(account.clone());
    let actor: Jid = account.clone().into();
    for (name, data) in nodes {
        let where_ = format!("{account} node {name}");
        match import_node(ps, &svc, &actor, name, &data, report).await {
            Ok(()) => report.nodes += 1,
            Err(e) => report.refused.push(format!("{where_}: {e}")),
        }
    }
    Ok(())
}

async fn import_node(
    ps: &PubSub,
    svc: &ServiceId,
    actor: &Jid,
    name: &str,
    data: &NodeData<'_>,
    report: &mut Report,
) -> Result<(), PubSubError> {
    let node = NodeName::new(name)?;
    // Empty fields are Prosody's "as the default": left out, the PEP defaults apply.
    let patch = match data.configure {
        Some(x) => {
            let (_, mut fields) = forms::parse(x);
            fields.retain(|_, v| v.iter().any(|s| !s.is_empty()));
            Some(forms::config_patch(&fields)?)
        }
        None => None,
    };
    let created = ps
        .execute(
            svc,
            actor,
            Request::Create {
                node: Some(node.clone()),
                config: patch.clone(),
            },
        )
        .await;
    match created {
        Ok(_) => {}
        // Imported before: the configuration in the file wins again.
        Err(PubSubError::NodeExists) => {
            if patch.is_some() {
                ps.execute(
                    svc,
                    actor,
                    Request::Configure {
                        node: node.clone(),
                        patch,
                    },
                )
                .await?;
            }
        }
        Err(e) => return Err(e),
    }
    let mut changes = Vec::new();
    for (jid, aff) in &data.affiliations {
        let (Ok(jid), Some(aff)) = (BareJid::parse(jid), Affiliation::parse(aff)) else {
            continue;
        };
        if jid.as_str() != actor.bare_str() {
            changes.push((jid, aff));
        }
    }
    if !changes.is_empty() {
        report.affiliations += changes.len();
        ps.execute(
            svc,
            actor,
            Request::SetNodeAffiliations {
                node: node.clone(),
                changes,
            },
        )
        .await?;
    }
    let subs: Vec<_> = data
        .subscriptions
        .iter()
        .filter_map(|j| Jid::parse(j).ok())
        .map(|j| (j, Some(SubscriptionState::Subscribed), None))
        .collect();
    if !subs.is_empty() {
        report.subscriptions += subs.len();
        ps.execute(
            svc,
            actor,
            Request::SetNodeSubscriptions {
                node: node.clone(),
                changes: subs,
            },
        )
        .await?;
    }
    let mut items = Vec::with_capacity(data.items.len());
    for item in &data.items {
        let id = item.get_attr("id").map(ItemId::new).transpose()?;
        items.push(NewItem {
            id,
            payload: item
                .children()
                .next()
                .map(Element::to_xml)
                .unwrap_or_default(),
        });
    }
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(ITEMS_PER_PUBLISH));
        let chunk = std::mem::replace(&mut items, rest);
        let n = chunk.len();
        ps.execute(
            svc,
            actor,
            Request::Publish {
                node: node.clone(),
                items: chunk,
                options: None,
            },
        )
        .await?;
        report.items += n;
    }
    Ok(())
}
