//! What differs between the host service and a PEP service (XEP-0163), decided in one place: the
//! defaults of new nodes, who may create, whether a publish creates a missing node, whose roster
//! the presence and roster access models read, and which service-wide limits apply. Everything
//! else (access, items, subscriptions, deliveries) is the same core for both. The PEP policy
//! ([`super::pep`]) also names the implicit `+notify` recipients of a node and the last items a
//! resource gets when it comes online; what it needs from the server (rosters, presence, caps)
//! comes through [`RosterSource`], implemented in `pep/`.

use async_trait::async_trait;

use super::model::{Affiliation, NodeConfig, ServiceId};
use super::pep::PepPolicy;
use super::service::{NodeState, RosterSource};
use crate::jid::{BareJid, Jid};

#[async_trait]
pub trait ServicePolicy: Send + Sync {
    /// The configuration a node gets unless its creator says otherwise.
    fn default_config(&self, max_payload_bytes: u64) -> NodeConfig;
    /// May `actor` create nodes on this service?
    fn may_create(&self, actor: &Jid) -> bool;
    /// Does a publish by `actor` to a missing node create it (XEP-0163 section 3)?
    fn auto_creates_for(&self, actor: &Jid) -> bool;
    /// Does `[pubsub] max_nodes_per_user` bound what `actor` creates here?
    fn counts_nodes_per_user(&self) -> bool;
    /// Whose roster the presence and roster access models of this node read.
    fn roster_owners(&self, state: &NodeState) -> Vec<BareJid>;
    /// Whether the service has recipients beyond its subscribers (then
    /// [`Self::implicit_candidates`] names them).
    fn has_implicit_recipients(&self) -> bool {
        false
    }
    /// Candidates for the events of `node` besides its subscribers (XEP-0163 section 4: the
    /// account's and its contacts' resources whose caps carry `node+notify`). Candidates only:
    /// each passes the same read check as a subscriber before anything reaches it.
    async fn implicit_candidates(&self, _source: &dyn RosterSource, _node: &str) -> Vec<Jid> {
        Vec::new()
    }
}

/// The XEP-0060 service on the component's domain.
pub struct HostPolicy;

#[async_trait]
impl ServicePolicy for HostPolicy {
    fn default_config(&self, max_payload_bytes: u64) -> NodeConfig {
        NodeConfig::host_default(max_payload_bytes)
    }

    fn may_create(&self, _actor: &Jid) -> bool {
        true
    }

    fn auto_creates_for(&self, _actor: &Jid) -> bool {
        false
    }

    fn counts_nodes_per_user(&self) -> bool {
        true
    }

    /// The node's creator's only, while it still owns the node: an owner added by someone else
    /// never accepted to lend its roster (otherwise an owner could add any user as owner and
    /// learn, by subscribing others, who is in that user's roster).
    fn roster_owners(&self, state: &NodeState) -> Vec<BareJid> {
        match BareJid::parse(&state.record.creator) {
            Ok(creator) if state.affiliation(&creator) == Affiliation::Owner => vec![creator],
            _ => Vec::new(),
        }
    }
}

/// The policy of a service (the host's is a zero-sized value: no allocation on its paths).
pub fn policy_of(svc: &ServiceId) -> Box<dyn ServicePolicy> {
    match svc {
        ServiceId::Host => Box::new(HostPolicy),
        ServiceId::Pep(account) => Box::new(PepPolicy::new(account)),
    }
}
