//! Nodes: records, configurations, deletion with everything they hold, listings.

use redb::ReadableTable;

use super::*;
use crate::storage::StoreResult;

impl EmbeddedStore {
    pub(super) async fn create_node_in(
        &self,
        svc: &ServiceId,
        node: &NodeRecord,
        owner: &BareJid,
    ) -> StoreResult<bool> {
        let s = svc.key();
        let node = node.clone();
        let owner = owner.to_bare().to_string();
        self.write(move |tx| {
            let mut nodes = tx.open_table(NODES).map_err(err)?;
            let k = key(&[s.as_bytes(), node.name.as_bytes()]);
            if nodes.get(k.as_slice()).map_err(err)?.is_some() {
                return Ok(false);
            }
            let v = serde_json::to_vec(&node).map_err(corrupt)?;
            nodes.insert(k.as_slice(), v.as_slice()).map_err(err)?;
            tx.open_table(NODE_META)
                .map_err(err)?
                .insert(k.as_slice(), meta_encode(1, 0).as_slice())
                .map_err(err)?;
            let mut creators = tx.open_table(CREATORS).map_err(err)?;
            let ck = key(&[s.as_bytes(), node.creator.as_bytes()]);
            let n = creators
                .get(ck.as_slice())
                .map_err(err)?
                .map(|g| g.value())
                .unwrap_or(0);
            creators.insert(ck.as_slice(), n + 1).map_err(err)?;
            let code = aff_code(Affiliation::Owner);
            tx.open_table(AFFS)
                .map_err(err)?
                .insert(
                    key(&[s.as_bytes(), node.name.as_bytes(), owner.as_bytes()]).as_slice(),
                    code,
                )
                .map_err(err)?;
            tx.open_table(USER_AFFS)
                .map_err(err)?
                .insert(
                    key(&[s.as_bytes(), owner.as_bytes(), node.name.as_bytes()]).as_slice(),
                    code,
                )
                .map_err(err)?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn load_node_in(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Option<NodeRecord>> {
        let k = key(&[svc.key().as_bytes(), node.as_bytes()]);
        self.read(move |tx| {
            let nodes = tx.open_table(NODES).map_err(err)?;
            match nodes.get(k.as_slice()).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(corrupt)?)),
                None => Ok(None),
            }
        })
        .await
    }

    pub(super) async fn save_config_in(
        &self,
        svc: &ServiceId,
        node: &str,
        config: &NodeConfig,
    ) -> StoreResult<()> {
        let k = key(&[svc.key().as_bytes(), node.as_bytes()]);
        let config = config.clone();
        self.write(move |tx| {
            let mut nodes = tx.open_table(NODES).map_err(err)?;
            let current = nodes
                .get(k.as_slice())
                .map_err(err)?
                .map(|v| v.value().to_vec());
            let Some(v) = current else {
                return Err(StoreError::NodeGone);
            };
            let mut rec: NodeRecord = serde_json::from_slice(&v).map_err(corrupt)?;
            rec.config = config;
            let v = serde_json::to_vec(&rec).map_err(corrupt)?;
            nodes.insert(k.as_slice(), v.as_slice()).map_err(err)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn delete_node_in(&self, svc: &ServiceId, node: &str) -> StoreResult<bool> {
        let s = svc.key();
        let node = node.to_owned();
        self.write(move |tx| {
            let k = key(&[s.as_bytes(), node.as_bytes()]);
            let removed = tx
                .open_table(NODES)
                .map_err(err)?
                .remove(k.as_slice())
                .map_err(err)?
                .map(|v| v.value().to_vec());
            let Some(rec) = removed else { return Ok(false) };
            let rec: NodeRecord = serde_json::from_slice(&rec).map_err(corrupt)?;
            tx.open_table(NODE_META)
                .map_err(err)?
                .remove(k.as_slice())
                .map_err(err)?;
            let mut creators = tx.open_table(CREATORS).map_err(err)?;
            let ck = key(&[s.as_bytes(), rec.creator.as_bytes()]);
            let n = creators
                .get(ck.as_slice())
                .map_err(err)?
                .map(|g| g.value())
                .unwrap_or(0);
            creators
                .insert(ck.as_slice(), n.saturating_sub(1))
                .map_err(err)?;
            drop(creators);
            let p = prefix(&[s.as_bytes(), node.as_bytes()]);
            remove_prefix(&mut tx.open_table(ITEMS).map_err(err)?, &p)?;
            remove_prefix(&mut tx.open_table(ITEM_IDS).map_err(err)?, &p)?;
            let aff_keys = remove_prefix(&mut tx.open_table(AFFS).map_err(err)?, &p)?;
            let mut user_affs = tx.open_table(USER_AFFS).map_err(err)?;
            for ak in aff_keys {
                let bare = &ak[p.len()..];
                user_affs
                    .remove(key(&[s.as_bytes(), bare, node.as_bytes()]).as_slice())
                    .map_err(err)?;
            }
            let sub_keys = remove_prefix(&mut tx.open_table(SUBS).map_err(err)?, &p)?;
            let mut user_subs = tx.open_table(USER_SUBS).map_err(err)?;
            for sk in sub_keys {
                let rest = &sk[p.len()..];
                let jid = rest.split(|b| *b == 0).next().unwrap_or_default();
                let subid = last_part(rest);
                let bare = Jid::parse(&utf8(jid)?)
                    .map_err(corrupt)?
                    .to_bare()
                    .to_string();
                user_subs
                    .remove(
                        key(&[s.as_bytes(), bare.as_bytes(), node.as_bytes(), jid, subid])
                            .as_slice(),
                    )
                    .map_err(err)?;
            }
            Ok(true)
        })
        .await
    }

    pub(super) async fn node_names_in(
        &self,
        svc: &ServiceId,
        after: Option<&str>,
        max: usize,
    ) -> StoreResult<Vec<String>> {
        let s = svc.key();
        let after = after.map(str::to_owned);
        self.read(move |tx| {
            let nodes = tx.open_table(NODES).map_err(err)?;
            let p = prefix(&[s.as_bytes()]);
            let end = prefix_end(&p);
            let start = match &after {
                // The smallest key after `after`: after + \0 (names never contain NUL).
                Some(a) => prefix(&[s.as_bytes(), a.as_bytes()]),
                None => p.clone(),
            };
            let mut out = Vec::new();
            for r in nodes
                .range::<&[u8]>(start.as_slice()..end.as_slice())
                .map_err(err)?
            {
                let (k, _) = r.map_err(err)?;
                out.push(utf8(&k.value()[p.len()..])?);
                if out.len() >= max {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Walks the nodes table service by service: after each service's first key, the range
    /// starts again past all of its keys.
    pub(super) async fn services_in(
        &self,
        after: Option<&ServiceId>,
        max: usize,
    ) -> StoreResult<Vec<ServiceId>> {
        let after = after.map(ServiceId::key);
        self.read(move |tx| {
            let nodes = tx.open_table(NODES).map_err(err)?;
            let mut start = after
                .map(|a| prefix_end(&prefix(&[a.as_bytes()])))
                .unwrap_or_default();
            let mut out = Vec::new();
            while out.len() < max {
                let mut range = nodes.range::<&[u8]>(start.as_slice()..).map_err(err)?;
                let Some(r) = range.next() else { break };
                let (k, _) = r.map_err(err)?;
                let k = k.value();
                let svc_key = &k[..k.iter().position(|b| *b == 0).unwrap_or(k.len())];
                let key = utf8(svc_key)?;
                if let Some(svc) = ServiceId::from_key(&key) {
                    out.push(svc);
                }
                start = prefix_end(&prefix(&[svc_key]));
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn count_nodes_created_by_in(
        &self,
        svc: &ServiceId,
        creator: &str,
    ) -> StoreResult<u64> {
        let ck = key(&[svc.key().as_bytes(), creator.as_bytes()]);
        self.read(move |tx| {
            let t = tx.open_table(CREATORS).map_err(err)?;
            Ok(t.get(ck.as_slice())
                .map_err(err)?
                .map(|g| g.value())
                .unwrap_or(0))
        })
        .await
    }
}
