//! PEP through the server (XEP-0163 over XEP-0355 and XEP-0356): forwarded requests, privileged
//! notifications to explicit and implicit (`+notify`) recipients, last items on presence.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::warn;

use crate::component::{NS_COMPONENT, Outbox};
use crate::jid::{BareJid, Jid};
use crate::pep::Pep;
use crate::pep::delegation;
use crate::pep::privilege::wrap_notification;
use crate::pubsub::access::Action;
use crate::pubsub::model::{SendLastPublished, ServiceId};
use crate::pubsub::notify::{Event, Notification, Recipient};
use crate::xml::Element;

use super::errors::StanzaError;
use super::notify;
use super::pubsub::{NS_OWNER, NS_PUBSUB};
use super::stanza::{Iq, IqParseError, IqType};

use super::delivery::Sink;
use super::dispatch::Inner;

impl Inner {
    /// A client's pubsub IQ to an account, forwarded by its server (XEP-0355).
    pub(super) async fn handle_delegated(&self, pep: &Arc<Pep>, outer: Element, out: &Outbox) {
        let outer_id = outer.get_attr("id").unwrap_or_default().to_owned();
        let server = outer.get_attr("from").unwrap_or_default().to_owned();
        // The outer IQ is a request of the server's: it gets an answer whatever it carries.
        let refuse = |why: &str| {
            let err = StanzaError::bad_request().with_text(why);
            Element::new("iq", NS_COMPONENT)
                .attr("type", "error")
                .attr("id", outer_id.clone())
                .attr("to", server.clone())
                .child(err.to_element(NS_COMPONENT))
        };
        let Some(d) = delegation::unwrap(&outer) else {
            let _ = out.send(&refuse("not a delegated IQ")).await;
            return;
        };
        let iq = match Iq::parse(d.inner.clone()) {
            // XEP-0355 forwards requests; a result or an error inside is never answered itself.
            Ok(iq) if matches!(iq.kind, IqType::Result | IqType::Error) => {
                let _ = out.send(&refuse("a delegated IQ is a get or a set")).await;
                return;
            }
            Ok(iq) => iq,
            Err(IqParseError::Reply(iq, err)) => {
                let _ = out
                    .send(&d.wrap_answer(&pep.component, iq.error(&err)))
                    .await;
                return;
            }
            Err(IqParseError::Ignore(why)) => {
                let _ = out.send(&refuse(why)).await;
                return;
            }
        };
        // A server acts only for its own users: the account the request was addressed to must
        // be one of the forwarding server's (with several `[pep] servers`, one must not reach
        // another's accounts).
        let forwarder = Jid::parse(&server).ok();
        if forwarder.as_ref().map(Jid::domain) != Some(d.owner.domain()) {
            warn!(
                "refusing a request forwarded by {server} for {}: not one of its users",
                d.owner
            );
            let err =
                StanzaError::forbidden().with_text("a server forwards for its own users only");
            let _ = out
                .send(&d.wrap_answer(&pep.component, iq.error(&err)))
                .await;
            return;
        }
        let svc = if d.owner.node().is_some() && pep.is_local(&d.owner) {
            ServiceId::Pep(d.owner.clone())
        } else {
            // A pubsub IQ to the server domain itself: the host service answers it.
            ServiceId::Host
        };
        let started = std::time::Instant::now();
        let result = match iq.payload.as_ref() {
            Some(p) if p.name() == "pubsub" && matches!(p.ns(), NS_PUBSUB | NS_OWNER) => {
                super::pubsub::handle(&self.pubsub, &svc, &d.sender, &iq, p).await
            }
            _ => Err(StanzaError::service_unavailable()),
        };
        super::host::record(&iq, &result, started);
        let (inner_answer, notes) = match result {
            Ok((payload, notes)) => (iq.result(payload), notes),
            Err(e) => (iq.error(&e), Vec::new()),
        };
        if out
            .send(&d.wrap_answer(&pep.component, inner_answer))
            .await
            .is_err()
        {
            return;
        }
        match svc {
            ServiceId::Pep(_) => {
                self.send_pep_notifications(pep, &d.owner, &notes, out)
                    .await
            }
            ServiceId::Host => {
                self.send_notifications(&notes, out).await;
            }
        }
    }

