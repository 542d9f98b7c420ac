//! The typed request boundary: what the stanza layer parses each XEP-0060 request into, once, and
//! what the core answers with. `PubSub::execute` runs a [`Request`] for an actor in a service and
//! returns an [`Outcome`]: the reply and the notifications. No XML on either side.

use std::fmt;
use std::ops::Deref;

use super::access::Action;
use super::error::{PubSubError, PubSubResult};
use super::model::*;
use super::notify::Notification;
use super::policy::policy_of;
use super::service::{ItemSelection, PubSub};
use crate::jid::{BareJid, Jid};
use crate::storage::ItemPage;

/// Longest node name, item id or subscription id accepted, in bytes: names are keys in every
/// backend (DynamoDB keys are at most 1,024 bytes with their prefixes).
pub const MAX_NAME_BYTES: usize = 768;

macro_rules! name_type {
    ($(#[$doc:meta])* $t:ident, $empty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $t(String);

        impl $t {
            pub fn new(s: &str) -> PubSubResult<$t> {
                if s.is_empty() {
                    return Err($empty);
                }
                if s.len() > MAX_NAME_BYTES {
                    return Err(PubSubError::BadRequest(format!(
                        "{} longer than {MAX_NAME_BYTES} bytes",
                        stringify!($t)
                    )));
                }
                Ok($t(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A node's name (XEP-0060 4.2 NodeID): opaque, non-empty.
    NodeName,
    PubSubError::NodeIdRequired
);
name_type!(
    /// An item's id (XEP-0060 4.3 ItemID).
    ItemId,
    PubSubError::ItemRequired
);
name_type!(
    /// A subscription id (XEP-0060 6.1.6 SubID).
    SubId,
    PubSubError::SubIdRequired
);

/// One field of a node configuration change, typed (XEP-0060 16.4.3 `pubsub#node_config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Title(String),
    Description(String),
    PayloadType(String),
    MaxItems(MaxItems),
    ItemExpire(Option<u64>),
    PersistItems(bool),
    DeliverPayloads(bool),
    DeliverNotifications(bool),
    NotifyConfig(bool),
    NotifyDelete(bool),
    NotifyRetract(bool),
    NotifySub(bool),
    PresenceBasedDelivery(bool),
    NotificationType(NotificationType),
    SendLastPublished(SendLastPublished),
    AccessModel(AccessModel),
    PublishModel(PublishModel),
    RosterGroupsAllowed(Vec<String>),
    MaxPayloadSize(u64),
}

impl ConfigChange {
    /// The `pubsub#node_config` field this change sets.
    pub fn var(&self) -> &'static str {
        match self {
            ConfigChange::Title(_) => "pubsub#title",
            ConfigChange::Description(_) => "pubsub#description",
            ConfigChange::PayloadType(_) => "pubsub#type",
            ConfigChange::MaxItems(_) => "pubsub#max_items",
            ConfigChange::ItemExpire(_) => "pubsub#item_expire",
            ConfigChange::PersistItems(_) => "pubsub#persist_items",
            ConfigChange::DeliverPayloads(_) => "pubsub#deliver_payloads",
            ConfigChange::DeliverNotifications(_) => "pubsub#deliver_notifications",
            ConfigChange::NotifyConfig(_) => "pubsub#notify_config",
            ConfigChange::NotifyDelete(_) => "pubsub#notify_delete",
            ConfigChange::NotifyRetract(_) => "pubsub#notify_retract",
            ConfigChange::NotifySub(_) => "pubsub#notify_sub",
            ConfigChange::PresenceBasedDelivery(_) => "pubsub#presence_based_delivery",
            ConfigChange::NotificationType(_) => "pubsub#notification_type",
            ConfigChange::SendLastPublished(_) => "pubsub#send_last_published_item",
            ConfigChange::AccessModel(_) => "pubsub#access_model",
            ConfigChange::PublishModel(_) => "pubsub#publish_model",
            ConfigChange::RosterGroupsAllowed(_) => "pubsub#roster_groups_allowed",
            ConfigChange::MaxPayloadSize(_) => "pubsub#max_payload_size",
        }
    }

    pub fn apply(&self, c: &mut NodeConfig) {
        match self.clone() {
            ConfigChange::Title(v) => c.title = v,
            ConfigChange::Description(v) => c.description = v,
            ConfigChange::PayloadType(v) => c.payload_type = v,
            ConfigChange::MaxItems(v) => c.max_items = v,
            ConfigChange::ItemExpire(v) => c.item_expire = v,
            ConfigChange::PersistItems(v) => c.persist_items = v,
            ConfigChange::DeliverPayloads(v) => c.deliver_payloads = v,
            ConfigChange::DeliverNotifications(v) => c.deliver_notifications = v,
            ConfigChange::NotifyConfig(v) => c.notify_config = v,
            ConfigChange::NotifyDelete(v) => c.notify_delete = v,
            ConfigChange::NotifyRetract(v) => c.notify_retract = v,
            ConfigChange::NotifySub(v) => c.notify_sub = v,
            ConfigChange::PresenceBasedDelivery(v) => c.presence_based_delivery = v,
            ConfigChange::NotificationType(v) => c.notification_type = v,
            ConfigChange::SendLastPublished(v) => c.send_last_published_item = v,
            ConfigChange::AccessModel(v) => c.access_model = v,
            ConfigChange::PublishModel(v) => c.publish_model = v,
            ConfigChange::RosterGroupsAllowed(v) => c.roster_groups_allowed = v,
            ConfigChange::MaxPayloadSize(v) => c.max_payload_size = v,
        }
    }
}

/// A configuration change: the typed fields, and the names of fields this service does not
/// know (ignored by a configure, XEP-0004 3.2; unmet as a publish precondition, XEP-0060 7.1.5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigPatch {
    pub changes: Vec<ConfigChange>,
    pub unknown: Vec<String>,
}

impl ConfigPatch {
    pub fn applied_to(&self, base: &NodeConfig) -> NodeConfig {
        let mut c = base.clone();
        for change in &self.changes {
            change.apply(&mut c);
        }
        c
    }

    /// XEP-0060 7.1.5: every option must already hold on the node.
    pub fn check_preconditions(&self, c: &NodeConfig) -> PubSubResult<()> {
        if let Some(field) = self.unknown.first() {
            return Err(PubSubError::PreconditionNotMet(field.clone()));
        }
        for change in &self.changes {
            let mut wanted = c.clone();
            change.apply(&mut wanted);
            if wanted != *c {
                return Err(PubSubError::PreconditionNotMet(change.var().to_owned()));
            }
        }
        Ok(())
    }
}

/// An item to publish: its id when the publisher chose one, and its payload (serialized XML of
/// the item's one child, or empty).
#[derive(Debug, Clone)]
pub struct NewItem {
    pub id: Option<ItemId>,
    pub payload: String,
}

/// A change an owner makes to a subscription (XEP-0060 8.8.2): None removes it.
pub type SubscriptionChange = (Jid, Option<SubscriptionState>, Option<SubId>);

/// An XEP-0060 request, parsed.
#[derive(Debug, Clone)]
pub enum Request {
    /// 8.1: None for an instant node.
    Create {
        node: Option<NodeName>,
        config: Option<ConfigPatch>,
    },
    /// 7.1, with publish-options (7.1.5).
    Publish {
        node: NodeName,
        items: Vec<NewItem>,
        options: Option<ConfigPatch>,
    },
    /// 7.2.
    Retract {
        node: NodeName,
        ids: Vec<ItemId>,
        notify: Option<bool>,
    },
    /// 6.1, with options (6.3.7).
    Subscribe {
        node: NodeName,
        jid: Jid,
        options: SubOptions,
    },
    /// 6.2.
    Unsubscribe {
        node: NodeName,
        jid: Jid,
        subid: Option<SubId>,
    },
    /// 6.3.
    Options {
        node: NodeName,
        jid: Jid,
        subid: Option<SubId>,
    },
    /// 6.3.5.
    SetOptions {
        node: NodeName,
        jid: Jid,
        subid: Option<SubId>,
        options: SubOptions,
    },
    /// 6.4.
    DefaultOptions,
    /// 6.5.
    Items {
        node: NodeName,
        selection: ItemSelection,
        paged: bool,
    },
    /// 5.6.
    Subscriptions { node: Option<NodeName> },
    /// 5.7.
    Affiliations { node: Option<NodeName> },
    /// 8.2.
    Configuration { node: NodeName },
    /// 8.2.5; None: the owner cancelled (8.2.6).
    Configure {
        node: NodeName,
        patch: Option<ConfigPatch>,
    },
    /// 8.3.
    DefaultConfig,
    /// 8.4.
    Delete {
        node: NodeName,
        redirect: Option<String>,
    },
    /// 8.5.
    Purge { node: NodeName },
    /// 8.8.1.
    NodeSubscriptions { node: NodeName },
    /// 8.8.2.
    SetNodeSubscriptions {
        node: NodeName,
        changes: Vec<SubscriptionChange>,
    },
    /// 8.9.1.
    NodeAffiliations { node: NodeName },
    /// 8.9.2.
    SetNodeAffiliations {
        node: NodeName,
        changes: Vec<(BareJid, Affiliation)>,
    },
    /// 5.2: the nodes the actor may read, by name after `after`.
    Nodes { after: Option<String>, max: usize },
    /// 5.3 and 5.4: a node and its meta-data, for whom may read it.
    NodeInfo { node: NodeName },
    /// 5.5: the ids of a node's newest items.
    ItemIds { node: NodeName, max: usize },
    /// The nodes the actor may configure (every node for an administrator), by name after
    /// `after`, with owners and counts (the admin commands' node list).
    Overview { after: Option<String>, max: usize },
    /// 8.7: the approval forms of a node's pending subscriptions, sent again to the actor.
    PendingApprovals { node: NodeName },
}

/// What a request answers, before rendering.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An empty result.
    Done,
    /// 8.1.2: the name of an instant node.
    Created {
        node: String,
    },
    /// 7.1.2: the ids of the items published.
    Published {
        node: NodeName,
        ids: Vec<String>,
    },
    /// 6.1.2 and 6.3.2 (with `options`: the options form too).
    Subscription {
        node: NodeName,
        subscription: Subscription,
        options: bool,
    },
    DefaultOptions(SubOptions),
    /// 6.5.2; `paged`: an RSM set is due (requested, or the page was cut short, 6.5.4).
    Items {
        node: NodeName,
        page: ItemPage,
        paged: bool,
    },
    Subscriptions {
        node: Option<NodeName>,
        list: Vec<(String, Subscription)>,
    },
    Affiliations {
        node: Option<NodeName>,
        list: Vec<(String, Affiliation)>,
    },
    Configuration {
        node: NodeName,
        config: NodeConfig,
    },
    DefaultConfig(NodeConfig),
    NodeSubscriptions {
        node: NodeName,
        list: Vec<Subscription>,
    },
    NodeAffiliations {
        node: NodeName,
        list: Vec<(BareJid, Affiliation)>,
    },
    Nodes(Vec<String>),
    /// The node's record, owners and number of subscriptions (5.4 meta-data).
    NodeInfo {
        node: NodeName,
        record: NodeRecord,
        owners: Vec<BareJid>,
        subscriptions: usize,
    },
    ItemIds {
        node: NodeName,
        ids: Vec<String>,
    },
    Overview(Vec<super::nodes::NodeSummary>),
}

/// The reply and the notifications a request produced (every recipient already passed the read
/// check of `PubSub::readers`).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub reply: Reply,
    pub notifications: Vec<Notification>,
}

impl Outcome {
    fn reply(reply: Reply) -> Outcome {
        Outcome {
            reply,
            notifications: Vec::new(),
        }
    }

    fn notify(notifications: Vec<Notification>) -> Outcome {
        Outcome {
            reply: Reply::Done,
            notifications,
        }
    }
}

impl PubSub {
    /// Runs `request` for `actor` in `svc`.
    pub async fn execute(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        request: Request,
    ) -> PubSubResult<Outcome> {
        use Request as R;
        Ok(match request {
            R::Create { node, config } => {
                let config = config.map(|p| p.applied_to(&self.default_config(svc)));
                let name = self.create(svc, actor, node.as_deref(), config).await?;
                match node {
                    // 8.1.2: a named node may get an empty result.
                    Some(_) => Outcome::reply(Reply::Done),
                    None => Outcome::reply(Reply::Created { node: name }),
                }
            }
            R::Publish {
                node,
                items,
                options,
            } => {
                if policy_of(svc).auto_creates_for(actor) {
                    // XEP-0163 3 / XEP-0060 7.1.5: a missing PEP node is created on publish,
                    // configured by the publish options.
                    let mut config = self.default_config(svc);
                    if let Some(patch) = &options {
                        if let Some(field) = patch.unknown.first() {
                            return Err(PubSubError::PreconditionNotMet(field.clone()));
                        }
                        config = patch.applied_to(&config);
                    }
                    self.auto_create(svc, actor, &node, config).await?;
                }
                if let Some(patch) = &options {
                    let state = self.node(svc, &node).await?;
                    patch.check_preconditions(&state.record.config)?;
                }
                let items = items
                    .into_iter()
                    .map(|i| (i.id.map(|id| id.0), i.payload))
                    .collect();
                let (ids, notifications) = self.publish(svc, actor, &node, items).await?;
                Outcome {
                    reply: Reply::Published { node, ids },
                    notifications,
                }
            }
            R::Retract { node, ids, notify } => {
                let ids = ids.into_iter().map(|i| i.0).collect();
                Outcome::notify(self.retract(svc, actor, &node, ids, notify).await?)
            }
            R::Subscribe { node, jid, options } => {
                let done = self.subscribe(svc, actor, &node, &jid, options).await?;
                Outcome {
                    reply: Reply::Subscription {
                        node,
                        subscription: done.subscription,
                        options: false,
                    },
                    notifications: done.notifications,
                }
            }
            R::Unsubscribe { node, jid, subid } => Outcome::notify(
                self.unsubscribe(svc, actor, &node, &jid, subid.as_deref())
                    .await?,
            ),
            R::Options { node, jid, subid } => {
                let subscription = self
                    .get_options(svc, actor, &node, &jid, subid.as_deref())
                    .await?;
                Outcome::reply(Reply::Subscription {
                    node,
                    subscription,
                    options: true,
                })
            }
            R::SetOptions {
                node,
                jid,
                subid,
                options,
            } => {
                self.set_options(svc, actor, &node, &jid, subid.as_deref(), options)
                    .await?;
                Outcome::reply(Reply::Done)
            }
            R::DefaultOptions => Outcome::reply(Reply::DefaultOptions(SubOptions::default())),
            R::Items {
                node,
                selection,
                paged,
            } => {
                let (page, truncated) = self.items(svc, actor, &node, selection).await?;
                Outcome::reply(Reply::Items {
                    node,
                    page,
                    paged: paged || truncated,
                })
            }
            R::Subscriptions { node } => {
                let list = self.user_subscriptions(svc, actor, node.as_deref()).await?;
                Outcome::reply(Reply::Subscriptions { node, list })
            }
            R::Affiliations { node } => {
                let list = self.user_affiliations(svc, actor, node.as_deref()).await?;
                Outcome::reply(Reply::Affiliations { node, list })
            }
            R::Configuration { node } => {
                let config = self.get_config(svc, actor, &node).await?;
                Outcome::reply(Reply::Configuration { node, config })
            }
            R::Configure { node, patch } => match patch {
                None => Outcome::reply(Reply::Done),
                Some(patch) => {
                    let current = self.get_config(svc, actor, &node).await?;
                    let config = patch.applied_to(&current);
                    Outcome::notify(self.set_config(svc, actor, &node, config).await?)
                }
            },
            R::DefaultConfig => Outcome::reply(Reply::DefaultConfig(self.default_config(svc))),
            R::Nodes { after, max } => Outcome::reply(Reply::Nodes(
                self.readable_node_names(svc, actor, after.as_deref(), max)
                    .await?,
            )),
            R::NodeInfo { node } => {
                // To whom may not read it, a node is as absent as one that does not exist.
                let state = self.node(svc, &node).await?;
                self.authorize_in(svc, &state, actor, Action::RetrieveItems)
                    .await
                    .map_err(|_| PubSubError::NodeNotFound)?;
                Outcome::reply(Reply::NodeInfo {
                    node,
                    record: state.record.clone(),
                    owners: state.owners(),
                    subscriptions: state.subscriptions.len(),
                })
            }
            R::ItemIds { node, max } => {
                let ids = self.item_ids(svc, actor, &node, max).await?;
                Outcome::reply(Reply::ItemIds { node, ids })
            }
            R::Delete { node, redirect } => {
                Outcome::notify(self.delete(svc, actor, &node, redirect).await?)
            }
            R::Purge { node } => Outcome::notify(self.purge(svc, actor, &node).await?),
            R::Overview { after, max } => Outcome::reply(Reply::Overview(
                self.overview(svc, actor, after.as_deref(), max).await?,
            )),
            R::PendingApprovals { node } => {
                Outcome::notify(self.pending_approvals(svc, actor, &node).await?)
            }
            R::NodeSubscriptions { node } => {
                let list = self.node_subscriptions(svc, actor, &node).await?;
                Outcome::reply(Reply::NodeSubscriptions { node, list })
            }
            R::SetNodeSubscriptions { node, changes } => {
                let changes = changes
                    .into_iter()
                    .map(|(jid, state, subid)| (jid, state, subid.map(|s| s.0)))
                    .collect();
                Outcome::notify(
                    self.set_node_subscriptions(svc, actor, &node, changes)
                        .await?,
                )
            }
            R::NodeAffiliations { node } => {
                let list = self.node_affiliations(svc, actor, &node).await?;
                Outcome::reply(Reply::NodeAffiliations { node, list })
            }
            R::SetNodeAffiliations { node, changes } => Outcome::notify(
                self.set_node_affiliations(svc, actor, &node, changes)
                    .await?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_non_empty() {
        assert!(matches!(
            NodeName::new(""),
            Err(PubSubError::NodeIdRequired)
        ));
        assert!(NodeName::new(&"n".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(NodeName::new(&"n".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert_eq!(&*ItemId::new("current").unwrap(), "current");
    }

    /// XEP-0060 7.1.5: a precondition holds when applying it changes nothing; a field the
    /// service does not know never holds.
    #[test]
    fn preconditions_compare_with_the_node() {
        let cfg = NodeConfig::pep_default(1024);
        let same = ConfigPatch {
            changes: vec![ConfigChange::AccessModel(AccessModel::Presence)],
            unknown: Vec::new(),
        };
        assert!(same.check_preconditions(&cfg).is_ok());
        let other = ConfigPatch {
            changes: vec![ConfigChange::AccessModel(AccessModel::Whitelist)],
            unknown: Vec::new(),
        };
        assert!(matches!(
            other.check_preconditions(&cfg),
            Err(PubSubError::PreconditionNotMet(_))
        ));
        let unknown = ConfigPatch {
            changes: Vec::new(),
            unknown: vec!["pubsub#frobnicate".into()],
        };
        assert!(unknown.check_preconditions(&cfg).is_err());
        assert_eq!(other.applied_to(&cfg).access_model, AccessModel::Whitelist);
    }
}
