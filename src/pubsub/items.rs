//! Items (XEP-0060 7 and 6.5): publish (with auto-create for PEP), retract, retrieve, the last
//! item.

use std::sync::Arc;

use super::access::Action;
use super::error::{PubSubError, PubSubResult};
use super::model::*;
use super::notify::{Event, Notification};
use super::service::LastItem;
use crate::jid::Jid;
use crate::storage::{BATCH_LIMIT, ItemPage, ItemQuery};

use super::policy::policy_of;
use super::service::*;

impl PubSub {
    /// Publishes items (7.1). `payloads[i]` is the serialized payload of item i (empty: none).
    /// Durable in the store before it returns. Returns the item ids and the notifications.
    pub async fn publish(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        items: Vec<(Option<String>, String)>,
    ) -> PubSubResult<(Vec<String>, Vec<Notification>)> {
        let state = self.node(svc, node).await?;
        self.publish_to(svc, actor, node, state, items).await
    }

    /// Creates a PEP node on first publish (XEP-0163 section 3, auto-create) with `config`.
    pub async fn auto_create(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        config: NodeConfig,
    ) -> PubSubResult<Arc<NodeState>> {
        match self.node(svc, node).await {
            Err(PubSubError::NodeNotFound) if policy_of(svc).auto_creates_for(actor) => {
                match self.create(svc, actor, Some(node), Some(config)).await {
                    Ok(_) | Err(PubSubError::NodeExists) => self.node(svc, node).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    pub(super) async fn publish_to(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        state: Arc<NodeState>,
        items: Vec<(Option<String>, String)>,
    ) -> PubSubResult<(Vec<String>, Vec<Notification>)> {
        self.authorize_in(svc, &state, actor, Action::Publish)
            .await?;
        let cfg = &state.record.config;
        // One copy of the service limits for the whole request (SIGHUP may replace them).
        let limits = self.limits();
        let persistent = cfg.persist_items;
        if items.is_empty() && (persistent || cfg.deliver_payloads) {
            return Err(PubSubError::ItemRequired);
        }
        let limit = cfg.max_payload_size.min(limits.max_payload_bytes);
        for (_, payload) in &items {
            if payload.len() as u64 > limit {
                return Err(PubSubError::PayloadTooBig(limit));
            }
            if payload.is_empty() && (persistent || cfg.deliver_payloads) {
                return Err(PubSubError::PayloadRequired);
            }
            if !payload.is_empty() && !persistent && !cfg.deliver_payloads {
                return Err(PubSubError::ItemForbidden);
            }
        }
        let max_items = match cfg.max_items {
            MaxItems::Count(n) => Some(n.min(limits.max_items_per_node)),
            MaxItems::Max => Some(limits.max_items_per_node),
        };
        if items.len() > BATCH_LIMIT {
            return Err(PubSubError::LimitReached(format!(
                "at most {BATCH_LIMIT} items per publish request; nothing was published"
            )));
        }
        let publisher = actor.to_bare().to_string();
        let mut published: Vec<Item> = Vec::with_capacity(items.len());
        for (id, payload) in items {
            let item = Item {
                id: id.filter(|i| !i.is_empty()).unwrap_or_else(|| token(16)),
                publisher: publisher.clone(),
                payload: Arc::from(payload),
                published_ms: now_ms(),
            };
            // An id given twice in one request: the later item replaces the earlier, as two
            // publishes would.
            published.retain(|p| p.id != item.id);
            published.push(item);
        }
        if persistent {
            // All or nothing (the store's batch contract).
            self.store
                .put_items(svc, node, &published, max_items)
                .await?;
        }
        if persistent {
            self.schedule_expiry(svc, node, cfg, &published);
        }
        // Filled only after the store acknowledged the write.
        if let Some(last) = published.last() {
            // Its items version is not known here: on a shared store the next read fills it.
            self.last_items.insert(
                Self::key(svc, node),
                LastItem {
                    item: Some(last.clone()),
                    at: None,
                },
            );
        }
        let ids = published.iter().map(|i| i.id.clone()).collect();
        let mut out = Vec::new();
        if cfg.deliver_notifications {
            out.push(
                self.notification(
                    svc,
                    node,
                    &state,
                    Event::Items {
                        items: published,
                        payloads: cfg.deliver_payloads,
                    },
                    cfg,
                )
                .await,
            );
        }
        Ok((ids, out))
    }

    /// Retracts items (7.2); `notify` None follows notify_retract.
    pub async fn retract(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        ids: Vec<String>,
        notify: Option<bool>,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        if ids.is_empty() {
            return Err(PubSubError::ItemRequired);
        }
        if ids.len() > BATCH_LIMIT {
            return Err(PubSubError::LimitReached(format!(
                "at most {BATCH_LIMIT} items per retract request; nothing was retracted"
            )));
        }
        let mut ids = ids;
        dedup_keep_last(&mut ids, |a, b| a == b);
        if !state.record.config.persist_items {
            return Err(PubSubError::Unsupported("persistent-items"));
        }
        let found = self.store.items_by_id(svc, node, &ids).await?;
        if found.len() != ids.len() {
            return Err(PubSubError::ItemNotFound);
        }
        let may_any = self
            .authorize_in(svc, &state, actor, Action::RetractAny)
            .await;
        if may_any.is_err() {
            let bare = actor.to_bare().to_string();
            if found.iter().any(|i| i.publisher != bare) {
                return Err(PubSubError::Forbidden);
            }
            self.authorize_in(svc, &state, actor, Action::RetractOwn)
                .await?;
        }
        self.remove_items(svc, node, &ids).await?;
        let cfg = &state.record.config;
        let mut out = Vec::new();
        if notify.unwrap_or(cfg.notify_retract) && cfg.deliver_notifications {
            out.push(
                self.notification(svc, node, &state, Event::Retract { ids }, cfg)
                    .await,
            );
        }
        Ok(out)
    }

    /// Items the actor may read (6.5), cut at `max_page_bytes` of payload; true when cut.
    pub async fn items(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        selection: ItemSelection,
    ) -> PubSubResult<(ItemPage, bool)> {
        let (mut page, keep_end) = self.select_items(svc, actor, node, selection).await?;
        let truncated = self.fit_page(&mut page, keep_end);
        Ok((page, truncated))
    }

    /// The ids of the newest items the actor may read, up to `max` (XEP-0060 5.5 discovery lists
    /// ids only, so no byte bound applies).
    pub async fn item_ids(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        max: usize,
    ) -> PubSubResult<Vec<String>> {
        let (page, _) = self
            .select_items(svc, actor, node, ItemSelection::Newest(Some(max)))
            .await?;
        Ok(page.items.into_iter().map(|i| i.id).collect())
    }

    /// The page a selection designates, after authorization; with the end of it to keep should
    /// it be cut.
    async fn select_items(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        selection: ItemSelection,
    ) -> PubSubResult<(ItemPage, bool)> {
        let (state, seen) = self.node_seen(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::RetrieveItems)
            .await?;
        if !state.record.config.persist_items {
            return Err(PubSubError::Unsupported("persistent-items"));
        }
        let max = self.limits().max_page;
        // Which end of the page to keep if it must be cut short: the newest items, or for a page
        // after a cursor the ones nearest to it.
        let keep_end = !matches!(selection, ItemSelection::Page(ItemQuery::After(..)));
        let mut page = match selection {
            ItemSelection::Newest(n) => {
                let n = n.unwrap_or(max).min(max);
                match self.cached_last(&Self::key(svc, node), seen) {
                    Some(Some(item)) if n == 1 => ItemPage {
                        items: vec![item],
                        count: 1,
                        first_index: None,
                    },
                    _ => self.store.items(svc, node, ItemQuery::Newest(n)).await?,
                }
            }
            ItemSelection::ById(ids) => {
                let items = self.store.items_by_id(svc, node, &ids).await?;
                if items.is_empty() {
                    return Err(PubSubError::ItemNotFound);
                }
                ItemPage {
                    count: items.len() as u64,
                    items,
                    first_index: None,
                }
            }
            ItemSelection::Page(q) => {
                let q = match q {
                    ItemQuery::Newest(n) => ItemQuery::Newest(n.min(max)),
                    ItemQuery::After(c, n) => ItemQuery::After(c, n.min(max)),
                    ItemQuery::Before(c, n) => ItemQuery::Before(c, n.min(max)),
                };
                self.store.items(svc, node, q).await?
            }
        };
        if let Some(expire) = state.record.config.item_expire {
            let cutoff = now_ms().saturating_sub(expire.saturating_mul(1000));
            page.items.retain(|i| i.published_ms >= cutoff);
        }
        Ok((page, keep_end))
    }

    /// Drops items until the page's payloads fit in `max_page_bytes` (XEP-0060 6.5.4: a service
    /// may return some of the items), keeping the newest end (`keep_end`) or the oldest; at least
    /// one item stays. True when items were dropped.
    pub(super) fn fit_page(&self, page: &mut ItemPage, keep_end: bool) -> bool {
        let max = self.limits().max_page_bytes;
        let mut total = 0;
        let mut fits = |items: &mut dyn Iterator<Item = &Item>| {
            items
                .take_while(|i| {
                    total += i.payload.len();
                    total <= max
                })
                .count()
                .max(1)
        };
        let keep = if keep_end {
            fits(&mut page.items.iter().rev())
        } else {
            fits(&mut page.items.iter())
        };
        if keep >= page.items.len() {
            return false;
        }
        if keep_end {
            let drop = page.items.len() - keep;
            page.items.drain(..drop);
            page.first_index = page.first_index.map(|i| i + drop as u64);
        } else {
            page.items.truncate(keep);
        }
        true
    }

    /// The last published item, from the cache when it is current, or the store.
    pub async fn last_item(&self, svc: &ServiceId, node: &str) -> PubSubResult<Option<Item>> {
        let seen = if self.store.shared() {
            self.node_seen(svc, node).await?.1
        } else {
            None
        };
        self.last_item_at(svc, node, seen).await
    }

    /// [`PubSub::last_item`], for a request that read the node already: `seen` is the items
    /// version its [`PubSub::node_seen`] read (None on a store of one instance).
    pub(super) async fn last_item_at(
        &self,
        svc: &ServiceId,
        node: &str,
        seen: Option<u64>,
    ) -> PubSubResult<Option<Item>> {
        let k = Self::key(svc, node);
        if let Some(cached) = self.cached_last(&k, seen) {
            return Ok(cached);
        }
        let last = self
            .store
            .items(svc, node, ItemQuery::Newest(1))
            .await?
            .items
            .pop();
        self.last_items.insert(
            k,
            LastItem {
                item: last.clone(),
                at: seen,
            },
        );
        Ok(last)
    }
}
