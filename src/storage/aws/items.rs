//! Items: payloads in S3, the index (by sequence and by id) and counts in DynamoDB.

use futures_util::future::try_join_all;

use aws_sdk_s3::primitives::ByteStream;
use tracing::warn;

use super::*;

/// `:seq` for a condition on an id entry.
fn seq_value(seq: u64) -> Option<Attrs> {
    Some(HashMap::from([(":seq".to_owned(), n(seq))]))
}

/// Items one publish trims at most (2 deletes each + 1 count update <= 100 transaction writes).
const MAX_TRIM_PER_PUBLISH: usize = 49;

/// What a publish read before its transaction.
struct PreparedPut {
    olds: Vec<Option<Attrs>>,
    first_seq: u64,
    count_before: u64,
    /// The node's oldest index entries, read beside the rest when the node has a max_items: the
    /// items this publish may evict in its own transaction.
    oldest: Vec<Attrs>,
}

/// What a publish's transaction did.
struct Committed {
    count: u64,
    /// Ids evicted (max_items) in the same transaction.
    evicted: Vec<String>,
    /// Payloads nothing points at any more (replaced or evicted).
    stale_objects: Vec<String>,
}

impl AwsStore {
    /// One transaction for the whole batch: 2 index entries per item, 1 delete per replaced item
    /// and the count, at most 3 x BATCH_LIMIT + 1 writes. Each id entry is written on the
    /// condition that it is still what was read (absent, or pointing at the same sequence), so
    /// two publishes of one id at once cannot both replace the same entry and leave two; the
    /// loser reads again and retries. The count changes only while the node lives.
    pub(super) async fn put_items_in(
        &self,
        svc: &ServiceId,
        node: &str,
        items: &[Item],
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let pk = node_pk(svc, node);
        // Each payload gets a key of its own, so that three kinds of independent requests run at
        // once: look up the ids, reserve sequence numbers, and make the payloads durable in S3.
        let objects: Vec<String> = items
            .iter()
            .map(|i| {
                if i.payload.is_empty() {
                    String::new()
                } else {
                    Self::new_object_key(svc, node)
                }
            })
            .collect();
        let uploads = try_join_all(
            items
                .iter()
                .zip(&objects)
                .filter(|(_, o)| !o.is_empty())
                .map(|(i, o)| self.put_object(o, &i.payload)),
        );
        let first = self.prepare_put(
            &pk,
            items,
            max_items.is_some() && self.full.contains_key(&pk),
        );
        let (prepared, uploaded) = tokio::join!(first, uploads);
        let mut prepared = match uploaded.and(prepared) {
            Ok(p) => p,
            Err(e) => {
                self.delete_objects_later(objects);
                return Err(e);
            }
        };
        // A crash here leaves the uploaded payloads as orphans, which nothing points at.
        self.fail_points.check("put_items.uploaded")?;
        let mut attempt = 1;
        let committed = loop {
            match self
                .commit_put(svc, node, &pk, items, &objects, &prepared, max_items)
                .await
            {
                Ok(Some(done)) => break done,
                Ok(None) if attempt < ATTEMPTS => {
                    attempt += 1;
                    match self
                        .prepare_put(
                            &pk,
                            items,
                            max_items.is_some() && self.full.contains_key(&pk),
                        )
                        .await
                    {
                        Ok(p) => prepared = p,
                        // An earlier attempt may have been applied with its answer lost (the
                        // SDK retries on a cut connection): its entries may point at the
                        // uploads, which therefore stay (an orphan at worst, never a dangling
                        // entry).
                        Err(e) => return Err(e),
                    }
                }
                Ok(None) => {
                    return Err(StoreError::Unavailable(format!(
                        "node {node}: {ATTEMPTS} attempts lost to concurrent writers"
                    )));
                }
                // Not known to be unapplied: the uploads stay (see above).
                Err(e) => return Err(e),
            }
        };
        // A crash here: the items are durable and the eviction done; unanswered.
        self.fail_points.check("put_items.committed")?;
        let Committed {
            mut count,
            mut evicted,
            mut stale_objects,
        } = committed;
        if let Some(max) = max_items
            && count > max
        {
            // More to evict than the transaction could hold (max_items was lowered, or a trim
            // failed before). The items are durable now: a failed trim is retried by the next
            // publish rather than failing this one.
            match self.trim(&pk, (count - max) as usize).await {
                Ok((ids, objects)) => {
                    count -= ids.len() as u64;
                    evicted.extend(ids);
                    stale_objects.extend(objects);
                }
                Err(e) => warn!("trimming node {node} failed, the next publish retries: {e}"),
            }
        }
        if let Some(max) = max_items {
            if count >= max {
                self.full.insert(pk, ());
            } else {
                self.full.invalidate(&pk);
            }
        }
        // Nothing points at these any more: deleted off the publish path.
        self.delete_objects_later(stale_objects);
        Ok(evicted)
    }

