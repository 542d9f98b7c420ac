//! Items in S3, nodes/subscriptions/affiliations (and the item index) in one DynamoDB table.
//! Key design and request counts: docs/storage.md.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement,
    KeyType, Put, ReturnValue, ScalarAttributeType, TransactWriteItem, Update,
};

use super::failpoint::FailPoints;
use super::{
    Freshness, ItemPage, ItemQuery, NodeVersion, Store, StoreError, StoreResult, SubscriptionChange,
};
use crate::config::AwsConfig;
use crate::jid::{BareJid, Jid};
use crate::pubsub::model::{Affiliation, Item, NodeConfig, NodeRecord, ServiceId, Subscription};

type Attrs = HashMap<String, AttributeValue>;

pub struct AwsStore {
    ddb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    table: String,
    bucket: String,
    /// `batch` fails a batch's transaction before it is sent (after the S3 uploads).
    fail_points: FailPoints,
    /// Background deletions, for tests to wait for ([`Store::settle`]).
    #[cfg(test)]
    background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Nodes that were full (count >= max_items) after their last publish here: the next
    /// publish reads their oldest entries beside its other reads and evicts in its own
    /// transaction (2 round trips instead of 4). A hint only: when wrong, a publish evicts after
    /// its transaction, or made one Query for nothing.
    full: moka::sync::Cache<String, ()>,
}

/// The condition of every write to a node's partition: the node exists and is not being deleted
/// (a tombstone, `gone`, marks a deletion in progress).
const LIVE: &str = "attribute_exists(pk) AND attribute_not_exists(gone)";

/// Attempts of a write whose conditions lost to a concurrent writer, before it reports an outage.
const ATTEMPTS: usize = 8;

fn unavailable<E: std::error::Error>(e: E) -> StoreError {
    StoreError::Unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Escapes a key part so the `|` separator cannot occur inside it.
fn part(s: &str) -> String {
    s.replace('%', "%25").replace('|', "%7C")
}

/// The string [`part`] escaped.
fn unpart(s: &str) -> String {
    s.replace("%7C", "|").replace("%25", "%")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn node_pk(svc: &ServiceId, node: &str) -> String {
    node_pk_of(&svc.key(), node)
}

fn node_pk_of(svc_key: &str, node: &str) -> String {
    format!("n|{}|{}", part(svc_key), part(node))
}

fn user_pk(svc: &ServiceId, bare: &str) -> String {
    user_pk_of(&svc.key(), bare)
}

fn user_pk_of(svc_key: &str, bare: &str) -> String {
    format!("u|{}|{}", part(svc_key), part(bare))
}

/// The partition listing deletions in progress (sort key: the node's partition key).
const PENDING_PK: &str = "deleting";

fn nodes_pk(svc: &ServiceId) -> String {
    format!("nodes|{}", part(&svc.key()))
}

fn creator_pk(svc: &ServiceId, creator: &str) -> String {
    format!("creator|{}|{}", part(&svc.key()), part(creator))
}

fn seq_sk(seq: u64) -> String {
    format!("i|{seq:020}")
}

fn key(pk: &str, sk: &str) -> Attrs {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn get_s<'a>(a: &'a Attrs, k: &str) -> StoreResult<&'a str> {
    a.get(k)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| corrupt(format!("missing {k}")))
}

fn get_n(a: &Attrs, k: &str) -> u64 {
    a.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn aff_str(a: Affiliation) -> &'static str {
    a.as_str()
}

