//! Nodes: records, configurations, deletion with everything they hold, listings.

use super::*;

impl AwsStore {
    pub(super) async fn create_node_in(
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
        for _ in 0..ATTEMPTS {
            match self.transact(items.clone()).await {
                Ok(()) => return Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_transaction_canceled_exception()) =>
                {
                    match self.get(&pk, "meta").await? {
                        // A deletion of an old node of this name was cut off: finish it (nothing
                        // of the old node may survive into the new one), then create.
                        Some(a) if a.contains_key("gone") => {
                            self.finish_deletion(&svc.key(), &node.name).await?
                        }
                        // The node exists.
                        Some(_) => return Ok(false),
                        // A conflict with a concurrent transaction: try again.
                        None => {}
                    }
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "node {}: {ATTEMPTS} attempts lost to concurrent writers",
            node.name
        )))
    }

    pub(super) async fn load_node_in(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Option<NodeRecord>> {
        match self.live_meta(&node_pk(svc, node)).await? {
            Some(a) => Ok(Some(
                serde_json::from_str(get_s(&a, "rec")?).map_err(corrupt)?,
            )),
            None => Ok(None),
        }
    }

    pub(super) async fn save_config_in(
        &self,
        svc: &ServiceId,
        node: &str,
        config: &NodeConfig,
    ) -> StoreResult<()> {
        let Some(mut rec) = self.load_node(svc, node).await? else {
            return Err(StoreError::NodeGone);
        };
        rec.config = config.clone();
        let saved = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&node_pk(svc, node), "meta")))
            .update_expression("SET rec = :r ADD ver :one")
            .condition_expression(LIVE)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":r", s(serde_json::to_string(&rec).map_err(corrupt)?))
            .send()
            .await;
        match saved {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::NodeGone)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Deletion in two steps, each safe to be cut off after. First one transaction makes the
    /// node gone: its record becomes a tombstone (`gone`), it leaves the node list and its
    /// creator's count, and a pending-deletion entry is written. From then on every write to the
    /// node fails its LIVE condition and every read finds no node. Then its entries are removed
    /// in transactions that each check the tombstone is still there, the tombstone last. A cut
    /// off deletion is finished by the next start ([`AwsStore::recover`]) or by the next create
    /// of the same name, so nothing of the old node reaches a new one.
    pub(super) async fn delete_node_in(&self, svc: &ServiceId, node: &str) -> StoreResult<bool> {
        let pk = node_pk(svc, node);
        let Some(meta) = self.live_meta(&pk).await? else {
            return Ok(false);
        };
        let rec: NodeRecord = serde_json::from_str(get_s(&meta, "rec")?).map_err(corrupt)?;
        let tombstone = TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(&pk, "meta")))
                    .update_expression("SET gone = :t")
                    .condition_expression(LIVE)
                    .expression_attribute_values(":t", n(crate::pubsub::model::now_ms()))
                    .build()
                    .map_err(unavailable)?,
            )
            .build();
        let tx = vec![
            tombstone,
            self.delete(&nodes_pk(svc), node)?,
            self.add(&creator_pk(svc, &rec.creator), "count", "n", -1)?,
            self.put(HashMap::from([
                ("pk".into(), s(PENDING_PK)),
                ("sk".into(), s(&pk)),
                ("svc".into(), s(svc.key())),
                ("node".into(), s(node)),
            ]))?,
        ];
        if !self.transact_checked(tx).await? {
            // Deleted by someone else meanwhile, or a conflict: report what is true now.
            return match self.live_meta(&pk).await? {
                None => Ok(false),
                Some(_) => Err(StoreError::Unavailable(format!(
                    "node {node}: the deletion lost to a concurrent write; try again"
                ))),
            };
        }
        self.fail_points.check("delete_node.tombstoned")?;
        self.finish_deletion(&svc.key(), node).await?;
        Ok(true)
    }

    /// Removes what is left of a node under a tombstone, then the tombstone and its pending entry.
    /// Each transaction checks the tombstone, so a finisher working from a stale listing cannot
    /// touch a new node of the same name; several finishers at once are harmless.
    pub(super) async fn finish_deletion(&self, svc_key: &str, node: &str) -> StoreResult<()> {
        let pk = node_pk_of(svc_key, node);
        let tombstoned = "attribute_exists(gone)";
        loop {
            // At most 49 entries and their users' copies, plus the check: <= 100 writes.
            let rows = self.query_prefix(&pk, "", true, Some(50)).await?;
            let mut tx = vec![self.check(&pk, "meta", tombstoned)?];
            let mut objects = Vec::new();
            for a in rows
                .iter()
                .filter(|a| get_s(a, "sk").is_ok_and(|sk| sk != "meta"))
            {
                if tx.len() > 97 {
                    break;
                }
                let sk = get_s(a, "sk")?.to_owned();
                if let Some(bare) = sk.strip_prefix("a|") {
                    tx.push(self.delete(&user_pk_of(svc_key, bare), &format!("a|{node}"))?);
                } else if let Some(rest) = sk.strip_prefix("s|") {
                    let sub: Subscription =
                        serde_json::from_str(get_s(a, "sub")?).map_err(corrupt)?;
                    tx.push(self.delete(
                        &user_pk_of(svc_key, &sub.jid.to_bare().to_string()),
                        &format!("s|{node}|{rest}"),
                    )?);
                } else if sk.starts_with("i|") {
                    let obj = get_s(a, "obj")?;
                    if !obj.is_empty() {
                        objects.push(obj.to_owned());
                    }
                }
                tx.push(self.delete(&pk, &sk)?);
            }
            if tx.len() == 1 {
                // Only the tombstone is left.
                let last = vec![
                    self.delete_if(&pk, "meta", tombstoned, None)?,
                    self.delete(PENDING_PK, &pk)?,
                ];
                if !self.transact_checked(last).await?
                    && self
                        .get(&pk, "meta")
                        .await?
                        .is_some_and(|a| a.contains_key("gone"))
                {
                    continue;
                }
                return Ok(());
            }
            if !self.transact_checked(tx).await? {
                match self.get(&pk, "meta").await? {
                    // Finished by another, or a new node already stands there.
                    Some(a) if !a.contains_key("gone") => return Ok(()),
                    None => return Ok(()),
                    // A conflict: list again.
                    Some(_) => continue,
                }
            }
            self.fail_points.check("delete_node.cleaning")?;
            // Nothing refers to these payloads any more.
            self.delete_objects_later(objects);
        }
    }

    /// Finishes the deletions a crash or an outage cut off (run when the store opens).
    pub async fn recover(&self) -> StoreResult<usize> {
        let pending = self.query_prefix(PENDING_PK, "", true, None).await?;
        for a in &pending {
            self.finish_deletion(get_s(a, "svc")?, get_s(a, "node")?)
                .await?;
        }
        Ok(pending.len())
    }

    pub(super) async fn node_names_in(
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

    /// A scan of the table for node partitions (`nodes|SERVICE`): the whole table is read, which
    /// only an export does.
    pub(super) async fn services_in(
        &self,
        after: Option<&ServiceId>,
        max: usize,
    ) -> StoreResult<Vec<ServiceId>> {
        let mut keys = std::collections::BTreeSet::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :p)")
                .expression_attribute_values(":p", s("nodes|"))
                .projection_expression("pk")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for row in page.items() {
                if let Some(svc) = get_s(row, "pk")?.strip_prefix("nodes|") {
                    keys.insert(unpart(svc));
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        let after = after.map(ServiceId::key);
        Ok(keys
            .into_iter()
            .filter(|k| after.as_ref().is_none_or(|a| k > a))
            .filter_map(|k| ServiceId::from_key(&k))
            .take(max)
            .collect())
    }

    pub(super) async fn count_nodes_created_by_in(
        &self,
        svc: &ServiceId,
        creator: &str,
    ) -> StoreResult<u64> {
        Ok(self
            .get(&creator_pk(svc, creator), "count")
            .await?
            .map(|a| get_n(&a, "n"))
            .unwrap_or(0))
    }
}
