//! The PEP policy (XEP-0163): a PEP service is the same core as the host service, for one
//! account. Here is all that differs: the account alone creates (section 3), a publish creates a
//! missing node with the section 4 defaults, the account's roster decides the presence and roster
//! models, the account's and its contacts' resources whose caps ask `node+notify` are implicit
//! recipients (section 4), and a resource coming online gets the last items of the nodes it asks
//! for (section 4.3.1, `send_last_published_item = on_sub_and_presence`). What it needs from the
//! server (rosters, presence, caps) comes through [`RosterSource`]; every recipient it names
//! passes the same read check as a subscriber.

use std::collections::HashSet;

use async_trait::async_trait;

use super::access::Action;
use super::model::{NodeConfig, SendLastPublished, ServiceId};
use super::notify::{Event, Notification, Recipient};
use super::policy::ServicePolicy;
use super::service::{NodeState, PubSub, RosterSource};
use crate::jid::{BareJid, Jid};

/// Nodes of one account looked at when one of its contacts comes online, at most.
const MAX_NODES_ON_PRESENCE: usize = 1000;

/// The PEP service of one account.
pub struct PepPolicy {
    account: BareJid,
}

impl PepPolicy {
    pub fn new(account: &BareJid) -> Self {
        PepPolicy {
            account: account.clone(),
        }
    }
}

#[async_trait]
impl ServicePolicy for PepPolicy {
    fn default_config(&self, max_payload_bytes: u64) -> NodeConfig {
        NodeConfig::pep_default(max_payload_bytes)
    }

    fn may_create(&self, actor: &Jid) -> bool {
        actor.bare_str() == self.account.as_str()
    }

    fn auto_creates_for(&self, actor: &Jid) -> bool {
        self.may_create(actor)
    }

    fn counts_nodes_per_user(&self) -> bool {
        false
    }

    fn roster_owners(&self, _state: &NodeState) -> Vec<BareJid> {
        vec![self.account.clone()]
    }

    fn has_implicit_recipients(&self) -> bool {
        true
    }

    /// The account's own resources and those of the contacts that receive its presence
    /// (subscription `from` or `both`), when their caps carry `node+notify`.
    async fn implicit_candidates(&self, source: &dyn RosterSource, node: &str) -> Vec<Jid> {
        let mut out = source.notify_resources(&self.account, node);
        for contact in source.contacts(&self.account).await {
            if contact.from {
                out.extend(source.notify_resources(&contact.jid, node));
            }
        }
        out
    }
}

impl PubSub {
    /// A resource came online (or changed caps): the last item of every PEP node it asks for
    /// (`node+notify`) on its own account (if ours) and on the accounts of ours whose presence it
    /// receives, local or on another server, where
    /// the node sends its last item on presence and lets the resource read it now.
    pub async fn last_items_on_presence(&self, who: &Jid) -> Vec<Notification> {
        // One moment for every decision below: each contact's roster is read once for all of
        // its nodes (and shared with the other resources that came online meanwhile).
        let since = std::time::Instant::now();
        let features = self.roster.features(who).await;
        if !features.iter().any(|f| f.ends_with("+notify")) {
            return Vec::new();
        }
        let own = who.to_bare();
        let mut accounts = Vec::new();
        if self.roster.serves(&own) {
            accounts.push(own.clone());
        }
        accounts.extend(self.roster.sharing_with(&own).await);
        let mut seen = HashSet::new();
        accounts.retain(|a| seen.insert(a.clone()));
        let mut out = Vec::new();
        for account in accounts {
            let svc = ServiceId::Pep(account);
            let Ok(names) = self.node_names(&svc, None, MAX_NODES_ON_PRESENCE).await else {
                continue;
            };
            for node in names {
                if !features.contains(&format!("{node}+notify")) {
                    continue;
                }
                if let Some(n) = self.last_item_for(&svc, &node, who, since).await {
                    out.push(n);
                }
            }
        }
        out
    }

