//! Items in S3, nodes/subscriptions/affiliations (and the item index) in one DynamoDB table.
//! Key design and request counts: docs/storage.md.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, KeySchemaElement, KeyType, Put,
    ReturnValue, ScalarAttributeType, TransactWriteItem, Update,
};
use aws_sdk_s3::primitives::ByteStream;

use super::{ItemPage, ItemQuery, Store, StoreError, StoreResult};
use crate::config::AwsConfig;
use crate::jid::{BareJid, Jid};
use crate::pubsub::model::{Affiliation, Item, NodeConfig, NodeRecord, ServiceId, Subscription};
use tracing::warn;

type Attrs = HashMap<String, AttributeValue>;

pub struct AwsStore {
    ddb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    table: String,
    bucket: String,
}

/// Items one publish trims at most (2 deletes each + 1 count update <= 100 transaction writes).
const MAX_TRIM_PER_PUBLISH: usize = 49;

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

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn node_pk(svc: &ServiceId, node: &str) -> String {
    format!("n|{}|{}", part(&svc.key()), part(node))
}

fn user_pk(svc: &ServiceId, bare: &str) -> String {
    format!("u|{}|{}", part(&svc.key()), part(bare))
}

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
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(cfg.region.clone()));
        if let Some(ep) = &cfg.endpoint {
            loader = loader.endpoint_url(ep);
        }
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
        let s3_conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        Ok(AwsStore {
            ddb: aws_sdk_dynamodb::Client::new(&shared),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            table: cfg.table.clone(),
            bucket: cfg.bucket.clone(),
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
        self.transact(items).await.map_err(unavailable)
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

    async fn delete_keys(&self, keys: Vec<(String, String)>) -> StoreResult<()> {
        // Transactions take up to 100 actions.
        for chunk in keys.chunks(100) {
            let items = chunk
                .iter()
                .map(|(pk, sk)| self.delete(pk, sk))
                .collect::<StoreResult<Vec<_>>>()?;
            self.transact_or_fail(items).await?;
        }
        Ok(())
    }

    async fn seq_of(&self, pk: &str, id: &str) -> StoreResult<Option<u64>> {
        Ok(self
            .get(pk, &format!("id|{id}"))
            .await?
            .map(|a| get_n(&a, "seq")))
    }

    fn object_key(svc: &ServiceId, node: &str, seq: u64) -> String {
        format!("{}/{}/{seq:020}", part(&svc.key()), part(node))
    }

    /// The payload key an item-id entry points at. Entries written before payload keys were
    /// random do not carry it: their payload is named by sequence (deleting that key when the
    /// item had no payload is harmless).
    fn payload_key(id_entry: &Attrs, svc: &ServiceId, node: &str) -> String {
        match id_entry.get("obj").and_then(|v| v.as_s().ok()) {
            Some(o) => o.clone(),
            None => Self::object_key(svc, node, get_n(id_entry, "seq")),
        }
    }

    /// A fresh payload key: random, so the upload need not wait for the sequence number.
    fn new_object_key(svc: &ServiceId, node: &str) -> String {
        format!(
            "{}/{}/r{:032x}",
            part(&svc.key()),
            part(node),
            rand::random::<u128>()
        )
    }

    /// Deletes S3 objects nothing refers to any more, in the background (a failure leaves an
    /// orphan object behind, never a dangling index entry).
    fn delete_objects_later(&self, keys: Vec<String>) {
        let keys: Vec<String> = keys.into_iter().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return;
        }
        let (s3, bucket) = (self.s3.clone(), self.bucket.clone());
        tokio::spawn(async move {
            for k in keys {
                if let Err(e) = s3.delete_object().bucket(&bucket).key(&k).send().await {
                    warn!("could not delete the unreferenced object {k}: {e}");
                }
            }
        });
    }

    /// Removes the `n` oldest items of a node; returns their ids and payload objects.
    async fn trim(&self, pk: &str, n: usize) -> StoreResult<(Vec<String>, Vec<String>)> {
        // One transaction holds at most 100 writes: two per item plus the count. Whatever is left
        // is trimmed by the next publishes.
        let oldest = self
            .query_prefix(pk, "i|", true, Some(n.min(MAX_TRIM_PER_PUBLISH)))
            .await?;
        let mut tx = Vec::new();
        let mut ids = Vec::new();
        let mut objects = Vec::new();
        for a in &oldest {
            let id = get_s(a, "id")?.to_owned();
            tx.push(self.delete(pk, get_s(a, "sk")?)?);
            tx.push(self.delete(pk, &format!("id|{id}"))?);
            let o = get_s(a, "obj")?;
            if !o.is_empty() {
                objects.push(o.to_owned());
            }
            ids.push(id);
        }
        if !tx.is_empty() {
            tx.push(self.add(pk, "meta", "cnt", -(ids.len() as i64))?);
            self.transact_or_fail(tx).await?;
        }
        Ok((ids, objects))
    }

    async fn put_object(&self, key: &str, body: &str) -> StoreResult<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_object(&self, key: &str) -> StoreResult<()> {
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Index entries to items: fetches each payload from S3 (concurrently).
    async fn hydrate(&self, index: Vec<Attrs>) -> StoreResult<Vec<Item>> {
        // The payloads of a page are fetched concurrently; results keep the index order.
        let mut fetches = tokio::task::JoinSet::new();
        let mut items = Vec::with_capacity(index.len());
        for (pos, a) in index.iter().enumerate() {
            let obj = get_s(a, "obj")?.to_owned();
            if !obj.is_empty() {
                let (s3, bucket) = (self.s3.clone(), self.bucket.clone());
                fetches.spawn(async move { (pos, fetch_object(&s3, &bucket, &obj).await) });
            }
            items.push(Item {
                id: get_s(a, "id")?.to_owned(),
                publisher: get_s(a, "pub")?.to_owned(),
                payload: "".into(),
                published_ms: get_n(a, "ts"),
            });
        }
        while let Some(done) = fetches.join_next().await {
            let (pos, payload) = done.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            items[pos].payload = payload?.into();
        }
        Ok(items)
    }
}

async fn fetch_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> StoreResult<String> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(unavailable)?;
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
        .into_bytes();
    String::from_utf8(bytes.to_vec()).map_err(corrupt)
}

