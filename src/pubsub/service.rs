//! The pubsub service: every operation is check -> persist -> notify. No XML here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use rand::RngExt;

use super::access::RosterRelation;
use super::error::{PubSubError, PubSubResult};
use super::model::*;
use super::notify::{Notification, Recipient};
use super::policy::policy_of;
use crate::jid::{BareJid, Jid};
use crate::storage::{Freshness, ItemQuery, Store};

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
    /// `pubsub#item_expire` of new nodes, in seconds (None: items never expire unless a node
    /// says so).
    pub default_item_expire: Option<u64>,
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
            default_item_expire: None,
        }
    }
}

/// What the core needs to know from outside it: what an owner's roster says about a JID (the
/// presence and roster models), and for PEP, an account's contacts, who is online and what
/// their caps ask for. The host service without a server behind it knows none of it
/// ([`NoRoster`]); PEP's implementation asks the server (`pep/`).
#[async_trait]
pub trait RosterSource: Send + Sync {
    async fn relation(
        &self,
        svc: &ServiceId,
        owners: &[BareJid],
        actor: &BareJid,
    ) -> RosterRelation;

    /// [`RosterSource::relation`] for a decision that began at `since`: a roster read sent since
    /// then is as good as a new one, so the several decisions of one moment (the last items
    /// owed to a resource that came online) share a read.
    async fn relation_since(
        &self,
        svc: &ServiceId,
        owners: &[BareJid],
        actor: &BareJid,
        _since: std::time::Instant,
    ) -> RosterRelation {
        self.relation(svc, owners, actor).await
    }

    /// The relation of each of `actors`, from one reading of the owners' rosters.
    async fn relations(
        &self,
        svc: &ServiceId,
        owners: &[BareJid],
        actors: &[BareJid],
    ) -> Vec<RosterRelation> {
        let mut out = Vec::with_capacity(actors.len());
        for a in actors {
            out.push(self.relation(svc, owners, a).await);
        }
        out
    }

    /// The contacts of `account`'s roster, each with the direction of its presence subscription.
    async fn contacts(&self, _account: &BareJid) -> Vec<Contact> {
        Vec::new()
    }

    /// The online resources of `account` whose caps (XEP-0115) ask for notifications of `node`
    /// (`node+notify`, XEP-0163 section 4), as known now: never waits on a client.
    fn notify_resources(&self, _account: &BareJid, _node: &str) -> Vec<Jid> {
        Vec::new()
    }

    /// The features of an online resource's caps, asked once per caps hash.
    async fn features(&self, _resource: &Jid) -> Arc<std::collections::HashSet<String>> {
        Arc::default()
    }

    /// True when `account` is one of the accounts this service gives PEP to.
    fn serves(&self, _account: &BareJid) -> bool {
        false
    }

    /// The served accounts whose presence `who` receives (RFC 6121 section 3: `who` is in their
    /// rosters with subscription `from` or `both`), as far as known: whose PEP last items a new
    /// resource of `who` may be owed.
    async fn sharing_with(&self, _who: &BareJid) -> Vec<BareJid> {
        Vec::new()
    }
}

/// One entry of an account's roster (RFC 6121 section 2.1.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub jid: BareJid,
    /// The contact receives the account's presence (subscription `from` or `both`).
    pub from: bool,
    /// The account receives the contact's presence (subscription `to` or `both`).
    pub to: bool,
}

/// The host service without roster access: nobody is in an owner's roster.
pub struct NoRoster;

#[async_trait]
impl RosterSource for NoRoster {
    async fn relation(
        &self,
        _svc: &ServiceId,
        _owners: &[BareJid],
        _actor: &BareJid,
    ) -> RosterRelation {
        RosterRelation::default()
    }
}

/// A node with its affiliations and subscriptions, as cached.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub record: NodeRecord,
    pub affiliations: HashMap<BareJid, Affiliation>,
    pub subscriptions: Vec<Subscription>,
    /// The store's config version this state was read at (shared stores only).
    pub version: Option<u64>,
}

/// A cached last item, with the store's items version read before it (shared stores only).
#[derive(Debug, Clone)]
pub(super) struct LastItem {
    pub item: Option<Item>,
    pub at: Option<u64>,
}

impl NodeState {
    pub fn affiliation(&self, jid: &Jid) -> Affiliation {
        self.affiliations
            .get(jid.bare_str())
            .copied()
            .unwrap_or(Affiliation::None)
    }

    pub fn owners(&self) -> Vec<BareJid> {
        self.affiliations
            .iter()
            .filter(|(_, a)| **a == Affiliation::Owner)
            .map(|(j, _)| j.clone())
            .collect()
    }

