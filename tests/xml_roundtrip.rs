//! Payloads come back as published: stratus's parser and serializer keep the XML Infoset of any
//! namespaced tree (element and attribute names with their namespaces, prefixed or not, `xml:lang`,
//! namespace declarations, escaped text and attribute values). The oracle is an independent
//! namespace-aware parser (roxmltree): what it reads from the original must equal what it reads
//! from stratus's output, for the whole tree and for any subtree taken out on its own (a published
//! payload is stored and sent apart from the stanza that carried it, XEP-0060 7.1 and 6.5).

use proptest::prelude::*;
use stratus::xml::{Element, Limits, parse_element};

/// An element in a form that can be compared across parsers: expanded names, sorted attributes,
/// text and child elements in order, and the namespaces in scope where asked.
#[derive(Debug, PartialEq, Eq)]
struct Infoset {
    name: (String, String),
    attrs: Vec<(String, String, String)>,
    in_scope: Option<Vec<(String, String)>>,
    children: Vec<Child>,
}

#[derive(Debug, PartialEq, Eq)]
enum Child {
    Text(String),
    Element(Infoset),
}

fn infoset(node: roxmltree::Node, with_scope: bool) -> Infoset {
    let mut attrs: Vec<_> = node
        .attributes()
        .map(|a| {
            (
                a.namespace().unwrap_or("").to_owned(),
                a.name().to_owned(),
                a.value().to_owned(),
            )
        })
        .collect();
    attrs.sort();
    let in_scope = with_scope.then(|| {
        let mut ns: Vec<_> = node
            .namespaces()
            .map(|n| (n.name().unwrap_or("").to_owned(), n.uri().to_owned()))
            .collect();
        ns.sort();
        ns
    });
    let mut children = Vec::new();
    for c in node.children() {
        if c.is_element() {
            children.push(Child::Element(infoset(c, with_scope)));
        } else if let Some(t) = c.text() {
            match children.last_mut() {
                Some(Child::Text(prev)) => prev.push_str(t),
                _ => children.push(Child::Text(t.to_owned())),
            }
        }
    }
    Infoset {
        name: (
            node.tag_name().namespace().unwrap_or("").to_owned(),
            node.tag_name().name().to_owned(),
        ),
        attrs,
        in_scope,
        children,
    }
}

fn oracle(xml: &str, with_scope: bool) -> Infoset {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    infoset(doc.root_element(), with_scope)
}

fn stratus_roundtrip(xml: &str) -> Element {
    parse_element(xml, Limits::default()).unwrap_or_else(|e| panic!("{e}: {xml}"))
}

/// Checks the whole tree (namespaces in scope included) and every subtree serialized alone.
fn check(xml: &str) {
    let el = stratus_roundtrip(xml);
    let out = el.to_xml();
    assert_eq!(
        oracle(&out, true),
        oracle(xml, true),
        "\nin:  {xml}\nout: {out}"
    );
    let doc = roxmltree::Document::parse(xml).unwrap();
    fn walk(el: &Element, node: roxmltree::Node) {
        let alone = el.to_xml();
        assert_eq!(
            oracle(&alone, false),
            infoset(node, false),
            "subtree written alone: {alone}"
        );
        let elements = node.children().filter(|c| c.is_element());
        for (child, cnode) in el.children().zip(elements) {
            walk(child, cnode);
        }
    }
    walk(&el, doc.root_element());
}

#[test]
fn the_unbound_prefix_payload_of_issue_12() {
    // The publish of `<e xmlns='urn:e' xmlns:p='urn:p' p:a='1'/>` lost `xmlns:p`.
    check("<e xmlns='urn:e' xmlns:p='urn:p' p:a='1'/>");
    // The same payload inside a publish whose ancestors declared the prefix: the item stored
    // alone must declare it itself.
    let iq = stratus_roundtrip(
        "<iq xmlns='jabber:client' xmlns:p='urn:p' type='set' id='1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='n'><item><e xmlns='urn:e' p:a='1'><p:x/></e></item></publish></pubsub></iq>",
    );
    let e = iq
        .children()
        .next()
        .unwrap()
        .children()
        .next()
        .unwrap()
        .children()
        .next()
        .unwrap()
        .children()
        .next()
        .unwrap();
    let alone = e.to_xml();
    assert_eq!(
        oracle(&alone, false),
        oracle("<e xmlns='urn:e' xmlns:p='urn:p' p:a='1'><p:x/></e>", false),
        "{alone}"
    );
}

