//! Storage: small, specific operations behind one trait, with backends memory and embedded (redb).
//!
//! Contract for every backend (checked by the conformance suite in `conformance.rs`):
//! - A call that returns Ok is durable for the backend's promise (embedded: fsynced).
//! - Items of a node are ordered by publication; republishing an id replaces the item and moves
//!   it to the newest position.
//! - `put_items` trims the node to `max_items` by removing the oldest (embedded, memory: in the same
//!   transaction; aws: right after it, retried by the next publish).
//! - A batch (`put_items`, `delete_items`, `set_affiliations`, `change_subscriptions`) is applied
//!   whole or not at all: an Err leaves the store as it was. A batch holds at most [`BATCH_LIMIT`]
//!   entries and names each key once (the core keeps the last of repeated ones).
//! - Deleting something absent is Ok and reports `false` (or leaves it out of the ids returned).
//! - A write naming a node (config, items, subscriptions, affiliations) fails with
//!   [`StoreError::NodeGone`] when the node does not exist, and writes nothing: a request racing
//!   a deletion cannot re-create a part of the node, nor leave anything a new node of the same
//!   name would inherit. Counts never go below zero.
//! - Reads cost O(result), not O(items in node).

#[cfg(feature = "aws")]
pub mod aws;
pub mod backup;
pub mod conformance;
pub mod embedded;
pub mod failpoint;
pub mod memory;
pub mod metered;

use std::sync::Arc;

use async_trait::async_trait;

use crate::jid::{BareJid, Jid};
use crate::pubsub::model::{Affiliation, Item, NodeConfig, NodeRecord, ServiceId, Subscription};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage data corrupt: {0}")]
    Corrupt(String),
    /// A write to a node that no longer exists (deleted since the request loaded it): nothing
    /// was written, and nothing of the node is re-created.
    #[error("the node was deleted")]
    NodeGone,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Most entries of one batch: items of one publish, ids of one retract, changes of one owner
/// request. Bounded by DynamoDB's 100 writes per transaction (a published item costs 3, the count
/// 1; an affiliation or subscription 2).
pub const BATCH_LIMIT: usize = 32;

/// One change of a batch of subscription changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// Adds or replaces (same JID and subid).
    Put(Subscription),
    /// Removes, if present.
    Delete { jid: Jid, subid: String },
}

/// Which items to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemQuery {
    /// The newest `n`, returned oldest first.
    Newest(usize),
    /// Up to `max` items published after the item with this id (oldest first); None: from the start.
    After(Option<String>, usize),
    /// Up to `max` items published before the item with this id (oldest first); None: the end.
    Before(Option<String>, usize),
}

/// Where a node stands in a store several instances share: each instance's caches are checked
/// against it, so that what another instance changed is seen from the next request on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeVersion {
    /// Changes with every change of the configuration, affiliations or subscriptions.
    pub config: u64,
    /// Changes with every change of the items (publish, retract, eviction, purge, expiry).
    pub items: u64,
}

/// A node's version, as [`Store::node_version`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The node is absent or being deleted.
    Gone,
    At(NodeVersion),
}