    /// The reads a publish's transaction depends on, at once: the items' id entries, sequence
    /// numbers reserved on the live node (NodeGone when it is not), and with `evicting` the
    /// node's oldest entries, so that a full node's eviction goes into the same transaction
    /// instead of two more round trips after it.
    async fn prepare_put(
        &self,
        pk: &str,
        items: &[Item],
        evicting: bool,
    ) -> StoreResult<PreparedPut> {
        let reserve = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, "meta")))
            .update_expression("ADD seq :k")
            .condition_expression(LIVE)
            .expression_attribute_values(":k", n(items.len() as u64))
            .return_values(ReturnValue::AllNew)
            .send();
        let id_keys: Vec<String> = items.iter().map(|i| format!("id|{}", i.id)).collect();
        let lookups = try_join_all(id_keys.iter().map(|k| self.get(pk, k)));
        // One spare: the oldest may be an item this publish replaces.
        let oldest = async {
            if evicting {
                self.query_prefix(pk, "i|", true, Some(items.len() + 1))
                    .await
            } else {
                Ok(Vec::new())
            }
        };
        let (olds, meta, oldest) = tokio::join!(lookups, reserve, oldest);
        let meta = match meta {
            Ok(m) => m,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                return Err(StoreError::NodeGone);
            }
            Err(e) => return Err(unavailable(e)),
        };
        let attrs = meta.attributes.unwrap_or_default();
        Ok(PreparedPut {
            olds: olds?,
            first_seq: get_n(&attrs, "seq").saturating_sub(items.len() as u64),
            count_before: get_n(&attrs, "cnt"),
            oldest: oldest?,
        })
    }

    /// The publish's one transaction. Some when applied; None when a concurrent writer changed
    /// an id entry (or evicted an item) first: read again and retry; NodeGone when the node was
    /// deleted meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn commit_put(
        &self,
        svc: &ServiceId,
        node: &str,
        pk: &str,
        items: &[Item],
        objects: &[String],
        prepared: &PreparedPut,
        max_items: Option<u64>,
    ) -> StoreResult<Option<Committed>> {
        let added = prepared.olds.iter().filter(|o| o.is_none()).count() as u64;
        let mut tx = Vec::with_capacity(3 * items.len() + 1);
        let mut stale_objects = Vec::new();
        for (k, ((item, obj), old)) in items.iter().zip(objects).zip(&prepared.olds).enumerate() {
            let seq = prepared.first_seq + k as u64;
            tx.push(self.put(HashMap::from([
                ("pk".into(), s(pk)),
                ("sk".into(), s(seq_sk(seq))),
                ("id".into(), s(&item.id)),
                ("pub".into(), s(&item.publisher)),
                ("ts".into(), n(item.published_ms)),
                ("obj".into(), s(obj)),
            ]))?);
            let entry = HashMap::from([
                ("pk".into(), s(pk)),
                ("sk".into(), s(format!("id|{}", item.id))),
                ("seq".into(), n(seq)),
                ("obj".into(), s(obj)),
            ]);
            match old {
                None => tx.push(self.put_if(entry, "attribute_not_exists(pk)", None)?),
                Some(a) => {
                    let old_seq = get_n(a, "seq");
                    tx.push(self.put_if(entry, "seq = :seq", seq_value(old_seq))?);
                    tx.push(self.delete(pk, &seq_sk(old_seq))?);
                    // The entry may be this very publish's, from an attempt that was applied
                    // though its answer was lost: its payload is the one being kept.
                    let old_obj = Self::payload_key(a, svc, node);
                    if old_obj != *obj {
                        stale_objects.push(old_obj);
                    }
                }
            }
        }
        // max_items: the oldest entries beyond it go in this transaction, each on the condition
        // that it is still there (two writes each, within DynamoDB's 100 per transaction).
        let count_after = prepared.count_before + added;
        let mut evicted = Vec::new();
        if let Some(max) = max_items {
            let replaced: Vec<String> = prepared
                .olds
                .iter()
                .flatten()
                .map(|a| seq_sk(get_n(a, "seq")))
                .collect();
            let room = 100usize.saturating_sub(tx.len() + 1) / 2;
            let need = (count_after.saturating_sub(max) as usize).min(room);
            for a in &prepared.oldest {
                if evicted.len() >= need {
                    break;
                }
                let sk = get_s(a, "sk")?;
                let id = get_s(a, "id")?;
                if replaced.iter().any(|r| r == sk) || items.iter().any(|i| i.id == id) {
                    continue;
                }
                self.evict(pk, a, &mut tx, &mut evicted, &mut stale_objects)?;
            }
        }
        // Counted in the same transaction as the index entries (a crash cannot leave the count
        // off), and only while the node lives (a publish racing a deletion writes nothing).
        tx.push(self.add_count(pk, added as i64 - evicted.len() as i64)?);
        if self.transact_checked(tx).await? {
            // Applied, but the answer lost: as the SDK's retry of the same transaction would
            // find it (its conditions fail), or as a cut connection reports it.
            if self.fail_points.check("put_items.answer_lost").is_err() {
                return Ok(None);
            }
            self.fail_points.check("put_items.ambiguous")?;
            return Ok(Some(Committed {
                count: count_after - evicted.len() as u64,
                evicted,
                stale_objects,
            }));
        }
        match self.gone_or_retry(pk).await? {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    pub(super) async fn items_in(
        &self,
        svc: &ServiceId,
        node: &str,
        query: ItemQuery,
    ) -> StoreResult<ItemPage> {
        let pk = node_pk(svc, node);
        let Some(meta) = self.live_meta(&pk).await? else {
            // Absent, or under a tombstone: nothing of it is served.
            return Ok(ItemPage::default());
        };
        let count = get_n(&meta, "cnt");
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

    pub(super) async fn items_by_id_in(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Item>> {
        let pk = node_pk(svc, node);
        if self.live_meta(&pk).await?.is_none() {
            return Ok(Vec::new());
        }
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

    /// One transaction: 2 deletes per item present and the count. Each id entry is deleted on
    /// the condition that it still points where it was read, so two retracts at once cannot
    /// both count the same item down; the loser reads again.
    pub(super) async fn delete_items_in(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        let pk = node_pk(svc, node);
        let id_keys: Vec<String> = ids.iter().map(|id| format!("id|{id}")).collect();
        for _ in 0..ATTEMPTS {
            let entries = try_join_all(id_keys.iter().map(|k| self.get(&pk, k))).await?;
            let mut tx = Vec::new();
            let mut removed = Vec::new();
            let mut objects = Vec::new();
            for (id, entry) in ids.iter().zip(&entries) {
                let Some(a) = entry else { continue };
                let seq = get_n(a, "seq");
                tx.push(self.delete_if(&pk, &format!("id|{id}"), "seq = :seq", seq_value(seq))?);
                tx.push(self.delete(&pk, &seq_sk(seq))?);
                objects.push(Self::payload_key(a, svc, node));
                removed.push(id.clone());
            }
            if removed.is_empty() {
                return Ok(removed);
            }
            tx.push(self.add_count(&pk, -(removed.len() as i64))?);
            if self.transact_checked(tx).await? {
                self.delete_objects_later(objects);
                return Ok(removed);
            }
            if self.gone_or_retry(&pk).await?.is_some() {
                // Deleted meanwhile: its items go with it.
                return Ok(Vec::new());
            }
        }
        Err(StoreError::Unavailable(format!(
            "node {node}: {ATTEMPTS} attempts lost to concurrent writers"
        )))
    }

    /// Removes the items published before the purge began, oldest first, in transactions of at
    /// most MAX_TRIM_PER_PUBLISH items that count down what each removed (so a publish racing the
    /// purge keeps its item and its count).
    pub(super) async fn purge_items_in(&self, svc: &ServiceId, node: &str) -> StoreResult<()> {
        let pk = node_pk(svc, node);
        let Some(meta) = self.live_meta(&pk).await? else {
            return Ok(());
        };
        let end = seq_sk(get_n(&meta, "seq"));
        let mut objects = Vec::new();
        let mut conflicts = 0;
        loop {
            match self
                .remove_oldest(&pk, MAX_TRIM_PER_PUBLISH, Some(&end))
                .await
            {
                Ok(Some((ids, _))) if ids.is_empty() => break,
                Ok(Some((_, objs))) => {
                    objects.extend(objs);
                    // A crash between two batches: the oldest are gone, the rest intact.
                    if let Err(e) = self.fail_points.check("purge.batch") {
                        self.delete_objects_later(objects);
                        return Err(e);
                    }
                }
                Ok(None) if conflicts < ATTEMPTS => conflicts += 1,
                Ok(None) => {
                    return Err(StoreError::Unavailable(format!(
                        "node {node}: {ATTEMPTS} attempts lost to concurrent writers"
                    )));
                }
                Err(StoreError::NodeGone) => break,
                Err(e) => {
                    self.delete_objects_later(objects);
                    return Err(e);
                }
            }
        }
        self.delete_objects_later(objects);
        Ok(())
    }
}

/// Payload keys, trimming and eviction, S3 objects.
impl AwsStore {
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
    pub(super) fn delete_objects_later(&self, keys: Vec<String>) {
        let keys: Vec<String> = keys.into_iter().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return;
        }
        let (s3, bucket) = (self.s3.clone(), self.bucket.clone());
        let _task = tokio::spawn(async move {
            for k in keys {
                if let Err(e) = s3.delete_object().bucket(&bucket).key(&k).send().await {
                    warn!("could not delete the unreferenced object {k}: {e}");
                }
            }
        });
        #[cfg(test)]
        self.background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(_task);
    }

    /// Removes the `n` oldest items of a node; returns their ids and payload objects. A trim
    /// that loses to a concurrent writer removes nothing (the next publish trims again).
    async fn trim(&self, pk: &str, n: usize) -> StoreResult<(Vec<String>, Vec<String>)> {
        Ok(self
            .remove_oldest(pk, n.min(MAX_TRIM_PER_PUBLISH), None)
            .await?
            .unwrap_or_default())
    }

    /// Adds the removal of index entry `a` and of its id entry (if it still points there) to
    /// `tx`; notes its id and payload.
    fn evict(
        &self,
        pk: &str,
        a: &Attrs,
        tx: &mut Vec<TransactWriteItem>,
        ids: &mut Vec<String>,
        objects: &mut Vec<String>,
    ) -> StoreResult<()> {
        let sk = get_s(a, "sk")?;
        let id = get_s(a, "id")?;
        let seq: u64 = sk[2..].parse().map_err(corrupt)?;
        tx.push(self.delete_if(pk, sk, "attribute_exists(pk)", None)?);
        tx.push(self.delete_if(pk, &format!("id|{id}"), "seq = :seq", seq_value(seq))?);
        let o = get_s(a, "obj")?;
        if !o.is_empty() {
            objects.push(o.to_owned());
        }
        ids.push(id.to_owned());
        Ok(())
    }

    /// Removes up to `n` (<= MAX_TRIM_PER_PUBLISH) oldest items, those before the index key
    /// `before` if given, in one transaction that counts them down: Some((ids, payload
    /// objects)) when applied (empty: nothing to remove), None when a concurrent writer changed
    /// one of them first, NodeGone when the node is gone.
    async fn remove_oldest(
        &self,
        pk: &str,
        n: usize,
        before: Option<&str>,
    ) -> StoreResult<Option<(Vec<String>, Vec<String>)>> {
        // One transaction holds at most 100 writes: two per item plus the count.
        let oldest = self.query_prefix(pk, "i|", true, Some(n)).await?;
        let mut tx = Vec::new();
        let mut ids = Vec::new();
        let mut objects = Vec::new();
        for a in &oldest {
            let sk = get_s(a, "sk")?;
            if before.is_some_and(|b| sk >= b) {
                break;
            }
            self.evict(pk, a, &mut tx, &mut ids, &mut objects)?;
        }
        if tx.is_empty() {
            return Ok(Some((ids, objects)));
        }
        tx.push(self.add_count(pk, -(ids.len() as i64))?);
        if self.transact_checked(tx).await? {
            return Ok(Some((ids, objects)));
        }
        match self.gone_or_retry(pk).await? {
            Some(e) => Err(e),
            None => Ok(None),
        }
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
