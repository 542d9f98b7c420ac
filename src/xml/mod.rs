//! XML for XMPP streams: the element tree, its serializer and the incremental stream reader.

pub mod element;
pub mod reader;

pub use element::{Element, Node};
pub use reader::{Limits, StreamEvent, XmlError, XmlErrorKind, parse_element, spawn_stream_reader};