    /// The last item of `node` as a notification to `who` alone, if the node sends it on presence
    /// and `who` may read the node now.
    async fn last_item_for(
        &self,
        svc: &ServiceId,
        node: &str,
        who: &Jid,
        since: std::time::Instant,
    ) -> Option<Notification> {
        let (state, seen) = self.node_seen(svc, node).await.ok()?;
        let cfg = &state.record.config;
        if cfg.send_last_published_item != SendLastPublished::OnSubAndPresence {
            return None;
        }
        self.authorize_since(svc, &state, who, Action::RetrieveItems, since)
            .await
            .ok()?;
        let item = self.last_item_at(svc, node, seen).await.ok()??;
        Some(Notification {
            service: svc.clone(),
            node: node.to_owned(),
            recipients: vec![Recipient {
                jid: who.clone(),
                subids: Vec::new(),
            }],
            event: Event::Items {
                items: vec![item],
                payloads: cfg.deliver_payloads,
            },
            kind: cfg.notification_type,
            only_available: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pubsub::model::AccessModel;
    use crate::pubsub::policy::policy_of;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    /// XEP-0163 sections 3 and 4 against XEP-0060 on the host service.
    #[test]
    fn pep_and_host_differ_where_the_xeps_say() {
        let host = policy_of(&ServiceId::Host);
        let alice = ServiceId::Pep(BareJid::parse("alice@h").unwrap());
        let pep = policy_of(&alice);
        assert!(host.may_create(&jid("bob@h/r")));
        assert!(pep.may_create(&jid("alice@h/phone")));
        assert!(!pep.may_create(&jid("bob@h/r")));
        assert!(pep.auto_creates_for(&jid("alice@h/phone")));
        assert!(!host.auto_creates_for(&jid("alice@h/phone")));
        // XEP-0163 4.3: PEP nodes default to the presence access model.
        assert_eq!(pep.default_config(1024).access_model, AccessModel::Presence);
        assert!(host.counts_nodes_per_user() && !pep.counts_nodes_per_user());
        // Section 4: contacts' resources are recipients on PEP only.
        assert!(pep.has_implicit_recipients() && !host.has_implicit_recipients());
    }

    /// alice and bob share presence both ways (RFC 6121 section 3); bob/r is online and its
    /// caps ask for every node's notifications (XEP-0163 section 4).
    struct Pair;

    #[async_trait::async_trait]
    impl RosterSource for Pair {
        async fn relation(
            &self,
            _svc: &ServiceId,
            _owners: &[BareJid],
            _actor: &BareJid,
        ) -> crate::pubsub::access::RosterRelation {
            crate::pubsub::access::RosterRelation {
                presence_subscribed: true,
                groups: Vec::new(),
            }
        }

        async fn features(&self, _resource: &Jid) -> Arc<HashSet<String>> {
            Arc::new(["n1+notify", "n2+notify"].map(str::to_owned).into())
        }

        fn serves(&self, _account: &BareJid) -> bool {
            true
        }

        async fn sharing_with(&self, who: &BareJid) -> Vec<BareJid> {
            let other = if who.as_str() == "bob@h" {
                "alice@h"
            } else {
                "bob@h"
            };
            vec![BareJid::parse(other).unwrap()]
        }
    }

    /// A login storm is served from memory once warm: the second presence of a resource issues
    /// no store read at all, and a node created since is seen at the next presence.
    #[tokio::test]
    async fn last_items_on_presence_read_nothing_once_warm() {
        use crate::pubsub::service::Limits;
        use crate::storage::memory::MemoryStore;
        use crate::storage::metered::Metered;

        let metered = Arc::new(Metered::new(Arc::new(MemoryStore::default())));
        let counts = metered.counts();
        let ps = PubSub::new(metered, Limits::default(), Arc::new(Pair));
        let alice = jid("alice@h/phone");
        let svc = ServiceId::Pep(alice.to_bare());
        let item = |id: &str| vec![(Some(id.to_owned()), "<e xmlns='urn:e'/>".to_owned())];
        ps.create(&svc, &alice, Some("n1"), None).await.unwrap();
        ps.publish(&svc, &alice, "n1", item("a")).await.unwrap();
        let bob = jid("bob@h/r");
        let ids = |notes: &[Notification]| -> Vec<(String, String)> {
            let mut v: Vec<_> = notes
                .iter()
                .filter(|n| n.service == svc)
                .flat_map(|n| match &n.event {
                    Event::Items { items, .. } => items
                        .iter()
                        .map(|i| (n.node.clone(), i.id.clone()))
                        .collect(),
                    _ => Vec::new(),
                })
                .collect();
            v.sort();
            v
        };
        let first = ps.last_items_on_presence(&bob).await;
        assert_eq!(ids(&first), [("n1".to_owned(), "a".to_owned())]);
        let reads = counts.reads();
        let again = ps.last_items_on_presence(&bob).await;
        assert_eq!(ids(&again), ids(&first));
        assert_eq!(counts.reads(), reads, "a warm presence read the store");
        // A new node is listed at the next presence (the names cache was dropped).
        ps.create(&svc, &alice, Some("n2"), None).await.unwrap();
        ps.publish(&svc, &alice, "n2", item("b")).await.unwrap();
        let after = ps.last_items_on_presence(&bob).await;
        assert_eq!(
            ids(&after),
            [
                ("n1".to_owned(), "a".to_owned()),
                ("n2".to_owned(), "b".to_owned())
            ]
        );
        let reads = counts.reads();
        ps.last_items_on_presence(&bob).await;
        assert_eq!(counts.reads(), reads, "a warm presence read the store");
    }
}
