//! The stanza tree: a small namespace-aware element type and its serializer.
//!
//! Every element carries its resolved namespace; prefixes are not kept. The serializer writes an
//! `xmlns` declaration only where an element's namespace differs from its parent's, so stanzas come
//! out the way XMPP servers expect them. Pre-serialized fragments ([`Node::Raw`]) let a payload be
//! rendered once and shared by every notification that carries it.

use std::fmt::Write as _;
use std::sync::Arc;

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
    /// Already-serialized, well-formed XML whose root declares its own namespace. Written verbatim.
    Raw(Arc<str>),
}

/// An XML element with its resolved namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: sets an attribute (replacing an existing one of the same name).
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: sets an attribute when `value` is `Some`.
    pub fn attr_opt(self, name: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    /// Builder: appends a child element.
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends child elements.
    pub fn children_from(mut self, children: impl IntoIterator<Item = Element>) -> Self {
        self.children
            .extend(children.into_iter().map(Node::Element));
        self
    }

    /// Builder: appends a text node.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Builder: appends a pre-serialized fragment.
    pub fn raw(mut self, xml: Arc<str>) -> Self {
        self.children.push(Node::Raw(xml));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True when this element has the given local name and namespace.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    pub fn push_node(&mut self, node: Node) {
        self.children.push(node);
    }

    /// Appends text, merging it with a text node that ends the children.
    pub fn push_text(&mut self, text: &str) {
        if let Some(Node::Text(prev)) = self.children.last_mut() {
            prev.push_str(text);
        } else {
            self.children.push(Node::Text(text.to_owned()));
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    pub fn take_nodes(&mut self) -> Vec<Node> {
        std::mem::take(&mut self.children)
    }

    /// The child elements, in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|e| e.is(name, ns))
    }

    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// Removes and returns the first child element with this name and namespace.
    pub fn take_child(&mut self, name: &str, ns: &str) -> Option<Element> {
        let pos = self
            .children
            .iter()
            .position(|n| matches!(n, Node::Element(e) if e.is(name, ns)))?;
        match self.children.remove(pos) {
            Node::Element(e) => Some(e),
            _ => None,
        }
    }

    /// The concatenated text children (not descendants).
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Serializes this element as a standalone fragment (its namespace declared on the root).
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(128);
        self.write_to(&mut out, "");
        out
    }

    /// Serializes this element into `out`; `parent_ns` is the default namespace in scope.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns='");
            escape_attr_into(out, &self.ns);
            out.push('\'');
        }
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("='");
            escape_attr_into(out, v);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_text_into(out, t),
                Node::Raw(r) => out.push_str(r),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_xml())
    }
}

/// Escapes character data: `&`, `<` and `>` (the last so `]]>` can never appear).
pub fn escape_text_into(out: &mut String, text: &str) {
    let mut last = 0;
    for (i, b) in text.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => continue,
        };
        out.push_str(&text[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&text[last..]);
}

/// Escapes an attribute value for single- or double-quoted use.
pub fn escape_attr_into(out: &mut String, text: &str) {
    let mut last = 0;
    for (i, b) in text.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\'' => "&apos;",
            b'"' => "&quot;",
            // Normalized to spaces by a parser otherwise; keep them exact.
            b'\t' => "&#9;",
            b'\n' => "&#10;",
            b'\r' => "&#13;",
            _ => continue,
        };
        out.push_str(&text[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&text[last..]);
}

/// Escapes text into a new string.
pub fn escape_text(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    escape_text_into(&mut s, text);
    s
}

/// True for the characters XML 1.0 allows in documents (production `Char`).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Writes `<name xmlns='ns' k='v'...>` as the opening of a stream or element that stays open.
pub fn open_tag(name: &str, attrs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let _ = write!(out, "<{name}");
    for (k, v) in attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("='");
        escape_attr_into(&mut out, v);
        out.push('\'');
    }
    out.push('>');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_namespaces_only_where_they_change() {
        let iq = Element::new("iq", "jabber:component:accept")
            .attr("type", "result")
            .attr("id", "a'b\"<c>&")
            .child(
                Element::new("query", "http://jabber.org/protocol/disco#info").child(
                    Element::new("feature", "http://jabber.org/protocol/disco#info")
                        .attr("var", "x"),
                ),
            );
        let mut out = String::new();
        iq.write_to(&mut out, "jabber:component:accept");
        assert_eq!(
            out,
            "<iq type='result' id='a&apos;b&quot;&lt;c&gt;&amp;'><query xmlns='http://jabber.org/protocol/disco#info'><feature var='x'/></query></iq>"
        );
    }

    #[test]
    fn escapes_text_and_keeps_raw() {
        let e = Element::new("body", "jabber:client")
            .text("1 < 2 && ]]>")
            .raw(Arc::from("<x xmlns='urn:x'/>"));
        assert_eq!(
            e.to_xml(),
            "<body xmlns='jabber:client'>1 &lt; 2 &amp;&amp; ]]&gt;<x xmlns='urn:x'/></body>"
        );
    }

    #[test]
    fn xml_chars() {
        assert!(is_xml_char('a'));
        assert!(is_xml_char('\n'));
        assert!(!is_xml_char('\u{7}'));
        assert!(!is_xml_char('\u{FFFE}'));
    }
}