#[test]
fn xml_lang_escapes_and_redeclarations() {
    for xml in [
        "<a xmlns='u' xml:lang='en'><b xml:lang='fr'>é &amp; &lt;&gt; &quot;'</b></a>",
        "<a xmlns='u' t='&apos;&quot;&lt;&gt;&amp;&#9;&#10;&#13;'>x\r\ny</a>",
        "<p:a xmlns:p='u1'><p:b xmlns:p='u2' p:c='1'><c xmlns=''/></p:b><d p:e='2'/></p:a>",
        "<a xmlns='u1' xmlns:q='u1' q:x='1' x='2'/>",
        "<a xmlns:unused='urn:unused' xmlns='u'><b/></a>",
        "<a xmlns='u'><![CDATA[<not a tag> & ]]>tail</a>",
    ] {
        check(xml);
    }
}

/// A generated element before it is made well-formed: indices into small name pools, so that
/// prefixes, names and namespaces collide often.
#[derive(Debug, Clone)]
struct Gen {
    prefix: usize,
    name: usize,
    decls: Vec<(usize, usize)>,
    attrs: Vec<(usize, usize, String)>,
    text: Vec<String>,
    children: Vec<Gen>,
}

const PREFIXES: [&str; 4] = ["", "a", "b", "xml"];
const URIS: [&str; 4] = ["urn:x", "urn:y", "http://example.org/a?b=1&c='2'", ""];
const NAMES: [&str; 3] = ["e", "f", "item"];

fn gen_tree() -> impl Strategy<Value = Gen> {
    let leaf = (
        0..3usize,
        0..3usize,
        prop::collection::vec((0..3usize, 0..4usize), 0..3),
        prop::collection::vec((0..4usize, 0..3usize, "[a-z <>&'\"\t\n]{0,6}"), 0..3),
        prop::collection::vec("[a-z <>&'\"\\]\n\u{e9}\u{1F600}]{0,6}", 0..2),
    )
        .prop_map(|(prefix, name, decls, attrs, text)| Gen {
            prefix,
            name,
            decls,
            attrs,
            text,
            children: Vec::new(),
        });
    leaf.prop_recursive(4, 24, 4, |inner| {
        (
            (
                0..3usize,
                0..3usize,
                prop::collection::vec((0..3usize, 0..4usize), 0..3),
                prop::collection::vec((0..4usize, 0..3usize, "[a-z <>&'\"\t\n]{0,6}"), 0..3),
                prop::collection::vec("[a-z <>&'\"\\]\n]{0,6}", 0..2),
            ),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|((prefix, name, decls, attrs, text), children)| Gen {
                prefix,
                name,
                decls,
                attrs,
                text,
                children,
            })
    })
}

fn esc(s: &str, quote: bool) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '\'' if quote => o.push_str("&apos;"),
            '"' if quote => o.push_str("&quot;"),
            _ => o.push(c),
        }
    }
    o
}

