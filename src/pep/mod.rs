//! PEP (XEP-0163) for the server's own users, through XEP-0355 namespace delegation and XEP-0356
//! privileged entity. A PEP service is the pubsub core with another policy: the service id is the
//! account (`ServiceId::Pep`), defaults come from XEP-0163, the presence and roster access models
//! read the account's roster, and notifications go to contacts whose caps ask for `+notify`.

pub mod caps;
pub mod delegation;
pub mod presence;
pub mod privilege;
pub mod roster;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::component::{Outbox, Requests};
use crate::jid::{BareJid, Jid};
use crate::pubsub::access::RosterRelation;
use crate::pubsub::model::ServiceId;
use crate::pubsub::service::{Contact, RosterSource};

pub const NS_FORWARD: &str = "urn:xmpp:forward:0";

/// Entries per cache (caps hashes, per-resource caps, rosters) unless configured.
pub const DEFAULT_CACHE_ENTRIES: u64 = 10_000;

/// Everything PEP needs to know about the servers it serves.
pub struct Pep {
    /// Server domains whose forwarded IQs and privileges are accepted.
    servers: Vec<String>,
    /// The component's own domain.
    pub component: String,
    pub privileges: privilege::Privileges,
    pub rosters: roster::Rosters,
    pub presence: presence::PresenceMap,
    pub requests: Arc<Requests>,
    pub outbox: Outbox,
    /// Server domain -> the namespaces it delegated to us (XEP-0355 section 5).
    delegated: std::sync::Mutex<std::collections::HashMap<String, HashSet<String>>>,
}

impl Pep {
    /// Each owner's roster as read since `since` ([`Pep::roster_since`]), once for all the
    /// actors; only the rosters of accounts of the servers we serve can be read.
    async fn relations_since(
        &self,
        owners: &[BareJid],
        actors: &[BareJid],
        since: std::time::Instant,
    ) -> Vec<RosterRelation> {
        let mut out = vec![RosterRelation::default(); actors.len()];
        for owner in owners.iter().filter(|o| self.is_local(o)) {
            let roster = self.roster_since(owner, since).await;
            for (actor, relation) in actors.iter().zip(out.iter_mut()) {
                if let Some(item) = roster.get(actor.as_str()) {
                    relation.presence_subscribed |= item.subscription_from();
                    relation.groups.extend(item.groups.iter().cloned());
                }
            }
        }
        out
    }

    /// `requests`: the component's table of IQs waiting for answers; `cache_entries`: the bound
    /// of each of its caches.
    pub fn new(
        component: &str,
        servers: Vec<String>,
        outbox: Outbox,
        requests: Arc<Requests>,
        cache_entries: u64,
    ) -> Pep {
        Pep {
            servers,
            component: component.to_owned(),
            privileges: privilege::Privileges::default(),
            rosters: roster::Rosters::new(cache_entries),
            presence: presence::PresenceMap::new(cache_entries),
            requests,
            outbox,
            delegated: Default::default(),
        }
    }

    /// Records the namespaces a server says it delegates to us.
    pub fn record_delegation<'a>(
        &self,
        server: &str,
        namespaces: impl IntoIterator<Item = &'a str>,
    ) {
        let mut d = self.delegated.lock().unwrap_or_else(|e| e.into_inner());
        d.entry(server.to_owned())
            .or_default()
            .extend(namespaces.into_iter().map(str::to_owned));
    }

    /// True when `server` delegates namespace `ns` to us.
    pub fn delegates(&self, server: &str, ns: &str) -> bool {
        self.delegated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server)
            .is_some_and(|s| s.contains(ns))
    }

    /// True when `from` is one of the server domains we serve (a bare domain JID).
    pub fn is_server(&self, from: &Jid) -> bool {
        from.node().is_none()
            && from.resource().is_none()
            && self.servers.iter().any(|s| s == from.domain())
    }

    /// True when the account lives on a server we serve.
    pub fn is_local(&self, jid: &Jid) -> bool {
        jid.node().is_some() && self.servers.iter().any(|s| s == jid.domain())
    }

    /// True when the presence privilege lets us see this JID and it is not online (a bare JID:
    /// no resource online; a full JID: that resource is not online).
    pub fn known_offline(&self, jid: &Jid) -> bool {
        if !self.is_local(jid)
            || !self
                .privileges
                .get(jid.domain())
                .is_some_and(|g| g.presence)
        {
            return false;
        }
        let online = self.presence.resources(jid.bare_str());
        match jid.resource() {
            None => online.is_empty(),
            Some(r) => !online.iter().any(|(j, _)| j.resource() == r),
        }
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }
}

