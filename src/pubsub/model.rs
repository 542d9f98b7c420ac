//! The pubsub data model: nodes, their configuration, items, subscriptions and affiliations.
//! Protocol-neutral: payloads are opaque serialized XML strings.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::jid::{BareJid, Jid};

/// Which pubsub service a node belongs to: the component's own, or a user's PEP service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceId {
    Host,
    Pep(BareJid),
}

impl ServiceId {
    /// A stable key prefix for storage.
    pub fn key(&self) -> String {
        match self {
            ServiceId::Host => "h".into(),
            ServiceId::Pep(bare) => format!("p:{bare}"),
        }
    }

    /// The service a [`ServiceId::key`] names.
    pub fn from_key(key: &str) -> Option<ServiceId> {
        match key {
            "h" => Some(ServiceId::Host),
            _ => BareJid::parse(key.strip_prefix("p:")?)
                .ok()
                .map(ServiceId::Pep),
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceId::Host => f.write_str("host"),
            ServiceId::Pep(b) => write!(f, "pep:{b}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Affiliation {
    Owner,
    Publisher,
    PublishOnly,
    Member,
    None,
    Outcast,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Publisher => "publisher",
            Affiliation::PublishOnly => "publish-only",
            Affiliation::Member => "member",
            Affiliation::None => "none",
            Affiliation::Outcast => "outcast",
        }
    }

    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "owner" => Affiliation::Owner,
            "publisher" => Affiliation::Publisher,
            "publish-only" => Affiliation::PublishOnly,
            "member" => Affiliation::Member,
            "none" => Affiliation::None,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionState {
    Pending,
    Unconfigured,
    Subscribed,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Pending => "pending",
            SubscriptionState::Unconfigured => "unconfigured",
            SubscriptionState::Subscribed => "subscribed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessModel {
    Open,
    Presence,
    Roster,
    Authorize,
    Whitelist,
}

impl AccessModel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Authorize => "authorize",
            AccessModel::Whitelist => "whitelist",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Self::Open,
            "presence" => Self::Presence,
            "roster" => Self::Roster,
            "authorize" => Self::Authorize,
            "whitelist" => Self::Whitelist,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublishModel {
    Publishers,
    Subscribers,
    Open,
}

impl PublishModel {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishModel::Publishers => "publishers",
            PublishModel::Subscribers => "subscribers",
            PublishModel::Open => "open",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "publishers" => Self::Publishers,
            "subscribers" => Self::Subscribers,
            "open" => Self::Open,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendLastPublished {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLastPublished {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnSub => "on_sub",
            Self::OnSubAndPresence => "on_sub_and_presence",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "never" => Self::Never,
            "on_sub" => Self::OnSub,
            "on_sub_and_presence" => Self::OnSubAndPresence,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotificationType {
    Normal,
    Headline,
}

/// `pubsub#max_items`: a number, or `max` (as many as the service allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaxItems {
    Count(u64),
    Max,
}

/// A node's configuration (XEP-0060 section 16.4.3, `pubsub#node_config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub title: String,
    pub description: String,
    /// `pubsub#type`: the payload namespace.
    pub payload_type: String,
    pub max_items: MaxItems,
    /// Seconds after which items expire; None: never.
    pub item_expire: Option<u64>,
    pub persist_items: bool,
    pub deliver_payloads: bool,
    pub deliver_notifications: bool,
    pub notify_config: bool,
    pub notify_delete: bool,
    pub notify_retract: bool,
    pub notify_sub: bool,
    pub notification_type: NotificationType,
    pub send_last_published_item: SendLastPublished,
    pub presence_based_delivery: bool,
    pub access_model: AccessModel,
    pub publish_model: PublishModel,
    pub roster_groups_allowed: Vec<String>,
    pub max_payload_size: u64,
}

impl NodeConfig {
    /// Defaults of the host service's leaf nodes.
    pub fn host_default(max_payload_size: u64) -> NodeConfig {
        NodeConfig {
            title: String::new(),
            description: String::new(),
            payload_type: String::new(),
            max_items: MaxItems::Count(10),
            item_expire: None,
            persist_items: true,
            deliver_payloads: true,
            deliver_notifications: true,
            notify_config: false,
            notify_delete: false,
            notify_retract: true,
            notify_sub: false,
            notification_type: NotificationType::Headline,
            send_last_published_item: SendLastPublished::OnSub,
            presence_based_delivery: false,
            access_model: AccessModel::Open,
            publish_model: PublishModel::Publishers,
            roster_groups_allowed: Vec::new(),
            max_payload_size,
        }
    }
}

impl NodeConfig {
    /// XEP-0163 section 3 defaults for PEP nodes.
    pub fn pep_default(max_payload_size: u64) -> NodeConfig {
        NodeConfig {
            max_items: MaxItems::Count(1),
            access_model: AccessModel::Presence,
            send_last_published_item: SendLastPublished::OnSubAndPresence,
            notification_type: NotificationType::Headline,
            ..NodeConfig::host_default(max_payload_size)
        }
    }
}

/// A published item. The payload is the serialized XML of the item's child (may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub publisher: String,
    pub payload: Arc<str>,
    /// Milliseconds since the Unix epoch.
    pub published_ms: u64,
}

/// Subscription options (XEP-0060 section 6.3, `pubsub#subscribe_options`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubOptions {
    /// `pubsub#deliver`: false pauses notifications.
    pub deliver: Option<bool>,
    /// `pubsub#include_body`.
    pub include_body: Option<bool>,
    /// `pubsub#digest`.
    pub digest: Option<bool>,
    /// `pubsub#show-values`.
    pub show_values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub jid: Jid,
    pub subid: String,
    pub state: SubscriptionState,
    pub options: SubOptions,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub config: NodeConfig,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub creator: String,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
