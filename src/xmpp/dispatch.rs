//! Routes each stanza addressed to the component to its handler and sends the answer and the
//! notifications it produced.

use std::sync::Arc;

use tracing::{debug, warn};

use crate::component::{Outbox, StanzaHandler};
use crate::jid::Jid;
use crate::pubsub::PubSub;
use crate::pubsub::model::{ServiceId, SubscriptionState};
use crate::pubsub::notify::Notification;
use crate::xml::Element;

use super::errors::{StanzaError, from_pubsub};
use super::forms::{self, FORM_SUB_AUTH, NS_DATA};
use super::pubsub::{NS_OWNER, NS_PUBSUB};
use super::rsm::{self, NS_RSM};
use super::stanza::{Iq, IqParseError, IqType};
use super::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, disco, notify};

/// The component's stanza handler.
pub struct Service {
    domain: Jid,
    pubsub: Arc<PubSub>,
}

impl Service {
    pub fn new(domain: &str, pubsub: Arc<PubSub>) -> Result<Service, crate::jid::JidError> {
        Ok(Service {
            domain: Jid::parse(domain)?,
            pubsub,
        })
    }

    async fn handle_iq(&self, stanza: Element, out: &Outbox) {
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
            // Answers to our own requests; errors are never answered (RFC 6120 8.3.1).
            return;
        }
        let (reply, notifications) = match self.answer(&iq).await {
            Ok((payload, notes)) => (iq.result(payload), notes),
            Err(err) => (iq.error(&err), Vec::new()),
        };
        if out.send(&reply).await.is_err() {
            warn!("dropping the answer to iq {}: shutting down", iq.id);
            return;
        }
        self.send_notifications(&notifications, out).await;
    }

    async fn send_notifications(&self, notifications: &[Notification], out: &Outbox) {
        let from = self.domain.to_string();
        for n in notifications {
            if n.recipients.is_empty() {
                continue;
            }
            if out.send_raw(notify::render(n, &from)).await.is_err() {
                warn!("dropping notifications for node {}: shutting down", n.node);
            }
        }
    }

    /// The payload of the result (and notifications), or the error, for an IQ get/set.
    async fn answer(&self, iq: &Iq) -> Result<(Option<Element>, Vec<Notification>), StanzaError> {
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
        let node = payload.get_attr("node");
        match (iq.kind, payload.name(), payload.ns()) {
            (IqType::Get, "query", NS_DISCO_INFO) => {
                Ok((Some(self.disco_info(&svc, node).await?), Vec::new()))
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
            (_, "pubsub", NS_PUBSUB | NS_OWNER) => {
                super::pubsub::handle(&self.pubsub, &svc, &actor, iq, payload).await
            }
            _ => Err(StanzaError::service_unavailable()),
        }
    }

    async fn disco_info(
        &self,
        svc: &ServiceId,
        node: Option<&str>,
    ) -> Result<Element, StanzaError> {
        match node {
            None => Ok(disco::info_query(
                None,
                &[("pubsub", "service", "stratus")],
                &disco::service_features(),
                Vec::new(),
            )),
            Some(name) => {
                // XEP-0060 5.3/5.4: a leaf node with its meta-data.
                let state = self
                    .pubsub
                    .node(svc, name)
                    .await
                    .map_err(|e| from_pubsub(&e))?;
                let owners: Vec<String> = state.owners().iter().map(Jid::to_string).collect();
                let form = forms::meta_data_form(&state.record, &owners, state.subscriptions.len());
                Ok(disco::info_query(
                    Some(name),
                    &[("pubsub", "leaf", "")],
                    &[NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PUBSUB],
                    vec![form],
                ))
            }
        }
    }

    async fn disco_items(
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
                let after = rsm_req.as_ref().and_then(|r| r.after.as_deref());
                let names = self
                    .pubsub
                    .node_names(svc, after, max)
                    .await
                    .map_err(|e| from_pubsub(&e))?;
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
            Some(name) => {
                // XEP-0060 5.5: the items of a node, by id.
                let page = self
                    .pubsub
                    .items(
                        svc,
                        actor,
                        name,
                        crate::pubsub::ItemSelection::Newest(Some(max)),
                    )
                    .await
                    .map_err(|e| from_pubsub(&e))?;
                let items = page.items.iter().map(|i| {
                    Element::new("item", NS_DISCO_ITEMS)
                        .attr("jid", jid.clone())
                        .attr("name", i.id.clone())
                });
                Ok(disco::items_query(Some(name), items.collect()))
            }
        }
    }

    /// Messages to the service: owners answering a subscription approval form (XEP-0060 8.6.2).
    async fn handle_message(&self, stanza: Element, out: &Outbox) {
        if stanza.get_attr("type") == Some("error") {
            return;
        }
        let Some(actor) = stanza.get_attr("from").and_then(|f| Jid::parse(f).ok()) else {
            return;
        };
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
            Ok(notes) => self.send_notifications(&notes, out).await,
            Err(e) => debug!("approval from {actor} for {node} refused: {e}"),
        }
    }
}

impl StanzaHandler for Service {
    async fn handle(&self, stanza: Element, out: &Outbox) {
        tracing::trace!("received {stanza}");
        match stanza.name() {
            "iq" => self.handle_iq(stanza, out).await,
            "message" => self.handle_message(stanza, out).await,
            // Presences to the host service carry nothing we act on; errors are never answered.
            other => debug!("ignoring {other} from {:?}", stanza.get_attr("from")),
        }
    }
}