impl AwsStore {
    pub async fn connect(cfg: &AwsConfig) -> StoreResult<AwsStore> {
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(cfg.region.clone()));
        // Throttling and 5xx are retried with backoff (the SDK's standard mode, 3 attempts), all
        // within a deadline: a storage outage fails the request instead of hanging it.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(2))
            .operation_attempt_timeout(std::time::Duration::from_secs(3))
            .operation_timeout(std::time::Duration::from_secs(10))
            .build();
        let shared = loader
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
            .load()
            .await;
        // Each service has its own endpoint: S3 and DynamoDB may be different servers.
        let mut ddb_conf = aws_sdk_dynamodb::config::Builder::from(&shared);
        ddb_conf.set_endpoint_url(cfg.dynamodb_endpoint().map(str::to_owned));
        let mut s3_conf = aws_sdk_s3::config::Builder::from(&shared);
        s3_conf.set_endpoint_url(cfg.s3_endpoint().map(str::to_owned));
        let s3_conf = s3_conf
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        Ok(AwsStore {
            ddb: aws_sdk_dynamodb::Client::from_conf(ddb_conf.build()),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            table: cfg.table.clone(),
            bucket: cfg.bucket.clone(),
            fail_points: FailPoints::default(),
            #[cfg(test)]
            background: Default::default(),
            full: moka::sync::Cache::new(100_000),
        })
    }

    /// `stratus storage init`: creates the table (pk/sk strings, on-demand) and the bucket.
    pub async fn init(&self) -> StoreResult<()> {
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(unavailable)
        };
        let key_el = |n: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
                .map_err(unavailable)
        };
        let created = self
            .ddb
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key_el("pk", KeyType::Hash)?)
            .key_schema(key_el("sk", KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        if let Err(e) = created
            && !e
                .as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception())
        {
            return Err(unavailable(e));
        }
        let bucket = self.s3.create_bucket().bucket(&self.bucket).send().await;
        if let Err(e) = bucket
            && !e.as_service_error().is_some_and(|se| {
                se.is_bucket_already_owned_by_you() || se.is_bucket_already_exists()
            })
        {
            return Err(unavailable(e));
        }
        Ok(())
    }

    async fn get(&self, pk: &str, sk: &str) -> StoreResult<Option<Attrs>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// Every item of a partition whose sort key starts with `prefix` (paged until done or `max`).
    async fn query_prefix(
        &self,
        pk: &str,
        prefix: &str,
        forward: bool,
        max: Option<usize>,
    ) -> StoreResult<Vec<Attrs>> {
        self.query_range(pk, prefix, None, forward, max).await
    }

    /// Items of a partition with sort keys starting with `prefix`, in `forward` or reverse order,
    /// strictly after (in that order) the sort key `start_after` when given.
    async fn query_range(
        &self,
        pk: &str,
        prefix: &str,
        start_after: Option<&str>,
        forward: bool,
        max: Option<usize>,
    ) -> StoreResult<Vec<Attrs>> {
        let mut out = Vec::new();
        let mut start: Option<Attrs> = start_after.map(|sk| key(pk, sk));
        loop {
            let mut q = self
                .ddb
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":p", s(pk))
                .scan_index_forward(forward)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            q = if prefix.is_empty() {
                q.key_condition_expression("pk = :p")
            } else {
                q.key_condition_expression("pk = :p AND begins_with(sk, :pre)")
                    .expression_attribute_values(":pre", s(prefix))
            };
            if let Some(m) = max {
                q = q.limit((m - out.len()).clamp(1, 1000) as i32);
            }
            let page = q.send().await.map_err(unavailable)?;
            out.extend(page.items.unwrap_or_default());
            if max.is_some_and(|m| out.len() >= m) {
                break;
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<
        (),
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        >,
    > {
        self.ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
    }

    async fn transact_or_fail(&self, items: Vec<TransactWriteItem>) -> StoreResult<()> {
        self.fail_points.check("batch")?;
        self.transact(items).await.map_err(unavailable)
    }

    /// A transaction whose conditions may fail: Ok(true) when applied, Ok(false) when a
    /// condition failed (nothing applied), Err on an outage.
    async fn transact_checked(&self, items: Vec<TransactWriteItem>) -> StoreResult<bool> {
        self.fail_points.check("batch")?;
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The node's record when it exists and is not being deleted.
    async fn live_meta(&self, pk: &str) -> StoreResult<Option<Attrs>> {
        Ok(self
            .get(pk, "meta")
            .await?
            .filter(|a| !a.contains_key("gone")))
    }

    /// A node's rows under `prefix`, read beside its meta record: none when the node is absent
    /// or under a tombstone, so nothing of a deleted node is served while its remains are
    /// cleared.
    async fn query_live(&self, pk: &str, prefix: &str) -> StoreResult<Vec<Attrs>> {
        let (meta, rows) = tokio::try_join!(
            self.live_meta(pk),
            self.query_prefix(pk, prefix, true, None)
        )?;
        Ok(if meta.is_some() { rows } else { Vec::new() })
    }

    /// After a cancelled transaction on a node: NodeGone when the node is gone, else None (a
    /// concurrent writer won a condition: read again and retry).
    async fn gone_or_retry(&self, pk: &str) -> StoreResult<Option<StoreError>> {
        Ok(match self.live_meta(pk).await? {
            None => Some(StoreError::NodeGone),
            Some(_) => None,
        })
    }

    /// Applies a batch to a live node: `tx` and the node's config version moved on, on the
    /// condition that the node lives, in one transaction, retried when it loses to a concurrent
    /// transaction; NodeGone when the node is gone (nothing written).
    async fn transact_on_node(&self, pk: &str, mut tx: Vec<TransactWriteItem>) -> StoreResult<()> {
        tx.push(self.bump_config(pk, LIVE)?);
        for _ in 0..ATTEMPTS {
            if self.transact_checked(tx.clone()).await? {
                return Ok(());
            }
            if let Some(e) = self.gone_or_retry(pk).await? {
                return Err(e);
            }
        }
        Err(StoreError::Unavailable(format!(
            "{pk}: {ATTEMPTS} attempts lost to concurrent writers"
        )))
    }

    /// Moves the node's config version on (`ver`: affiliations, subscriptions, configuration),
    /// on `condition`: other instances see from it that their cached node is stale.
    fn bump_config(&self, pk: &str, condition: &str) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, "meta")))
                    .update_expression("ADD ver :one")
                    .condition_expression(condition)
                    .expression_attribute_values(":one", n(1))
                    .build()
                    .map_err(unavailable)?,
            )
            .build())
    }

    /// A transaction entry that checks a condition on a key without writing it.
    fn check(&self, pk: &str, sk: &str, condition: &str) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, sk)))
                    .condition_expression(condition)
                    .build()
                    .map_err(unavailable)?,
            )
            .build())
    }

    /// A Put with a condition on the key's current item.
    fn put_if(
        &self,
        item: Attrs,
        condition: &str,
        values: Option<Attrs>,
    ) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression(condition)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(unavailable)?,
            )
            .build())
    }

    /// A Delete with a condition on the key's current item.
    fn delete_if(
        &self,
        pk: &str,
        sk: &str,
        condition: &str,
        values: Option<Attrs>,
    ) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, sk)))
                    .condition_expression(condition)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(unavailable)?,
            )
            .build())
    }

    /// Adds `by` to the node's item count, only while the node lives.
    fn add_count(&self, pk: &str, by: i64) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, "meta")))
                    // `iv`: the items version, which other instances' last-item caches check.
                    .update_expression("ADD cnt :d, iv :one")
                    .condition_expression(LIVE)
                    .expression_attribute_values(":d", AttributeValue::N(by.to_string()))
                    .expression_attribute_values(":one", n(1))
                    .build()
                    .map_err(unavailable)?,
            )
            .build())
    }

    fn put(&self, item: Attrs) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(unavailable)?,
            )
            .build())
    }

    fn delete(&self, pk: &str, sk: &str) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, sk)))
                    .build()
                    .map_err(unavailable)?,
            )
            .build())
    }

    fn add(&self, pk: &str, sk: &str, attr: &str, by: i64) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(pk, sk)))
                    .update_expression(format!("ADD {attr} :d"))
                    .expression_attribute_values(":d", AttributeValue::N(by.to_string()))
                    .build()
                    .map_err(unavailable)?,
            )
            .build())
    }

    async fn seq_of(&self, pk: &str, id: &str) -> StoreResult<Option<u64>> {
        Ok(self
            .get(pk, &format!("id|{id}"))
            .await?
            .map(|a| get_n(&a, "seq")))
    }
}

