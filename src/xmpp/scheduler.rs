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

/// Presence work (the last items owed to a resource that came online) waiting for a task at
/// most; beyond, it is dropped with a warning. A waiting entry holds a JID and a few handles.
pub(super) const MAX_WAITING: usize = 16 * 1024;

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

    /// Runs `work` once one of the [`MAX_TASKS`] permits is free, in order of arrival, counted as
    /// in flight from now; false (and nothing runs) when [`MAX_WAITING`] wait already.
    pub(super) fn spawn_queued(
        &self,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> bool {
        let Ok(place) = self.inner.waiting.clone().try_acquire_owned() else {
            return false;
        };
        self.inner.inflight.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            // The semaphore is never closed: a permit always comes.
            let permit = inner.tasks.clone().acquire_owned().await;
            drop(place);
            work.await;
            drop(permit);
            inner.finished();
        });
        true
    }

    /// Presence work for `who` found no place: warned about once per minute, at debug level
    /// otherwise.
    pub(super) fn dropped(&self, who: &crate::jid::Jid) {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs()
            + 1;
        let last = self.inner.dropped_at.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 60)
            && self
                .inner
                .dropped_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "too busy to send the last items owed to {who}: {MAX_WAITING} presences wait \
                 for a task already (further ones this minute at debug level)"
            );
        } else {
            debug!("too busy to send last items to {who}");
        }
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

/// Keeps requests on one PEP node in arrival order. Delegated requests run in tasks of their own
/// (they may wait for the server's answers), so without this two quick publishes of one item id
/// (an OMEMO device list's `current`) could be stored in the opposite order. The reader takes a
/// [`Turn`] for each request before spawning it; a turn waits for the one taken before it on the
/// same key. Requests on different nodes or accounts never wait for each other.
#[derive(Default)]
pub(super) struct NodeOrder {
    /// The newest turn of each key still running, and the receiver its successor will wait on.
    /// An entry lives only while a turn of its key runs: at most [`MAX_TASKS`] of them.
    tails: std::sync::Mutex<std::collections::HashMap<(String, String), (u64, Tail)>>,
    next: std::sync::atomic::AtomicU64,
}

type Tail = tokio::sync::oneshot::Receiver<()>;

/// One request's place in its key's order; dropping it lets the next request of the key run.
pub(super) struct Turn {
    order: Arc<NodeOrder>,
    key: (String, String),
    id: u64,
    before: Option<Tail>,
    _done: tokio::sync::oneshot::Sender<()>,
}

impl NodeOrder {
    /// Takes the next turn on `key` (called in arrival order, without waiting).
    pub(super) fn take(self: &Arc<Self>, key: (String, String)) -> Turn {
        let (done, tail) = tokio::sync::oneshot::channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let before = self
            .tails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (id, tail))
            .map(|(_, t)| t);
        Turn {
            order: self.clone(),
            key,
            id,
            before,
            _done: done,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tails.lock().unwrap().len()
    }
}

impl Turn {
    /// Waits until every request taken before this one on its key has finished.
    pub(super) async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            // Err: the turn before was dropped, which is its end.
            let _ = before.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut tails = self.order.tails.lock().unwrap_or_else(|e| e.into_inner());
        if tails.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            tails.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(node: &str) -> (String, String) {
        ("alice@localhost".into(), node.into())
    }

    #[tokio::test]
    async fn a_turn_waits_for_the_one_before_on_its_key_only() {
        let order = Arc::new(NodeOrder::default());
        let first = order.take(key("omemo"));
        let mut second = order.take(key("omemo"));
        let mut other = order.take(key("avatar"));
        // Another key is not held up.
        tokio::time::timeout(Duration::from_secs(5), other.wait())
            .await
            .expect("a turn on another node runs at once");
        {
            // The second waits while the first runs...
            let mut waiting = std::pin::pin!(second.wait());
            assert!(
                futures_util::FutureExt::now_or_never(waiting.as_mut()).is_none(),
                "the second request waits for the first"
            );
            drop(first);
            // ...and runs once it is done.
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("the second runs after the first");
        }
        drop(second);
        drop(other);
        assert_eq!(order.len(), 0, "no entry outlives its turns");
    }

    #[tokio::test]
    async fn turns_run_in_the_order_taken() {
        let order = Arc::new(NodeOrder::default());
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let turns: Vec<Turn> = (0..50).map(|_| order.take(key("current"))).collect();
        // Spawned in reverse, so that without the order the last taken would tend to run first.
        for (i, mut turn) in turns.into_iter().enumerate().rev() {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                turn.wait().await;
                tokio::task::yield_now().await;
                log.lock().unwrap().push(i);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*log.lock().unwrap(), (0..50).collect::<Vec<_>>());
        assert_eq!(order.len(), 0);
    }

    /// Presence work that finds every task busy waits for one and runs, in order, instead of
    /// being dropped (the last items owed to every resource of a login storm); only beyond
    /// MAX_WAITING is it refused.
    #[tokio::test]
    async fn presence_work_waits_for_a_task_instead_of_being_dropped() {
        use crate::pubsub::service::{Limits, NoRoster, PubSub};
        use crate::storage::memory::MemoryStore;

        let pubsub = Arc::new(PubSub::new(
            Arc::new(MemoryStore::default()),
            Limits::default(),
            Arc::new(NoRoster),
        ));
        let service =
            Service::new("pubsub.localhost", pubsub, None, Arc::default(), false).unwrap();
        let busy = service
            .inner
            .tasks
            .clone()
            .acquire_many_owned(MAX_TASKS as u32)
            .await
            .unwrap();
        assert!(service.try_task().is_none(), "every task is taken");
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..3 {
            let ran = ran.clone();
            assert!(service.spawn_queued(async move { ran.lock().unwrap().push(i) }));
        }
        tokio::task::yield_now().await;
        assert!(ran.lock().unwrap().is_empty(), "ran without a task");
        drop(busy);
        for _ in 0..100 {
            if ran.lock().unwrap().len() == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(*ran.lock().unwrap(), [0, 1, 2]);
        // Beyond the places for waiting work, it is refused (and warned about), not queued.
        let places = service
            .inner
            .waiting
            .clone()
            .acquire_many_owned(MAX_WAITING as u32)
            .await
            .unwrap();
        assert!(!service.spawn_queued(async {}));
        drop(places);
        assert!(service.spawn_queued(async {}));
    }
}
