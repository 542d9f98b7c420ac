//! The host service's requests: XEP-0060 IQs, XEP-0030 discovery, ping and version, and the
//! messages addressed to the service (approval forms, multicast bounces, privilege grants).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use crate::component::Outbox;
use crate::jid::Jid;
use crate::pep::delegation::{PEP_FEATURES, delegated_disco_node, is_delegation_ns};
use crate::pep::privilege::{NS_PRIVILEGE_1, NS_PRIVILEGE_2};
use crate::pubsub::model::{ServiceId, SubscriptionState};
use crate::pubsub::notify::Notification;
use crate::pubsub::{NodeName, Reply, Request};
use crate::xml::Element;

use super::adhoc::NS_COMMANDS;
use super::errors::{StanzaError, from_pubsub};
use super::forms::{self, FORM_SUB_AUTH, NS_DATA};
use super::pubsub::{NS_OWNER, NS_PUBSUB};
use super::rsm::{self, NS_RSM};
use super::stanza::{Iq, IqParseError, IqType};
use super::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, disco};

use super::dispatch::Inner;

/// The operation an IQ asks for, as `metrics::OPS` names it.
pub(super) fn op_of(iq: &Iq) -> &'static str {
    match iq.payload.as_ref() {
        Some(p) if p.name() == "pubsub" && matches!(p.ns(), NS_PUBSUB | NS_OWNER) => {
            super::pubsub::op_name(iq.kind, p)
        }
        Some(p) if p.is("query", NS_DISCO_INFO) => "disco_info",
        Some(p) if p.is("query", NS_DISCO_ITEMS) => "disco_items",
        Some(p) if p.is("command", NS_COMMANDS) => "command",
        _ => "other",
    }
}

/// Counts an answered request (metrics: by operation and outcome, and its duration).
pub(super) fn record<T>(iq: &Iq, answered: &Result<T, StanzaError>, started: std::time::Instant) {
    crate::metrics::metrics().request(
        op_of(iq),
        answered.as_ref().err().map(|e| e.condition),
        started.elapsed(),
    );
}

