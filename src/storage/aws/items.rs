//! Items: payloads in S3, the index (by sequence and by id) and counts in DynamoDB.

use super::*;

impl AwsStore {
    pub(super) async fn put_item_in(
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

    pub(super) async fn delete_item_in(
        &self,
        svc: &ServiceId,
        node: &str,
        id: &str,
    ) -> StoreResult<bool> {
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