/// What the core asks the server through PEP: rosters (the presence and roster access models,
/// contacts), presence and caps (implicit `+notify` recipients, last items on presence). Rosters
/// are read fresh for every access decision: a new contact is let in at once.
#[async_trait]
impl RosterSource for Arc<Pep> {
    async fn relation(
        &self,
        svc: &ServiceId,
        owners: &[BareJid],
        actor: &BareJid,
    ) -> RosterRelation {
        self.relation_since(svc, owners, actor, std::time::Instant::now())
            .await
    }

    async fn relation_since(
        &self,
        _svc: &ServiceId,
        owners: &[BareJid],
        actor: &BareJid,
        since: std::time::Instant,
    ) -> RosterRelation {
        self.relations_since(owners, std::slice::from_ref(actor), since)
            .await
            .pop()
            .unwrap_or_default()
    }

    async fn relations(
        &self,
        _svc: &ServiceId,
        owners: &[BareJid],
        actors: &[BareJid],
    ) -> Vec<RosterRelation> {
        self.relations_since(owners, actors, std::time::Instant::now())
            .await
    }

    async fn contacts(&self, account: &BareJid) -> Vec<Contact> {
        if !self.is_local(account) {
            return Vec::new();
        }
        let roster = self.roster_of(account).await;
        roster
            .iter()
            .filter_map(|(jid, item)| {
                Some(Contact {
                    jid: BareJid::parse(jid).ok()?,
                    from: item.subscription_from(),
                    to: item.subscription_to(),
                })
            })
            .collect()
    }

    fn notify_resources(&self, account: &BareJid, node: &str) -> Vec<Jid> {
        Pep::notify_resources(self, account.as_str(), node)
    }

    async fn features(&self, resource: &Jid) -> Arc<HashSet<String>> {
        let caps = self
            .presence
            .resources(resource.bare_str())
            .into_iter()
            .find(|(j, _)| j.as_str() == resource.as_str())
            .and_then(|(_, c)| c);
        self.features_of(resource, &caps).await
    }

    fn serves(&self, account: &BareJid) -> bool {
        self.is_local(account)
    }

    /// For an account of ours, its own roster says whose presence it receives. A contact on
    /// another server has no roster we can read: the accounts whose rosters listed it when read
    /// (every account that logged in, published or was read for an access decision since start)
    /// are asked again, from their cached rosters.
    async fn sharing_with(&self, who: &BareJid) -> Vec<BareJid> {
        if self.is_local(who) {
            return self
                .contacts(who)
                .await
                .into_iter()
                .filter(|c| c.to && self.is_local(&c.jid))
                .map(|c| c.jid)
                .collect();
        }
        let mut out = Vec::new();
        for account in self.rosters.watchers_of(who.as_str()) {
            let Ok(owner) = BareJid::parse(&account) else {
                continue;
            };
            let roster = self.roster_of(&owner).await;
            if roster
                .get(who.as_str())
                .is_some_and(roster::RosterItem::subscription_from)
            {
                out.push(owner);
            } else {
                self.rosters.unwatch(who.as_str(), &account);
            }
        }
        out.sort();
        out
    }
}