mod items;
mod nodes;
mod subscriptions;

// Each operation is written with its kind, in nodes.rs, subscriptions.rs and items.rs.
#[async_trait]
impl Store for AwsStore {
    async fn create_node(
        &self,
        svc: &ServiceId,
        node: &NodeRecord,
        owner: &BareJid,
    ) -> StoreResult<bool> {
        self.create_node_in(svc, node, owner).await
    }

    async fn load_node(&self, svc: &ServiceId, node: &str) -> StoreResult<Option<NodeRecord>> {
        self.load_node_in(svc, node).await
    }

    async fn save_config(
        &self,
        svc: &ServiceId,
        node: &str,
        config: &NodeConfig,
    ) -> StoreResult<()> {
        self.save_config_in(svc, node, config).await
    }

    async fn delete_node(&self, svc: &ServiceId, node: &str) -> StoreResult<bool> {
        self.delete_node_in(svc, node).await
    }

    async fn node_names(
        &self,
        svc: &ServiceId,
        after: Option<&str>,
        max: usize,
    ) -> StoreResult<Vec<String>> {
        self.node_names_in(svc, after, max).await
    }

    async fn services(&self, after: Option<&ServiceId>, max: usize) -> StoreResult<Vec<ServiceId>> {
        self.services_in(after, max).await
    }

