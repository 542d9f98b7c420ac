//! Unit tests of `xml::reader`.

use super::*;
use tokio::io::AsyncWriteExt;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='pubsub.localhost'>";

async fn events(input: &[u8], limits: Limits) -> Vec<Result<StreamEvent, XmlError>> {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let input = input.to_vec();
    // The reader may stop early (that is the point of a limit): ignore write errors.
    tokio::spawn(async move {
        let _ = client.write_all(&input).await;
    });
    let (mut rx, _h) = spawn_stream_reader(server, limits, 16);
    let mut out = Vec::new();
    while let Some(ev) = rx.recv().await {
        out.push(ev);
    }
    out
}

fn last_error(evs: &[Result<StreamEvent, XmlError>]) -> XmlErrorKind {
    evs.last().unwrap().as_ref().unwrap_err().kind
}

#[tokio::test]
async fn parses_stanzas_with_namespaces() {
    let input = format!(
        "{HEADER}<handshake/> <iq type='get' id='1' to='pubsub.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq><message><body>a &amp; b &#x263A; &lt;</body><x:y xmlns:x='urn:x' x:z='1'/></message></stream:stream>"
    );
    let evs = events(input.as_bytes(), Limits::default()).await;
    assert_eq!(evs.len(), 5, "{evs:?}");
    let Ok(StreamEvent::Open(h)) = &evs[0] else {
        panic!()
    };
    assert_eq!(h.get_attr("id"), Some("abc"));
    let Ok(StreamEvent::Stanza(hs)) = &evs[1] else {
        panic!()
    };
    assert!(hs.is("handshake", "jabber:component:accept"));
    let Ok(StreamEvent::Stanza(iq)) = &evs[2] else {
        panic!()
    };
    assert!(iq.is("iq", "jabber:component:accept"));
    assert!(
        iq.get_child("query", "http://jabber.org/protocol/disco#info")
            .is_some()
    );
    let Ok(StreamEvent::Stanza(msg)) = &evs[3] else {
        panic!()
    };
    let body = msg.get_child("body", "jabber:component:accept").unwrap();
    assert_eq!(body.text_content(), "a & b \u{263A} <");
    let y = msg.get_child("y", "urn:x").unwrap();
    assert_eq!(y.get_attr_ns("z", "urn:x"), Some("1"));
    assert_eq!(
        y.get_attr("z"),
        None,
        "a prefixed attribute is not the unprefixed one"
    );
    assert_eq!(evs[4], Ok(StreamEvent::Close));
}

#[tokio::test]
async fn stanza_split_across_reads() {
    let (mut client, server) = tokio::io::duplex(64);
    let (mut rx, _h) = spawn_stream_reader(server, Limits::default(), 16);
    let input = format!("{HEADER}<iq id='1'><ping xmlns='urn:xmpp:ping'/></iq>");
    tokio::spawn(async move {
        for chunk in input.as_bytes().chunks(3) {
            client.write_all(chunk).await.unwrap();
            tokio::task::yield_now().await;
        }
        // keep the stream open
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    });
    assert!(matches!(rx.recv().await, Some(Ok(StreamEvent::Open(_)))));
    let Some(Ok(StreamEvent::Stanza(iq))) = rx.recv().await else {
        panic!()
    };
    assert!(iq.get_child("ping", "urn:xmpp:ping").is_some());
}

fn rejected(ev: &Result<StreamEvent, XmlError>) -> &Rejected {
    match ev {
        Ok(StreamEvent::Rejected(r)) => r,
        other => panic!("not a rejected stanza: {other:?}"),
    }
}

#[tokio::test]
async fn skips_an_oversized_stanza_and_goes_on() {
    let limits = Limits {
        max_stanza_bytes: 1024,
        ..Limits::default()
    };
    let big = "x".repeat(10 * 1024 * 1024);
    let input = format!(
        "{HEADER}<message id='m1' from='a@b/c'><body>{big}</body></message><iq id='2'/></stream:stream>"
    );
    let evs = events(input.as_bytes(), limits).await;
    assert_eq!(evs.len(), 4, "{evs:?}");
    let r = rejected(&evs[1]);
    assert_eq!(r.name, "message");
    assert_eq!(r.reason, "larger than 1024 bytes");
    assert!(matches!(&evs[2], Ok(StreamEvent::Stanza(iq)) if iq.get_attr("id") == Some("2")));
    assert_eq!(evs[3], Ok(StreamEvent::Close));
    // A stanza just under the limit is fine, and many of them in a row too.
    let small = format!("<message><body>{}</body></message>", "y".repeat(900));
    let input = format!("{HEADER}{}", small.repeat(50));
    let evs = events(input.as_bytes(), limits).await;
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Ok(StreamEvent::Stanza(_))))
            .count(),
        50
    );
}

