//! Routes each stanza addressed to the component: host-service IQs to their shard
//! ([`super::scheduler`], answered in [`super::host`]), forwarded PEP requests and presences to
//! tasks of their own ([`super::delegated`]: they may wait for the server's answers, which arrive
//! on this same stream), messages to the host service, skipped stanzas to a bounce. Notifications
//! are written by [`super::delivery`]. The reader calling this never waits for work to finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, Semaphore, mpsc};

use tracing::{debug, warn};

use crate::component::Requests;
use crate::component::{NS_COMPONENT, Outbox, StanzaHandler};
use crate::jid::Jid;
use crate::pep::Pep;
use crate::pep::delegation::is_delegation_ns;
use crate::pep::presence::PresenceChange;
use crate::pubsub::PubSub;
use crate::xml::{Element, Rejected};

use super::errors::StanzaError;
use super::multicast::Multicast;
use super::scheduler::{MAX_TASKS, MAX_WAITING, NodeOrder, answers_at_once, busy, shard_of};
use super::stanza::Iq;

/// The component's stanza handler.
#[derive(Clone)]
pub struct Service {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) domain: Jid,
    pub(super) pubsub: Arc<PubSub>,
    pub(super) pep: Option<Arc<Pep>>,
    /// XEP-0033 multicast of host-service notifications, when enabled.
    pub(super) multicast: Option<Arc<Multicast>>,
    /// Host-service IQs are processed by these workers, one queue per shard of node names:
    /// requests on one node keep their order, requests on different nodes run concurrently (and
    /// their writes share the store's group commits).
    pub(super) shards: OnceLock<Vec<mpsc::Sender<Element>>>,
    pub(super) inflight: AtomicUsize,
    pub(super) idle: Notify,
    /// Permits for tasks spawned from the reader ([`MAX_TASKS`]).
    pub(super) tasks: Arc<Semaphore>,
    /// Places for presence work waiting for one of those permits ([`MAX_WAITING`]).
    pub(super) waiting: Arc<Semaphore>,
    /// When presence work was last dropped for want of a place (seconds since start), so that
    /// the warning is logged once per burst.
    pub(super) dropped_at: std::sync::atomic::AtomicU64,
    /// Arrival order of delegated requests per PEP node.
    pub(super) pep_order: Arc<NodeOrder>,
    /// Set once the expiry sweep runs (started on the first connection).
    pub(super) sweeping: std::sync::atomic::AtomicBool,
}

