//! What an operation asks the stanza layer to send: protocol-neutral notifications.

use crate::jid::Jid;

use super::model::{Item, NodeConfig, NotificationType, ServiceId, SubscriptionState};

/// One JID to notify, with the subscription ids it is notified for (SubID headers when several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub jid: Jid,
    pub subids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Published items (XEP-0060 7.1.2); `payloads`: deliver the payloads or only the ids.
    Items { items: Vec<Item>, payloads: bool },
    /// Retracted items (7.2.2.1).
    Retract { ids: Vec<String> },
    /// All items were purged (8.5.2).
    Purge,
    /// The node was deleted (8.4.2).
    Delete { redirect: Option<String> },
    /// The configuration changed (8.2.5.2); with the new configuration when payloads are delivered.
    Configuration { config: Option<Box<NodeConfig>> },
    /// A subscription changed state (approval, removal by the owner, notify_sub).
    Subscription {
        jid: Jid,
        state: Option<SubscriptionState>,
        subid: Option<String>,
    },
    /// A subscription waits for an owner's approval (8.6): the owners get an approval form.
    AuthorizationRequest { subscriber: Jid, subid: String },
}

impl Event {
    /// True for the events that carry something of the node (items, ids, configuration, its
    /// end), as opposed to news of one subscription: XEP-0163 implicit recipients get these.
    pub fn carries_node_data(&self) -> bool {
        matches!(
            self,
            Event::Items { .. }
                | Event::Retract { .. }
                | Event::Purge
                | Event::Delete { .. }
                | Event::Configuration { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub service: ServiceId,
    pub node: String,
    pub recipients: Vec<Recipient>,
    pub event: Event,
    pub kind: NotificationType,
    /// pubsub#presence_based_delivery: only to recipients known to be online.
    pub only_available: bool,
}
