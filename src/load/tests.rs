//! Unit tests of `load`.

use super::*;

#[test]
fn process_cpu_counts_every_thread_even_ended_ones() {
    let me = std::process::id();
    let before = process_cpu(me).unwrap();
    // A thread that runs until it has used 300 ms of CPU (its own clock, however loaded the
    // machine is), then ends: its time stays the process's.
    let spent = std::thread::spawn(|| {
        let mut x = 0u64;
        loop {
            let own = watch::cpu_in_stat("/proc/thread-self/stat").unwrap();
            if own >= Duration::from_millis(300) {
                return own;
            }
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    })
    .join()
    .unwrap();
    let after = process_cpu(me).unwrap();
    // (Less one tick: the process's and the thread's times are rounded to ticks apart.)
    assert!(
        after.saturating_sub(before) + Duration::from_millis(10) >= spent,
        "{before:?} -> {after:?}, the ended thread alone used {spent:?}"
    );
}

#[test]
fn a_missing_process_is_named() {
    let err = cpu_snapshot(&[("server".to_owned(), 999_999_999)]).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read the CPU time of server (pid 999999999)"),
        "{err}"
    );
}

/// Raw mode's ceiling is the server routing the same messages a pubsub service sends: apart
/// from `from` (which the server adds to a client's message), the raw message must be the
/// notification stratus renders for the same item (XEP-0060 7.1.2).
#[test]
fn raw_notification_is_the_services_notification() {
    use crate::pubsub::model::{Item, NotificationType, ServiceId};
    use crate::pubsub::notify::{Event, Notification, Recipient};
    use crate::xml::reader::{Limits, parse_element};
    let body = payload(100);
    let mut payload_xml = String::new();
    body.write_to(&mut payload_xml, NS_CLIENT);
    let to = "sub@localhost/load";
    let n = Notification {
        service: ServiceId::Host,
        node: "bench".into(),
        recipients: vec![Recipient {
            jid: crate::jid::Jid::parse(to).unwrap(),
            subids: vec![],
        }],
        event: Event::Items {
            items: vec![Item {
                id: "p0-7".into(),
                publisher: "pub@localhost/load".into(),
                payload: payload_xml.into(),
                published_ms: 0,
            }],
            payloads: true,
        },
        kind: NotificationType::Headline,
        only_available: false,
    };
    let wrap = |m: &str, ns: &str| format!("<stream xmlns='{ns}'>{m}</stream>");
    let rendered = crate::xmpp::notify::render(&n, "pubsub.localhost");
    let service = parse_element(
        &wrap(&rendered, crate::component::NS_COMPONENT),
        Limits::default(),
    )
    .unwrap();
    let mut raw = String::new();
    raw_message(RawMessage::Notification, to, "bench", "p0-7", &body).write_to(&mut raw, NS_CLIENT);
    let raw = parse_element(&wrap(&raw, NS_CLIENT), Limits::default()).unwrap();
    let (service, raw) = (
        service.children().next().unwrap(),
        raw.children().next().unwrap(),
    );
    assert_eq!(service.get_attr("from"), Some("pubsub.localhost"));
    assert_eq!(raw.get_attr("from"), None);
    for a in ["to", "type"] {
        assert_eq!(service.get_attr(a), raw.get_attr(a), "{a}");
    }
    let kids = |e: &Element| e.children().cloned().collect::<Vec<_>>();
    assert_eq!(kids(service), kids(raw));
    // The minimal message carries the same id, in fewer elements.
    let mut min = String::new();
    raw_message(RawMessage::Minimal, to, "bench", "p0-7", &body).write_to(&mut min, NS_CLIENT);
    let min = parse_element(&wrap(&min, NS_CLIENT), Limits::default()).unwrap();
    assert_eq!(event_ids(min.children().next().unwrap()), ["p0-7"]);
    assert_eq!(event_ids(raw), ["p0-7"]);
}

/// The stream counters come from stratus's own metric names, and go missing (not zero) when
/// one of them is not served.
#[test]
fn stream_counters_parse_stratus_metrics() {
    let text = "# TYPE stratus_bytes_sent_total counter\nstratus_bytes_sent_total 12345\n\
                stratus_stanzas_sent_total 100\nstratus_stream_writes_total 4\n";
    let c = StreamCounters::parse(text).unwrap();
    assert_eq!((c.bytes, c.stanzas, c.writes), (12345.0, 100.0, 4.0));
    assert_eq!(StreamCounters::parse("stratus_bytes_sent_total 1\n"), None);
}
