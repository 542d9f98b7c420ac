//! What differs between the host service and a PEP service (XEP-0163), decided in one place: the
//! defaults of new nodes, who may create, whether a publish creates a missing node, whose roster
//! the presence and roster access models read, and which service-wide limits apply. Everything
//! else (access, items, subscriptions, deliveries) is the same core for both. What PEP needs from
//! the server (presence, caps, implicit `+notify` recipients, last items on presence) lives in
//! `pep/` and `xmpp/delegated.rs`; it asks this policy nothing the core decides.

use super::model::{Affiliation, NodeConfig, ServiceId};
use super::service::NodeState;
use crate::jid::{BareJid, Jid};

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
}

/// The XEP-0060 service on the component's domain.
pub struct HostPolicy;

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

/// The PEP service of one account (XEP-0163): the account alone creates, a publish creates a
/// missing node (section 3) with the XEP-0163 defaults (section 4), and the account's roster
/// decides the presence and roster models.
pub struct PepPolicy {
    account: BareJid,
}

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
}

/// The policy of a service.
pub fn policy_of(svc: &ServiceId) -> Box<dyn ServicePolicy> {
    match svc {
        ServiceId::Host => Box::new(HostPolicy),
        ServiceId::Pep(account) => Box::new(PepPolicy {
            account: account.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::model::AccessModel;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    /// XEP-0163 sections 3 and 4 against XEP-0060 on the host service.
    #[test]
    fn pep_and_host_differ_where_the_xeps_say() {
        let host = policy_of(&ServiceId::Host);
        let pep = policy_of(&ServiceId::Pep(BareJid::parse("alice@h").unwrap()));
        assert!(host.may_create(&jid("bob@h/r")));
        assert!(pep.may_create(&jid("alice@h/phone")));
        assert!(!pep.may_create(&jid("bob@h/r")));
        assert!(pep.auto_creates_for(&jid("alice@h/phone")));
        assert!(!host.auto_creates_for(&jid("alice@h/phone")));
        // XEP-0163 4.3: PEP nodes default to the presence access model.
        assert_eq!(pep.default_config(1024).access_model, AccessModel::Presence);
        assert!(host.counts_nodes_per_user() && !pep.counts_nodes_per_user());
    }
}
