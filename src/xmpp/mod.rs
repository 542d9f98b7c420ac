//! The stanza layer: turns stanzas addressed to the component into answers. Knows XML; the pubsub
//! core below it does not.

pub mod adhoc;
mod delegated;
mod delivery;
pub mod disco;
pub mod dispatch;
pub mod errors;
pub mod forms;
mod host;
pub mod multicast;
pub mod notify;
pub mod private;
pub mod pubsub;
pub mod rsm;
mod scheduler;
pub mod stanza;
pub mod xep0227;

pub use dispatch::Service;

pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_VERSION: &str = "jabber:iq:version";
