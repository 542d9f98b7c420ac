//! Items: ordered by publication, indexed by id, trimmed to max_items.

use redb::ReadableTable;

use super::*;
use crate::storage::{ItemPage, ItemQuery, StoreResult};

impl EmbeddedStore {
    pub(super) async fn put_items_in(
        &self,
        svc: &ServiceId,
        node: &str,
        items: &[Item],
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>> {
        let s = svc.key();
        let node = node.to_owned();
        let items = items.to_vec();
        let injected = self.fail_points.check("batch");
        self.write(move |tx| {
            require_node(tx, &s, &node)?;
            let mut evicted = Vec::new();
            for (i, item) in items.iter().enumerate() {
                evicted.extend(put_item(tx, &s, &node, item, max_items)?);
                if i == 0 {
                    injected.clone()?;
                }
            }
            Ok(evicted)
        })
        .await
    }

    pub(super) async fn items_in(
        &self,
        svc: &ServiceId,
        node: &str,
        query: ItemQuery,
    ) -> StoreResult<ItemPage> {
        let s = svc.key();
        let node = node.to_owned();
        self.read(move |tx| {
            let nk = key(&[s.as_bytes(), node.as_bytes()]);
            let p = prefix(&[s.as_bytes(), node.as_bytes()]);
            let end = prefix_end(&p);
            let count = tx
                .open_table(NODE_META)
                .map_err(err)?
                .get(nk.as_slice())
                .map_err(err)?
                .map(|v| meta_decode(v.value()).1)
                .unwrap_or(0);
            let items = tx.open_table(ITEMS).map_err(err)?;
            let ids = tx.open_table(ITEM_IDS).map_err(err)?;
            let seq_of = |id: &str| -> StoreResult<Option<u64>> {
                Ok(ids
                    .get(key(&[s.as_bytes(), node.as_bytes(), id.as_bytes()]).as_slice())
                    .map_err(err)?
                    .map(|g| g.value()))
            };
            let seq_key = |seq: u64| key(&[&p[..p.len() - 1], &seq.to_be_bytes()]);
            let collect = |range: redb::Range<'_, Bytes, Bytes>,
                           rev: bool,
                           max: usize|
             -> StoreResult<Vec<Item>> {
                let mut out = Vec::new();
                let it: Box<dyn Iterator<Item = _>> = if rev {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
                for r in it.take(max) {
                    let (_, v) = r.map_err(err)?;
                    out.push(decode_item(v.value())?);
                }
                if rev {
                    out.reverse();
                }
                Ok(out)
            };
            let (got, first_index) = match &query {
                ItemQuery::Newest(n) | ItemQuery::Before(None, n) => {
                    let v = collect(
                        items
                            .range::<&[u8]>(p.as_slice()..end.as_slice())
                            .map_err(err)?,
                        true,
                        *n,
                    )?;
                    let idx = count.saturating_sub(v.len() as u64);
                    (v, Some(idx))
                }
                ItemQuery::After(None, n) => (
                    collect(
                        items
                            .range::<&[u8]>(p.as_slice()..end.as_slice())
                            .map_err(err)?,
                        false,
                        *n,
                    )?,
                    Some(0),
                ),
                ItemQuery::After(Some(id), n) => match seq_of(id)? {
                    Some(seq) => {
                        let start = seq_key(seq + 1);
                        (
                            collect(
                                items
                                    .range::<&[u8]>(start.as_slice()..end.as_slice())
                                    .map_err(err)?,
                                false,
                                *n,
                            )?,
                            None,
                        )
                    }
                    None => (Vec::new(), None),
                },
                ItemQuery::Before(Some(id), n) => match seq_of(id)? {
                    Some(seq) => {
                        let stop = seq_key(seq);
                        (
                            collect(
                                items
                                    .range::<&[u8]>(p.as_slice()..stop.as_slice())
                                    .map_err(err)?,
                                true,
                                *n,
                            )?,
                            None,
                        )
                    }
                    None => (Vec::new(), None),
                },
            };
            Ok(ItemPage {
                items: got,
                count,
                first_index,
            })
        })
        .await
    }

    pub(super) async fn items_by_id_in(
        &self,
        svc: &ServiceId,
        node: &str,
        wanted: &[String],
    ) -> StoreResult<Vec<Item>> {
        let s = svc.key();
        let node = node.to_owned();
        let wanted = wanted.to_vec();
        self.read(move |tx| {
            let items = tx.open_table(ITEMS).map_err(err)?;
            let ids = tx.open_table(ITEM_IDS).map_err(err)?;
            let mut out = Vec::new();
            for id in &wanted {
                if let Some(seq) = ids
                    .get(key(&[s.as_bytes(), node.as_bytes(), id.as_bytes()]).as_slice())
                    .map_err(err)?
                {
                    let k = key(&[s.as_bytes(), node.as_bytes(), &seq.value().to_be_bytes()]);
                    if let Some(v) = items.get(k.as_slice()).map_err(err)? {
                        out.push(decode_item(v.value())?);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn delete_items_in(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        let s = svc.key();
        let node = node.to_owned();
        let ids = ids.to_vec();
        let injected = self.fail_points.check("batch");
        self.write(move |tx| {
            let mut removed = Vec::new();
            for (i, id) in ids.into_iter().enumerate() {
                if delete_item(tx, &s, &node, &id)? {
                    removed.push(id);
                }
                if i == 0 {
                    injected.clone()?;
                }
            }
            Ok(removed)
        })
        .await
    }

    pub(super) async fn purge_items_in(&self, svc: &ServiceId, node: &str) -> StoreResult<()> {
        let s = svc.key();
        let node = node.to_owned();
        self.write(move |tx| {
            let p = prefix(&[s.as_bytes(), node.as_bytes()]);
            remove_prefix(&mut tx.open_table(ITEMS).map_err(err)?, &p)?;
            remove_prefix(&mut tx.open_table(ITEM_IDS).map_err(err)?, &p)?;
            let nk = key(&[s.as_bytes(), node.as_bytes()]);
            let mut meta = tx.open_table(NODE_META).map_err(err)?;
            let next = meta
                .get(nk.as_slice())
                .map_err(err)?
                .map(|v| meta_decode(v.value()).0);
            if let Some(next) = next {
                meta.insert(nk.as_slice(), meta_encode(next, 0).as_slice())
                    .map_err(err)?;
            }
            Ok(())
        })
        .await
    }
}

/// Stores one item of a batch in the batch's transaction and trims; returns the ids trimmed.
fn put_item(
    tx: &redb::WriteTransaction,
    s: &str,
    node: &str,
    item: &Item,
    max_items: Option<u64>,
) -> StoreResult<Vec<String>> {
    let nk = key(&[s.as_bytes(), node.as_bytes()]);
    let p = prefix(&[s.as_bytes(), node.as_bytes()]);
    let mut meta = tx.open_table(NODE_META).map_err(err)?;
    let (next_seq, mut count) = meta
        .get(nk.as_slice())
        .map_err(err)?
        .map(|v| meta_decode(v.value()))
        .unwrap_or((1, 0));
    let mut items = tx.open_table(ITEMS).map_err(err)?;
    let mut ids = tx.open_table(ITEM_IDS).map_err(err)?;
    let idk = key(&[s.as_bytes(), node.as_bytes(), item.id.as_bytes()]);
    let old = ids.get(idk.as_slice()).map_err(err)?.map(|g| g.value());
    if let Some(old) = old {
        items
            .remove(key(&[&p[..p.len() - 1], &old.to_be_bytes()]).as_slice())
            .map_err(err)?;
        count = count.saturating_sub(1);
    }
    let v = serde_json::to_vec(item).map_err(corrupt)?;
    items
        .insert(
            key(&[&p[..p.len() - 1], &next_seq.to_be_bytes()]).as_slice(),
            v.as_slice(),
        )
        .map_err(err)?;
    ids.insert(idk.as_slice(), next_seq).map_err(err)?;
    count += 1;
    let mut evicted = Vec::new();
    if let Some(max) = max_items {
        while count > max {
            let end = prefix_end(&p);
            let first = items
                .range::<&[u8]>(p.as_slice()..end.as_slice())
                .map_err(err)?
                .next()
                .transpose()
                .map_err(err)?
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()));
            let Some((k, v)) = first else { break };
            let old = decode_item(&v)?;
            items.remove(k.as_slice()).map_err(err)?;
            ids.remove(key(&[s.as_bytes(), node.as_bytes(), old.id.as_bytes()]).as_slice())
                .map_err(err)?;
            evicted.push(old.id);
            count -= 1;
        }
    }
    meta.insert(nk.as_slice(), meta_encode(next_seq + 1, count).as_slice())
        .map_err(err)?;
    Ok(evicted)
}

/// Deletes one item of a batch; true when it was there.
fn delete_item(tx: &redb::WriteTransaction, s: &str, node: &str, id: &str) -> StoreResult<bool> {
    let mut ids = tx.open_table(ITEM_IDS).map_err(err)?;
    let seq = ids
        .remove(key(&[s.as_bytes(), node.as_bytes(), id.as_bytes()]).as_slice())
        .map_err(err)?
        .map(|g| g.value());
    let Some(seq) = seq else { return Ok(false) };
    tx.open_table(ITEMS)
        .map_err(err)?
        .remove(key(&[s.as_bytes(), node.as_bytes(), &seq.to_be_bytes()]).as_slice())
        .map_err(err)?;
    let nk = key(&[s.as_bytes(), node.as_bytes()]);
    let mut meta = tx.open_table(NODE_META).map_err(err)?;
    let (next, count) = meta
        .get(nk.as_slice())
        .map_err(err)?
        .map(|v| meta_decode(v.value()))
        .unwrap_or((1, 0));
    meta.insert(
        nk.as_slice(),
        meta_encode(next, count.saturating_sub(1)).as_slice(),
    )
    .map_err(err)?;
    Ok(true)
}
