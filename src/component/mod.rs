//! The XEP-0114 component connection: handshake, one session at a time, reconnect with backoff,
//! graceful shutdown. Stanzas received go to a [`StanzaHandler`]; stanzas sent go through the
//! [`Outbox`]; answers to the IQs we sent go to the [`Requests`] that wait for them.

mod connection;
pub mod flow;
pub mod outbox;
pub mod requests;

pub use connection::{Component, FatalError, StanzaHandler, handshake_digest};
pub use outbox::{Outbox, OutboxReceiver};
pub use requests::Requests;

pub const NS_COMPONENT: &str = "jabber:component:accept";
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