impl Inner {
    pub(super) async fn handle_iq(self: &Arc<Self>, stanza: Element, out: &Outbox) {
        let iq = match Iq::parse(stanza) {
            Ok(iq) => iq,
            Err(IqParseError::Ignore(why)) => {
                debug!("ignoring iq: {why}");
                return;
            }
            Err(IqParseError::Reply(iq, err)) => {
                let _ = out.send(&iq.error(&err)).await;
                return;
            }
        };
        if matches!(iq.kind, IqType::Result | IqType::Error) {
            // Answers to our own requests are taken earlier; errors are never answered.
            return;
        }
        let started = std::time::Instant::now();
        let answered = self.answer(&iq).await;
        record(&iq, &answered, started);
        let (reply, notifications) = match answered {
            Ok((payload, notes)) => (iq.result(payload), notes),
            Err(err) => (iq.error(&err), Vec::new()),
        };
        let Some(mc) = self.multicast.clone().filter(|_| !notifications.is_empty()) else {
            // Notifications before the answer, on the one outbound stream: once the publisher
            // has its acknowledgement, the server has every notification of it, even if this
            // process is killed right after (XEP-0060 7.1.2.1 is owed for an acknowledged item).
            self.send_notifications(&notifications, out).await;
            if out.send(&reply).await.is_err() {
                warn!("dropping the answer to iq {}: shutting down", iq.id);
            }
            return;
        };
        // Notifications first; when some went to a multicast service other than our own
        // server's domain (`Multicast::needs_barrier`), the answer waits until that service has
        // fanned them out (an IQ it answers after them, in order): the
        // publisher is paced by the server's delivery, as with a built-in service, instead of
        // filling the service's queue. The wait runs in its own task, counted as in flight so
        // that a graceful shutdown still sends the answer.
        let mut services = self.send_notifications(&notifications, out).await;
        services.retain(|s| mc.needs_barrier(s));
        let barriers = !services.is_empty();
        let (me, out, id) = (self.clone(), out.clone(), iq.id.clone());
        let answer = async move {
            for service in services {
                mc.barrier(&out, &service).await;
            }
            if out.send(&reply).await.is_err() {
                warn!("dropping the answer to iq {id}: shutting down");
            }
        };
        if barriers {
            me.inflight.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                answer.await;
                me.finished();
            });
        } else {
            answer.await;
        }
    }

    /// The payload of the result (and notifications), or the error, for an IQ get/set.
    pub(super) async fn answer(
        &self,
        iq: &Iq,
    ) -> Result<(Option<Element>, Vec<Notification>), StanzaError> {
        let to_us = iq.to.as_ref().is_some_and(|to| {
            to.node().is_none() && to.resource().is_none() && to.domain() == self.domain.domain()
        });
        if !to_us {
            // Not an entity we host (e.g. user@pubsub.example.org): RFC 6120 8.3.3.19.
            return Err(StanzaError::service_unavailable());
        }
        let Some(actor) = iq.from.clone() else {
            return Err(StanzaError::bad_request().with_text("the request has no sender"));
        };
        let payload = iq.payload.as_ref().ok_or_else(StanzaError::bad_request)?;
        let svc = ServiceId::Host;
        // An empty node attribute names no node (the service itself).
        let node = payload.get_attr("node").filter(|n| !n.is_empty());
        match (iq.kind, payload.name(), payload.ns()) {
            (IqType::Get, "query", NS_DISCO_INFO) => {
                Ok((Some(self.disco_info(&svc, &actor, node).await?), Vec::new()))
            }
            (IqType::Get, "query", NS_DISCO_ITEMS) => Ok((
                Some(self.disco_items(&svc, &actor, node, payload).await?),
                Vec::new(),
            )),
            (IqType::Get, "ping", NS_PING) => Ok((None, Vec::new())),
            (IqType::Get, "query", NS_VERSION) => Ok((
                Some(
                    Element::new("query", NS_VERSION)
                        .child(Element::new("name", NS_VERSION).text("stratus"))
                        .child(Element::new("version", NS_VERSION).text(env!("CARGO_PKG_VERSION"))),
                ),
                Vec::new(),
            )),
            (IqType::Set, "command", NS_COMMANDS) => self.command(&actor, payload).await,
            (_, "pubsub", NS_PUBSUB | NS_OWNER) => {
                super::pubsub::handle(&self.pubsub, &svc, &actor, iq, payload).await
            }
            _ => Err(StanzaError::service_unavailable()),
        }
    }

    pub(super) async fn disco_info(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: Option<&str>,
    ) -> Result<Element, StanzaError> {
        match node {
            None => Ok(disco::info_query(
                None,
                &[("pubsub", "service", "stratus")],
                &disco::service_features(),
                Vec::new(),
            )),
            // XEP-0355 section 4: what the delegated namespace offers, for the server's disco
            // (private XML storage and the XEP-0402 compatibility it brings, on the account).
            Some(n)
                if delegated_disco_node(n) == Some(super::private::NS_PRIVATE)
                    && self.pep.as_ref().is_some_and(|p| p.is_server(actor)) =>
            {
                Ok(disco::info_query(
                    Some(n),
                    &[],
                    super::private::PRIVATE_FEATURES,
                    Vec::new(),
                ))
            }
            Some(n)
                if delegated_disco_node(n).is_some()
                    && self.pep.as_ref().is_some_and(|p| p.is_server(actor)) =>
            {
                Ok(disco::info_query(
                    Some(n),
                    &[("pubsub", "pep", "")],
                    PEP_FEATURES,
                    Vec::new(),
                ))
            }
            // XEP-0050 2.2, 2.3: the commands node and the commands this requester may run.
            Some(n) if let Some(info) = self.command_info(actor, n) => Ok(info),
            Some(name) => {
                // XEP-0060 5.3/5.4: a leaf node with its meta-data, for whom may read it; to
                // anyone else the node is as absent as one that does not exist (decided by the
                // core).
                let node = NodeName::new(name).map_err(|e| from_pubsub(&e))?;
                let Reply::NodeInfo {
                    record,
                    owners,
                    subscriptions,
                    ..
                } = self.execute(svc, actor, Request::NodeInfo { node }).await?
                else {
                    return Err(StanzaError::internal_server_error());
                };
                let owners: Vec<String> = owners.iter().map(|o| o.to_string()).collect();
                let form = forms::meta_data_form(&record, &owners, subscriptions);
                Ok(disco::info_query(
                    Some(name),
                    &[("pubsub", "leaf", "")],
                    &[NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PUBSUB],
                    vec![form],
                ))
            }
        }
    }

    /// A discovery request run by the core, its error in the one error table.
    async fn execute(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        request: Request,
    ) -> Result<Reply, StanzaError> {
        self.pubsub
            .execute(svc, actor, request)
            .await
            .map(|o| o.reply)
            .map_err(|e| from_pubsub(&e))
    }

    pub(super) async fn disco_items(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: Option<&str>,
        query: &Element,
    ) -> Result<Element, StanzaError> {
        let rsm_req = match query.get_child("set", NS_RSM) {
            Some(set) => {
                Some(rsm::parse(set).map_err(|e| StanzaError::bad_request().with_text(e))?)
            }
            None => None,
        };
        let max = rsm_req
            .as_ref()
            .and_then(|r| r.max)
            .unwrap_or(self.pubsub.limits().max_page);
        let jid = self.domain.to_string();
        match node {
            None => {
                // XEP-0060 5.2: the nodes, paged by name with RSM.
                let after = rsm_req.as_ref().and_then(|r| r.after.clone());
                let Reply::Nodes(names) = self
                    .execute(svc, actor, Request::Nodes { after, max })
                    .await?
                else {
                    return Err(StanzaError::internal_server_error());
                };
                let items = names.iter().map(|n| {
                    Element::new("item", NS_DISCO_ITEMS)
                        .attr("jid", jid.clone())
                        .attr("node", n.clone())
                });
                let mut q = disco::items_query(None, items.collect());
                if rsm_req.is_some() {
                    q.push_child(rsm::answer(
                        names.first().map(|f| (f.as_str(), None)),
                        names.last().map(String::as_str),
                        names.len() as u64,
                    ));
                }
                Ok(q)
            }
            Some(NS_COMMANDS) => Ok(self.command_items(actor)),
            Some(name) => {
                // XEP-0060 5.5: the items of a node, by id.
                let node = NodeName::new(name).map_err(|e| from_pubsub(&e))?;
                let Reply::ItemIds { ids, .. } = self
                    .execute(svc, actor, Request::ItemIds { node, max })
                    .await?
                else {
                    return Err(StanzaError::internal_server_error());
                };
                let items = ids.into_iter().map(|id| {
                    Element::new("item", NS_DISCO_ITEMS)
                        .attr("jid", jid.clone())
                        .attr("name", id)
                });
                Ok(disco::items_query(Some(name), items.collect()))
            }
        }
    }

    /// Messages to the service: privileges and delegations from servers, and owners answering a
    /// subscription approval form (XEP-0060 8.6.2).
    pub(super) async fn handle_message(&self, stanza: Element, out: &Outbox) {
        if stanza.get_attr("type") == Some("error") {
            self.multicast_bounced(&stanza, out).await;
            return;
        }
        let Some(actor) = stanza.get_attr("from").and_then(|f| Jid::parse(f).ok()) else {
            return;
        };
        if let Some(pep) = &self.pep
            && pep.is_server(&actor)
        {
            if let Some(p) = stanza.children().find(|c| {
                c.name() == "privilege" && matches!(c.ns(), NS_PRIVILEGE_1 | NS_PRIVILEGE_2)
            }) {
                pep.privileges.record(actor.domain(), p);
            }
            if let Some(d) = stanza
                .children()
                .find(|c| c.name() == "delegation" && is_delegation_ns(c.ns()))
            {
                let namespaces: Vec<&str> = d
                    .children()
                    .filter_map(|c| c.get_attr("namespace"))
                    .collect();
                tracing::info!("{actor} delegates {namespaces:?} ({})", d.ns());
                pep.record_delegation(actor.domain(), namespaces);
            }
            return;
        }
        let Some(x) = stanza.get_child("x", NS_DATA) else {
            return;
        };
        let (kind, fields) = forms::parse(x);
        if kind != "submit" || forms::form_type(&fields) != Some(FORM_SUB_AUTH) {
            return;
        }
        let get = |v: &str| fields.get(v).and_then(|x| x.first()).cloned();
        let (Some(node), Some(subscriber)) = (
            get("pubsub#node"),
            get("pubsub#subscriber_jid").and_then(|j| Jid::parse(&j).ok()),
        ) else {
            return;
        };
        let allow = matches!(get("pubsub#allow").as_deref(), Some("1") | Some("true"));
        let state = allow.then_some(SubscriptionState::Subscribed);
        match self
            .pubsub
            .set_node_subscriptions(
                &ServiceId::Host,
                &actor,
                &node,
                vec![(subscriber, state, get("pubsub#subid"))],
            )
            .await
        {
            Ok(notes) => {
                self.send_notifications(&notes, out).await;
            }
            Err(e) => debug!("approval from {actor} for {node} refused: {e}"),
        }
    }
}
