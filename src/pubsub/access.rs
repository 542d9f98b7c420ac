//! Who may do what: a table of capabilities per affiliation (XEP-0060 section 4.1, table 4), then
//! the node's access model for entities without a privileged affiliation.

use super::error::PubSubError;
use super::model::{AccessModel, Affiliation, NodeConfig, PublishModel};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    RetrieveItems,
    Publish,
    /// Retract an item someone else published.
    RetractAny,
    /// Retract an item the actor published.
    RetractOwn,
    Purge,
    DeleteNode,
    Configure,
    ManageSubscriptions,
    ManageAffiliations,
}

/// The affiliation table. `None` means "decided by the access or publish model".
pub fn capability(aff: Affiliation, action: Action) -> Option<bool> {
    use Action::*;
    use Affiliation as A;
    match (aff, action) {
        (A::Outcast, _) => Some(false),
        (A::Owner, _) => Some(true),
        (A::Publisher, Subscribe | RetrieveItems | Publish | RetractAny | RetractOwn) => Some(true),
        (A::Publisher, _) => Some(false),
        (A::PublishOnly, Publish | RetractOwn) => Some(true),
        (A::PublishOnly, _) => Some(false),
        (A::Member, Subscribe | RetrieveItems) => Some(true),
        (A::Member, Publish) => None,
        (A::Member, _) => Some(false),
        (A::None, Subscribe | RetrieveItems | Publish) => None,
        (A::None, RetractOwn) => None,
        (A::None, _) => Some(false),
    }
}

/// What the node's owner knows about the actor, for the presence and roster access models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterRelation {
    /// The actor is subscribed to an owner's presence (subscription from/both).
    pub presence_subscribed: bool,
    /// The roster groups an owner put the actor in.
    pub groups: Vec<String>,
}

/// The access decision for Subscribe/RetrieveItems of an actor whose affiliation leaves it open.
/// `subscribed` says whether the actor has an approved subscription (authorize model).
pub fn access_model_allows(
    config: &NodeConfig,
    roster: &RosterRelation,
    subscribed: bool,
    action: Action,
) -> Result<(), PubSubError> {
    match config.access_model {
        AccessModel::Open => Ok(()),
        AccessModel::Presence if roster.presence_subscribed => Ok(()),
        AccessModel::Presence => Err(PubSubError::PresenceSubscriptionRequired),
        AccessModel::Roster
            if roster
                .groups
                .iter()
                .any(|g| config.roster_groups_allowed.contains(g)) =>
        {
            Ok(())
        }
        AccessModel::Roster => Err(PubSubError::NotInRosterGroup),
        // Anyone may ask; the owner approves (XEP-0060 6.1.3.3 / 6.1.4).
        AccessModel::Authorize if action == Action::Subscribe => Ok(()),
        AccessModel::Authorize if subscribed => Ok(()),
        AccessModel::Authorize => Err(PubSubError::NotSubscribed),
        AccessModel::Whitelist => Err(PubSubError::ClosedNode),
    }
}

/// The publish decision for an actor whose affiliation leaves it open.
pub fn publish_model_allows(config: &NodeConfig, subscribed: bool) -> Result<(), PubSubError> {
    match config.publish_model {
        PublishModel::Open => Ok(()),
        PublishModel::Subscribers if subscribed => Ok(()),
        _ => Err(PubSubError::Forbidden),
    }
}

