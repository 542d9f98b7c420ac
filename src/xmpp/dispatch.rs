//! Routes each stanza addressed to the component to its handler and sends the answer and the
//! notifications it produced. Host-service requests are answered in order on the reading task;
//! delegated PEP requests and presence work run in their own tasks because they may wait for the
//! server's answers (rosters, caps), which arrive on the same stream.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use tracing::{debug, warn};

use crate::component::Requests;
use crate::component::outbox::OutboxClosed;
use crate::component::{NS_COMPONENT, Outbox, StanzaHandler};
use crate::jid::Jid;
use crate::pep::Pep;
use crate::pep::delegation::{self, PEP_FEATURES, delegated_disco_node, is_delegation_ns};
use crate::pep::presence::PresenceChange;
use crate::pep::privilege::{NS_PRIVILEGE_1, NS_PRIVILEGE_2, wrap_headline};
use crate::pubsub::PubSub;
use crate::pubsub::access::Action;
use crate::pubsub::model::{SendLastPublished, ServiceId, SubscriptionState};
use crate::pubsub::notify::{Event, Notification, Recipient};
use crate::xml::{Element, Rejected};

use super::errors::{StanzaError, from_pubsub};
use super::forms::{self, FORM_SUB_AUTH, NS_DATA};
use super::multicast::{self, Multicast};
use super::pubsub::{NS_OWNER, NS_PUBSUB};
use super::rsm::{self, NS_RSM};
use super::stanza::{Iq, IqParseError, IqType};
use super::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, disco, notify};

/// The component's stanza handler.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    domain: Jid,
    pubsub: Arc<PubSub>,
    pep: Option<Arc<Pep>>,
    /// XEP-0033 multicast of host-service notifications, when enabled.
    multicast: Option<Arc<Multicast>>,
    /// Host-service IQs are processed by these workers, one queue per shard of node names:
    /// requests on one node keep their order, requests on different nodes run concurrently (and
    /// their writes share the store's group commits).
    shards: OnceLock<Vec<mpsc::Sender<Element>>>,
    inflight: AtomicUsize,
    idle: Notify,
    /// Permits for tasks spawned from the reader ([`MAX_TASKS`]).
    tasks: Arc<Semaphore>,
}

const SHARDS: usize = 32;

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
            }),
        })
    }

    fn shards(&self, out: &Outbox) -> &Vec<mpsc::Sender<Element>> {
        self.inner.shards.get_or_init(|| {
            (0..SHARDS)
                .map(|_| {
                    let (tx, rx) = mpsc::channel::<Element>(SHARD_QUEUE);
                    let inner = self.inner.clone();
                    let out = out.clone();
                    tokio::spawn(async move { inner.run_shard(rx, out).await });
                    tx
                })
                .collect()
        })
    }

    /// A permit to run one more task, or None when [`MAX_TASKS`] run already: the reader never
    /// waits for work to finish.
    fn try_task(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.tasks.clone().try_acquire_owned().ok()
    }

    /// Runs `work` in its own task, counted as in flight until it completes.
    fn spawn_counted(
        &self,
        permit: OwnedSemaphorePermit,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.inner.inflight.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            work.await;
            drop(permit);
            inner.finished();
        });
    }
}

/// Delegated requests and presence work running at once at most (each may wait for the server's
/// answers, which the reader must stay free to read).
const MAX_TASKS: usize = 1024;

/// Host-service requests queued per shard at most; beyond, `resource-constraint`.
const SHARD_QUEUE: usize = 1024;

/// The error for a request that finds its queue full (RFC 6120 8.3.3.18: resource-constraint,
/// type wait: the sender may try again later).
fn busy() -> StanzaError {
    StanzaError::new(super::errors::ErrorType::Wait, "resource-constraint")
        .with_text("too many requests are waiting; try again later")
}

/// The shard of a request: its node (so one node's requests stay ordered), else its sender.
fn shard_of(stanza: &Element) -> usize {
    let node = stanza
        .children()
        .find(|c| c.name() == "pubsub")
        .and_then(|ps| ps.children().find_map(|a| a.get_attr("node")));
    let mut h = DefaultHasher::new();
    match node {
        Some(n) => n.hash(&mut h),
        None => stanza.get_attr("from").unwrap_or_default().hash(&mut h),
    }
    (h.finish() as usize) % SHARDS
}

/// Publishes taken together from a shard's queue at most (join_all polls up to 30 futures in
/// order on every wake, which keeps their writes and answers in queue order).
const MAX_RUN: usize = 30;

/// An IQ whose answer needs no storage and no other entity (XEP-0199 ping, XEP-0092 version).
fn answers_at_once(stanza: &Element) -> bool {
    stanza.get_attr("type") == Some("get")
        && stanza
            .children()
            .all(|c| c.is("ping", NS_PING) || c.is("query", NS_VERSION))
        && stanza.children().count() == 1
}

