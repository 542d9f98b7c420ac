//! Affiliations and subscriptions, each indexed by node and by user.

use super::*;

impl AwsStore {
    pub(super) async fn set_affiliation_in(
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

    pub(super) async fn affiliations_in(
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

    pub(super) async fn put_subscription_in(
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

    pub(super) async fn delete_subscription_in(
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

    pub(super) async fn subscriptions_in(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<Subscription>> {
        let rows = self
            .query_prefix(&node_pk(svc, node), "s|", true, None)
            .await?;
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