/// Writes a generated tree as namespace-well-formed XML: a prefix used but not in scope gets a
/// declaration, a prefixed declaration of the empty name is left out, duplicate attributes too.
fn render(g: &Gen, scope: &mut Vec<(String, String)>, out: &mut String) {
    let mark = scope.len();
    let mut decls: Vec<(String, String)> = Vec::new();
    for &(p, u) in &g.decls {
        let (p, u) = (PREFIXES[p], URIS[u]);
        if (!p.is_empty() && u.is_empty()) || decls.iter().any(|(q, _)| q == p) {
            continue;
        }
        decls.push((p.to_owned(), u.to_owned()));
    }
    let bound = |p: &str, scope: &[(String, String)], decls: &[(String, String)]| {
        decls
            .iter()
            .chain(scope.iter().rev())
            .find(|(q, _)| q == p)
            .map(|(_, u)| u.clone())
    };
    let prefix = PREFIXES[g.prefix];
    if !prefix.is_empty() && bound(prefix, scope, &decls).is_none() {
        decls.push((prefix.to_owned(), URIS[g.name % 3].to_owned()));
    }
    let mut attrs: Vec<(String, String, String)> = Vec::new();
    for (p, n, v) in &g.attrs {
        let p = PREFIXES[*p];
        if !p.is_empty() && p != "xml" && bound(p, scope, &decls).is_none() {
            decls.push((p.to_owned(), URIS[*n % 3].to_owned()));
        }
        let ns = match p {
            "" => String::new(),
            "xml" => "xml".to_owned(),
            _ => bound(p, scope, &decls).unwrap(),
        };
        let name = NAMES[*n];
        if attrs.iter().any(|(q, m, _)| {
            *m == name
                && (if q.is_empty() {
                    String::new()
                } else if q == "xml" {
                    "xml".into()
                } else {
                    bound(q, scope, &decls).unwrap()
                }) == ns
        }) {
            continue;
        }
        attrs.push((p.to_owned(), name.to_owned(), v.clone()));
    }
    let qname = if prefix.is_empty() {
        NAMES[g.name].to_owned()
    } else {
        format!("{prefix}:{}", NAMES[g.name])
    };
    out.push('<');
    out.push_str(&qname);
    for (p, u) in &decls {
        if p.is_empty() {
            out.push_str(&format!(" xmlns='{}'", esc(u, true)));
        } else {
            out.push_str(&format!(" xmlns:{p}='{}'", esc(u, true)));
        }
    }
    for (p, n, v) in &attrs {
        if p.is_empty() {
            out.push_str(&format!(" {n}='{}'", esc(v, true)));
        } else {
            out.push_str(&format!(" {p}:{n}='{}'", esc(v, true)));
        }
    }
    scope.extend(decls);
    out.push('>');
    for (i, c) in g.children.iter().enumerate() {
        if let Some(t) = g.text.get(i) {
            out.push_str(&esc(t, false));
        }
        render(c, scope, out);
    }
    for t in g.text.iter().skip(g.children.len()) {
        out.push_str(&esc(t, false));
    }
    out.push_str(&format!("</{qname}>"));
    scope.truncate(mark);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("STRATUS_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    /// Any namespace-well-formed tree: parse, serialize, and the oracle reads the same Infoset.
    #[test]
    fn generated_trees_round_trip(g in gen_tree()) {
        let mut xml = String::new();
        render(&g, &mut Vec::new(), &mut xml);
        check(&xml);
    }
}

/// A stanza for the stream test: a generated tree, or one over a limit (which must be skipped).
#[derive(Debug, Clone)]
enum StreamStanza {
    Tree(Gen),
    TooDeep(usize),
    TooManyAttributes(usize),
}

fn stream_stanza() -> impl Strategy<Value = StreamStanza> {
    prop_oneof![
        6 => gen_tree().prop_map(StreamStanza::Tree),
        1 => (49..300usize).prop_map(StreamStanza::TooDeep),
        1 => (65..200usize).prop_map(StreamStanza::TooManyAttributes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("STRATUS_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// The stream reader, fed any mix of stanzas in any chunking: one event per stanza (the tree
    /// the standalone parser reads, or a skip for one over a limit), never a stream error.
    #[test]
    fn the_stream_reader_frames_every_stanza(
        stanzas in prop::collection::vec(stream_stanza(), 1..12),
        chunk in 1..2000usize,
        spaces in prop::collection::vec("[ \n\t]{0,3}", 12),
    ) {
        use stratus::xml::{StreamEvent, spawn_stream_reader};
        use tokio::io::AsyncWriteExt;
        let mut input = String::from(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' id='x'>",
        );
        let mut expected = Vec::new();
        for (i, s) in stanzas.iter().enumerate() {
            input.push_str(&spaces[i % spaces.len()]);
            match s {
                StreamStanza::Tree(g) => {
                    let mut xml = String::new();
                    render(g, &mut Vec::new(), &mut xml);
                    // Read in the stream's scope: its default namespace applies.
                    let wrapped = stratus_roundtrip(&format!("<w xmlns='jabber:component:accept'>{xml}</w>"));
                    expected.push(Some(wrapped.children().next().unwrap().clone()));
                    input.push_str(&xml);
                }
                StreamStanza::TooDeep(n) => {
                    input.push_str(&format!("<message>{}{}</message>", "<a>".repeat(*n), "</a>".repeat(*n)));
                    expected.push(None);
                }
                StreamStanza::TooManyAttributes(n) => {
                    let attrs: String = (0..*n).map(|i| format!(" a{i}='>'")).collect();
                    input.push_str(&format!("<iq{attrs}/>"));
                    expected.push(None);
                }
            }
        }
        input.push_str("</stream:stream>");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let events = rt.block_on(async move {
            let (mut client, server) = tokio::io::duplex(4096);
            let (mut rx, _task) = spawn_stream_reader(server, Limits::default(), 8);
            tokio::spawn(async move {
                for piece in input.as_bytes().chunks(chunk) {
                    client.write_all(piece).await.unwrap();
                }
            });
            let mut events = Vec::new();
            while let Some(ev) = rx.recv().await {
                events.push(ev);
            }
            events
        });
        prop_assert!(matches!(events.first(), Some(Ok(StreamEvent::Open(_)))), "{:?}", events.first());
        prop_assert_eq!(events.last(), Some(&Ok(StreamEvent::Close)));
        prop_assert_eq!(events.len(), expected.len() + 2);
        for (ev, want) in events[1..events.len() - 1].iter().zip(&expected) {
            match (ev, want) {
                (Ok(StreamEvent::Stanza(got)), Some(want)) => {
                    // Namespaces in scope differ (the stream's default), the tree does not.
                    prop_assert_eq!(oracle(&got.to_xml(), false), oracle(&want.to_xml(), false));
                }
                (Ok(StreamEvent::Rejected(_)), None) => {}
                (got, want) => prop_assert!(false, "got {:?}, wanted {:?}", got, want.as_ref().map(|w| w.to_xml())),
            }
        }
    }
}