/// The whole decision: the affiliation table first, then the models.
pub fn check(
    aff: Affiliation,
    action: Action,
    config: &NodeConfig,
    roster: &RosterRelation,
    subscribed: bool,
) -> Result<(), PubSubError> {
    match capability(aff, action) {
        Some(true) => Ok(()),
        Some(false) => Err(PubSubError::Forbidden),
        None => match action {
            Action::Subscribe | Action::RetrieveItems => {
                access_model_allows(config, roster, subscribed, action)
            }
            // Whoever the publish model lets publish may retract what they published.
            Action::Publish | Action::RetractOwn => publish_model_allows(config, subscribed),
            // Without an affiliation nobody owns items on the node.
            _ => Err(PubSubError::Forbidden),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Affiliation as A;

    fn cfg(access: AccessModel, publish: PublishModel) -> NodeConfig {
        let mut c = NodeConfig::host_default(1024);
        c.access_model = access;
        c.publish_model = publish;
        c.roster_groups_allowed = vec!["friends".into()];
        c
    }

    const ALL_AFFS: [Affiliation; 6] = [
        A::Owner,
        A::Publisher,
        A::PublishOnly,
        A::Member,
        A::None,
        A::Outcast,
    ];
    const ALL_MODELS: [AccessModel; 5] = [
        AccessModel::Open,
        AccessModel::Presence,
        AccessModel::Roster,
        AccessModel::Authorize,
        AccessModel::Whitelist,
    ];

    /// XEP-0060 4.1 table 4, with the access model deciding for `none` (section 4.5).
    #[test]
    fn retrieve_items_for_every_access_model_and_affiliation() {
        let stranger = RosterRelation::default();
        for model in ALL_MODELS {
            let c = cfg(model, PublishModel::Publishers);
            for aff in ALL_AFFS {
                let got = check(aff, RetrieveItems, &c, &stranger, false);
                let expected: Result<(), PubSubError> = match aff {
                    A::Owner | A::Publisher | A::Member => Ok(()),
                    A::PublishOnly | A::Outcast => Err(PubSubError::Forbidden),
                    A::None => match model {
                        AccessModel::Open => Ok(()),
                        AccessModel::Presence => Err(PubSubError::PresenceSubscriptionRequired),
                        AccessModel::Roster => Err(PubSubError::NotInRosterGroup),
                        AccessModel::Authorize => Err(PubSubError::NotSubscribed),
                        AccessModel::Whitelist => Err(PubSubError::ClosedNode),
                    },
                };
                assert_eq!(got, expected, "{model:?} x {aff:?}");
            }
        }
    }

    #[test]
    fn subscribe_for_every_access_model_and_affiliation() {
        let stranger = RosterRelation::default();
        for model in ALL_MODELS {
            let c = cfg(model, PublishModel::Publishers);
            for aff in ALL_AFFS {
                let got = check(aff, Subscribe, &c, &stranger, false).is_ok();
                let expected = match aff {
                    A::Owner | A::Publisher | A::Member => true,
                    A::PublishOnly | A::Outcast => false,
                    A::None => matches!(model, AccessModel::Open | AccessModel::Authorize),
                };
                assert_eq!(got, expected, "{model:?} x {aff:?}");
            }
        }
    }

    #[test]
    fn presence_and_roster_models_use_the_owner_roster() {
        let contact = RosterRelation {
            presence_subscribed: true,
            groups: vec!["friends".into()],
        };
        let other_group = RosterRelation {
            presence_subscribed: true,
            groups: vec!["work".into()],
        };
        let p = cfg(AccessModel::Presence, PublishModel::Publishers);
        assert_eq!(check(A::None, RetrieveItems, &p, &contact, false), Ok(()));
        let r = cfg(AccessModel::Roster, PublishModel::Publishers);
        assert_eq!(check(A::None, Subscribe, &r, &contact, false), Ok(()));
        assert_eq!(
            check(A::None, Subscribe, &r, &other_group, false),
            Err(PubSubError::NotInRosterGroup)
        );
        // An approved subscriber of an authorize node may read.
        let a = cfg(AccessModel::Authorize, PublishModel::Publishers);
        assert_eq!(
            check(A::None, RetrieveItems, &a, &RosterRelation::default(), true),
            Ok(())
        );
    }

    #[test]
    fn publish_for_every_publish_model_and_affiliation() {
        for model in [
            PublishModel::Publishers,
            PublishModel::Subscribers,
            PublishModel::Open,
        ] {
            let c = cfg(AccessModel::Open, model);
            for aff in ALL_AFFS {
                for subscribed in [false, true] {
                    let got =
                        check(aff, Publish, &c, &RosterRelation::default(), subscribed).is_ok();
                    let expected = match aff {
                        A::Owner | A::Publisher | A::PublishOnly => true,
                        A::Outcast => false,
                        A::Member | A::None => match model {
                            PublishModel::Open => true,
                            PublishModel::Subscribers => subscribed,
                            PublishModel::Publishers => false,
                        },
                    };
                    assert_eq!(got, expected, "{model:?} x {aff:?} subscribed={subscribed}");
                }
            }
        }
    }

    #[test]
    fn owner_only_actions() {
        let c = cfg(AccessModel::Open, PublishModel::Open);
        for action in [
            Purge,
            DeleteNode,
            Configure,
            ManageSubscriptions,
            ManageAffiliations,
        ] {
            for aff in ALL_AFFS {
                let got = check(aff, action, &c, &RosterRelation::default(), true).is_ok();
                assert_eq!(got, aff == A::Owner, "{action:?} x {aff:?}");
            }
        }
        assert!(
            check(
                A::Publisher,
                RetractAny,
                &c,
                &RosterRelation::default(),
                false
            )
            .is_ok()
        );
        assert!(
            check(
                A::PublishOnly,
                RetractAny,
                &c,
                &RosterRelation::default(),
                false
            )
            .is_err()
        );
        assert!(
            check(
                A::PublishOnly,
                RetractOwn,
                &c,
                &RosterRelation::default(),
                false
            )
            .is_ok()
        );
    }
}