impl Service {
    /// `multicast`: send notifications for several subscribers of one server as one XEP-0033
    /// stanza when that server offers a multicast service.
    /// `requests`: the component's table of IQs waiting for answers (multicast discovery).
    pub fn new(
        domain: &str,
        pubsub: Arc<PubSub>,
        pep: Option<Arc<Pep>>,
        requests: Arc<Requests>,
        multicast: bool,
    ) -> Result<Service, crate::jid::JidError> {
        Ok(Service {
            inner: Arc::new(Inner {
                domain: Jid::parse(domain)?,
                pubsub,
                pep,
                multicast: multicast.then(|| Arc::new(Multicast::new(domain, requests.clone()))),
                shards: OnceLock::new(),
                inflight: AtomicUsize::new(0),
                idle: Notify::new(),
                tasks: Arc::new(Semaphore::new(MAX_TASKS)),
                waiting: Arc::new(Semaphore::new(MAX_WAITING)),
                dropped_at: std::sync::atomic::AtomicU64::new(0),
                pep_order: Arc::default(),
                sweeping: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

impl Inner {
    // ---- PEP ----
}

impl StanzaHandler for Service {
    async fn handle(&self, stanza: Element, out: &Outbox) {
        tracing::trace!("received {stanza}");
        let inner = &self.inner;
        use crate::metrics::{StanzaKind, metrics};
        match stanza.name() {
            "iq" => metrics().stanza_in(StanzaKind::Iq),
            "message" => metrics().stanza_in(StanzaKind::Message),
            "presence" => metrics().stanza_in(StanzaKind::Presence),
            _ => {}
        }
        match stanza.name() {
            "iq" => {
                let kind = stanza.get_attr("type");
                if matches!(kind, Some("result") | Some("error")) {
                    // Not an answer to one of our requests (those are taken by the connection).
                    debug!("ignoring an iq {kind:?} nobody waits for");
                    return;
                }
                let delegated = stanza
                    .children()
                    .any(|c| c.name() == "delegation" && is_delegation_ns(c.ns()));
                if delegated {
                    let from = stanza.get_attr("from").and_then(|f| Jid::parse(f).ok());
                    match (&inner.pep, from) {
                        (Some(pep), Some(from)) if pep.is_server(&from) => {
                            let Some(permit) = self.try_task() else {
                                if let Ok(iq) = Iq::parse(stanza) {
                                    let _ = out.send(&iq.error(&busy())).await;
                                }
                                return;
                            };
                            // Taken here, in arrival order; waited for in the task.
                            let turn = crate::pep::delegation::order_key(&stanza)
                                .map(|key| inner.pep_order.take(key));
                            let (inner, pep, out) = (inner.clone(), pep.clone(), out.clone());
                            self.spawn_counted(permit, async move {
                                let _turn = match turn {
                                    Some(mut turn) => {
                                        turn.wait().await;
                                        Some(turn)
                                    }
                                    None => None,
                                };
                                inner.handle_delegated(&pep, stanza, &out).await
                            });
                        }
                        _ => {
                            // XEP-0355 section 5: only the server may forward; refuse forgeries.
                            warn!(
                                "refusing a forwarded IQ from {:?}: not a served server domain",
                                stanza.get_attr("from")
                            );
                            if let Ok(iq) = Iq::parse(stanza) {
                                let err = StanzaError::forbidden()
                                    .with_text("only the server may delegate");
                                let _ = out.send(&iq.error(&err)).await;
                            }
                        }
                    }
                    return;
                }
                // A roster push about an account (XEP-0356 roster permission): its cached roster
                // is stale; acknowledge as a client would (RFC 6121 2.1.6).
                if let Some(pep) = &inner.pep
                    && kind == Some("set")
                    && stanza
                        .children()
                        .any(|c| c.is("query", crate::pep::roster::NS_ROSTER))
                    && let Some(from) = stanza.get_attr("from").and_then(|f| Jid::parse(f).ok())
                    && (pep.is_server(&from) || pep.is_local(&from))
                {
                    if pep.is_server(&from) {
                        pep.rosters.forget_all();
                    } else {
                        pep.rosters.forget(&from.to_bare().to_string());
                    }
                    if let Ok(iq) = Iq::parse(stanza) {
                        let _ = out.send(&iq.result(None)).await;
                    }
                    return;
                }
                if answers_at_once(&stanza) {
                    // Nothing to read or wait for: answered here, never queued behind others.
                    inner.inflight.fetch_add(1, Ordering::SeqCst);
                    inner.handle_iq(stanza, out).await;
                    inner.finished();
                    return;
                }
                let shard = shard_of(&stanza);
                inner.inflight.fetch_add(1, Ordering::SeqCst);
                match self.shards(out)[shard].try_send(stanza) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(stanza)) => {
                        inner.finished();
                        if let Ok(iq) = Iq::parse(stanza) {
                            let _ = out.send(&iq.error(&busy())).await;
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => inner.finished(),
                }
            }
            "message" => inner.handle_message(stanza, out).await,
            "presence" => {
                let Some(pep) = &inner.pep else { return };
                let Some(from) = stanza.get_attr("from").and_then(|f| Jid::parse(f).ok()) else {
                    return;
                };
                // Local accounts' presences (the presence privilege), and their contacts' on
                // other servers (its `roster` permission): a remote contact's resources are
                // `+notify` recipients and owed last items like a local one's.
                let local = pep.is_local(&from);
                if !local && (from.node().is_none() || from.domain() == pep.component) {
                    return;
                }
                if let PresenceChange::Available(who) = pep.presence.update_from(&stanza, !local) {
                    // A new session is the moment to re-read the account's roster: subscriptions
                    // may have changed since it was cached.
                    if local {
                        pep.rosters.forget(&who.to_bare().to_string());
                    }
                    // The last items owed to the new resource (XEP-0163 section 4.3.1) wait
                    // for a task rather than being dropped when every task is busy: in a login
                    // storm every resource's presence arrives at once.
                    let (inner, out, to) = (inner.clone(), out.clone(), who.clone());
                    if !self.spawn_queued(async move { inner.on_available(who, &out).await }) {
                        self.dropped(&to);
                    }
                }
            }
            other => debug!("ignoring {other}"),
        }
    }

    async fn rejected(&self, stanza: Rejected, out: &Outbox) {
        warn!(
            "skipped a {} of {} bytes from {}: {}",
            stanza.name,
            stanza.bytes,
            stanza
                .attrs
                .iter()
                .find(|(k, _)| *k == "from")
                .map_or("?", |(_, v)| v.as_str()),
            stanza.reason
        );
        if let Some(err) = super::stanza::bounce(&stanza, NS_COMPONENT) {
            let _ = out.send(&err).await;
        }
    }

    async fn connected(&self, out: &Outbox) {
        if let Some(mc) = &self.inner.multicast {
            mc.reset();
            mc.discover_parent(out);
        }
        if !self
            .inner
            .sweeping
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tokio::spawn(self.inner.clone().sweep_expired(out.clone()));
        }
    }

    async fn flush(&self) {
        while self.inner.inflight.load(Ordering::SeqCst) > 0 {
            let notified = self.inner.idle.notified();
            if self.inner.inflight.load(Ordering::SeqCst) == 0 {
                break;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), notified).await;
        }
    }
}