    /// True when `jid` (or, for a bare JID, any of its resources) has an approved subscription.
    pub fn is_subscribed(&self, jid: &Jid) -> bool {
        self.subscriptions.iter().any(|s| {
            s.state == SubscriptionState::Subscribed
                && (s.jid == *jid || s.jid.as_str() == jid.bare_str())
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

pub(super) fn cache<V: Clone + Send + Sync + 'static>(
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
    pub(super) store: Arc<dyn Store>,
    /// Replaced whole on SIGHUP ([`PubSub::set_limits`]); each request reads one copy.
    pub(super) limits: arc_swap::ArcSwap<Limits>,
    pub(super) roster: Arc<dyn RosterSource>,
    /// Nodes with their affiliations and subscriptions (bounded: least recently used go first).
    pub(super) nodes: moka::sync::Cache<(ServiceId, String), Arc<NodeState>>,
    /// The last item of each node, filled only after the store acknowledged the write.
    pub(super) last_items: moka::sync::Cache<(ServiceId, String), LastItem>,
    /// Each service's first page of node names (`max_page` of them), on a store of one instance
    /// only: what a resource coming online needs ([`PubSub::last_items_on_presence`]) without a
    /// store read. Dropped on every create and delete of a node of the service.
    pub(super) names: moka::sync::Cache<ServiceId, Arc<Vec<String>>>,
    /// Bumped (under its lock) by every create and delete; a page read from the store is cached
    /// only when no create or delete happened during the read.
    pub(super) names_epoch: std::sync::Mutex<u64>,
    /// Items to delete when they expire (`pubsub#item_expire`).
    pub(super) expiries: super::expiry::Schedule,
    /// The service administrators (`[admin] jids`, and the service's own domain for
    /// `stratus admin`): owners of every node of the host service ([`PubSub::affiliation`]).
    /// Replaced whole on SIGHUP.
    pub(super) admins: arc_swap::ArcSwap<HashSet<BareJid>>,
}

pub(super) fn token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

/// Keeps the last of each run of entries that `same` says are one (in the order of those last
/// ones): a request that names a key twice means its later entry, and a store batch names each key
/// once.
pub(super) fn dedup_keep_last<T>(v: &mut Vec<T>, same: impl Fn(&T, &T) -> bool) {
    let mut i = 0;
    while i < v.len() {
        if v[i + 1..].iter().any(|later| same(&v[i], later)) {
            v.remove(i);
        } else {
            i += 1;
        }
    }
}

impl PubSub {
    pub fn new(store: Arc<dyn Store>, limits: Limits, roster: Arc<dyn RosterSource>) -> PubSub {
        PubSub {
            store,
            limits: arc_swap::ArcSwap::from_pointee(limits),
            roster,
            nodes: cache(limits.cache_ttl),
            last_items: cache(limits.cache_ttl),
            names: moka::sync::Cache::builder()
                .max_capacity(NODE_CACHE_CAPACITY)
                .build(),
            names_epoch: Default::default(),
            expiries: Default::default(),
            admins: Default::default(),
        }
    }

    /// The service administrators from now on (startup and SIGHUP).
    pub fn set_admins(&self, admins: impl IntoIterator<Item = BareJid>) {
        self.admins.store(Arc::new(admins.into_iter().collect()));
    }

    /// True for a service administrator of the host service.
    pub fn is_admin(&self, jid: &Jid) -> bool {
        self.admins.load().contains(jid.bare_str())
    }

    /// The affiliation every decision about `jid` on a node uses: the stored one, except that a
    /// service administrator owns every node of the host service (as Prosody's mod_pubsub treats
    /// its admins). Users' PEP services have no administrator: their data stays theirs.
    pub fn affiliation(&self, svc: &ServiceId, state: &NodeState, jid: &Jid) -> Affiliation {
        if *svc == ServiceId::Host && self.is_admin(jid) {
            return Affiliation::Owner;
        }
        state.affiliation(jid)
    }

    pub fn limits(&self) -> Limits {
        **self.limits.load()
    }

    /// New service limits (SIGHUP), from the next request on. The cache bound (`cache_ttl_ms`)
    /// is fixed when the caches are built: a different one is kept as it was, and the answer
    /// says so (it needs a restart).
    pub fn set_limits(&self, mut new: Limits) -> bool {
        let current = self.limits();
        let ttl_kept = new.cache_ttl == current.cache_ttl;
        new.cache_ttl = current.cache_ttl;
        self.limits.store(Arc::new(new));
        ttl_kept
    }

    /// Whether publishes (to one node too) may run concurrently and keep their order: the store
    /// applies writes in the order they were issued.
    pub fn ordered_writes(&self) -> bool {
        self.store.ordered_writes()
    }

    /// The configuration new nodes get unless the creator says otherwise: XEP-0060 defaults on the
    /// host service, XEP-0163 defaults on a PEP service ([`super::policy`]).
    pub fn default_config(&self, svc: &ServiceId) -> NodeConfig {
        let limits = self.limits();
        let mut config = policy_of(svc).default_config(limits.max_payload_bytes);
        config.item_expire = limits.default_item_expire;
        config
    }

    pub(super) fn key(svc: &ServiceId, node: &str) -> (ServiceId, String) {
        (svc.clone(), node.to_owned())
    }

    /// The service's list of nodes changed (a create or a delete, after the store's answer).
    pub(super) fn forget_names(&self, svc: &ServiceId) {
        let mut epoch = self.names_epoch.lock().unwrap_or_else(|e| e.into_inner());
        *epoch += 1;
        self.names.invalidate(svc);
    }

    pub(super) fn forget(&self, svc: &ServiceId, node: &str) {
        let k = Self::key(svc, node);
        self.nodes.invalidate(&k);
    }

    /// The node with its affiliations and subscriptions, from the cache or the store.
    pub async fn node(&self, svc: &ServiceId, node: &str) -> PubSubResult<Arc<NodeState>> {
        Ok(self.node_seen(svc, node).await?.0)
    }

    /// The node, and on a store other instances share, the items version read with it (for
    /// [`PubSub::cached_last`]). On such a store the node's version is read first, on every
    /// request (one request on aws): a cached node is used only while it is current, so what
    /// another instance changed (a subscription, an affiliation, the configuration) holds here
    /// from the next request on. The cache TTL bounds memory only.
    pub(super) async fn node_seen(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> PubSubResult<(Arc<NodeState>, Option<u64>)> {
        let k = Self::key(svc, node);
        let version = if self.store.shared() {
            match self.store.node_version(svc, node).await? {
                Freshness::Gone => {
                    self.nodes.invalidate(&k);
                    self.last_items.invalidate(&k);
                    return Err(PubSubError::NodeNotFound);
                }
                Freshness::At(v) => Some(v),
            }
        } else {
            None
        };
        let items_version = version.map(|v| v.items);
        if let Some(n) = self.nodes.get(&k)
            && (version.is_none() || n.version == version.map(|v| v.config))
        {
            return Ok((n.clone(), items_version));
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
        if record.config.item_expire.is_some() && record.config.persist_items {
            // After a restart the schedule is empty: what the node holds is scheduled again.
            let stored = self
                .store
                .items(
                    svc,
                    node,
                    ItemQuery::Newest(self.limits().max_items_per_node as usize),
                )
                .await?;
            self.schedule_expiry(svc, node, &record.config, &stored.items);
        }
        let state = Arc::new(NodeState {
            record,
            affiliations,
            subscriptions,
            version: version.map(|v| v.config),
        });
        self.nodes.insert(k, state.clone());
        Ok((state, items_version))
    }

    /// The cached last item of a node, when it is current: on a shared store only if it was
    /// read at the items version `seen` (read by this request's [`PubSub::node_seen`]).
    pub(super) fn cached_last(
        &self,
        k: &(ServiceId, String),
        seen: Option<u64>,
    ) -> Option<Option<Item>> {
        let cached = self.last_items.get(k)?;
        if self.store.shared() && (seen.is_none() || cached.at != seen) {
            return None;
        }
        Some(cached.item)
    }

    // ---- node lifecycle (XEP-0060 section 8) ----

    pub async fn node_names(
        &self,
        svc: &ServiceId,
        after: Option<&str>,
        max: usize,
    ) -> PubSubResult<Vec<String>> {
        let page = self.limits().max_page;
        let max = max.min(page);
        if after.is_some() || self.store.shared() {
            return Ok(self.store.node_names(svc, after, max).await?);
        }
        if let Some(names) = self.names.get(svc) {
            return Ok(names.iter().take(max).cloned().collect());
        }
        let before = *self.names_epoch.lock().unwrap_or_else(|e| e.into_inner());
        let names = self.store.node_names(svc, None, page).await?;
        {
            let epoch = self.names_epoch.lock().unwrap_or_else(|e| e.into_inner());
            if *epoch == before {
                self.names.insert(svc.clone(), Arc::new(names.clone()));
            }
        }
        Ok(names.into_iter().take(max).collect())
    }

    // ---- publishing (XEP-0060 section 7) ----

    // ---- subscriptions (XEP-0060 section 6) ----

    // ---- owner management (8.7 - 8.9) ----
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
