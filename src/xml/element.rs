//! The stanza tree: a small namespace-aware element type and its serializer.
//!
//! Every element carries its resolved namespace, shared (`Arc<str>`) by all the elements a parse
//! resolved to it, so a long namespace URI costs its size once per stanza, not once per element.
//! What a parsed element was written with is kept as well: its prefix, the namespace declarations
//! on it, and each attribute's namespace and prefix. The serializer writes those declarations
//! back and adds any binding a name needs that is not in scope (a prefix declared on an ancestor
//! that was left behind, as when a payload is stored apart from its stanza), so what comes out is
//! namespace-well-formed and carries the same names, namespaces and values as what came in.
//! Elements built in code have no prefix: the serializer writes an `xmlns` declaration only where
//! an element's namespace differs from its parent's, so stanzas come out the way XMPP servers
//! expect them. Pre-serialized fragments ([`Node::Raw`]) let a payload be rendered once and shared
//! by every notification that carries it.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

/// The namespace the `xml` prefix is bound to (Namespaces in XML 1.0, section 3).
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of namespace declarations themselves (never declared, never used by a name).
pub const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
    /// Already-serialized, well-formed XML whose root declares its own namespace. Written verbatim.
    Raw(Arc<str>),
}

/// A namespace declaration as written on an element: `xmlns='uri'` (no prefix) or `xmlns:p='uri'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub prefix: Option<Arc<str>>,
    pub uri: Arc<str>,
}

/// An attribute: local name, namespace (None for the usual unprefixed attribute), the prefix it was
/// written with, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    name: Box<str>,
    ns: Option<Arc<str>>,
    prefix: Option<Arc<str>>,
    value: String,
}

impl Attribute {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn ns(&self) -> Option<&str> {
        self.ns.as_deref()
    }
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }
    pub fn value(&self) -> &str {
        &self.value
    }

    /// An attribute as a parser read it.
    pub(crate) fn parsed(
        name: &str,
        ns: Option<Arc<str>>,
        prefix: Option<Arc<str>>,
        value: String,
    ) -> Attribute {
        Attribute {
            name: name.into(),
            ns,
            prefix,
            value,
        }
    }

    /// An attribute from a name as code spells it: `lang` or `xml:lang` (the one prefix bound
    /// without a declaration).
    fn from_key(key: String, value: String) -> Attribute {
        match key.strip_prefix("xml:") {
            Some(local) => Attribute {
                name: local.into(),
                ns: Some(Arc::from(NS_XML)),
                prefix: Some(Arc::from("xml")),
                value,
            },
            None => Attribute {
                name: key.into_boxed_str(),
                ns: None,
                prefix: None,
                value,
            },
        }
    }

    /// True when this attribute is the one code names `key` (`id`, `xml:lang`).
    fn is_key(&self, key: &str) -> bool {
        match key.strip_prefix("xml:") {
            Some(local) => self.ns.as_deref() == Some(NS_XML) && &*self.name == local,
            None => self.ns.is_none() && &*self.name == key,
        }
    }
}

/// An XML element with its resolved namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    name: Box<str>,
    ns: Arc<str>,
    /// The prefix the element was written with; None for the default namespace.
    prefix: Option<Arc<str>>,
    /// The namespace declarations written on the element (parsed elements only).
    decls: Option<Box<[Declaration]>>,
    attrs: Vec<Attribute>,
    children: Vec<Node>,
}

impl Default for Element {
    fn default() -> Self {
        Element::new("", "")
    }
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into().into_boxed_str(),
            ns: Arc::from(ns.into()),
            prefix: None,
            decls: None,
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

    /// The prefix the element was written with, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The namespace declarations written on this element.
    pub fn declarations(&self) -> &[Declaration] {
        self.decls.as_deref().unwrap_or_default()
    }

