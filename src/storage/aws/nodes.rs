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

    pub(super) async fn load_node_in(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Option<NodeRecord>> {
        match self.get(&node_pk(svc, node), "meta").await? {
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

    pub(super) async fn delete_node_in(&self, svc: &ServiceId, node: &str) -> StoreResult<bool> {
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
