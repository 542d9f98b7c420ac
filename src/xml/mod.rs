//! XML for XMPP streams: the element tree, its serializer and the incremental stream reader.

pub mod element;
mod error;
pub mod framer;
pub mod reader;

pub use element::{Attribute, Declaration, Element, Node};
pub use framer::Rejected;
pub use reader::{
    Limits, StreamEvent, XmlError, XmlErrorKind, parse_element, spawn_stream_reader,
    spawn_stream_reader_live,
};