    /// True when this element has the given local name and namespace.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        &*self.name == name && &*self.ns == ns
    }

    /// The value of an attribute in no namespace (`id`), or of `xml:lang`-style `xml:` attributes.
    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.is_key(name))
            .map(|a| a.value.as_str())
    }

    /// The value of the attribute with this local name and namespace.
    pub fn get_attr_ns(&self, name: &str, ns: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| &*a.name == name && a.ns.as_deref() == Some(ns))
            .map(|a| a.value.as_str())
    }

    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|a| a.is_key(&name)) {
            Some(slot) => slot.value = value,
            None => self.attrs.push(Attribute::from_key(name, value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|a| a.is_key(name))?;
        Some(self.attrs.remove(pos).value)
    }

    /// Attributes in no namespace, as (name, value).
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs
            .iter()
            .filter(|a| a.ns.is_none())
            .map(|a| (&*a.name, a.value.as_str()))
    }

    /// Every attribute, namespaced ones included.
    pub fn attributes(&self) -> &[Attribute] {
        &self.attrs
    }

    /// An element as a parser read it (crate-internal: the reader checks what it passes).
    pub(crate) fn parsed(
        name: &str,
        ns: Arc<str>,
        prefix: Option<Arc<str>>,
        decls: Vec<Declaration>,
        attrs: Vec<Attribute>,
    ) -> Element {
        Element {
            name: name.into(),
            ns,
            prefix,
            decls: (!decls.is_empty()).then(|| decls.into_boxed_slice()),
            attrs,
            children: Vec::new(),
        }
    }

    /// Gives back the spare capacity of the children and attributes.
    pub fn shrink_to_fit(&mut self) {
        self.children.shrink_to_fit();
        self.attrs.shrink_to_fit();
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

    /// Serializes this element into `out`; `parent_ns` is the default namespace in scope, and no
    /// prefix is bound there (a stanza inside a stream).
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        let mut scope = Vec::new();
        self.write_scoped(out, parent_ns, &mut scope);
    }

    /// `scope`: the prefixes bound around this element, innermost last.
    fn write_scoped<'a>(
        &'a self,
        out: &mut String,
        parent_default: &'a str,
        scope: &mut Vec<(Cow<'a, str>, &'a str)>,
    ) {
        let mark = scope.len();
        let decls = self.declarations();
        let mut default = parent_default;
        for d in decls {
            match &d.prefix {
                None => default = &d.uri,
                Some(p) => scope.push((Cow::Borrowed(&**p), &d.uri)),
            }
        }
        // The element's own name: its prefix where that prefix is (or can be) bound to its
        // namespace here, else the default namespace.
        let mut extra_default = None;
        let mut declare_prefix = false;
        let prefix = match self.prefix.as_deref() {
            Some(p) if lookup(scope, p) == Some(&*self.ns) => Some(p),
            Some(p) if p != "xml" && !decls.iter().any(|d| d.prefix.as_deref() == Some(p)) => {
                // Bound on an ancestor that is not written with this element (a stored payload).
                scope.push((Cow::Borrowed(p), &self.ns));
                declare_prefix = true;
                Some(p)
            }
            _ => None,
        };
        if prefix.is_none() && default != &*self.ns {
            // Elements built in code, and unprefixed parsed elements whose default namespace was
            // declared on an ancestor left behind.
            extra_default = Some(&*self.ns);
            default = &self.ns;
        }
        out.push('<');
        if let Some(p) = prefix {
            out.push_str(p);
            out.push(':');
        }
        out.push_str(&self.name);
        for d in decls {
            write_decl(out, d.prefix.as_deref(), &d.uri);
        }
        if let Some(uri) = extra_default {
            write_decl(out, None, uri);
        }
        if declare_prefix && let Some(p) = prefix {
            write_decl(out, Some(p), &self.ns);
        }
        for a in &self.attrs {
            // A declaration the attribute needs is written before it, inside the same tag.
            let p =
                a.ns.as_deref()
                    .map(|ns| attribute_prefix(a, ns, decls, scope, mark, out));
            out.push(' ');
            if let Some(p) = p {
                out.push_str(&p);
                out.push(':');
            }
            out.push_str(&a.name);
            out.push_str("='");
            escape_attr_into(out, &a.value);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
        } else {
            out.push('>');
            for child in &self.children {
                match child {
                    Node::Element(e) => e.write_scoped(out, default, scope),
                    Node::Text(t) => escape_text_into(out, t),
                    Node::Raw(r) => out.push_str(r),
                }
            }
            out.push_str("</");
            if let Some(p) = prefix {
                out.push_str(p);
                out.push(':');
            }
            out.push_str(&self.name);
            out.push('>');
        }
        scope.truncate(mark);
    }
}

/// The URI `prefix` is bound to in `scope` (`xml` is always bound).
fn lookup<'a>(scope: &[(Cow<'a, str>, &'a str)], prefix: &str) -> Option<&'a str> {
    if prefix == "xml" {
        return Some(NS_XML);
    }
    scope
        .iter()
        .rev()
        .find(|(p, _)| p == prefix)
        .map(|(_, u)| *u)
}

fn write_decl(out: &mut String, prefix: Option<&str>, uri: &str) {
    out.push_str(" xmlns");
    if let Some(p) = prefix {
        out.push(':');
        out.push_str(p);
    }
    out.push_str("='");
    escape_attr_into(out, uri);
    out.push('\'');
}

/// The prefix to write a namespaced attribute with, declaring it on the element (into `out`,
/// which is inside the start tag) when it is not bound to the attribute's namespace in scope.
/// `scope[mark..]` are the bindings this element makes.
fn attribute_prefix<'a>(
    a: &'a Attribute,
    ns: &'a str,
    decls: &[Declaration],
    scope: &mut Vec<(Cow<'a, str>, &'a str)>,
    mark: usize,
    out: &mut String,
) -> Cow<'a, str> {
    if let Some(p) = a.prefix.as_deref()
        && lookup(scope, p) == Some(ns)
    {
        return Cow::Borrowed(p);
    }
    if ns == NS_XML {
        return Cow::Borrowed("xml");
    }
    // Bound on this element already (to another namespace) or reserved: not usable here.
    let taken = |p: &str, scope: &[(Cow<'a, str>, &'a str)]| {
        p == "xml"
            || p == "xmlns"
            || scope[mark..].iter().any(|(q, _)| q == p)
            || decls.iter().any(|d| d.prefix.as_deref() == Some(p))
    };
    let prefix: Cow<'a, str> = match a.prefix.as_deref() {
        Some(p) if !taken(p, scope) => Cow::Borrowed(p),
        _ => {
            let mut n = 0;
            loop {
                let p = format!("ns{n}");
                if !taken(&p, scope) && lookup(scope, &p).is_none() {
                    break Cow::Owned(p);
                }
                n += 1;
            }
        }
    };
    write_decl(out, Some(&prefix), ns);
    scope.push((prefix.clone(), ns));
    prefix
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
mod tests;
