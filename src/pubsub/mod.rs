//! The pubsub core: services, nodes, items, subscriptions, affiliations, access control. It imports
//! no XML crate; the stanza layer (`xmpp`) translates to and from XEP-0060.

pub mod access;
#[cfg(test)]
mod batch_tests;
pub mod command;
pub mod error;
mod expiry;
mod items;
pub mod model;
mod nodes;
pub use nodes::NodeSummary;
pub mod notify;
pub mod pep;
pub mod policy;
mod readers;
pub mod service;
mod subscriptions;

pub use command::{ConfigChange, ConfigPatch, ItemId, NodeName, Outcome, Reply, Request, SubId};
pub use error::{PubSubError, PubSubResult};
pub use service::{ItemSelection, Limits, PubSub};
