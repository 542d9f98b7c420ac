//! In-process hot paths: parsing a publish stanza, a durable publish on the embedded store, and the
//! component's fan-out (render + write 100,000 notifications into a sink, no server).
//!
//!   cargo bench --bench hot_paths

use std::io::Write;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use stratus::jid::Jid;
use stratus::pubsub::model::{Item, NotificationType, ServiceId};
use stratus::pubsub::notify::{Event, Notification, Recipient};
use stratus::pubsub::service::NoRoster;
use stratus::pubsub::{Limits, PubSub};
use stratus::storage::embedded::EmbeddedStore;
use stratus::xml::framer::Framer;
use stratus::xml::{Limits as XmlLimits, parse_element};
use stratus::xmpp::notify::render;

const PUBLISH: &str = "<iq xmlns='jabber:component:accept' type='set' id='pub1' from='alice@localhost/phone' to='pubsub.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='princely_musings'><item id='ae890ac52d0df67ed7cfdf51b644e901'><entry xmlns='http://www.w3.org/2005/Atom'><title>Soliloquy</title><summary>To be, or not to be: that is the question: Whether 'tis nobler in the mind to suffer The slings and arrows of outrageous fortune</summary><link rel='alternate' type='text/html' href='http://denmark.lit/2003/12/13/atom03'/><id>tag:denmark.lit,2003:entry-32397</id><published>2003-12-13T18:30:02Z</published></entry></item></publish></pubsub></iq>";

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("publish stanza (XEP-0060 example 99)", |b| {
        b.iter(|| parse_element(std::hint::black_box(PUBLISH), XmlLimits::default()).unwrap())
    });
    // The step before parsing on the stream: finding where the stanza ends and counting its
    // limits (xml/framer.rs), per stanza after the header.
    g.bench_function("frame the same stanza on a stream", |b| {
        let mut framer = Framer::new(XmlLimits::default());
        let header = "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>";
        framer.push(header.as_bytes()).unwrap();
        b.iter(|| {
            let (n, frame) = framer.push(std::hint::black_box(PUBLISH.as_bytes())).unwrap();
            assert_eq!(n, PUBLISH.len());
            frame
        })
    });
    // Every stanza's from and to are prepared (RFC 6122: nodeprep, IDNA + nameprep,
    // resourceprep): the ASCII case every server sends, and a fullwidth one that needs NFKC.
    g.bench_function("prepare a full JID, ASCII", |b| {
        b.iter(|| Jid::parse(std::hint::black_box("alice@localhost/phone")).unwrap())
    });
    g.bench_function("prepare a full JID, fullwidth localpart", |b| {
        b.iter(|| {
            Jid::parse(std::hint::black_box(
                "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}@localhost/phone",
            ))
            .unwrap()
        })
    });
    g.finish();
}

fn publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let ps = PubSub::new(store, Limits::default(), Arc::new(NoRoster));
    let owner = Jid::parse("alice@localhost/phone").unwrap();
    rt.block_on(async {
        for n in 0..16 {
            ps.create(&ServiceId::Host, &owner, Some(&format!("n{n}")), None)
                .await
                .unwrap();
        }
    });
    let payload = "<entry xmlns='urn:bench'>".to_owned() + &"x".repeat(100) + "</entry>";
    let mut i = 0u64;
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("durable publish, embedded store (fsync)", |b| {
        b.iter(|| {
            i += 1;
            let node = format!("n{}", i % 16);
            rt.block_on(ps.publish(
                &ServiceId::Host,
                &owner,
                &node,
                vec![(None, payload.clone())],
            ))
            .unwrap()
        })
    });
    g.finish();
}

fn fan_out(c: &mut Criterion) {
    let recipients: Vec<Recipient> = (0..100_000)
        .map(|i| Recipient {
            jid: Jid::parse(&format!("user{i}@localhost/res")).unwrap(),
            subids: vec![format!("s{i}")],
        })
        .collect();
    let item = Item {
        id: "ae890ac52d0df67ed7cfdf51b644e901".into(),
        publisher: "alice@localhost".into(),
        payload: Arc::from(
            "<entry xmlns='http://www.w3.org/2005/Atom'><title>Soliloquy</title><summary>To be, or not to be</summary></entry>",
        ),
        published_ms: 0,
    };
    let n = Notification {
        service: ServiceId::Host,
        node: "princely_musings".into(),
        recipients,
        event: Event::Items {
            items: vec![item],
            payloads: true,
        },
        kind: NotificationType::Headline,
        only_available: false,
    };
    let mut g = c.benchmark_group("fan-out");
    g.throughput(Throughput::Elements(100_000));
    g.sample_size(20);
    g.bench_function("render + write 100,000 notifications", |b| {
        b.iter_batched(
            std::io::sink,
            |mut sink| {
                let xml = render(&n, "pubsub.localhost");
                sink.write_all(xml.as_bytes()).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, parse, publish, fan_out);
criterion_main!(benches);