    async fn count_nodes_created_by(&self, svc: &ServiceId, creator: &str) -> StoreResult<u64> {
        self.count_nodes_created_by_in(svc, creator).await
    }

    async fn set_affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[(BareJid, Affiliation)],
    ) -> StoreResult<()> {
        self.set_affiliations_in(svc, node, changes).await
    }

    async fn affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<(BareJid, Affiliation)>> {
        self.affiliations_in(svc, node).await
    }

    async fn user_affiliations(
        &self,
        svc: &ServiceId,
        jid: &BareJid,
    ) -> StoreResult<Vec<(String, Affiliation)>> {
        self.user_affiliations_in(svc, jid).await
    }

    async fn change_subscriptions(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[SubscriptionChange],
    ) -> StoreResult<()> {
        self.change_subscriptions_in(svc, node, changes).await
    }

    async fn delete_subscription(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &Jid,
        subid: &str,
    ) -> StoreResult<bool> {
        self.delete_subscription_in(svc, node, jid, subid).await
    }

    async fn subscriptions(&self, svc: &ServiceId, node: &str) -> StoreResult<Vec<Subscription>> {
        self.subscriptions_in(svc, node).await
    }

    async fn user_subscriptions(
        &self,
        svc: &ServiceId,
        jid: &Jid,
    ) -> StoreResult<Vec<(String, Subscription)>> {
        self.user_subscriptions_in(svc, jid).await
    }

    async fn put_items(
        &self,
        svc: &ServiceId,
        node: &str,
        items: &[Item],
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>> {
        self.put_items_in(svc, node, items, max_items).await
    }

    async fn items(&self, svc: &ServiceId, node: &str, query: ItemQuery) -> StoreResult<ItemPage> {
        self.items_in(svc, node, query).await
    }

    async fn items_by_id(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Item>> {
        self.items_by_id_in(svc, node, ids).await
    }

    async fn delete_items(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        self.delete_items_in(svc, node, ids).await
    }

    async fn purge_items(&self, svc: &ServiceId, node: &str) -> StoreResult<()> {
        self.purge_items_in(svc, node).await
    }

    async fn recover(&self) -> StoreResult<usize> {
        AwsStore::recover(self).await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn node_version(&self, svc: &ServiceId, node: &str) -> StoreResult<Freshness> {
        Ok(match self.live_meta(&node_pk(svc, node)).await? {
            Some(a) => Freshness::At(NodeVersion {
                config: get_n(&a, "ver"),
                items: get_n(&a, "iv"),
            }),
            None => Freshness::Gone,
        })
    }

    #[cfg(test)]
    fn fail_points(&self) -> &FailPoints {
        &self.fail_points
    }

    #[cfg(test)]
    async fn settle(&self) {
        let tasks: Vec<_> = self
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}
