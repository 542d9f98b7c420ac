//! Counts every operation the core issues to its store, by operation and kind (read or write):
//! the `stratus_storage_operations_total` metric, and what shows that a cache answered (the login
//! storm of `stratus-load --mode storm` expects no store reads once warm). Every backend is
//! opened behind it ([`super::open`]); it forwards each call unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{Freshness, ItemPage, ItemQuery, Store, StoreResult, SubscriptionChange};
use crate::jid::{BareJid, Jid};
use crate::metrics::metrics;
use crate::pubsub::model::{Affiliation, Item, NodeConfig, NodeRecord, ServiceId, Subscription};

/// Reads and writes issued through one [`Metered`] store (the metric sums all of them).
#[derive(Debug, Default)]
pub struct Counts {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

impl Counts {
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

pub struct Metered {
    inner: Arc<dyn Store>,
    counts: Arc<Counts>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Store>) -> Metered {
        Metered {
            inner,
            counts: Arc::default(),
        }
    }

    pub fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }

    fn read(&self, op: &'static str) {
        self.counts.reads.fetch_add(1, Ordering::Relaxed);
        metrics().storage_operation(op, "read");
    }

    fn write(&self, op: &'static str) {
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
        metrics().storage_operation(op, "write");
    }
}

#[async_trait]
impl Store for Metered {
    async fn create_node(
        &self,
        svc: &ServiceId,
        node: &NodeRecord,
        owner: &BareJid,
    ) -> StoreResult<bool> {
        self.write("create_node");
        self.inner.create_node(svc, node, owner).await
    }

    async fn load_node(&self, svc: &ServiceId, node: &str) -> StoreResult<Option<NodeRecord>> {
        self.read("load_node");
        self.inner.load_node(svc, node).await
    }

    async fn save_config(
        &self,
        svc: &ServiceId,
        node: &str,
        config: &NodeConfig,
    ) -> StoreResult<()> {
        self.write("save_config");
        self.inner.save_config(svc, node, config).await
    }

    async fn delete_node(&self, svc: &ServiceId, node: &str) -> StoreResult<bool> {
        self.write("delete_node");
        self.inner.delete_node(svc, node).await
    }

    async fn node_names(
        &self,
        svc: &ServiceId,
        after: Option<&str>,
        max: usize,
    ) -> StoreResult<Vec<String>> {
        self.read("node_names");
        self.inner.node_names(svc, after, max).await
    }

    async fn count_nodes_created_by(&self, svc: &ServiceId, creator: &str) -> StoreResult<u64> {
        self.read("count_nodes_created_by");
        self.inner.count_nodes_created_by(svc, creator).await
    }

    async fn services(&self, after: Option<&ServiceId>, max: usize) -> StoreResult<Vec<ServiceId>> {
        self.read("services");
        self.inner.services(after, max).await
    }

    async fn set_affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[(BareJid, Affiliation)],
    ) -> StoreResult<()> {
        self.write("set_affiliations");
        self.inner.set_affiliations(svc, node, changes).await
    }

    async fn set_affiliation(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &BareJid,
        aff: Affiliation,
    ) -> StoreResult<()> {
        self.write("set_affiliations");
        self.inner.set_affiliation(svc, node, jid, aff).await
    }

    async fn affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<(BareJid, Affiliation)>> {
        self.read("affiliations");
        self.inner.affiliations(svc, node).await
    }

    async fn user_affiliations(
        &self,
        svc: &ServiceId,
        jid: &BareJid,
    ) -> StoreResult<Vec<(String, Affiliation)>> {
        self.read("user_affiliations");
        self.inner.user_affiliations(svc, jid).await
    }

    async fn change_subscriptions(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[SubscriptionChange],
    ) -> StoreResult<()> {
        self.write("change_subscriptions");
        self.inner.change_subscriptions(svc, node, changes).await
    }

    async fn put_subscription(
        &self,
        svc: &ServiceId,
        node: &str,
        sub: &Subscription,
    ) -> StoreResult<()> {
        self.write("change_subscriptions");
        self.inner.put_subscription(svc, node, sub).await
    }

    async fn delete_subscription(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &Jid,
        subid: &str,
    ) -> StoreResult<bool> {
        self.write("delete_subscription");
        self.inner.delete_subscription(svc, node, jid, subid).await
    }

    async fn subscriptions(&self, svc: &ServiceId, node: &str) -> StoreResult<Vec<Subscription>> {
        self.read("subscriptions");
        self.inner.subscriptions(svc, node).await
    }

    async fn user_subscriptions(
        &self,
        svc: &ServiceId,
        jid: &Jid,
    ) -> StoreResult<Vec<(String, Subscription)>> {
        self.read("user_subscriptions");
        self.inner.user_subscriptions(svc, jid).await
    }

    async fn snapshot(&self) -> StoreResult<Option<Vec<u8>>> {
        self.read("snapshot");
        self.inner.snapshot().await
    }

    fn ordered_writes(&self) -> bool {
        self.inner.ordered_writes()
    }

    async fn put_items(
        &self,
        svc: &ServiceId,
        node: &str,
        items: &[Item],
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>> {
        self.write("put_items");
        self.inner.put_items(svc, node, items, max_items).await
    }

    async fn put_item(
        &self,
        svc: &ServiceId,
        node: &str,
        item: &Item,
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>> {
        self.write("put_items");
        self.inner.put_item(svc, node, item, max_items).await
    }

    async fn items(&self, svc: &ServiceId, node: &str, query: ItemQuery) -> StoreResult<ItemPage> {
        self.read("items");
        self.inner.items(svc, node, query).await
    }

    async fn items_by_id(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Item>> {
        self.read("items_by_id");
        self.inner.items_by_id(svc, node, ids).await
    }

    async fn delete_items(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        self.write("delete_items");
        self.inner.delete_items(svc, node, ids).await
    }

    async fn delete_item(&self, svc: &ServiceId, node: &str, id: &str) -> StoreResult<bool> {
        self.write("delete_items");
        self.inner.delete_item(svc, node, id).await
    }

    async fn purge_items(&self, svc: &ServiceId, node: &str) -> StoreResult<()> {
        self.write("purge_items");
        self.inner.purge_items(svc, node).await
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    async fn node_version(&self, svc: &ServiceId, node: &str) -> StoreResult<Freshness> {
        self.read("node_version");
        self.inner.node_version(svc, node).await
    }

    async fn recover(&self) -> StoreResult<usize> {
        self.write("recover");
        self.inner.recover().await
    }

    #[cfg(test)]
    fn fail_points(&self) -> &super::failpoint::FailPoints {
        self.inner.fail_points()
    }

    #[cfg(test)]
    async fn settle(&self) {
        self.inner.settle().await
    }
}
