//! `pubsub#item_expire` (XEP-0060 16.4.3): items really expire. Every item published to a node
//! with an expiry is scheduled; `expire_due` deletes what is due from the store (so RSM counts,
//! the last item and `max_items` see only live items) and returns the retract notifications
//! (7.2.2.1, where `pubsub#notify_retract` says so), which the stanza layer sends. Reads hide
//! an item from the moment it expires, even before the sweep (or after a restart, which loses the
//! schedule: the node's stored items are scheduled again when it is first loaded).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::error::PubSubResult;
use super::model::*;
use super::notify::{Event, Notification};
use super::service::LastItem;
use super::service::PubSub;

/// Scheduled expiries kept at most; beyond, items still disappear from reads at their expiry and
/// are deleted by `sweep_node`.
pub const MAX_SCHEDULED: usize = 1_000_000;

/// One scheduled expiry: when, and which item (the publication time tells a replaced item from
/// the one scheduled).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    at_ms: u64,
    svc: ServiceId,
    node: String,
    id: String,
    published_ms: u64,
}

#[derive(Default)]
pub(super) struct Schedule(std::sync::Mutex<BinaryHeap<Reverse<Due>>>);

impl Schedule {
    fn lock(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<Due>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PubSub {
    /// Schedules the expiry of items just stored in a node that expires them.
    pub(super) fn schedule_expiry(
        &self,
        svc: &ServiceId,
        node: &str,
        cfg: &NodeConfig,
        items: &[Item],
    ) {
        let Some(secs) = cfg.item_expire else {
            return;
        };
        let mut heap = self.expiries.lock();
        for item in items {
            if heap.len() >= MAX_SCHEDULED {
                break;
            }
            heap.push(Reverse(Due {
                at_ms: item.published_ms.saturating_add(secs.saturating_mul(1000)),
                svc: svc.clone(),
                node: node.to_owned(),
                id: item.id.clone(),
                published_ms: item.published_ms,
            }));
        }
    }

    /// The next scheduled expiry, in milliseconds since the epoch.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiries.lock().peek().map(|Reverse(d)| d.at_ms)
    }

    /// Deletes every item due by `now_ms`; the retract notifications to send. A storage error
    /// puts the item back for the next sweep.
    pub async fn expire_due(&self, now_ms: u64) -> Vec<Notification> {
        let mut due = Vec::new();
        {
            let mut heap = self.expiries.lock();
            while heap.peek().is_some_and(|Reverse(d)| d.at_ms <= now_ms) {
                if let Some(Reverse(d)) = heap.pop() {
                    due.push(d);
                }
            }
        }
        let mut out = Vec::new();
        for d in due {
            match self.expire_one(&d).await {
                Ok(Some(n)) => out.push(n),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("expiring item {} of node {}: {e}; retried", d.id, d.node);
                    self.expiries.lock().push(Reverse(Due {
                        at_ms: now_ms + 1000,
                        ..d
                    }));
                }
            }
        }
        out
    }

    async fn expire_one(&self, d: &Due) -> PubSubResult<Option<Notification>> {
        let state = match self.node(&d.svc, &d.node).await {
            Ok(s) => s,
            Err(super::PubSubError::NodeNotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Replaced by a newer publish with the same id (scheduled on its own), or already gone.
        let found = self
            .store
            .items_by_id(&d.svc, &d.node, std::slice::from_ref(&d.id))
            .await?;
        if found
            .first()
            .is_none_or(|i| i.published_ms != d.published_ms)
        {
            return Ok(None);
        }
        self.remove_items(&d.svc, &d.node, std::slice::from_ref(&d.id))
            .await?;
        let cfg = &state.record.config;
        if !(cfg.notify_retract && cfg.deliver_notifications) {
            return Ok(None);
        }
        let ids = vec![d.id.clone()];
        Ok(Some(
            self.notification(&d.svc, &d.node, &state, Event::Retract { ids }, cfg)
                .await,
        ))
    }

    /// Deletes items and forgets a cached last item among them.
    pub(super) async fn remove_items(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> PubSubResult<()> {
        self.store.delete_items(svc, node, ids).await?;
        let k = Self::key(svc, node);
        if matches!(self.last_items.get(&k), Some(LastItem { item: Some(i), .. }) if ids.contains(&i.id))
        {
            self.last_items.invalidate(&k);
        }
        Ok(())
    }
}
