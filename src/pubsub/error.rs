//! Protocol-neutral pubsub errors. `xmpp::errors::from_pubsub` is the one table that maps them to
//! XEP-0060 stanza errors.

use crate::storage::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubSubError {
    #[error("no such node")]
    NodeNotFound,
    #[error("no such item")]
    ItemNotFound,
    #[error("node already exists")]
    NodeExists,
    #[error("insufficient privileges")]
    Forbidden,
    #[error("the node is closed (whitelist)")]
    ClosedNode,
    #[error("a presence subscription is required")]
    PresenceSubscriptionRequired,
    #[error("not in an allowed roster group")]
    NotInRosterGroup,
    #[error("subscription required")]
    NotSubscribed,
    #[error("subscription pending approval")]
    PendingSubscription,
    #[error("the JID does not match the requester")]
    InvalidJid,
    #[error("subscription id required")]
    SubIdRequired,
    #[error("invalid subscription id")]
    InvalidSubId,
    #[error("unexpected request: not subscribed")]
    NoSubscription,
    #[error("publish options do not match the node configuration ({0})")]
    PreconditionNotMet(String),
    #[error("payload larger than {0} bytes")]
    PayloadTooBig(u64),
    #[error("exactly one payload element is required")]
    InvalidPayload,
    #[error("a payload is required")]
    PayloadRequired,
    #[error("an item is required")]
    ItemRequired,
    #[error("items are not allowed on this node")]
    ItemForbidden,
    #[error("a node id is required")]
    NodeIdRequired,
    #[error("too many nodes")]
    MaxNodesExceeded,
    #[error("invalid configuration value for {0}")]
    BadConfig(String),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    #[error("access model not supported: {0}")]
    UnsupportedAccessModel(String),
    #[error("the owner cannot be removed: a node needs one")]
    LastOwner,
    #[error("{0}")]
    BadRequest(String),
    /// Subscription options this service does not offer (XEP-0060 6.3.7).
    #[error("{0}")]
    InvalidOptions(String),
    /// A service limit on what one entity may hold (subscriptions).
    #[error("{0}")]
    LimitReached(String),
    #[error("storage failed: {0}")]
    Storage(StoreError),
}

impl From<StoreError> for PubSubError {
    fn from(e: StoreError) -> Self {
        match e {
            // Deleted while the request ran: as if it had been deleted before (XEP-0060 7.1.3.3,
            // item-not-found for a node that does not exist).
            StoreError::NodeGone => PubSubError::NodeNotFound,
            e => PubSubError::Storage(e),
        }
    }
}

pub type PubSubResult<T> = Result<T, PubSubError>;
