//! The in-memory backend: for tests and demos. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::failpoint::FailPoints;
use super::{ItemPage, ItemQuery, Store, StoreError, StoreResult, SubscriptionChange};
use crate::jid::{BareJid, Jid};
use crate::pubsub::model::{Affiliation, Item, NodeConfig, NodeRecord, ServiceId, Subscription};

#[derive(Default)]
pub struct MemoryStore {
    nodes: Mutex<BTreeMap<(ServiceId, String), NodeData>>,
    /// A batch is applied under the one lock, so nothing can fail between its entries; the fail
    /// point `batch` fails it before the first.
    fail_points: FailPoints,
}

struct NodeData {
    record: NodeRecord,
    affiliations: BTreeMap<BareJid, Affiliation>,
    subscriptions: Vec<Subscription>,
    items: BTreeMap<u64, Item>,
    by_id: HashMap<String, u64>,
    next_seq: u64,
}

type Nodes = BTreeMap<(ServiceId, String), NodeData>;

impl MemoryStore {
    fn with_node<T>(
        &self,
        svc: &ServiceId,
        node: &str,
        default: T,
        f: impl FnOnce(&mut NodeData) -> T,
    ) -> T {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match nodes.get_mut(&(svc.clone(), node.to_owned())) {
            Some(n) => f(n),
            None => default,
        }
    }

    /// Runs a write on the node, or fails with NodeGone when it does not exist.
    fn write_node<T>(
        &self,
        svc: &ServiceId,
        node: &str,
        f: impl FnOnce(&mut NodeData) -> T,
    ) -> StoreResult<T> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match nodes.get_mut(&(svc.clone(), node.to_owned())) {
            Some(n) => Ok(f(n)),
            None => Err(StoreError::NodeGone),
        }
    }

    fn all<T>(&self, f: impl FnOnce(&mut Nodes) -> T) -> T {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut nodes)
    }
}