#[async_trait]
impl Store for AwsStore {
    async fn create_node(
        &self,
        svc: &ServiceId,
        node: &NodeRecord,
        owner: &BareJid,
    ) -> StoreResult<bool> {
        let pk = node_pk(svc, &node.name);
        let bare = owner.to_bare().to_string();
        let rec = serde_json::to_string(node).map_err(corrupt)?;
        let meta = TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(HashMap::from([
                        ("pk".into(), s(&pk)),
                        ("sk".into(), s("meta")),
                        ("rec".into(), s(rec)),
                        ("seq".into(), n(1)),
                        ("cnt".into(), n(0)),
                    ])))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(unavailable)?,
            )
            .build();
        let items = vec![
            meta,
            self.put(HashMap::from([
                ("pk".into(), s(nodes_pk(svc))),
                ("sk".into(), s(&node.name)),
            ]))?,
            self.put(HashMap::from([
                ("pk".into(), s(&pk)),
                ("sk".into(), s(format!("a|{bare}"))),
                ("aff".into(), s("owner")),
            ]))?,
            self.put(HashMap::from([
                ("pk".into(), s(user_pk(svc, &bare))),
                ("sk".into(), s(format!("a|{}", node.name))),
                ("aff".into(), s("owner")),
            ]))?,
            self.add(&creator_pk(svc, &node.creator), "count", "n", 1)?,
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception()) =>
            {
                // The condition failed: the node exists (other reasons surface on the next call).
                match self.get(&pk, "meta").await? {
                    Some(_) => Ok(false),
                    None => Err(unavailable(e)),
                }
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn load_node(&self, svc: &ServiceId, node: &str) -> StoreResult<Option<NodeRecord>> {
        match self.get(&node_pk(svc, node), "meta").await? {
            Some(a) => Ok(Some(
                serde_json::from_str(get_s(&a, "rec")?).map_err(corrupt)?,
            )),
            None => Ok(None),
        }
    }

    async fn save_config(
        &self,
        svc: &ServiceId,
        node: &str,
        config: &NodeConfig,
    ) -> StoreResult<()> {
        let Some(mut rec) = self.load_node(svc, node).await? else {
            return Ok(());
        };
        rec.config = config.clone();
        self.ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&node_pk(svc, node), "meta")))
            .update_expression("SET rec = :r")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":r", s(serde_json::to_string(&rec).map_err(corrupt)?))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_node(&self, svc: &ServiceId, node: &str) -> StoreResult<bool> {
        let pk = node_pk(svc, node);
        let Some(rec) = self.load_node(svc, node).await? else {
            return Ok(false);
        };
        let all = self.query_prefix(&pk, "", true, None).await?;
        let mut keys = Vec::with_capacity(all.len() + 4);
        let mut objects = Vec::new();
        for a in &all {
            let sk = get_s(a, "sk")?.to_owned();
            if let Some(bare) = sk.strip_prefix("a|") {
                keys.push((user_pk(svc, bare), format!("a|{node}")));
            } else if let Some(rest) = sk.strip_prefix("s|") {
                let sub: Subscription = serde_json::from_str(get_s(a, "sub")?).map_err(corrupt)?;
                keys.push((
                    user_pk(svc, &sub.jid.to_bare().to_string()),
                    format!("s|{node}|{rest}"),
                ));
            } else if sk.starts_with("i|") {
                let obj = get_s(a, "obj")?;
                if !obj.is_empty() {
                    objects.push(obj.to_owned());
                }
            }
            keys.push((pk.clone(), sk));
        }
        keys.push((nodes_pk(svc), node.to_owned()));
        self.delete_keys(keys).await?;
        self.transact_or_fail(vec![self.add(
            &creator_pk(svc, &rec.creator),
            "count",
            "n",
            -1,
        )?])
        .await?;
        for o in objects {
            self.delete_object(&o).await?;
        }
        Ok(true)
    }

    async fn node_names(
        &self,
        svc: &ServiceId,
        after: Option<&str>,
        max: usize,
    ) -> StoreResult<Vec<String>> {
        let rows = match after {
            Some(a) => {
                self.query_range(&nodes_pk(svc), "", Some(a), true, Some(max))
                    .await?
            }
            None => {
                self.query_prefix(&nodes_pk(svc), "", true, Some(max))
                    .await?
            }
        };
        rows.iter()
            .map(|a| get_s(a, "sk").map(str::to_owned))
            .collect()
    }

    async fn count_nodes_created_by(&self, svc: &ServiceId, creator: &str) -> StoreResult<u64> {
        Ok(self
            .get(&creator_pk(svc, creator), "count")
            .await?
            .map(|a| get_n(&a, "n"))
            .unwrap_or(0))
    }

    async fn set_affiliation(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &BareJid,
        aff: Affiliation,
    ) -> StoreResult<()> {
        let bare = jid.to_bare().to_string();
        let (pk, upk) = (node_pk(svc, node), user_pk(svc, &bare));
        let items = if aff == Affiliation::None {
            vec![
                self.delete(&pk, &format!("a|{bare}"))?,
                self.delete(&upk, &format!("a|{node}"))?,
            ]
        } else {
            vec![
                self.put(HashMap::from([
                    ("pk".into(), s(&pk)),
                    ("sk".into(), s(format!("a|{bare}"))),
                    ("aff".into(), s(aff_str(aff))),
                ]))?,
                self.put(HashMap::from([
                    ("pk".into(), s(&upk)),
                    ("sk".into(), s(format!("a|{node}"))),
                    ("aff".into(), s(aff_str(aff))),
                ]))?,
            ]
        };
        self.transact_or_fail(items).await
    }

    async fn affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<(BareJid, Affiliation)>> {
        let rows = self
            .query_prefix(&node_pk(svc, node), "a|", true, None)
            .await?;
        rows.iter()
            .map(|a| {
                let jid = BareJid::parse(&get_s(a, "sk")?[2..]).map_err(corrupt)?;
                let aff =
                    Affiliation::parse(get_s(a, "aff")?).ok_or_else(|| corrupt("affiliation"))?;
                Ok((jid, aff))
            })
            .collect()
    }

    async fn user_affiliations(
        &self,
        svc: &ServiceId,
        jid: &BareJid,
    ) -> StoreResult<Vec<(String, Affiliation)>> {
        let rows = self
            .query_prefix(&user_pk(svc, &jid.to_bare().to_string()), "a|", true, None)
            .await?;
        rows.iter()
            .map(|a| {
                let node = get_s(a, "sk")?[2..].to_owned();
                Ok((
                    node,
                    Affiliation::parse(get_s(a, "aff")?).ok_or_else(|| corrupt("affiliation"))?,
                ))
            })
            .collect()
    }

    async fn put_subscription(
        &self,
        svc: &ServiceId,
        node: &str,
        sub: &Subscription,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(sub).map_err(corrupt)?;
        let rest = format!("{}|{}", part(&sub.jid.to_string()), part(&sub.subid));
        let items = vec![
            self.put(HashMap::from([
                ("pk".into(), s(node_pk(svc, node))),
                ("sk".into(), s(format!("s|{rest}"))),
                ("sub".into(), s(&json)),
            ]))?,
            self.put(HashMap::from([
                ("pk".into(), s(user_pk(svc, &sub.jid.to_bare().to_string()))),
                ("sk".into(), s(format!("s|{node}|{rest}"))),
                ("sub".into(), s(&json)),
                ("node".into(), s(node)),
            ]))?,
        ];
        self.transact_or_fail(items).await
    }

    async fn delete_subscription(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &Jid,
        subid: &str,
    ) -> StoreResult<bool> {
        let rest = format!("{}|{}", part(&jid.to_string()), part(subid));
        let old = self
            .ddb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(&node_pk(svc, node), &format!("s|{rest}"))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        self.ddb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(
                &user_pk(svc, &jid.to_bare().to_string()),
                &format!("s|{node}|{rest}"),
            )))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(old.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn subscriptions(&self, svc: &ServiceId, node: &str) -> StoreResult<Vec<Subscription>> {
        let rows = self
            .query_prefix(&node_pk(svc, node), "s|", true, None)
            .await?;
        rows.iter()
            .map(|a| serde_json::from_str(get_s(a, "sub")?).map_err(corrupt))
            .collect()
    }

    async fn user_subscriptions(
        &self,
        svc: &ServiceId,
        jid: &Jid,
    ) -> StoreResult<Vec<(String, Subscription)>> {
        let rows = self
            .query_prefix(&user_pk(svc, &jid.to_bare().to_string()), "s|", true, None)
            .await?;
        let mut out = Vec::new();
        for a in &rows {
            let sub: Subscription = serde_json::from_str(get_s(a, "sub")?).map_err(corrupt)?;
            if jid.is_bare() || sub.jid == *jid {
                out.push((get_s(a, "node")?.to_owned(), sub));
            }
        }
        Ok(out)
    }

    async fn put_item(
        &self,
        svc: &ServiceId,
        node: &str,
        item: &Item,
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>> {
        let pk = node_pk(svc, node);
        let id_sk = format!("id|{}", item.id);
        // The payload gets a key of its own, so that three independent requests run at once:
        // look up the id, reserve a sequence number, and make the payload durable in S3.
        let obj = if item.payload.is_empty() {
            String::new()
        } else {
            Self::new_object_key(svc, node)
        };
        let reserve = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&pk, "meta")))
            .update_expression("ADD seq :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send();
        let upload = async {
            if obj.is_empty() {
                Ok(())
            } else {
                self.put_object(&obj, &item.payload).await
            }
        };
        let (old, meta, uploaded) = tokio::join!(self.get(&pk, &id_sk), reserve, upload);
        let prepared = (|| Ok((old?, meta.map_err(unavailable)?, uploaded?)))();
        let (old, meta, ()) = match prepared {
            Ok(v) => v,
            Err(e) => {
                self.delete_objects_later(vec![obj]);
                return Err(e);
            }
        };
        let attrs = meta.attributes.unwrap_or_default();
        let seq = get_n(&attrs, "seq").saturating_sub(1);
        let is_new = old.is_none();
        let count = get_n(&attrs, "cnt") + u64::from(is_new);
        let mut tx = vec![
            self.put(HashMap::from([
                ("pk".into(), s(&pk)),
                ("sk".into(), s(seq_sk(seq))),
                ("id".into(), s(&item.id)),
                ("pub".into(), s(&item.publisher)),
                ("ts".into(), n(item.published_ms)),
                ("obj".into(), s(&obj)),
            ]))?,
            self.put(HashMap::from([
                ("pk".into(), s(&pk)),
                ("sk".into(), s(&id_sk)),
                ("seq".into(), n(seq)),
                ("obj".into(), s(&obj)),
            ]))?,
        ];
        let mut stale_objects = Vec::new();
        match &old {
            // Counted in the same transaction as the index entries: a crash cannot leave the
            // count off by one.
            None => tx.push(self.add(&pk, "meta", "cnt", 1)?),
            Some(a) => {
                tx.push(self.delete(&pk, &seq_sk(get_n(a, "seq")))?);
                stale_objects.push(Self::payload_key(a, svc, node));
            }
        }
        if let Err(e) = self.transact_or_fail(tx).await {
            self.delete_objects_later(vec![obj]);
            return Err(e);
        }
        let mut evicted = Vec::new();
        if let Some(max) = max_items
            && count > max
        {
            // The item is durable now: a failed trim is retried by the next publish rather than
            // failing this one.
            match self.trim(&pk, (count - max) as usize).await {
                Ok((ids, objects)) => {
                    evicted = ids;
                    stale_objects.extend(objects);
                }
                Err(e) => warn!("trimming node {node} failed, the next publish retries: {e}"),
            }
        }
        // Nothing points at these any more: deleted off the publish path.
        self.delete_objects_later(stale_objects);
        Ok(evicted)
    }

    async fn items(&self, svc: &ServiceId, node: &str, query: ItemQuery) -> StoreResult<ItemPage> {
        let pk = node_pk(svc, node);
        let count = self
            .get(&pk, "meta")
            .await?
            .map(|a| get_n(&a, "cnt"))
            .unwrap_or(0);
        let newest = matches!(query, ItemQuery::Newest(_) | ItemQuery::Before(None, _));
        let (mut index, first_index, reversed) = match query {
            ItemQuery::Newest(m) | ItemQuery::Before(None, m) => (
                self.query_prefix(&pk, "i|", false, Some(m)).await?,
                None,
                true,
            ),
            ItemQuery::After(None, m) => (
                self.query_prefix(&pk, "i|", true, Some(m)).await?,
                Some(0),
                false,
            ),
            ItemQuery::After(Some(id), m) => match self.seq_of(&pk, &id).await? {
                Some(seq) => (
                    self.query_range(&pk, "i|", Some(&seq_sk(seq)), true, Some(m))
                        .await?,
                    None,
                    false,
                ),
                None => (Vec::new(), None, false),
            },
            ItemQuery::Before(Some(id), m) => match self.seq_of(&pk, &id).await? {
                Some(seq) => (
                    self.query_range(&pk, "i|", Some(&seq_sk(seq)), false, Some(m))
                        .await?,
                    None,
                    true,
                ),
                None => (Vec::new(), None, true),
            },
        };
        if reversed {
            index.reverse();
        }
        let items = self.hydrate(index).await?;
        let first_index = if newest {
            Some(count.saturating_sub(items.len() as u64))
        } else {
            first_index
        };
        Ok(ItemPage {
            items,
            count,
            first_index,
        })
    }

    async fn items_by_id(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Item>> {
        let pk = node_pk(svc, node);
        let mut index = Vec::new();
        for id in ids {
            if let Some(a) = self.get(&pk, &format!("id|{id}")).await?
                && let Some(row) = self.get(&pk, &seq_sk(get_n(&a, "seq"))).await?
            {
                index.push(row);
            }
        }
        self.hydrate(index).await
    }

    async fn delete_item(&self, svc: &ServiceId, node: &str, id: &str) -> StoreResult<bool> {
        let pk = node_pk(svc, node);
        let Some(a) = self.get(&pk, &format!("id|{id}")).await? else {
            return Ok(false);
        };
        let seq = get_n(&a, "seq");
        let obj = Self::payload_key(&a, svc, node);
        self.transact_or_fail(vec![
            self.delete(&pk, &format!("id|{id}"))?,
            self.delete(&pk, &seq_sk(seq))?,
            self.add(&pk, "meta", "cnt", -1)?,
        ])
        .await?;
        self.delete_objects_later(vec![obj]);
        Ok(true)
    }

    async fn purge_items(&self, svc: &ServiceId, node: &str) -> StoreResult<()> {
        let pk = node_pk(svc, node);
        let rows = self.query_prefix(&pk, "i|", true, None).await?;
        let mut keys = Vec::new();
        let mut objects = Vec::new();
        for a in &rows {
            keys.push((pk.clone(), get_s(a, "sk")?.to_owned()));
            keys.push((pk.clone(), format!("id|{}", get_s(a, "id")?)));
            let o = get_s(a, "obj")?;
            if !o.is_empty() {
                objects.push(o.to_owned());
            }
        }
        self.delete_keys(keys).await?;
        self.ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&pk, "meta")))
            .update_expression("SET cnt = :z")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":z", n(0))
            .send()
            .await
            .map_err(unavailable)?;
        self.delete_objects_later(objects);
        Ok(())
    }
}
