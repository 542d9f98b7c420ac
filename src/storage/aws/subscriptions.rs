//! Affiliations and subscriptions, each indexed by node and by user.

use super::*;

impl AwsStore {
    /// One transaction: 2 writes per change (the node's entry and the user's).
    pub(super) async fn set_affiliations_in(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[(BareJid, Affiliation)],
    ) -> StoreResult<()> {
        let pk = node_pk(svc, node);
        let mut tx = Vec::with_capacity(2 * changes.len());
        for (jid, aff) in changes {
            let bare = jid.to_string();
            let upk = user_pk(svc, &bare);
            if *aff == Affiliation::None {
                tx.push(self.delete(&pk, &format!("a|{bare}"))?);
                tx.push(self.delete(&upk, &format!("a|{node}"))?);
            } else {
                tx.push(self.put(HashMap::from([
                    ("pk".into(), s(&pk)),
                    ("sk".into(), s(format!("a|{bare}"))),
                    ("aff".into(), s(aff_str(*aff))),
                ]))?);
                tx.push(self.put(HashMap::from([
                    ("pk".into(), s(&upk)),
                    ("sk".into(), s(format!("a|{node}"))),
                    ("aff".into(), s(aff_str(*aff))),
                ]))?);
            }
        }
        if tx.is_empty() {
            return Ok(());
        }
        self.transact_on_node(&pk, tx).await
    }

    pub(super) async fn affiliations_in(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<(BareJid, Affiliation)>> {
        let rows = self.query_live(&node_pk(svc, node), "a|").await?;
        rows.iter()
            .map(|a| {
                let jid = BareJid::parse(&get_s(a, "sk")?[2..]).map_err(corrupt)?;
                let aff =
                    Affiliation::parse(get_s(a, "aff")?).ok_or_else(|| corrupt("affiliation"))?;
                Ok((jid, aff))
            })
            .collect()
    }

    pub(super) async fn user_affiliations_in(
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

    /// One transaction: 2 writes per change (the node's entry and the user's).
    pub(super) async fn change_subscriptions_in(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[SubscriptionChange],
    ) -> StoreResult<()> {
        let pk = node_pk(svc, node);
        let mut tx = Vec::with_capacity(2 * changes.len());
        for change in changes {
            match change {
                SubscriptionChange::Put(sub) => {
                    let json = serde_json::to_string(sub).map_err(corrupt)?;
                    let rest = format!("{}|{}", part(&sub.jid.to_string()), part(&sub.subid));
                    tx.push(self.put(HashMap::from([
                        ("pk".into(), s(&pk)),
                        ("sk".into(), s(format!("s|{rest}"))),
                        ("sub".into(), s(&json)),
                    ]))?);
                    tx.push(self.put(HashMap::from([
                        ("pk".into(), s(user_pk(svc, &sub.jid.to_bare().to_string()))),
                        ("sk".into(), s(format!("s|{node}|{rest}"))),
                        ("sub".into(), s(&json)),
                        ("node".into(), s(node)),
                    ]))?);
                }
                SubscriptionChange::Delete { jid, subid } => {
                    let rest = format!("{}|{}", part(&jid.to_string()), part(subid));
                    tx.push(self.delete(&pk, &format!("s|{rest}"))?);
                    tx.push(self.delete(
                        &user_pk(svc, &jid.to_bare().to_string()),
                        &format!("s|{node}|{rest}"),
                    )?);
                }
            }
        }
        if tx.is_empty() {
            return Ok(());
        }
        self.transact_on_node(&pk, tx).await
    }

    pub(super) async fn delete_subscription_in(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &Jid,
        subid: &str,
    ) -> StoreResult<bool> {
        let rest = format!("{}|{}", part(&jid.to_string()), part(subid));
        let pk = node_pk(svc, node);
        let (sk, upk, usk) = (
            format!("s|{rest}"),
            user_pk(svc, &jid.to_bare().to_string()),
            format!("s|{node}|{rest}"),
        );
        // Both entries in one transaction: a crash cannot leave the user's copy behind.
        let present = self.get(&pk, &sk).await?.is_some();
        if present {
            // With the config version moved on while the node lives (other instances stop
            // delivering to it from their next publish); without, when the node is gone.
            let both = vec![self.delete(&pk, &sk)?, self.delete(&upk, &usk)?];
            let mut with_bump = both.clone();
            with_bump.push(self.bump_config(&pk, "attribute_exists(pk)")?);
            let mut done = false;
            for _ in 0..ATTEMPTS {
                if self.transact_checked(with_bump.clone()).await? {
                    done = true;
                    break;
                }
                if self.live_meta(&pk).await?.is_none() {
                    self.transact_or_fail(both).await?;
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(StoreError::Unavailable(format!(
                    "node {node}: {ATTEMPTS} attempts lost to concurrent writers"
                )));
            }
        } else {
            self.transact_or_fail(vec![self.delete(&upk, &usk)?])
                .await?;
        }
        Ok(present)
    }

    pub(super) async fn subscriptions_in(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<Subscription>> {
        let rows = self.query_live(&node_pk(svc, node), "s|").await?;
        rows.iter()
            .map(|a| serde_json::from_str(get_s(a, "sub")?).map_err(corrupt))
            .collect()
    }

    pub(super) async fn user_subscriptions_in(
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
}
