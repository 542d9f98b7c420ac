//! Affiliations and subscriptions, each indexed by node and by user.

use super::*;
use crate::storage::{StoreResult, SubscriptionChange};

impl EmbeddedStore {
    pub(super) async fn set_affiliations_in(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[(BareJid, Affiliation)],
    ) -> StoreResult<()> {
        let s = svc.key();
        let node = node.to_owned();
        let changes = changes.to_vec();
        let injected = self.fail_points.check("batch");
        self.write(move |tx| {
            require_node(tx, &s, &node)?;
            let mut affs = tx.open_table(AFFS).map_err(err)?;
            let mut user = tx.open_table(USER_AFFS).map_err(err)?;
            for (i, (jid, aff)) in changes.iter().enumerate() {
                let bare = jid.to_string();
                let k1 = key(&[s.as_bytes(), node.as_bytes(), bare.as_bytes()]);
                let k2 = key(&[s.as_bytes(), bare.as_bytes(), node.as_bytes()]);
                if *aff == Affiliation::None {
                    affs.remove(k1.as_slice()).map_err(err)?;
                    user.remove(k2.as_slice()).map_err(err)?;
                } else {
                    affs.insert(k1.as_slice(), aff_code(*aff)).map_err(err)?;
                    user.insert(k2.as_slice(), aff_code(*aff)).map_err(err)?;
                }
                if i == 0 {
                    injected.clone()?;
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn affiliations_in(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<(BareJid, Affiliation)>> {
        let p = prefix(&[svc.key().as_bytes(), node.as_bytes()]);
        self.read(move |tx| {
            let t = tx.open_table(AFFS).map_err(err)?;
            let end = prefix_end(&p);
            let mut out = Vec::new();
            for r in t
                .range::<&[u8]>(p.as_slice()..end.as_slice())
                .map_err(err)?
            {
                let (k, v) = r.map_err(err)?;
                let jid = BareJid::parse(&utf8(&k.value()[p.len()..])?).map_err(corrupt)?;
                out.push((jid, aff_from(v.value())?));
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn user_affiliations_in(
        &self,
        svc: &ServiceId,
        jid: &BareJid,
    ) -> StoreResult<Vec<(String, Affiliation)>> {
        let p = prefix(&[svc.key().as_bytes(), jid.to_bare().to_string().as_bytes()]);
        self.read(move |tx| {
            let t = tx.open_table(USER_AFFS).map_err(err)?;
            let end = prefix_end(&p);
            let mut out = Vec::new();
            for r in t
                .range::<&[u8]>(p.as_slice()..end.as_slice())
                .map_err(err)?
            {
                let (k, v) = r.map_err(err)?;
                out.push((utf8(&k.value()[p.len()..])?, aff_from(v.value())?));
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn change_subscriptions_in(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[SubscriptionChange],
    ) -> StoreResult<()> {
        let s = svc.key();
        let node = node.to_owned();
        let changes = changes.to_vec();
        let injected = self.fail_points.check("batch");
        self.write(move |tx| {
            require_node(tx, &s, &node)?;
            for (i, change) in changes.iter().enumerate() {
                match change {
                    SubscriptionChange::Put(sub) => put_subscription(tx, &s, &node, sub)?,
                    SubscriptionChange::Delete { jid, subid } => {
                        delete_subscription(tx, &s, &node, jid, subid)?;
                    }
                }
                if i == 0 {
                    injected.clone()?;
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn delete_subscription_in(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &Jid,
        subid: &str,
    ) -> StoreResult<bool> {
        let s = svc.key();
        let node = node.to_owned();
        let jid = jid.clone();
        let subid = subid.to_owned();
        self.write(move |tx| delete_subscription(tx, &s, &node, &jid, &subid))
            .await
    }

    pub(super) async fn subscriptions_in(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<Subscription>> {
        let p = prefix(&[svc.key().as_bytes(), node.as_bytes()]);
        self.read(move |tx| {
            let t = tx.open_table(SUBS).map_err(err)?;
            let end = prefix_end(&p);
            let mut out = Vec::new();
            for r in t
                .range::<&[u8]>(p.as_slice()..end.as_slice())
                .map_err(err)?
            {
                let (_, v) = r.map_err(err)?;
                out.push(serde_json::from_slice(v.value()).map_err(corrupt)?);
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn user_subscriptions_in(
        &self,
        svc: &ServiceId,
        jid: &Jid,
    ) -> StoreResult<Vec<(String, Subscription)>> {
        let s = svc.key();
        let p = prefix(&[s.as_bytes(), jid.to_bare().to_string().as_bytes()]);
        let only = (!jid.is_bare()).then(|| jid.to_string());
        self.read(move |tx| {
            let index = tx.open_table(USER_SUBS).map_err(err)?;
            let subs = tx.open_table(SUBS).map_err(err)?;
            let end = prefix_end(&p);
            let mut out = Vec::new();
            for r in index
                .range::<&[u8]>(p.as_slice()..end.as_slice())
                .map_err(err)?
            {
                let (k, _) = r.map_err(err)?;
                let rest = &k.value()[p.len()..];
                let mut parts = rest.split(|b| *b == 0);
                let (Some(node), Some(j), Some(subid)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(corrupt("user subscription key"));
                };
                if only.as_deref().is_some_and(|o| o.as_bytes() != j) {
                    continue;
                }
                if let Some(v) = subs
                    .get(key(&[s.as_bytes(), node, j, subid]).as_slice())
                    .map_err(err)?
                {
                    out.push((
                        utf8(node)?,
                        serde_json::from_slice(v.value()).map_err(corrupt)?,
                    ));
                }
            }
            Ok(out)
        })
        .await
    }
}

fn put_subscription(
    tx: &redb::WriteTransaction,
    s: &str,
    node: &str,
    sub: &Subscription,
) -> StoreResult<()> {
    let jid = sub.jid.to_string();
    let bare = sub.jid.to_bare().to_string();
    let v = serde_json::to_vec(sub).map_err(corrupt)?;
    tx.open_table(SUBS)
        .map_err(err)?
        .insert(
            key(&[
                s.as_bytes(),
                node.as_bytes(),
                jid.as_bytes(),
                sub.subid.as_bytes(),
            ])
            .as_slice(),
            v.as_slice(),
        )
        .map_err(err)?;
    tx.open_table(USER_SUBS)
        .map_err(err)?
        .insert(
            key(&[
                s.as_bytes(),
                bare.as_bytes(),
                node.as_bytes(),
                jid.as_bytes(),
                sub.subid.as_bytes(),
            ])
            .as_slice(),
            (),
        )
        .map_err(err)?;
    Ok(())
}

/// True when the subscription was there.
fn delete_subscription(
    tx: &redb::WriteTransaction,
    s: &str,
    node: &str,
    jid: &Jid,
    subid: &str,
) -> StoreResult<bool> {
    let j = jid.to_string();
    let bare = jid.to_bare().to_string();
    let removed = tx
        .open_table(SUBS)
        .map_err(err)?
        .remove(
            key(&[
                s.as_bytes(),
                node.as_bytes(),
                j.as_bytes(),
                subid.as_bytes(),
            ])
            .as_slice(),
        )
        .map_err(err)?
        .is_some();
    tx.open_table(USER_SUBS)
        .map_err(err)?
        .remove(
            key(&[
                s.as_bytes(),
                bare.as_bytes(),
                node.as_bytes(),
                j.as_bytes(),
                subid.as_bytes(),
            ])
            .as_slice(),
        )
        .map_err(err)?;
    Ok(removed)
}