/// Shared by both backends: picks the page out of an ordered sequence of (seq, item) pairs.
pub(crate) fn page_of<'a>(
    items: impl DoubleEndedIterator<Item = (u64, &'a Item)> + Clone,
    lookup: impl Fn(&str) -> Option<u64>,
    count: u64,
    query: &ItemQuery,
) -> ItemPage {
    let (mut picked, first_index): (Vec<Item>, Option<u64>) = match query {
        ItemQuery::Newest(n) => {
            let mut v: Vec<Item> = items.rev().take(*n).map(|(_, i)| i.clone()).collect();
            v.reverse();
            let idx = count.saturating_sub(v.len() as u64);
            (v, Some(idx))
        }
        ItemQuery::After(None, max) => {
            (items.take(*max).map(|(_, i)| i.clone()).collect(), Some(0))
        }
        ItemQuery::After(Some(id), max) => match lookup(id) {
            Some(seq) => (
                items
                    .filter(|(s, _)| *s > seq)
                    .take(*max)
                    .map(|(_, i)| i.clone())
                    .collect(),
                None,
            ),
            None => (Vec::new(), None),
        },
        ItemQuery::Before(None, max) => {
            let mut v: Vec<Item> = items.rev().take(*max).map(|(_, i)| i.clone()).collect();
            v.reverse();
            let idx = count.saturating_sub(v.len() as u64);
            (v, Some(idx))
        }
        ItemQuery::Before(Some(id), max) => match lookup(id) {
            Some(seq) => {
                let mut v: Vec<Item> = items
                    .rev()
                    .filter(|(s, _)| *s < seq)
                    .take(*max)
                    .map(|(_, i)| i.clone())
                    .collect();
                v.reverse();
                (v, None)
            }
            None => (Vec::new(), None),
        },
    };
    picked.shrink_to_fit();
    ItemPage {
        items: picked,
        count,
        first_index,
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn ordered_writes(&self) -> bool {
        true
    }

    async fn create_node(
        &self,
        svc: &ServiceId,
        node: &NodeRecord,
        owner: &BareJid,
    ) -> StoreResult<bool> {
        Ok(self.all(|nodes| {
            let key = (svc.clone(), node.name.clone());
            if nodes.contains_key(&key) {
                return false;
            }
            let mut affiliations = BTreeMap::new();
            affiliations.insert(owner.clone(), Affiliation::Owner);
            nodes.insert(
                key,
                NodeData {
                    record: node.clone(),
                    affiliations,
                    subscriptions: Vec::new(),
                    items: BTreeMap::new(),
                    by_id: HashMap::new(),
                    next_seq: 1,
                },
            );
            true
        }))
    }

    async fn load_node(&self, svc: &ServiceId, node: &str) -> StoreResult<Option<NodeRecord>> {
        Ok(self.with_node(svc, node, None, |n| Some(n.record.clone())))
    }

    async fn save_config(
        &self,
        svc: &ServiceId,
        node: &str,
        config: &NodeConfig,
    ) -> StoreResult<()> {
        self.write_node(svc, node, |n| n.record.config = config.clone())
    }

    async fn delete_node(&self, svc: &ServiceId, node: &str) -> StoreResult<bool> {
        Ok(self.all(|nodes| nodes.remove(&(svc.clone(), node.to_owned())).is_some()))
    }

    async fn node_names(
        &self,
        svc: &ServiceId,
        after: Option<&str>,
        max: usize,
    ) -> StoreResult<Vec<String>> {
        Ok(self.all(|nodes| {
            nodes
                .keys()
                .filter(|(s, n)| s == svc && after.is_none_or(|a| n.as_str() > a))
                .take(max)
                .map(|(_, n)| n.clone())
                .collect()
        }))
    }

    async fn services(&self, after: Option<&ServiceId>, max: usize) -> StoreResult<Vec<ServiceId>> {
        let after = after.map(ServiceId::key);
        Ok(self.all(|nodes| {
            let keys: std::collections::BTreeMap<String, ServiceId> = nodes
                .keys()
                .map(|(s, _)| (s.key(), s.clone()))
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
                .collect();
            keys.into_values().take(max).collect()
        }))
    }

    async fn count_nodes_created_by(&self, svc: &ServiceId, creator: &str) -> StoreResult<u64> {
        Ok(self.all(|nodes| {
            nodes
                .iter()
                .filter(|((s, _), d)| s == svc && d.record.creator == creator)
                .count() as u64
        }))
    }

    async fn set_affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[(BareJid, Affiliation)],
    ) -> StoreResult<()> {
        self.fail_points.check("batch")?;
        self.write_node(svc, node, |n| {
            for (jid, aff) in changes {
                if *aff == Affiliation::None {
                    n.affiliations.remove(jid);
                } else {
                    n.affiliations.insert(jid.clone(), *aff);
                }
            }
        })
    }

    async fn affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<(BareJid, Affiliation)>> {
        Ok(self.with_node(svc, node, Vec::new(), |n| {
            n.affiliations
                .iter()
                .map(|(j, a)| (j.clone(), *a))
                .collect()
        }))
    }

    async fn user_affiliations(
        &self,
        svc: &ServiceId,
        jid: &BareJid,
    ) -> StoreResult<Vec<(String, Affiliation)>> {
        Ok(self.all(|nodes| {
            nodes
                .iter()
                .filter(|((s, _), _)| s == svc)
                .filter_map(|((_, name), d)| d.affiliations.get(jid).map(|a| (name.clone(), *a)))
                .collect()
        }))
    }

    async fn change_subscriptions(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[SubscriptionChange],
    ) -> StoreResult<()> {
        self.fail_points.check("batch")?;
        self.write_node(svc, node, |n| {
            for change in changes {
                match change {
                    SubscriptionChange::Put(sub) => match n
                        .subscriptions
                        .iter_mut()
                        .find(|s| s.jid == sub.jid && s.subid == sub.subid)
                    {
                        Some(existing) => *existing = sub.clone(),
                        None => n.subscriptions.push(sub.clone()),
                    },
                    SubscriptionChange::Delete { jid, subid } => n
                        .subscriptions
                        .retain(|s| !(s.jid == *jid && s.subid == *subid)),
                }
            }
        })
    }

    async fn delete_subscription(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &Jid,
        subid: &str,
    ) -> StoreResult<bool> {
        Ok(self.with_node(svc, node, false, |n| {
            let before = n.subscriptions.len();
            n.subscriptions
                .retain(|s| !(s.jid == *jid && s.subid == subid));
            n.subscriptions.len() != before
        }))
    }

    async fn subscriptions(&self, svc: &ServiceId, node: &str) -> StoreResult<Vec<Subscription>> {
        Ok(self.with_node(svc, node, Vec::new(), |n| n.subscriptions.clone()))
    }

    async fn user_subscriptions(
        &self,
        svc: &ServiceId,
        jid: &Jid,
    ) -> StoreResult<Vec<(String, Subscription)>> {
        Ok(self.all(|nodes| {
            let mut out = Vec::new();
            for ((s, name), d) in nodes.iter() {
                if s != svc {
                    continue;
                }
                for sub in &d.subscriptions {
                    let matches = if jid.is_bare() {
                        sub.jid.to_bare() == *jid
                    } else {
                        sub.jid == *jid
                    };
                    if matches {
                        out.push((name.clone(), sub.clone()));
                    }
                }
            }
            out
        }))
    }

    async fn put_items(
        &self,
        svc: &ServiceId,
        node: &str,
        items: &[Item],
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>> {
        self.fail_points.check("batch")?;
        self.write_node(svc, node, |n| {
            let mut evicted = Vec::new();
            for item in items {
                if let Some(old) = n.by_id.remove(&item.id) {
                    n.items.remove(&old);
                }
                let seq = n.next_seq;
                n.next_seq += 1;
                n.items.insert(seq, item.clone());
                n.by_id.insert(item.id.clone(), seq);
                if let Some(max) = max_items {
                    while n.items.len() as u64 > max {
                        let Some((_, old)) = n.items.pop_first() else {
                            break;
                        };
                        n.by_id.remove(&old.id);
                        evicted.push(old.id);
                    }
                }
            }
            evicted
        })
    }

    async fn items(&self, svc: &ServiceId, node: &str, query: ItemQuery) -> StoreResult<ItemPage> {
        Ok(self.with_node(svc, node, ItemPage::default(), |n| {
            let by_id = &n.by_id;
            page_of(
                n.items.iter().map(|(s, i)| (*s, i)),
                |id| by_id.get(id).copied(),
                n.items.len() as u64,
                &query,
            )
        }))
    }

    async fn items_by_id(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Item>> {
        Ok(self.with_node(svc, node, Vec::new(), |n| {
            ids.iter()
                .filter_map(|id| n.by_id.get(id).and_then(|s| n.items.get(s)).cloned())
                .collect()
        }))
    }

    async fn delete_items(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        self.fail_points.check("batch")?;
        Ok(self.with_node(svc, node, Vec::new(), |n| {
            ids.iter()
                .filter(|id| {
                    n.by_id
                        .remove(id.as_str())
                        .is_some_and(|seq| n.items.remove(&seq).is_some())
                })
                .cloned()
                .collect()
        }))
    }

    async fn purge_items(&self, svc: &ServiceId, node: &str) -> StoreResult<()> {
        self.with_node(svc, node, (), |n| {
            n.items.clear();
            n.by_id.clear();
        });
        Ok(())
    }

    #[cfg(test)]
    fn fail_points(&self) -> &FailPoints {
        &self.fail_points
    }
}