/// A host-service publish request (`<iq type='set'><pubsub><publish/>`).
fn is_publish(stanza: &Element) -> bool {
    stanza.get_attr("type") == Some("set")
        && stanza
            .get_child("pubsub", NS_PUBSUB)
            .is_some_and(|p| p.children().any(|c| c.name() == "publish"))
}

/// Bytes of stanzas gathered before they are queued: a fan-out to many recipients never builds
/// one string of recipients x payload, and the outbound queue's byte bound applies as it goes.
const SINK_BYTES: usize = 64 * 1024;

/// Gathers serialized stanzas and queues them in batches of about [`SINK_BYTES`].
struct Sink<'a> {
    out: &'a Outbox,
    buf: String,
}

impl<'a> Sink<'a> {
    fn new(out: &'a Outbox) -> Sink<'a> {
        Sink {
            out,
            buf: String::new(),
        }
    }

    /// Appends what `write` writes; queues the batch once it is large enough.
    async fn push(&mut self, write: impl FnOnce(&mut String)) -> Result<(), OutboxClosed> {
        write(&mut self.buf);
        if self.buf.len() >= SINK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), OutboxClosed> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.out.send_raw(std::mem::take(&mut self.buf)).await
    }
}

impl Inner {
    /// Answers one shard's requests in order. Where the store applies writes in the order they
    /// were issued, a run of queued publishes (one node's or several) runs together: their writes
    /// are issued in queue order and share one commit, instead of one fsync after another.
    async fn run_shard(self: Arc<Self>, mut rx: mpsc::Receiver<Element>, out: Outbox) {
        let pipelined = self.pubsub.ordered_writes();
        while let Some(first) = rx.recv().await {
            if !pipelined || !is_publish(&first) {
                self.handle_iq(first, &out).await;
                self.finished();
                continue;
            }
            let mut run = vec![first];
            let mut after = None;
            while run.len() < MAX_RUN {
                match rx.try_recv() {
                    Ok(s) if is_publish(&s) => run.push(s),
                    Ok(s) => {
                        after = Some(s);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if run.len() > 1 {
                // Each node loaded before the run starts, so every publish reaches its write
                // on its first poll, in queue order.
                let mut nodes: Vec<&str> = run
                    .iter()
                    .filter_map(|s| s.get_child("pubsub", NS_PUBSUB))
                    .filter_map(|p| p.children().find_map(|c| c.get_attr("node")))
                    .collect();
                nodes.dedup();
                for node in nodes {
                    let _ = self.pubsub.node(&ServiceId::Host, node).await;
                }
            }
            let count = run.len();
            if count > 1 {
                debug!("{count} queued publishes run together");
            }
            futures_util::future::join_all(run.into_iter().map(|s| self.handle_iq(s, &out))).await;
            for _ in 0..count {
                self.finished();
            }
            if let Some(s) = after {
                self.handle_iq(s, &out).await;
                self.finished();
            }
        }
    }

    fn finished(&self) {
        if self.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn handle_iq(self: &Arc<Self>, stanza: Element, out: &Outbox) {
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
        let (reply, notifications) = match self.answer(&iq).await {
            Ok((payload, notes)) => (iq.result(payload), notes),
            Err(err) => (iq.error(&err), Vec::new()),
        };
        let Some(mc) = self.multicast.clone().filter(|_| !notifications.is_empty()) else {
            if out.send(&reply).await.is_err() {
                warn!("dropping the answer to iq {}: shutting down", iq.id);
                return;
            }
            self.send_notifications(&notifications, out).await;
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

    /// Sends the notifications; returns the multicast services some of them went through.
    async fn send_notifications(
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
    async fn render(
        &self,
        n: &Notification,
        from: &str,
        out: &Outbox,
        services: &mut Vec<String>,
        sink: &mut Sink<'_>,
    ) -> Result<(), OutboxClosed> {
        let body = notify::Body::of(n);
        let Some(mc) = self.multicast.as_ref().filter(|_| n.recipients.len() > 1) else {
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
                            sink.push(|buf| {
                                notify::render_multicast_into(&body, from, &service, chunk, buf)
                            })
                            .await?;
                        }
                    }
                }
                None => one_by_one.extend(rs),
            }
        }
        for r in one_by_one {
            sink.push(|buf| notify::render_one(&body, from, r, buf))
                .await?;
        }
        Ok(())
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
            (_, "pubsub", NS_PUBSUB | NS_OWNER) => {
                super::pubsub::handle(&self.pubsub, &svc, &actor, iq, payload).await
            }
            _ => Err(StanzaError::service_unavailable()),
        }
    }

    async fn disco_info(
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
            // XEP-0355 section 4: what the delegated namespace offers, for the server's disco.
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
            Some(name) => {
                // XEP-0060 5.3/5.4: a leaf node with its meta-data, for whom may read it; to
                // anyone else the node is as absent as one that does not exist.
                let state = self
                    .pubsub
                    .node(svc, name)
                    .await
                    .map_err(|e| from_pubsub(&e))?;
                if self
                    .pubsub
                    .authorize_in(svc, &state, actor, Action::RetrieveItems)
                    .await
                    .is_err()
                {
                    return Err(StanzaError::item_not_found());
                }
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
                    .readable_node_names(svc, actor, after, max)
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
                let (page, _) = self
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

    /// Messages to the service: privileges and delegations from servers, and owners answering a
    /// subscription approval form (XEP-0060 8.6.2).
    async fn handle_message(&self, stanza: Element, out: &Outbox) {
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

    /// A multicast service refused one of our notifications (XEP-0033 section 8): resend it to
    /// each address it was meant for, and stop using that service.
    async fn multicast_bounced(&self, stanza: &Element, out: &Outbox) {
        let (Some(mc), Some(service)) = (&self.multicast, stanza.get_attr("from")) else {
            return;
        };
        let Some((resend, why)) =
            multicast::resend_bounce(stanza, &self.domain.to_string(), |jid| {
                mc.sent_through(service, jid)
            })
        else {
            return;
        };
        mc.disable(service, &why);
        if !resend.is_empty() {
            let _ = out.send_raw(resend).await;
        }
    }

    // ---- PEP ----

    /// A client's pubsub IQ to an account, forwarded by its server (XEP-0355).
    async fn handle_delegated(&self, pep: &Arc<Pep>, outer: Element, out: &Outbox) {
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
        if d.owner.domain() != server {
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
            ServiceId::Pep(d.owner.to_string())
        } else {
            // A pubsub IQ to the server domain itself: the host service answers it.
            ServiceId::Host
        };
        let result = match iq.payload.as_ref() {
            Some(p) if p.name() == "pubsub" && matches!(p.ns(), NS_PUBSUB | NS_OWNER) => {
                super::pubsub::handle(&self.pubsub, &svc, &d.sender, &iq, p).await
            }
            _ => Err(StanzaError::service_unavailable()),
        };
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
    async fn send_pep_notifications(
        &self,
        pep: &Arc<Pep>,
        owner: &Jid,
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
        let owner_bare = owner.to_bare().to_string();
        for n in notes {
            let mut recipients: Vec<Jid> = n.recipients.iter().map(|r| r.jid.clone()).collect();
            let implicit = matches!(
                n.event,
                Event::Items { .. }
                    | Event::Retract { .. }
                    | Event::Purge
                    | Event::Delete { .. }
                    | Event::Configuration { .. }
            );
            if implicit {
                recipients.extend(self.interested(pep, owner, &n.node).await);
            }
            let mut seen = HashSet::new();
            recipients.retain(|j| seen.insert(j.clone()));
            let mut body = String::with_capacity(256);
            notify::event_element(n, &owner_bare).write_to(&mut body, crate::client::NS_CLIENT);
            let mut sink = Sink::new(out);
            let from = owner.to_bare();
            for r in recipients {
                let wrap =
                    |b: &mut String| wrap_headline(b, &pep.component, &granted, &from, &r, &body);
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
    async fn interested(&self, pep: &Arc<Pep>, owner: &Jid, node: &str) -> Vec<Jid> {
        let owner_bare = owner.to_bare().to_string();
        let mut candidates = pep.notify_resources(&owner_bare, node);
        let svc = ServiceId::Pep(owner_bare.clone());
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
    async fn on_available(&self, pep: &Pep, who: Jid, out: &Outbox) {
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
                && let Ok(j) = Jid::parse(contact)
                && pep.is_local(&j)
            {
                owners.push(j);
            }
        }
        let mut sink = Sink::new(out);
        for owner in owners {
            let svc = ServiceId::Pep(owner.to_string());
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
                let wrap = |b: &mut String| {
                    wrap_headline(b, &pep.component, &granted, &owner, &who, &body)
                };
                if sink.push(wrap).await.is_err() {
                    return;
                }
            }
        }
        let _ = sink.flush().await;
    }
}

impl StanzaHandler for Service {
    async fn handle(&self, stanza: Element, out: &Outbox) {
        tracing::trace!("received {stanza}");
        let inner = &self.inner;
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
                            let (inner, pep, out) = (inner.clone(), pep.clone(), out.clone());
                            self.spawn_counted(permit, async move {
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
                if !pep.is_local(&from) {
                    return;
                }
                if let PresenceChange::Available(who) = pep.presence.update(&stanza) {
                    // A new session is the moment to re-read the account's roster: subscriptions
                    // may have changed since it was cached.
                    pep.rosters.forget(&who.to_bare().to_string());
                    let (inner, pep, out) = (inner.clone(), pep.clone(), out.clone());
                    match self.try_task() {
                        Some(permit) => self.spawn_counted(permit, async move {
                            inner.on_available(&pep, who, &out).await
                        }),
                        None => debug!("too busy to send last items to {who}"),
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
