//! The pubsub service: every operation is check -> persist -> notify. No XML here.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use rand::RngExt;

use super::access::{Action, RosterRelation, capability, check};
use super::error::{PubSubError, PubSubResult};
use super::model::*;
use super::notify::{Event, Notification, Recipient};
use crate::jid::Jid;
use crate::storage::{ItemPage, ItemQuery, Store};

/// Service-wide limits (config `[pubsub]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload_bytes: u64,
    pub max_items_per_node: u64,
    pub max_nodes_per_user: u64,
    pub max_page: usize,
    /// Bytes of payload in one items answer at most (at least one item is always returned).
    pub max_page_bytes: usize,
    /// Subscriptions one bare JID may hold on one node (several resources, several SubIDs).
    pub max_subscriptions_per_node: usize,
    /// Subscriptions one bare JID may hold on the whole service.
    pub max_subscriptions_per_user: usize,
    /// How long a cached node (configuration, affiliations, subscribers) and last item may be
    /// served before being read again from the store: the staleness bound when several instances
    /// share storage. None: cached until this instance changes it (one instance).
    pub cache_ttl: Option<std::time::Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 256 * 1024,
            max_items_per_node: 1000,
            max_nodes_per_user: 1000,
            max_page: 1000,
            max_page_bytes: 256 * 1024,
            max_subscriptions_per_node: 16,
            max_subscriptions_per_user: 1000,
            cache_ttl: None,
        }
    }
}

/// Answers "what does the owner's roster say about this JID" for the presence and roster models.
#[async_trait]
pub trait RosterSource: Send + Sync {
    async fn relation(&self, svc: &ServiceId, owners: &[Jid], actor: &Jid) -> RosterRelation;

    /// The relation of each of `actors`, from one reading of the owners' rosters.
    async fn relations(
        &self,
        svc: &ServiceId,
        owners: &[Jid],
        actors: &[Jid],
    ) -> Vec<RosterRelation> {
        let mut out = Vec::with_capacity(actors.len());
        for a in actors {
            out.push(self.relation(svc, owners, a).await);
        }
        out
    }
}

/// The host service without roster access: nobody is in an owner's roster.
pub struct NoRoster;

#[async_trait]
impl RosterSource for NoRoster {
    async fn relation(&self, _svc: &ServiceId, _owners: &[Jid], _actor: &Jid) -> RosterRelation {
        RosterRelation::default()
    }
}

/// A node with its affiliations and subscriptions, as cached.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub record: NodeRecord,
    pub affiliations: HashMap<Jid, Affiliation>,
    pub subscriptions: Vec<Subscription>,
}

impl NodeState {
    pub fn affiliation(&self, jid: &Jid) -> Affiliation {
        self.affiliations
            .get(&jid.to_bare())
            .copied()
            .unwrap_or(Affiliation::None)
    }

    pub fn owners(&self) -> Vec<Jid> {
        self.affiliations
            .iter()
            .filter(|(_, a)| **a == Affiliation::Owner)
            .map(|(j, _)| j.clone())
            .collect()
    }

    /// True when `jid` (or, for a bare JID, any of its resources) has an approved subscription.
    pub fn is_subscribed(&self, jid: &Jid) -> bool {
        self.subscriptions.iter().any(|s| {
            s.state == SubscriptionState::Subscribed && (s.jid == *jid || s.jid == jid.to_bare())
        })
    }

    /// Subscribers to notify, one entry per JID with all its subscription ids.
    pub fn recipients(&self) -> Vec<Recipient> {
        let mut out: Vec<Recipient> = Vec::new();
        let mut index: HashMap<&Jid, usize> = HashMap::new();
        for s in &self.subscriptions {
            if s.state != SubscriptionState::Subscribed || s.options.deliver == Some(false) {
                continue;
            }
            match index.get(&s.jid) {
                Some(&i) => out[i].subids.push(s.subid.clone()),
                None => {
                    index.insert(&s.jid, out.len());
                    out.push(Recipient {
                        jid: s.jid.clone(),
                        subids: vec![s.subid.clone()],
                    });
                }
            }
        }
        out
    }
}

/// Nodes (and last items) kept in memory; PEP services of many users share this bound.
const NODE_CACHE_CAPACITY: u64 = 100_000;

fn cache<V: Clone + Send + Sync + 'static>(
    ttl: Option<std::time::Duration>,
) -> moka::sync::Cache<(ServiceId, String), V> {
    let b = moka::sync::Cache::builder().max_capacity(NODE_CACHE_CAPACITY);
    match ttl {
        Some(t) => b.time_to_live(t).build(),
        None => b.build(),
    }
}

/// Where to retrieve items from.
#[derive(Debug, Clone)]
pub enum ItemSelection {
    /// The newest n (XEP-0060 6.5.7), or all up to the page limit.
    Newest(Option<usize>),
    ById(Vec<String>),
    Page(ItemQuery),
}

