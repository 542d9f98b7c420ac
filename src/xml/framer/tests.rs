//! Unit tests of `xml::framer`.

use super::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='abc'>";

fn limits() -> Limits {
    Limits {
        max_stanza_bytes: 1024,
        max_depth: 8,
        max_attributes: 4,
        max_namespace_declarations: 3,
        max_uri_bytes: 32,
        max_children: 5,
    }
}

/// Frames `input` fed in chunks of `chunk` bytes.
fn frames(input: &str, chunk: usize) -> Result<Vec<Frame>, XmlError> {
    let mut f = Framer::new(limits());
    let mut out = Vec::new();
    for mut piece in input.as_bytes().chunks(chunk) {
        while !piece.is_empty() {
            let (n, frame) = f.push(piece)?;
            piece = &piece[n..];
            out.extend(frame);
        }
    }
    Ok(out)
}

fn stanza(s: &str) -> Frame {
    Frame::Stanza(s.as_bytes().to_vec())
}

#[test]
fn frames_header_stanzas_and_close_in_any_chunking() {
    let body = "<iq id='1' a='x&gt;y'><q xmlns='u'><![CDATA[<not/> ]] ]]>]]></q></iq> \n<message/><presence to='a>b'>t</presence></stream:stream>";
    let input = format!("{HEADER}{body}");
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let got = frames(&input, chunk).unwrap();
        assert_eq!(
            got,
            vec![
                Frame::Header(HEADER.as_bytes()[HEADER.find("<stream").unwrap()..].to_vec()),
                stanza("<iq id='1' a='x&gt;y'><q xmlns='u'><![CDATA[<not/> ]] ]]>]]></q></iq>"),
                stanza("<message/>"),
                stanza("<presence to='a>b'>t</presence>"),
                Frame::Close,
            ],
            "chunk {chunk}"
        );
    }
}

fn rejected(input: &str) -> Rejected {
    let got = frames(&format!("{HEADER}{input}<message id='next'/>"), 5).unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2], stanza("<message id='next'/>"), "the stream goes on");
    match &got[1] {
        Frame::Rejected(r) => r.clone(),
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn each_limit_skips_one_stanza_and_keeps_its_head() {
    let cases = [
        (
            format!("<iq type='get' id='big' from='a@b/c' to='ps.b'><x>{}</x></iq>", "y".repeat(2000)),
            "larger than 1024 bytes",
        ),
        (
            format!("<iq type='get' id='big' from='a@b/c' to='ps.b'>{}{}</iq>", "<a>".repeat(20), "</a>".repeat(20)),
            "nested deeper than 8 elements",
        ),
        (
            "<iq type='get' id='big' from='a@b/c' to='ps.b'><a p='1' q='2' r='3' s='4' t='5'/></iq>".to_owned(),
            "an element with more than 4 attributes",
        ),
        (
            "<iq type='get' id='big' from='a@b/c' to='ps.b'><a xmlns:a='1'/><b xmlns:b='1'/><c xmlns:c='1' xmlns:d='2'/></iq>".to_owned(),
            "more than 3 namespace declarations",
        ),
        (
            format!("<iq type='get' id='big' from='a@b/c' to='ps.b'><a xmlns='{}'/></iq>", "u".repeat(33)),
            "a namespace name longer than 32 bytes",
        ),
        (
            format!("<iq type='get' id='big' from='a@b/c' to='ps.b'><p>{}</p></iq>", "<c/>".repeat(6)),
            "an element with more than 5 children",
        ),
    ];
    for (input, reason) in cases {
        let r = rejected(&input);
        assert_eq!(r.reason, reason);
        assert_eq!(r.name, "iq");
        assert_eq!(
            r.attrs,
            vec![
                ("type", "get".into()),
                ("id", "big".into()),
                ("from", "a@b/c".into()),
                ("to", "ps.b".into())
            ]
        );
        assert_eq!(r.bytes, input.len());
    }
}

#[test]
fn a_skipped_stanza_is_not_buffered() {
    let mut f = Framer::new(limits());
    f.push(HEADER.as_bytes()).unwrap();
    f.push(b"<message><body>").unwrap();
    for _ in 0..1000 {
        let (n, frame) = f.push(&[b'x'; 4096]).unwrap();
        assert_eq!((n, frame), (4096, None));
        assert!(f.buf.capacity() <= 2 * 1024, "{}", f.buf.capacity());
    }
    let (_, frame) = f.push(b"</body></message>").unwrap();
    assert!(matches!(frame, Some(Frame::Rejected(_))));
}

#[test]
fn what_no_server_forwards_ends_the_stream() {
    for (bad, kind) in [
        ("hello", XmlErrorKind::NotWellFormed),
        ("<!-- x -->", XmlErrorKind::RestrictedXml),
        ("<message><!-- x --></message>", XmlErrorKind::RestrictedXml),
        ("<?pi x?>", XmlErrorKind::RestrictedXml),
        ("<message id='a<b'/>", XmlErrorKind::NotWellFormed),
        ("< message/>", XmlErrorKind::NotWellFormed),
        ("<message id=a/>", XmlErrorKind::NotWellFormed),
    ] {
        let err = frames(&format!("{HEADER}{bad}"), 3).unwrap_err();
        assert_eq!(err.kind, kind, "{bad}");
    }
    let doctype = "<?xml version='1.0'?><!DOCTYPE x><stream:stream>";
    assert_eq!(
        frames(doctype, 4).unwrap_err().kind,
        XmlErrorKind::RestrictedXml
    );
}

#[test]
fn limits_after_a_restart_apply_to_the_new_header() {
    let mut f = Framer::new(limits());
    let input = format!("{HEADER}<success/>");
    let (n, _) = f.push(input.as_bytes()).unwrap();
    let (_, s) = f.push(&input.as_bytes()[n..]).unwrap();
    assert_eq!(s, Some(stanza("<success/>")));
    f.expect_header();
    let (_, h) = f.push(b"<stream:stream xmlns='jabber:client'>").unwrap();
    assert!(matches!(h, Some(Frame::Header(_))));
}