#[tokio::test]
async fn skips_deep_nesting_and_many_declarations() {
    let limits = Limits {
        max_depth: 32,
        ..Limits::default()
    };
    let decls: String = (0..200)
        .map(|i| format!(" xmlns:p{i}='urn:p{i}'"))
        .collect();
    let input = format!(
        "{HEADER}<message>{}{}</message><message{decls}/><iq id='after'/>",
        "<a>".repeat(200),
        "</a>".repeat(200)
    );
    let evs = events(input.as_bytes(), limits).await;
    assert_eq!(rejected(&evs[1]).reason, "nested deeper than 32 elements");
    assert_eq!(
        rejected(&evs[2]).reason,
        "more than 64 namespace declarations"
    );
    assert!(matches!(&evs[3], Ok(StreamEvent::Stanza(iq)) if iq.get_attr("id") == Some("after")));
}

#[tokio::test]
async fn rejects_entity_and_dtd_tricks() {
    let doctype = "<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'>]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>";
    assert_eq!(
        last_error(&events(doctype.as_bytes(), Limits::default()).await),
        XmlErrorKind::RestrictedXml
    );
    let ent = format!("{HEADER}<message><body>&lol;</body></message>");
    assert_eq!(
        last_error(&events(ent.as_bytes(), Limits::default()).await),
        XmlErrorKind::RestrictedXml
    );
    let attr_ent = format!("{HEADER}<message id='&lol;'/>");
    assert_eq!(
        last_error(&events(attr_ent.as_bytes(), Limits::default()).await),
        XmlErrorKind::RestrictedXml
    );
    let pi = format!("{HEADER}<?evil x?>");
    assert_eq!(
        last_error(&events(pi.as_bytes(), Limits::default()).await),
        XmlErrorKind::RestrictedXml
    );
    let comment = format!("{HEADER}<message><!-- x --></message>");
    assert_eq!(
        last_error(&events(comment.as_bytes(), Limits::default()).await),
        XmlErrorKind::RestrictedXml
    );
}

#[tokio::test]
async fn rejects_malformed_xml() {
    for bad in [
        "<message><body></message></iq>",
        "<message a='1' a='2'/>",
        "<message><body>\u{7}</body></message>",
        "<message><body>&#7;</body></message>",
        "<p:message/>",
        "<message>\u{0}</message>",
        "<message id='a<b'/>",
    ] {
        let input = format!("{HEADER}{bad}");
        let evs = events(input.as_bytes(), Limits::default()).await;
        assert_eq!(
            last_error(&evs),
            XmlErrorKind::NotWellFormed,
            "{bad}: {evs:?}"
        );
    }
    let evs = events(b"<stream xmlns='jabber:client'>", Limits::default()).await;
    assert_eq!(last_error(&evs), XmlErrorKind::InvalidNamespace);
    let evs = events(HEADER.as_bytes(), Limits::default()).await;
    assert_eq!(last_error(&evs), XmlErrorKind::ConnectionClosed);
}

#[test]
fn parse_element_roundtrip() {
    let xml = "<entry xmlns='urn:example' a='&apos;'>hi <b>there</b>&amp;</entry>";
    let el = parse_element(xml, Limits::default()).unwrap();
    assert_eq!(
        el.to_xml(),
        "<entry xmlns='urn:example' a='&apos;'>hi <b>there</b>&amp;</entry>"
    );
    // An escaped `<` in an attribute is well-formed (a node named `n<1>`), a literal one is not.
    let el = parse_element("<a xmlns='u' node='n&lt;1&gt;'/>", Limits::default()).unwrap();
    assert_eq!(el.get_attr("node"), Some("n<1>"));
    assert_eq!(el.to_xml(), "<a xmlns='u' node='n&lt;1&gt;'/>");
    assert!(parse_element("<a xmlns='u' node='n<1'/>", Limits::default()).is_err());
    assert!(parse_element("<a/><b/>", Limits::default()).is_err());
    assert!(parse_element("<a>", Limits::default()).is_err());
    assert!(parse_element("<a>&foo;</a>", Limits::default()).is_err());
}

/// Limits replaced while the stream runs (SIGHUP) apply from the next stanza on, also after
/// whitespace keepalives, and never end the stream: the stanza over the new limit is rejected
/// alone and the next one is read.
#[tokio::test]
async fn live_limits_apply_from_the_next_stanza() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let shared = Arc::new(ArcSwap::from_pointee(Limits::default()));
    let (mut rx, _h) = spawn_stream_reader_live(server, shared.clone(), 16);
    let big = format!(
        "<message id='big'><body>{}</body></message>",
        "a".repeat(3000)
    );
    client
        .write_all(format!("{HEADER}{big}").as_bytes())
        .await
        .unwrap();
    assert!(matches!(rx.recv().await, Some(Ok(StreamEvent::Open(_)))));
    assert!(matches!(rx.recv().await, Some(Ok(StreamEvent::Stanza(_)))));
    shared.store(Arc::new(Limits {
        max_stanza_bytes: 1024,
        ..Limits::default()
    }));
    client
        .write_all(format!(" \n {big}<message id='small'/>").as_bytes())
        .await
        .unwrap();
    let rejected = rx.recv().await;
    assert!(
        matches!(rejected, Some(Ok(StreamEvent::Rejected(_)))),
        "{rejected:?}"
    );
    let Some(Ok(StreamEvent::Stanza(small))) = rx.recv().await else {
        panic!("the stream did not go on")
    };
    assert_eq!(small.get_attr("id"), Some("small"));
}
