//! Scheduling host-service requests: one ordered queue per shard of node names, runs of
//! publishes that share a commit, and the bound on work spawned from the reader (which never
//! waits for it).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use tracing::debug;

use crate::component::Outbox;
use crate::pubsub::model::ServiceId;
use crate::xml::Element;

use super::errors::StanzaError;
use super::pubsub::NS_PUBSUB;
use super::{NS_PING, NS_VERSION};

use super::dispatch::{Inner, Service};

pub(super) const SHARDS: usize = 32;

/// Delegated requests and presence work running at once at most (each may wait for the server's
/// answers, which the reader must stay free to read).
pub(super) const MAX_TASKS: usize = 1024;

/// Host-service requests queued per shard at most; beyond, `resource-constraint`.
pub(super) const SHARD_QUEUE: usize = 1024;

/// The error for a request that finds its queue full (RFC 6120 8.3.3.18: resource-constraint,
/// type wait: the sender may try again later).
pub(super) fn busy() -> StanzaError {
    StanzaError::new(super::errors::ErrorType::Wait, "resource-constraint")
        .with_text("too many requests are waiting; try again later")
}

/// The shard of a request: its node (so one node's requests stay ordered), else its sender.
pub(super) fn shard_of(stanza: &Element) -> usize {
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
pub(super) const MAX_RUN: usize = 30;

/// An IQ whose answer needs no storage and no other entity (XEP-0199 ping, XEP-0092 version).
pub(super) fn answers_at_once(stanza: &Element) -> bool {
    stanza.get_attr("type") == Some("get")
        && stanza
            .children()
            .all(|c| c.is("ping", NS_PING) || c.is("query", NS_VERSION))
        && stanza.children().count() == 1
}

/// A host-service publish request (`<iq type='set'><pubsub><publish/>`).
pub(super) fn is_publish(stanza: &Element) -> bool {
    stanza.get_attr("type") == Some("set")
        && stanza
            .get_child("pubsub", NS_PUBSUB)
            .is_some_and(|p| p.children().any(|c| c.name() == "publish"))
}

impl Service {
    pub(super) fn shards(&self, out: &Outbox) -> &Vec<mpsc::Sender<Element>> {
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
    pub(super) fn try_task(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.tasks.clone().try_acquire_owned().ok()
    }

    /// Runs `work` in its own task, counted as in flight until it completes.
    pub(super) fn spawn_counted(
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

impl Inner {
    /// Answers one shard's requests in order. Where the store applies writes in the order they
    /// were issued, a run of queued publishes (one node's or several) runs together: their writes
    /// are issued in queue order and share one commit, instead of one fsync after another.
    pub(super) async fn run_shard(self: Arc<Self>, mut rx: mpsc::Receiver<Element>, out: Outbox) {
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

    pub(super) fn finished(&self) {
        if self.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}
