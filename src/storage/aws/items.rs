//! Items: payloads in S3, the index (by sequence and by id) and counts in DynamoDB.

use futures_util::future::try_join_all;

use super::*;

impl AwsStore {
    /// One transaction for the whole batch: 2 index entries per item, 1 delete per replaced item
    /// and the count, at most 3 x BATCH_LIMIT + 1 writes.
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
        let reserve = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&pk, "meta")))
            .update_expression("ADD seq :k")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":k", n(items.len() as u64))
            .return_values(ReturnValue::AllNew)
            .send();
        let id_keys: Vec<String> = items.iter().map(|i| format!("id|{}", i.id)).collect();
        let lookups = try_join_all(id_keys.iter().map(|k| self.get(&pk, k)));
        let uploads = try_join_all(
            items
                .iter()
                .zip(&objects)
                .filter(|(_, o)| !o.is_empty())
                .map(|(i, o)| self.put_object(o, &i.payload)),
        );
        let (olds, meta, uploaded) = tokio::join!(lookups, reserve, uploads);
        let prepared = (|| Ok((olds?, meta.map_err(unavailable)?, uploaded?)))();
        let (olds, meta, _) = match prepared {
            Ok(v) => v,
            Err(e) => {
                self.delete_objects_later(objects);
                return Err(e);
            }
        };
        let attrs = meta.attributes.unwrap_or_default();
        let first_seq = get_n(&attrs, "seq").saturating_sub(items.len() as u64);
        let added = olds.iter().filter(|o| o.is_none()).count() as u64;
        let count = get_n(&attrs, "cnt") + added;
        let mut tx = Vec::with_capacity(3 * items.len() + 1);
        let mut stale_objects = Vec::new();
        for (k, ((item, obj), old)) in items.iter().zip(&objects).zip(&olds).enumerate() {
            let seq = first_seq + k as u64;
            tx.push(self.put(HashMap::from([
                ("pk".into(), s(&pk)),
                ("sk".into(), s(seq_sk(seq))),
                ("id".into(), s(&item.id)),
                ("pub".into(), s(&item.publisher)),
                ("ts".into(), n(item.published_ms)),
                ("obj".into(), s(obj)),
            ]))?);
            tx.push(self.put(HashMap::from([
                ("pk".into(), s(&pk)),
                ("sk".into(), s(format!("id|{}", item.id))),
                ("seq".into(), n(seq)),
                ("obj".into(), s(obj)),
            ]))?);
            if let Some(a) = old {
                tx.push(self.delete(&pk, &seq_sk(get_n(a, "seq")))?);
                stale_objects.push(Self::payload_key(a, svc, node));
            }
        }
        // Counted in the same transaction as the index entries: a crash cannot leave the count
        // off.
        if added > 0 {
            tx.push(self.add(&pk, "meta", "cnt", added as i64)?);
        }
        if let Err(e) = self.transact_or_fail(tx).await {
            self.delete_objects_later(objects);
            return Err(e);
        }
        let mut evicted = Vec::new();
        if let Some(max) = max_items
            && count > max
        {
            // The items are durable now: a failed trim is retried by the next publish rather
            // than failing this one.
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

    pub(super) async fn items_in(
        &self,
        svc: &ServiceId,
        node: &str,
        query: ItemQuery,
    ) -> StoreResult<ItemPage> {
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

    pub(super) async fn items_by_id_in(
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

    /// One transaction: 2 deletes per item present and the count.
    pub(super) async fn delete_items_in(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        let pk = node_pk(svc, node);
        let id_keys: Vec<String> = ids.iter().map(|id| format!("id|{id}")).collect();
        let entries = try_join_all(id_keys.iter().map(|k| self.get(&pk, k))).await?;
        let mut tx = Vec::new();
        let mut removed = Vec::new();
        let mut objects = Vec::new();
        for (id, entry) in ids.iter().zip(&entries) {
            let Some(a) = entry else { continue };
            tx.push(self.delete(&pk, &format!("id|{id}"))?);
            tx.push(self.delete(&pk, &seq_sk(get_n(a, "seq")))?);
            objects.push(Self::payload_key(a, svc, node));
            removed.push(id.clone());
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        tx.push(self.add(&pk, "meta", "cnt", -(removed.len() as i64))?);
        self.transact_or_fail(tx).await?;
        self.delete_objects_later(objects);
        Ok(removed)
    }

    pub(super) async fn purge_items_in(&self, svc: &ServiceId, node: &str) -> StoreResult<()> {
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
