//! stratus: a complete XEP-0060 Publish-Subscribe and XEP-0163 PEP service for any XMPP server,
//! attached as an XEP-0114 external component.
//!
//! Layers (arrows point down only):
//! - [`config`](mod@config): one `Config` built from file, environment and flags.
//! - [`component`]: the XEP-0114 connection: handshake, reconnect, back-pressure, one writer.
//! - [`xmpp`]: stanza -> command -> stanza; disco, errors table.
//! - [`xml`]: the element tree and the incremental stream reader with its limits.
//! - [`client`]: a small c2s client (SASL SCRAM-SHA-1/PLAIN) for tests and the load tool.
//! - [`jid`](mod@jid): JIDs.

pub mod client;
pub mod component;
pub mod config;
pub mod http;
pub mod jid;
pub mod load;
pub mod metrics;
pub mod pep;
pub mod pubsub;
pub mod storage;
pub mod systemd;
pub mod xml;
pub mod xmpp;
