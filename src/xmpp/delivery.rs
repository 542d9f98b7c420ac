//! Writing notifications: one serialized payload per notification, multicast (XEP-0033) where
//! a recipient's server offers it, in batches of bounded size.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{debug, warn};

use crate::component::Outbox;
use crate::component::outbox::OutboxClosed;
use crate::pubsub::model::ServiceId;
use crate::pubsub::notify::{Notification, Recipient};
use crate::xml::Element;

use super::multicast::{self};
use super::notify;

use super::dispatch::Inner;

/// Bytes of stanzas gathered before they are queued: a fan-out to many recipients never builds
/// one string of recipients x payload, and the outbound queue's byte bound applies as it goes.
pub(super) const SINK_BYTES: usize = 64 * 1024;

/// Gathers serialized stanzas and queues them in batches of about [`SINK_BYTES`].
pub(super) struct Sink<'a> {
    out: &'a Outbox,
    buf: String,
}

impl<'a> Sink<'a> {
    pub(super) fn new(out: &'a Outbox) -> Sink<'a> {
        Sink {
            out,
            buf: String::new(),
        }
    }

    /// Appends what `write` writes; queues the batch once it is large enough.
    pub(super) async fn push(
        &mut self,
        write: impl FnOnce(&mut String),
    ) -> Result<(), OutboxClosed> {
        self.write(write);
        self.flush_if_full().await
    }

    /// Appends one stanza; [`Self::flush_if_full`] sends the batch once it is large enough. (Two
    /// steps, so that a writer borrowing short-lived data is not held across an await.)
    pub(super) fn write(&mut self, write: impl FnOnce(&mut String)) {
        write(&mut self.buf);
        crate::metrics::metrics().stanzas_out.inc();
    }

    pub(super) async fn flush_if_full(&mut self) -> Result<(), OutboxClosed> {
        if self.buf.len() >= SINK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> Result<(), OutboxClosed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.out.send_raw(std::mem::take(&mut self.buf)).await
    }
}

impl Inner {
    /// `pubsub#item_expire`: every half second, deletes the items due and sends their retract
    /// notifications (host and PEP alike). The outbox outlives connections: what is sent while
    /// the stream is down waits in it.
    pub(super) async fn sweep_expired(self: Arc<Self>, out: Outbox) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = crate::pubsub::model::now_ms();
            if self.pubsub.next_expiry_ms().is_none_or(|at| at > now) {
                continue;
            }
            let notes = self.pubsub.expire_due(now).await;
            self.send_any(&notes, &out).await;
        }
    }

    /// Sends notifications of either service: the host's directly, a PEP account's through the
    /// server's message privilege.
    pub(super) async fn send_any(&self, notes: &[Notification], out: &Outbox) {
        for n in notes {
            match &n.service {
                ServiceId::Host => {
                    self.send_notifications(std::slice::from_ref(n), out).await;
                }
                ServiceId::Pep(owner) => {
                    if let Some(pep) = &self.pep {
                        self.send_pep_notifications(pep, owner, std::slice::from_ref(n), out)
                            .await;
                    }
                }
            }
        }
    }

    /// Sends the notifications; returns the multicast services some of them went through.
    pub(super) async fn send_notifications(
        &self,
        notifications: &[Notification],
        out: &Outbox,
    ) -> Vec<String> {
        let from = self.domain.to_string();
        let mut services: Vec<String> = Vec::new();
        let mut sink = Sink::new(out);
        for n in notifications {
            let filtered;
            let n = match &self.pep {
                Some(pep) if n.only_available => {
                    // pubsub#presence_based_delivery: drop recipients the presence privilege
                    // shows offline; for JIDs whose presence we cannot see, deliver.
                    let mut copy = n.clone();
                    copy.recipients.retain(|r| !pep.known_offline(&r.jid));
                    filtered = copy;
                    &filtered
                }
                _ => n,
            };
            if n.recipients.is_empty() {
                continue;
            }
            if self
                .render(n, &from, out, &mut services, &mut sink)
                .await
                .is_err()
            {
                warn!("dropping notifications for node {}: shutting down", n.node);
                return services;
            }
        }
        let _ = sink.flush().await;
        services
    }

    /// Writes the messages of one notification: through the recipients' multicast services where
    /// there are several recipients on one server that offers one (XEP-0033), else one per
    /// recipient. The payload is serialized once; the messages go out in batches of bounded size.
    pub(super) async fn render(
        &self,
        n: &Notification,
        from: &str,
        out: &Outbox,
        services: &mut Vec<String>,
        sink: &mut Sink<'_>,
    ) -> Result<(), OutboxClosed> {
        let body = notify::Body::of(n);
        let Some(mc) = self.multicast.as_ref().filter(|_| n.recipients.len() > 1) else {
            crate::metrics::metrics()
                .notifications
                .inc_by(n.recipients.len() as u64);
            for r in &n.recipients {
                sink.push(|buf| notify::render_one(&body, from, r, buf))
                    .await?;
            }
            return Ok(());
        };
        let mut one_by_one: Vec<&Recipient> = Vec::new();
        let mut by_domain: HashMap<&str, Vec<&Recipient>> = HashMap::new();
        for r in &n.recipients {
            if r.subids.len() > 1 {
                // SHIM headers differ per recipient (XEP-0060 12.3): not one shared stanza.
                one_by_one.push(r);
            } else {
                by_domain.entry(r.jid.domain()).or_default().push(r);
            }
        }
        for (domain, rs) in by_domain {
            let service = if rs.len() > 1 {
                mc.service_for(domain, out)
            } else {
                None
            };
            match service {
                Some((service, limit)) => {
                    if !services.contains(&service) {
                        services.push(service.clone());
                    }
                    for chunk in rs.chunks(limit) {
                        if chunk.len() == 1 {
                            one_by_one.push(chunk[0]);
                        } else {
                            debug!(
                                "notification of node {} to {} subscribers at {domain} through {service}",
                                n.node,
                                chunk.len()
                            );
                            let m = crate::metrics::metrics();
                            m.notifications.inc_by(chunk.len() as u64);
                            m.notifications_multicast.inc_by(chunk.len() as u64);
                            // Kept until it can no longer bounce: a refusal loses nothing.
                            let seq = mc.retain(
                                &service,
                                body.kind,
                                &body.xml,
                                chunk.iter().map(|r| r.jid.clone()),
                            );
                            let id = notify::multicast_id(body.kind, seq);
                            sink.push(|buf| {
                                notify::render_multicast_into(
                                    &body,
                                    from,
                                    (&service, &id),
                                    chunk,
                                    buf,
                                )
                            })
                            .await?;
                        }
                    }
                }
                None => one_by_one.extend(rs),
            }
        }
        crate::metrics::metrics()
            .notifications
            .inc_by(one_by_one.len() as u64);
        for r in one_by_one {
            sink.push(|buf| notify::render_one(&body, from, r, buf))
                .await?;
        }
        Ok(())
    }

    /// A multicast service refused one of our notifications (XEP-0033 section 8): resend it to
    /// each address it was meant for, and stop using that service.
    pub(super) async fn multicast_bounced(&self, stanza: &Element, out: &Outbox) {
        let (Some(mc), Some(service)) = (&self.multicast, stanza.get_attr("from")) else {
            return;
        };
        let Some(refusal) = multicast::refusal(stanza, mc, service) else {
            return;
        };
        crate::metrics::metrics().multicast_refusals.inc();
        if refusal.whole {
            mc.disable(service, &refusal.why);
        } else {
            debug!(
                "multicast service {service} refused {} address(es) ({}): sent one by one",
                refusal.to.len(),
                refusal.why
            );
        }
        if !refusal.to.is_empty() {
            let _ = out
                .send_raw(multicast::resend(&refusal, self.domain.as_str()))
                .await;
        }
    }
}