    /// Sends PEP notifications as privileged messages from the account's bare JID (XEP-0356):
    /// to explicit subscribers, and to the online resources of the account and of its contacts
    /// whose caps carry `NODE+notify` (XEP-0163 section 4) when the node's access model lets them read.
    pub(super) async fn send_pep_notifications(
        &self,
        pep: &Arc<Pep>,
        owner: &BareJid,
        notes: &[Notification],
        out: &Outbox,
    ) {
        if notes.is_empty() {
            return;
        }
        let Some(granted) = pep.privileges.get(owner.domain()) else {
            warn!(
                "no privileges from {}: PEP notifications for {owner} dropped",
                owner.domain()
            );
            return;
        };
        if !granted.message_outgoing {
            return;
        }
        let owner_bare = owner.as_str();
        for n in notes {
            let mut recipients: Vec<Jid> = n.recipients.iter().map(|r| r.jid.clone()).collect();
            if n.event.carries_node_data() {
                recipients.extend(self.interested(pep, owner, &n.node).await);
            }
            let mut seen = HashSet::new();
            recipients.retain(|j| seen.insert(j.clone()));
            let mut body = String::with_capacity(256);
            notify::event_element(n, owner_bare).write_to(&mut body, crate::client::NS_CLIENT);
            let mut sink = Sink::new(out);
            let kind = notify::message_type(n);
            for r in recipients {
                let wrap = |b: &mut String| {
                    wrap_notification(b, &pep.component, &granted, (owner, &r), kind, &body)
                };
                crate::metrics::metrics().notifications.inc();
                if sink.push(wrap).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    }

    /// The account's and its contacts' resources that want notifications of `node` (XEP-0163
    /// section 4: contacts with a presence subscription, caps with `node+notify`), each passing
    /// the same authorization as a read of the node now: outcasts, and contacts a whitelist or a
    /// roster group leaves out, get nothing.
    pub(super) async fn interested(&self, pep: &Arc<Pep>, owner: &BareJid, node: &str) -> Vec<Jid> {
        let mut candidates = pep.notify_resources(owner.as_str(), node);
        let svc = ServiceId::Pep(owner.clone());
        let Ok(state) = self.pubsub.node(&svc, node).await else {
            // Deleted: only the account itself hears of it.
            return candidates;
        };
        let roster = pep.roster_of(owner).await;
        for (contact, item) in roster.iter() {
            if item.subscription_from() {
                candidates.extend(pep.notify_resources(contact, node));
            }
        }
        let candidates = candidates
            .into_iter()
            .map(|jid| Recipient {
                jid,
                subids: Vec::new(),
            })
            .collect();
        self.pubsub
            .readers(&svc, &state, candidates)
            .await
            .into_iter()
            .map(|r| r.jid)
            .collect()
    }

    /// A resource came online (or changed caps): send it the last items of the PEP nodes it
    /// wants (`+notify`) of its own account and of the accounts whose presence it receives
    /// (send_last_published_item = on_sub_and_presence, XEP-0163 section 4.3).
    pub(super) async fn on_available(&self, pep: &Pep, who: Jid, out: &Outbox) {
        let Some(granted) = pep.privileges.get(who.domain()) else {
            return;
        };
        if !granted.message_outgoing {
            return;
        }
        let caps = pep
            .presence
            .resources(&who.to_bare().to_string())
            .into_iter()
            .find(|(j, _)| *j == who)
            .and_then(|(_, c)| c);
        let features = pep.features_of(&who, &caps).await;
        if !features.iter().any(|f| f.ends_with("+notify")) {
            return;
        }
        let mut owners = vec![who.to_bare()];
        let roster = pep.roster_of(&who).await;
        for (contact, item) in roster.iter() {
            if item.subscription_to()
                && let Ok(j) = BareJid::parse(contact)
                && pep.is_local(&j)
            {
                owners.push(j);
            }
        }
        let mut sink = Sink::new(out);
        for owner in owners {
            let svc = ServiceId::Pep(owner.clone());
            let Ok(names) = self.pubsub.node_names(&svc, None, 1000).await else {
                continue;
            };
            for node in names {
                if !features.contains(&format!("{node}+notify")) {
                    continue;
                }
                let Ok(state) = self.pubsub.node(&svc, &node).await else {
                    continue;
                };
                if state.record.config.send_last_published_item
                    != SendLastPublished::OnSubAndPresence
                {
                    continue;
                }
                if self
                    .pubsub
                    .authorize_in(&svc, &state, &who, Action::RetrieveItems)
                    .await
                    .is_err()
                {
                    continue;
                }
                let Ok(Some(item)) = self.pubsub.last_item(&svc, &node).await else {
                    continue;
                };
                let n = Notification {
                    service: svc.clone(),
                    node: node.clone(),
                    recipients: Vec::new(),
                    event: Event::Items {
                        items: vec![item],
                        payloads: state.record.config.deliver_payloads,
                    },
                    kind: state.record.config.notification_type,
                    only_available: false,
                };
                let mut body = String::new();
                notify::event_element(&n, "").write_to(&mut body, crate::client::NS_CLIENT);
                let kind = notify::message_type(&n);
                let wrap = |b: &mut String| {
                    wrap_notification(b, &pep.component, &granted, (&owner, &who), kind, &body)
                };
                crate::metrics::metrics().notifications.inc();
                if sink.push(wrap).await.is_err() {
                    return;
                }
            }
        }
        let _ = sink.flush().await;
    }
}
