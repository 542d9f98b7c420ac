//! Unit tests of `xml::element`.

use super::*;

#[test]
fn serializes_namespaces_only_where_they_change() {
    let iq = Element::new("iq", "jabber:component:accept")
        .attr("type", "result")
        .attr("id", "a'b\"<c>&")
        .child(
            Element::new("query", "http://jabber.org/protocol/disco#info").child(
                Element::new("feature", "http://jabber.org/protocol/disco#info").attr("var", "x"),
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