/// The outcome of a subscribe request.
#[derive(Debug, Clone)]
pub struct Subscribed {
    pub subscription: Subscription,
    pub notifications: Vec<Notification>,
}

pub struct PubSub {
    store: Arc<dyn Store>,
    limits: Limits,
    roster: Arc<dyn RosterSource>,
    /// Nodes with their affiliations and subscriptions (bounded: least recently used go first).
    nodes: moka::sync::Cache<(ServiceId, String), Arc<NodeState>>,
    /// The last item of each node, filled only after the store acknowledged the write.
    last_items: moka::sync::Cache<(ServiceId, String), Option<Item>>,
}

fn token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

impl PubSub {
    pub fn new(store: Arc<dyn Store>, limits: Limits, roster: Arc<dyn RosterSource>) -> PubSub {
        PubSub {
            store,
            limits,
            roster,
            nodes: cache(limits.cache_ttl),
            last_items: cache(limits.cache_ttl),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether publishes (to one node too) may run concurrently and keep their order: the store
    /// applies writes in the order they were issued.
    pub fn ordered_writes(&self) -> bool {
        self.store.ordered_writes()
    }

    /// The configuration new nodes get unless the creator says otherwise: XEP-0060 defaults on the
    /// host service, XEP-0163 defaults on a PEP service.
    pub fn default_config(&self, svc: &ServiceId) -> NodeConfig {
        match svc {
            ServiceId::Host => NodeConfig::host_default(self.limits.max_payload_bytes),
            ServiceId::Pep(_) => NodeConfig::pep_default(self.limits.max_payload_bytes),
        }
    }

    /// True when the service is the actor's own PEP service.
    fn owns_service(svc: &ServiceId, actor: &Jid) -> bool {
        match svc {
            ServiceId::Host => false,
            ServiceId::Pep(owner) => *owner == actor.to_bare().to_string(),
        }
    }

    fn key(svc: &ServiceId, node: &str) -> (ServiceId, String) {
        (svc.clone(), node.to_owned())
    }

    fn forget(&self, svc: &ServiceId, node: &str) {
        let k = Self::key(svc, node);
        self.nodes.invalidate(&k);
    }

    /// The node with its affiliations and subscriptions, from the cache or the store.
    pub async fn node(&self, svc: &ServiceId, node: &str) -> PubSubResult<Arc<NodeState>> {
        let k = Self::key(svc, node);
        if let Some(n) = self.nodes.get(&k) {
            return Ok(n.clone());
        }
        let record = self
            .store
            .load_node(svc, node)
            .await?
            .ok_or(PubSubError::NodeNotFound)?;
        let affiliations = self
            .store
            .affiliations(svc, node)
            .await?
            .into_iter()
            .collect();
        let subscriptions = self.store.subscriptions(svc, node).await?;
        let state = Arc::new(NodeState {
            record,
            affiliations,
            subscriptions,
        });
        self.nodes.insert(k, state.clone());
        Ok(state)
    }

    /// Whose roster the presence and roster access models read: on a PEP service the account's;
    /// on the host service only the node's creator's, while it still owns the node. An owner added
    /// by someone else never accepted to lend its roster: otherwise an owner could add any user as
    /// owner and learn, by subscribing others, who is in that user's roster.
    fn roster_owners(state: &NodeState) -> Vec<Jid> {
        let owners = state.owners();
        match Jid::parse(&state.record.creator) {
            Ok(creator) if owners.contains(&creator.to_bare()) => vec![creator.to_bare()],
            _ => Vec::new(),
        }
    }

    async fn relation(&self, svc: &ServiceId, state: &NodeState, actor: &Jid) -> RosterRelation {
        self.roster
            .relation(svc, &Self::roster_owners(state), &actor.to_bare())
            .await
    }

    /// The candidates that may read the node now. Every delivery (explicit subscriber or implicit
    /// `+notify` contact, of every kind of notification) passes this same check as a read
    /// (XEP-0060 4.1 table 4, then the access model), with the owner's roster read once for all.
    pub async fn readers(
        &self,
        svc: &ServiceId,
        state: &NodeState,
        candidates: Vec<Recipient>,
    ) -> Vec<Recipient> {
        let cfg = &state.record.config;
        let needs_roster = matches!(
            cfg.access_model,
            AccessModel::Presence | AccessModel::Roster
        );
        let undecided: Vec<Jid> = if needs_roster {
            candidates
                .iter()
                .filter(|r| state.affiliation(&r.jid) == Affiliation::None)
                .map(|r| r.jid.to_bare())
                .collect()
        } else {
            Vec::new()
        };
        let relations = if undecided.is_empty() {
            Vec::new()
        } else {
            self.roster
                .relations(svc, &Self::roster_owners(state), &undecided)
                .await
        };
        let none = RosterRelation::default();
        candidates
            .into_iter()
            .filter(|r| {
                let bare = r.jid.to_bare();
                let rel = undecided
                    .iter()
                    .position(|j| *j == bare)
                    .map_or(&none, |i| &relations[i]);
                check(
                    state.affiliation(&r.jid),
                    Action::RetrieveItems,
                    cfg,
                    rel,
                    state.is_subscribed(&r.jid),
                )
                .is_ok()
            })
            .collect()
    }

    /// Checks `action` for `actor` on a node of `svc` (whose roster the access models consult).
    pub async fn authorize_in(
        &self,
        svc: &ServiceId,
        state: &NodeState,
        actor: &Jid,
        action: Action,
    ) -> PubSubResult<()> {
        let aff = state.affiliation(actor);
        let cfg = &state.record.config;
        // Only fetch the roster when the decision depends on it.
        let needs_roster = aff == Affiliation::None
            && matches!(action, Action::Subscribe | Action::RetrieveItems)
            && matches!(
                cfg.access_model,
                AccessModel::Presence | AccessModel::Roster
            );
        let roster = if needs_roster {
            self.relation(svc, state, actor).await
        } else {
            RosterRelation::default()
        };
        check(aff, action, cfg, &roster, state.is_subscribed(actor))
    }

    // ---- node lifecycle (XEP-0060 section 8) ----

    /// Creates a node (8.1); `name` None makes an instant node (8.1.2).
    pub async fn create(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        name: Option<&str>,
        config: Option<NodeConfig>,
    ) -> PubSubResult<String> {
        let name = match name {
            Some("") => return Err(PubSubError::NodeIdRequired),
            Some(n) => n.to_owned(),
            None => token(16),
        };
        // A PEP service's nodes are created by its account only (XEP-0163 section 4).
        if matches!(svc, ServiceId::Pep(_)) && !Self::owns_service(svc, actor) {
            return Err(PubSubError::Forbidden);
        }
        let creator = actor.to_bare().to_string();
        if matches!(svc, ServiceId::Host)
            && self.store.count_nodes_created_by(svc, &creator).await?
                >= self.limits.max_nodes_per_user
        {
            return Err(PubSubError::MaxNodesExceeded);
        }
        let config = match config {
            Some(c) => self.validate_config(c)?,
            None => self.default_config(svc),
        };
        let record = NodeRecord {
            name: name.clone(),
            config,
            created_ms: now_ms(),
            creator,
        };
        if !self.store.create_node(svc, &record, actor).await? {
            return Err(PubSubError::NodeExists);
        }
        self.forget(svc, &name);
        Ok(name)
    }

    /// Checks ranges and the service limits of a configuration.
    pub fn validate_config(&self, mut c: NodeConfig) -> PubSubResult<NodeConfig> {
        match c.max_items {
            MaxItems::Count(n) if n > self.limits.max_items_per_node => {
                return Err(PubSubError::BadConfig(format!(
                    "pubsub#max_items: at most {} (or max)",
                    self.limits.max_items_per_node
                )));
            }
            _ => {}
        }
        if c.max_payload_size == 0 || c.max_payload_size > self.limits.max_payload_bytes {
            c.max_payload_size = self.limits.max_payload_bytes;
        }
        Ok(c)
    }

    pub async fn get_config(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
    ) -> PubSubResult<NodeConfig> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::Configure)
            .await?;
        Ok(state.record.config.clone())
    }

