//! PEP through the server (XEP-0163 over XEP-0355 and XEP-0356): forwarded requests in,
//! privileged notifications out. Who gets what is the core's PEP policy (`pubsub/pep.rs`).

use std::sync::Arc;

use tracing::warn;

use crate::component::{NS_COMPONENT, Outbox};
use crate::jid::{BareJid, Jid};
use crate::pep::Pep;
use crate::pep::delegation;
use crate::pep::privilege::wrap_notification;
use crate::pubsub::model::ServiceId;
use crate::pubsub::notify::Notification;
use crate::xml::Element;

use super::errors::StanzaError;
use super::notify;
use super::private;
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
        let result = match (iq.payload.as_ref(), &svc) {
            (Some(p), _) if p.name() == "pubsub" && matches!(p.ns(), NS_PUBSUB | NS_OWNER) => {
                let mut result = super::pubsub::handle(&self.pubsub, &svc, &d.sender, &iq, p).await;
                // XEP-0402 section 5.3, where the server left private storage to us too.
                if let (Ok((_, notes)), ServiceId::Pep(owner)) = (&mut result, &svc)
                    && pep.delegates(owner.domain(), private::NS_PRIVATE)
                    && let Some(follow) = private::follow(iq.kind, p)
                {
                    notes.extend(self.follow_bookmarks(owner, follow).await);
                }
                result
            }
            (Some(p), ServiceId::Pep(owner)) if p.is("query", private::NS_PRIVATE) => {
                self.handle_private(owner, &d.sender, &iq, p).await
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

    /// Sends PEP notifications as privileged messages from the account's bare JID (XEP-0356) to
    /// their recipients: explicit subscribers and the PEP policy's implicit `+notify` contacts,
    /// each already passed by the core's read check.
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
        let mut sink = Sink::new(out);
        for n in notes {
            let mut body = String::with_capacity(256);
            notify::event_element(n, owner_bare).write_to(&mut body, crate::client::NS_CLIENT);
            let kind = notify::message_type(n);
            for r in &n.recipients {
                sink.write(|b: &mut String| {
                    wrap_notification(b, &pep.component, &granted, (owner, &r.jid), kind, &body)
                });
                crate::metrics::metrics().notifications.inc();
                if sink.flush_if_full().await.is_err() {
                    return;
                }
            }
        }
        let _ = sink.flush().await;
    }

    /// A resource came online (or changed caps): the PEP policy's last items for it
    /// (XEP-0163 section 4.3.1), sent like any PEP notification.
    pub(super) async fn on_available(&self, who: Jid, out: &Outbox) {
        let notes = self.pubsub.last_items_on_presence(&who).await;
        self.send_any(&notes, out).await;
    }
}