/// A page of items, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemPage {
    pub items: Vec<Item>,
    /// Items in the node.
    pub count: u64,
    /// The position of the first returned item in the node, when known cheaply.
    pub first_index: Option<u64>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a node; false if a node with this name exists.
    async fn create_node(
        &self,
        svc: &ServiceId,
        node: &NodeRecord,
        owner: &BareJid,
    ) -> StoreResult<bool>;
    async fn load_node(&self, svc: &ServiceId, node: &str) -> StoreResult<Option<NodeRecord>>;
    async fn save_config(
        &self,
        svc: &ServiceId,
        node: &str,
        config: &NodeConfig,
    ) -> StoreResult<()>;
    /// Deletes the node with its items, subscriptions and affiliations.
    async fn delete_node(&self, svc: &ServiceId, node: &str) -> StoreResult<bool>;
    /// Node names of a service, sorted, at most `max` after `after`.
    async fn node_names(
        &self,
        svc: &ServiceId,
        after: Option<&str>,
        max: usize,
    ) -> StoreResult<Vec<String>>;
    async fn count_nodes_created_by(&self, svc: &ServiceId, creator: &str) -> StoreResult<u64>;
    /// The services that have nodes, in the order of their keys ([`ServiceId::key`]), at most
    /// `max` after `after`: the walk of `stratus export`, which may read the whole store.
    async fn services(&self, after: Option<&ServiceId>, max: usize) -> StoreResult<Vec<ServiceId>>;

    /// Sets (or with `Affiliation::None`, removes) bare JIDs' affiliations, all or none.
    async fn set_affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[(BareJid, Affiliation)],
    ) -> StoreResult<()>;
    /// One change of [`Store::set_affiliations`].
    async fn set_affiliation(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &BareJid,
        aff: Affiliation,
    ) -> StoreResult<()> {
        self.set_affiliations(svc, node, &[(jid.clone(), aff)])
            .await
    }
    async fn affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<(BareJid, Affiliation)>>;
    /// Affiliations of a bare JID across the service's nodes.
    async fn user_affiliations(
        &self,
        svc: &ServiceId,
        jid: &BareJid,
    ) -> StoreResult<Vec<(String, Affiliation)>>;

    /// Applies subscription changes, all or none.
    async fn change_subscriptions(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[SubscriptionChange],
    ) -> StoreResult<()>;
    /// Adds or replaces (same JID and subid) a subscription.
    async fn put_subscription(
        &self,
        svc: &ServiceId,
        node: &str,
        sub: &Subscription,
    ) -> StoreResult<()> {
        self.change_subscriptions(svc, node, &[SubscriptionChange::Put(sub.clone())])
            .await
    }
    async fn delete_subscription(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &Jid,
        subid: &str,
    ) -> StoreResult<bool>;
    async fn subscriptions(&self, svc: &ServiceId, node: &str) -> StoreResult<Vec<Subscription>>;
    /// Subscriptions of a JID (bare: also its full JIDs) across the service's nodes.
    async fn user_subscriptions(
        &self,
        svc: &ServiceId,
        jid: &Jid,
    ) -> StoreResult<Vec<(String, Subscription)>>;

    /// A consistent copy of everything stored, taken while the service runs (`stratus backup`);
    /// None where the backend has its own means (aws: S3 versioning and DynamoDB point-in-time
    /// recovery, docs/operations.md) or nothing to keep (memory).
    async fn snapshot(&self) -> StoreResult<Option<Vec<u8>>> {
        Ok(None)
    }

    /// True when writes issued concurrently are applied in the order they were first polled (a
    /// single writer queue): then publishes to one node may run together and share a commit.
    fn ordered_writes(&self) -> bool {
        false
    }

    /// Stores items in order (each replacing one with the same id), all or none, and trims to
    /// `max_items`; returns the ids removed by trimming.
    async fn put_items(
        &self,
        svc: &ServiceId,
        node: &str,
        items: &[Item],
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>>;
    /// One item of [`Store::put_items`].
    async fn put_item(
        &self,
        svc: &ServiceId,
        node: &str,
        item: &Item,
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>> {
        self.put_items(svc, node, std::slice::from_ref(item), max_items)
            .await
    }
    async fn items(&self, svc: &ServiceId, node: &str, query: ItemQuery) -> StoreResult<ItemPage>;
    async fn items_by_id(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Item>>;
    /// Deletes items, all or none; returns the ids that were there.
    async fn delete_items(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<String>>;
    async fn delete_item(&self, svc: &ServiceId, node: &str, id: &str) -> StoreResult<bool> {
        let removed = self.delete_items(svc, node, &[id.to_owned()]).await?;
        Ok(!removed.is_empty())
    }
    async fn purge_items(&self, svc: &ServiceId, node: &str) -> StoreResult<()>;

    /// True when other instances may write to this store too (aws): caches are then checked
    /// against [`Store::node_version`] on every request. False (memory, embedded: one process
    /// holds the store) and every change goes through this instance's caches.
    fn shared(&self) -> bool {
        false
    }

    /// The node's current version, read strongly (one request on aws). Only called when
    /// [`Store::shared`].
    async fn node_version(&self, _svc: &ServiceId, _node: &str) -> StoreResult<Freshness> {
        Err(StoreError::Unavailable(
            "this store keeps no node versions".into(),
        ))
    }

    /// Finishes what a crash or an outage cut off in the middle of a multi-request operation
    /// (aws: node deletions); run when the store opens. Returns how many it finished.
    async fn recover(&self) -> StoreResult<usize> {
        Ok(0)
    }

    /// The backend's fail points, for the conformance suite's crash and outage cases.
    #[cfg(test)]
    fn fail_points(&self) -> &failpoint::FailPoints;

    /// Waits for the work a backend does after answering (aws: deleting unreferenced objects),
    /// so that a test sees its effects.
    #[cfg(test)]
    async fn settle(&self) {}
}

/// Opens the backend the configuration names, its operations counted ([`metered`]).
pub async fn open(config: &crate::config::StorageConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(metered::Metered::new(open_backend(config).await?)))
}

async fn open_backend(config: &crate::config::StorageConfig) -> Result<Arc<dyn Store>, StoreError> {
    match config.backend {
        crate::config::StorageBackend::Memory => Ok(Arc::new(memory::MemoryStore::default())),
        crate::config::StorageBackend::Embedded => {
            Ok(Arc::new(embedded::EmbeddedStore::open(&config.data_dir)?))
        }
        #[cfg(feature = "aws")]
        crate::config::StorageBackend::Aws => {
            let store = aws::AwsStore::connect(&config.aws).await?;
            // Deletions another instance (or this one, before a crash) left half done.
            match store.recover().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("finished {n} node deletions cut off earlier"),
                Err(e) => tracing::warn!(
                    "could not finish earlier node deletions (retried by the next create of each name): {e}"
                ),
            }
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "aws"))]
        crate::config::StorageBackend::Aws => Err(not_built_with_aws()),
    }
}

/// `stratus storage init`: creates what the configured backend needs before first use.
pub async fn init(config: &crate::config::StorageConfig) -> Result<String, StoreError> {
    match config.backend {
        crate::config::StorageBackend::Memory => Ok("the memory backend needs no setup".into()),
        crate::config::StorageBackend::Embedded => {
            embedded::EmbeddedStore::open(&config.data_dir)?;
            Ok(format!(
                "embedded store ready in {}",
                config.data_dir.display()
            ))
        }
        #[cfg(feature = "aws")]
        crate::config::StorageBackend::Aws => {
            aws::AwsStore::connect(&config.aws).await?.init().await?;
            Ok(format!(
                "DynamoDB table {} and S3 bucket {} ready",
                config.aws.table, config.aws.bucket
            ))
        }
        #[cfg(not(feature = "aws"))]
        crate::config::StorageBackend::Aws => Err(not_built_with_aws()),
    }
}

#[cfg(not(feature = "aws"))]
fn not_built_with_aws() -> StoreError {
    StoreError::Unavailable(
        "storage.backend = \"aws\" but this stratus was built without the `aws` feature: \
         rebuild with `cargo build --release --features aws`"
            .into(),
    )
}