    /// Replaces the configuration (8.2.5); notifies subscribers when notify_config is on. A
    /// subscriber the new configuration no longer lets read loses its subscription.
    pub async fn set_config(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        config: NodeConfig,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::Configure)
            .await?;
        let config = self.validate_config(config)?;
        self.store.save_config(svc, node, &config).await?;
        self.forget(svc, node);
        let mut out = self.revoke_unreadable(svc, node).await?;
        let state = self.node(svc, node).await?;
        if config.notify_config && config.deliver_notifications {
            let payload = config.deliver_payloads.then(|| Box::new(config.clone()));
            out.push(
                self.notification(
                    svc,
                    node,
                    &state,
                    Event::Configuration { config: payload },
                    &config,
                )
                .await,
            );
        }
        // A smaller max_items takes effect on the next publish (trim), keeping this O(1).
        Ok(out)
    }

    /// After a change of access model or affiliations: cancels the subscriptions of entities the
    /// node no longer lets read, and tells each of them (XEP-0060 8.8.4, subscription `none`).
    /// Under the presence and roster models a subscription stays while the owner's roster cannot
    /// be read with certainty; deliveries are checked one by one all the same ([`Self::readers`]).
    async fn revoke_unreadable(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        let cfg = &state.record.config;
        let roster_model = matches!(
            cfg.access_model,
            AccessModel::Presence | AccessModel::Roster
        );
        let mut out = Vec::new();
        for sub in &state.subscriptions {
            let aff = state.affiliation(&sub.jid);
            let allowed = match capability(aff, Action::RetrieveItems) {
                // The affiliation decides alone (an outcast never reads).
                Some(decided) => decided,
                None if roster_model => true,
                None => {
                    // A pending subscription waits for the owner (authorize); it is not a right.
                    let subscribed = sub.state == SubscriptionState::Subscribed;
                    let pending = sub.state == SubscriptionState::Pending
                        && cfg.access_model == AccessModel::Authorize;
                    pending
                        || check(
                            aff,
                            Action::RetrieveItems,
                            cfg,
                            &RosterRelation::default(),
                            subscribed,
                        )
                        .is_ok()
                }
            };
            if allowed {
                continue;
            }
            self.store
                .delete_subscription(svc, node, &sub.jid, &sub.subid)
                .await?;
            out.push(Notification {
                service: svc.clone(),
                node: node.to_owned(),
                recipients: vec![Recipient {
                    jid: sub.jid.clone(),
                    subids: Vec::new(),
                }],
                event: Event::Subscription {
                    jid: sub.jid.clone(),
                    state: None,
                    subid: Some(sub.subid.clone()),
                },
                kind: cfg.notification_type,
                only_available: false,
            });
        }
        if !out.is_empty() {
            self.forget(svc, node);
        }
        Ok(out)
    }

    /// Deletes the node (8.4) and tells subscribers when notify_delete is on.
    pub async fn delete(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        redirect: Option<String>,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::DeleteNode)
            .await?;
        self.store.delete_node(svc, node).await?;
        self.forget(svc, node);
        self.last_items.invalidate(&Self::key(svc, node));
        let cfg = &state.record.config;
        let mut out = Vec::new();
        if cfg.notify_delete {
            out.push(
                self.notification(svc, node, &state, Event::Delete { redirect }, cfg)
                    .await,
            );
        }
        Ok(out)
    }

    /// Removes every item (8.5).
    pub async fn purge(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::Purge).await?;
        if !state.record.config.persist_items {
            return Err(PubSubError::Unsupported("persistent-items"));
        }
        self.store.purge_items(svc, node).await?;
        self.last_items.insert(Self::key(svc, node), None);
        let cfg = &state.record.config;
        let mut out = Vec::new();
        if cfg.notify_retract && cfg.deliver_notifications {
            out.push(
                self.notification(svc, node, &state, Event::Purge, cfg)
                    .await,
            );
        }
        Ok(out)
    }

    pub async fn node_names(
        &self,
        svc: &ServiceId,
        after: Option<&str>,
        max: usize,
    ) -> PubSubResult<Vec<String>> {
        Ok(self
            .store
            .node_names(svc, after, max.min(self.limits.max_page))
            .await?)
    }

    /// The names of the nodes `actor` may read (XEP-0060 5.2 discovery follows each node's access
    /// model: a whitelist node is not shown to whom it would refuse).
    pub async fn readable_node_names(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        after: Option<&str>,
        max: usize,
    ) -> PubSubResult<Vec<String>> {
        let mut out = Vec::new();
        for name in self.node_names(svc, after, max).await? {
            let Ok(state) = self.node(svc, &name).await else {
                continue;
            };
            if self
                .authorize_in(svc, &state, actor, Action::RetrieveItems)
                .await
                .is_ok()
            {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// A notification to the node's subscribers who may read it now (`state` as of the change).
    async fn notification(
        &self,
        svc: &ServiceId,
        node: &str,
        state: &NodeState,
        event: Event,
        cfg: &NodeConfig,
    ) -> Notification {
        Notification {
            service: svc.clone(),
            node: node.to_owned(),
            recipients: self.readers(svc, state, state.recipients()).await,
            event,
            kind: cfg.notification_type,
            only_available: cfg.presence_based_delivery,
        }
    }

    // ---- publishing (XEP-0060 section 7) ----

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
            Err(PubSubError::NodeNotFound) if Self::owns_service(svc, actor) => {
                match self.create(svc, actor, Some(node), Some(config)).await {
                    Ok(_) | Err(PubSubError::NodeExists) => self.node(svc, node).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    async fn publish_to(
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
        let persistent = cfg.persist_items;
        if items.is_empty() && (persistent || cfg.deliver_payloads) {
            return Err(PubSubError::ItemRequired);
        }
        let limit = cfg.max_payload_size.min(self.limits.max_payload_bytes);
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
            MaxItems::Count(n) => Some(n.min(self.limits.max_items_per_node)),
            MaxItems::Max => Some(self.limits.max_items_per_node),
        };
        let publisher = actor.to_bare().to_string();
        let mut published = Vec::with_capacity(items.len());
        for (id, payload) in items {
            let item = Item {
                id: id.filter(|i| !i.is_empty()).unwrap_or_else(|| token(16)),
                publisher: publisher.clone(),
                payload: Arc::from(payload),
                published_ms: now_ms(),
            };
            if persistent {
                self.store.put_item(svc, node, &item, max_items).await?;
            }
            published.push(item);
        }
        // Filled only after the store acknowledged the write.
        if let Some(last) = published.last() {
            self.last_items
                .insert(Self::key(svc, node), Some(last.clone()));
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
        for id in &ids {
            self.store.delete_item(svc, node, id).await?;
        }
        let k = Self::key(svc, node);
        if matches!(self.last_items.get(&k), Some(Some(i)) if ids.contains(&i.id)) {
            self.last_items.invalidate(&k);
        }
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

    /// Items the actor may read (6.5).
    pub async fn items(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        selection: ItemSelection,
    ) -> PubSubResult<(ItemPage, bool)> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::RetrieveItems)
            .await?;
        if !state.record.config.persist_items {
            return Err(PubSubError::Unsupported("persistent-items"));
        }
        let max = self.limits.max_page;
        // Which end of the page to keep if it must be cut short: the newest items, or for a page
        // after a cursor the ones nearest to it.
        let keep_end = !matches!(selection, ItemSelection::Page(ItemQuery::After(..)));
        let mut page = match selection {
            ItemSelection::Newest(n) => {
                let n = n.unwrap_or(max).min(max);
                match self.last_items.get(&Self::key(svc, node)) {
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
        let truncated = self.fit_page(&mut page, keep_end);
        Ok((page, truncated))
    }

    /// Drops items until the page's payloads fit in `max_page_bytes` (XEP-0060 6.5.4: a service
    /// may return some of the items), keeping the newest end (`keep_end`) or the oldest; at least
    /// one item stays. True when items were dropped.
    fn fit_page(&self, page: &mut ItemPage, keep_end: bool) -> bool {
        let max = self.limits.max_page_bytes;
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

    /// The last published item, from the cache or the store.
    pub async fn last_item(&self, svc: &ServiceId, node: &str) -> PubSubResult<Option<Item>> {
        let k = Self::key(svc, node);
        if let Some(cached) = self.last_items.get(&k) {
            return Ok(cached);
        }
        let last = self
            .store
            .items(svc, node, ItemQuery::Newest(1))
            .await?
            .items
            .pop();
        self.last_items.insert(k, last.clone());
        Ok(last)
    }

    // ---- subscriptions (XEP-0060 section 6) ----

    /// Subscribes `jid` (6.1); the actor must be that JID (bare match) unless it owns the node.
    pub async fn subscribe(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        options: SubOptions,
    ) -> PubSubResult<Subscribed> {
        let state = self.node(svc, node).await?;
        if jid.to_bare() != actor.to_bare() && state.affiliation(actor) != Affiliation::Owner {
            return Err(PubSubError::InvalidJid);
        }
        self.authorize_in(svc, &state, jid, Action::Subscribe)
            .await?;
        if let Some(existing) = state.subscriptions.iter().find(|s| s.jid == *jid) {
            if existing.state == SubscriptionState::Pending {
                return Err(PubSubError::PendingSubscription);
            }
            return Ok(Subscribed {
                subscription: existing.clone(),
                notifications: Vec::new(),
            });
        }
        self.check_subscription_limits(svc, &state, jid).await?;
        let cfg = &state.record.config;
        let needs_approval = cfg.access_model == AccessModel::Authorize
            && matches!(state.affiliation(jid), Affiliation::None);
        let sub = Subscription {
            jid: jid.clone(),
            subid: token(16),
            state: if needs_approval {
                SubscriptionState::Pending
            } else {
                SubscriptionState::Subscribed
            },
            options,
        };
        self.store.put_subscription(svc, node, &sub).await?;
        self.forget(svc, node);
        let mut notifications = Vec::new();
        let owners: Vec<Recipient> = state
            .owners()
            .into_iter()
            .map(|jid| Recipient {
                jid,
                subids: Vec::new(),
            })
            .collect();
        if needs_approval {
            notifications.push(Notification {
                service: svc.clone(),
                node: node.to_owned(),
                recipients: owners,
                event: Event::AuthorizationRequest {
                    subscriber: jid.clone(),
                    subid: sub.subid.clone(),
                },
                kind: NotificationType::Normal,
                only_available: false,
            });
        } else {
            if cfg.notify_sub && !owners.is_empty() {
                notifications.push(Notification {
                    service: svc.clone(),
                    node: node.to_owned(),
                    recipients: owners,
                    event: Event::Subscription {
                        jid: jid.clone(),
                        state: Some(SubscriptionState::Subscribed),
                        subid: Some(sub.subid.clone()),
                    },
                    kind: cfg.notification_type,
                    only_available: false,
                });
            }
            if cfg.send_last_published_item != SendLastPublished::Never
                && cfg.persist_items
                && let Some(item) = self.last_item(svc, node).await?
            {
                notifications.push(Notification {
                    service: svc.clone(),
                    node: node.to_owned(),
                    recipients: vec![Recipient {
                        jid: jid.clone(),
                        subids: vec![sub.subid.clone()],
                    }],
                    event: Event::Items {
                        items: vec![item],
                        payloads: cfg.deliver_payloads,
                    },
                    kind: cfg.notification_type,
                    only_available: false,
                });
            }
        }
        Ok(Subscribed {
            subscription: sub,
            notifications,
        })
    }

    /// One more subscription of `jid`'s bare JID stays within the node's and the service's limits
    /// (each full JID of an account may subscribe, so an account is what is counted).
    async fn check_subscription_limits(
        &self,
        svc: &ServiceId,
        state: &NodeState,
        jid: &Jid,
    ) -> PubSubResult<()> {
        let bare = jid.to_bare();
        let on_node = state
            .subscriptions
            .iter()
            .filter(|s| s.jid.to_bare() == bare)
            .count();
        let l = &self.limits;
        if on_node >= l.max_subscriptions_per_node {
            return Err(PubSubError::LimitReached(format!(
                "{bare} has {on_node} subscriptions to this node, the most one account may hold"
            )));
        }
        let held = self.store.user_subscriptions(svc, &bare).await?.len();
        if held >= l.max_subscriptions_per_user {
            return Err(PubSubError::LimitReached(format!(
                "{bare} has {held} subscriptions on this service, the most one account may hold"
            )));
        }
        Ok(())
    }

    /// Finds the one subscription of `jid` that `subid` designates (6.2.3.1, 6.2.3.5).
    fn pick_subscription<'a>(
        state: &'a NodeState,
        jid: &Jid,
        subid: Option<&str>,
    ) -> PubSubResult<&'a Subscription> {
        let mine: Vec<&Subscription> = state
            .subscriptions
            .iter()
            .filter(|s| s.jid == *jid)
            .collect();
        match (mine.len(), subid) {
            (0, _) => Err(PubSubError::NoSubscription),
            (_, Some(id)) => mine
                .into_iter()
                .find(|s| s.subid == id)
                .ok_or(PubSubError::InvalidSubId),
            (1, None) => Ok(mine[0]),
            (_, None) => Err(PubSubError::SubIdRequired),
        }
    }

    /// Unsubscribes (6.2).
    pub async fn unsubscribe(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        subid: Option<&str>,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        if jid.to_bare() != actor.to_bare() && state.affiliation(actor) != Affiliation::Owner {
            return Err(PubSubError::Forbidden);
        }
        let sub = Self::pick_subscription(&state, jid, subid)?.clone();
        self.store
            .delete_subscription(svc, node, jid, &sub.subid)
            .await?;
        self.forget(svc, node);
        let cfg = &state.record.config;
        let mut out = Vec::new();
        if cfg.notify_sub {
            out.push(Notification {
                service: svc.clone(),
                node: node.to_owned(),
                recipients: state
                    .owners()
                    .into_iter()
                    .map(|jid| Recipient {
                        jid,
                        subids: Vec::new(),
                    })
                    .collect(),
                event: Event::Subscription {
                    jid: jid.clone(),
                    state: None,
                    subid: Some(sub.subid),
                },
                kind: cfg.notification_type,
                only_available: false,
            });
        }
        Ok(out)
    }

    pub async fn get_options(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        subid: Option<&str>,
    ) -> PubSubResult<Subscription> {
        let state = self.node(svc, node).await?;
        if jid.to_bare() != actor.to_bare() && state.affiliation(actor) != Affiliation::Owner {
            return Err(PubSubError::Forbidden);
        }
        Ok(Self::pick_subscription(&state, jid, subid)?.clone())
    }

    pub async fn set_options(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        subid: Option<&str>,
        options: SubOptions,
    ) -> PubSubResult<()> {
        let state = self.node(svc, node).await?;
        if jid.to_bare() != actor.to_bare() && state.affiliation(actor) != Affiliation::Owner {
            return Err(PubSubError::Forbidden);
        }
        let mut sub = Self::pick_subscription(&state, jid, subid)?.clone();
        sub.options = options;
        self.store.put_subscription(svc, node, &sub).await?;
        self.forget(svc, node);
        Ok(())
    }

    /// The actor's subscriptions (5.6), optionally for one node.
    pub async fn user_subscriptions(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: Option<&str>,
    ) -> PubSubResult<Vec<(String, Subscription)>> {
        let mut subs = self.store.user_subscriptions(svc, &actor.to_bare()).await?;
        if let Some(n) = node {
            subs.retain(|(name, _)| name == n);
        }
        Ok(subs)
    }

    /// The actor's affiliations (5.7), optionally for one node.
    pub async fn user_affiliations(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: Option<&str>,
    ) -> PubSubResult<Vec<(String, Affiliation)>> {
        let mut affs = self.store.user_affiliations(svc, actor).await?;
        if let Some(n) = node {
            affs.retain(|(name, _)| name == n);
        }
        Ok(affs)
    }

    // ---- owner management (8.7 - 8.9) ----

    pub async fn node_subscriptions(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
    ) -> PubSubResult<Vec<Subscription>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::ManageSubscriptions)
            .await?;
        Ok(state.subscriptions.clone())
    }

    /// Sets subscription states (8.8.2); `None` removes. Also approves/denies pending ones (8.6).
    pub async fn set_node_subscriptions(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        changes: Vec<(Jid, Option<SubscriptionState>, Option<String>)>,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::ManageSubscriptions)
            .await?;
        let cfg = &state.record.config;
        let mut out = Vec::new();
        for (jid, new_state, subid) in changes {
            let existing: Vec<&Subscription> = state
                .subscriptions
                .iter()
                .filter(|s| s.jid == jid && subid.as_ref().is_none_or(|id| *id == s.subid))
                .collect();
            match new_state {
                None => {
                    for s in &existing {
                        self.store
                            .delete_subscription(svc, node, &jid, &s.subid)
                            .await?;
                    }
                }
                Some(st) => {
                    if existing.is_empty() {
                        let sub = Subscription {
                            jid: jid.clone(),
                            subid: token(16),
                            state: st,
                            options: SubOptions::default(),
                        };
                        self.store.put_subscription(svc, node, &sub).await?;
                    }
                    for s in &existing {
                        let mut s = (*s).clone();
                        s.state = st;
                        self.store.put_subscription(svc, node, &s).await?;
                    }
                }
            }
            // The subscriber learns the new state (8.8.4).
            out.push(Notification {
                service: svc.clone(),
                node: node.to_owned(),
                recipients: vec![Recipient {
                    jid: jid.clone(),
                    subids: Vec::new(),
                }],
                event: Event::Subscription {
                    jid: jid.clone(),
                    state: new_state,
                    subid: existing.first().map(|s| s.subid.clone()),
                },
                kind: cfg.notification_type,
                only_available: false,
            });
        }
        self.forget(svc, node);
        Ok(out)
    }

    pub async fn node_affiliations(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
    ) -> PubSubResult<Vec<(Jid, Affiliation)>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::ManageAffiliations)
            .await?;
        let mut affs: Vec<(Jid, Affiliation)> = state
            .affiliations
            .iter()
            .map(|(j, a)| (j.clone(), *a))
            .collect();
        affs.sort();
        Ok(affs)
    }

    /// Sets affiliations (8.9.2); who may no longer read loses its subscriptions. A node keeps at
    /// least one owner.
    pub async fn set_node_affiliations(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        changes: Vec<(Jid, Affiliation)>,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::ManageAffiliations)
            .await?;
        let mut owners: Vec<Jid> = state.owners();
        for (jid, aff) in &changes {
            let bare = jid.to_bare();
            owners.retain(|o| *o != bare);
            if *aff == Affiliation::Owner {
                owners.push(bare);
            }
        }
        if owners.is_empty() {
            return Err(PubSubError::LastOwner);
        }
        for (jid, aff) in changes {
            self.store.set_affiliation(svc, node, &jid, aff).await?;
        }
        self.forget(svc, node);
        // An outcast, or a member dropped from a whitelist, loses its subscriptions (8.9.2).
        self.revoke_unreadable(svc, node).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    /// Two instances over one store (as two stratus processes over S3 + DynamoDB): a change made
    /// through one is enforced by the other once the cache bound has passed.
    #[tokio::test]
    async fn second_instance_sees_changes_within_the_cache_bound() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let ttl = std::time::Duration::from_millis(200);
        let limits = Limits {
            cache_ttl: Some(ttl),
            ..Limits::default()
        };
        let a = PubSub::new(store.clone(), limits, Arc::new(NoRoster));
        let b = PubSub::new(store, limits, Arc::new(NoRoster));
        let (owner, bob) = (jid("owner@localhost/x"), jid("bob@localhost/y"));
        let svc = ServiceId::Host;
        a.create(&svc, &owner, Some("n"), None).await.unwrap();
        // Instance A caches the node (open access, no subscribers).
        assert!(
            a.items(&svc, &bob, "n", ItemSelection::Newest(None))
                .await
                .is_ok()
        );
        // Through B: bob subscribes, then the owner makes approval necessary (bob, approved by
        // subscribing while the node was open, stays subscribed).
        b.subscribe(&svc, &bob, "n", &bob, SubOptions::default())
            .await
            .unwrap();
        let mut closed = b.get_config(&svc, &owner, "n").await.unwrap();
        closed.access_model = AccessModel::Authorize;
        b.set_config(&svc, &owner, "n", closed).await.unwrap();
        tokio::time::sleep(ttl + std::time::Duration::from_millis(100)).await;
        // A enforces the new access model and notifies the new subscriber.
        let carol = jid("carol@localhost/z");
        assert_eq!(
            a.items(&svc, &carol, "n", ItemSelection::Newest(None))
                .await
                .unwrap_err(),
            PubSubError::NotSubscribed
        );
        let (_, notes) = a
            .publish(&svc, &owner, "n", vec![(None, "<e xmlns='urn:e'/>".into())])
            .await
            .unwrap();
        assert!(
            notes[0].recipients.iter().any(|r| r.jid == bob),
            "{notes:?}"
        );
    }

    /// Issue 12, bounded answers: an account may hold a limited number of subscriptions per node
    /// (whatever resources it names) and per service; past them, policy-violation with the limit.
    #[tokio::test]
    async fn subscriptions_per_account_are_bounded() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let limits = Limits {
            max_subscriptions_per_node: 3,
            max_subscriptions_per_user: 5,
            ..Limits::default()
        };
        let ps = PubSub::new(store, limits, Arc::new(NoRoster));
        let svc = ServiceId::Host;
        let owner = jid("owner@localhost/x");
        for n in ["a", "b", "c"] {
            ps.create(&svc, &owner, Some(n), None).await.unwrap();
        }
        let ps = &ps;
        let svc = &svc;
        let sub = |node: &'static str, res: String| async move {
            let me = jid(&format!("bob@localhost/{res}"));
            ps.subscribe(svc, &me, node, &me, SubOptions::default())
                .await
        };
        for r in 0..3 {
            sub("a", r.to_string()).await.unwrap();
        }
        let err = sub("a", "3".into()).await.unwrap_err();
        assert!(matches!(err, PubSubError::LimitReached(_)), "{err:?}");
        // The same resource again is the subscription it has, not a new one.
        assert!(sub("a", "0".into()).await.is_ok());
        sub("b", "0".into()).await.unwrap();
        sub("b", "1".into()).await.unwrap();
        let err = sub("c", "0".into()).await.unwrap_err();
        assert!(matches!(err, PubSubError::LimitReached(_)), "{err:?}");
        // Another account is not counted against bob.
        let carol = jid("carol@localhost/x");
        assert!(
            ps.subscribe(svc, &carol, "c", &carol, SubOptions::default())
                .await
                .is_ok()
        );
    }

    /// XEP-0060 6.5.4: an items answer is cut at max_page_bytes of payload (at least one item),
    /// keeping the newest items, and says it was cut.
    #[tokio::test]
    async fn an_items_page_is_bounded_in_bytes() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let limits = Limits {
            max_page_bytes: 100,
            ..Limits::default()
        };
        let ps = PubSub::new(store, limits, Arc::new(NoRoster));
        let svc = ServiceId::Host;
        let owner = jid("owner@localhost/x");
        let mut cfg = NodeConfig::host_default(limits.max_payload_bytes);
        cfg.max_items = MaxItems::Count(10);
        ps.create(&svc, &owner, Some("n"), Some(cfg)).await.unwrap();
        for i in 0..5 {
            // 40 bytes each: two fit in 100.
            let payload = format!("<e xmlns='urn:e'>{i:0>19}</e>");
            assert_eq!(payload.len(), 40);
            ps.publish(&svc, &owner, "n", vec![(Some(format!("i{i}")), payload)])
                .await
                .unwrap();
        }
        let (page, cut) = ps
            .items(&svc, &owner, "n", ItemSelection::Newest(None))
            .await
            .unwrap();
        assert!(cut);
        let ids: Vec<_> = page.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(
            ids.contains(&"i4") && ids.contains(&"i3"),
            "the newest: {ids:?}"
        );
        let (page, cut) = ps
            .items(
                &svc,
                &owner,
                "n",
                ItemSelection::Page(ItemQuery::After(None, 10)),
            )
            .await
            .unwrap();
        assert!(cut);
        let ids: Vec<_> = page.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["i0", "i1"], "from the cursor on");
        let (page, cut) = ps
            .items(&svc, &owner, "n", ItemSelection::ById(vec!["i1".into()]))
            .await
            .unwrap();
        assert!(!cut);
        assert_eq!(page.items.len(), 1);
    }
}
